"""Support and straw neurons: the l1 prox, Eq. 7 and its general KKT form, pruning, the CLI.

Oracles: autograd (the smooth part of the x-gradient, the total derivative that lambda must
equal at the stationary point), the subdifferential optimality conditions of the proximal
map, the unpruned network's own outputs, and a literal numpy forward pass of the pruned net.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lagprop import Dynamics, Graph, Network, TrainConfig, Trainer, relax, relax_step
from lagprop.cli import main
from lagprop.data import Dataset
from lagprop.errors import GraphError
from lagprop.lagrangian import lagrangian
from lagprop.state import L1Weights
from lagprop.support import (
    NEITHER,
    STRAW,
    SUPPORT,
    analyse,
    classify,
    count_weights,
    forward_hidden,
    hidden_columns,
    prune,
    prune_straw,
    stationarity_residuals,
)

F64 = torch.float64


def _net(sizes, seed=0):
    return Network(Graph.mlp(sizes), dtype=F64, generator=torch.Generator().manual_seed(seed))


def _blobs(n=120, d=5, k=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = rng.normal(size=(n, d)) + 2.0 * np.eye(k, d)[y]
    return Dataset("blobs", X[:90], y[:90], X[90:], y[90:], k, [f"f{i}" for i in range(d)],
                   np.zeros(d), np.ones(d))


# ------------------------------------------------------------------ the l1 prox
def test_prox_step_is_the_proximal_gradient_step_with_autograd_smooth_part():
    torch.manual_seed(0)
    net = _net([4, 7, 5, 3])
    x_in = torch.randn(6, 4, dtype=F64)
    y = torch.softmax(torch.randn(6, 3, dtype=F64), 1)
    xs = [x_in] + [torch.randn(6, s, dtype=F64) for s in net.sizes[1:]]
    lams = [None] + [torch.randn(6, s, dtype=F64) for s in net.sizes[1:]]
    alpha = [None, 0.3 * torch.rand(7, dtype=F64), torch.rand(6, 5, dtype=F64), None]  # per neuron / per example
    dyn = Dynamics(mu_x=0.4, mu_lambda=0.3, rho=0.7, loss="ce", l1_mode="prox")
    new_x, _ = relax_step(net, xs, lams, y, dyn, alpha)
    leaves = [t.clone().requires_grad_(True) for t in xs[1:]]
    lagrangian(net, [x_in] + leaves, lams, y, "ce", None, rho=dyn.rho).backward()  # smooth part only
    for g in (1, 2):
        u = xs[g] - dyn.mu_x * leaves[g - 1].grad
        t = (dyn.mu_x * alpha[g]).expand_as(u)
        z = new_x[g]
        nz = z != 0
        # optimality of z = argmin 1/2 (z - u)^2 + t |z|: z - u + t sign(z) = 0, or |u| <= t at z = 0
        assert torch.allclose((z - u + t * torch.sign(z))[nz], torch.zeros_like(z[nz]), atol=1e-12)
        assert bool((u[~nz].abs() <= t[~nz] + 1e-12).all())
        assert bool(nz.any()) and bool((~nz).any())
    assert torch.equal(new_x[3], xs[3] - dyn.mu_x * leaves[2].grad) or torch.allclose(
        new_x[3], xs[3] - dyn.mu_x * leaves[2].grad, atol=1e-12)


def test_subgradient_mode_adds_alpha_sign_x():
    torch.manual_seed(1)
    net = _net([3, 6, 2])
    x_in = torch.randn(5, 3, dtype=F64)
    y = torch.randn(5, 2, dtype=F64)
    xs = [x_in] + [torch.randn(5, s, dtype=F64) for s in net.sizes[1:]]
    lams = [None] + [torch.randn(5, s, dtype=F64) for s in net.sizes[1:]]
    alpha = [None, 0.2, None]
    dyn = Dynamics(loss="mse", l1_mode="subgradient")
    new_x, _ = relax_step(net, xs, lams, y, dyn, alpha)
    leaves = [t.clone().requires_grad_(True) for t in xs[1:]]
    lagrangian(net, [x_in] + leaves, lams, y, "mse", alpha, rho=dyn.rho).backward()
    assert torch.allclose(new_x[1], xs[1] - dyn.mu_x * leaves[0].grad, atol=1e-12)


@pytest.mark.parametrize("batch_size,state", [(0, "stored"), (16, "stored"), (16, "predicted")])
def test_l1_reaches_every_lagrangian_mode(batch_size, state):
    """A huge alpha on one hidden neuron makes its relaxed x exactly 0 for every example."""
    data = _blobs()
    net = _net([5, 8, 3], seed=2)
    alpha = torch.zeros(8, dtype=F64)
    alpha[3] = 1e3
    cfg = TrainConfig(epochs=1, batch_size=batch_size, state=state, lr=1e-2)
    tr = Trainer(net, data, cfg)
    tr.alpha = L1Weights(net, alpha, tr.n)
    tr.fit()
    an = analyse(tr, "relaxed")
    assert bool((an.codes[:, 3] == STRAW).all())
    assert not bool((an.codes[:, [0, 1, 2, 4, 5, 6, 7]] == STRAW).all())


def test_per_example_alpha_acts_on_its_example_only():
    """Full batch, stored state: example 0 with alpha = 0 relaxes exactly as without l1."""
    data = _blobs()
    cfg = TrainConfig(epochs=1, batch_size=0, state="stored")
    plain = Trainer(_net([5, 8, 3], seed=3), data, cfg)
    plain.fit()
    tr = Trainer(_net([5, 8, 3], seed=3), data, cfg)
    alpha = torch.full((tr.n, 8), 1e3, dtype=F64)
    alpha[0] = 0
    tr.alpha = L1Weights(tr.net, alpha, tr.n)
    tr.fit()
    assert torch.equal(tr.state.x[1][0], plain.state.x[1][0])
    assert bool((tr.state.x[1][1:] == 0).all())
    assert bool((plain.state.x[1][1:] != 0).any())


# ----------------------------------------------------------- Eq. 7 and KKT
def test_eq7_holds_on_support_neurons_at_a_converged_point():
    """v = 0 attainable (targets = the net's own outputs, mse): lambda = -alpha sign(x) (Eq. 7)."""
    torch.manual_seed(0)
    net = _net([3, 12, 2], seed=1)
    X = torch.randn(20, 3, dtype=F64)
    with torch.no_grad():
        Y = net(X)
    alpha = [None, 0.05 + 0.1 * torch.rand(12, dtype=F64), None]
    dyn = Dynamics(loss="mse")
    xs, lams, info = relax(net, X, Y, dyn, 1500, tol=1e-11, alpha=alpha)
    assert info["converged"]
    x, lam = xs[1], lams[1]
    sup = x != 0
    assert 0.2 < float(sup.float().mean()) < 0.9  # both kinds occur
    a = alpha[1].expand_as(x)
    assert float((a * torch.sign(x) + lam)[sup].abs().max()) <= 1e-8        # Eq. 7
    assert bool((lam[sup].abs() > 0.04).all())                             # support: lambda != 0
    assert bool((lam[~sup].abs() <= a[~sup] + 1e-8).all())                 # straw: |lambda| <= alpha
    assert float(lams[2].abs().max()) <= 1e-8                               # outputs: lambda = 0
    assert torch.allclose(x, net.forward_all(X)[1], atol=1e-9)              # constraints hold
    res = stationarity_residuals(net, xs, lams, Y, dyn, alpha)
    assert res["eq7_max"] <= 1e-8 and res["kkt_straw_max"] <= 1e-8


def test_general_kkt_form_matches_autograd_total_derivative():
    """CE loss, two hidden layers: on support neurons lambda = -d(v + alpha|x|)/dx (autograd).

    The second hidden layer is tanh: a ReLU whose pre-activation moves with x can sit on its
    kink and chatter, which is a property of the dynamics, not of the conditions checked here.
    """
    torch.manual_seed(2)
    graph = Graph.mlp([4, 10, 8, 3])
    for i in graph.layers[2]:
        graph.activations[i] = "tanh"
    net = Network(graph, dtype=F64, generator=torch.Generator().manual_seed(4))
    X = torch.randn(15, 4, dtype=F64)
    Y = torch.nn.functional.one_hot(torch.randint(0, 3, (15,)), 3).to(F64)
    al = 0.05
    dyn = Dynamics(loss="ce")
    xs, lams, _ = relax(net, X, Y, dyn, 450, alpha=[None, al, al, None])
    with torch.no_grad():
        fw = net.forward_all(X)
    # autograd: x1 as a leaf, the rest by the forward pass; F = v + alpha (|x1| + |x2|)
    x1 = fw[1].clone().requires_grad_(True)
    zeros = [torch.zeros(15, s, dtype=F64) for s in net.sizes[2:]]
    a2 = net.preactivations([X, x1, *zeros])[2]
    x2 = torch.tanh(a2)
    x2.retain_grad()
    out = net.preactivations([X, x1, x2, zeros[1]])[3]
    F = -(Y * torch.log_softmax(out, 1)).sum() + al * (x1.abs().sum() + x2.abs().sum())
    F.backward()
    for g, leaf in ((1, x1), (2, x2)):
        sup = xs[g] != 0
        assert bool(sup.any())
        assert torch.allclose(lams[g][sup], -leaf.grad[sup], atol=1e-7)
    assert bool((xs[1] == 0).any())  # straw entries exist in the ReLU layer
    res = stationarity_residuals(net, xs, lams, Y, dyn, [None, al, al, None])
    assert res["kkt_support_max"] <= 1e-8 and res["kkt_straw_max"] <= 1e-8
    assert res["eq7_max"] > 1e-3  # with v > 0 the paper's Eq. 7 alone does not hold


# ------------------------------------------------------------------ analysis
def test_classify_follows_the_stated_tolerances():
    x = torch.tensor([[0.0, 1e-4, 0.5, -2.0], [0.0, 0.0, 3.0, 1e-9]])
    lam = torch.tensor([[0.3, 0.2, 1e-8, -0.1], [0.0, 1.0, 0.5, 0.5]])
    codes = classify(x, lam, x_tol=0.0, lam_tol=1e-6)
    assert codes.tolist() == [[STRAW, SUPPORT, NEITHER, SUPPORT], [STRAW, STRAW, SUPPORT, SUPPORT]]
    codes = classify(x, lam, x_tol=1e-3, lam_tol=1e-6)
    assert codes[0, 1] == STRAW and codes[1, 3] == STRAW


# ------------------------------------------------------------------- pruning
def _trained_with_dead(seed=5):
    data = _blobs()
    net = _net([5, 12, 9, 3], seed=seed)
    with torch.no_grad():  # make some neurons inactive on every example (straw in the forward pass)
        net.biases[0][[1, 4, 7]] = -1e3
        net.biases[1][[0, 5]] = -1e3
    tr = Trainer(net, data, TrainConfig(epochs=2, batch_size=30, l1=0.01))
    tr.fit()
    return tr


def test_pruning_straw_neurons_leaves_every_training_output_unchanged():
    tr = _trained_with_dead()
    net = tr.net
    dead = (forward_hidden(net, tr.X) == 0).all(0)
    assert int(dead.sum()) >= 5
    with torch.no_grad():
        before = net(tr.X)
    small, info = prune_straw(tr)
    with torch.no_grad():
        after = small(tr.X)
    assert float((before - after).abs().max()) <= 1e-6
    assert info["hidden_after"] == 21 - int(dead.sum()) == len(small.graph.hidden)
    assert info["weights_after"] == count_weights(small) < info["weights_before"]
    assert all(b.dense for b in small.blocks)  # the MLP stays layered and dense
    # literal numpy forward pass with the dead rows / columns deleted from the old matrices
    W = [w.detach().numpy() for w in net.weights]
    B = [b.detach().numpy() for b in net.biases]
    k1, k2 = ~dead[:12].numpy(), ~dead[12:].numpy()
    h1 = np.maximum(tr.X.numpy() @ W[0][k1].T + B[0][k1], 0)
    h2 = np.maximum(h1 @ W[1][k2][:, k1].T + B[1][k2], 0)
    out = h2 @ W[2][:, k2].T + B[2]
    assert np.abs(out - after.numpy()).max() <= 1e-9


def test_pruning_an_active_neuron_changes_outputs():
    tr = _trained_with_dead()
    active = int((forward_hidden(tr.net, tr.X) > 0).sum(0).argmax())
    small = prune(tr.net, [tr.net.graph.hidden[active]])
    with torch.no_grad():
        assert float((tr.net(tr.X) - small(tr.X)).abs().max()) > 1e-3


def test_pruning_a_general_dag_with_skip_and_parallel_arcs():
    arcs = [("i0", "h0"), ("i1", "h0"), ("i0", "h1"), ("i1", "h1"), ("h0", "h2"), ("h1", "h2"),
            ("h1", "h2"), ("i0", "o0"), ("h2", "o0"), ("h0", "o1"), ("h1", "o1")]
    g = Graph.from_arcs(arcs, ["i0", "i1"], ["o0", "o1"])
    net = Network(g, dtype=F64, generator=torch.Generator().manual_seed(0))
    h1 = g.names.index("h1")
    with torch.no_grad():
        net.bias_of(net.where[h1][0])[net.where[h1][1]] = -1e3
    X = torch.randn(30, 2, dtype=F64)
    small = prune(net, [h1])
    assert len(small.graph.arcs) == len(arcs) - 5
    with torch.no_grad():
        assert float((net(X) - small(X)).abs().max()) <= 1e-12


def test_prune_refuses_non_hidden_and_emptied_layers():
    net = _net([3, 2, 2])
    with pytest.raises(GraphError, match="only hidden"):
        prune(net, [0])
    with pytest.raises(GraphError, match="empty a whole layer"):
        prune(net, net.graph.hidden)


def test_hidden_columns_follow_graph_order():
    net = _net([2, 3, 2])
    X = torch.randn(4, 2, dtype=F64)
    with torch.no_grad():
        xs = net.forward_all(X)
    assert torch.equal(hidden_columns(net, xs), xs[1])


# ------------------------------------------------------------------- the CLI
def test_cli_train_prune_writes_summary_plots_and_the_pruned_model(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "digits", "--hidden", "16", "--epochs", "2", "--l1", "0.05",
               "--prune", "--prune-finetune", "1", "--quiet", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("hidden_before", "hidden_after", "test_accuracy_before_prune", "test_accuracy",
                "test_accuracy_pruned", "train_output_max_change", "prune_finetune_epochs"):
        assert key in s
    assert s["hidden_before"] == 16 and s["hidden_after"] == s["hidden"] <= 16
    assert s["straw_all_forward"] == 16 - s["hidden_after"]
    assert s["train_output_max_change"] <= 1e-5
    for png in ("support_map.png", "lambda_hist.png", "accuracy_vs_size.png"):
        assert (out / png).stat().st_size > 1000
    model = torch.load(out / "model.pt", weights_only=False)
    assert sum(r == "hidden" for r in model["graph"]["roles"]) == s["hidden_after"]
