"""``lagprop audit-locality``: show, neuron by neuron, what each update reads."""

from __future__ import annotations

import argparse

from ..audit import BackpropUpdater, LocalUpdater, audit, format_report
from ..dynamics import Dynamics
from ..errors import ConfigError
from ..graph import Graph, read_graph_file
from .common import hidden_sizes

BUILTIN = ("mlp", "dag")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "audit-locality",
        help="show that every neuron's update reads only its neighbours (and that backprop's does not)",
        description="Garble every variable outside a neuron's neighbourhood and check that its update "
                    "(the training engine of --method local) is unchanged; list what it reads.  The same "
                    "audit of backpropagation shows what it needs beyond the neighbours.")
    p.add_argument("graph_name", nargs="?", default="mlp", choices=BUILTIN,
                   help="built-in graph: 'mlp' (layered, --sizes) or 'dag' (random DAG with skip and "
                        "parallel arcs); ignored with --graph")
    p.add_argument("--graph", default=None, help="a graph file (arc-list format) instead")
    p.add_argument("--sizes", type=hidden_sizes, default=[4, 5, 4, 3], help="mlp layer sizes (default 4,5,4,3)")
    p.add_argument("--hidden-neurons", type=int, default=8, help="dag: hidden neurons (default 8)")
    p.add_argument("--arcs", type=int, default=30, help="dag: arcs (default 30)")
    p.add_argument("--seed", type=int, default=0, help="seed of the dag and of the variables")
    p.add_argument("--rho", type=float, default=1.0, help="MDMM's rho (0: BDMM; default 1)")
    p.add_argument("--loss", choices=("mse", "ce"), default="mse",
                   help="mse: the paper's per-output loss (default); ce couples the outputs (soft-max)")
    p.add_argument("--examples", type=int, default=2, help="examples in the audited state (default 2)")
    p.add_argument("--against", choices=("both", "local", "backprop"), default="both",
                   help="audit the local engine, backpropagation, or both (default)")
    p.set_defaults(run=run)


def _graph(args: argparse.Namespace) -> Graph:
    if args.graph:
        return read_graph_file(args.graph)
    if args.graph_name == "mlp":
        if len(args.sizes) < 2:
            raise ConfigError("--sizes needs at least an input and an output layer, e.g. 4,5,3")
        return Graph.mlp(args.sizes, activation="tanh")
    if args.hidden_neurons < 1 or args.arcs < 1:
        raise ConfigError("--hidden-neurons and --arcs must be >= 1")
    return Graph.random_dag(3, args.hidden_neurons, 2, args.arcs, levels=3, parallel=0.15, seed=args.seed,
                            activations=("tanh", "sigmoid", "softplus"))


def run(args: argparse.Namespace) -> int:
    if args.examples < 1:
        raise ConfigError(f"--examples must be >= 1, got {args.examples}")
    if args.rho < 0:
        raise ConfigError(f"--rho must be >= 0, got {args.rho}")
    graph = _graph(args)
    print(f"{graph.summary()}; loss {args.loss}, rho {args.rho}, {args.examples} examples")
    ok = True
    if args.against in ("both", "local"):
        reps = audit(LocalUpdater(graph, Dynamics(rho=args.rho, loss=args.loss)), graph, args.loss,
                     args.examples, args.seed)
        ok = all(r.local for r in reps)
        print(format_report(graph, reps, "local engine (Algorithm 2, one visit of the neuron's group):"))
    if args.against in ("both", "backprop"):
        reps = audit(BackpropUpdater(graph, args.loss), graph, args.loss, args.examples, args.seed)
        print(format_report(graph, reps, "backpropagation (delta and weight gradient; forward activations "
                                         "granted as stored x):"))
    print("verdict: the local engine is local" if ok else "verdict: the local engine reads outside "
          "the neighbourhood (see NON-LOCAL above)")
    return 0 if ok else 1
