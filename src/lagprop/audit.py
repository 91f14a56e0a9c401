"""The locality audit: what does one neuron's update actually read?  Measured, not claimed.

The paper's claim (Algorithm 2): a visit of neuron i reads only its own variables, its
parents' x, its children's lambda and sigma' (their message lambda~ sigma'(f), made from the
child's own x, lambda and f) and the weights of the arcs at i.  The audit checks it on the
engine that trains (:func:`lagprop.local.visit_group`, the very code of ``--method local``)
by perturbation:

1. every variable outside that allowed set (x, lambda and f of every other neuron in every
   example, every other weight, bias and target) is replaced by garbage, several times, and
   the neuron's update (its new x, lambda, f, message and the gradient of its weights)
   must come out bit-for-bit the same (to 1e-12 relative);
2. each allowed unit (one neuron's x, lambda or f over all examples, one weight, a bias,
   a target) is garbled alone, which lists the set the update *does* read;
3. when (1) fails, the offending units outside the allowed set are found by bisection.

The same audit of backpropagation (its delta_i = dloss/da_i and weight gradient, even with
the forward activations granted as stored x) shows what it needs beyond the neighbours:
the weights and activations of every layer between i and the outputs, and the targets.

Variables live in a flat per-neuron form: ``x``, ``lam``, ``f`` (examples, neurons), ``w``
(one per arc), ``b`` (neurons), ``y`` (examples, outputs).  An *updater* maps (variables,
neuron) to the vector of that neuron's results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from .dynamics import Dynamics
from .graph import Graph
from .lagrangian import loss_grad
from .local import LocalState, check_levels, message, post_messages, visit_group
from .network import Network

Vars = dict[str, np.ndarray]
Unit = tuple[str, int]  # ('x'|'lam'|'f'|'b'|'w'|'y', neuron / arc / output index)
Updater = Callable[[Vars, int], np.ndarray]


def random_variables(graph: Graph, examples: int = 2, seed: int = 0) -> Vars:
    rng = np.random.default_rng(seed)
    n, n_out = graph.n, len(graph.outputs)
    return {"x": rng.normal(size=(examples, n)), "lam": rng.normal(size=(examples, n)),
            "f": rng.normal(size=(examples, n)), "w": rng.normal(size=len(graph.arcs)) / 2,
            "b": rng.normal(size=n) * np.array(graph.bias, dtype=float),
            "y": np.eye(n_out)[rng.integers(0, n_out, size=examples)]}


def _group_tensors(net: Network, a: np.ndarray) -> list[torch.Tensor]:
    return [torch.as_tensor(a[:, list(grp.neurons)], dtype=torch.float64) for grp in net.groups]


def _load_weights(net: Network, v: Vars) -> None:
    net.set_arc_weights(torch.as_tensor(v["w"], dtype=torch.float64))
    with torch.no_grad():
        for g in range(1, len(net.groups)):
            net.biases[g - 1].copy_(torch.as_tensor(v["b"][list(net.groups[g].neurons)]))


def _in_arc_grads(net: Network, i: int) -> list[float]:
    out = []
    for a, (_, h) in enumerate(net.graph.arcs):
        if h == i:
            p, r, c = net.arc_slot[a]
            gr = net.weights[p].grad
            out.append(float(gr[r, c] if c >= 0 else gr[r]))
    g, c = net.where[i]
    out.append(float(net.biases[g - 1].grad[c]))
    return out


class LocalUpdater:
    """One visit of the group holding neuron i by the training engine; i's results only.

    ``mailbox=True`` (the trainer's children-first sweep): the children's messages reach i
    through the mailbox their own :func:`~lagprop.local.post_messages` filled; ``False``:
    the visit sums them itself (parents-first sweeps).
    """

    def __init__(self, graph: Graph, dyn: Dynamics, mailbox: bool = True) -> None:
        self.net = Network(graph, dtype=torch.float64)
        check_levels(self.net)
        self.dyn = dyn
        self.mailbox = mailbox

    def __call__(self, v: Vars, i: int) -> np.ndarray:
        net, dyn = self.net, self.dyn
        _load_weights(net, v)
        xs, lams, fs = (_group_tensors(net, v[k]) for k in ("x", "lam", "f"))
        lams[0] = fs[0] = None
        ms = [None] + [message(net, g, xs[g], lams[g], fs[g], dyn.rho) for g in range(1, len(net.groups))]
        st = LocalState(xs, lams, fs, ms)
        y = torch.as_tensor(v["y"], dtype=torch.float64)
        dv = net.scatter_outputs(loss_grad(dyn.loss, net.gather_outputs(xs), y), xs)
        g, c = net.where[i]
        with torch.no_grad():
            box = None
            if self.mailbox:
                box = [None] * len(net.groups)
                for h in range(len(net.groups) - 1, g, -1):  # the groups a children-first sweep visits before g
                    post_messages(net, st, h, [b for b in net.blocks if b.dst == h], box)
            visit_group(net, st, g, dv[g], None, dyn, mailbox=box)
            net.weight_grads(st.xs, st.ms)
        cols = [st.xs[g][:, c], st.lams[g][:, c], st.fs[g][:, c], st.ms[g][:, c]]
        return np.concatenate([t.numpy() for t in cols] + [np.array(_in_arc_grads(net, i))])


class BackpropUpdater:
    """Backpropagation's delta_i = dloss/da_i and i's weight gradient, the forward
    activations granted as stored x (only the backward pass is computed)."""

    def __init__(self, graph: Graph, loss: str = "mse") -> None:
        self.net = Network(graph, dtype=torch.float64)
        check_levels(self.net)
        self.loss = loss

    def __call__(self, v: Vars, i: int) -> np.ndarray:
        net = self.net
        _load_weights(net, v)
        xs = _group_tensors(net, v["x"])
        y = torch.as_tensor(v["y"], dtype=torch.float64)
        with torch.no_grad():
            a = net.preactivations(xs)
            dv = net.scatter_outputs(loss_grad(self.loss, net.gather_outputs(xs), y), xs)
            delta: list[torch.Tensor | None] = [None] * len(net.groups)
            for g in reversed(range(1, len(net.groups))):  # the backward pass, outputs first
                e = dv[g] if dv[g] is not None else torch.zeros_like(xs[g])
                for blk in net.blocks:
                    if blk.src == g:
                        e = net._block_child(blk, delta[blk.dst], e)
                delta[g] = e * net.acts[g].derivative(a[g], net.acts[g].fn(a[g]))
            net.weight_grads(xs, [None] + [-d for d in delta[1:]])
        g, c = net.where[i]
        return np.concatenate([delta[g][:, c].numpy(), np.array(_in_arc_grads(net, i))])


# ---------------------------------------------------------------- the audit
def all_units(graph: Graph) -> list[Unit]:
    units: list[Unit] = [("x", i) for i in range(graph.n)]
    units += [(k, i) for k in ("lam", "f") for i in range(graph.n) if graph.roles[i] != "input"]
    units += [("b", i) for i in range(graph.n) if graph.bias[i]]
    units += [("w", a) for a in range(len(graph.arcs))] + [("y", q) for q in range(len(graph.outputs))]
    return units


def allowed_units(graph: Graph, i: int, loss: str = "mse") -> set[Unit]:
    """Own variables, parents' x, children's x/lambda/f (their message), the arcs at i."""
    pa = {t for t, h in graph.arcs if h == i}
    ch = {h for t, h in graph.arcs if t == i}
    ok: set[Unit] = {("x", i), ("lam", i), ("f", i), ("b", i)}
    ok |= {("x", j) for j in pa}
    ok |= {(k, r) for r in ch for k in ("x", "lam", "f")}
    ok |= {("w", a) for a, (t, h) in enumerate(graph.arcs) if i in (t, h)}
    outs = graph.outputs
    if i in outs:
        ok.add(("y", outs.index(i)))
        if loss == "ce":  # the soft-max normaliser couples the outputs (a documented generalisation)
            ok |= {("x", o) for o in outs} | {("y", q) for q in range(len(outs))}
    return ok


def _garble(v: Vars, graph: Graph, units, rng: np.random.Generator) -> Vars:
    out = {k: a.copy() for k, a in v.items()}
    for kind, j in units:
        if kind in ("x", "lam", "f", "y"):
            out[kind][:, j] = rng.normal(scale=3.0, size=out[kind].shape[0]) + 1.5
        else:
            out[kind][j] = rng.normal(scale=3.0) + 1.5
    return out


@dataclass
class NeuronReport:
    neuron: int
    name: str
    role: str
    local: bool
    reads: set[Unit] = field(default_factory=set)      # allowed units that change the update
    outside: list[Unit] = field(default_factory=list)  # units outside the allowed set that do


def _changes(update: Updater, v: Vars, i: int, ref: np.ndarray, graph: Graph, units,
             rng: np.random.Generator, trials: int) -> bool:
    for _ in range(trials):
        out = update(_garble(v, graph, units, rng), i)
        if not np.allclose(out, ref, rtol=1e-12, atol=1e-12 * (1 + np.abs(ref).max())):
            return True
    return False


def audit_neuron(update: Updater, graph: Graph, v: Vars, i: int, loss: str = "mse",
                 trials: int = 3, seed: int = 0) -> NeuronReport:
    rng = np.random.default_rng(seed + i)
    ref = update(v, i)
    ok = allowed_units(graph, i, loss)
    everything = all_units(graph)
    others = [u for u in everything if u not in ok]
    rep = NeuronReport(i, graph.names[i], graph.roles[i], True)
    rep.reads = {u for u in everything if u in ok and _changes(update, v, i, ref, graph, [u], rng, 2)}
    if others and _changes(update, v, i, ref, graph, others, rng, trials):
        rep.local = False
        stack = [others]
        while stack:  # bisection: which units outside the allowed set are read
            s = stack.pop()
            if not _changes(update, v, i, ref, graph, s, rng, 2):
                continue
            halves = [s[:len(s) // 2], s[len(s) // 2:]]
            if len(s) == 1:
                rep.outside.append(s[0])
            elif not any(_changes(update, v, i, ref, graph, h, rng, 2) for h in halves):
                rep.outside += s  # read jointly (e.g. a ReLU that only wakes when several move)
            else:
                stack += halves[::-1]
    return rep


def audit(update: Updater, graph: Graph, loss: str = "mse", examples: int = 2, seed: int = 0,
          trials: int = 3) -> list[NeuronReport]:
    """Audit every non-input neuron of ``graph`` under ``update``."""
    v = random_variables(graph, examples, seed)
    return [audit_neuron(update, graph, v, i, loss, trials, seed)
            for i in range(graph.n) if graph.roles[i] != "input"]


# ---------------------------------------------------------------- printing
def _relation(graph: Graph, i: int, unit: Unit) -> str:
    kind, j = unit
    if kind == "w":
        t, h = graph.arcs[j]
        return "in" if h == i else "out" if t == i else "other"
    if kind == "y":
        return "own" if graph.outputs[j] == i else "other outputs (soft-max)"
    if j == i:
        return "own"
    if any(t == j and h == i for t, h in graph.arcs):
        return "parents"
    if any(t == i and h == j for t, h in graph.arcs):
        return "children"
    if graph.roles[i] == graph.roles[j] == "output":
        return "other outputs (soft-max)"
    return "other"


def unit_name(graph: Graph, unit: Unit) -> str:
    kind, j = unit
    if kind == "w":
        t, h = graph.arcs[j]
        return f"w[{graph.names[t]}->{graph.names[h]}]"
    if kind == "y":
        return f"y[{graph.names[graph.outputs[j]]}]"
    return f"{kind}[{graph.names[j]}]"


def format_report(graph: Graph, reports: list[NeuronReport], title: str) -> str:
    lines = [title]
    for r in reports:
        kinds: dict[str, dict[str, int]] = {}
        for u in sorted(r.reads):
            kinds.setdefault(u[0], {}).setdefault(_relation(graph, r.neuron, u), 0)
            kinds[u[0]][_relation(graph, r.neuron, u)] += 1
        read = "; ".join(f"{k}: " + ", ".join(f"{rel} {c}" for rel, c in sorted(d.items()))
                         for k, d in sorted(kinds.items()))
        verdict = "LOCAL    " if r.local else "NON-LOCAL"
        line = f"  {r.name:>8} {r.role:<6} {verdict} reads {read or 'nothing'}"
        if not r.local:
            shown = ", ".join(unit_name(graph, u) for u in r.outside[:6])
            more = f" and {len(r.outside) - 6} more" if len(r.outside) > 6 else ""
            line += f"\n{'':>27}also reads {len(r.outside)} outside its neighbourhood: {shown}{more}"
        lines.append(line)
    n_local = sum(r.local for r in reports)
    lines.append(f"  => {n_local}/{len(reports)} neurons read only their own variables, their parents' x, "
                 "their children's message and the weights of their arcs")
    return "\n".join(lines)
