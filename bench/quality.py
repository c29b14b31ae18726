"""Test-split quality of medsweep's default sweep + ensemble against the MedMNIST v2 table.

Runs the shipped spaces exactly as a user would (``python -m search.run SPACE``), on PneumoniaMNIST
(``spaces/cxr.yaml``) and BloodMNIST (``spaces/blood.yaml``, the same search settings), then reads the
exported ensemble's metrics. Every choice (trials, members, combiner, threshold) is made on validation
data; the test split only reports.

    python bench/quality.py              # full: both spaces as shipped, 900 s each, and the baseline beside them
    python bench/quality.py --datasets pneumoniamnist-500,bloodmnist-1000 --budget 900   # cut variants (small sets)
    python bench/quality.py --quick      # CI: a stratified 10 % of each file, 2 trials of 1 epoch

Beside each medsweep sweep runs bench/baseline.py (a plain hand-wired Ray Tune + Optuna + ASHA sweep) on the
same data and budget; the table prints both with bootstrap CIs and the checks of issue 13.

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
from typing import Any, NamedTuple

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


def _sibling(name: str):
    """Another bench script as a module, loaded by path (this folder is not on sys.path: bench/ast.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"medsweep_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def zero_config_file(dataset: str, *, name: str, data_root: Path, path: Path) -> Path:
    """A space file with only ``data:`` (and a name), as a new user writes one: the shipped default sweep runs."""
    import yaml

    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"source": "medmnist", "dataset": dataset, "size": 28, "root": str(data_root)}
    path.write_text(yaml.safe_dump({"name": name.replace("#", "-"), "data": data}, sort_keys=False))
    return path


class Started(NamedTuple):
    """One ``python -m search.run`` process that ``start_cli`` started; ``wait_cli`` waits for it."""

    label: str
    cmd: list[str]
    log: Path
    fh: Any
    proc: subprocess.Popen
    t0: float


def start_cli(label: str, cmd: list[str], *, log: Path) -> Started:
    """Start ``cmd`` (a ``search.run`` command line) with its output in ``log`` and return at once."""
    fh = open(log, "w")  # noqa: SIM115 - closed in wait_cli
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True)
    return Started(label=label, cmd=cmd, log=log, fh=fh, proc=proc, t0=time.perf_counter())


def wait_cli(started: Started, *, script: str, others: Any = ()) -> float:
    """Wait for a started command and return its wall seconds.

    A command that failed raises ``SystemExit`` with the end of its log, after stopping ``others`` (the
    sweeps started beside it, which would otherwise keep running until the shared Ray goes).
    """
    rc = started.proc.wait()
    wall = time.perf_counter() - started.t0
    started.fh.close()
    if rc != 0:
        for other in others:
            if other is not started and other.proc.poll() is None:
                other.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    other.proc.wait(timeout=30)
        raise SystemExit(f"{script}: {started.label}: search.run exited {rc}; log {started.log}:\n"
                         + started.log.read_text()[-3000:])
    return wall


def start_space(dataset: str, *, data_root: Path, out_dir: Path, quick: bool, extra_sets: list[str], log: Path,
                space_file: Path | None = None) -> dict:
    """Start one sweep + ensemble through the CLI and return at once; ``finish_space`` waits for it and returns
    its wall time and the ensemble's metrics.

    ``space_file`` (a data-only file, ``--zero-config``) replaces the shipped space of ``dataset``.
    """
    sets = ([] if space_file else [f"data.root={data_root}"]) + (QUICK_SETS if quick else []) + extra_sets
    space = str(space_file) if space_file else SPACES[dataset]
    cmd = [sys.executable, "-m", "search.run", space, "--out", str(out_dir)] + (["--no-report"] if quick else [])
    for s in sets:
        cmd += ["--set", s]
    print("$", " ".join(cmd[1:]), flush=True)
    return {"dataset": dataset, "cli": start_cli(dataset, cmd, log=log), "out_dir": out_dir}


def finish_space(started: dict, *, others: Any = ()) -> dict:
    """Wait for ``start_space``'s sweep (stopping ``others`` if it failed) and read what it wrote."""
    cli, out_dir = started["cli"], started["out_dir"]
    wall = wait_cli(cli, script="bench/quality.py", others=[o["cli"] for o in others])
    run_dir = next(p for p in out_dir.iterdir() if (p / "ensemble" / "metrics.json").is_file())
    metrics = json.loads((run_dir / "ensemble" / "metrics.json").read_text())
    import pandas as pd

    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    counts = board["status"].value_counts().to_dict()
    trial_epochs = int(board["epochs"].fillna(0).sum())
    return {"wall_s": round(wall, 1), "run_dir": str(run_dir), "metrics": metrics, "status_counts": counts,
            "trial_epochs": trial_epochs, "command": "python " + " ".join(cli.cmd[1:]), "log": str(cli.log),
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
           "trials_on_test": res.get("trials_on_test", {}), "budget_used": res.get("budget_used")}
    for who in ("ensemble", "best_single"):
        for k in ("auroc", "accuracy", "ece", "auroc_ci95", "accuracy_ci95", "threshold"):
            if f"test.{who}.{k}" in m:
                row[f"{who}_{k}"] = m[f"test.{who}.{k}"]
        for k in ("accuracy", "balanced_accuracy"):  # binary: deciding at the threshold chosen on validation
            if f"test.{who}.at_threshold.{k}" in m:
                row[f"{who}_{k}_at_threshold"] = m[f"test.{who}.at_threshold.{k}"]
    row["members"] = len([k for k in m if k.startswith("test.members.") and k.endswith(".auroc")])
    dataset = dataset.split("#")[0]  # a repeat (--repeats) is checked as its dataset
    base = dataset.split("-")[0]
    # The published rows are for the full files; a cut variant is only compared with the baseline.
    got = {"auroc": row.get("ensemble_auroc"), "accuracy": row.get("ensemble_accuracy")}
    targets = TARGETS.get(dataset, {}) if dataset == base else {}
    row["targets"] = {k: {"target": v, "got": got[k], "met": got[k] is not None and got[k] >= v} for k, v in targets.items()}
    return row


def compare(row: dict, baseline: dict | None) -> dict:
    """What issue 13 checks: the ensemble against the baseline's top-3 mean, the MedMNIST ResNet-18 (28) row
    on full sets, its own best member on AUROC, and the budget used; each as {target, got, met}."""
    checks = {}
    got_auc, got_acc = row.get("ensemble_auroc"), row.get("ensemble_accuracy")
    if baseline and "top3_mean_of_metrics" in baseline:
        for k, got in (("auroc", got_auc), ("accuracy", got_acc)):
            t = baseline["top3_mean_of_metrics"][k]
            checks[f"{k} >= baseline top-3 mean"] = {"target": t, "got": got, "met": got is not None and got >= t}
    name = row["dataset"].split("#")[0]
    base = name.split("-")[0]
    if name == base and base in PUBLISHED:
        auc, acc = PUBLISHED[base]["ResNet-18 (28)"]
        checks["auroc >= ResNet-18 (28)"] = {"target": auc, "got": got_auc, "met": got_auc is not None and got_auc >= auc}
        checks["accuracy >= ResNet-18 (28)"] = {"target": acc, "got": got_acc, "met": got_acc is not None and got_acc >= acc}
    best = row.get("best_single_auroc")
    checks["auroc >= its best member"] = {"target": best, "got": got_auc, "met": None not in (got_auc, best) and got_auc >= best - 1e-12}
    used = row.get("budget_used")
    if used is not None:
        checks["budget used >= 0.90"] = {"target": 0.9, "got": used, "met": used >= 0.9}
    return checks


def spreads(rows: list[dict]) -> dict:
    """Per dataset run more than once (``--repeats``): each run's ensemble test AUROC / accuracy and their range."""
    out = {}
    for d in dict.fromkeys(r["dataset"].split("#")[0] for r in rows):
        same = [r for r in rows if r["dataset"].split("#")[0] == d]
        if len(same) < 2:
            continue
        auc = [r.get("ensemble_auroc") for r in same]
        acc = [r.get("ensemble_accuracy") for r in same]
        if None in auc or None in acc:
            continue
        out[d] = {"runs": len(same), "auroc": [round(a, 4) for a in auc], "accuracy": [round(a, 4) for a in acc],
                  "auroc_range": max(auc) - min(auc), "accuracy_range": max(acc) - min(acc)}
    return out


def _ci(v) -> str:
    return f"[{v[0]:.3f}, {v[1]:.3f}]" if isinstance(v, (list, tuple)) and len(v) == 2 else ""


def table(rows: list[dict]) -> str:
    out = []
    for r in rows:
        ds = r["dataset"]
        used = f", {r['budget_used']:.0%} of the budget" if r.get("budget_used") is not None else ""
        out.append(f"\n{ds}: sweep + ensemble {r['wall_s']:.0f} s{used}, trials {r['trials']}, {r['trial_epochs']} trial-epochs, "
                   f"{r.get('members', '?')} members")
        out.append(f"  {'method':<34} {'test AUROC':>10} {'95% CI':>16} {'acc (argmax)':>12} {'95% CI':>16}")
        for who, label in (("ensemble", "medsweep ensemble"), ("best_single", "medsweep best member")):
            out.append(f"  {label:<34} {r.get(who + '_auroc', float('nan')):>10.4f} {_ci(r.get(who + '_auroc_ci95')):>16} "
                       f"{r.get(who + '_accuracy', float('nan')):>12.4f} {_ci(r.get(who + '_accuracy_ci95')):>16}")
            at = r.get(f"{who}_accuracy_at_threshold")
            if at is not None:
                out.append(f"  {'  at the val-chosen threshold':<34} {'':>10} {'':>16} {at:>12.4f}   (threshold {r[who + '_threshold']:.3f})")
        b = r.get("baseline")
        if b and "top3_mean_of_metrics" in b:
            for key, label in (("top3_mean_of_metrics", "baseline: top-3 mean of metrics"), ("top3_mean_probs", "baseline: mean of top-3 probs")):
                v = b[key]
                out.append(f"  {label:<34} {v['auroc']:>10.4f} {_ci(v.get('auroc_ci95')):>16} {v['accuracy']:>12.4f} {_ci(v.get('accuracy_ci95')):>16}")
            out.append(f"    (baseline: {b.get('wall_s')} s, {b.get('trials_started')} trials started, "
                       f"{b.get('trials_full_length')} at full length, {b.get('trial_epochs')} trial-epochs)")
        base = ds.split("-")[0]
        if ds == base:
            for name, (auc, acc) in PUBLISHED.get(base, {}).items():
                out.append(f"  {name:<34} {auc:>10.3f} {'':>16} {acc:>12.3f}")
        tt = r.get("trials_on_test") or {}
        if tt:
            out.append(f"  diagnosis (after the fact): best test AUROC of any of {tt['trials']} trials {tt['best_test_auroc']:.4f}, "
                       f"best test accuracy {tt['best_test_accuracy']:.4f} (at argmax); val/test Spearman {tt['spearman_val_test_auroc']}")
        for k, t in r["targets"].items():
            gap = (t["got"] - t["target"]) if t["got"] is not None else float("nan")
            out.append(f"  target {k} >= {t['target']}: {'met' if t['met'] else 'MISSED'} ({t['got']:.4f}, gap {gap:+.4f})")
        for k, t in (r.get("checks") or {}).items():
            if t["target"] is None or t["got"] is None:
                continue
            out.append(f"  check {k}: {'met' if t['met'] else 'MISSED'} ({t['got']:.4f} against {t['target']:.4f})")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 %% of each file, 2 one-epoch trials (for CI)")
    parser.add_argument("--datasets", default="pneumoniamnist,bloodmnist",
                        help="MedMNIST names or cut variants NAME-N (N stratified training images, seed --seed), comma-separated")
    parser.add_argument("--budget", type=float, default=900, help="seconds for each sweep, medsweep's and the baseline's (default 900)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the variants' cut and the baseline")
    parser.add_argument("--no-baseline", action="store_true", help="run medsweep only")
    parser.add_argument("--parallel", action="store_true",
                        help="run the baseline at the same time as medsweep's sweep (each with its own Ray and half the "
                        "machine), so both see the same load; default one after the other")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra search.run --set (every space)")
    parser.add_argument("--zero-config", action="store_true",
                        help="run a space file with only `data:` (the shipped default sweep) instead of spaces/cxr.yaml / blood.yaml")
    parser.add_argument("--repeats", type=int, default=1,
                        help="run medsweep this many times on each dataset (the baseline once) and print the spread")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "quality.json"))
    args = parser.parse_args(argv)

    subsets = _sibling("_subsets")
    make_variants, parse_variant = subsets.make_variants, subsets.parse_variant

    datasets = [d for d in args.datasets.split(",") if d]
    if args.repeats < 1:
        parser.error(f"--repeats must be at least 1, got {args.repeats}")
    for d in datasets:
        base, _ = parse_variant(d)
        if base not in SPACES:
            parser.error(f"--datasets: unknown {d!r}; choose from {', '.join(SPACES)} or NAME-N variants of them")
        if not (shared_dir() / f"{base}.npz").is_file():
            print(f"bench/quality.py: skipped: {shared_dir() / f'{base}.npz'} not found (set MEDSWEEP_DATA_DIR)")
            return 0

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medsweep-quality-"))
    work.mkdir(parents=True, exist_ok=True)
    rows, raw = [], {}
    budget_sets = [] if args.quick else [f"search.time_budget_s={args.budget}"]
    runs = [d if r == 0 else f"{d}#{r + 1}" for d in datasets for r in range(args.repeats)]
    def data_root(d: str) -> Path:
        base, _ = parse_variant(d.split("#")[0])
        if args.quick:
            root = work / "data" / d
            subsample(shared_dir() / f"{base}.npz", root / f"{base}.npz", 0.1)
            return root
        v = d.split("#")[0]
        return Path(make_variants(work / "data", [v], src_dir=shared_dir(), seed=args.seed)[v])

    def start(d: str, root: Path) -> dict:
        base, _ = parse_variant(d.split("#")[0])
        space_file = zero_config_file(base, name=d, data_root=root, path=work / f"{d}.yaml") if args.zero_config else None
        # Its own experiment name: Tune stages a driver's files under <start second>/<name>, which sweeps
        # started at once (the quick mode) would otherwise share.
        named = [f"name={d.replace('#', '-')}"] if args.quick and not args.zero_config else []
        return start_space(base, data_root=root, out_dir=work / d, quick=args.quick, extra_sets=budget_sets + named + args.sets,
                           log=work / f"{d}.log", space_file=space_file)

    with one_ray():
        roots = {d: data_root(d) for d in runs} if args.quick else {}
        # The quick mode (CI) starts every sweep at once on the shared Ray and runs the baselines beside them:
        # its figures are not compared with anything. A full run times each sweep alone.
        early = {d: start(d, roots[d]) for d in runs} if args.quick else {}
        for d in runs:
            base, _ = parse_variant(d.split("#")[0])
            root = roots[d] if d in roots else data_root(d)
            repeat = "#" in d  # the seeded baseline is run once per dataset
            side = None
            if args.parallel and not args.no_baseline and not repeat:
                env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own Ray, not this one's slots
                cmd = [sys.executable, str(ROOT / "bench" / "baseline.py"), "--npz", str(root / f"{base}.npz"), "--seed", str(args.seed),
                       "--name", d, "--out", str(work / f"baseline_{d}.json")] + (["--quick"] if args.quick else ["--budget", str(args.budget)])
                side = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(work / f"baseline_{d}.log", "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - the child holds the log
            res = finish_space(early[d] if d in early else start(d, root), others=early.values())
            if not args.quick:
                res["budget_used"] = round(res["wall_s"] / args.budget, 3)
            raw[d] = res
            row = summarise(d, res)
            if side is not None:
                side.wait()
                b = json.loads((work / f"baseline_{d}.json").read_text())
                row["baseline"] = {k: b[k] for k in ("top3_mean_of_metrics", "top3_mean_probs", "wall_s", "budget_used",
                                                     "trials_started", "trials_full_length", "trial_epochs") if k in b}
            elif not args.no_baseline and not repeat:
                b = _sibling("baseline").run_baseline(root / f"{base}.npz", budget_s=None if args.quick else args.budget, seed=args.seed,
                                 quick=args.quick, name=d, n_boot=200 if args.quick else 1000)
                row["baseline"] = {k: b[k] for k in ("top3_mean_of_metrics", "top3_mean_probs", "wall_s", "budget_used",
                                                     "trials_started", "trials_full_length", "trial_epochs") if k in b}
            else:
                first = next((r for r in rows if r["dataset"] == d.split("#")[0]), None)
                if first and "baseline" in first:
                    row["baseline"] = first["baseline"]
            row["checks"] = compare(row, row.get("baseline"))
            rows.append(row)
    print(table(rows))
    spread = spreads(rows)
    for d, sp in spread.items():
        print(f"\n{d}: spread over {sp['runs']} runs: test AUROC {sp['auroc']}, range {sp['auroc_range']:.4f}; "
              f"accuracy {sp['accuracy']}, range {sp['accuracy_range']:.4f}")
    result = {
        "mode": "quick" if args.quick else "full",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
        "budget_s": None if args.quick else args.budget,
        "load_avg_1min_end": round(os.getloadavg()[0], 2),
        "rows": rows,
        "spread": spread,
        "zero_config": args.zero_config,
        "runs": {d: {k: v for k, v in r.items() if k != "metrics"} for d, r in raw.items()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str))
    print(f"\nwritten: {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
