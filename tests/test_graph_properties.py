"""Property-based tests (hypothesis) of graph validation against an independent predicate.

For arbitrary small role / arc / activation / bias lists, :class:`lagprop.graph.Graph`
must either build (exactly when the rules of a valid graph hold, checked here with
networkx) or raise :class:`GraphError`, never anything else; a valid graph survives the
dict and file round trips, and its topological levels agree with networkx.
"""

from __future__ import annotations

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lagprop.activations import ACTIVATIONS
from lagprop.errors import GraphError
from lagprop.graph import Graph, read_graph_file, write_graph_file

ROLES = ["input", "hidden", "output"]
ACTS = sorted(ACTIVATIONS)


@st.composite
def raw_graphs(draw, bad_roles: bool = True):
    n = draw(st.integers(1, 8))
    roles = draw(st.lists(st.sampled_from(ROLES + (["bogus"] if bad_roles else [])), min_size=n, max_size=n))
    acts = draw(st.lists(st.sampled_from(ACTS + ["no-such-activation"]), min_size=n, max_size=n))
    bias = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    arcs = draw(st.lists(st.tuples(st.integers(-1, n), st.integers(-1, n)), max_size=3 * n))
    return roles, arcs, acts, bias


def is_valid(roles, arcs, acts, bias) -> bool:
    """The rules of a valid graph, written out independently of Graph.validate."""
    n = len(roles)
    if any(r not in ROLES for r in roles):
        return False
    inputs = [i for i in range(n) if roles[i] == "input"]
    outputs = [i for i in range(n) if roles[i] == "output"]
    if not inputs or not outputs:
        return False
    if any(acts[i] not in ACTIVATIONS for i in range(n) if roles[i] != "input"):
        return False
    if any(not (0 <= t < n and 0 <= h < n) for t, h in arcs):
        return False
    if any(roles[h] == "input" for _, h in arcs):
        return False
    if any(bias[i] for i in inputs):
        return False
    g = nx.MultiDiGraph()
    g.add_nodes_from(range(n))
    g.add_edges_from(arcs)
    reached = set(inputs).union(*(nx.descendants(g, i) for i in inputs))
    return all(o in reached for o in outputs)


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(raw_graphs())
def test_graph_builds_exactly_when_valid(raw):
    roles, arcs, acts, bias = raw
    want = is_valid(*raw)
    try:
        g = Graph(list(roles), list(arcs), list(acts), list(bias))
    except GraphError:
        assert not want, "a valid graph was refused"
        return
    assert want, "an invalid graph was accepted"
    assert g.arcs == [tuple(a) for a in arcs]  # the arc multiset, parallel arcs and order kept


@st.composite
def _valid_graphs(draw):
    """Valid by construction: an input first, an output, arcs only into non-inputs, each output fed."""
    n = draw(st.integers(2, 8))
    roles = ["input", "output"] + draw(st.lists(st.sampled_from(ROLES), min_size=n - 2, max_size=n - 2))
    order = draw(st.permutations(range(n)))
    roles = [roles[order[i]] for i in range(n)]
    acts = draw(st.lists(st.sampled_from(ACTS), min_size=n, max_size=n))
    bias = [draw(st.booleans()) and r != "input" for r in roles]
    heads = [i for i in range(n) if roles[i] != "input"]
    inputs = [i for i in range(n) if roles[i] == "input"]
    arcs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.sampled_from(heads)), max_size=3 * n))
    arcs += [(draw(st.sampled_from(inputs)), o) for o in range(n) if roles[o] == "output"]
    assert is_valid(roles, arcs, acts, bias)
    return roles, arcs, acts, bias


@SETTINGS
@given(_valid_graphs())
def test_levels_agree_with_networkx(raw):
    g = Graph(*[list(x) for x in raw])
    ref = nx.MultiDiGraph()
    ref.add_nodes_from(range(g.n))
    ref.add_edges_from(g.arcs)
    levels = g.topological_levels()
    assert (levels is None) == (not nx.is_directed_acyclic_graph(ref))
    if levels is not None:
        assert all(levels[h] > levels[t] for t, h in g.arcs)
        assert all(levels[i] == 0 for i in range(g.n) if ref.in_degree(i) == 0)


@SETTINGS
@given(_valid_graphs())
def test_dict_round_trip(raw):
    g = Graph(*[list(x) for x in raw])
    h = Graph.from_dict(g.to_dict())
    assert h.to_dict() == g.to_dict()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.filter_too_much])
@given(_valid_graphs().filter(
    # the file names neurons only through the inputs/outputs lines and arcs, so a hidden
    # neuron without any arc cannot be written; such graphs are left out here
    lambda r: all(any(i in a for a in r[1]) for i in range(len(r[0])) if r[0][i] == "hidden")))
def test_file_round_trip(tmp_path_factory, raw):
    g = Graph(*[list(x) for x in raw])
    path = tmp_path_factory.mktemp("g") / "g.txt"
    write_graph_file(g, path)
    h = read_graph_file(path)
    by_name = {name: i for i, name in enumerate(h.names)}
    assert sorted(h.names) == sorted(g.names)
    for i, name in enumerate(g.names):
        j = by_name[name]
        assert h.roles[j] == g.roles[i] and h.bias[j] == g.bias[i]
        if g.roles[i] != "input":
            assert h.activations[j] == g.activations[i]
    assert sorted((h.names[t], h.names[s]) for t, s in h.arcs) == sorted((g.names[t], g.names[s]) for t, s in g.arcs)
    # inputs and outputs keep their order (the order of the data's columns and targets)
    assert [h.names[i] for i in h.inputs] == [g.names[i] for i in g.inputs]
    assert [h.names[i] for i in h.outputs] == [g.names[i] for i in g.outputs]


def test_from_arcs_keeps_the_declared_output_order():
    g = Graph.from_arcs([("a", "y2"), ("y2", "y1")], inputs=["a"], outputs=["y1", "y2"])
    assert [g.names[i] for i in g.outputs] == ["y1", "y2"]


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from("abcdefg"), st.sampled_from("abcdefg")), max_size=12),
       st.lists(st.sampled_from("abcdefg"), max_size=3, unique=True),
       st.lists(st.sampled_from("abcdefg"), max_size=3, unique=True))
def test_from_arcs_roles_or_graph_error(arcs, inputs, outputs):
    try:
        g = Graph.from_arcs(arcs, inputs, outputs)
    except GraphError:
        return
    assert set(inputs).isdisjoint(outputs) and inputs and outputs
    for i, name in enumerate(g.names):
        want = "input" if name in inputs else "output" if name in outputs else "hidden"
        assert g.roles[i] == want
    assert sorted((g.names[t], g.names[h]) for t, h in g.arcs) == sorted(arcs)


@pytest.mark.parametrize("bad", [
    dict(roles=["input", "output"], arcs=[(0, 1)], activations=["identity"], bias=[False, True]),
    dict(roles=["input", "output"], arcs=[(0, 1)], activations=["identity", "relu"], bias=[False, True],
         names=["x", "x"]),
    dict(roles=["input", "output"], arcs=[(0, 1)], activations=["identity", "relu"], bias=[False, True],
         layers=[[0]]),
])
def test_inconsistent_lengths_and_layers(bad):
    with pytest.raises(GraphError):
        Graph(**bad)
