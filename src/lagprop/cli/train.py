"""``lagprop train``: train a network on a data set and write the run's folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..distributed import DistributedTrainer, NullRunDir, init_from_env, shutdown
from ..runs import RunDir
from ..train import Trainer
from .common import (
    add_data_args,
    add_model_args,
    add_training_args,
    build_graph,
    build_network,
    config_from_args,
    load_data,
)


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network (Lagrangian saddle search or backprop)",
                       description="Train a network and write DIR/summary.json, metrics.csv, "
                                   "config.json and model.pt.")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    p.add_argument("--out", default=None, help="output folder (default runs/DATASET-METHOD-seedN)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(run=run)


class Progress:
    """A progress bar on a terminal (tqdm), one line per epoch otherwise."""

    def __init__(self, total: int, quiet: bool) -> None:
        self.quiet = quiet
        self.bar = None
        if not quiet and sys.stderr.isatty():
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="epoch", file=sys.stderr)

    def __call__(self, trainer: Trainer, m: dict) -> None:
        acc = m.get("test_accuracy", m.get("test_mse"))
        text = (f"epoch {m['epoch']}: train loss {m['train_loss']:.4f}, test "
                f"{'acc' if 'test_accuracy' in m else 'mse'} {acc:.4f}, "
                f"violation {m['constraint_violation']:.2e}, {m['seconds']:.1f}s")
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix_str(text.split(": ", 1)[1])
        elif not self.quiet:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    ctx = init_from_env(cfg.device)  # under torchrun: join the process group (distributed.py)
    if ctx is not None:
        cfg.device = ctx.device
        args.quiet = args.quiet or not ctx.is_main  # only rank 0 prints and writes
    try:
        return _run(args, cfg, ctx)
    finally:
        shutdown(ctx)


def _run(args: argparse.Namespace, cfg, ctx) -> int:
    data = load_data(args)
    graph = build_graph(args, data)
    net = build_network(graph, cfg, args.dtype)
    trainer = Trainer(net, data, cfg) if ctx is None else DistributedTrainer(net, data, cfg, ctx)
    out_path = args.out or Path("runs") / f"{data.name}-{cfg.method}-seed{cfg.seed}"
    out = RunDir(out_path) if ctx is None or ctx.is_main else NullRunDir(out_path)
    out.write_config({"train": cfg.to_dict(), "data": vars_of_data(args), "graph": graph.summary()})
    if not args.quiet:
        print(f"{data.describe()}; {graph.summary()}; method {cfg.method}", flush=True)
    progress = Progress(cfg.epochs, args.quiet)
    started = time.time()
    try:
        trainer.fit(callback=lambda t, m: (progress(t, m), out.write_metrics(t.history)))
    finally:
        progress.close()
        out.write_metrics(trainer.history)
    summary = trainer.summary()
    out.write_summary(summary)
    out.save_model(net, {"n_classes": data.n_classes, "mean": data.mean.tolist(),
                         "std": data.std.tolist(), "features": data.feature_names})
    if not args.quiet:
        acc = summary.get("test_accuracy", summary.get("test_mse"))
        print(f"done in {time.time() - started:.1f}s: test {acc:.4f}; wrote {out.path}", flush=True)
    return 0


def vars_of_data(args: argparse.Namespace) -> dict:
    keys = ("dataset", "target", "data_dir", "split_seed", "test_fraction", "hidden", "graph",
            "activation", "output_activation", "no_bias", "dtype")
    return {k: getattr(args, k) for k in keys}
