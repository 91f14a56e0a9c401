"""The prepared GPU check: correctness against the CPU, then Fashion-MNIST on the GPU.

Run it as one command on a machine with a CUDA GPU (it runs on CPU too, with --device cpu,
to test the script itself)::

    python benchmarks/device_check.py --data-dir DIR_WITH_FASHION_IDX_FILES

1. Correctness, float64, small nets: the same seed trained on the CPU and on the device
   (mdmm full batch with stored state, mdmm mini-batch, backprop mini-batch) must give the
   same weights (printed: the largest difference; expected about 1e-12); a sparse random
   DAG's relaxation step and weight gradient must match the CPU's; and at the stationary
   point (Eq. 6) dL/dw must equal autograd's gradient of the mean loss on the device.
2. Fashion-MNIST 784-256-10, mini-batches of 256, 5 epochs (--fashion-epochs), float32:
   the default Lagrangian method (mdmm) against backprop on the same device, seconds per
   epoch and test accuracy, and the ratio.
3. The NCCL path: ``torchrun --nproc-per-node 1`` on the device gives the plain run's test
   accuracy (one GPU cannot hold two NCCL ranks; more GPUs: --nproc N).

Exit status 0 when every correctness check holds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from lagprop.data import load_dataset
from lagprop.dynamics import Dynamics, relax_step, stationary_weight_grad, weight_grads
from lagprop.graph import Graph
from lagprop.lagrangian import loss_value
from lagprop.network import Network
from lagprop.train import TrainConfig, Trainer


def trained_weights(device: str, dtype: torch.dtype, **kw) -> dict[str, torch.Tensor]:
    data = load_dataset("digits")
    cfg = TrainConfig(seed=0, device=device, **kw)
    net = Network(Graph.mlp([64, 32, 10]), dtype=dtype, generator=torch.Generator().manual_seed(0)).to(device)
    Trainer(net, data, cfg).fit()
    return {k: v.cpu() for k, v in net.state_dict().items()}


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def check_training(device: str, tol: float) -> bool:
    ok = True
    cases = {
        "mdmm full batch, stored state": dict(method="mdmm", batch_size=0, epochs=20, state="stored", lr=3e-3),
        "mdmm mini-batch 64": dict(method="mdmm", batch_size=64, epochs=3),
        "backprop mini-batch 64": dict(method="backprop", batch_size=64, epochs=3),
    }
    for name, kw in cases.items():
        d = max_diff(trained_weights("cpu", torch.float64, **kw), trained_weights(device, torch.float64, **kw))
        good = d <= tol
        ok &= good
        print(f"  {name:32s} max |w_cpu - w_{device}| = {d:.2e}  {'ok' if good else 'FAIL'}", flush=True)
    return ok


def check_sparse_step(device: str, tol: float) -> bool:
    graph = Graph.random_dag(6, 20, 3, 90, levels=3, parallel=0.2, seed=1, activations=("tanh", "relu"))
    results = []
    for dev in ("cpu", device):
        net = Network(graph, dtype=torch.float64, generator=torch.Generator().manual_seed(3)).to(dev)
        gg = torch.Generator().manual_seed(0)
        x_in = torch.randn(50, net.sizes[0], generator=gg, dtype=torch.float64)
        xs = [x_in] + [torch.randn(50, s, generator=gg, dtype=torch.float64) for s in net.sizes[1:]]
        lams = [None] + [torch.randn(50, s, generator=gg, dtype=torch.float64) for s in net.sizes[1:]]
        y = torch.nn.functional.one_hot(torch.randint(0, 3, (50,), generator=gg), 3).double()
        xs = [t.to(dev) for t in xs]
        lams = [None] + [t.to(dev) for t in lams[1:]]
        y = y.to(dev)
        with torch.no_grad():
            xs2, lams2 = relax_step(net, xs, lams, y, Dynamics())
            weight_grads(net, xs2, lams2, Dynamics())
        results.append([t.cpu() for t in xs2[1:] + lams2[1:]] + [p.grad.cpu() for p in net.parameters()])
    d = max((a - b).abs().max().item() for a, b in zip(*results))
    print(f"  sparse random DAG: relax step + dL/dw, max |cpu - {device}| = {d:.2e}  {'ok' if d <= tol else 'FAIL'}")
    return d <= tol


def check_stationary(device: str, tol: float) -> bool:
    data = load_dataset("digits")
    net = Network(Graph.mlp([64, 32, 10]), dtype=torch.float64,
                  generator=torch.Generator().manual_seed(0)).to(device)
    x = torch.as_tensor(data.X_train[:200], dtype=torch.float64, device=device)
    y = torch.nn.functional.one_hot(torch.as_tensor(data.y_train[:200], device=device), 10).double()
    ours = stationary_weight_grad(net, x, y, "ce")
    net.zero_grad()
    loss_value("ce", net(x), y).mean().backward()
    d = max((a - p.grad).abs().max().item() for a, p in zip(ours, net.parameters()))
    print(f"  Eq. 6 on {device}: max |dL/dw - autograd| = {d:.2e}  {'ok' if d <= tol else 'FAIL'}")
    return d <= tol


def fashion(device: str, epochs: int, data_dir: str | None) -> None:
    data = load_dataset("fashion-mnist", data_dir=data_dir)
    rows = {}
    for method in ("mdmm", "backprop"):
        cfg = TrainConfig(method=method, batch_size=256, epochs=epochs, seed=0, device=device)
        net = Network(Graph.mlp([784, 256, 10]), generator=torch.Generator().manual_seed(0)).to(device)
        t = Trainer(net, data, cfg)
        for m in t.fit():
            print(f"  {method:8s} epoch {m['epoch']}: test acc {m['test_accuracy']:.4f}, {m['seconds']:.2f}s",
                  flush=True)
        rows[method] = (t.seconds / t.epoch, t.history[-1]["test_accuracy"])
    print(f"  {'method':8s} {'s/epoch':>8s} {'test acc':>9s}")
    for method, (spe, acc) in rows.items():
        print(f"  {method:8s} {spe:8.3f} {acc:9.4f}")
    print(f"  mdmm / backprop time per epoch: {rows['mdmm'][0] / rows['backprop'][0]:.2f}")


def nccl_run(device: str, nproc: int) -> bool:
    with tempfile.TemporaryDirectory() as tmp:
        common = ["-m", "lagprop", "train", "--dataset", "digits", "--hidden", "100", "--seed", "0",
                  "--device", device, "--quiet"]
        subprocess.run([sys.executable, *common, "--out", f"{tmp}/one"], check=True)
        start = time.perf_counter()
        res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                              "--nproc-per-node", str(nproc), *common, "--out", f"{tmp}/many"],
                             capture_output=True, text=True)
        if res.returncode != 0:
            print(f"  torchrun failed: {res.stderr[-1500:]}")
            return False
        a = json.loads(Path(tmp, "one", "summary.json").read_text())
        b = json.loads(Path(tmp, "many", "summary.json").read_text())
        good = abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.005
        print(f"  torchrun {nproc} proc(s) on {device}: test acc {b['test_accuracy']:.4f} vs plain "
              f"{a['test_accuracy']:.4f}, {b['seconds_per_epoch']:.3f} vs {a['seconds_per_epoch']:.3f} s/epoch, "
              f"{time.perf_counter() - start:.1f}s wall  {'ok' if good else 'FAIL'}")
        return good


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data-dir", default=os.environ.get("LAGPROP_FASHION_DIR"))
    p.add_argument("--fashion-epochs", type=int, default=5)
    p.add_argument("--nproc", type=int, default=max(1, torch.cuda.device_count()))
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--skip", default="", help="comma-separated: train,sparse,stationary,fashion,torchrun")
    args = p.parse_args()
    skip = set(args.skip.split(","))
    dev = args.device
    name = torch.cuda.get_device_name(0) if dev.startswith("cuda") else "cpu"
    print(f"device {dev} ({name}); torch {torch.__version__}, cuda {torch.version.cuda}", flush=True)
    ok = True
    print("1. correctness against the CPU (float64)")
    if "train" not in skip:
        ok &= check_training(dev, args.tol)
    if "sparse" not in skip:
        ok &= check_sparse_step(dev, args.tol)
    if "stationary" not in skip:
        ok &= check_stationary(dev, 1e-10)
    if "fashion" not in skip:
        print(f"2. Fashion-MNIST 784-256-10, batch 256, {args.fashion_epochs} epochs on {dev} (float32)")
        try:
            fashion(dev, args.fashion_epochs, args.data_dir)
        except Exception as e:  # missing data must not hide the other figures
            print(f"  skipped: {e}")
    if "torchrun" not in skip:
        print("3. torchrun (NCCL on a GPU, gloo on CPU)")
        ok &= nccl_run(dev, args.nproc)
    print("all correctness checks hold" if ok else "SOME CHECKS FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
