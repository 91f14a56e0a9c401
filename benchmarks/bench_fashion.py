"""Mini-batch Lagrangian learning against backpropagation on real data (issue: mini-batch).

Every comparison trains the methods *interleaved* (one epoch of each in turn) from the
same initial weights and data order (lagprop.compare), so ratios of seconds are measured
under the same machine load; absolute seconds on a shared machine are noisy.

    python benchmarks/bench_fashion.py shallow   # a (and c): 784-256-10, batch 256, 20 epochs
    python benchmarks/bench_fashion.py depth     # b: 784-256x4-10, 20 epochs, plus variants
    python benchmarks/bench_fashion.py align     # b: per-layer gradient alignment with backprop vs K, mu, rho
    python benchmarks/bench_fashion.py time88    # c: seconds until 88 % test accuracy
    python benchmarks/bench_fashion.py memory    # d: peak RSS per method against 2*l*|H u O|
    python benchmarks/bench_fashion.py mnist1d   # e: MLP on MNIST-1D against the published ~68 %

The Lagrangian method is TrainConfig's default (method, state, lambda_init, relax_steps,
mu_x, mu_lambda, rho), with ``--lagrangian key=value,...`` overrides.  ``--out DIR`` writes
each comparison's JSON, CSV and PNG (lagprop compare's files) into DIR/<subcommand>.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
from dataclasses import fields, replace
from pathlib import Path

import torch

from lagprop.cli.common import build_network
from lagprop.compare import Comparison, compare_configs
from lagprop.data import load_dataset
from lagprop.graph import Graph
from lagprop.train import TrainConfig, Trainer

FASHION_MLP_SHALLOW = [256]
FASHION_MLP_DEEP = [256, 256, 256, 256]
MNIST1D_PUBLISHED_MLP = 0.68  # Greydanus 2020, MNIST-1D: MLP test accuracy (about 68 %)


def overrides(text: str) -> dict:
    """``'relax_steps=4,mu_x=0.3'`` -> typed TrainConfig overrides."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    out: dict = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, _, value = item.partition("=")
        if key not in types:
            raise SystemExit(f"unknown TrainConfig field {key!r} in {text!r}")
        t = types[key]
        out[key] = int(value) if t in ("int", int) else float(value) if t in ("float", float) else value
    return out


def lagrangian_config(args, **kw) -> TrainConfig:
    return replace(TrainConfig(), batch_size=args.batch_size, epochs=args.epochs, seed=args.seed,
                   **{**overrides(args.lagrangian), **kw})


def describe(cfg: TrainConfig) -> str:
    return (f"method={cfg.method} state={cfg.state} lambda_init={cfg.lambda_init} "
            f"relax_steps={cfg.relax_steps} mu_x={cfg.mu_x} mu_lambda={cfg.mu_lambda} rho={cfg.rho} "
            f"optimizer={cfg.optimizer} lr={cfg.lr}")


def accuracy_at(res: Comparison, label: str, epoch: int) -> float:
    h = res.histories[label]
    return h[epoch]["test_accuracy"] if epoch < len(h) else float("nan")


def seconds_to(res: Comparison, label: str, target: float) -> tuple[float, int] | None:
    for row in res.histories[label][1:]:
        if row["test_accuracy"] >= target:
            return row["seconds"], int(row["epoch"])
    return None


def report(res: Comparison, epochs_of_interest: list[int], target: float | None = None) -> None:
    print(res.table())
    ref = "backprop"
    spe = {m: res.seconds_per_epoch(m) for m in res.methods if res.histories.get(m)}
    print(f"\n{'label':<28}" + "".join(f"{'acc@' + str(e):>9}" for e in epochs_of_interest)
          + f"{'s/epoch':>9}{'x bp':>7}{'d acc':>8}")
    for m in res.methods:
        if not res.histories.get(m):
            continue
        accs = "".join(f"{accuracy_at(res, m, e):>9.4f}" for e in epochs_of_interest)
        last = res.final(m)["test_accuracy"]
        d = (last - res.final(ref)["test_accuracy"]) * 100 if ref in spe else float("nan")
        ratio = spe[m] / spe[ref] if ref in spe else float("nan")
        print(f"{m:<28}{accs}{spe[m]:>9.2f}{ratio:>7.2f}{d:>+8.2f}")
    if target is not None:
        for m in res.methods:
            if res.histories.get(m):
                hit = seconds_to(res, m, target)
                print(f"{m}: " + (f"{target:.0%} test accuracy after {hit[0]:.1f} s (epoch {hit[1]})" if hit
                                  else f"never reached {target:.0%} test accuracy"))


def run_comparison(args, name: str, hidden: list[int], configs: dict[str, TrainConfig], dataset: str,
                   stop_when=None) -> Comparison:
    data = load_dataset(dataset, data_dir=args.data_dir)
    graph = Graph.mlp([data.n_inputs, *hidden, data.n_outputs])
    print(f"== {name}: {data.describe()}; {graph.summary()}; batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}", flush=True)
    for label, c in configs.items():
        print(f"   {label}: {describe(c)}", flush=True)
    started = time.time()
    res = compare_configs(data, graph, configs, on_epoch=lambda m, r: print(
        f"   {m} epoch {r['epoch']}: test acc {r['test_accuracy']:.4f} ({r['seconds']:.1f}s)", flush=True),
        stop_when=stop_when)
    print(f"   ({time.time() - started:.0f} s of wall time in all)")
    if args.out:
        res.write(Path(args.out) / name)
    return res


# ------------------------------------------------------------------ a, b, c, e
def cmd_shallow(args) -> None:
    lag = lagrangian_config(args)
    configs = {"backprop": replace(lag, method="backprop"), f"lagrangian ({lag.method})": lag}
    res = run_comparison(args, "shallow", FASHION_MLP_SHALLOW, configs, "fashion-mnist")
    report(res, [e for e in (1, 5, 20) if e <= args.epochs], target=0.88)


def cmd_depth(args) -> None:
    lag = lagrangian_config(args)
    configs = {"backprop": replace(lag, method="backprop"), f"lagrangian ({lag.method})": lag}
    for v in args.variant:
        configs[v] = replace(lag, **overrides(v))
    res = run_comparison(args, "depth", FASHION_MLP_DEEP, configs, "fashion-mnist")
    report(res, [e for e in (1, 5, 10, 20) if e <= args.epochs])


def cmd_time88(args) -> None:
    lag = lagrangian_config(args)
    configs = {"backprop": replace(lag, method="backprop"), f"lagrangian ({lag.method})": lag}
    res = run_comparison(args, "time88", FASHION_MLP_SHALLOW, configs, "fashion-mnist",
                         stop_when=lambda row: row["test_accuracy"] >= args.target)
    report(res, [1], target=args.target)
    hits = {m: seconds_to(res, m, args.target) for m in res.methods}
    if all(hits.values()):
        lag_label = res.methods[1]
        print(f"seconds to {args.target:.0%}: {lag_label} / backprop = "
              f"{hits[lag_label][0] / hits['backprop'][0]:.2f}")


def cmd_mnist1d(args) -> None:
    lag = lagrangian_config(args)
    configs = {"backprop": replace(lag, method="backprop"), f"lagrangian ({lag.method})": lag}
    res = run_comparison(args, "mnist1d", args.hidden, configs, "mnist1d")
    report(res, [e for e in (1, 10, 50, args.epochs) if e <= args.epochs])
    for m in res.methods:
        best = max(r["test_accuracy"] for r in res.histories[m][1:])
        print(f"{m}: final {res.final(m)['test_accuracy']:.4f}, best {best:.4f} "
              f"(published MLP: about {MNIST1D_PUBLISHED_MLP:.0%})")


# ------------------------------------------------------------------ b: why depth hurts
def cmd_align(args) -> None:
    """Cosine between dL/dw after K relaxation steps and backprop's gradient, per layer.

    One batch at the initial weights, x predicted and lambda zero as in the default: the
    relaxation carries the loss signal back one layer per step, so K = depth reaches the
    first layer just in time, while the later layers' states keep moving.
    """
    from lagprop.dynamics import forward_state, relax_step, weight_grads
    from lagprop.lagrangian import loss_value
    from lagprop.train import targets

    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    X = torch.as_tensor(data.X_train[:args.batch_size])
    Y = torch.as_tensor(targets(data, data.y_train[:args.batch_size]))
    for hidden in (FASHION_MLP_SHALLOW, FASHION_MLP_DEEP):
        net = build_network(Graph.mlp([data.n_inputs, *hidden, data.n_outputs]), TrainConfig(seed=args.seed))
        loss_value("ce", net(X), Y).mean().backward()
        bp = [p.grad.clone() for p in net.weights]
        print(f"== 784-{'-'.join(map(str, hidden))}-10: cosine(dL/dw, backprop gradient) per weight layer")
        for k in (len(hidden) + 1, 2 * (len(hidden) + 1), 30):
            for mu, rho in ((0.5, 1.0), (0.25, 1.0), (0.5, 2.0)):
                dyn = replace(TrainConfig(), mu_x=mu, mu_lambda=mu, rho=rho).dynamics()
                with torch.no_grad():
                    base = net.input_contribution(X)
                    xs = forward_state(net, X, base)
                    lams = [None] + [torch.zeros_like(t) for t in xs[1:]]
                    for _ in range(k):
                        xs, lams = relax_step(net, xs, lams, Y, dyn, None, base)
                    weight_grads(net, xs, lams, dyn, base)
                cos = [float(torch.nn.functional.cosine_similarity(p.grad.flatten(), b.flatten(), 0))
                       for p, b in zip(net.weights, bp)]
                print(f"   K={k:<3} mu={mu:<5} rho={rho:<4}" + " ".join(f"{c:+.3f}" for c in cos), flush=True)


# ------------------------------------------------------------------ d: memory
def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cmd_memory_child(args) -> None:
    """One method in a fresh process: RSS before the trainer exists and its peak over one epoch."""
    data = load_dataset("fashion-mnist", data_dir=args.data_dir)
    cfg = replace(TrainConfig(), batch_size=args.batch_size, epochs=1, seed=args.seed, **overrides(args.config))
    net = build_network(Graph.mlp([data.n_inputs, *FASHION_MLP_SHALLOW, data.n_outputs]), cfg)
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    trainer = Trainer(net, data, cfg)
    trainer.fit(1)
    peak[0] = max(peak[0], _rss_bytes())
    done.set()
    th.join()
    print(json.dumps({"base": base, "peak": peak[0], "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                      * 1024, "state_numbers": trainer.state.numbers() if trainer.state else 0,
                      "state_bytes": trainer.state.nbytes() if trainer.state else 0,
                      "n": trainer.n, "h_u_o": sum(net.sizes[1:]),
                      "test_accuracy": trainer.history[-1]["test_accuracy"],
                      "method": cfg.method, "state": cfg.state, "lambda_init": cfg.lambda_init}))


def cmd_memory(args) -> None:
    runs = {"backprop": "method=backprop", "default": args.lagrangian,
            "stored x and lambda": "state=stored,lambda_init=stored",
            "predicted x, stored lambda": "state=predicted,lambda_init=stored",
            "predicted x, zero lambda": "state=predicted,lambda_init=zero"}
    print(f"== memory: Fashion-MNIST 784-256-10, batch {args.batch_size}, one epoch per fresh process")
    print(f"{'run':<28}{'theory MB':>10}{'state MB':>10}{'RSS growth MB':>15}{'peak RSS MB':>13}{'ru_maxrss MB':>14}")
    for label, conf in runs.items():
        out = subprocess.run([sys.executable, __file__, "_memory-child", "--config", conf,
                              "--batch-size", str(args.batch_size), "--seed", str(args.seed)]
                             + (["--data-dir", args.data_dir] if args.data_dir else []),
                             capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        elem = 4  # float32
        kept = (r["state"] == "stored") + (r["lambda_init"] == "stored") if r["method"] != "backprop" else 0
        theory = kept * r["n"] * r["h_u_o"] * elem
        mb = 1 / 2 ** 20
        print(f"{label:<28}{theory * mb:>10.1f}{r['state_bytes'] * mb:>10.1f}{(r['peak'] - r['base']) * mb:>15.1f}"
              f"{r['peak'] * mb:>13.1f}{r['maxrss'] * mb:>14.1f}", flush=True)
    print("theory = (x kept + lambda kept) * l * |H u O| * 4 bytes; 2*l*|H u O| numbers when both are kept")


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("shallow", "depth", "align", "time88", "memory", "mnist1d", "all",
                                       "_memory-child"))
    p.add_argument("--epochs", type=int, default=None, help="default 20 (mnist1d: 150)")
    p.add_argument("--batch-size", type=int, default=None, help="default 256 (mnist1d: 100)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lagrangian", default="", help="TrainConfig overrides for the Lagrangian method, k=v,...")
    p.add_argument("--variant", action="append", default=[],
                   help="depth: an extra Lagrangian variant, k=v,... (repeatable)")
    p.add_argument("--target", type=float, default=0.88, help="time88: the test accuracy to reach")
    p.add_argument("--hidden", default="100,100", help="mnist1d: hidden sizes (published MLP: 100,100)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--config", default="", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help="write each comparison's JSON/CSV/PNG into OUT/<command>")
    args = p.parse_args(argv)
    args.hidden = [int(s) for s in args.hidden.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    mn = args.command == "mnist1d"
    args.epochs = args.epochs if args.epochs is not None else (150 if mn else 20)
    args.batch_size = args.batch_size if args.batch_size is not None else (100 if mn else 256)
    if mn and not args.lagrangian:
        args.lagrangian = "lr=0.01"  # the published MLP's Adam learning rate
    commands = {"shallow": cmd_shallow, "depth": cmd_depth, "time88": cmd_time88, "memory": cmd_memory,
                "mnist1d": cmd_mnist1d, "align": cmd_align, "_memory-child": cmd_memory_child}
    if args.command == "all":
        for name in ("shallow", "depth", "memory"):
            commands[name](args)
    else:
        commands[args.command](args)


if __name__ == "__main__":
    main()
