"""Per-epoch wall time of the Lagrangian method against backprop, same net, data and run.

    python benchmarks/bench_core.py                                   # digits, 64-100-10
    python benchmarks/bench_core.py --dataset fashion-mnist --hidden 256 --batch-size 256 --epochs 5

Both trainers start from the same weights and see the same batches.  Their epochs are
interleaved (one epoch of each in turn), so that a noisy, shared machine slows both alike;
the figure to read is the ratio of the medians.  Evaluation is not timed.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from lagprop.data import load_dataset
from lagprop.graph import Graph
from lagprop.network import Network
from lagprop.train import TrainConfig, Trainer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--hidden", default="100")
    ap.add_argument("--batch-size", type=int, default=TrainConfig().batch_size)
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--method", default="mdmm")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    ds = load_dataset(args.dataset)
    sizes = [ds.n_inputs, *[int(h) for h in args.hidden.split(",")], ds.n_outputs]
    trainers = {}
    for method in (args.method, "backprop"):
        net = Network(Graph.mlp(sizes), generator=torch.Generator().manual_seed(0))
        trainers[method] = Trainer(net, ds, TrainConfig(method=method, batch_size=args.batch_size,
                                                       epochs=args.epochs))
    times: dict[str, list[float]] = {m: [] for m in trainers}
    print(f"{ds.describe()}; MLP {sizes}; batch {args.batch_size}; torch threads {torch.get_num_threads()}")
    print(f"{'epoch':>5} " + " ".join(f"{m + ' s':>12} {m + ' acc':>14}" for m in trainers))
    for e in range(args.epochs):
        row = []
        for m, tr in trainers.items():
            before = tr.seconds
            t0 = time.perf_counter()
            metrics = tr.train_epoch()
            _ = time.perf_counter() - t0
            times[m].append(tr.seconds - before)
            row.append(f"{times[m][-1]:12.3f} {metrics['test_accuracy']:14.4f}")
        print(f"{e + 1:5d} " + " ".join(row), flush=True)
    med = {m: statistics.median(t) for m, t in times.items()}
    print("median seconds per epoch: " + ", ".join(f"{m} {v:.3f}" for m, v in med.items()))
    print(f"ratio {args.method} / backprop: {med[args.method] / med['backprop']:.3f}")


if __name__ == "__main__":
    main()
