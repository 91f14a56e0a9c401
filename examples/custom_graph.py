"""Any directed graph: skip arcs, parallel arcs and mixed activations, written to the
arc-list format and trained on two moons by the Lagrangian method.

    python examples/custom_graph.py
"""

import tempfile
from pathlib import Path

import torch

from lagprop import Graph, Network, TrainConfig, Trainer, load_dataset, read_graph_file, write_graph_file

data = load_dataset("moons")
graph = Graph.random_dag(n_inputs=2, n_hidden=24, n_outputs=2, n_arcs=160, levels=3, parallel=0.1, seed=0,
                         activations=("relu", "tanh"))
print(graph.summary())
path = Path(tempfile.mkdtemp()) / "moons.graph"
write_graph_file(graph, path)
graph = read_graph_file(path)  # the same graph, back from the file (lagprop train --graph FILE)
net = Network(graph, generator=torch.Generator().manual_seed(0))
print("blocks:", [("dense" if b.dense else f"sparse({len(b.src_idx)} arcs)") for b in net.blocks])
trainer = Trainer(net, data, TrainConfig(epochs=40))
trainer.fit()
print(f"test accuracy {trainer.summary()['test_accuracy']:.3f}; graph file {path}")
