"""Adaptive Sparse Training: epoch time, AUROC and accuracy against the activation rate.

For each activation rate the same trial (seed, backbone, data) runs ``--dense`` dense epochs,
then ``--sparse`` epochs at that rate (rate 1.0 stays dense: the reference). Reported per rate:
the mean sparse-epoch training time relative to the reference's epochs at the same positions,
the achieved activation rate, and at the epoch with the best val AUROC (the same number of epochs
for every rate) the val accuracy and the test AUROC and accuracy (test only reports).

    python bench/ast.py             # PneumoniaMNIST, resnet18, 1 dense + 3 sparse epochs
    python bench/ast.py --quick     # CI: synthetic 768-image data, 1 + 1 epochs

Writes bench/out/ast.json. Target: at 0.25 a training epoch takes at most 0.6 of a dense epoch.
"""

from __future__ import annotations

import sys

# Run as a script, this file's folder comes first on sys.path, and this file would shadow the
# standard library's `ast` (which `inspect` and torch import). Drop the folder before importing more.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RATES = (1.0, 0.5, 0.25, 0.1)


def data_dict(quick: bool, tmp: Path) -> dict:
    shared = Path(os.environ.get("MEDSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    if (shared / "pneumoniamnist.npz").is_file() and not quick:
        return {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(shared), "cache_dir": str(tmp / "cache")}
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 768), ("val", 128), ("test", 128)):
        y = rng.integers(0, 2, size=(n, 1))
        x = rng.integers(0, 120, size=(n, 28, 28), dtype=np.uint8)
        x[y[:, 0] == 1, 8:20, 8:20] += 100  # learnable: a bright square marks class 1
        arrays[f"{split}_labels"], arrays[f"{split}_images"] = y, x
    (tmp / "syn").mkdir(exist_ok=True)
    np.savez(tmp / "syn" / "pneumoniamnist.npz", **arrays)
    return {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(tmp / "syn"), "cache_dir": str(tmp / "cache"), "download": False}


def build_run(rate: float, data: dict, args, out: Path):
    from trainables import DataConfig, Trainer, TrainParams

    params = TrainParams(
        backbone=args.backbone, epochs=args.dense + args.sparse, batch_size=args.batch_size, lr=1e-3,
        image_size=28, threads=args.threads, activation_rate=rate, ast_start_epoch=args.dense, seed=0,
    )
    return Trainer(params, DataConfig.from_dict(data), out)


def run_interleaved(rates: list[float], data: dict, args, tmp: Path) -> dict[float, list[dict]]:
    """Epoch e of every rate runs before epoch e+1 of any: machine drift hits all rates alike."""
    from trainables import compute_metrics

    runs = {rate: build_run(rate, data, args, tmp / f"rate{rate}") for rate in rates}
    rows: dict[float, list[dict]] = {rate: [] for rate in rates}
    for epoch in range(args.dense + args.sparse):
        for rate, run in runs.items():
            row = run.train_epoch(epoch)
            for split in ("val", "test"):  # the epoch is chosen on val; test only reports
                probs, _ = run.predict(split)
                row.update(compute_metrics(probs, run.ds.splits[split].labels, task=run.ds.task,
                                           class_names=run.ds.class_names, prefix=f"{split}_"))
            rows[rate].append(row)
            print(f"rate {rate} epoch {epoch + 1}: {row['train_seconds']:.2f}s train, val AUROC {row['val_auroc']:.4f}", flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--dense", type=int, default=None, help="dense epochs before AST starts")
    parser.add_argument("--sparse", type=int, default=None, help="epochs at the activation rate")
    parser.add_argument("--rates", default=",".join(map(str, RATES)))
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "ast.json"))
    args = parser.parse_args(argv)
    args.dense = args.dense if args.dense is not None else 1
    args.sparse = args.sparse if args.sparse is not None else (1 if args.quick else 3)
    rates = [float(r) for r in args.rates.split(",")]
    if 1.0 not in rates:
        rates = [1.0] + rates

    import torch

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = data_dict(args.quick, tmp)
        rows = run_interleaved(rates, data, args, tmp)
    dense_rows = rows[1.0][args.dense :]
    dense_time = float(np.mean([float(r["train_seconds"]) for r in dense_rows]))
    table = []
    for rate in rates:
        sparse_rows = rows[rate][args.dense :]
        t = float(np.mean([float(r["train_seconds"]) for r in sparse_rows]))
        achieved = [float(r.get("ast_activation_rate") or 1.0) for r in sparse_rows]
        best_i = int(np.argmax([float(r["val_auroc"]) for r in rows[rate]]))  # first best epoch, by validation
        best = rows[rate][best_i]
        table.append({
            "activation_rate": rate,
            "achieved_rate": round(float(np.mean(achieved)), 3),
            "samples_backprop_per_epoch": int(np.mean([float(r["ast_samples_backprop"]) for r in sparse_rows])) if rate < 1 else None,
            "epoch_seconds": round(t, 2),
            "time_vs_dense": round(t / dense_time, 3),
            "compute_savings_reported": round(float(np.mean([float(r["compute_savings"]) for r in sparse_rows])), 3) if rate < 1 else 0.0,
            "best_val_auroc": round(float(best["val_auroc"]), 4),
            "best_epoch": best_i + 1,
            "val_accuracy": round(float(best["val_accuracy"]), 4),
            "test_auroc": round(float(best["test_auroc"]), 4),
            "test_accuracy": round(float(best["test_accuracy"]), 4),
        })
    result = {
        "benchmark": "ast",
        "mode": "quick" if args.quick else "full",
        "data": "synthetic 768 images" if args.quick else "pneumoniamnist (3882 train)",
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "dense_epochs": args.dense,
        "sparse_epochs": args.sparse,
        "rows": table,
        "target": "time_vs_dense <= 0.6 at activation_rate 0.25",
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/ast.py" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"AST ({result['mode']}, {result['data']}, {args.backbone}, {args.dense} dense + {args.sparse} sparse epochs)")
    print(f"{'rate':>6} {'achieved':>9} {'epoch s':>8} {'vs dense':>9} {'val AUROC':>10} {'val acc':>8} "
          f"{'test AUROC':>10} {'test acc':>8}  (at the best val AUROC epoch)")
    for r in table:
        print(f"{r['activation_rate']:>6} {r['achieved_rate']:>9} {r['epoch_seconds']:>8} {r['time_vs_dense']:>9} "
              f"{r['best_val_auroc']:>10} {r['val_accuracy']:>8} {r['test_auroc']:>10} {r['test_accuracy']:>8}")
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
