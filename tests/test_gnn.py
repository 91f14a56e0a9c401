"""LP-GNN (lagprop.gnn) against independent oracles.

* the explicit gradients of the Lagrangian against autograd on the same Lagrangian;
* the transition against a literal per-node loop over networkx neighbours;
* the relaxed fixed point checked by substitution into the constraints (with that loop);
* at the saddle point (x the fixed point, lambda the adjoint), dL/dw equals the gradient of
  the loss through the fixed point computed by backprop through many sweeps (Eq. 6 for graphs);
* batching: one disjoint graph gives the same states as the graphs one at a time.
"""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
import torch

from lagprop.cli import main
from lagprop.errors import ConfigError
from lagprop.gnn import (
    GNN,
    GNNTrainConfig,
    GNNTrainer,
    batch_graphs,
    gradients,
    lagrangian,
    relax,
    unrolled,
)
from lagprop.tasks import clique_task, karate_task, subgraph_task

D = torch.float64


def small_batch(seed: int = 0, graph_y: bool = True):
    rng = np.random.default_rng(seed)
    gs = [nx.gnp_random_graph(n, 0.4, seed=seed + i) for i, n in enumerate((6, 7, 5))]
    feats = [rng.normal(size=(g.number_of_nodes(), 3)).astype(np.float32) for g in gs]  # as stored
    ys = [rng.integers(0, 2, g.number_of_nodes()) for g in gs]
    b = batch_graphs(gs, feats, ys, graph_y=[0, 1, 1] if graph_y else None).to("cpu", D)
    b.node_mask = torch.as_tensor(rng.random(b.n_nodes) < 0.6)
    return gs, feats, b


def model(level="node", agg="sum", dims=(4, 5), readout_hidden=5, act="tanh", seed=1, readout_from="transition"):
    return GNN(3, 2, dims, readout_hidden, act, agg, level, "mean",
               torch.Generator().manual_seed(seed), readout_from).to(D)


@pytest.mark.parametrize("readout_from", ["transition", "state"])
@pytest.mark.parametrize("level", ["node", "graph"])
@pytest.mark.parametrize("agg", ["sum", "mean"])
@pytest.mark.parametrize("readout_hidden,rho,act", [(0, 0.0, "tanh"), (5, 0.7, "tanh"), (5, 1.0, "sigmoid")])
def test_explicit_gradients_match_autograd(level, agg, readout_hidden, rho, act, readout_from):
    _, _, b = small_batch()
    m = model(level, agg, readout_hidden=readout_hidden, act=act, readout_from=readout_from)
    g = torch.Generator().manual_seed(3)
    xs = [torch.randn(b.n_nodes, d, generator=g, dtype=D, requires_grad=True) for d in m.dims]
    lams = [torch.randn(b.n_nodes, d, generator=g, dtype=D, requires_grad=True) for d in m.dims]
    L = lagrangian(m, b, xs, lams, rho)
    auto = torch.autograd.grad(L, xs + lams + list(m.parameters()))
    mine = gradients(m, b, [x.detach() for x in xs], [lam.detach() for lam in lams], rho)
    for a, e in zip(auto, mine.dx + mine.G + mine.dw, strict=True):
        torch.testing.assert_close(e, a, rtol=1e-10, atol=1e-10)


def loop_preactivation(m: GNN, k: int, gs, feats, xs) -> torch.Tensor:
    """a^k_v by a literal loop over every node and its networkx neighbours (the oracle)."""
    rows, off = [], 0
    with torch.no_grad():
        for G, f in zip(gs, feats):
            for i, v in enumerate(G.nodes):
                nb = [off + j for j, u in enumerate(G.nodes) if G.has_edge(u, v)]
                s = sum((xs[k][u] for u in nb), torch.zeros(m.dims[k], dtype=D))
                if m.aggregation == "mean" and nb:
                    s = s / len(nb)
                z = torch.as_tensor(f[i], dtype=D)
                if k:
                    z = torch.cat([xs[k - 1][off + i], z])
                rows.append(m.W1[k] @ s + m.W2[k] @ z + m.b[k])
            off += G.number_of_nodes()
    return torch.stack(rows)


@pytest.mark.parametrize("agg", ["sum", "mean"])
def test_relaxation_reaches_the_fixed_point_by_substitution(agg):
    gs, feats, b = small_batch()
    m = model(agg=agg, dims=(4, 3))
    with torch.no_grad():
        for W in m.W1:
            W.mul_(8.0)                                  # far from contractive before projection
    m.project_contractive_(0.8, m.max_in_weight(b))
    for W in m.W1:
        assert float(torch.linalg.matrix_norm(W.detach(), 2)) * m.max_in_weight(b) <= 0.8 + 1e-9
    rel = relax(m, b, tol=1e-12, max_iter=1000)
    assert rel.converged and "reached" in rel.describe()
    for k in range(len(m.dims)):                          # x^k = sigma(a^k(x)) node by node
        torch.testing.assert_close(rel.xs[k], torch.tanh(loop_preactivation(m, k, gs, feats, rel.xs)),
                                   rtol=0, atol=1e-10)
    # the same graphs one at a time give the same states (batching is a disjoint union)
    off = 0
    for G, f in zip(gs, feats):
        one = batch_graphs([G], [f], [np.zeros(G.number_of_nodes(), np.int64)]).to("cpu", D)
        r1 = relax(m, one, tol=1e-12, max_iter=1000)
        n = G.number_of_nodes()
        for k in range(len(m.dims)):
            torch.testing.assert_close(r1.xs[k], rel.xs[k][off:off + n], rtol=0, atol=1e-10)
        off += n


def test_non_convergence_is_reported():
    # two nodes, x1 = tanh(-3 x2 + 1), x2 = tanh(-3 x1 + 1): the Jacobi iteration oscillates
    G = nx.Graph([(0, 1)])
    b = batch_graphs([G], [np.zeros((2, 1))], [np.zeros(2, np.int64)]).to("cpu", D)
    m = GNN(1, 2, (1,), 0, "tanh", "sum").to(D)
    with torch.no_grad():
        m.W1[0].fill_(-3.0)
        m.b[0].fill_(1.0)
    rel = relax(m, b, tol=1e-6, max_iter=100)
    assert not rel.converged and rel.iterations == 100
    assert rel.residual > 0.1 and "NOT converge" in rel.describe()


@pytest.mark.parametrize("level,readout_from", [("node", "transition"), ("graph", "transition"), ("node", "state")])
def test_saddle_point_weight_gradient_is_the_backprop_gradient(level, readout_from):
    """x = fixed point, lambda = adjoint (dL/dx = 0): dL/dw = d loss / dw through the fixed point."""
    _, _, b = small_batch(1)
    m = model(level, "sum", dims=(3, 4), readout_from=readout_from)
    m.project_contractive_(0.5, m.max_in_weight(b))
    xs = relax(m, b, tol=1e-14, max_iter=2000).xs
    lams = [torch.zeros_like(x) for x in xs]
    with torch.no_grad():
        for _ in range(400):                              # lambda <- lambda - dL/dx (a contraction here)
            g = gradients(m, b, xs, lams, rho=0.0)
            lams = [lam - d for lam, d in zip(lams, g.dx)]
    g = gradients(m, b, xs, lams, rho=0.0)
    assert max(float(d.abs().max()) for d in g.dx) < 1e-10
    y, mask = m.targets(b)
    out = m.readout(unrolled(m, b, 120), b)              # backprop through 120 sweeps (converged)
    loss = -(y * torch.log_softmax(out, 1)).sum(1) @ mask
    bp = torch.autograd.grad(loss, list(m.parameters()))
    for e, a in zip(g.dw, bp, strict=True):
        torch.testing.assert_close(e, a, rtol=1e-7, atol=1e-9)


def test_mdmm_training_fits_karate_and_satisfies_the_constraints():
    torch.manual_seed(0)
    task = karate_task(seed=0, test_fraction=0.3)
    m = GNN(task.n_features, 2, (8,), 8, "tanh", "mean", generator=torch.Generator().manual_seed(0))
    cfg = GNNTrainConfig(epochs=150, lr=0.02, relax_steps=3, eval_every=150)
    last = GNNTrainer(m, task.train, cfg, task.test).fit()
    assert last["train_accuracy"] == 1.0
    assert last["constraint_violation"] < 1e-2
    assert last["test_converged"] == 1.0


def test_generated_tasks_are_seeded_and_labelled_correctly():
    a, b = clique_task(seed=3, n_train=20, n_test=5), clique_task(seed=3, n_train=20, n_test=5)
    assert torch.equal(a.train.node_y, b.train.node_y) and torch.equal(a.train.src, b.train.src)
    # clique labels by an independent check: a node is positive iff some 5 of its closed
    # neighbourhood are pairwise adjacent; here: it lies in a maximal clique of size >= 5
    src, dst, y = a.train.src.numpy(), a.train.dst.numpy(), a.train.node_y.numpy()
    G = nx.Graph(list(zip(src.tolist(), dst.tolist())))
    for v in range(a.train.n_nodes):
        assert y[v] == int(nx.node_clique_number(G, v) >= 5)
    assert 0.3 < y.mean() < 0.8
    s = subgraph_task(seed=1, n_train=10, n_test=5)
    assert s.train.features.shape == (100, 11) and s.train.node_y.sum() >= 50   # every graph holds a copy
    assert torch.equal(s.train.features.argmax(1), subgraph_task(seed=1, n_train=10, n_test=5, encoding="scalar")
                       .train.features[:, 0].round().clamp(0, 10).long())
    with pytest.raises(ConfigError):
        clique_task(clique=20)


def test_cli_graph_task_writes_the_summary(tmp_path):
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "karate", "--epochs", "20", "--eval-every", "10", "--quiet",
               "--state-dim", "4", "--state-layers", "2", "--out", str(out), "--device", "cpu"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    for key in ("method", "epochs", "test_accuracy", "train_accuracy", "constraint_violation", "seconds"):
        assert key in s
    assert s["epochs"] == 20 and s["method"] == "mdmm"
    rc = main(["train", "--dataset", "clique", "--method", "local", "--quiet", "--out", str(tmp_path / "x")])
    assert rc == 2
