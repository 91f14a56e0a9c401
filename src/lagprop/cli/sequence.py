"""``lagprop train --dataset adding|parity|mnist1d-seq``: recurrent networks over sequences.

:func:`lagprop.cli.train.run` hands sequence tasks here.  The state size is the first
``--hidden`` value; the cell is x_t = sigma(W x_{t-1} + U u_t + b) with sigma from
``--cell-activation`` (tanh by default), the readout identity; ``--method backprop`` is
BPTT on the same cell.  Defaults that differ from feed-forward nets: lambda is stored between
visits unless ``--lambda-init`` is given, and ``--relax-steps 0`` (the default) means T + 1
sweeps, the depth of the unrolled graph.  The run folder gets the same files and summary.json keys as for
feed-forward nets.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from ..recurrent import RNNCell, SeqTrainer
from ..runs import RunDir
from ..tasks import load_sequence_task
from .common import _sub_argv, config_from_args, given_dests


def add_sequence_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sequences (--dataset adding, parity, mnist1d-seq)")
    g.add_argument("--seq-len", type=int, default=20, help="sequence length of adding / parity (default 20)")
    g.add_argument("--n-train", type=int, default=10_000, help="generated training sequences (default 10000)")
    g.add_argument("--n-test", type=int, default=1_000, help="generated test sequences (default 1000)")
    g.add_argument("--cell-activation", default="tanh", help="recurrent unit activation (default tanh)")
    g.add_argument("--rnn-init", default="orthogonal", help="W init: orthogonal (default), identity, uniform")
    g.add_argument("--rnn-gain", type=float, default=1.0, help="scale of the initial W (default 1)")
    g.add_argument("--threads", type=int, default=0,
                   help="torch intra-op threads (0: torch's default); 1 is far faster on a busy CPU")
    g.add_argument("--clip", type=float, default=0.0, help="clip the weight gradient's norm (0: off, default)")
    g.add_argument("--lr-schedule", default="constant", help="constant (default) or cosine (lr to 0 over --epochs)")


def run_sequence(args: argparse.Namespace) -> int:
    if getattr(args, "_resume", None):
        raise ConfigError("--resume is not available for sequence tasks; start a new run with more --epochs")
    parser = getattr(args, "_parser", None)
    given = given_dests(parser, _sub_argv(args)) if parser is not None else {"lambda_init"}
    if "lambda_init" not in given:
        # sequences keep lambda between visits unless told otherwise: on the adding problem
        # (T = 20) lambda = 0 per visit was still at test MSE 0.27-0.44 after 6 epochs where
        # the stored lambda had reached 0.05 (same cell, data, K = 20)
        args.lambda_init = "stored"
    cfg = config_from_args(args)
    if args.threads < 0:
        raise ConfigError(f"--threads must be >= 0 (0: torch's default), got {args.threads}")
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg.extra["lr_schedule"] = args.lr_schedule
    if args.clip < 0:
        raise ConfigError(f"--clip must be >= 0 (0: off), got {args.clip}")
    cfg.extra["clip"] = args.clip
    if len(args.hidden) != 1:
        raise ConfigError(f"--hidden gives the recurrent state size, one number, got {args.hidden}")
    if args.graph:
        raise ConfigError("--graph does not apply to sequence tasks; the cell is set by --hidden")
    data = load_sequence_task(args.dataset, args.seq_len, args.n_train, args.n_test, args.split_seed)
    dtype = getattr(torch, args.dtype)
    gen = torch.Generator().manual_seed(cfg.seed)
    cell = RNNCell(data.n_inputs, args.hidden[0], data.n_outputs, args.cell_activation, "identity",
                   args.rnn_init, args.rnn_gain, dtype, gen).to(cfg.device)
    trainer = SeqTrainer(cell, data, cfg)
    from ..checkpoint import holds_run
    from .train import _fresh_path
    out_path = args.out or _fresh_path(Path("runs") / f"{data.name}-{cfg.method}-seed{cfg.seed}")
    if not getattr(args, "overwrite", False) and holds_run(out_path):
        raise ConfigError(f"--out {str(out_path)!r} already holds a run; replace it with --overwrite, "
                          "or choose another --out")
    out = RunDir(out_path)
    out.write_config({"train": cfg.to_dict(), "data": {
        "dataset": args.dataset, "seq_len": data.seq_len, "n_train": args.n_train, "n_test": args.n_test,
        "split_seed": args.split_seed}, "cell": {
        "state_size": cell.hidden, "activation": args.cell_activation, "init": args.rnn_init,
        "gain": args.rnn_gain, "dtype": args.dtype}})
    if not args.quiet:
        print(f"{data.describe()}; state size {cell.hidden}; method {cfg.method}", flush=True)
    started = time.time()

    def report(t: SeqTrainer, m: dict) -> None:
        out.write_metrics(t.history)
        if not args.quiet:
            key = "test_accuracy" if "test_accuracy" in m else "test_mse"
            print(f"epoch {m['epoch']}: train loss {m['train_loss']:.4f}, {key} {m[key]:.4f}, "
                  f"violation {m['constraint_violation']:.2e}, {m['seconds']:.1f}s", flush=True)

    trainer.fit(callback=report)
    summary = trainer.summary()
    out.write_summary(summary)
    torch.save({"cell": cell.state_dict(), "config": cfg.to_dict()}, out.path / "model.pt")
    if not args.quiet:
        key = "test_accuracy" if "test_accuracy" in summary else "test_mse"
        print(f"done in {time.time() - started:.1f}s: {key} {summary[key]:.4f}; wrote {out.path}", flush=True)
    return 0
