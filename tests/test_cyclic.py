"""Cyclic graphs: the fixed point checked by substitution (a literal per-neuron loop), the
stationary gradient against autograd through the unrolled iteration, training a cyclic
graph to reproduce a teacher's outputs with inference on new inputs converging."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch

from lagprop.cli import main
from lagprop.cyclic import ConvergenceError, NotConvergedWarning, fixed_point, infer, unrolled_outputs
from lagprop.data import Dataset
from lagprop.dynamics import stationary_weight_grad
from lagprop.graph import Graph, write_graph_file
from lagprop.lagrangian import loss_value
from lagprop.network import Network
from lagprop.train import TrainConfig, Trainer

pytestmark = pytest.mark.usefixtures("one_thread")


def cyclic_graph(n_hidden: int = 6, act: str = "tanh") -> Graph:
    """4 inputs, hidden units all connected to each other (self-loops too), 2 outputs that
    feed back into the hidden layer: cycles within the hidden group and through the outputs."""
    ins = [f"x{i}" for i in range(4)]
    hid = [f"h{i}" for i in range(n_hidden)]
    outs = ["y0", "y1"]
    arcs = ([(a, b) for a in ins for b in hid] + [(a, b) for a in hid for b in hid]
            + [(a, b) for a in hid for b in outs] + [("y0", "h0"), ("y1", "h1")])
    return Graph.from_arcs(arcs, ins, outs, activation=act)


def net_of(graph: Graph, seed: int, dtype=torch.float32, scale: float = 1.0) -> Network:
    net = Network(graph, dtype=dtype, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for p in net.parameters():
            p.mul_(scale)
    return net


def literal_residual(net: Network, X: torch.Tensor, xs: list[torch.Tensor]) -> float:
    """max_i |x_i - sigma(sum_{j in pa(i)} w_ij x_j + b_i)| by a loop over neurons and arcs."""
    g = net.graph
    w = net.arc_weights()
    val = {}
    for k, i in enumerate(g.inputs):
        val[i] = X[:, k]
    for i in range(g.n):
        if g.roles[i] != "input":
            gi, c = net.where[i]
            val[i] = xs[gi][:, c]
    worst = 0.0
    for i in range(g.n):
        if g.roles[i] == "input":
            continue
        gi, c = net.where[i]
        a = net.bias_of(gi)[c].detach().expand(X.shape[0]).clone()
        for arc, (t, h) in enumerate(g.arcs):
            if h == i:
                a = a + w[arc] * val[t]
        worst = max(worst, float((val[i] - net.acts[gi].fn(a)).abs().max()))
    return worst


def test_cyclic_graph_has_a_cycle_and_no_forward_pass():
    net = net_of(cyclic_graph(), 0)
    assert not net.acyclic


def test_fixed_point_satisfies_the_constraints_by_substitution():
    net = net_of(cyclic_graph(), 0, torch.float64)
    X = torch.randn(7, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xs, info = fixed_point(net, net.split_inputs(X), iters=500, tol=1e-10)
    assert info.converged and info.residual <= 1e-10
    assert literal_residual(net, X, xs) < 1e-9
    out, info2 = infer(net, X, iters=500, tol=1e-10)
    torch.testing.assert_close(out, net.gather_outputs(xs))


def test_non_convergence_is_reported_with_numbers():
    net = net_of(cyclic_graph(act="identity"), 0, scale=6.0)  # linear and expanding: no fixed point reached
    X = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    with pytest.warns(NotConvergedWarning, match=r"residual .* is .*tolerance"):
        infer(net, X, iters=30, tol=1e-6)
    with pytest.raises(ConvergenceError, match="did not converge"):
        infer(net, X, iters=30, tol=1e-6, on_fail="raise")


def test_stationary_gradient_equals_autograd_through_the_fixed_point():
    """Eq. 6 on a cyclic graph: the saddle's dL/dw is the implicit (recurrent backprop) gradient."""
    net = net_of(cyclic_graph(), 3, torch.float64, scale=0.6)  # contraction
    g = torch.Generator().manual_seed(4)
    X = torch.randn(6, 4, dtype=torch.float64, generator=g)
    Y = torch.randn(6, 2, dtype=torch.float64, generator=g)
    lag = stationary_weight_grad(net, net.split_inputs(X), Y, loss="mse", method="solve")
    net.zero_grad()
    loss = loss_value("mse", unrolled_outputs(net, X, iters=200), Y).mean()
    auto = torch.autograd.grad(loss, list(net.parameters()))
    for a, b in zip(lag, auto):
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7)


def teacher_data(n_train: int = 600, n_test: int = 200) -> Dataset:
    teacher = net_of(cyclic_graph(), 100)
    X = np.random.default_rng(0).normal(size=(n_train + n_test, 4)).astype(np.float32)
    Y, info = infer(teacher, torch.as_tensor(X), iters=500, tol=1e-6, on_fail="raise")
    Y = Y.numpy()
    return Dataset("teacher", X[:n_train], Y[:n_train], X[n_train:], Y[n_train:], None)


@pytest.mark.parametrize("state", ["predicted", "stored"])
def test_lagrangian_training_reproduces_a_cyclic_teacher_and_inference_converges(state):
    """predicted: x by the loss-free fixed-point iteration each visit; stored: kept per example."""
    data = teacher_data()
    var = float(data.y_test.var(0).mean())
    cfg = TrainConfig(method="mdmm", epochs=8, batch_size=50, lr=3e-3, loss="mse", state=state,
                      lambda_init="stored", relax_steps=5)
    net = net_of(cyclic_graph(), 1)
    tr = Trainer(net, data, cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NotConvergedWarning)  # every inference must converge
        tr.fit()
    s = tr.summary()
    assert s["test_mse"] < 0.15 * var
    # inference from the new (test) inputs reaches the fixed point, checked by substitution
    X = torch.as_tensor(data.X_test)
    out, info = infer(net, X, iters=500, tol=1e-5, on_fail="raise")
    xs, _ = fixed_point(net, net.split_inputs(X), iters=500, tol=1e-5)
    assert literal_residual(net, X, xs) < 1e-4
    assert float(((out - torch.as_tensor(data.y_test)) ** 2).mean()) < 0.15 * var


def test_predicted_state_of_a_cyclic_graph_is_the_loss_free_fixed_point():
    data = teacher_data(20, 10)
    net = net_of(cyclic_graph(), 1)
    tr = Trainer(net, data, TrainConfig(method="mdmm", loss="mse", batch_size=0, relax_steps=1))
    seen = []
    orig = tr.cyclic.initial_state
    tr.cyclic.initial_state = lambda *a, **k: seen.append(orig(*a, **k)) or seen[-1]
    before = [p.detach().clone() for p in net.parameters()]
    tr.train_epoch()
    assert len(seen) == 1  # the whole set is one batch, in order
    # the state handed to the relaxation satisfies the constraints of the weights of that step
    # (substitution by the literal loop), with no loss involved
    with torch.no_grad():
        for p, b in zip(net.parameters(), before):
            p.copy_(b)
    assert literal_residual(net, torch.as_tensor(data.X_train), seen[0]) < 1e-3


def test_backprop_baseline_unrolls_the_fixed_point_iteration():
    data = teacher_data()
    cfg = TrainConfig(method="backprop-unrolled", epochs=8, batch_size=50, lr=3e-3, loss="mse")
    tr = Trainer(net_of(cyclic_graph(), 1), data, cfg)
    tr.fit()
    assert tr.summary()["test_mse"] < 0.15 * float(data.y_test.var(0).mean())


def test_cli_trains_a_cyclic_graph_file(tmp_path):
    gfile = tmp_path / "cyc.txt"
    write_graph_file(cyclic_graph(), gfile)
    data = teacher_data(100, 50)
    np.savez(tmp_path / "d.npz", X=np.concatenate([data.X_train, data.X_test]),
             y=np.concatenate([data.y_train, data.y_test]))
    out = tmp_path / "run"
    rc = main(["train", "--dataset", str(tmp_path / "d.npz"), "--graph", str(gfile),
               "--loss", "mse", "--epochs", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert {"method", "epochs", "test_mse", "train_mse", "constraint_violation", "seconds"} <= set(s)
    assert s["inference_residual"] < 1e-3
