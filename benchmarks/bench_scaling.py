"""Cost of one local sweep (Algorithm 2) against |A| and l, with backpropagation beside it.

The paper says a sweep costs Theta(|A| l), as backpropagation does.  This script times one
sweep of the level-parallel local engine (``lagprop.local.run_sweeps``: the input arcs'
part of f, x and lambda of every neuron and example, and the weight gradient; children
first as the trainer sweeps, and parents first beside it) on random sparse layered DAGs
with skip arcs

* while |A| grows 16x at a fixed number of examples l (neurons grow with |A|: the mean
  fan-in is fixed), and
* while l grows 16x at a fixed graph,

fits the exponents of time ~ |A|^p and time ~ l^q by least squares on log-log, and times
one backpropagation pass (forward, loss, backward: autograd) on the same network and the
same examples in the same run, for the ratio.  Times are CPU seconds of this process on
one thread (the least of a few runs), so that other jobs on a shared machine disturb them
less than they disturb wall time.

Measured on a 2-core machine (one thread), l |A| is what decides the per-arc cost:

* ``--quick``, l |A| from 0.26M to 4M (the (l, |A|) temporaries stay in the caches):
  exponents 0.97 in |A| and 0.99 in l; backprop 0.99 and 0.96; ratio 1.09 / 1.16;
* default, l |A| from 6.4M to 102M: 1.13 and 1.17 (backprop 1.10 and 1.17);
* ``--large``, up to 410M (GB-sized temporaries): 1.19-1.27 and 1.26-1.30, backprop 1.24-1.40.

Local sweeps and backprop bend alike as their working sets leave the caches and reach
main memory, so the bend belongs to the machine and not to the algorithm; the ratio of a
local sweep to a backprop pass stays between 1.0 and 1.3 throughout.  Run with ``nice``::

    nice python benchmarks/bench_scaling.py --quick    # in-cache sizes, seconds
    nice python benchmarks/bench_scaling.py            # past the caches, a few minutes
    nice python benchmarks/bench_scaling.py --large --fixed-neurons 1562   # main memory, GBs
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from lagprop.dynamics import Dynamics
from lagprop.graph import Graph
from lagprop.lagrangian import loss_value
from lagprop.local import init_state, run_sweeps
from lagprop.network import Network


def layered_dag(n_arcs: int, fan_in: int = 16, levels: int = 3, n_out: int = 10, seed: int = 0) -> Graph:
    """A random sparse DAG: inputs, ``levels`` hidden levels, outputs; arcs from any lower
    level (skip arcs), each non-input neuron with one parent on the level just below (so the
    topological levels are the intended ones) and mean fan-in ``fan_in``."""
    rng = np.random.default_rng(seed)
    n_noninput = max(n_arcs // fan_in, levels + n_out)
    n_hidden = n_noninput - n_out
    n_in = max(n_hidden // levels, 8)
    sizes = [n_in] + [n_hidden // levels + (k < n_hidden % levels) for k in range(levels)] + [n_out]
    start = np.cumsum([0] + sizes)
    level = np.repeat(np.arange(len(sizes)), sizes)
    n = int(start[-1])
    heads = np.arange(n_in, n)
    below = [rng.integers(start[level[h] - 1], start[level[h]]) for h in heads]  # one parent each
    extra = n_arcs - len(heads)
    h2 = rng.integers(n_in, n, size=extra)
    t2 = (rng.random(extra) * start[level[h2]]).astype(np.int64)  # any neuron of a lower level
    arcs = list(zip(np.concatenate([below, t2]).tolist(), np.concatenate([heads, h2]).tolist()))
    roles = ["input"] * n_in + ["hidden"] * n_hidden + ["output"] * n_out
    acts = ["identity"] * n_in + ["relu"] * n_hidden + ["identity"] * n_out
    return Graph(roles, arcs, acts, [r != "input" for r in roles])


def _time(fn, repeats: int) -> float:
    """Least CPU seconds of this process over the runs (one thread: the compute itself; other
    jobs on a shared machine can only add to it, through the caches and memory bus)."""
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return min(out)


def measure(graph: Graph, n_ex: int, repeats: int, seed: int = 0,
            parents_first: bool = False) -> tuple[float, float, float]:
    """Seconds of one local sweep children first (the trainer's order), parents first, and
    one backprop pass, on the same net and data."""
    gen = torch.Generator().manual_seed(seed)
    net = Network(graph, generator=gen)
    x_in = torch.randn(n_ex, net.sizes[0], generator=gen)
    y = torch.nn.functional.one_hot(torch.randint(0, len(graph.outputs), (n_ex,), generator=gen),
                                    len(graph.outputs)).float()
    dyn = Dynamics()
    with torch.no_grad():
        xs = net.forward_all(x_in)
    lams = [None] + [torch.zeros_like(t) for t in xs[1:]]
    st = init_state(net, xs, lams, dyn.rho)

    def noop() -> None:  # the weight step itself is the same for both methods: left out
        pass

    def local() -> None:
        run_sweeps(net, st, y, dyn, sweeps=1, schedule="sweep", weight_step=noop, reverse=True)

    def local_forward() -> None:
        run_sweeps(net, st, y, dyn, sweeps=1, schedule="sweep", weight_step=noop)

    def backprop() -> None:
        net.zero_grad(set_to_none=True)
        loss_value("ce", net(x_in), y).mean().backward()

    t_fwd = _time(local_forward, repeats) if parents_first else float("nan")
    return _time(local, repeats), t_fwd, _time(backprop, repeats)


def fit(xs: list[float], ts: list[float]) -> float:
    return float(np.polyfit(np.log(xs), np.log(ts), 1)[0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="in-cache sizes (l |A| from 0.26M to 4M)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs after a warm-up; the least counts")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1, so that CPU time is compute time)")
    p.add_argument("--parents-first", action="store_true", help="also time parents-first sweeps")
    p.add_argument("--large", action="store_true",
                   help="4x the examples: every working set far past the caches, so that the per-arc cost "
                        "no longer drifts with size (the smallest sizes of the default series still sit in L2/L3)")
    p.add_argument("--fixed-neurons", type=int, default=0,
                   help="hold the non-input neurons at this number while |A| grows (the fan-in grows instead), "
                        "so that the state's size, and with it the memory level it lives in, stays put")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        arcs, ell_fixed, ells, arcs_fixed = [4000, 8000, 16000, 32000, 64000], 64, [16, 32, 64, 128, 256], 16000
    elif args.large:
        arcs, ell_fixed = [25_000, 50_000, 100_000, 200_000, 400_000], 1024
        ells, arcs_fixed = [512, 1024, 2048, 4096, 8192], 50_000
    else:  # l |A| >= 6.4M: every size past the L2 caches (smaller ones run faster per arc)
        arcs, ell_fixed = [25_000, 50_000, 100_000, 200_000, 400_000], 256
        ells, arcs_fixed = [128, 256, 512, 1024, 2048], 50_000
    rows = []
    print(f"{'arcs':>8} {'examples':>8} {'neurons':>8} {'local s':>9} {'parents-1st s':>13} {'backprop s':>10} "
          f"{'ratio':>6} {'ratio p-1st':>11}")
    for which, pairs in (("A", [(a, ell_fixed) for a in arcs]), ("l", [(arcs_fixed, e) for e in ells])):
        graphs: dict[int, Graph] = {}
        for a, e in pairs:
            fan_in = max(a // args.fixed_neurons, 1) if args.fixed_neurons and which == "A" else 16
            g = graphs.setdefault(a, layered_dag(a, fan_in=fan_in))
            t_loc, t_fwd, t_bp = measure(g, e, args.repeats, parents_first=args.parents_first)
            rows.append((which, a, e, t_loc, t_bp, t_fwd))
            print(f"{a:>8} {e:>8} {g.n:>8} {t_loc:>9.4f} {t_fwd:>13.4f} {t_bp:>10.4f} {t_loc / t_bp:>6.2f} "
                  f"{t_fwd / t_bp:>11.2f}", flush=True)
    for which, label, col in (("A", "|A| (fixed l)", 1), ("l", "l (fixed |A|)", 2)):
        sel = [r for r in rows if r[0] == which]
        xs = [r[col] for r in sel]
        p_loc, p_bp = fit(xs, [r[3] for r in sel]), fit(xs, [r[4] for r in sel])
        ratio = statistics.median(r[3] / r[4] for r in sel)
        extra = ""
        if args.parents_first:
            extra = (f" (parents first: exponent {fit(xs, [r[5] for r in sel]):.3f}, "
                     f"ratio {statistics.median(r[5] / r[4] for r in sel):.2f})")
        print(f"exponent in {label}: local sweep {p_loc:.3f}, backprop {p_bp:.3f}; "
              f"median ratio local/backprop {ratio:.2f}{extra}")


if __name__ == "__main__":
    main()
