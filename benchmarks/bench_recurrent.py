"""Recurrent nets over sequences: the Lagrangian method (MDMM) against BPTT, same run.

Same task, cell, initial weights, batches, optimizer and learning-rate schedule for both;
prints test error and wall time per method and their ratio, and (``--grad-check``) how
close the Lagrangian weight gradient after K Jacobi sweeps is to BPTT's.

    nice python benchmarks/bench_recurrent.py                      # adding problem, length 20
    nice python benchmarks/bench_recurrent.py --task parity --seq-len 10 --epochs 10
    nice python benchmarks/bench_recurrent.py --task mnist1d-seq --hidden 64 --epochs 20
"""

from __future__ import annotations

import argparse
import json

import torch

from lagprop.recurrent import RNNCell, SeqTrainer, bptt_grads, predicted_state, relax_step_seq, weight_grads_seq
from lagprop.tasks import load_sequence_task
from lagprop.train import TrainConfig


def grad_check(ds, hidden: int, seed: int, ks=(5, 10, 20, 40)) -> list[dict]:
    """Cosine and norm ratio of the Lagrangian gradient (predicted x, lambda = 0, K sweeps) to BPTT's."""
    cell = RNNCell(ds.n_inputs, hidden, ds.n_outputs, generator=torch.Generator().manual_seed(seed)).double()
    u = torch.as_tensor(ds.U_train[:256], dtype=torch.float64)
    y = torch.as_tensor(ds.Y_train[:256], dtype=torch.float64)
    if ds.n_classes is not None:
        y = torch.nn.functional.one_hot(y.long(), ds.n_classes).double()
    loss = "mse" if ds.n_classes is None else "ce"
    steps = torch.tensor(ds.steps)
    ref = torch.cat([g.flatten() for g in bptt_grads(cell, u, y, steps, loss)])
    st = predicted_state(cell, u, steps)
    rows = []
    with torch.no_grad():
        for k in range(1, max(ks) + 1):
            st = relax_step_seq(cell, u, y, steps, st, 0.5, 0.5, 1.0, loss)
            if k in ks:
                weight_grads_seq(cell, u, steps, st, 1.0, 1.0 / len(u))
                g = torch.cat([p.grad.flatten() for p in cell.parameters()])
                rows.append({"K": k, "cosine": float(g @ ref / g.norm() / ref.norm()),
                             "norm_ratio": float(g.norm() / ref.norm())})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--task", default="adding")
    ap.add_argument("--seq-len", type=int, default=20)
    ap.add_argument("--n-train", type=int, default=5000)
    ap.add_argument("--n-test", type=int, default=1000)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--relax-steps", type=int, default=20)
    ap.add_argument("--lambda-init", default="stored", help="stored (default here: the recipe) or zero")
    ap.add_argument("--clip", type=float, default=0.0, help="gradient-norm clipping for both methods (0: off)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--methods", default="mdmm,backprop")
    ap.add_argument("--grad-check", action="store_true")
    ap.add_argument("--json", default=None, help="write the figures here too")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_sequence_task(a.task, a.seq_len, a.n_train, a.n_test, seed=a.seed)
    print(ds.describe(), flush=True)
    results = {}
    if a.grad_check:
        results["grad_check"] = grad_check(ds, a.hidden, a.seed)
        for r in results["grad_check"]:
            print(f"  K={r['K']:3d}: cosine to BPTT {r['cosine']:.4f}, norm ratio {r['norm_ratio']:.3f}")
    key = "test_mse" if ds.n_classes is None else "test_accuracy"
    for method in a.methods.split(","):
        cfg = TrainConfig(method=method, epochs=a.epochs, batch_size=a.batch_size, lr=a.lr,
                          relax_steps=a.relax_steps, lambda_init=a.lambda_init, seed=a.seed,
                          extra={"lr_schedule": "cosine", "clip": a.clip})
        cell = RNNCell(ds.n_inputs, a.hidden, ds.n_outputs, generator=torch.Generator().manual_seed(a.seed))
        tr = SeqTrainer(cell, ds, cfg)
        tr.fit(callback=lambda t, m: print(f"  {t.cfg.method} epoch {m['epoch']}: {key} {m[key]:.4f}, "
                                           f"violation {m['constraint_violation']:.1e}, {m['seconds']:.0f}s",
                                           flush=True))
        s = tr.summary()
        best = min if key == "test_mse" else max
        s["best_" + key] = best(h[key] for h in tr.history)
        results[method] = s
    print(f"\n{ds.name}, state {a.hidden}, {a.epochs} epochs, batch {a.batch_size}, K={a.relax_steps}, "
          f"lambda {a.lambda_init}, lr {a.lr} cosine")
    for method in a.methods.split(","):
        s = results[method]
        print(f"  {method:9s} {key} {s[key]:.4f} (best {s['best_' + key]:.4f}), train "
              f"{s.get('train_mse', s.get('train_accuracy')):.4f}, {s['seconds']:.1f}s")
    if "mdmm" in results and "backprop" in results:
        print(f"  wall-time ratio mdmm / BPTT: {results['mdmm']['seconds'] / results['backprop']['seconds']:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
