"""The level-parallel local engine against the literal per-neuron Algorithm 2 (the oracle).

Oracle: :func:`lagprop.local_reference.reference_sweeps`, a scalar Python loop over the
graph's arc list, neuron by neuron and example by example.  Expectations come from it, not
from the engine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lagprop.dynamics import Dynamics
from lagprop.errors import ConfigError, CycleError
from lagprop.graph import Graph
from lagprop.local import init_state, run_sweeps, sgd
from lagprop.local_reference import reference_sweeps, topological_order
from lagprop.network import Network

GRAPHS = {
    "dag_skip_parallel": lambda: Graph.random_dag(4, 9, 3, 45, levels=3, parallel=0.2, seed=1,
                                                  activations=("tanh", "sigmoid", "relu", "softplus")),
    "dag_no_bias": lambda: Graph.random_dag(3, 7, 2, 28, levels=2, parallel=0.3, seed=5,
                                            activations=("sigmoid", "tanh"), bias=False),
    "mlp": lambda: Graph.mlp([5, 6, 4, 3], activation="tanh"),
}


def per_neuron(net: Network, tensors) -> np.ndarray:
    batch = next(t for t in tensors if t is not None).shape[0]
    out = np.zeros((batch, net.graph.n))
    for i, (g, c) in net.where.items():
        if tensors[g] is not None:
            out[:, i] = tensors[g][:, c].detach().numpy()
    return out


def biases(net: Network) -> np.ndarray:
    b = np.zeros(net.graph.n)
    for g in range(1, len(net.groups)):
        for c, i in enumerate(net.groups[g].neurons):
            b[i] = float(net.bias_of(g).detach()[c]) if net.graph.bias[i] else 0.0
    return b


def setup(name: str, batch: int = 5, seed: int = 0):
    graph = GRAPHS[name]()
    net = Network(graph, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    g = torch.Generator().manual_seed(seed + 100)
    x_in = torch.randn(batch, net.sizes[0], generator=g, dtype=torch.float64)
    xs = [x_in] + [0.5 * torch.randn(batch, s, generator=g, dtype=torch.float64) for s in net.sizes[1:]]
    lams = [None] + [0.3 * torch.randn(batch, s, generator=g, dtype=torch.float64) for s in net.sizes[1:]]
    n_out = len(graph.outputs)
    y = torch.nn.functional.one_hot(torch.randint(0, n_out, (batch,), generator=g), n_out).to(torch.float64)
    return net, xs, lams, y


@pytest.mark.parametrize("name", sorted(GRAPHS))
@pytest.mark.parametrize("order", ["forward", "backward"])
@pytest.mark.parametrize("schedule", ["sweep", "example"])
@pytest.mark.parametrize("rho,alpha,l1_mode,loss", [
    (0.0, 0.0, "prox", "mse"),          # BDMM, the paper's case
    (1.0, 0.0, "prox", "ce"),           # MDMM
    (0.5, 0.05, "prox", "ce"),          # MDMM with l1 by soft threshold
    (0.0, 0.05, "subgradient", "mse"),  # BDMM with l1 as printed
])
def test_engine_equals_literal_algorithm_2(name, order, schedule, rho, alpha, l1_mode, loss):
    net, xs, lams, y = setup(name)
    graph = net.graph
    x0, lam0 = per_neuron(net, xs), per_neuron(net, lams)
    w0, b0 = net.arc_weights().numpy().copy(), biases(net)
    mu_x, mu_l, mu_w, sweeps = 0.3, 0.4, 0.2, 4
    topo = topological_order(graph)
    ref = reference_sweeps(graph, w0, b0, x0, lam0, y.numpy(), mu_x=mu_x, mu_lambda=mu_l, mu_w=mu_w,
                           rho=rho, loss=loss, alpha=alpha, l1_mode=l1_mode, sweeps=sweeps,
                           schedule=schedule, order=topo if order == "forward" else topo[::-1],
                           weights_at="visit" if order == "forward" else "example")

    dyn = Dynamics(mu_x, mu_l, rho, loss, l1_mode)
    al = [alpha if grp.role == "hidden" and alpha else None for grp in net.groups]
    st = init_state(net, xs, lams, rho)
    run_sweeps(net, st, y, dyn, sweeps=sweeps, schedule=schedule, weight_step=sgd(net, mu_w),
               alpha=al if alpha else None, reverse=order == "backward")

    hid = [i for i in range(graph.n) if graph.roles[i] != "input"]
    assert np.abs(per_neuron(net, st.xs)[:, hid] - ref["x"][:, hid]).max() <= 1e-10
    assert np.abs(per_neuron(net, st.lams) - ref["lam"]).max() <= 1e-10
    assert np.abs(per_neuron(net, st.fs) - ref["f"]).max() <= 1e-10
    assert np.abs(net.arc_weights().numpy() - ref["w"]).max() <= 1e-10
    assert np.abs(biases(net) - ref["b"]).max() <= 1e-10
    # the run did move things: the comparison is not between two unchanged states
    assert np.abs(ref["w"] - w0).max() > 1e-4 and np.abs(ref["x"] - x0).max() > 1e-3


def test_weights_at_visit_or_after_the_example():
    """Parents first, applying an example's weight changes after its pass is line 20 exactly;
    children first it is not (parents read w_ij after i's visit): the engine's children-first
    on-line schedule is the deferred one, and the difference is real."""
    net, xs, lams, y = setup("dag_skip_parallel")
    graph = net.graph
    args = (graph, net.arc_weights().numpy(), biases(net), per_neuron(net, xs), per_neuron(net, lams),
            y.numpy())
    kw = dict(mu_x=0.3, mu_lambda=0.4, mu_w=0.2, rho=1.0, loss="mse", sweeps=2, schedule="example")
    topo = topological_order(graph)
    a, b = (reference_sweeps(*args, order=topo, weights_at=at, **kw) for at in ("visit", "example"))
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1e-12
    a, b = (reference_sweeps(*args, order=topo[::-1], weights_at=at, **kw) for at in ("visit", "example"))
    assert np.abs(a["w"] - b["w"]).max() > 1e-6


def test_any_topological_order_gives_the_same_sweep():
    """Non-adjacent neurons commute: a random order that keeps parents before children agrees."""
    net, xs, lams, y = setup("dag_skip_parallel")
    graph = net.graph
    args = (graph, net.arc_weights().numpy(), biases(net), per_neuron(net, xs), per_neuron(net, lams),
            y.numpy())
    kw = dict(mu_x=0.3, mu_lambda=0.4, mu_w=0.2, rho=1.0, loss="mse", sweeps=2, schedule="example")
    a = reference_sweeps(*args, **kw)
    rng = np.random.default_rng(0)
    level = graph.topological_levels()
    order = sorted((i for i in range(graph.n) if graph.roles[i] != "input"),
                   key=lambda i: (level[i], rng.random()))
    b = reference_sweeps(*args, order=order, **kw)
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1e-12
    # ... while an order that visits a child before its parent gives a different result
    c = reference_sweeps(*args, order=list(reversed(order)), **kw)
    assert np.abs(a["x"] - c["x"]).max() > 1e-6


def test_relaxation_without_learning_keeps_weights():
    net, xs, lams, y = setup("mlp")
    before = [p.detach().clone() for p in net.parameters()]
    st = init_state(net, xs, lams, 1.0)
    run_sweeps(net, st, y, Dynamics(0.3, 0.3, 1.0, "ce"), sweeps=3, schedule="sweep",
               weight_step=sgd(net, 0.5), learn=False)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def test_cyclic_graph_and_bad_schedule_are_refused():
    cyc = Graph.from_arcs([("i", "h"), ("h", "o"), ("o", "h")], inputs=["i"], outputs=["o"])
    net = Network(cyc, dtype=torch.float64)
    xs = [torch.zeros(2, 1), torch.zeros(2, 1), torch.zeros(2, 1)]
    st = init_state(net, [t.double() for t in xs], [None, torch.zeros(2, 1).double(),
                                                    torch.zeros(2, 1).double()], 0.0)
    with pytest.raises(CycleError):
        run_sweeps(net, st, torch.zeros(2, 1, dtype=torch.float64), Dynamics(), sweeps=1)
    net2, xs2, lams2, y2 = setup("mlp")
    with pytest.raises(ConfigError):
        run_sweeps(net2, init_state(net2, xs2, lams2, 0.0), y2, Dynamics(), schedule="batch")


@pytest.mark.parametrize("schedule", ["sweep", "example"])
def test_trainer_step_equals_reference(schedule):
    """One step of ``--method local`` (full batch, SGD, x predicted, lambda from 0, 2 sweeps
    children first) against the reference: a sweep without learning, then one with."""
    from lagprop.data import Dataset
    from lagprop.train import TrainConfig, Trainer

    graph = GRAPHS["dag_skip_parallel"]()
    rng = np.random.default_rng(3)
    X, yl = rng.normal(size=(6, 4)), rng.integers(0, 3, size=6)
    data = Dataset("toy", X, yl, X[:2], yl[:2], 3)
    cfg = TrainConfig(method="local", schedule=schedule, batch_size=0, optimizer="sgd", lr=0.3,
                      relax_steps=2, state="predicted", lambda_init="zero", mu_x=0.3, mu_lambda=0.4,
                      rho=1.0, loss="ce")
    net = Network(graph, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    w0, b0 = net.arc_weights().numpy().copy(), biases(net)
    with torch.no_grad():
        x0 = per_neuron(net, net.forward_all(torch.as_tensor(X)))
    tr = Trainer(net, data, cfg)
    tr.train_epoch()
    order = topological_order(graph)[::-1]
    y = np.eye(3)[yl]
    kw = dict(mu_x=0.3, mu_lambda=0.4, mu_w=0.3, rho=1.0, loss="ce", schedule=schedule, order=order)
    if schedule == "sweep":
        r1 = reference_sweeps(graph, w0, b0, x0, np.zeros_like(x0), y, learn=False, **kw)
        r2 = reference_sweeps(graph, r1["w"], r1["b"], r1["x"], r1["lam"], y, f=r1["f"], **kw)
    else:
        r2 = reference_sweeps(graph, w0, b0, x0, np.zeros_like(x0), y, sweeps=2, weights_at="example", **kw)
    assert np.abs(net.arc_weights().numpy() - r2["w"]).max() <= 1e-10
    assert np.abs(biases(net) - r2["b"]).max() <= 1e-10
    assert np.abs(r2["w"] - w0).max() > 1e-4


def test_cli_method_local(tmp_path, capsys):
    import json

    from lagprop.cli import main

    for schedule in ("sweep", "example"):
        out = tmp_path / schedule
        assert main(["train", "--dataset", "xor", "--method", "local", "--schedule", schedule, "--epochs", "2",
                     "--out", str(out)]) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["method"] == "local" and summary["epochs"] == 2
    assert main(["train", "--dataset", "xor", "--method", "local", "--schedule", "batch", "--epochs", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "--schedule" in capsys.readouterr().err
