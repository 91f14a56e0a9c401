"""The explicit gradients of the Lagrangian (paper Eqs. 3-5) against autograd.

Oracle: the Lagrangian written independently, arc by arc from the graph's arc list (one
weight per arc, ``index_add`` over arc heads), differentiated by autograd.  It shares
nothing with the compiled groups and blocks except the weight values.
"""

from __future__ import annotations

import pytest
import torch

from conftest import make_state
from lagprop.activations import get_activation
from lagprop.dynamics import Dynamics, weight_grads
from lagprop.lagrangian import evaluate, lagrangian, loss_value, x_grads
from lagprop.network import Network


def per_neuron(net: Network, tensors) -> torch.Tensor:
    """Group tensors -> one (batch, n_neurons) tensor in the graph's neuron order."""
    batch = tensors[0].shape[0] if tensors[0] is not None else tensors[1].shape[0]
    out = torch.zeros(batch, net.graph.n, dtype=torch.float64)
    for i, (g, c) in net.where.items():
        if tensors[g] is not None:
            out[:, i] = tensors[g][:, c]
    return out


def oracle_lagrangian(net: Network, X, Lam, w_arc, b, y, loss, alpha, rho):
    """L from the arc list: X, Lam are (batch, n) in graph order; w_arc one weight per arc."""
    gr = net.graph
    tails = torch.tensor([t for t, _ in gr.arcs])
    heads = torch.tensor([h for _, h in gr.arcs])
    A = torch.zeros_like(X).index_add(1, heads, X[:, tails] * w_arc) + b
    L = loss_value(loss, X[:, gr.outputs], y).sum()
    for i in range(gr.n):
        if gr.roles[i] == "input":
            continue
        G = X[:, i] - get_activation(gr.activations[i]).fn(A[:, i])
        L = L + (Lam[:, i] * G).sum() + 0.5 * rho * (G ** 2).sum()
        if gr.roles[i] == "hidden":
            L = L + alpha * X[:, i].abs().sum()
    return L


def bias_per_neuron(net: Network) -> torch.Tensor:
    b = torch.zeros(net.graph.n, dtype=torch.float64)
    for g in range(1, len(net.groups)):
        for c, i in enumerate(net.groups[g].neurons):
            b[i] = net.bias_of(g)[c] * (1.0 if net.graph.bias[i] else 0.0)
    return b


@pytest.mark.parametrize("loss", ["ce", "mse"])
@pytest.mark.parametrize("rho,alpha", [(0.0, 0.0), (1.0, 0.0), (0.7, 0.3)])
def test_gradients_match_autograd(net64, loss, rho, alpha):
    batch = 6
    x_in, xs, lams, y = make_state(net64, batch, seed=11)
    gr = net64.graph
    hidden_groups = [g for g, grp in enumerate(net64.groups) if grp.role == "hidden"]
    alpha_groups = [alpha if g in hidden_groups else None for g in range(len(net64.groups))]

    # explicit formulas
    terms = evaluate(net64, xs, lams, rho)
    dx = per_neuron(net64, [None] + x_grads(net64, xs, terms, y, loss, alpha_groups)[1:])
    dlam = per_neuron(net64, [None] + terms.G[1:])
    with torch.no_grad():
        weight_grads(net64, xs, lams, Dynamics(rho=rho, loss=loss))
    # weight_grads divides by the batch; the oracle's L is the sum over the batch
    dw_explicit = torch.stack([
        (net64.weights[p].grad[r, c] if c >= 0 else net64.weights[p].grad[r]) * batch
        for p, r, c in net64.arc_slot])
    db_explicit = torch.zeros(gr.n, dtype=torch.float64)
    for g in range(1, len(net64.groups)):
        for c, i in enumerate(net64.groups[g].neurons):
            db_explicit[i] = net64.biases[g - 1].grad[c] * batch

    # autograd oracle
    X = per_neuron(net64, xs).requires_grad_(True)
    Lam = per_neuron(net64, [None] + lams[1:]).requires_grad_(True)
    w_arc = net64.arc_weights().clone().requires_grad_(True)
    b = bias_per_neuron(net64).requires_grad_(True)
    L = oracle_lagrangian(net64, X, Lam, w_arc, b, y, loss, alpha, rho)
    gX, gLam, gw, gb = torch.autograd.grad(L, (X, Lam, w_arc, b))

    non_input = [i for i in range(gr.n) if gr.roles[i] != "input"]
    torch.testing.assert_close(dx[:, non_input], gX[:, non_input], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dlam[:, non_input], gLam[:, non_input], rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(dw_explicit, gw, rtol=1e-6, atol=1e-9)
    has_bias = torch.tensor(gr.bias)
    torch.testing.assert_close(db_explicit[has_bias], gb[has_bias], rtol=1e-6, atol=1e-9)
    assert torch.all(db_explicit[~has_bias] == 0)

    # and the value of L itself
    Lval = lagrangian(net64, xs, lams, y, loss, alpha_groups, rho)
    torch.testing.assert_close(Lval, L.detach(), rtol=1e-10, atol=1e-10)


def test_forward_pass_matches_literal_loop():
    """The compiled forward pass equals a neuron-by-neuron loop over the arc list."""
    from conftest import GRAPHS

    net = Network(GRAPHS["dag_skip_parallel"](), dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gr = net.graph
    x_in = torch.randn(5, len(gr.inputs), dtype=torch.float64)
    out = net(x_in)
    levels = gr.topological_levels()
    order = sorted(range(gr.n), key=lambda i: levels[i])
    w = net.arc_weights()
    b = bias_per_neuron(net)
    X = torch.zeros(5, gr.n, dtype=torch.float64)
    X[:, gr.inputs] = x_in
    for i in order:
        if gr.roles[i] == "input":
            continue
        a = b[i] + sum(w[k] * X[:, t] for k, (t, h) in enumerate(gr.arcs) if h == i)
        X[:, i] = get_activation(gr.activations[i]).fn(a)
    torch.testing.assert_close(out, X[:, gr.outputs], rtol=1e-12, atol=1e-12)
