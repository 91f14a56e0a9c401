"""Recurrent networks over sequences: the explicit gradients against autograd of the same
Lagrangian, the stationary point against BPTT, the tasks against literal loops, training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from lagprop.cli import main
from lagprop.errors import ConfigError
from lagprop.recurrent import (
    RNNCell,
    SeqState,
    SeqTrainer,
    bptt_grads,
    evaluate_seq,
    lagrangian_seq,
    predicted_state,
    relax_step_seq,
    weight_grads_seq,
    x_grads_seq,
)
from lagprop.tasks import SeqDataset, adding_problem, is_sequence_task, load_sequence_task, parity_task
from lagprop.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _cell(n_in=3, hidden=5, n_out=2, act="tanh", seed=0) -> RNNCell:
    return RNNCell(n_in, hidden, n_out, act, init="uniform", dtype=torch.float64,
                   generator=torch.Generator().manual_seed(seed))


def _random_problem(loss: str, B=4, T=6, steps=(1, 3, 5), seed=1):
    g = torch.Generator().manual_seed(seed)
    cell = _cell(seed=seed)
    with torch.no_grad():
        cell.b.normal_(generator=g)
        cell.c.normal_(generator=g)
    st = torch.tensor(steps)
    u = torch.randn(B, T, 3, generator=g, dtype=torch.float64)
    S = len(steps)
    if loss == "mse":
        y = torch.randn(B, S, 2, generator=g, dtype=torch.float64)
    else:
        y = torch.nn.functional.one_hot(torch.randint(0, 2, (B, S), generator=g), 2).double()
    state = SeqState(*(torch.randn(*shape, generator=g, dtype=torch.float64)
                       for shape in ((B, T, 5), (B, S, 2), (B, T, 5), (B, S, 2))))
    return cell, u, y, st, state


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("rho", [0.0, 0.7])
def test_explicit_gradients_match_autograd_of_the_lagrangian(loss, rho):
    cell, u, y, steps, st = _random_problem(loss)
    # oracle: autograd of the scalar L (Eq. 2 in time, plus the augmented term)
    leaves = [t.clone().requires_grad_(True) for t in (st.x, st.o, st.lam, st.mu)]
    L = lagrangian_seq(cell, u, y, steps, SeqState(*leaves), loss, rho)
    auto = torch.autograd.grad(L, leaves + list(cell.parameters()))
    with torch.no_grad():
        terms = evaluate_seq(cell, u, steps, st, rho)
        dx, do = x_grads_seq(cell, st, terms, y, steps, loss)
        weight_grads_seq(cell, u, steps, st, rho)
    torch.testing.assert_close(dx, auto[0])
    torch.testing.assert_close(do, auto[1])
    # dL/dlambda = G and dL/dmu = H hold for the plain Lagrangian (rho only adds to x and w)
    torch.testing.assert_close(terms.G, auto[2])
    torch.testing.assert_close(terms.H, auto[3])
    for p, a in zip(cell.parameters(), auto[4:]):
        torch.testing.assert_close(p.grad, a)


def test_relax_step_is_descent_in_x_and_ascent_in_lambda():
    cell, u, y, steps, st = _random_problem("mse")
    new = relax_step_seq(cell, u, y, steps, st, 0.1, 0.2, 0.5, "mse")
    leaves = [t.clone().requires_grad_(True) for t in (st.x, st.o, st.lam, st.mu)]
    L = lagrangian_seq(cell, u, y, steps, SeqState(*leaves), "mse", 0.5)
    gx, go, gl, gm = torch.autograd.grad(L, leaves)
    # the x step uses the augmented Lagrangian's gradient, the lambda step the residual G
    torch.testing.assert_close(new.x, st.x - 0.1 * gx)
    torch.testing.assert_close(new.o, st.o - 0.1 * go)
    torch.testing.assert_close(new.lam, st.lam + 0.2 * gl)
    torch.testing.assert_close(new.mu, st.mu + 0.2 * gm)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_stationary_point_gives_the_bptt_gradient(loss):
    """Eq. 6 in time: relaxed with frozen weights, dL/dw / batch is BPTT's gradient."""
    cell, u, y, steps, _ = _random_problem(loss, B=3, T=5, steps=(2, 4))
    ref = bptt_grads(cell, u, y, steps, loss)
    st = predicted_state(cell, u, steps)
    with torch.no_grad():
        for _ in range(3000):  # stop once converged (residuals would otherwise sink into subnormals)
            new = relax_step_seq(cell, u, y, steps, st, 0.3, 0.3, 1.0, loss)
            moved = max(float((a - b).abs().max()) for a, b in zip((new.x, new.o, new.lam, new.mu),
                                                                   (st.x, st.o, st.lam, st.mu)))
            st = new
            if moved < 1e-13:
                break
        terms = weight_grads_seq(cell, u, steps, st, 1.0, 1.0 / len(u))
    assert float(terms.G.abs().max()) < 1e-8
    for p, r in zip(cell.parameters(), ref):
        torch.testing.assert_close(p.grad, r, atol=1e-7, rtol=1e-6)


def test_forward_states_follow_the_recurrence_literally():
    cell = _cell(n_in=2, hidden=3, n_out=1)
    u = torch.randn(2, 4, 2, dtype=torch.float64)
    with torch.no_grad():
        X, out = cell.forward_states(u, torch.tensor([1, 3]))
    h = torch.zeros(2, 3, dtype=torch.float64)
    for t in range(4):
        for k in range(2):
            for i in range(3):
                a = (sum(cell.W.data[i, j] * h[k, j] for j in range(3))
                     + sum(cell.U.data[i, j] * u[k, t, j] for j in range(2)))
                assert abs(float(X[k, t, i] - torch.tanh(a + cell.b.data[i]))) < 1e-12
        h = X[:, t]
    torch.testing.assert_close(out[:, 1], X[:, 3] @ cell.V.data.t() + cell.c.data)


def test_adding_problem_targets_by_a_literal_loop():
    U, Y = adding_problem(50, 12, np.random.default_rng(3))
    assert U.shape == (50, 12, 2) and Y.shape == (50, 1, 1)
    for k in range(50):
        marked = [t for t in range(12) if U[k, t, 1] == 1]
        assert len(marked) == 2 and marked[0] < 6 <= marked[1]
        assert abs(Y[k, 0, 0] - (U[k, marked[0], 0] + U[k, marked[1], 0])) < 1e-6


def test_parity_targets_by_a_literal_loop():
    U, Y = parity_task(20, 7, np.random.default_rng(4))
    for k in range(20):
        ones = 0
        for t in range(7):
            ones += U[k, t, 0] > 0
            assert Y[k, t] == ones % 2


def test_task_names_and_errors():
    assert is_sequence_task("adding") and is_sequence_task("Parity") and not is_sequence_task("digits")
    ds = load_sequence_task("parity", seq_len=4, n_train=10, n_test=5)
    assert ds.steps == (0, 1, 2, 3) and ds.n_outputs == 2
    with pytest.raises(ConfigError, match="seq-len"):
        load_sequence_task("adding", seq_len=1)


def _adding(T=5, n=400):
    return load_sequence_task("adding", seq_len=T, n_train=n, n_test=200, seed=5)


def _short_run(method: str, **kw) -> SeqTrainer:
    kw.setdefault("lambda_init", "stored")
    cfg = TrainConfig(method=method, epochs=15, batch_size=10, lr=0.003, relax_steps=20, **kw)
    return SeqTrainer(RNNCell(2, 16, 1, generator=torch.Generator().manual_seed(0)), _adding(), cfg)


def test_lagrangian_training_learns_the_short_adding_problem():
    """Predicted x (forward through time), stored lambda, 20 sweeps per batch (MATH.md's recipe)."""
    tr = _short_run("mdmm")
    first = tr.evaluate()["test_mse"]
    tr.fit()
    s = tr.summary()
    assert {"method", "epochs", "test_mse", "train_mse", "constraint_violation", "seconds"} <= set(s)
    # the mean (1) scores 1/6 and the best use of one marked value 1/12; it must use both
    assert s["test_mse"] < 0.07 < first


def test_bptt_baseline_trains_on_the_same_cell():
    tr = _short_run("backprop")
    tr.fit()
    assert tr.summary()["test_mse"] < 0.07


def test_stored_state_keeps_the_relaxed_x_and_lambda_of_every_example():
    tr = _short_run("mdmm", state="stored")
    tr.cfg.epochs = 1
    tr.fit()
    assert bool(tr.visited.all())
    assert float(tr.store.x.abs().sum()) > 0 and float(tr.store.lam.abs().sum()) > 0
    assert tr.summary()["state_numbers"] == 2 * (400 * 5 * 16 + 400 * 1 * 1)


def test_sequence_trainer_rejects_a_method_it_does_not_have(monkeypatch):
    from lagprop import train as train_mod
    # registered for this test only (monkeypatch removes it again)
    monkeypatch.setitem(train_mod._EXTRA_METHODS, "only-for-graphs", lambda trainer: (lambda idx: None))
    ds = SeqDataset("t", np.zeros((2, 3, 1), np.float32), np.zeros((2, 1, 1), np.float32),
                    np.zeros((2, 3, 1), np.float32), np.zeros((2, 1, 1), np.float32), (2,), None)
    with pytest.raises(ConfigError, match="not available for sequences"):
        SeqTrainer(RNNCell(1, 2, 1), ds, TrainConfig(method="only-for-graphs"))


def test_cli_trains_parity_and_writes_the_summary(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "parity", "--seq-len", "4", "--n-train", "200", "--n-test", "50",
               "--hidden", "8", "--epochs", "2", "--relax-steps", "4", "--out", str(out), "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["method"] == "mdmm" and s["epochs"] == 2 and s["seq_len"] == 4
    assert {"test_accuracy", "train_accuracy", "constraint_violation", "seconds"} <= set(s)
    # sequences store lambda unless told otherwise; an explicit flag is honoured
    assert json.loads((out / "config.json").read_text())["train"]["lambda_init"] == "stored"
    rc = main(["train", "--dataset", "parity", "--seq-len", "4", "--n-train", "50", "--n-test", "20",
               "--hidden", "4", "--epochs", "1", "--lambda-init", "zero", "--out", str(out), "--quiet",
               "--overwrite"])
    assert rc == 0 and json.loads((out / "config.json").read_text())["train"]["lambda_init"] == "zero"


def test_cli_rejects_a_layer_list_for_the_state_size(tmp_path, capsys):
    rc = main(["train", "--dataset", "adding", "--hidden", "8,8", "--epochs", "1", "--out", str(tmp_path)])
    assert rc == 2 and "state size" in capsys.readouterr().err


def test_mnist1d_is_read_left_to_right_one_value_per_step(monkeypatch):
    from lagprop import data as data_mod
    rng = np.random.default_rng(0)
    X, Xt = rng.normal(size=(6, 40)).astype(np.float32), rng.normal(size=(3, 40)).astype(np.float32)
    fake = data_mod.Dataset("mnist1d", X, np.arange(6) % 10, Xt, np.arange(3), 10)
    monkeypatch.setattr(data_mod, "load_dataset", lambda name, **kw: fake)
    ds = load_sequence_task("mnist1d-seq")
    assert ds.U_train.shape == (6, 40, 1) and ds.steps == (39,) and ds.n_outputs == 10
    for k in range(6):
        for t in range(40):
            assert ds.U_train[k, t, 0] == X[k, t]
    assert list(ds.Y_train[:, 0]) == list(np.arange(6) % 10)
