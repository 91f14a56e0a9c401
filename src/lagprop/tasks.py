"""Generated and structured tasks beyond flat tables: sequences (and graphs, appended below).

Shared module: each task family only appends functions; nothing here is rewritten.

Sequence tasks return a :class:`SeqDataset`: inputs ``(N, T, n_in)``, targets at the steps
``steps`` (``(N, |S|, n_out)`` floats for regression, ``(N, |S|)`` class indices for
classification), generated from a seed so that a run can be repeated exactly.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import ConfigError

SEQUENCE_TASKS = ("adding", "parity", "mnist1d-seq")


@dataclass
class SeqDataset:
    """A sequence task: train and test parts, the target steps and the number of classes."""

    name: str
    U_train: np.ndarray
    Y_train: np.ndarray
    U_test: np.ndarray
    Y_test: np.ndarray
    steps: tuple[int, ...]       # time indices (0-based) that carry a target
    n_classes: int | None        # None: regression (mse)

    @property
    def n_inputs(self) -> int:
        return self.U_train.shape[2]

    @property
    def seq_len(self) -> int:
        return self.U_train.shape[1]

    @property
    def n_outputs(self) -> int:
        return self.n_classes if self.n_classes is not None else self.Y_train.shape[2]

    def describe(self) -> str:
        task = f"{self.n_classes} classes" if self.n_classes else "regression"
        return (f"{self.name}: {len(self.U_train)} train / {len(self.U_test)} test sequences of "
                f"length {self.seq_len}, {self.n_inputs} inputs, {task}, targets at {len(self.steps)} step(s)")


def is_sequence_task(name: str | None) -> bool:
    """True for the names :func:`load_sequence_task` knows."""
    return name is not None and name.lower() in SEQUENCE_TASKS


def _check_len(seq_len: int, least: int) -> None:
    if seq_len < least:
        raise ConfigError(f"--seq-len must be >= {least} for this task, got {seq_len}")


def adding_problem(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Hochreiter and Schmidhuber's adding problem: inputs (value in [0, 1], marker).

    Exactly two steps are marked, one in each half of the sequence; the target, given at the
    last step, is the sum of the two marked values.  Predicting the mean 1 scores MSE 1/6.
    """
    _check_len(seq_len, 2)
    vals = rng.uniform(0, 1, (n, seq_len))
    marks = np.zeros((n, seq_len))
    half = seq_len // 2
    i = rng.integers(0, half, n)
    j = rng.integers(half, seq_len, n)
    marks[np.arange(n), i] = 1
    marks[np.arange(n), j] = 1
    U = np.stack([vals, marks], 2).astype(np.float32)
    Y = (vals * marks).sum(1).reshape(n, 1, 1).astype(np.float32)
    return U, Y


def parity_task(n: int, seq_len: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Running parity of random bits: the target at every step is the parity so far.

    Inputs are +-1; the class at step t is (number of ones among bits 1..t) mod 2, so the
    network must carry one bit of memory for the whole sequence.
    """
    _check_len(seq_len, 1)
    bits = rng.integers(0, 2, (n, seq_len))
    U = (2.0 * bits - 1).reshape(n, seq_len, 1).astype(np.float32)
    Y = (np.cumsum(bits, 1) % 2).astype(np.int64)
    return U, Y


def load_sequence_task(name: str, seq_len: int = 20, n_train: int = 10_000, n_test: int = 1_000,
                       seed: int = 0) -> SeqDataset:
    """Build a sequence task by name (``adding``, ``parity``, ``mnist1d-seq``)."""
    key = name.lower()
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"need at least one train and one test sequence, got {n_train} and {n_test}")
    rng = np.random.default_rng(seed)
    if key == "adding":
        U, Y = adding_problem(n_train + n_test, seq_len, rng)
        return SeqDataset(f"adding{seq_len}", U[:n_train], Y[:n_train], U[n_train:], Y[n_train:],
                          (seq_len - 1,), None)
    if key == "parity":
        U, Y = parity_task(n_train + n_test, seq_len, rng)
        return SeqDataset(f"parity{seq_len}", U[:n_train], Y[:n_train], U[n_train:], Y[n_train:],
                          tuple(range(seq_len)), 2)
    if key == "mnist1d-seq":
        from .data import load_dataset
        ds = load_dataset("mnist1d")  # standardised per feature; read left to right, one value per step
        T = ds.n_inputs
        return SeqDataset("mnist1d-seq", ds.X_train.reshape(-1, T, 1), ds.y_train.reshape(-1, 1),
                          ds.X_test.reshape(-1, T, 1), ds.y_test.reshape(-1, 1), (T - 1,), 10)
    raise ConfigError(f"unknown sequence task {name!r}; choose one of {', '.join(SEQUENCE_TASKS)}")


# ---------------------------------------------------------------------------------------
# Graph tasks (node classification), for lagprop.gnn.  Each returns a GraphTask whose train
# and test parts are lagprop.gnn.GraphBatch objects (many graphs joined into one).
# ---------------------------------------------------------------------------------------

GRAPH_TASKS = ("karate", "clique", "subgraph")


@dataclass
class GraphTask:
    """A graph task: train and test batches, feature and class counts, generation parameters."""

    name: str
    train: object                # lagprop.gnn.GraphBatch
    test: object                 # lagprop.gnn.GraphBatch
    n_features: int
    n_classes: int
    level: str                   # 'node' or 'graph'
    params: dict

    def describe(self) -> str:
        def rows(b) -> int:
            return int(b.node_mask.sum()) if self.level == "node" else b.n_graphs
        p = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return (f"{self.name}: {rows(self.train)} train / {rows(self.test)} test {self.level}s "
                f"({self.train.n_graphs}+{self.test.n_graphs} graphs, {self.n_features} features, "
                f"{self.n_classes} classes; {p})")


def is_graph_task(name: str) -> bool:
    return name in GRAPH_TASKS


def karate_task(seed: int = 0, test_fraction: float = 0.5) -> GraphTask:
    """Zachary's karate club: predict each member's club ('Mr. Hi' or 'Officer').

    Transductive: one graph, node features = one-hot node identity (34), a seeded split of
    the nodes stratified by club; the state constraints cover every node, the loss only the
    training nodes.
    """
    import networkx as nx
    import torch

    from .gnn import batch_graphs
    if not 0 < test_fraction < 1:
        raise ConfigError(f"--test-fraction must be in (0, 1), got {test_fraction}")
    G = nx.karate_club_graph()
    y = np.array([int(G.nodes[v]["club"] != "Mr. Hi") for v in G.nodes])
    rng = np.random.default_rng(seed)
    test = np.zeros(len(y), bool)
    for c in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == c))
        test[idx[:max(1, round(len(idx) * test_fraction))]] = True
    b = batch_graphs([G], [np.eye(len(y), dtype=np.float32)], [y])
    return GraphTask("karate", b.with_mask(torch.as_tensor(~test)), b.with_mask(torch.as_tensor(test)),
                     len(y), 2, "node", {"seed": seed, "test_fraction": test_fraction, "features": "one-hot id"})


def _connected_gnp(n: int, p: float, rng: np.random.Generator):
    """A connected G(n, p) graph (rejection sampling), as in Scarselli et al. 2009."""
    import networkx as nx
    for _ in range(10000):
        G = nx.gnp_random_graph(n, p, seed=int(rng.integers(2**31)))
        if nx.is_connected(G):
            return G
    raise ConfigError(f"could not draw a connected G({n}, {p}); raise --edge-prob")


def clique_task(seed: int = 0, n_train: int = 400, n_test: int = 200, nodes: int = 10,
                clique: int = 5, edge_prob: float = 0.2) -> GraphTask:
    """Clique localisation (Scarselli et al. 2009 style): which nodes lie in a k-clique?

    Each graph is a connected G(nodes, edge_prob) into which a clique on ``clique`` random
    nodes is injected.  A node's target is 1 when it belongs to some clique of size >=
    ``clique`` (computed exactly with networkx, so accidental cliques count too).  Nodes have
    no labels: the feature is the constant 1, the structure is all there is to learn from.
    """
    import networkx as nx
    if not 3 <= clique <= nodes:
        raise ConfigError(f"--clique must be in [3, --nodes], got {clique} with {nodes} nodes")
    rng = np.random.default_rng(seed)

    def draw(count: int):
        graphs, ys = [], []
        for _ in range(count):
            G = _connected_gnp(nodes, edge_prob, rng)
            members = rng.choice(nodes, clique, replace=False)
            G.add_edges_from((int(u), int(v)) for i, u in enumerate(members) for v in members[i + 1:])
            y = np.zeros(nodes, np.int64)
            for c in nx.find_cliques(G):
                if len(c) >= clique:
                    y[c] = 1
            graphs.append(G)
            ys.append(y)
        return graphs, ys

    return _graph_sets("clique", draw, n_train, n_test, lambda g: np.ones((g.number_of_nodes(), 1), np.float32),
                       {"seed": seed, "nodes": nodes, "clique": clique, "edge_prob": edge_prob})


def subgraph_task(seed: int = 0, n_train: int = 400, n_test: int = 200, nodes: int = 10,
                  sub: int = 5, edge_prob: float = 0.2, labels: int = 11, noise: float = 0.25,
                  encoding: str = "onehot") -> GraphTask:
    """Subgraph matching (Scarselli et al. 2009): which nodes belong to a copy of S?

    S is one connected random graph on ``sub`` nodes with integer node labels in [0, labels),
    drawn once from the seed.  Each graph is a connected G(nodes, edge_prob) with integer
    labels in [0, labels); S is injected on ``sub`` random nodes (their edges and labels
    replaced by S's); then Gaussian noise (std ``noise``) is added to every label, which is
    the node's observed label.  Target 1: the node lies in an induced copy of S with the same
    integer labels (found exactly by VF2, so accidental copies count too).

    ``encoding``: 'scalar' gives the noisy label itself as the one feature (Scarselli's
    setting); 'onehot' (default) the one-hot code of the noisy label rounded to the nearest
    integer in [0, labels) -- wrong for a node when |noise| > 0.5 (4.6 % of nodes at 0.25).
    A one-layer tanh transition can only make monotone functions of a scalar feature, so the
    scalar form needs extra depth and far more epochs (see the README's figures).
    """
    if encoding not in ("onehot", "scalar"):
        raise ConfigError(f"--label-encoding must be 'onehot' or 'scalar', got {encoding!r}")
    import networkx as nx
    from networkx.algorithms import isomorphism as iso
    if not 2 <= sub <= nodes:
        raise ConfigError(f"--sub must be in [2, --nodes], got {sub} with {nodes} nodes")
    rng = np.random.default_rng(seed)
    S = _connected_gnp(sub, 0.5, rng)
    s_lab = rng.integers(0, labels, sub)
    nx.set_node_attributes(S, {v: int(s_lab[v]) for v in S}, "label")
    def draw(count: int):
        graphs, ys = [], []
        for _ in range(count):
            G = _connected_gnp(nodes, edge_prob, rng)
            lab = rng.integers(0, labels, nodes)
            members = rng.choice(nodes, sub, replace=False)
            G.remove_edges_from([(int(u), int(v)) for u in members for v in members if u < v])
            G.add_edges_from((int(members[a]), int(members[b])) for a, b in S.edges)
            lab[members] = s_lab
            nx.set_node_attributes(G, {v: int(lab[v]) for v in G}, "label")
            y = np.zeros(nodes, np.int64)
            gm = iso.GraphMatcher(G, S, node_match=lambda a, b: a["label"] == b["label"])
            for mapping in gm.subgraph_isomorphisms_iter():     # induced copies of S in G
                y[list(mapping)] = 1
            noisy = lab + rng.normal(0, noise, nodes)
            G.graph["features"] = (noisy.astype(np.float32)[:, None] if encoding == "scalar" else
                                   np.eye(labels, dtype=np.float32)[np.clip(np.rint(noisy), 0, labels - 1).astype(int)])
            graphs.append(G)
            ys.append(y)
        return graphs, ys

    return _graph_sets("subgraph", draw, n_train, n_test, lambda g: g.graph["features"],
                       {"seed": seed, "nodes": nodes, "sub": sub, "edge_prob": edge_prob,
                        "labels": labels, "noise": noise, "encoding": encoding})


def _graph_sets(name: str, draw, n_train: int, n_test: int, features, params: dict) -> GraphTask:
    from .gnn import batch_graphs
    if n_train < 1 or n_test < 1:
        raise ConfigError(f"--train-graphs and --test-graphs must be >= 1, got {n_train} and {n_test}")
    parts = []
    for count in (n_train, n_test):
        graphs, ys = draw(count)
        parts.append(batch_graphs(graphs, [features(g) for g in graphs], ys))
    f = parts[0].features.shape[1]
    return GraphTask(name, parts[0], parts[1], f, 2, "node", {**params, "train_graphs": n_train,
                                                               "test_graphs": n_test})


def load_graph_task(name: str, seed: int = 0, **kw) -> GraphTask:
    """A graph task by name (karate, clique, subgraph); ``kw`` are the task's own parameters."""
    makers = {"karate": karate_task, "clique": clique_task, "subgraph": subgraph_task}
    if name not in makers:
        raise ConfigError(f"unknown graph task {name!r}; choose one of {', '.join(GRAPH_TASKS)}")
    return makers[name](seed=seed, **kw)
