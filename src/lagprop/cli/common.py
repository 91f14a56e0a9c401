"""Arguments and set-up shared by the subcommands that train (train, compare)."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..data import Dataset, load_dataset
from ..errors import ConfigError, GraphError
from ..graph import Graph, read_graph_file
from ..network import Network
from ..train import TrainConfig

_DEFAULTS = TrainConfig()


def hidden_sizes(text: str) -> list[int]:
    """argparse type for ``--hidden 100,50``."""
    text = text.strip()
    if text in ("", "none"):
        return []
    try:
        sizes = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of layer sizes, e.g. 100 or 100,50") from None
    if any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"layer sizes must be >= 1, got {text!r}")
    return sizes


def add_data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="digits",
                   help="digits, xor, moons, mnist1d, fashion-mnist, or a .csv/.npz path (default: digits); "
                   "sequences: adding, parity, mnist1d-seq (see --seq-len)")
    g.add_argument("--target", default=None, help="CSV column holding the label (default: the last)")
    g.add_argument("--data-dir", default=None, help="folder with the Fashion-MNIST IDX files")
    g.add_argument("--split-seed", type=int, default=0, help="seed of the held-out split (default 0)")
    g.add_argument("--test-fraction", type=float, default=0.2, help="held-out fraction (default 0.2)")


def add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network")
    g.add_argument("--hidden", type=hidden_sizes, default=[100],
                   help="hidden layer sizes, e.g. 100 or 256,256 (default 100)")
    g.add_argument("--graph", default=None, help="a graph file (arc-list format, docs/graph-format.md) "
                   "instead of --hidden")
    g.add_argument("--activation", default="relu", help="hidden activation (relu, tanh, sigmoid, identity, ...)")
    g.add_argument("--output-activation", default="identity", help="output activation (default identity)")
    g.add_argument("--no-bias", action="store_true", help="no biases")
    g.add_argument("--dtype", choices=("float32", "float64"), default="float32")


def add_training_args(p: argparse.ArgumentParser) -> None:
    d = _DEFAULTS
    g = p.add_argument_group("training")
    g.add_argument("--method", default=d.method, help="mdmm (default), bdmm, local, backprop")
    g.add_argument("--epochs", type=int, default=d.epochs, help=f"default {d.epochs}")
    g.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"examples per batch; 0 = the whole training set, Algorithm 1 (default {d.batch_size})")
    g.add_argument("--optimizer", default=d.optimizer, help="weight optimizer, any torch.optim class (default adam)")
    g.add_argument("--lr", type=float, default=d.lr, help=f"weight learning rate (default {d.lr})")
    g.add_argument("--weight-decay", type=float, default=d.weight_decay)
    g.add_argument("--mu-x", type=float, default=d.mu_x, help=f"step size on x (default {d.mu_x})")
    g.add_argument("--mu-lambda", type=float, default=d.mu_lambda, help=f"step size on lambda (default {d.mu_lambda})")
    g.add_argument("--rho", type=float, default=d.rho, help=f"MDMM augmented term (default {d.rho}; bdmm: 0)")
    g.add_argument("--relax-steps", type=int, default=d.relax_steps,
                   help=f"relaxation steps of x and lambda per weight step (default {d.relax_steps})")
    g.add_argument("--state", default=d.state, help="'predicted' (x by a forward pass) or 'stored'")
    g.add_argument("--lambda-init", default=None,
                   help=f"'stored' or 'zero' (default {d.lambda_init}; 'stored' when --l1 > 0, so that lambda "
                        "keeps the l1 term's reaction, Eq. 7, between visits)")
    g.add_argument("--weight-timing", default=d.weight_timing,
                   help="'wave' (default): each layer's dL/dw at the step the error reaches it; 'end': all "
                        "at the relaxed state (Algorithm 1)")
    g.add_argument("--x-init", default=d.x_init, help="first x of a stored state: 'forward' or 'zero'")
    g.add_argument("--loss", default=d.loss, help="ce (soft-max cross-entropy, default) or mse")
    g.add_argument("--l1", type=float, default=d.l1, help="l1 weight alpha on hidden outputs (default 0)")
    g.add_argument("--l1-mode", default=d.l1_mode, help="'prox' (exact zeros, default) or 'subgradient'")
    g.add_argument("--schedule", default=d.schedule,
                   help="--method local: weight step per 'sweep' (default) or per 'example' (on-line)")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--tol-violation", type=float, default=d.tol_violation,
                   help="stop early when the mean squared constraint violation is below this")
    g.add_argument("--tol-grad", type=float, default=d.tol_grad, help="... and the mean |dL/dx| below this")
    g.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu or cuda")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        method=args.method, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, mu_x=args.mu_x, mu_lambda=args.mu_lambda,
        rho=args.rho, relax_steps=args.relax_steps, state=args.state, lambda_init=args.lambda_init or (
            "stored" if args.l1 > 0 else _DEFAULTS.lambda_init),
        x_init=args.x_init, weight_timing=args.weight_timing, loss=args.loss, l1=args.l1, l1_mode=args.l1_mode,
        schedule=args.schedule, seed=args.seed,
        tol_violation=args.tol_violation, tol_grad=args.tol_grad, device=resolve_device(args.device))
    cfg.validate()
    return cfg


def resolve_device(name: str) -> str:
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(f"--device must be auto, cpu or cuda, got {name!r}")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda was asked for but torch sees no GPU; use --device cpu")
    return name


def load_data(args: argparse.Namespace) -> Dataset:
    if args.split_seed < 0:
        raise ConfigError(f"--split-seed must be >= 0, got {args.split_seed}")
    return load_dataset(args.dataset, seed=args.split_seed, test_fraction=args.test_fraction,
                        target=args.target, data_dir=args.data_dir)


def build_graph(args: argparse.Namespace, data: Dataset) -> Graph:
    if args.graph:
        graph = read_graph_file(Path(args.graph))
        if len(graph.inputs) != data.n_inputs or len(graph.outputs) != data.n_outputs:
            raise GraphError(f"the graph has {len(graph.inputs)} inputs and {len(graph.outputs)} outputs, "
                             f"but {data.name} has {data.n_inputs} inputs and {data.n_outputs} outputs")
        return graph
    return Graph.mlp([data.n_inputs, *args.hidden, data.n_outputs], activation=args.activation,
                     output_activation=args.output_activation, bias=not args.no_bias)


def build_network(graph: Graph, cfg: TrainConfig, dtype: str = "float32") -> Network:
    gen = torch.Generator().manual_seed(cfg.seed)
    net = Network(graph, dtype=getattr(torch, dtype), generator=gen)
    return net.to(cfg.device)


# ---------------------------------------------------------------- run files: --config, --resume
# (issue 8) A TOML file stands in for flags; --resume continues a run from its checkpoint with
# the configuration saved in it.  Both need to know which flags the user actually typed.

RESUME_MAY_CHANGE = ("epochs", "quiet", "checkpoint_every", "device")


def add_run_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("run files")
    g.add_argument("--config", default=None, metavar="FILE.toml",
                   help="read flags from a TOML file (keys = flag names, e.g. lr = 0.01, hidden = [100, 50]); "
                        "flags on the command line override it")
    g.add_argument("--resume", default=None, metavar="DIR",
                   help="continue the run in DIR from its last checkpoint, with its saved configuration "
                        "(only --epochs, --device, --checkpoint-every and --quiet may be given)")
    g.add_argument("--checkpoint-every", type=int, default=1, metavar="N",
                   help="write DIR/checkpoint.pt every N epochs and at the end (0: never; default 1)")
    g.add_argument("--overwrite", action="store_true",
                   help="allow --out to name a folder that already holds a run (its files are replaced)")


def saved_args(args: argparse.Namespace) -> dict:
    """The flags of a run, as saved in config.json and in checkpoints."""
    skip = ("run", "command", "config", "resume", "overwrite")
    return {k: v for k, v in vars(args).items() if not k.startswith("_") and k not in skip}


def _sub_argv(args: argparse.Namespace) -> list[str]:
    argv = list(getattr(args, "_argv", None) or [])
    cmd = getattr(args, "command", None)
    return argv[argv.index(cmd) + 1:] if cmd in argv else argv


def given_dests(parser: argparse.ArgumentParser, argv: list[str]) -> set[str]:
    """The destinations of the options that appear in ``argv`` (defaults suppressed)."""
    saved = [(a, a.default) for a in parser._actions]
    try:
        for a in parser._actions:
            a.default = argparse.SUPPRESS
        ns, _ = parser.parse_known_args(argv)
    finally:
        for a, d in saved:
            a.default = d
    return set(vars(ns)) - set(parser._defaults)


def config_file_argv(parser: argparse.ArgumentParser, path: str) -> list[str]:
    """A TOML file's keys and values as command-line flags, checked against the parser."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"--config {path!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--config {path!r} cannot be read: {e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path!r} is not valid TOML: {e}") from None
    flags = {o[2:]: a for a in parser._actions for o in a.option_strings if o.startswith("--")}
    out: list[str] = []
    for key, value in table.items():
        name = key.replace("_", "-")
        action = flags.get(name)
        if action is None or name in ("config", "resume", "help"):
            raise ConfigError(f"--config {path}: unknown key {key!r}; keys are flag names such as "
                              "dataset, hidden, method, epochs, lr, mu-x")
        if isinstance(value, dict):
            raise ConfigError(f"--config {path}: key {key!r} holds a table; give plain values")
        if action.nargs == 0:  # a switch such as --no-bias
            if not isinstance(value, bool):
                raise ConfigError(f"--config {path}: {key} must be true or false, got {value!r}")
            out += [f"--{name}"] if value else []
            continue
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out.append(f"--{name}={value}")
    return out


def prepare_args(args: argparse.Namespace) -> argparse.Namespace:
    """Apply ``--config`` and ``--resume``; returns the namespace to run with.

    With ``--resume DIR`` the checkpoint's saved flags are used; a flag on the command line
    that would change them (other than RESUME_MAY_CHANGE) is an error, because the run would
    no longer continue exactly.  The checkpoint rides along as ``args._resume``.
    """
    parser = getattr(args, "_parser", None)
    argv = _sub_argv(args)
    if args.config:
        if args.resume:
            raise ConfigError("--config and --resume cannot be combined: a resumed run uses its saved configuration")
        if parser is None:
            raise ConfigError("--config needs the command line (lagprop train --config FILE)")
        file_argv = config_file_argv(parser, args.config)
        new = parser.parse_args(file_argv + argv)
        new._argv, new._parser, new.command = args._argv, parser, args.command
        args = new
    if getattr(args, "checkpoint_every", 0) < 0:
        raise ConfigError(f"--checkpoint-every must be >= 0 (0: never), got {args.checkpoint_every}")
    if not args.resume:
        return args
    from ..checkpoint import read_checkpoint

    payload, used = read_checkpoint(args.resume)
    saved = dict(payload.get("args") or {})
    if not saved:
        raise ConfigError(f"{used} holds no saved configuration; it cannot be resumed from the command line")
    given = given_dests(parser, argv) if parser is not None else set()
    bad = []
    for d in sorted(given - set(RESUME_MAY_CHANGE) - {"resume", "overwrite"}):
        if d == "out":
            if args.out and Path(args.out).resolve() != Path(args.resume).resolve():
                bad.append("--out")
        elif getattr(args, d) != saved.get(d, getattr(args, d)):
            bad.append(f"--{d.replace('_', '-')} (saved: {saved.get(d)!r})")
    if bad:
        raise ConfigError(f"--resume continues the run in {args.resume} with its saved configuration, but "
                          f"{', '.join(bad)} would change it; only --epochs, --device, --checkpoint-every "
                          "and --quiet may be given (start a new run with --out to change anything else)")
    new = argparse.Namespace(**{**vars(args), **saved})
    for d in RESUME_MAY_CHANGE:
        if d in given:
            setattr(new, d, getattr(args, d))
    new.out, new.resume, new._resume = str(args.resume), args.resume, (payload, used)
    return new
