"""lagprop: learning by searching saddle points of a Lagrangian, with backprop beside it.

Betti, Gori, Marra, "Backpropagation and Biological Plausibility" (2018).  The public
surface is re-exported here; see docs/design.md for where each concept lives.
"""

from . import local  # noqa: F401  (registers --method local)
from .data import Dataset, load_dataset
from .dynamics import Dynamics, relax, relax_step, solve_stationary, stationary_weight_grad
from .errors import ConfigError, CycleError, DataError, DivergenceError, GraphError, LagpropError
from .graph import Graph, read_graph_file, write_graph_file
from .lagrangian import evaluate, lagrangian, x_grads
from .network import Network
from .state import ExampleState, L1Weights
from .train import TrainConfig, Trainer, register_method

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "CycleError", "DataError", "Dataset", "DivergenceError", "Dynamics",
    "ExampleState", "Graph", "GraphError", "L1Weights", "LagpropError", "Network", "TrainConfig",
    "Trainer", "evaluate", "lagrangian", "load_dataset", "read_graph_file", "register_method",
    "relax", "relax_step", "solve_stationary", "stationary_weight_grad", "write_graph_file",
    "x_grads",
]
