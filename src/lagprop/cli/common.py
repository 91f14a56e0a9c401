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
                   help="digits, xor, moons, mnist1d, fashion-mnist, or a .csv/.npz path (default: digits)")
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
    g.add_argument("--lambda-init", default=d.lambda_init, help="'stored' or 'zero' (default %(default)s)")
    g.add_argument("--x-init", default=d.x_init, help="first x of a stored state: 'forward' or 'zero'")
    g.add_argument("--loss", default=d.loss, help="ce (soft-max cross-entropy, default) or mse")
    g.add_argument("--l1", type=float, default=d.l1, help="l1 weight alpha on hidden outputs (default 0)")
    g.add_argument("--l1-mode", default=d.l1_mode, help="'prox' (exact zeros, default) or 'subgradient'")
    g.add_argument("--seed", type=int, default=d.seed)
    g.add_argument("--tol-violation", type=float, default=d.tol_violation,
                   help="stop early when the mean squared constraint violation is below this")
    g.add_argument("--tol-grad", type=float, default=d.tol_grad, help="... and the mean |dL/dx| below this")
    g.add_argument("--device", default="auto", help="auto (cuda when there is one), cpu or cuda")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    cfg = TrainConfig(
        method=args.method, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, mu_x=args.mu_x, mu_lambda=args.mu_lambda,
        rho=args.rho, relax_steps=args.relax_steps, state=args.state, lambda_init=args.lambda_init,
        x_init=args.x_init, loss=args.loss, l1=args.l1, l1_mode=args.l1_mode, seed=args.seed,
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
