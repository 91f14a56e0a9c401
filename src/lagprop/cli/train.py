"""``lagprop train``: train a network on a data set and write the run's folder."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..checkpoint import Session, clear_run, holds_run, restore
from ..distributed import DistributedTrainer, NullRunDir, init_from_env, shutdown, world_size
from ..errors import ConfigError
from ..graph import Graph
from ..runs import RunDir
from ..tasks import is_graph_task, is_sequence_task
from ..train import Trainer
from .common import (
    add_data_args,
    add_model_args,
    add_run_args,
    add_training_args,
    build_graph,
    build_network,
    config_from_args,
    load_data,
    prepare_args,
    saved_args,
)
from .graphtask import add_graph_args, run_graph_task
from .predict import training_labels
from .sequence import add_sequence_args, run_sequence


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a network (Lagrangian saddle search or backprop)",
                       description="Train a network and write DIR/summary.json, metrics.csv, "
                                   "config.json and model.pt.")
    add_data_args(p)
    add_model_args(p)
    add_training_args(p)
    add_run_args(p)
    add_sequence_args(p)
    add_graph_args(p)
    p.add_argument("--out", default=None, help="output folder (default runs/DATASET-METHOD-seedN)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--prune", action="store_true",
                   help="after training, remove the hidden neurons straw for every training example "
                        "(use with --l1); writes support plots and the pruned model (lagprop.support)")
    p.add_argument("--prune-criterion", default="forward", choices=("forward", "relaxed", "both"),
                   help="straw = inactive in the forward pass ('forward', default: training outputs "
                        "provably unchanged), x = 0 in the relaxed state ('relaxed'), or 'both'")
    p.add_argument("--prune-finetune", type=int, default=10,
                   help="after pruning, epochs of training without l1 on the pruned network (default 10; "
                        "0 keeps the pruned net exactly as trained)")
    p.set_defaults(run=run, _parser=p)


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
    args = prepare_args(args)  # --config FILE.toml, --resume DIR (cli/common.py)
    if (is_sequence_task(args.dataset) or is_graph_task(args.dataset)) and world_size() > 1:
        raise ConfigError(f"--dataset {args.dataset} trains in one process only; run it without torchrun")
    if is_sequence_task(args.dataset):  # recurrent nets over sequences (cli/sequence.py)
        return run_sequence(args)
    if is_graph_task(args.dataset):  # graph neural networks, LP-GNN (cli/graphtask.py)
        return run_graph_task(args)
    cfg = config_from_args(args)
    if getattr(args, "prune_finetune", 0) < 0:  # checked before training, not after
        raise ConfigError(f"--prune-finetune must be >= 0 epochs, got {args.prune_finetune}")
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
    resume = getattr(args, "_resume", None)  # (checkpoint payload, file) with --resume
    graph = Graph.from_dict(resume[0]["graph"]) if resume else build_graph(args, data)
    net = build_network(graph, cfg, args.dtype)
    trainer = Trainer(net, data, cfg) if ctx is None else DistributedTrainer(net, data, cfg, ctx)
    if resume:
        restore(trainer, resume[0])  # refuses another graph or other data, with a clear message
        if trainer.epoch >= cfg.epochs:
            print(f"{args.out} is already at epoch {trainer.epoch}; give --epochs above {trainer.epoch} "
                  "to train further", file=sys.stderr)
            return 0
    out_path = args.out or _fresh_path(Path("runs") / f"{data.name}-{cfg.method}-seed{cfg.seed}")
    if not resume and not args.overwrite and (ctx is None or ctx.is_main) and holds_run(out_path):
        raise ConfigError(f"--out {str(out_path)!r} already holds a run; continue it with --resume {out_path}, "
                          "replace it with --overwrite, or choose another --out")
    if not resume and args.overwrite and (ctx is None or ctx.is_main):
        clear_run(out_path)  # the old run's files go only now, after every check has passed
    out = RunDir(out_path) if ctx is None or ctx.is_main else NullRunDir(out_path)
    out.write_config({"train": cfg.to_dict(), "data": vars_of_data(args), "graph": graph.summary(),
                      "args": saved_args(args)})
    if not args.quiet:
        print(f"{data.describe()}; {graph.summary()}; method {cfg.method}", flush=True)
    progress = Progress(cfg.epochs - trainer.epoch, args.quiet)
    started = time.time()
    session = Session(trainer, out, args.checkpoint_every, saved_args(args))  # checkpoints, Ctrl-C
    try:
        finished = session.fit(callback=lambda t, m: (progress(t, m), out.write_metrics(t.history)))
    finally:
        progress.close()
        out.write_metrics(trainer.history)
    if not finished:
        return 130
    summary = trainer.summary()
    if getattr(args, "prune", False):  # support / straw neurons (paper section 4)
        from ..support import prune_and_finetune
        net = prune_and_finetune(trainer, args.prune_criterion, args.prune_finetune, out.path, summary)
    out.write_summary(summary)
    out.save_model(net, {"n_classes": data.n_classes, "mean": data.mean.tolist(),
                         "std": data.std.tolist(), "features": data.feature_names, "loss": cfg.loss,
                         **training_labels(args.dataset, args.target)})  # for lagprop predict
    if not args.quiet:
        acc = summary.get("test_accuracy", summary.get("test_mse"))
        print(f"done in {time.time() - started:.1f}s: test {acc:.4f}; wrote {out.path}", flush=True)
    return 0


def _fresh_path(path: Path) -> Path:
    """The default --out: ``path``, or ``path-2``, ``path-3``... if it already holds a run."""
    k, cand = 2, path
    while holds_run(cand):
        cand, k = path.with_name(f"{path.name}-{k}"), k + 1
    return cand


def vars_of_data(args: argparse.Namespace) -> dict:
    keys = ("dataset", "target", "data_dir", "split_seed", "test_fraction", "hidden", "graph",
            "activation", "output_activation", "no_bias", "dtype")
    return {k: getattr(args, k) for k in keys}
