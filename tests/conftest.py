"""Shared fixtures: random graphs and states in float64."""

from __future__ import annotations

import pytest
import torch

from lagprop.graph import Graph
from lagprop.network import Network


def make_state(net: Network, batch: int, seed: int = 0):
    """Random inputs, x, lambda and one-hot targets for ``net`` (float64)."""
    g = torch.Generator().manual_seed(seed)
    dt = net.dtype
    x_in = torch.randn(batch, net.sizes[0], generator=g, dtype=dt)
    xs = [x_in] + [torch.randn(batch, s, generator=g, dtype=dt) for s in net.sizes[1:]]
    lams = [None] + [torch.randn(batch, s, generator=g, dtype=dt) for s in net.sizes[1:]]
    n_out = len(net.graph.outputs)
    y = torch.nn.functional.one_hot(torch.randint(0, n_out, (batch,), generator=g), n_out).to(dt)
    return x_in, xs, lams, y


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (ms per op on a loaded machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


GRAPHS = {
    "mlp": lambda: Graph.mlp([5, 7, 6, 3], activation="tanh"),
    "mlp_relu": lambda: Graph.mlp([4, 8, 3]),
    "dag_skip_parallel": lambda: Graph.random_dag(4, 9, 3, 45, levels=3, parallel=0.2, seed=1,
                                                  activations=("tanh", "sigmoid", "relu", "softplus")),
    "dag_no_bias": lambda: Graph.random_dag(3, 6, 2, 25, levels=2, parallel=0.3, seed=2,
                                            activations=("sigmoid", "tanh"), bias=False),
    "cyclic": lambda: Graph.from_arcs(
        [("i0", "h0"), ("i1", "h1"), ("h0", "h1"), ("h1", "h0"), ("h1", "h1"), ("h0", "o"), ("h1", "o"),
         ("o", "h0"), ("h0", "h1")],
        inputs=["i0", "i1"], outputs=["o"], activation="tanh"),
}


@pytest.fixture(params=sorted(GRAPHS))
def net64(request) -> Network:
    return Network(GRAPHS[request.param](), dtype=torch.float64,
                   generator=torch.Generator().manual_seed(3))
