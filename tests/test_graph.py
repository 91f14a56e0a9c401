"""Graph builders, validation, the file format, and how the compiler groups and blocks arcs."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from lagprop.cli import main
from lagprop.errors import CycleError, GraphError
from lagprop.graph import Graph, read_graph_file, write_graph_file
from lagprop.network import Network


def test_mlp_compiles_to_dense_blocks_and_equals_torch_linear():
    """An MLP as a general graph is dense matrices between layers: the forward pass equals
    the same weights in torch.nn.Linear layers (the layered oracle)."""
    g = Graph.mlp([6, 5, 4, 3], activation="tanh")
    net = Network(g, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert [len(gr.neurons) for gr in net.groups] == [6, 5, 4, 3]
    assert all(b.dense for b in net.blocks) and len(net.blocks) == 3
    x = torch.randn(7, 6, dtype=torch.float64)
    h = x
    for k, blk in enumerate(net.blocks):
        lin = torch.nn.Linear(*net.weights[blk.param].shape[::-1]).double()
        lin.weight.data = net.weights[blk.param].data
        lin.bias.data = net.bias_of(blk.dst).data
        h = lin(h)
        if k < 2:
            h = torch.tanh(h)
    torch.testing.assert_close(net(x), h)


def test_parallel_and_skip_arcs_make_sparse_blocks_with_one_weight_per_arc():
    arcs = [("a", "h"), ("a", "h"), ("b", "h"), ("a", "y"), ("h", "y")]
    g = Graph.from_arcs(arcs, inputs=["a", "b"], outputs=["y"], bias=False)
    net = Network(g, dtype=torch.float64)
    assert len(g.arcs) == 5
    assert net.arc_weights().shape == (5,)
    w = torch.tensor([0.5, 0.25, -1.0, 2.0, 3.0], dtype=torch.float64)
    net.set_arc_weights(w)
    torch.testing.assert_close(net.arc_weights(), w)
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    h = max(0.0, 0.5 * 1 + 0.25 * 1 - 1.0 * 2)  # parallel arcs add up; ReLU
    y = 2.0 * 1 + 3.0 * h                        # skip arc a -> y
    torch.testing.assert_close(net(x), torch.tensor([[y]], dtype=torch.float64))


def test_networkx_builder_roles_from_degrees_and_attributes():
    d = nx.DiGraph()
    d.add_edges_from([("u", "v"), ("v", "w"), ("u", "w")])
    g = Graph.from_networkx(d)
    assert [g.names[i] for i in g.inputs] == ["u"] and [g.names[i] for i in g.outputs] == ["w"]
    d.nodes["v"]["activation"] = "sigmoid"
    g = Graph.from_networkx(d)
    assert g.activations[g.names.index("v")] == "sigmoid"
    with pytest.raises(GraphError, match="directed"):
        Graph.from_networkx(nx.Graph([(1, 2)]))


@pytest.mark.parametrize("arcs,inputs,outputs,match", [
    ([("h", "a"), ("a", "y")], ["a"], ["y"], "goes into input neuron"),
    ([("a", "h")], ["a"], ["y"], "not reached"),
    ([("a", "y")], [], ["y"], "at least one input"),
    ([("a", "y")], ["a"], ["a"], "both input and output"),
])
def test_validation_names_the_problem(arcs, inputs, outputs, match):
    with pytest.raises(GraphError, match=match):
        Graph.from_arcs(arcs, inputs, outputs)


def test_unknown_neuron_and_activation():
    with pytest.raises(GraphError, match="unknown neuron"):
        Graph(["input", "output"], [(0, 5)], ["identity", "identity"], [False, False])
    with pytest.raises(GraphError, match="unknown activation"):
        Graph.from_arcs([("a", "y")], ["a"], ["y"], output_activation="swish")
    with pytest.raises(GraphError, match="layer sizes"):
        Graph.mlp([3, 0, 2])


def test_cycles_are_accepted_but_have_no_forward_pass():
    g = Graph.from_arcs([("a", "h"), ("h", "h2"), ("h2", "h"), ("h", "y")], ["a"], ["y"])
    assert not g.is_acyclic
    net = Network(g)
    with pytest.raises(CycleError, match="cycle"):
        net(torch.zeros(1, 1))


def test_file_round_trip(tmp_path):
    g = Graph.random_dag(3, 5, 2, 20, parallel=0.3, seed=4, activations=("tanh", "relu"))
    p = tmp_path / "g.txt"
    write_graph_file(g, p)
    h = read_graph_file(p)
    assert h.roles == g.roles and h.activations == g.activations and h.bias == g.bias
    assert sorted(h.arcs) == sorted(g.arcs)


def test_cyclic_graph_given_to_backprop_is_a_clean_cli_error(tmp_path, capsys):
    p = tmp_path / "cyc.txt"
    p.write_text("inputs a b\noutputs y0 y1\na h\nb h\nh h2\nh2 h\nh y0\nh2 y1\n")
    rc = main(["train", "--dataset", "xor", "--graph", str(p), "--method", "backprop", "--epochs", "1",
               "--quiet", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "cycle" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
