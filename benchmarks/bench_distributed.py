"""1 process against N processes (torchrun, gloo) on this machine, and the all-reduce cost.

Prints, per method and process count: seconds per epoch (training loop only, from
summary.json), test accuracy, and the speed-up over 1 process; then the measured time of
one gloo all-reduce of the weight vector between 2 local processes, and the compute per
example, the two inputs of the scaling estimate in docs/scaling.md.

Every process runs with OMP_NUM_THREADS=1 (torchrun's default), so that 1 process against
2 compares one core against two.  On a machine shared with other work the figures are
noisy: read the ratios, and run it twice.

    python benchmarks/bench_distributed.py                       # digits, 64-100-10
    python benchmarks/bench_distributed.py --dataset fashion-mnist --hidden 256 \\
        --batch-size 256 --epochs 2
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train(procs: int, method: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = ["-m", "lagprop", "train", "--dataset", args.dataset, "--hidden", args.hidden, "--method", method,
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--seed", "0",
           "--device", "cpu", "--quiet", "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    if procs == 1:
        full = [sys.executable, *cmd]
    else:
        full = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(procs),
                "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *cmd]
    started = time.perf_counter()
    res = subprocess.run(full, env=env, capture_output=True, text=True)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(full)} failed:\n{res.stderr[-2000:]}")
    s = json.loads((out / "summary.json").read_text())
    s["wall"] = time.perf_counter() - started
    return s


def _allreduce_worker(rank: int, world: int, port: int, numel: int, reps: int, result: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    t = torch.ones(numel)
    for _ in range(5):
        dist.all_reduce(t)
    dist.barrier()
    start = time.perf_counter()
    for _ in range(reps):
        dist.all_reduce(t)
    seconds = (time.perf_counter() - start) / reps
    if rank == 0:
        Path(result).write_text(str(seconds))
    dist.destroy_process_group()


def allreduce_seconds(numel: int, world: int = 2, reps: int = 50) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp, "t"))
        mp.spawn(_allreduce_worker, args=(world, free_port(), numel, reps, result), nprocs=world)
        return float(Path(result).read_text())


def _fit_worker(rank: int, world: int, port: int, spec: dict, result: str) -> None:
    """One rank of an in-process DistributedTrainer run: wall and CPU seconds of the training loop."""
    from lagprop.data import load_dataset
    from lagprop.distributed import DistributedTrainer, init_from_env, shutdown
    from lagprop.graph import Graph
    from lagprop.network import Network
    from lagprop.train import TrainConfig
    torch.set_num_threads(1)
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    ctx = init_from_env("cpu")
    data = load_dataset(spec["dataset"])
    cfg = TrainConfig(method=spec["method"], batch_size=spec["batch_size"], epochs=spec["epochs"], seed=0)
    sizes = [data.n_inputs, *(int(h) for h in spec["hidden"].split(",")), data.n_outputs]
    net = Network(Graph.mlp(sizes), generator=torch.Generator().manual_seed(0))
    t = DistributedTrainer(net, data, cfg, ctx)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(cfg.epochs):  # the training loop only, as Trainer.seconds counts it
        t._acc = {}
        for idx in t.batches():
            t._step(idx)
        t.epoch += 1
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    acc = t.evaluate()["test_accuracy"]
    Path(f"{result}.{rank}").write_text(json.dumps({"wall": wall, "cpu": cpu, "acc": acc}))
    shutdown(ctx)


def cpu_split(procs: int, method: str, args: argparse.Namespace) -> list[dict]:
    spec = {"dataset": args.dataset, "hidden": args.hidden, "method": method,
            "batch_size": args.batch_size, "epochs": args.epochs}
    with tempfile.TemporaryDirectory() as tmp:
        result = str(Path(tmp, "r"))
        mp.spawn(_fit_worker, args=(procs, free_port(), spec, result), nprocs=procs)
        return [json.loads(Path(f"{result}.{r}").read_text()) for r in range(procs)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="digits")
    p.add_argument("--hidden", default="100")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--methods", default="mdmm,backprop")
    p.add_argument("--procs", default="1,2")
    p.add_argument("--sections", default="cli,cpu", help="cli (torchrun wall clock), cpu (per-rank CPU time)")
    p.add_argument("--allreduce-sweep", action="store_true",
                   help="only time gloo all-reduces of 1e3..1e7 numbers (latency and bandwidth)")
    args = p.parse_args()
    if args.allreduce_sweep:
        for numel in (1_000, 10_000, 100_000, 1_000_000, 10_000_000):
            t = allreduce_seconds(numel, reps=50 if numel < 10**6 else 10)
            print(f"all-reduce of {numel:>10d} float32 ({numel * 4 / 1e6:8.3f} MB), 2 local processes: "
                  f"{t * 1e3:9.3f} ms  ({numel * 4 / t / 1e9:.2f} GB/s)", flush=True)
        return
    counts = [int(c) for c in args.procs.split(",")]
    print(f"{args.dataset}, hidden {args.hidden}, batch {args.batch_size}, {args.epochs} epochs; "
          f"{os.cpu_count()} CPUs, 1 thread per process")
    print(f"{'method':9} {'procs':>5} {'s/epoch':>9} {'speed-up':>9} {'test acc':>9} {'wall s':>7}")
    arcs = 0
    base_epoch: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(",") if "cli" in args.sections else []:
            base = None
            for n in counts:
                s = train(n, method, args, Path(tmp, f"{method}-{n}"))
                arcs = s["arcs"]
                spe = s["seconds_per_epoch"]
                if base is None:
                    base = spe
                    base_epoch[method] = spe
                print(f"{method:9} {n:5d} {spe:9.3f} {base / spe:9.2f} {s['test_accuracy']:9.4f} {s['wall']:7.1f}",
                      flush=True)
    print("\nCPU seconds per epoch of each rank (what a dedicated core per rank would take):")
    print(f"{'method':9} {'procs':>5} {'max CPU s':>10} {'sum CPU s':>10} {'wall s':>8} "
          f"{'speed-up':>9} {'test acc':>9}")
    for method in args.methods.split(",") if "cpu" in args.sections else []:
        base = None
        for n in counts:
            ranks = cpu_split(n, method, args)
            top = max(r["cpu"] for r in ranks) / args.epochs
            base = base or top
            print(f"{method:9} {n:5d} {top:10.3f} {sum(r['cpu'] for r in ranks) / args.epochs:10.3f} "
                  f"{max(r['wall'] for r in ranks) / args.epochs:8.3f} {base / top:9.2f} {ranks[0]['acc']:9.4f}",
                  flush=True)
    from lagprop.data import load_dataset
    n_train = len(load_dataset(args.dataset).X_train)
    if not arcs:
        return
    numel = arcs + sum(int(h) for h in args.hidden.split(",")) + 10  # weights + biases (approx. outputs)
    t_ar = allreduce_seconds(numel)
    print(f"\ngloo all-reduce of {numel} float32 numbers between 2 local processes: {t_ar * 1e3:.3f} ms")
    for method, base_spe in base_epoch.items():  # seconds per epoch of 1 process
        steps = max(1, -(-n_train // args.batch_size)) if args.batch_size else 1
        print(f"{method}: 1 process {base_spe / n_train * 1e6:.1f} us per example per epoch, "
              f"{steps} weight steps per epoch -> all-reduce {steps * t_ar:.3f} s per epoch on 2 processes")


if __name__ == "__main__":
    main()
