"""One small-data recipe at a time: weight EMA, stronger augmentation and 64 px against the default trial.

Issue 13 asks which small-data recipes help before they are shipped. A sweep mixes every choice, so this
bench holds one configuration fixed (the default space's centre: resnet18, AdamW lr 1e-3, weight decay
1e-4, batch 64, cosine, simple augmentation, 28 px, no EMA) and changes one thing per variant, each
over several seeds, on small cuts of the shared sets (``bench/_subsets.py``). Each run trains
standalone (``trainables.train``) and keeps its best validation epoch, as a sweep trial does; the
figures are test AUROC and argmax accuracy, mean and spread over the seeds.

    python bench/recipes.py                                  # pneumoniamnist-500 and bloodmnist-1000, 3 seeds
    python bench/recipes.py --datasets pneumoniamnist-500 --seeds 0 1 --epochs 20 --variants base ema

Prints a table and writes bench/out/recipes.json.
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import contextlib
import importlib.util
import json
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BASE = {"backbone": "resnet18", "lr": 1e-3, "weight_decay": 1e-4, "batch_size": 64, "scheduler": "cosine",
        "optimizer": "adamw", "augment": "simple", "ema": False, "threads": 1, "pretrained": False}
VARIANTS = {
    "base": {},
    "ema": {"ema": True},
    "enhanced": {"augment": "enhanced"},
    "64px": {"image_size": 64},
}


def _sibling(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name(f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def shared_dir() -> Path:
    return Path(os.environ.get("MEDSWEEP_DATA_DIR") or ROOT.parent / "shared" / "datasets")


def one_run(job: dict) -> dict:
    """Train one (dataset, variant, seed) and score its best-validation-epoch test predictions."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from trainables import compute_metrics, train

    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(out / "train.log", "w") as log, contextlib.redirect_stdout(log):  # a line per epoch: kept, not shown
        train({**BASE, **VARIANTS[job["variant"]], "epochs": job["epochs"], "seed": job["seed"],
               "data": job["data"], "_out_dir": str(out)})
    seconds = time.perf_counter() - t0
    test = pd.read_parquet(out / "predictions_test.parquet")
    cols = [c for c in test.columns if c.startswith("prob_")]
    probs, y = test[cols].to_numpy(np.float64), test["label"].to_numpy()
    task = "binary" if len(cols) == 2 else "multi-class"
    m = compute_metrics(probs, y, task=task, class_names=[c[5:] for c in cols])
    acc = float((probs.argmax(1) == y).mean())
    return {**{k: job[k] for k in ("dataset", "variant", "seed")}, "auroc": float(m["val_auroc"]), "accuracy": acc, "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="pneumoniamnist-500,bloodmnist-1000")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=30, help="epochs of every run (default 30)")
    parser.add_argument("--workers", type=int, default=2, help="runs at once, one thread each (default 2)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "recipes.json"))
    args = parser.parse_args(argv)
    subsets = _sibling("_subsets")
    work = Path(tempfile.mkdtemp(prefix="medsweep-recipes-"))
    jobs = []
    for d in args.datasets.split(","):
        base, _ = subsets.parse_variant(d)
        root = Path(subsets.make_variants(work / "data", [d], src_dir=shared_dir(), seed=0)[d])
        data = {"source": "medmnist", "dataset": base, "size": 28, "root": str(root), "cache_dir": str(work / "cache")}
        for v in args.variants:
            for s in args.seeds:
                jobs.append({"dataset": d, "variant": v, "seed": s, "epochs": args.epochs, "data": data,
                             "out": str(work / "runs" / f"{d}-{v}-{s}")})
    # The cache is built once before the workers share it.
    sys.path.insert(0, str(ROOT))
    from trainables import DataConfig, load_dataset

    for d in {j["dataset"]: j["data"] for j in jobs}.values():
        for size in {VARIANTS[v].get("image_size") for v in args.variants}:
            load_dataset(DataConfig.from_dict(d), image_size=size, verbose=False)
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        rows = list(pool.map(one_run, jobs))
    print(f"{'dataset':<20} {'variant':<10} {'test AUROC (mean ± sd)':<24} {'argmax acc (mean ± sd)':<24} s/run")
    summary = []
    for d in args.datasets.split(","):
        for v in args.variants:
            r = [x for x in rows if x["dataset"] == d and x["variant"] == v]
            au, ac = np.array([x["auroc"] for x in r]), np.array([x["accuracy"] for x in r])
            sec = float(np.mean([x["seconds"] for x in r]))
            summary.append({"dataset": d, "variant": v, "auroc_mean": float(au.mean()), "auroc_sd": float(au.std(ddof=1)) if len(au) > 1 else 0.0,
                            "accuracy_mean": float(ac.mean()), "accuracy_sd": float(ac.std(ddof=1)) if len(ac) > 1 else 0.0, "seconds": sec})
            s = summary[-1]
            print(f"{d:<20} {v:<10} {s['auroc_mean']:.4f} ± {s['auroc_sd']:.4f}{'':<8} {s['accuracy_mean']:.4f} ± {s['accuracy_sd']:.4f}{'':<8} {sec:.0f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"epochs": args.epochs, "seeds": args.seeds, "base": BASE, "summary": summary, "runs": rows}, indent=2))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
