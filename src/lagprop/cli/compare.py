"""``lagprop compare``: backpropagation and the Lagrangian method side by side.

Same data, network, initial weights, data order, optimizer and seed for every method (see
:mod:`lagprop.compare`); prints a per-epoch table and writes ``compare.json``,
``compare.csv``, ``table.txt`` and ``compare.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..compare import compare, parse_methods
from ..train import TrainConfig
from .common import add_data_args, add_model_args, add_training_args, build_graph, config_from_args, load_data


def add_parser(sub) -> None:
    p = sub.add_parser("compare", help="backprop and the Lagrangian method side by side",
                       description="Train backpropagation and the Lagrangian method (--method, or the "
                                   "list --methods) from the same initial weights, data order and seed; "
                                   "print test accuracy, loss and seconds per epoch side by side and "
                                   "write a plot (PNG), JSON and CSV into --out.")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.add_argument("--methods", default=None,
                   help="comma-separated methods to compare (default: backprop and --method)")
    p.add_argument("--out", default=None, help="output folder (default runs/compare-DATASET-seedN)")
    p.add_argument("--quiet", action="store_true", help="print only the final table")
    p.set_defaults(run=run)


def methods_from_args(args: argparse.Namespace) -> list[str]:
    if args.methods:
        return parse_methods(args.methods)
    other = args.method if args.method != "backprop" else TrainConfig().method
    return ["backprop", other]


def run(args: argparse.Namespace) -> int:
    methods = methods_from_args(args)
    cfg = config_from_args(args)
    for m in methods:  # fail on a bad name before loading data or training anything
        TrainConfig(**{**cfg.to_dict(), "method": m}).validate()
    data = load_data(args)
    graph = build_graph(args, data)
    out = Path(args.out or Path("runs") / f"compare-{data.name}-seed{cfg.seed}")
    if not args.quiet:
        print(f"{data.describe()}; {graph.summary()}; methods {', '.join(methods)}; "
              f"{cfg.epochs} epochs, batch {cfg.batch_size or 'all'}", flush=True)

    def progress(method: str, m: dict) -> None:
        if not args.quiet:
            acc = m.get("test_accuracy", m.get("test_mse"))
            print(f"  {method} epoch {m['epoch']}: test {acc:.4f}, loss {m['test_loss']:.4f}, "
                  f"{m['seconds']:.2f}s", flush=True)

    result = compare(data, graph, cfg, methods, args.dtype, on_epoch=progress)
    paths = result.write(out)
    print(result.table())
    print(f"wrote {paths['png']}, {paths['json'].name}, {paths['csv'].name} and {paths['table'].name}")
    return 3 if result.errors else 0
