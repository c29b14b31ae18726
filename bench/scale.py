"""Lean at scale, measured: the stacker's fit time, the disk a sweep leaves, and the time report.html takes.

    stacker  ``StackingEnsemble(task="multi-label").fit`` on synthetic validation predictions shaped like
             real ones (members x rows x 14 labels; each member a noisy, mis-scaled logit of a shared latent
             score, label prevalence 1-20 %), with the test AUROC on as many held-out rows. Target: 40 x
             12,800 x 14 in <= 60 s, time about linear in members and rows.
    disk     a sweep's run folder: what it holds in all (``du``), in its trial folders (the leaderboard's
             ``disk_mb``, the sweep's summary line), per trial, and in the bundle. Target for the default
             PneumoniaMNIST sweep: <= 0.5 GB.
    report   ``write_html_report(run_dir)`` in a fresh process (its imports counted). Target: <= 10 s.

    python bench/scale.py                           # full: 5/10/40 members x 1k/5k/12.8k rows; a sweep of
                                                    #   spaces/cxr.yaml on PneumoniaMNIST (4 trials, 2 epochs)
    python bench/scale.py --run-dir runs/cxr        # disk and report of a sweep you ran (the default one)
    python bench/scale.py --quick                   # CI: small fits, a 2-trial sweep of a tiny model

Prints the figures and writes them to bench/out/scale.json (``--out`` to change).
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_LABELS = 14


def synthetic(n_members: int, n_rows: int, n_labels: int = N_LABELS, *, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(P, y): sigmoid member outputs (members, rows, labels) and 0/1 labels (rows, labels).

    Each label has a latent score per row; the label is drawn from a logistic of it, with an intercept that
    sets the prevalence (1 % to 20 % across labels). Each member sees the latent score through its own gain,
    bias and noise level per label, the way differently trained networks disagree.
    """
    from scipy.special import expit, logit

    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.01, 0.20, n_labels)
    latent = rng.standard_normal((n_rows, n_labels))
    y = (rng.random((n_rows, n_labels)) < expit(2.0 * latent + logit(prevalence))).astype(int)
    gain = rng.uniform(0.5, 2.0, (n_members, 1, n_labels))
    noise = rng.uniform(0.5, 2.0, (n_members, 1, n_labels))
    bias = rng.normal(0.0, 1.0, (n_members, 1, n_labels)) + logit(prevalence)
    z = gain * latent + noise * rng.standard_normal((n_members, n_rows, n_labels)) + bias
    return expit(z).astype(np.float32).astype(float), y  # members write float32 probabilities


def part_stacker(sizes: list[tuple[int, int]]) -> dict:
    from ensemble import StackingEnsemble, score

    rows = []
    for m, n in sizes:
        P, y = synthetic(m, 2 * n, seed=0)
        t0 = time.perf_counter()
        ens = StackingEnsemble(task="multi-label").fit(P[:, :n], y[:n])
        fit_s = time.perf_counter() - t0
        test = score(ens.predict_proba(P[:, n:]), y[n:].astype(float), task="multi-label", metric="auroc")
        rows.append({"members": m, "rows": n, "labels": N_LABELS, "fit_s": round(fit_s, 2), "combiner": ens.combiner_,
                     "test_auroc": round(test, 5), "cv": {k: round(v, 5) for k, v in ens.cv_scores_.items()}})
        print(f"stacker: {m:>3} members x {n:>6} rows x {N_LABELS} labels: fit {fit_s:6.1f} s, chose {ens.combiner_}, "
              f"test AUROC {test:.4f}", flush=True)
    return {"rows": rows, "target": "40 x 12800 x 14 in <= 60 s"}


def _du(path: Path) -> int:
    total, seen = 0, set()
    for folder, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(folder, name))
            if (st.st_dev, st.st_ino) not in seen:  # a hard link counts once, as du counts it
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def part_disk(run_dir: Path, sweep: dict | None) -> dict:
    import pandas as pd

    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    trials_mb = float(board["disk_mb"].fillna(0).sum())
    bundle = run_dir / "ensemble"
    res = {"run_dir": str(run_dir), "trials": int(len(board)), "statuses": board["status"].value_counts().to_dict(),
           "total_mb": round(_du(run_dir) / 1e6, 1), "trials_mb": round(trials_mb, 1),
           "per_trial_mb": round(trials_mb / max(len(board), 1), 1),
           "bundle_mb": round(_du(bundle) / 1e6, 1) if bundle.is_dir() else None,
           "backbones": board["config/backbone"].value_counts().to_dict() if "config/backbone" in board else {},
           "target": "default PneumoniaMNIST sweep <= 500 MB"}
    if sweep:
        res["sweep"] = sweep
    print(f"disk: {res['trials']} trials: {res['total_mb']} MB in the run folder, {res['trials_mb']} MB in the trial folders "
          f"({res['per_trial_mb']} MB per trial), bundle {res['bundle_mb']} MB", flush=True)
    return res


def part_report(run_dir: Path, rounds: int) -> dict:
    code = ("import sys, time; sys.path.insert(0, %r); from search import write_html_report; "
            "t = time.perf_counter(); write_html_report(sys.argv[1], out=sys.argv[2]); print('SECONDS', time.perf_counter() - t)") % str(ROOT)
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            out = Path(tmp) / f"report{i}.html"
            proc = subprocess.run([sys.executable, "-c", code, str(run_dir), str(out)], capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                raise SystemExit(f"bench/scale.py: report part failed:\n{proc.stderr[-2000:]}")
            times.append(float(proc.stdout.rsplit("SECONDS", 1)[1]))
            size_kb = out.stat().st_size / 1e3
            grad_cams = out.read_text().count("(ensemble p=")
    res = {"seconds": [round(t, 2) for t in times], "median_s": round(float(np.median(times)), 2),
           "size_kb": round(size_kb, 1), "grad_cam_images": grad_cams, "target_s": 10}
    print(f"report: write_html_report {res['median_s']} s (fresh process, imports included; target <= 10 s), "
          f"{res['size_kb']} kB", flush=True)
    return res


def run_sweep(tmp: Path, quick: bool) -> tuple[Path, dict]:
    """A small sweep of spaces/cxr.yaml on PneumoniaMNIST (quick: a tenth of it, a tiny model, 2 trials x 1 epoch)."""
    shared = Path(os.environ.get("MEDSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    if not (shared / "pneumoniamnist.npz").is_file():
        raise SystemExit(f"bench/scale.py: {shared}/pneumoniamnist.npz is needed for the sweep (set MEDSWEEP_DATA_DIR), or pass --run-dir")
    root = shared
    if quick:
        import importlib.util

        spec = importlib.util.spec_from_file_location("medsweep_bench_quality", ROOT / "bench" / "quality.py")
        quality = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quality)
        quality.subsample(shared / "pneumoniamnist.npz", tmp / "data" / "pneumoniamnist.npz", 0.1)
        root = tmp / "data"
    n_trials, epochs = (2, 1) if quick else (4, 2)
    sets = [f"data.root={root}", f"data.cache_dir={tmp / 'cache'}", f"search.n_trials={n_trials}", f"epochs={epochs}",
            "search.scheduler=fifo", "search.time_budget_s=null", f"ensemble.top_k={n_trials}", "activation_rate=1.0",
            "unfreeze_epoch=0"] + (["backbone=test_resnet"] if quick else [])
    cmd = [sys.executable, "-m", "search.run", "spaces/cxr.yaml", "--out", str(tmp / "runs")] + (["--no-report"] if quick else [])
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/scale.py: search.run exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    summary = re.search(r"^\[medsweep\] sweep \S+ done in .*$", proc.stdout, re.M)
    report = re.search(r"^report: .* \(written in ([0-9.]+)s\)$", proc.stdout, re.M)
    return tmp / "runs" / "cxr", {"command": "python " + " ".join(cmd[1:]), "wall_s": round(time.perf_counter() - t0, 1),
                                  "summary_line": summary.group(0) if summary else None,
                                  "report_in_sweep_s": float(report.group(1)) if report else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small fits and a tiny sweep, for CI")
    parser.add_argument("--parts", default="stacker,disk,report", help="comma-separated: stacker, disk, report")
    parser.add_argument("--run-dir", default=None, help="a finished sweep's folder for the disk and report parts (default: run a small one)")
    parser.add_argument("--sizes", default=None, help="stacker sizes as MEMBERSxROWS,... (default 5/10/40 x 1000/5000/12800)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "scale.json"))
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in ("stacker", "disk", "report"):
            parser.error(f"--parts: unknown part {p!r}; choose from stacker, disk, report")
    if args.sizes:
        try:
            sizes = [tuple(int(v) for v in s.lower().split("x")) for s in args.sizes.split(",")]
        except ValueError:
            parser.error(f"--sizes: expected MEMBERSxROWS,..., got {args.sizes!r}")
    elif args.quick:
        sizes = [(5, 1000), (10, 1000)]
    else:
        sizes = [(m, n) for m in (5, 10, 40) for n in (1000, 5000, 12800)]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    result = {"benchmark": "scale", "mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d"),
              "machine": f"{platform.machine()} {os.cpu_count()} cpus", "load_average_at_start": load,
              "command": "python bench/scale.py" + " ".join([""] + (argv if argv is not None else sys.argv[1:]))}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "stacker" in parts:
            result["stacker"] = part_stacker(sizes)
        run_dir, sweep = (Path(args.run_dir), None) if args.run_dir else (None, None)
        if run_dir is None and ({"disk", "report"} & set(parts)):
            run_dir, sweep = run_sweep(tmp, args.quick)
        if "disk" in parts:
            result["disk"] = part_disk(run_dir, sweep)
        if "report" in parts:
            # quick: the sweep ran without a report, so this one is the run folder's first
            result["report"] = part_report(run_dir, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
