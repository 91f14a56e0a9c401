"""Support neurons on Fashion-MNIST: accuracy against size, and the pruned size for a 1-point loss.

Network 784-H-10 (ReLU), the default Lagrangian method (MDMM, predicted x, stored lambda).
Three curves of held-out accuracy against the number of hidden neurons:

1. ``reference, removal``: the net trained without l1, hidden neurons removed by least
   contribution, no retraining (what pruning without l1 would give);
2. ``l1 sweep``: for each alpha, train with l1, remove the neurons inactive on every
   training example (training outputs unchanged), then retrain the pruned net without l1
   for ``--finetune`` epochs; both the pruned and the retrained accuracy are printed;
3. ``learn-and-prune``: one network pruned repeatedly, alpha doubling every round.

For every point also the paper's transition figures at the alpha = 0 stationary point of
the pruned net (on a training subset): training loss and the share of hidden lambdas
above 1e-3.  Prints a table and the smallest net within 1 point of the reference, and
writes ``prune_fashion.png`` and ``prune_fashion.json`` to ``--out``.

    nice python benchmarks/bench_prune_fashion.py --epochs 3 --finetune 2
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from lagprop import Graph, Network, TrainConfig, Trainer, load_dataset
from lagprop.support import accuracy, count_weights, prune_straw
from lagprop.support_build import learn_and_prune, removal_curve, smallest_within, stationary_lambda
from lagprop.support_plots import accuracy_vs_size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", default="fashion-mnist", help="another data set for a quick smoke run")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--finetune", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--alphas", default="0.01,0.03,0.1,0.3")
    ap.add_argument("--rounds", type=int, default=4, help="learn-and-prune rounds (0: skip)")
    ap.add_argument("--round-alpha", type=float, default=0.03)
    ap.add_argument("--transition-examples", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lambda-init", default="stored",
                    help="lambda between visits for the l1 runs (default stored: it keeps the l1 reaction, Eq. 7)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/bench-prune-fashion")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_dataset(args.dataset)
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed)
    l1cfg = replace(cfg, lambda_init=args.lambda_init)  # also used, with l1 = 0, to retrain pruned nets
    started = time.time()

    def fresh() -> Network:
        return Network(Graph.mlp([data.n_inputs, args.hidden, data.n_outputs]),
                       generator=torch.Generator().manual_seed(args.seed))

    def transition(net: Network, tr: Trainer) -> dict:
        k = args.transition_examples
        return stationary_lambda(net, tr.X[:k], tr.Y[:k], cfg.loss)

    # 1. the reference, and the removal curve without l1 or retraining
    ref = Trainer(fresh(), data, cfg)
    ref.fit()
    base = ref.history[-1]["test_accuracy"]
    print(f"reference {data.n_inputs}-{args.hidden}-{data.n_outputs} on {data.name}, {args.epochs} epochs: "
          f"test {base:.4f} "
          f"({ref.seconds:.0f}s training)", flush=True)
    tran = transition(ref.net, ref)
    print(f"  at its alpha = 0 stationary point: train loss {tran['train_loss']:.4f}, "
          f"share of hidden |lambda| > 1e-3 {tran['support_fraction']:.3f}", flush=True)
    removal = removal_curve(ref.net, ref.X, ref.Y, ref.Xt, ref.Yt, points=16)

    # 2. the alpha sweep: l1, prune, retrain
    sweep, sweep_ft = [], []
    print("alpha    hidden  weights  pruned_acc  retrained_acc  outputs_changed  train_loss  lambda>1e-3")
    for alpha in [float(a) for a in args.alphas.split(",")]:
        tr = Trainer(fresh(), data, replace(l1cfg, l1=alpha))
        tr.fit()
        small, info = prune_straw(tr)
        tran = transition(small, tr)
        row = {"alpha": alpha, "hidden": info["hidden_after"], "weights": info["weights_after"],
               "test_accuracy": info["test_accuracy"], "before_prune": info["test_accuracy_before_prune"],
               "train_output_max_change": info["train_output_max_change"], **tran}
        if args.finetune:
            Trainer(small, data, replace(l1cfg, epochs=args.finetune)).fit()
            sweep_ft.append({**row, "test_accuracy": accuracy(small, tr.Xt, tr.Yt), "weights": count_weights(small)})
        sweep.append(row)
        ft = f"{sweep_ft[-1]['test_accuracy']:.4f}" if args.finetune else "-"
        print(f"{alpha:<8g} {row['hidden']:>6} {row['weights']:>8}  {row['test_accuracy']:.4f}      {ft:>8}"
              f"       {row['train_output_max_change']:.1e}         {tran['train_loss']:.4f}     "
              f"{tran['support_fraction']:.3f}", flush=True)

    # 3. learn-and-prune: one network, alpha doubling each round
    rounds: list[dict] = []
    if args.rounds:
        print("round  alpha   hidden  test_acc  train_loss  lambda>1e-3")
        rounds, _ = learn_and_prune(
            fresh(), data, replace(l1cfg, l1=args.round_alpha), rounds=args.rounds, growth=2.0,
            finetune_epochs=args.finetune,
            callback=lambda r: print(f"{r['round']:>5}  {r['alpha']:<7g} {r['hidden']:>6}  {r['test_accuracy']:.4f}"
                                     f"    {r['train_loss']:.4f}      {r['support_fraction']:.3f}", flush=True))

    target = base - 0.01
    curves = {"reference net, neurons removed (no retraining)": removal, "l1 + prune": sweep}
    if sweep_ft:
        curves[f"l1 + prune + {args.finetune} epochs retraining"] = sweep_ft
    if rounds:
        curves["learn-and-prune rounds"] = rounds
    print(f"\nsmallest net within 1 point of the reference ({base:.4f} -> >= {target:.4f}):")
    best = {}
    for name, rows in curves.items():
        b = smallest_within(rows, target)
        best[name] = b
        print(f"  {name}: " + (f"{b['hidden']} hidden of {args.hidden}, {b['weights']} weights, "
                               f"test {b['test_accuracy']:.4f}" if b else "none"))
    png = accuracy_vs_size(curves, out / "prune_fashion.png", baseline=base)
    (out / "prune_fashion.json").write_text(json.dumps(
        {"args": vars(args), "reference_test_accuracy": base, "curves": curves, "smallest_within_1pt": best},
        indent=2))
    print(f"wrote {png} and {out / 'prune_fashion.json'} ({time.time() - started:.0f}s)")


if __name__ == "__main__":
    main()
