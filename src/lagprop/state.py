"""The state of the examples: x and lambda of every example and non-input neuron.

Batch learning (Algorithm 1) keeps 2 * l * |H u O| numbers.  Mini-batch and on-line
learning visit an example only now and then; between visits its state is either *stored*
here or *predicted* (x by a forward pass, lambda from the store or zero), see
:class:`lagprop.train.TrainConfig`.  The l1 weights alpha live here too, because they may
be given per example.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .errors import ConfigError
from .network import Network


class ExampleState:
    """Per-example x and lambda for every non-input group, kept between visits."""

    def __init__(self, net: Network, n_examples: int, keep_x: bool = True,
                 keep_lambda: bool = True) -> None:
        sizes = net.sizes
        opts = {"dtype": net.dtype, "device": net.device}
        self.n = n_examples
        self.x: list[Tensor | None] = [None] + [
            torch.zeros(n_examples, s, **opts) if keep_x else None for s in sizes[1:]]
        self.lam: list[Tensor | None] = [None] + [
            torch.zeros(n_examples, s, **opts) if keep_lambda else None for s in sizes[1:]]
        # an example's x is valid once it has been visited; before that it is initialised
        self.visited = torch.zeros(n_examples, dtype=torch.bool, device=net.device)
        self._all_visited = False  # host-side cache: once True, no device sync per batch

    def any_fresh(self, idx: Tensor | None) -> bool:
        """Whether any example of the batch is still unvisited.

        Reading a device tensor's value costs a GPU->host sync; after the first epoch every
        example has been visited, and the cached flag answers without touching the device.
        """
        if self._all_visited:
            return False
        fresh = bool((~self.visited if idx is None else ~self.visited[idx]).any())
        if not fresh:
            self._all_visited = bool(self.visited.all())
        return fresh

    def numbers(self) -> int:
        """How many numbers the store holds (2 * l * |H u O| when both are kept)."""
        return sum(t.numel() for t in self.x + self.lam if t is not None)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.x + self.lam if t is not None)

    @staticmethod
    def _take(store: list[Tensor | None], idx: Tensor | None) -> list[Tensor | None]:
        return [None if t is None else (t if idx is None else t[idx]) for t in store]

    def get_x(self, idx: Tensor | None) -> list[Tensor | None]:
        return self._take(self.x, idx)

    def get_lambda(self, idx: Tensor | None) -> list[Tensor | None]:
        return self._take(self.lam, idx)

    def put(self, idx: Tensor | None, xs: Sequence[Tensor | None] | None,
            lams: Sequence[Tensor | None] | None) -> None:
        for store, new in ((self.x, xs), (self.lam, lams)):
            if new is None:
                continue
            for g in range(1, len(store)):
                if store[g] is None:
                    continue
                if idx is None:
                    store[g] = new[g].detach()
                else:
                    store[g][idx] = new[g].detach()
        if idx is None:
            self.visited.fill_(True)
        else:
            self.visited[idx] = True

    def state_dict(self) -> dict:
        return {"x": self.x, "lam": self.lam, "visited": self.visited}

    def load_state_dict(self, d: dict) -> None:
        for key in ("x", "lam"):
            mine, theirs = getattr(self, key), d[key]
            if len(mine) != len(theirs) or any(
                    (a is None) != (b is None) or (a is not None and a.shape != b.shape)
                    for a, b in zip(mine, theirs)):
                raise ConfigError("the checkpoint's example state does not match this network "
                                  "and data set; resume with the same graph and data")
            setattr(self, key, [None if t is None else t.to(self.visited.device) for t in theirs])
        self.visited = d["visited"].to(self.visited.device)
        self._all_visited = False


class L1Weights:
    """alpha of the l1 term: a scalar, one per hidden neuron, or one per example and neuron.

    Given as a float, a 1-D array of length |H| (graph order of the hidden neurons) or a
    2-D array ``(n_examples, |H|)``.
    """

    def __init__(self, net: Network, alpha: float | Tensor, n_examples: int) -> None:
        hidden = net.graph.hidden
        self.groups = [g for g, grp in enumerate(net.groups) if grp.role == "hidden"]
        t = torch.as_tensor(alpha, dtype=net.dtype)
        if (t < 0).any() or not torch.isfinite(t).all():
            raise ConfigError("l1 weights alpha must be finite and >= 0")
        self.per_example = t.ndim == 2
        if t.ndim == 0:
            self.value = float(t)
            self.cols = None
            return
        want = (n_examples, len(hidden)) if t.ndim == 2 else (len(hidden),)
        if tuple(t.shape) != want:
            raise ConfigError(f"alpha has shape {tuple(t.shape)}; expected a scalar, ({len(hidden)},) "
                              f"per hidden neuron, or {(n_examples, len(hidden))} per example and neuron")
        pos = {i: k for k, i in enumerate(hidden)}
        self.value = None
        self.cols = {g: t[..., [pos[i] for i in net.groups[g].neurons]].to(net.device)
                     for g in self.groups}

    @property
    def active(self) -> bool:
        return self.value is None or self.value > 0

    def for_batch(self, n_groups: int, idx: Tensor | None) -> list[Tensor | float | None]:
        out: list[Tensor | float | None] = [None] * n_groups
        for g in self.groups:
            if self.value is not None:
                out[g] = self.value
            elif self.per_example:
                out[g] = self.cols[g] if idx is None else self.cols[g][idx]
            else:
                out[g] = self.cols[g]
        return out
