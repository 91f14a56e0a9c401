"""Mini-batch and on-line learning against a literal Algorithm 1 written here from the paper.

Oracle: :func:`literal_training`, an independent float64 implementation of the saddle
search from paper Eq. 2 alone.  It writes the Lagrangian of a layered ReLU net as a plain
function of (W, b, x, lambda) and takes every derivative by autograd (Eqs. 3-5 are never
coded by hand), with the conventions of docs/design.md:

* one relaxation step is a Jacobi step from the old state: x <- x - mu_x dL/dx,
  lambda <- lambda + mu_lambda dL/dlambda (= + mu_lambda G);
* then dL/dw at the new state, divided by the batch size, and plain SGD on the weights;
* MDMM adds (rho/2) sum G^2 to L (rho = 0 is the paper's BDMM);
* state 'stored': x and lambda of each example are kept between visits (x from a forward
  pass, or zero, at the first visit); 'predicted': x by a forward pass at every visit;
  lambda 'stored' or 'zero'.

The only things read from lagprop are the initial weights and the order in which the
Trainer visited the examples (recorded, not recomputed).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lagprop.cli.common import build_network
from lagprop.data import Dataset
from lagprop.graph import Graph
from lagprop.state import ExampleState
from lagprop.train import TrainConfig, Trainer

F64 = torch.float64


def tiny_data(n: int = 24, d: int = 5, classes: int = 3, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, classes, n)
    y[:classes] = np.arange(classes)
    return Dataset("tiny", X, y, X[:6].copy(), y[:6].copy(), classes)


# ------------------------------------------------------------------ the oracle
def _lagrangian(Ws, bs, X, xs, lams, Y, rho: float, loss: str):
    """Paper Eq. 2 (+ the MDMM term), summed over the examples; ReLU hidden, identity outputs."""
    total = torch.zeros((), dtype=F64)
    prev = X
    for layer, (W, b) in enumerate(zip(Ws, bs)):
        a = prev @ W.T + b
        s = a if layer == len(Ws) - 1 else torch.relu(a)
        G = xs[layer] - s
        total = total + (lams[layer] * G).sum() + 0.5 * rho * (G ** 2).sum()
        prev = xs[layer]
    out = xs[-1]
    if loss == "ce":
        v = -(Y * torch.log_softmax(out, 1)).sum()
    else:
        v = 0.5 * ((out - Y) ** 2).sum()
    return total + v


def _forward(Ws, bs, X):
    xs, prev = [], X
    for layer, (W, b) in enumerate(zip(Ws, bs)):
        a = prev @ W.T + b
        prev = a if layer == len(Ws) - 1 else torch.relu(a)
        xs.append(prev)
    return xs


def literal_training(Ws, bs, X, Y, batches, *, rho, mu_x, mu_l, lr, relax_steps, state,
                     lambda_init, x_init, loss):
    """The saddle search, batch by batch in the given order; returns weights and the store."""
    Ws = [w.clone() for w in Ws]
    bs = [b.clone() for b in bs]
    n = X.shape[0]
    sizes = [w.shape[0] for w in Ws]
    store_x = [torch.zeros(n, s, dtype=F64) for s in sizes]
    store_l = [torch.zeros(n, s, dtype=F64) for s in sizes]
    visited = torch.zeros(n, dtype=torch.bool)
    for idx in batches:
        Xb, Yb = X[idx], Y[idx]
        with torch.no_grad():
            fwd = _forward(Ws, bs, Xb)
            if state == "stored":
                first = fwd if x_init == "forward" else [torch.zeros_like(t) for t in fwd]
                xs = [torch.where(visited[idx][:, None], sx[idx], f) for sx, f in zip(store_x, first)]
            else:
                xs = fwd
            lams = [sl[idx].clone() for sl in store_l] if lambda_init == "stored" else [
                torch.zeros_like(t) for t in xs]
        for _ in range(relax_steps):  # Jacobi: every derivative at the old state
            xv = [t.clone().requires_grad_() for t in xs]
            lv = [t.clone().requires_grad_() for t in lams]
            L = _lagrangian(Ws, bs, Xb, xv, lv, Yb, rho, loss)
            gx = torch.autograd.grad(L, xv, retain_graph=True)          # Eq. 4
            gl = torch.autograd.grad(L, lv)                             # Eq. 5: G
            xs = [x - mu_x * d for x, d in zip(xs, gx)]                 # descent on x
            lams = [la + mu_l * d for la, d in zip(lams, gl)]           # ascent on lambda
        params = [t.clone().requires_grad_() for t in Ws + bs]
        L = _lagrangian(params[:len(Ws)], params[len(Ws):], Xb, xs, lams, Yb, rho, loss)
        grads = torch.autograd.grad(L, params)                          # Eq. 3
        with torch.no_grad():
            new = [p - lr * g / len(idx) for p, g in zip(params, grads)]
        Ws, bs = new[:len(Ws)], new[len(Ws):]
        for k in range(len(sizes)):
            if state == "stored":
                store_x[k][idx] = xs[k].detach()
            if lambda_init == "stored":
                store_l[k][idx] = lams[k].detach()
        visited[idx] = True
    return Ws, bs, store_x, store_l


# ------------------------------------------------------------------ helpers
def make_trainer(sizes, **kw):
    data = tiny_data(d=sizes[0], classes=sizes[-1])
    cfg = TrainConfig(optimizer="sgd", **kw)
    net = build_network(Graph.mlp(sizes), cfg, "float64")
    trainer = Trainer(net, data, cfg)
    visits: list[torch.Tensor] = []
    plain = trainer.batches

    def recorded():
        out = plain()
        visits.extend(torch.arange(trainer.n) if b is None else b.clone() for b in out)
        return out

    trainer.batches = recorded
    W0 = [w.detach().clone() for w in net.weights]
    b0 = [b.detach().clone() for b in net.biases]
    X = torch.as_tensor(data.X_train, dtype=F64)
    Y = torch.nn.functional.one_hot(torch.as_tensor(data.y_train), sizes[-1]).to(F64)
    return trainer, visits, W0, b0, X, Y


def assert_matches(trainer, Ws, bs, store_x, store_l, tol=1e-10):
    for got, want in zip(trainer.net.weights, Ws):
        torch.testing.assert_close(got.detach(), want, atol=tol, rtol=0)
    for got, want in zip(trainer.net.biases, bs):
        torch.testing.assert_close(got.detach(), want, atol=tol, rtol=0)
    st = trainer.state
    for k in range(len(Ws)):
        if st.x[k + 1] is not None:
            torch.testing.assert_close(st.x[k + 1], store_x[k], atol=tol, rtol=0)
        if st.lam[k + 1] is not None:
            torch.testing.assert_close(st.lam[k + 1], store_l[k], atol=tol, rtol=0)


# ------------------------------------------------------------------ (a) Algorithm 1
@pytest.mark.parametrize("method,rho,x_init,loss", [
    ("mdmm", 1.0, "forward", "ce"),
    ("mdmm", 0.5, "zero", "mse"),
    ("bdmm", 0.0, "forward", "ce"),
])
def test_stored_full_batch_is_algorithm_1(method, rho, x_init, loss):
    """--batch-size 0 --state stored --relax-steps 1 is Algorithm 1, sweep for sweep."""
    sweeps = 6
    trainer, visits, W0, b0, X, Y = make_trainer(
        [5, 7, 6, 3], method=method, rho=rho, batch_size=0, state="stored", lambda_init="stored",
        x_init=x_init, relax_steps=1, mu_x=0.3, mu_lambda=0.4, lr=0.2, loss=loss, epochs=sweeps)
    trainer.fit()
    assert len(visits) == sweeps and all(len(v) == trainer.n for v in visits)
    want = literal_training(W0, b0, X, Y, [torch.arange(trainer.n)] * sweeps, rho=rho, mu_x=0.3,
                            mu_l=0.4, lr=0.2, relax_steps=1, state="stored", lambda_init="stored",
                            x_init=x_init, loss=loss)
    assert_matches(trainer, *want)
    # the weights really moved and the state is no longer the forward pass: not a vacuous match
    assert max(float((w.detach() - w0).abs().max()) for w, w0 in zip(trainer.net.weights, W0)) > 1e-3
    assert max(float((x - f).abs().max()) for x, f in zip(want[2], _forward(want[0], want[1], X))) > 1e-4


# ------------------------------------------------------------------ (b) on-line learning
@pytest.mark.parametrize("state,lambda_init,relax_steps", [
    ("stored", "stored", 1),
    ("stored", "stored", 3),
    ("predicted", "stored", 2),
    ("predicted", "zero", 1),
])
def test_online_is_the_literal_per_example_schedule(state, lambda_init, relax_steps):
    """Batch 1: K relaxation steps and one weight update per example, in the visiting order."""
    epochs = 2
    trainer, visits, W0, b0, X, Y = make_trainer(
        [5, 6, 4, 3], method="mdmm", rho=1.0, batch_size=1, state=state, lambda_init=lambda_init,
        x_init="forward", relax_steps=relax_steps, mu_x=0.3, mu_lambda=0.3, lr=0.05, epochs=epochs)
    trainer.fit()
    assert len(visits) == epochs * trainer.n and all(len(v) == 1 for v in visits)
    assert sorted(int(v) for v in visits[:trainer.n]) == list(range(trainer.n))
    want = literal_training(W0, b0, X, Y, visits, rho=1.0, mu_x=0.3, mu_l=0.3, lr=0.05,
                            relax_steps=relax_steps, state=state, lambda_init=lambda_init,
                            x_init="forward", loss="ce")
    assert_matches(trainer, *want)


def test_online_differs_from_full_batch():
    """Per-example updates are a different schedule from Algorithm 1 (the oracle can tell)."""
    trainer, visits, W0, b0, X, Y = make_trainer(
        [5, 6, 3], method="mdmm", batch_size=1, state="stored", relax_steps=1, lr=0.05, epochs=1)
    trainer.fit()
    full = literal_training(W0, b0, X, Y, [torch.arange(trainer.n)] * 1, rho=1.0, mu_x=0.5, mu_l=0.5,
                            lr=0.05, relax_steps=1, state="stored", lambda_init="stored",
                            x_init="forward", loss="ce")
    gap = max(float((w.detach() - f).abs().max()) for w, f in zip(trainer.net.weights, full[0]))
    assert gap > 1e-4


def _local():
    try:
        import lagprop.local as local
    except ImportError:
        return None
    return local


@pytest.mark.skipif(_local() is None, reason="lagprop.local (the local engine) is not importable")
@pytest.mark.parametrize("loss,state", [("ce", "stored"), ("mse", "stored"), ("ce", "predicted")])
def test_online_matches_local_engine_per_example_schedule(loss, state):
    """mdmm with batch 1 == the local engine's per-example schedule (Algorithm 2, line 20 in the loop).

    With a single layer of non-input neurons the Jacobi step and the Gauss-Seidel sweep are
    the same update, so the two engines must agree to rounding, weights and state, over
    several epochs.  (With hidden layers the local engine reads the new x of a neuron's
    parents within the sweep, the Jacobi step the old: they are different dynamics.)
    """
    _local()  # registers 'local'
    common = dict(rho=1.0, state=state, lambda_init="stored", x_init="forward", relax_steps=1,
                  mu_x=0.3, mu_lambda=0.4, lr=0.1, loss=loss, epochs=3, batch_size=1)
    online, visits_a, W0, b0, X, Y = make_trainer([5, 3], method="mdmm", **common)
    local, visits_b, W0b, _, _, _ = make_trainer([5, 3], method="local", schedule="example", **common)
    assert all(torch.equal(a, b) for a, b in zip(W0, W0b))
    steps = {"mdmm": 0, "local": 0}
    online.before_weight_step.append(lambda t: steps.__setitem__("mdmm", steps["mdmm"] + 1))
    local.before_weight_step.append(lambda t: steps.__setitem__("local", steps["local"] + 1))
    online.fit()
    local.fit()
    assert steps["mdmm"] == steps["local"] == 3 * online.n  # one weight update per example visit
    assert all(torch.equal(a, b) for a, b in zip(visits_a, visits_b))
    for a, b in zip(list(online.net.parameters()), list(local.net.parameters())):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-12, rtol=0)
    for a, b in zip(online.state.x + online.state.lam, local.state.x + local.state.lam):
        if a is not None:
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # and both are the literal per-example loop
    want = literal_training(W0, b0, X, Y, visits_a, rho=1.0, mu_x=0.3, mu_l=0.4, lr=0.1, relax_steps=1,
                            state=state, lambda_init="stored", x_init="forward", loss=loss)
    assert_matches(local, *want)


# ------------------------------------------------------------------ (c) memory
@pytest.mark.parametrize("sizes", [[5, 7, 6, 3], [4, 9, 2]])
def test_stored_state_holds_two_numbers_per_example_and_neuron(sizes):
    graph = Graph.mlp(sizes)
    n = 37
    h_u_o = sum(1 for r in graph.roles if r in ("hidden", "output"))
    net = build_network(graph, TrainConfig())
    assert ExampleState(net, n, keep_x=True, keep_lambda=True).numbers() == 2 * n * h_u_o
    assert ExampleState(net, n, keep_x=False, keep_lambda=True).numbers() == n * h_u_o
    assert ExampleState(net, n, keep_x=False, keep_lambda=False).numbers() == 0
    st = ExampleState(net, n)
    assert st.nbytes() == 2 * n * h_u_o * 4  # float32
    # and a Trainer in stored mode reports the same figure
    data = tiny_data(n=n, d=sizes[0], classes=sizes[-1])
    cfg = TrainConfig(state="stored", lambda_init="stored", epochs=0)
    trainer = Trainer(build_network(graph, cfg), data, cfg)
    assert trainer.summary()["state_numbers"] == 2 * n * h_u_o
