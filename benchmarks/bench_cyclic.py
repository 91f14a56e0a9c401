"""Cyclic graphs: the Lagrangian method (MDMM, stored state) against backprop through the
unrolled fixed-point iteration, same run, same graph, data, initial weights and batches.

The task: reproduce a teacher (the same cyclic graph with other weights) whose outputs are
its fixed point for random Gaussian inputs.  Inference of the trained student on the test
inputs is by the loss-free fixed-point iteration; its residual max |x - sigma(a)| is
reported (the substitution check).

    nice python benchmarks/bench_cyclic.py
    nice python benchmarks/bench_cyclic.py --hidden 32 --epochs 30 --relax-steps 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from lagprop.cyclic import infer
from lagprop.data import Dataset
from lagprop.graph import Graph
from lagprop.network import Network
from lagprop.train import TrainConfig, Trainer


def cyclic_graph(n_in: int, n_hidden: int, n_out: int) -> Graph:
    """Inputs -> hidden (all hidden-hidden arcs, self-loops too) -> outputs -> back to hidden."""
    ins = [f"x{i}" for i in range(n_in)]
    hid = [f"h{i}" for i in range(n_hidden)]
    outs = [f"y{i}" for i in range(n_out)]
    arcs = ([(a, b) for a in ins for b in hid] + [(a, b) for a in hid for b in hid]
            + [(a, b) for a in hid for b in outs] + [(o, hid[k % n_hidden]) for k, o in enumerate(outs)])
    return Graph.from_arcs(arcs, ins, outs, activation="tanh")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--inputs", type=int, default=8)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--outputs", type=int, default=3)
    ap.add_argument("--n-train", type=int, default=2000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--relax-steps", type=int, default=5)
    ap.add_argument("--unroll", type=int, default=30, help="fixed-point iterations backprop differentiates")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--state", default="predicted", help="predicted (fixed-point iteration) or stored")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    graph = cyclic_graph(a.inputs, a.hidden, a.outputs)
    print(graph.summary(), flush=True)
    teacher = Network(graph, generator=torch.Generator().manual_seed(1000 + a.seed))
    X = np.random.default_rng(a.seed).normal(size=(a.n_train + a.n_test, a.inputs)).astype(np.float32)
    Y, info = infer(teacher, torch.as_tensor(X), iters=1000, tol=1e-6, on_fail="raise")
    Y = Y.numpy()
    data = Dataset("cyclic-teacher", X[:a.n_train], Y[:a.n_train], X[a.n_train:], Y[a.n_train:], None)
    var = float(data.y_test.var(0).mean())
    print(f"teacher fixed point: {info.describe()}; target variance {var:.4f} (the MSE of the mean)")
    results = {"target_variance": var}
    extra = {"unroll": a.unroll}
    for method in ("mdmm", "backprop-unrolled"):
        cfg = TrainConfig(method=method, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr, loss="mse",
                          state=a.state, relax_steps=a.relax_steps, seed=a.seed, extra=dict(extra))
        net = Network(graph, generator=torch.Generator().manual_seed(a.seed))
        tr = Trainer(net, data, cfg)
        tr.fit(callback=lambda t, m: print(f"  {t.cfg.method} epoch {m['epoch']}: test_mse {m['test_mse']:.5f}, "
                                           f"inference residual {m.get('inference_residual', 0):.1e}, "
                                           f"{m['seconds']:.1f}s", flush=True))
        s = tr.summary()
        start = time.perf_counter()
        _, inf = infer(net, torch.as_tensor(data.X_test), iters=1000, tol=1e-5, on_fail="ignore")
        s["inference_seconds"] = time.perf_counter() - start
        s["inference_iterations"], s["inference_converged"] = inf.iterations, inf.converged
        s["inference_residual_test"] = inf.residual
        results[method] = s
    print(f"\n{graph.summary()}; {a.epochs} epochs, batch {a.batch_size}; target variance {var:.4f}")
    for method in ("mdmm", "backprop-unrolled"):
        s = results[method]
        print(f"  {method:9s} test_mse {s['test_mse']:.5f} ({s['test_mse'] / var:.3f} of the variance), "
              f"train {s['train_mse']:.5f}, {s['seconds']:.1f}s; test inference "
              f"{'converged' if s['inference_converged'] else 'NOT converged'} in {s['inference_iterations']} "
              f"iterations, residual {s['inference_residual_test']:.1e}")
    ratio = results["mdmm"]["seconds"] / results["backprop-unrolled"]["seconds"]
    print(f"  wall-time ratio mdmm / backprop-unrolled: {ratio:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
