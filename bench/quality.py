"""Test-split quality of medsweep's default sweep + ensemble against the MedMNIST v2 table.

Runs the shipped spaces exactly as a user would (``python -m search.run SPACE``), on PneumoniaMNIST
(``spaces/cxr.yaml``) and BloodMNIST (``spaces/blood.yaml``, the same search settings), then reads the
exported ensemble's metrics. Every choice (trials, members, combiner, threshold) is made on validation
data; the test split only reports.

    python bench/quality.py              # full: both spaces as shipped (about 15 min each on 2 CPU cores)
    python bench/quality.py --quick      # CI: a stratified 10 % of each file, 2 trials of 1 epoch

Prints a table and writes bench/out/quality.json (``--out`` to change). Targets (full mode):
PneumoniaMNIST ensemble test AUROC >= 0.975 and accuracy >= 0.90; BloodMNIST accuracy >= 0.966.
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# MedMNIST v2 (Yang et al., Scientific Data 2023), Table 3: test AUC / ACC, from ../shared/datasets/README.md.
PUBLISHED = {
    "pneumoniamnist": {
        "ResNet-18 (28)": (0.944, 0.854),
        "ResNet-18 (224)": (0.956, 0.864),
        "ResNet-50 (28)": (0.948, 0.854),
        "ResNet-50 (224)": (0.962, 0.884),
        "auto-sklearn": (0.942, 0.855),
        "AutoKeras": (0.947, 0.878),
        "Google AutoML Vision": (0.991, 0.946),
    },
    "bloodmnist": {
        "ResNet-18 (28)": (0.998, 0.958),
        "ResNet-18 (224)": (0.998, 0.963),
        "ResNet-50 (28)": (0.997, 0.956),
        "ResNet-50 (224)": (0.997, 0.950),
        "auto-sklearn": (0.984, 0.878),
        "AutoKeras": (0.998, 0.961),
        "Google AutoML Vision": (0.998, 0.966),
    },
}
TARGETS = {"pneumoniamnist": {"auroc": 0.975, "accuracy": 0.90}, "bloodmnist": {"accuracy": 0.966}}
SPACES = {"pneumoniamnist": "spaces/cxr.yaml", "bloodmnist": "spaces/blood.yaml"}
QUICK_SETS = ["search.n_trials=2", "epochs=1", "search.scheduler.max_t=1", "backbone=resnet18", "ensemble.top_k=2",
              "search.time_budget_s=null"]


def shared_dir() -> Path:
    return Path(os.environ.get("MEDSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))


@contextlib.contextmanager
def one_ray():
    """One local Ray for every sweep this script runs: each ``search.run`` joins it through ``RAY_ADDRESS``
    instead of starting and stopping its own (about 5 s a sweep, most of a quick mode's sweep)."""
    import logging

    import ray

    ctx = ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
                   logging_level=logging.ERROR, log_to_driver=False)
    before = os.environ.get("RAY_ADDRESS")
    os.environ["RAY_ADDRESS"] = ctx.address_info["gcs_address"]
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("RAY_ADDRESS", None)
        else:
            os.environ["RAY_ADDRESS"] = before
        ray.shutdown()


def subsample(src: Path, dst: Path, fraction: float, seed: int = 0) -> None:
    """A stratified ``fraction`` of every split of a MedMNIST npz, same layout (for the quick mode)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    with np.load(src) as z:
        for split in ("train", "val", "test"):
            y = z[f"{split}_labels"]
            keep = []
            for c in np.unique(y[:, 0]):
                idx = np.flatnonzero(y[:, 0] == c)
                keep.append(rng.choice(idx, size=max(2, int(round(len(idx) * fraction))), replace=False))
            keep = np.sort(np.concatenate(keep))
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = z[f"{split}_images"][keep], y[keep]
    dst.parent.mkdir(parents=True, exist_ok=True)
    np.savez(dst, **arrays)


def run_space(dataset: str, *, data_root: Path, out_dir: Path, quick: bool, extra_sets: list[str], log: Path) -> dict:
    """One sweep + ensemble through the CLI; returns wall time and the ensemble's metrics."""
    sets = [f"data.root={data_root}"] + (QUICK_SETS if quick else []) + extra_sets
    cmd = [sys.executable, "-m", "search.run", SPACES[dataset], "--out", str(out_dir)] + (["--no-report"] if quick else [])
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise SystemExit(f"bench/quality.py: {dataset}: search.run exited {proc.returncode}; log {log}:\n{tail}")
    run_dir = next(p for p in out_dir.iterdir() if (p / "ensemble" / "metrics.json").is_file())
    metrics = json.loads((run_dir / "ensemble" / "metrics.json").read_text())
    import pandas as pd

    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    counts = board["status"].value_counts().to_dict()
    trial_epochs = int(board["epochs"].fillna(0).sum())
    return {"wall_s": round(wall, 1), "run_dir": str(run_dir), "metrics": metrics, "status_counts": counts,
            "trial_epochs": trial_epochs, "command": "python " + " ".join(cmd[1:]), "log": str(log),
            "trials_on_test": trials_on_test(board)}


def trials_on_test(board) -> dict:
    """Diagnosis only, read after every choice is made: each trial's test figures from its stored predictions.

    The best of them is the ceiling any choice on validation could have reached with these trials; the rank
    correlation says whether validation ranks the trials as the test split would.
    """
    import pandas as pd
    from sklearn.metrics import accuracy_score, roc_auc_score

    rows = []
    for _, r in board.iterrows():
        if not (isinstance(r.get("predictions_val"), str) and isinstance(r.get("predictions_test"), str)):
            continue
        got = {}
        for split in ("val", "test"):
            f = pd.read_parquet(r[f"predictions_{split}"])
            prob = f[[c for c in f.columns if c.startswith("prob_")]].to_numpy()
            y = f["label"].to_numpy()
            got[f"{split}_accuracy"] = float(accuracy_score(y, prob.argmax(1)))
            try:
                got[f"{split}_auroc"] = float(roc_auc_score(y, prob[:, 1]) if prob.shape[1] == 2
                                              else roc_auc_score(y, prob, multi_class="ovr"))
            except ValueError:  # a split with one class
                got[f"{split}_auroc"] = float("nan")
        rows.append(got)
    if not rows:
        return {}
    t = pd.DataFrame(rows)
    return {"trials": len(t), "best_test_auroc": round(float(t["test_auroc"].max()), 4),
            "best_test_accuracy": round(float(t["test_accuracy"].max()), 4),
            "spearman_val_test_auroc": round(float(t["val_auroc"].corr(t["test_auroc"], method="spearman")), 3)}


def summarise(dataset: str, res: dict) -> dict:
    m = res["metrics"]
    row = {"dataset": dataset, "wall_s": res["wall_s"], "trials": res["status_counts"], "trial_epochs": res["trial_epochs"],
           "trials_on_test": res.get("trials_on_test", {})}
    for who in ("ensemble", "best_single"):
        for k in ("auroc", "accuracy", "ece", "auroc_ci95", "threshold"):
            if f"test.{who}.{k}" in m:
                row[f"{who}_{k}"] = m[f"test.{who}.{k}"]
        for k in ("accuracy", "balanced_accuracy"):  # binary: deciding at the threshold chosen on validation
            if f"test.{who}.at_threshold.{k}" in m:
                row[f"{who}_{k}_at_threshold"] = m[f"test.{who}.at_threshold.{k}"]
    # A binary bundle predicts at its validation-chosen threshold, so that is the accuracy a user gets.
    got = {k: row.get(f"ensemble_{k}_at_threshold", row.get(f"ensemble_{k}")) for k in ("auroc", "accuracy")}
    got["auroc"] = row.get("ensemble_auroc")
    row["targets"] = {k: {"target": v, "got": got[k], "met": got[k] is not None and got[k] >= v}
                      for k, v in TARGETS[dataset].items()}
    return row


def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ds = r["dataset"]
        out.append(f"\n{ds}: sweep + ensemble {r['wall_s']:.0f} s, trials {r['trials']}, {r['trial_epochs']} trial-epochs")
        out.append(f"  {'method':<28} {'test AUROC':>10} {'test acc':>9}   acc at the validation-chosen threshold")
        for who, label in (("ensemble", "medsweep ensemble"), ("best_single", "medsweep best single trial")):
            at = r.get(f"{who}_accuracy_at_threshold")
            at_text = f"   {at:.4f} (threshold {r[who + '_threshold']:.3f})" if at is not None else "   -"
            out.append(f"  {label:<28} {r.get(who + '_auroc', float('nan')):>10.4f} "
                       f"{r.get(who + '_accuracy', float('nan')):>9.4f}{at_text}")
        for name, (auc, acc) in PUBLISHED[ds].items():
            out.append(f"  {name:<28} {auc:>10.3f} {acc:>9.3f}")
        tt = r.get("trials_on_test") or {}
        if tt:
            out.append(f"  diagnosis (after the fact): best test AUROC of any of {tt['trials']} trials {tt['best_test_auroc']:.4f}, "
                       f"best test accuracy {tt['best_test_accuracy']:.4f} (at argmax); val/test Spearman {tt['spearman_val_test_auroc']}")
        for k, t in r["targets"].items():
            gap = (t["got"] - t["target"]) if t["got"] is not None else float("nan")
            out.append(f"  target {k} >= {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['got']:.4f}, gap {gap:+.4f})")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 %% of each file, 2 one-epoch trials (for CI)")
    parser.add_argument("--datasets", default="pneumoniamnist,bloodmnist")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra search.run --set (both spaces)")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality.json"))
    args = parser.parse_args(argv)

    datasets = [d for d in args.datasets.split(",") if d]
    for d in datasets:
        if d not in SPACES:
            parser.error(f"--datasets: unknown {d!r}; choose from {', '.join(SPACES)}")
        if not (shared_dir() / f"{d}.npz").is_file():
            print(f"bench/quality.py: skipped: {shared_dir() / f'{d}.npz'} not found (set MEDSWEEP_DATA_DIR)")
            return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medsweep-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, raw = [], {}
    with one_ray():
        for d in datasets:
            root = shared_dir()
            if args.quick:
                root = work / "data"
                subsample(shared_dir() / f"{d}.npz", root / f"{d}.npz", 0.1)
            res = run_space(d, data_root=root, out_dir=work / d, quick=args.quick, extra_sets=args.sets, log=work / f"{d}.log")
            raw[d] = res
            rows.append(summarise(d, res))
    print(table(rows))
    result = {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "rows": rows,
        "runs": {d: {k: v for k, v in r.items() if k != "metrics"} for d, r in raw.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
