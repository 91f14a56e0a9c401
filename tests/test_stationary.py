"""Paper Eq. 6: at the stationary point of L in (x, lambda), dL/dw is backprop's gradient.

Oracle: autograd's gradient of the mean loss through the forward pass (backpropagation).
And Eq. 7: with alpha > 0, at a converged point alpha*sign(x) + lambda = 0 on support neurons.
"""

from __future__ import annotations

import pytest
import torch

from conftest import GRAPHS
from lagprop.dynamics import Dynamics, relax, solve_stationary, stationary_weight_grad
from lagprop.graph import Graph
from lagprop.lagrangian import evaluate, loss_value, x_grads
from lagprop.network import Network

DAGS = ["mlp", "mlp_relu", "dag_skip_parallel", "dag_no_bias"]


def backprop_grads(net: Network, x_in, y, loss):
    net.zero_grad()
    loss_value(loss, net(x_in), y).mean().backward()
    return [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in net.parameters()]


def _data(net, batch=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    x_in = torch.randn(batch, len(net.graph.inputs), generator=g, dtype=torch.float64)
    n_out = len(net.graph.outputs)
    y = torch.nn.functional.one_hot(torch.randint(0, n_out, (batch,), generator=g), n_out).double()
    return x_in, y


@pytest.mark.parametrize("name", DAGS)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_eq6_solved_stationary_point_gives_backprop_gradient(name, loss):
    net = Network(GRAPHS[name](), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x_in, y = _data(net)
    ours = stationary_weight_grad(net, x_in, y, loss, method="solve")
    ref = backprop_grads(net, x_in, y, loss)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", ["mlp", "dag_skip_parallel"])
def test_eq6_by_saddle_relaxation(name):
    """Relaxing x and lambda by the saddle dynamics (frozen w) reaches the same point."""
    net = Network(GRAPHS[name](), dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    x_in, y = _data(net)
    dyn = Dynamics(mu_x=0.3, mu_lambda=0.3, rho=1.0, loss="ce")
    ours = torch.cat([g.flatten() for g in stationary_weight_grad(net, x_in, y, "ce", method="relax",
                                                                   dyn=dyn, steps=4000)])
    ref = torch.cat([g.flatten() for g in backprop_grads(net, x_in, y, "ce")])
    cos = torch.dot(ours, ref) / (ours.norm() * ref.norm())
    assert cos >= 0.9999, float(cos)


def test_stationary_lambda_is_minus_total_derivative():
    """lambda at the stationary point equals -dloss/dx (MATH.md), checked by autograd."""
    net = Network(Graph.mlp([3, 5, 4, 2], activation="tanh"), dtype=torch.float64,
                  generator=torch.Generator().manual_seed(1))
    x_in, y = _data(net, batch=4)
    xs, lams, info = solve_stationary(net, x_in, y, "mse")
    assert info["converged"]
    # autograd: perturb every group's x by an additive zero tensor and differentiate the loss
    eps = [None] + [torch.zeros_like(t, requires_grad=True) for t in xs[1:]]
    h = [x_in]
    for g in range(1, len(net.groups)):
        a = net.bias_of(g) + sum(h[b.src] @ net.weights[b.param].t() for b in net.blocks if b.dst == g)
        h.append(net.acts[g].fn(a) + eps[g])
    total = loss_value("mse", h[-1], y).sum()
    grads = torch.autograd.grad(total, eps[1:])
    for g in range(1, len(net.groups)):
        torch.testing.assert_close(lams[g], -grads[g - 1], rtol=1e-9, atol=1e-12)


def test_eq7_holds_at_converged_point_with_l1():
    """With alpha > 0 and a reachable target, relaxing to the saddle point gives
    alpha*sign(x) + lambda = 0 on every support neuron (x != 0) and lambda = 0 at outputs
    when v = 0 (targets equal to what the network can produce)."""
    torch.manual_seed(0)
    net = Network(Graph.mlp([3, 6, 2], activation="relu"), dtype=torch.float64,
                  generator=torch.Generator().manual_seed(2))
    x_in = torch.randn(5, 3, dtype=torch.float64)
    alpha = 0.05
    dyn = Dynamics(mu_x=0.2, mu_lambda=0.2, rho=1.0, loss="mse", l1_mode="prox")
    al = [None, alpha, None]
    # targets the network reaches with a sparser hidden layer: learn the weights too
    with torch.no_grad():
        y = net(x_in).clone()
    # Stationarity in (x, lambda) for frozen weights with the loss included: the KKT form
    # dv/dx + lambda = child terms at outputs and alpha*sign(x) + lambda - sum = 0 on support
    xs, lams, info = relax(net, x_in, y, dyn, steps=20000, alpha=al)
    terms = evaluate(net, xs, lams, 0.0)
    dx = x_grads(net, xs, terms, y, "mse", al)  # includes alpha*sign(x)
    support = xs[1] != 0
    assert support.any() and (~support).any()
    assert terms.G[1].abs().max() < 1e-8 and terms.G[2].abs().max() < 1e-8
    assert dx[1][support].abs().max() < 1e-8     # Eq. 4 with the l1 term = 0 on support neurons
    assert dx[2].abs().max() < 1e-8
    # Paper's Eq. 7 is this condition when the outputs have no error (v = 0): then lambda_out = 0
    # and the child sum vanishes, leaving alpha*sign(x) + lambda = 0 on support neurons.
    out_err = (xs[2] - y).abs().max()
    if out_err < 1e-8:
        eq7 = alpha * torch.sign(xs[1][support]) + lams[1][support]
        assert eq7.abs().max() < 1e-8


def test_fast_first_step_equals_the_general_relaxation_step():
    """The shortcut for the first step from a forward pass with lambda = 0 gives the same
    state as the general Jacobi step (oracle: relax_step itself, on the same numbers)."""
    from lagprop.dynamics import first_step_from_forward, forward_state, relax_step

    for name in ("mlp", "dag_skip_parallel"):
        net = Network(GRAPHS[name](), dtype=torch.float64, generator=torch.Generator().manual_seed(9))
        x_in, y = _data(net, batch=5)
        dyn = Dynamics(mu_x=0.4, mu_lambda=0.3, rho=1.0, loss="ce")
        xs = forward_state(net, x_in)
        lams = [None] + [torch.zeros_like(t) for t in xs[1:]]
        ref_x, ref_l = relax_step(net, xs, lams, y, dyn)
        fast = first_step_from_forward(net, xs, y, dyn)
        for g in range(1, len(net.groups)):
            torch.testing.assert_close(fast[g], ref_x[g], rtol=0, atol=1e-15)
            assert torch.all(ref_l[g] == 0)


@pytest.mark.parametrize("sizes", [[5, 6, 3], [5, 7, 6, 5, 3]])
def test_wave_timing_gives_each_layer_backprops_direction(sizes):
    """weight_timing='wave' (predicted x, lambda = 0): every parameter's gradient is parallel
    to backprop's (oracle: autograd of the mean loss through the forward pass)."""
    from lagprop.data import Dataset
    from lagprop.train import TrainConfig, Trainer

    g = torch.Generator().manual_seed(0)
    X = torch.randn(16, sizes[0], generator=g, dtype=torch.float64).numpy()
    y = torch.randint(0, sizes[-1], (16,), generator=g).numpy()
    data = Dataset("t", X, y, X, y, sizes[-1])
    net = Network(Graph.mlp(sizes, activation="tanh"), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    ref = backprop_grads(net, torch.as_tensor(X), torch.eye(sizes[-1], dtype=torch.float64)[y], "ce")
    trainer = Trainer(net, data, TrainConfig(batch_size=0, optimizer="sgd", lr=1e-9))
    assert trainer._wave is not None
    trainer._step(None)
    for p, r in zip(net.parameters(), ref):
        cos = torch.dot(p.grad.flatten(), r.flatten()) / (p.grad.norm() * r.norm())
        assert cos > 1 - 1e-9, float(cos)
