"""A :class:`~lagprop.graph.Graph` compiled for speed: groups of neurons, blocks of weights.

Why groups and blocks.  Everything the method computes is a sum over arcs (pre-activations
over the arcs into a neuron, the child sum over the arcs out of it, the weight gradient per
arc).  Done arc by arc in Python it would be hopeless; done as one sparse operation over
the whole graph it would throw away the dense structure of layered nets.  So the neurons
are partitioned into *groups* (the layers of an MLP; otherwise the topological levels of a
DAG, split by role and activation; for a cyclic graph, one group per role and activation)
and the arcs into *blocks*, one per ordered pair of groups they join.  A block whose arcs
are the complete bipartite set, each once, is a dense matrix (``x_src @ W.T`` costs what a
layered implementation costs); any other block is a sparse list of arcs with one weight
each (gather, multiply, ``index_add``), costing in proportion to its arcs.  Parallel arcs
simply make a block sparse.  A bias is one extra weight per neuron (an arc from a constant
1), masked where the graph says the neuron has none.

State is held per group: ``xs[g]`` is a ``(batch, |group g|)`` tensor; group 0 is the
inputs.  The three primitives below are the only places where arcs are summed over:

* :meth:`Network.preactivations`  a_i = sum_{j in pa(i)} w_ij x_j (+ b_i)
* :meth:`Network.child_sums`      c_j = sum_{r in ch(j)} w_rj m_r
* :meth:`Network.weight_grads`    dL/dw_ij = -sum_k m_ki x_kj

where ``m = lambda * sigma'(a)`` (paper Eqs. 3-4).  Groups are ordered topologically for a
DAG, so :meth:`Network.forward` is one pass over the groups.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .activations import Activation, get_activation
from .errors import CycleError, GraphError
from .graph import Graph


@dataclass(frozen=True)
class Group:
    """Neurons updated together: one role and one activation."""

    role: str
    activation: str
    neurons: tuple[int, ...]  # graph indices, in the order of the group's columns


@dataclass(frozen=True)
class Block:
    """The arcs from group ``src`` to group ``dst``: dense matrix or sparse arc list."""

    src: int
    dst: int
    dense: bool
    param: int  # index into Network.weights
    src_idx: Tensor | None = None  # sparse: column in src group, per arc
    dst_idx: Tensor | None = None  # sparse: column in dst group, per arc


def _make_groups(graph: Graph) -> list[Group]:
    if graph.layers is not None:
        parts = [list(layer) for layer in graph.layers]
    else:
        levels = graph.topological_levels()
        key_level = levels if levels is not None else [0] * graph.n
        keys: dict[tuple, list[int]] = {}
        for i in range(graph.n):
            role = graph.roles[i]
            lvl = -1 if role == "input" else key_level[i]
            keys.setdefault((lvl, role != "output", role, graph.activations[i]), []).append(i)
        parts = [keys[k] for k in sorted(keys)]
    groups: list[Group] = []
    for part in parts:  # split a part that mixes roles or activations
        sub: dict[tuple[str, str], list[int]] = {}
        for i in part:
            act = "identity" if graph.roles[i] == "input" else graph.activations[i]
            sub.setdefault((graph.roles[i], act), []).append(i)
        groups += [Group(r, a, tuple(v)) for (r, a), v in sub.items()]
    inputs = [g for g in groups if g.role == "input"]
    if len(inputs) != 1 or groups[0].role != "input":
        merged = tuple(i for g in inputs for i in g.neurons)
        groups = [Group("input", "identity", merged)] + [g for g in groups if g.role != "input"]
    return groups


class Network(nn.Module):
    """The compiled graph with its weights (a ``torch.nn.Module``)."""

    def __init__(self, graph: Graph, dtype: torch.dtype = torch.float32,
                 generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.graph = graph
        self.groups = _make_groups(graph)
        self.acyclic = graph.is_acyclic
        where = {}
        for g, grp in enumerate(self.groups):
            for c, i in enumerate(grp.neurons):
                where[i] = (g, c)
        self.where = where  # neuron -> (group, column)
        self.acts: list[Activation] = [get_activation(g.activation) for g in self.groups]
        # output neurons in the graph's output order -> (group, column)
        self.output_slots = [where[i] for i in graph.outputs]
        out_groups = sorted({g for g, _ in self.output_slots})
        self._single_output = (
            len(out_groups) == 1
            and [c for _, c in self.output_slots] == list(range(len(self.groups[out_groups[0]].neurons)))
        )
        self.output_group = out_groups[0]
        self.input_order = [where[i][1] for i in graph.inputs]  # data column -> input column

        # ---- blocks
        per_pair: dict[tuple[int, int], list[tuple[int, int, int]]] = {}
        for a, (t, h) in enumerate(graph.arcs):
            (gs, cs), (gd, cd) = where[t], where[h]
            per_pair.setdefault((gs, gd), []).append((cs, cd, a))
        fan_in = [0] * graph.n
        for _, h in graph.arcs:
            fan_in[h] += 1
        self.blocks: list[Block] = []
        self.weights = nn.ParameterList()
        self.arc_slot: list[tuple[int, int, int]] = [(0, 0, 0)] * len(graph.arcs)  # (param, row, col)
        gen = generator
        for (gs, gd), arcs in sorted(per_pair.items()):
            ns, nd = len(self.groups[gs].neurons), len(self.groups[gd].neurons)
            pairs = {(cs, cd) for cs, cd, _ in arcs}
            dense = len(arcs) == ns * nd and len(pairs) == len(arcs)
            p = len(self.weights)
            if dense:
                bound = torch.tensor([1 / math.sqrt(fan_in[i]) for i in self.groups[gd].neurons],
                                     dtype=dtype)
                w = (torch.rand(nd, ns, generator=gen, dtype=dtype) * 2 - 1) * bound[:, None]
                self.weights.append(nn.Parameter(w))
                self.blocks.append(Block(gs, gd, True, p))
                for cs, cd, a in arcs:
                    self.arc_slot[a] = (p, cd, cs)
            else:
                src = torch.tensor([cs for cs, _, _ in arcs], dtype=torch.long)
                dst = torch.tensor([cd for _, cd, _ in arcs], dtype=torch.long)
                bound = torch.tensor([1 / math.sqrt(fan_in[self.groups[gd].neurons[cd]])
                                      for _, cd, _ in arcs], dtype=dtype)
                w = (torch.rand(len(arcs), generator=gen, dtype=dtype) * 2 - 1) * bound
                self.weights.append(nn.Parameter(w))
                self.blocks.append(Block(gs, gd, False, p, src, dst))
                for k, (_, _, a) in enumerate(arcs):
                    self.arc_slot[a] = (p, k, -1)
        # ---- biases: one vector per non-input group, masked where a neuron has none
        self.biases = nn.ParameterList()
        self._bias_masks: list[Tensor | None] = []
        for grp in self.groups[1:]:
            mask = torch.tensor([graph.bias[i] for i in grp.neurons], dtype=dtype)
            bound = torch.tensor([1 / math.sqrt(max(fan_in[i], 1)) for i in grp.neurons], dtype=dtype)
            b = (torch.rand(len(grp.neurons), generator=gen, dtype=dtype) * 2 - 1) * bound * mask
            self.biases.append(nn.Parameter(b))
            self._bias_masks.append(None if bool(mask.all()) else mask)
        self._sparse_buffers_to(torch.device("cpu"))

    # ------------------------------------------------------------------ helpers
    def _sparse_buffers_to(self, device: torch.device) -> None:
        self.blocks = [
            b if b.dense else Block(b.src, b.dst, False, b.param, b.src_idx.to(device), b.dst_idx.to(device))
            for b in self.blocks
        ]
        self._bias_masks = [None if m is None else m.to(device) for m in self._bias_masks]

    def _apply(self, fn, *args, **kwargs):  # keep index tensors on the parameters' device
        out = super()._apply(fn, *args, **kwargs)
        if len(self.weights) or len(self.biases):
            ref = next(iter(self.parameters()))
            self._sparse_buffers_to(ref.device)
            self._bias_masks = [None if m is None else m.to(ref.dtype) for m in self._bias_masks]
        return out

    @property
    def depth(self) -> int:
        """Arcs on the longest path from an input to an output (DAG); the group count otherwise."""
        levels = self.graph.topological_levels()
        if levels is None:
            return len(self.groups) - 1
        return max(levels[i] for i in self.graph.outputs)

    def heights(self) -> list[int | None] | None:
        """Arcs from each group to the outputs, along the longest path (outputs 0).

        None for a group that reaches no output; None overall when an output group has
        children or the graph has a cycle (then 'the step at which the error reaches a
        group' is not defined).
        """
        if not self.acyclic or any(self.groups[b.src].role == "output" for b in self.blocks):
            return None
        h: list[int | None] = [None] * len(self.groups)
        for g in reversed(range(1, len(self.groups))):  # groups are in topological order
            if self.groups[g].role == "output":
                h[g] = 0
                continue
            below = [h[b.dst] for b in self.blocks if b.src == g and h[b.dst] is not None]
            h[g] = 1 + max(below) if below else None
        return h

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def sizes(self) -> list[int]:
        return [len(g.neurons) for g in self.groups]

    def bias_of(self, g: int) -> Tensor:
        """The effective bias of group ``g`` (zero where a neuron has none)."""
        mask = self._bias_masks[g - 1]
        b = self.biases[g - 1]
        return b if mask is None else b * mask

    def bias_mask(self, g: int) -> Tensor | None:
        return self._bias_masks[g - 1]

    def num_arcs(self) -> int:
        return len(self.graph.arcs)

    def arc_weights(self) -> Tensor:
        """The weight of every arc of the graph, in the graph's arc order."""
        out = torch.empty(len(self.graph.arcs), dtype=self.dtype)
        with torch.no_grad():
            for a, (p, r, c) in enumerate(self.arc_slot):
                w = self.weights[p]
                out[a] = w[r, c] if c >= 0 else w[r]
        return out

    def set_arc_weights(self, values: Tensor) -> None:
        with torch.no_grad():
            for a, (p, r, c) in enumerate(self.arc_slot):
                if c >= 0:
                    self.weights[p][r, c] = values[a]
                else:
                    self.weights[p][r] = values[a]

    def split_inputs(self, x: Tensor) -> Tensor:
        """Data columns (graph input order) -> the input group's column order."""
        if self.input_order == list(range(len(self.input_order))):
            return x
        inv = getattr(self, "_input_inv", None)
        if inv is None or inv.device != x.device:  # built once per device, not per batch
            inv = torch.empty(len(self.input_order), dtype=torch.long)
            inv[torch.tensor(self.input_order)] = torch.arange(len(self.input_order))
            self._input_inv = inv = inv.to(x.device)
        return x[:, inv]

    def gather_outputs(self, xs: Sequence[Tensor]) -> Tensor:
        """The output neurons' values as ``(batch, n_outputs)``, in the graph's output order."""
        if self._single_output:
            return xs[self.output_group]
        return torch.stack([xs[g][:, c] for g, c in self.output_slots], dim=1)

    def scatter_outputs(self, d: Tensor, like: Sequence[Tensor | None]) -> list[Tensor | None]:
        """Spread ``(batch, n_outputs)`` values back onto the output groups (zeros elsewhere)."""
        out: list[Tensor | None] = [None] * len(self.groups)
        if self._single_output:
            out[self.output_group] = d
            return out
        for k, (g, c) in enumerate(self.output_slots):
            if out[g] is None:
                out[g] = torch.zeros_like(like[g])
            out[g][:, c] = d[:, k]
        return out

    # --------------------------------------------------------------- primitives
    def preactivations(self, xs: Sequence[Tensor], skip_src: int | None = None,
                       base: Sequence[Tensor | None] | None = None) -> list[Tensor | None]:
        """a_i = sum_{j in pa(i)} w_ij x_j + b_i for every non-input group (None for inputs).

        ``skip_src=0`` leaves out blocks from the inputs, whose contribution ``base`` (from
        :meth:`input_contribution`) was computed once: it does not change while only x and
        lambda relax.
        """
        a: list[Tensor | None] = [None] * len(self.groups)
        for g in range(1, len(self.groups)):
            if base is not None and base[g] is not None:
                a[g] = base[g]
            else:
                a[g] = self.bias_of(g).expand(xs[0].shape[0], -1)
        for blk in self.blocks:
            if blk.src == skip_src:
                continue
            a[blk.dst] = self._block_apply(blk, xs[blk.src], a[blk.dst])
        return a

    def input_contribution(self, x_in: Tensor) -> list[Tensor | None]:
        """Bias plus the arcs from the input group: the part of a that only weights change."""
        base: list[Tensor | None] = [None] * len(self.groups)
        for g in range(1, len(self.groups)):
            base[g] = self.bias_of(g).expand(x_in.shape[0], -1)
        for blk in self.blocks:
            if blk.src == 0:
                base[blk.dst] = self._block_apply(blk, x_in, base[blk.dst])
        return base

    def _block_apply(self, blk: Block, x: Tensor, acc: Tensor) -> Tensor:
        w = self.weights[blk.param]
        if blk.dense:
            return torch.addmm(acc, x, w.t())
        contrib = x[:, blk.src_idx] * w
        return acc.index_add(1, blk.dst_idx, contrib)

    def _block_child(self, blk: Block, m: Tensor, acc: Tensor | None) -> Tensor:
        """acc + sum over the block's arcs r <- j of w_rj m_r, per source column j (one block
        of :meth:`child_sums`; the local engine sums one group's children at a time)."""
        w = self.weights[blk.param]
        if blk.dense:
            return m @ w if acc is None else torch.addmm(acc, m, w)
        if acc is None:
            acc = m.new_zeros(m.shape[0], len(self.groups[blk.src].neurons))
        return acc.index_add(1, blk.src_idx, m[:, blk.dst_idx] * w)

    def child_sums(self, ms: Sequence[Tensor | None], batch: int,
                   skip_input: bool = True) -> list[Tensor | None]:
        """c_j = sum_{r in ch(j)} w_rj m_r for every group (inputs skipped by default)."""
        c: list[Tensor | None] = [None] * len(self.groups)
        for blk in self.blocks:
            if skip_input and blk.src == 0:
                continue
            m = ms[blk.dst]
            if m is None:  # a quiet group (m = 0) sends nothing
                continue
            w = self.weights[blk.param]
            if blk.dense:
                c[blk.src] = m @ w if c[blk.src] is None else torch.addmm(c[blk.src], m, w)
            else:
                if c[blk.src] is None:
                    c[blk.src] = m.new_zeros(batch, len(self.groups[blk.src].neurons))
                c[blk.src] = c[blk.src].index_add(1, blk.src_idx, m[:, blk.dst_idx] * w)
        return c

    def weight_grads(self, xs: Sequence[Tensor], ms: Sequence[Tensor | None],
                     scale: float = 1.0, groups: set[int] | None = None) -> None:
        """Write dL/dw = -scale * sum_k m_ki x_kj (Eq. 3) into the ``.grad`` of the weights.

        ``groups`` limits it to the arcs into (and biases of) those groups.
        """
        # scale m once per group (the smaller operand), not every product
        ms = [None if m is None or (groups is not None and g not in groups) else m * (-scale)
              for g, m in enumerate(ms)]
        for blk in self.blocks:
            if groups is not None and blk.dst not in groups:
                continue
            w = self.weights[blk.param]
            m = ms[blk.dst]
            if blk.dense:
                w.grad = m.t() @ xs[blk.src]
            else:
                w.grad = (m[:, blk.dst_idx] * xs[blk.src][:, blk.src_idx]).sum(0)
        for gi in range(1, len(self.groups)):
            if groups is not None and gi not in groups:
                continue
            g = ms[gi].sum(0)
            mask = self.bias_mask(gi)
            self.biases[gi - 1].grad = g if mask is None else g * mask

    # ----------------------------------------------------------- forward pass
    def forward_all(self, x: Tensor) -> list[Tensor]:
        """The feed-forward pass: every group's x (DAG only)."""
        if not self.acyclic:
            raise CycleError("this graph has a cycle, so it has no forward pass; infer by "
                             "relaxation instead (lagprop.dynamics.relax with frozen weights)")
        xs: list[Tensor] = [self.split_inputs(x)]
        by_dst: dict[int, list[Block]] = {}
        for blk in self.blocks:
            by_dst.setdefault(blk.dst, []).append(blk)
        for g in range(1, len(self.groups)):
            a = self.bias_of(g).expand(x.shape[0], -1)
            for blk in by_dst.get(g, []):
                a = self._block_apply(blk, xs[blk.src], a)
            xs.append(self.acts[g].fn(a))
        return xs

    def forward(self, x: Tensor) -> Tensor:
        """The outputs of the feed-forward pass, ``(batch, n_outputs)``."""
        return self.gather_outputs(self.forward_all(x))

    def check_inputs(self, x: Tensor) -> None:
        if x.ndim != 2 or x.shape[1] != len(self.graph.inputs):
            raise GraphError(f"the data has {x.shape[-1] if x.ndim else 0} input columns but the "
                             f"graph has {len(self.graph.inputs)} input neurons")
