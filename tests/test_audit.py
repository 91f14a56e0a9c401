"""The locality audit: it passes the local engine, fails backpropagation, and catches a plant.

The allowed set of each neuron is built from the graph's arc list (own variables, parents'
x, children's x/lambda/f, the arcs at the neuron); the expectations below follow from the
graph alone.
"""

from __future__ import annotations

import numpy as np
import pytest

from lagprop.audit import BackpropUpdater, LocalUpdater, Vars, audit, format_report
from lagprop.cli import main
from lagprop.dynamics import Dynamics
from lagprop.graph import Graph

MLP = Graph.mlp([3, 4, 3, 2], activation="tanh")
DAG = Graph.random_dag(3, 6, 2, 22, levels=3, parallel=0.2, seed=4, activations=("tanh", "sigmoid"))


@pytest.mark.parametrize("graph", [MLP, DAG], ids=["mlp", "dag"])
@pytest.mark.parametrize("rho,mailbox", [(0.0, True), (1.0, True), (1.0, False)])
def test_local_engine_is_local(graph, rho, mailbox):
    reps = audit(LocalUpdater(graph, Dynamics(rho=rho, loss="mse"), mailbox), graph, loss="mse")
    assert len(reps) == len([r for r in graph.roles if r != "input"])
    assert all(r.local and not r.outside for r in reps)
    for r in reps:
        i = r.neuron
        # it does read its whole neighbourhood: every parent's x and every arc into it
        parents = {t for t, h in graph.arcs if h == i}
        assert {j for k, j in r.reads if k == "x"} >= parents
        assert {a for k, a in r.reads if k == "w"} >= {a for a, (t, h) in enumerate(graph.arcs) if h == i}
        children = {h for t, h in graph.arcs if t == i}
        if rho:  # lambda~ of a child is lambda + rho G: its x, lambda and f
            assert {j for k, j in r.reads if k == "lam"} >= children


def test_backprop_is_not_local():
    """delta of a first-layer neuron needs the output error carried through the layer between."""
    reps = {r.name: r for r in audit(BackpropUpdater(MLP), MLP)}
    first = reps["h1_0"]
    assert not first.local
    names = MLP.names
    read = {(k, names[MLP.arcs[j][0]] + ">" + names[MLP.arcs[j][1]] if k == "w" else
             names[MLP.outputs[j]] if k == "y" else names[j]) for k, j in first.outside}
    assert ("w", "h2_0>out0") in read            # a weight two layers away
    assert ("y", "out0") in read and ("y", "out1") in read  # the targets
    assert all(not r.local for n, r in reps.items() if n.startswith("h"))
    assert all(r.local for n, r in reps.items() if n.startswith("out"))


def _recompute_f(graph: Graph, v: Vars) -> Vars:
    """The plant: children's pre-activations recomputed from the current x of all their
    parents (the Jacobi habit), so a neuron's update reads its co-parents' x."""
    out = {k: a.copy() for k, a in v.items()}
    f = np.tile(v["b"], (v["x"].shape[0], 1))
    for a, (t, h) in enumerate(graph.arcs):
        f[:, h] += v["w"][a] * v["x"][:, t]
    out["f"] = f
    return out


def test_audit_catches_a_planted_non_local_read():
    honest = LocalUpdater(MLP, Dynamics(rho=1.0, loss="mse"))

    def planted(v: Vars, i: int) -> np.ndarray:
        return honest(_recompute_f(MLP, v), i)

    reps = {r.name: r for r in audit(planted, MLP)}
    r = reps["h1_0"]
    assert not r.local
    outside = {(k, MLP.names[j]) for k, j in r.outside if k == "x"}
    assert ("x", "h1_1") in outside  # a co-parent of h1_0's children: not a neighbour
    text = format_report(MLP, list(reps.values()), "planted")
    assert "NON-LOCAL" in text and "x[h1_1]" in text


def test_cli_audit(capsys, tmp_path):
    assert main(["audit-locality", "mlp", "--sizes", "2,3,2", "--against", "local"]) == 0
    out = capsys.readouterr().out
    assert "5/5 neurons read only" in out and "NON-LOCAL" not in out
    path = tmp_path / "g.txt"
    path.write_text("inputs a b\noutputs o\na h\nb h\nh o\na o\nh o\n")
    assert main(["audit-locality", "--graph", str(path)]) == 0
    out = capsys.readouterr().out
    assert "local engine" in out and "backpropagation" in out
    assert main(["audit-locality", "--graph", str(tmp_path / "missing.txt")]) == 2
