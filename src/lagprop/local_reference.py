"""Algorithm 2 of the paper as printed, neuron by neuron and example by example: the oracle.

Plain Python over scalars (float64), sharing nothing with the compiled network: the graph's
arc list, one weight per arc, one bias per neuron, activations written out with ``math``.
It is slow on purpose and meant for small graphs; :mod:`lagprop.local` must agree with it
to rounding.

What is fixed with respect to the printed pseudo-code (MATH.md lists 1 and 2):

1. The accumulators dL/dx_{kappa i} and f_{kappa i} are initialised once (line 1) and then
   only added to; here both are reset at every visit of (kappa, i), in every sweep.
2. sigma'_{kappa i} is sigma' of f_{kappa i}, the pre-activation summed over the weights
   *into* i (the paper writes w_ri inside sigma').  f is a per-(kappa, i) variable that a
   neuron keeps between visits: a child's sigma'_{kappa r} is read from its stored f_r.
3. Line 20 reads ``w <- w - mu_w lambda sigma' x``, which is ascent on L (Eq. 3 says
   dL/dw_ij = -lambda_i sigma'_i x_j); learning descends: ``w <- w + mu_w lambda sigma' x``
   (with lambda = -dv/dx at the stationary point, Eq. 6, the printed sign climbs the loss).

The loop "for i = 1 to n" assumes a numbering; here the visiting order is given (default:
topological, parents first).  Any order that keeps every arc's tail before its head gives
the same result, and so does any order that keeps every head before its tail.

Generalisations, each reducing to the paper's case: MDMM's augmented term (lambda~ = lambda
+ rho G in the x and w gradients; rho = 0 is the paper's BDMM), the l1 term by subgradient
(as printed) or by a proximal soft threshold, biases (arcs from a constant 1), the child
sum for outputs that have children, and the soft-max cross-entropy as loss (its gradient,
like the squared error's, is read at the start of the example's pass).  With
``schedule='sweep'`` line 20 accumulates over the examples and the weights step once per
sweep by the mean (Algorithm 1's accumulation).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .graph import Graph


def _sigma(name: str, a: float) -> tuple[float, float]:
    """(sigma(a), sigma'(a)); sigma'(0) = 0 for ReLU."""
    if name == "relu":
        return max(a, 0.0), 1.0 if a > 0 else 0.0
    if name == "identity":
        return a, 1.0
    if name == "tanh":
        t = math.tanh(a)
        return t, 1.0 - t * t
    if name == "sigmoid":
        s = 1.0 / (1.0 + math.exp(-a))
        return s, s * (1.0 - s)
    if name == "leaky_relu":
        return (a, 1.0) if a > 0 else (0.01 * a, 0.01)
    if name == "softplus":
        return math.log1p(math.exp(-abs(a))) + max(a, 0.0), 1.0 / (1.0 + math.exp(-a))
    raise ValueError(f"the reference knows no activation {name!r}")


def _sign(v: float) -> float:
    return float(v > 0) - float(v < 0)


def topological_order(graph: Graph) -> list[int]:
    """The non-input neurons by increasing longest-path level (any such order gives the same sweep)."""
    level = graph.topological_levels()
    if level is None:
        raise ValueError("the reference sweep needs a DAG")
    return sorted((i for i in range(graph.n) if graph.roles[i] != "input"), key=lambda i: (level[i], i))


def preactivations(graph: Graph, w: np.ndarray, b: np.ndarray, x: np.ndarray) -> np.ndarray:
    """f_{kappa i} = b_i + sum over the arcs j -> i of w x_{kappa j}, arc by arc."""
    f = np.zeros_like(x)
    for k in range(x.shape[0]):
        for i in range(graph.n):
            if graph.roles[i] != "input":
                f[k, i] = b[i]
        for a, (t, h) in enumerate(graph.arcs):
            f[k, h] += w[a] * x[k, t]
    return f


def reference_sweeps(graph: Graph, w: np.ndarray, b: np.ndarray, x: np.ndarray, lam: np.ndarray,
                     y: np.ndarray, *, mu_x: float, mu_lambda: float, mu_w: float, rho: float = 0.0,
                     loss: str = "mse", alpha: float | np.ndarray = 0.0, l1_mode: str = "prox",
                     sweeps: int = 1, schedule: str = "example", learn: bool = True,
                     f: np.ndarray | None = None, order: Sequence[int] | None = None,
                     weights_at: str = "visit") -> dict[str, np.ndarray]:
    """Run ``sweeps`` sweeps of Algorithm 2 (fixed) and return the new x, lambda, f, w, b.

    ``x``, ``lam``: (examples, neurons) in graph order, inputs' columns holding the data;
    ``w``: one weight per arc (graph arc order); ``b``: one bias per neuron (kept 0 where the
    graph has none); ``y``: (examples, outputs) in the graph's output order; ``alpha``: a
    scalar or an (examples, neurons) array (used on hidden neurons); ``f``: the stored
    pre-activations (default: summed from ``x``); ``order``: the visiting order (default:
    topological).  ``weights_at`` ('example' schedule): 'visit' changes w_ij at i's visit
    (line 20 as printed); 'example' applies the example's changes after its pass, which is
    the same for a parents-first order (no one reads w_ij later in the pass) but not for a
    children-first one (the parents read w_ij after i's visit).  Inputs are copied.
    """
    x, lam, w, b = x.astype(np.float64).copy(), lam.astype(np.float64).copy(), w.astype(np.float64).copy(), \
        b.astype(np.float64).copy()
    f = preactivations(graph, w, b, x) if f is None else f.astype(np.float64).copy()
    n_ex = x.shape[0]
    al = np.broadcast_to(np.asarray(alpha, dtype=np.float64), x.shape)
    order = list(order) if order is not None else topological_order(graph)
    into: list[list[int]] = [[] for _ in range(graph.n)]
    out_of: list[list[int]] = [[] for _ in range(graph.n)]
    for a, (t, h) in enumerate(graph.arcs):
        into[h].append(a)
        out_of[t].append(a)
    outs = graph.outputs
    acts = graph.activations
    for _ in range(sweeps):
        gw, gb = np.zeros_like(w), np.zeros_like(b)
        for k in range(n_ex):
            ew, eb = np.zeros_like(w), np.zeros_like(b)  # this example's change (weights_at='example')
            # the loss gradient dv/dx of the outputs at the start of the example's pass
            xo = [x[k, o] for o in outs]
            if loss == "mse":
                dv = {o: xo[q] - y[k, q] for q, o in enumerate(outs)}
            else:
                top = max(xo)
                e = [math.exp(v - top) for v in xo]
                z = sum(e)
                dv = {o: e[q] / z - y[k, q] for q, o in enumerate(outs)}
            for i in order:
                # lines 5-12: dL/dx_{kappa i}, reset for this visit (fix 1)
                dx = 0.0
                for a in out_of[i]:  # every arc i -> r, parallel arcs each once
                    r = graph.arcs[a][1]
                    s_r, ds_r = _sigma(acts[r], f[k, r])
                    lt_r = lam[k, r] + rho * (x[k, r] - s_r)
                    dx -= ds_r * w[a] * lt_r
                # lines 13-15: f_{kappa i}, reset (fix 1), over the weights into i (fix 2)
                fi = b[i]
                for a in into[i]:
                    fi += w[a] * x[k, graph.arcs[a][0]]
                f[k, i] = fi
                s_i, ds_i = _sigma(acts[i], fi)
                G = x[k, i] - s_i                                    # line 16
                dx += lam[k, i] + rho * G                            # line 11 (lambda~)
                if graph.roles[i] == "output":
                    dx += dv[i]                                      # line 6
                elif l1_mode == "subgradient":
                    dx += al[k, i] * _sign(x[k, i])                  # line 11: alpha x/|x|
                xi = x[k, i] - mu_x * dx                             # line 17
                if graph.roles[i] == "hidden" and l1_mode == "prox":
                    t = mu_x * al[k, i]
                    xi = _sign(xi) * max(abs(xi) - t, 0.0)
                li = lam[k, i] + mu_lambda * G                       # line 18
                x[k, i], lam[k, i] = xi, li
                # line 20, descending on L (fix 3): dL/dw_ij = -lambda~_i sigma'_i x_j
                m = (li + rho * (xi - s_i)) * ds_i
                for a in into[i]:
                    g = -m * x[k, graph.arcs[a][0]]
                    if schedule == "example":
                        if learn and weights_at == "visit":
                            w[a] -= mu_w * g
                        ew[a] += g
                    else:
                        gw[a] += g
                if graph.bias[i]:
                    if schedule == "example":
                        if learn and weights_at == "visit":
                            b[i] -= mu_w * (-m)
                        eb[i] += -m
                    else:
                        gb[i] += -m
            if schedule == "example" and learn and weights_at == "example":
                w -= mu_w * ew
                b -= mu_w * eb
        if schedule == "sweep" and learn:
            w -= mu_w * gw / n_ex
            b -= mu_w * gb / n_ex
    return {"x": x, "lam": lam, "f": f, "w": w, "b": b}
