"""The directed graph of neurons: roles, arcs, activations, biases.

A :class:`Graph` is the paper's D = (V, A): neurons 0..n-1, each an ``input``, ``hidden``
or ``output`` neuron, and a *multiset* of arcs ``(tail, head)``: parallel arcs are
allowed and each carries its own weight.  Cycles are allowed too (the paper says "any
directed graph"); :attr:`Graph.is_acyclic` tells, and whatever needs a feed-forward pass
raises :class:`~lagprop.errors.CycleError` on a cyclic graph.

The graph holds structure only.  :class:`lagprop.network.Network` compiles it into groups
of neurons and dense or sparse blocks of weights for speed.

Builders: :meth:`Graph.mlp`, :meth:`Graph.from_arcs`, :meth:`Graph.from_networkx`,
:func:`read_graph_file` (the arc-list format documented in ``docs/graph-format.md``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .activations import get_activation
from .errors import GraphError

ROLES = ("input", "hidden", "output")


@dataclass
class Graph:
    """A directed multigraph of neurons.

    Attributes:
        roles: role of each neuron (``input``, ``hidden`` or ``output``).
        arcs: list of ``(tail, head)`` neuron indices; repeats are parallel arcs.
        activations: activation name of each neuron (ignored for inputs).
        bias: whether each neuron has a bias (an arc from a constant 1).
        names: a name for each neuron (used in files and reports).
        layers: optional partition of the neurons into layers (set by :meth:`mlp`); the
            compiler then uses dense weight matrices between consecutive layers.
    """

    roles: list[str]
    arcs: list[tuple[int, int]]
    activations: list[str]
    bias: list[bool]
    names: list[str] = field(default_factory=list)
    layers: list[list[int]] | None = None

    def __post_init__(self) -> None:
        if not self.names:
            self.names = [str(i) for i in range(len(self.roles))]
        self.arcs = [(int(t), int(h)) for t, h in self.arcs]
        self.validate()

    # ------------------------------------------------------------------ builders
    @classmethod
    def mlp(
        cls,
        sizes: Sequence[int],
        activation: str = "relu",
        output_activation: str = "identity",
        bias: bool = True,
    ) -> Graph:
        """A layered perceptron: ``sizes = [inputs, hidden..., outputs]``, fully connected."""
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or any(s < 1 for s in sizes):
            raise GraphError(f"layer sizes must be >= 1 and at least two layers, got {sizes}")
        roles: list[str] = []
        acts: list[str] = []
        layers: list[list[int]] = []
        names: list[str] = []
        for k, s in enumerate(sizes):
            role = "input" if k == 0 else "output" if k == len(sizes) - 1 else "hidden"
            act = "identity" if k == 0 else output_activation if role == "output" else activation
            start = len(roles)
            layers.append(list(range(start, start + s)))
            roles += [role] * s
            acts += [act] * s
            prefix = "in" if k == 0 else "out" if role == "output" else f"h{k}_"
            names += [f"{prefix}{j}" for j in range(s)]
        arcs = [(t, h) for a, b in zip(layers, layers[1:]) for h in b for t in a]
        has_bias = [bias and r != "input" for r in roles]
        return cls(roles, arcs, acts, has_bias, names, layers)

    @classmethod
    def from_arcs(
        cls,
        arcs: Iterable[tuple[Any, Any]],
        inputs: Sequence[Any],
        outputs: Sequence[Any],
        activation: str = "relu",
        output_activation: str = "identity",
        activations: dict[Any, str] | None = None,
        bias: bool | Iterable[Any] = True,
    ) -> Graph:
        """A graph from an explicit list of arcs between named neurons.

        Neurons are every name in ``inputs``, ``outputs`` and the arcs; those that are
        neither inputs nor outputs are hidden.  ``activations`` overrides per neuron;
        ``bias`` is True/False for all non-inputs, or the collection of neurons with one.
        """
        arcs = [tuple(a) for a in arcs]
        for a in arcs:
            if len(a) != 2:
                raise GraphError(f"an arc must be a (tail, head) pair, got {a!r}")
        inputs, outputs = list(inputs), list(outputs)
        if not inputs or not outputs:
            raise GraphError("a graph needs at least one input and one output neuron")
        dup = set(inputs) & set(outputs)
        if dup:
            raise GraphError(f"neurons {sorted(map(str, dup))} are both input and output")
        # inputs first and outputs last, each in the declared order (the order of the data's
        # columns and targets), hidden neurons in order of appearance in between
        order: dict[Any, int] = {}
        in_set, out_set = set(inputs), set(outputs)
        hidden = [v for a in arcs for v in a if v not in in_set and v not in out_set]
        for v in list(inputs) + hidden + list(outputs):
            order.setdefault(v, len(order))
        index = order
        roles = ["input" if v in in_set else "output" if v in out_set else "hidden" for v in order]
        acts = [
            "identity" if r == "input" else output_activation if r == "output" else activation
            for r in roles
        ]
        for v, act in (activations or {}).items():
            if v not in index:
                raise GraphError(f"activation given for unknown neuron {v!r}")
            acts[index[v]] = act
        if isinstance(bias, bool):
            has_bias = [bias and r != "input" for r in roles]
        else:
            chosen = set(bias)
            unknown = chosen - set(index)
            if unknown:
                raise GraphError(f"bias given for unknown neurons {sorted(map(str, unknown))}")
            has_bias = [v in chosen for v in order]
        return cls(roles, [(index[t], index[h]) for t, h in arcs], acts, has_bias,
                   [str(v) for v in order])

    @classmethod
    def from_networkx(cls, g: Any, inputs: Sequence[Any] | None = None,
                      outputs: Sequence[Any] | None = None, **kwargs: Any) -> Graph:
        """A graph from a networkx (Multi)DiGraph.

        Inputs and outputs are taken from the node attribute ``role`` when present, else
        from ``inputs``/``outputs``, else inputs are the nodes with no incoming arc and
        outputs those with no outgoing arc.  A node attribute ``activation`` overrides.
        """
        if not g.is_directed():
            raise GraphError("the networkx graph must be directed (nx.DiGraph or nx.MultiDiGraph)")
        roles = {v: d.get("role") for v, d in g.nodes(data=True)}
        if inputs is None:
            inputs = [v for v, r in roles.items() if r == "input"] or [
                v for v in g.nodes if g.in_degree(v) == 0]
        if outputs is None:
            outputs = [v for v, r in roles.items() if r == "output"] or [
                v for v in g.nodes if g.out_degree(v) == 0]
        acts = {v: d["activation"] for v, d in g.nodes(data=True) if "activation" in d}
        acts.update(kwargs.pop("activations", {}) or {})
        isolated = [v for v in g.nodes if g.degree(v) == 0 and v not in inputs and v not in outputs]
        if isolated:
            raise GraphError(f"isolated nodes {isolated[:5]} have no arcs; remove them")
        return cls.from_arcs(list(g.edges()), inputs, outputs, activations=acts, **kwargs)

    @classmethod
    def random_dag(cls, n_inputs: int, n_hidden: int, n_outputs: int, n_arcs: int,
                   levels: int = 3, parallel: float = 0.1, seed: int = 0,
                   activations: Sequence[str] = ("relu",), output_activation: str = "identity",
                   bias: bool = True) -> Graph:
        """A random DAG with skip arcs and (a fraction ``parallel`` of) parallel arcs.

        Hidden neurons are spread over ``levels`` levels; every arc goes from a lower level
        to a higher one (inputs are level 0, outputs the last), so arcs may skip levels.
        Every hidden and output neuron gets at least one parent, so every output is
        reached.  ``activations`` are cycled over the hidden neurons.
        """
        import random

        rng = random.Random(seed)
        n = n_inputs + n_hidden + n_outputs
        level = ([0] * n_inputs + [1 + (k * levels) // max(n_hidden, 1) for k in range(n_hidden)]
                 + [levels + 1] * n_outputs)
        roles = ["input"] * n_inputs + ["hidden"] * n_hidden + ["output"] * n_outputs
        acts = (["identity"] * n_inputs + [activations[k % len(activations)] for k in range(n_hidden)]
                + [output_activation] * n_outputs)
        arcs: list[tuple[int, int]] = []
        for h in range(n_inputs, n):  # one parent each, from the level just below if possible
            below = [t for t in range(n) if level[t] == level[h] - 1] or [
                t for t in range(n) if level[t] < level[h]]
            arcs.append((rng.choice(below), h))
        candidates = [(t, h) for t in range(n) for h in range(n_inputs, n) if level[t] < level[h]]
        while len(arcs) < n_arcs:
            if arcs and rng.random() < parallel:
                arcs.append(rng.choice(arcs))
            else:
                arcs.append(rng.choice(candidates))
        return cls(roles, arcs, acts, [bias and r != "input" for r in roles])

    # ---------------------------------------------------------------- structure
    @property
    def n(self) -> int:
        return len(self.roles)

    def indices(self, role: str) -> list[int]:
        return [i for i, r in enumerate(self.roles) if r == role]

    @property
    def inputs(self) -> list[int]:
        return self.indices("input")

    @property
    def outputs(self) -> list[int]:
        return self.indices("output")

    @property
    def hidden(self) -> list[int]:
        return self.indices("hidden")

    def parents(self) -> list[list[int]]:
        pa: list[list[int]] = [[] for _ in range(self.n)]
        for t, h in self.arcs:
            pa[h].append(t)
        return pa

    def children(self) -> list[list[int]]:
        ch: list[list[int]] = [[] for _ in range(self.n)]
        for t, h in self.arcs:
            ch[t].append(h)
        return ch

    def topological_levels(self) -> list[int] | None:
        """Longest-path level of each neuron (inputs 0), or None if the graph has a cycle."""
        indeg = [0] * self.n
        ch = self.children()
        for _, h in self.arcs:
            indeg[h] += 1
        level = [0] * self.n
        queue = deque(i for i in range(self.n) if indeg[i] == 0)
        seen = 0
        while queue:
            i = queue.popleft()
            seen += 1
            for r in ch[i]:
                level[r] = max(level[r], level[i] + 1)
                indeg[r] -= 1
                if indeg[r] == 0:
                    queue.append(r)
        return level if seen == self.n else None

    @property
    def is_acyclic(self) -> bool:
        return self.topological_levels() is not None

    # --------------------------------------------------------------- validation
    def validate(self) -> None:
        """Raise :class:`GraphError` naming the first problem found."""
        n = self.n
        for name, seq in (("activations", self.activations), ("bias", self.bias),
                          ("names", self.names)):
            if len(seq) != n:
                raise GraphError(f"{name} has {len(seq)} entries for {n} neurons")
        for i, r in enumerate(self.roles):
            if r not in ROLES:
                raise GraphError(f"neuron {self.names[i]!r} has unknown role {r!r}; use one of {ROLES}")
        if len(set(self.names)) != n:
            raise GraphError("neuron names must be unique")
        if not self.inputs:
            raise GraphError("the graph has no input neuron")
        if not self.outputs:
            raise GraphError("the graph has no output neuron")
        for i, act in enumerate(self.activations):
            if self.roles[i] != "input":
                get_activation(act)
        for t, h in self.arcs:
            for v in (t, h):
                if not 0 <= v < n:
                    raise GraphError(f"arc ({t}, {h}) names unknown neuron {v}; neurons are 0..{n - 1}")
            if self.roles[h] == "input":
                raise GraphError(
                    f"arc {self.names[t]} -> {self.names[h]} goes into input neuron "
                    f"{self.names[h]!r}; inputs are data and take no arcs (make it hidden)")
        for i in self.inputs:
            if self.bias[i]:
                raise GraphError(f"input neuron {self.names[i]!r} cannot have a bias")
        reached = self._reachable_from_inputs()
        unreached = [self.names[i] for i in self.outputs if not reached[i]]
        if unreached:
            raise GraphError(
                f"output neurons {unreached[:5]} are not reached from any input; add arcs to them")
        if self.layers is not None:
            flat = sorted(i for layer in self.layers for i in layer)
            if flat != list(range(n)):
                raise GraphError("layers must partition the neurons")

    def _reachable_from_inputs(self) -> list[bool]:
        ch = self.children()
        seen = [False] * self.n
        stack = list(self.inputs)
        for i in stack:
            seen[i] = True
        while stack:
            i = stack.pop()
            for r in ch[i]:
                if not seen[r]:
                    seen[r] = True
                    stack.append(r)
        return seen

    def summary(self) -> str:
        kind = "DAG" if self.is_acyclic else "cyclic graph"
        return (f"{kind}: {len(self.inputs)} inputs, {len(self.hidden)} hidden, "
                f"{len(self.outputs)} outputs, {len(self.arcs)} arcs")

    def to_dict(self) -> dict[str, Any]:
        return {"roles": self.roles, "arcs": [list(a) for a in self.arcs],
                "activations": self.activations, "bias": self.bias, "names": self.names,
                "layers": self.layers}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Graph:
        return cls(list(d["roles"]), [tuple(a) for a in d["arcs"]], list(d["activations"]),
                   list(d["bias"]), list(d["names"]), d.get("layers"))


# ---------------------------------------------------------------- the file format
def read_graph_file(path: str | Path) -> Graph:
    """Read the arc-list format (see ``docs/graph-format.md``).

    One statement per line, ``#`` starts a comment::

        inputs x1 x2            # input neurons, in the order of the data's columns
        outputs y               # output neurons, in the order of the targets
        activation tanh h1 h2   # per-neuron activation (default relu, outputs identity)
        bias none               # 'all' (default), 'none', or a list of neurons
        x1 h1                   # an arc tail -> head; repeat a line for a parallel arc
    """
    path = Path(path)
    if not path.is_file():
        raise GraphError(f"graph file {str(path)!r} does not exist")
    inputs: list[str] = []
    outputs: list[str] = []
    acts: dict[str, str] = {}
    bias: bool | list[str] = True
    arcs: list[tuple[str, str]] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        key = words[0].lower()
        where = f"{path.name}:{lineno}"
        if key == "inputs":
            inputs += words[1:]
        elif key == "outputs":
            outputs += words[1:]
        elif key == "activation":
            if len(words) < 3:
                raise GraphError(f"{where}: write 'activation NAME neuron...'")
            for v in words[2:]:
                acts[v] = words[1]
        elif key == "bias":
            rest = words[1:]
            bias = True if rest == ["all"] else False if rest == ["none"] else list(rest)
        elif len(words) == 2:
            arcs.append((words[0], words[1]))
        else:
            raise GraphError(f"{where}: cannot read {raw.strip()!r}; expected 'tail head' or a keyword "
                             "(inputs, outputs, activation, bias)")
    if not inputs or not outputs:
        raise GraphError(f"{path}: the file must name its 'inputs' and 'outputs'")
    return Graph.from_arcs(arcs, inputs, outputs, activations=acts, bias=bias)


def write_graph_file(graph: Graph, path: str | Path) -> None:
    """Write ``graph`` in the format :func:`read_graph_file` reads."""
    nm = graph.names
    lines = ["# lagprop graph", "inputs " + " ".join(nm[i] for i in graph.inputs),
             "outputs " + " ".join(nm[i] for i in graph.outputs)]
    by_act: dict[str, list[str]] = {}
    for i, a in enumerate(graph.activations):
        if graph.roles[i] != "input":
            by_act.setdefault(a, []).append(nm[i])
    lines += [f"activation {a} " + " ".join(vs) for a, vs in by_act.items()]
    with_bias = [nm[i] for i in range(graph.n) if graph.bias[i]]
    lines.append("bias " + (" ".join(with_bias) if with_bias else "none"))
    lines += [f"{nm[t]} {nm[h]}" for t, h in graph.arcs]
    Path(path).write_text("\n".join(lines) + "\n")
