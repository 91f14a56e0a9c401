"""Train the same net by the Lagrangian method and by backprop, from the same start.

    python examples/quickstart.py
"""

import torch

from lagprop import Graph, Network, TrainConfig, Trainer, load_dataset

data = load_dataset("digits")
for method in ("mdmm", "backprop"):
    net = Network(Graph.mlp([data.n_inputs, 100, data.n_outputs]), generator=torch.Generator().manual_seed(0))
    trainer = Trainer(net, data, TrainConfig(method=method, epochs=20))
    trainer.fit()
    s = trainer.summary()
    print(f"{method:9s} test accuracy {s['test_accuracy']:.4f}  constraint violation "
          f"{s['constraint_violation']:.2e}  {s['seconds']:.1f}s")
