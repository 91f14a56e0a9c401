"""Neuron activations sigma and their derivatives sigma'.

Each activation is a pair of element-wise functions.  ReLU is the paper's choice; its
derivative at 0 is taken as 0 (MATH.md).  ``derivative`` receives the pre-activation ``a``
and, when known, the value ``s = sigma(a)`` so that tanh and sigmoid do not recompute it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import GraphError

Tensor = torch.Tensor


@dataclass(frozen=True)
class Activation:
    name: str
    fn: Callable[[Tensor], Tensor]
    derivative: Callable[[Tensor, Tensor], Tensor]  # (a, sigma(a)) -> sigma'(a)


def _relu_d(a: Tensor, s: Tensor) -> Tensor:
    return (a > 0).to(a.dtype)


def _identity_d(a: Tensor, s: Tensor) -> Tensor:
    return torch.ones_like(a)


def _tanh_d(a: Tensor, s: Tensor) -> Tensor:
    return 1 - s * s


def _sigmoid_d(a: Tensor, s: Tensor) -> Tensor:
    return s * (1 - s)


def _leaky(a: Tensor) -> Tensor:
    return torch.nn.functional.leaky_relu(a, 0.01)


def _leaky_d(a: Tensor, s: Tensor) -> Tensor:
    return torch.where(a > 0, torch.ones_like(a), torch.full_like(a, 0.01))


def _softplus_d(a: Tensor, s: Tensor) -> Tensor:
    return torch.sigmoid(a)


ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation("relu", torch.relu, _relu_d),
    "identity": Activation("identity", lambda a: a, _identity_d),
    "tanh": Activation("tanh", torch.tanh, _tanh_d),
    "sigmoid": Activation("sigmoid", torch.sigmoid, _sigmoid_d),
    "leaky_relu": Activation("leaky_relu", _leaky, _leaky_d),
    "softplus": Activation("softplus", torch.nn.functional.softplus, _softplus_d),
}


def get_activation(name: str) -> Activation:
    """Look up an activation by name, with an error that lists the known ones."""
    try:
        return ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(ACTIVATIONS))
        raise GraphError(f"unknown activation {name!r}; choose one of: {known}") from None
