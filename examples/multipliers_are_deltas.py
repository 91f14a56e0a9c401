"""Paper Eq. 6 on a small graph with a skip arc and a parallel arc: at the stationary point
of the Lagrangian in (x, lambda), lambda is minus backprop's delta and dL/dw is backprop's
gradient.

    python examples/multipliers_are_deltas.py
"""

import torch

from lagprop import Graph, Network, solve_stationary, stationary_weight_grad
from lagprop.lagrangian import loss_value

graph = Graph.from_arcs([("a", "h1"), ("b", "h1"), ("a", "h2"), ("a", "h2"), ("b", "h2"),
                         ("h1", "y"), ("h2", "y"), ("a", "y"), ("h1", "z"), ("h2", "z")],
                        inputs=["a", "b"], outputs=["y", "z"], activation="tanh")
net = Network(graph, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
x = torch.randn(4, 2, dtype=torch.float64)
y = torch.eye(2, dtype=torch.float64)[torch.tensor([0, 1, 1, 0])]

xs, lams, info = solve_stationary(net, x, y, loss="ce")
print(f"stationary point: {info['sweeps_x']} sweeps for x, {info['sweeps_lambda']} for lambda")
ours = torch.cat([g.flatten() for g in stationary_weight_grad(net, x, y, "ce")])
net.zero_grad()
loss_value("ce", net(x), y).mean().backward()
ref = torch.cat([p.grad.flatten() for p in net.parameters()])
print(f"max |dL/dw - backprop gradient| = {float((ours - ref).abs().max()):.2e}")
for g, grp in enumerate(net.groups[1:], start=1):
    names = [graph.names[i] for i in grp.neurons]
    print(f"lambda of {names} for example 0: {lams[g][0].tolist()}")
