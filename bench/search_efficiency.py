"""How much compute the default search (Optuna TPE + ASHA) saves against random search, on one space.

The same space and trial count searched three ways, one after the other on the same machine:

    tpe_asha       Optuna TPE sampler + ASHA early stopping (medsweep's default)
    random_asha    random sampler + ASHA
    random_full    random sampler, every trial runs all its epochs (FIFO)

For each, the best validation metric against cumulative trial-epochs (every epoch any trial ran, in
the order they were reported), and the share of trial-epochs the default needs to reach
random_full's final best. Target: at most 40 %.

    python bench/search_efficiency.py            # full: spaces/cxr.yaml's space and 14 trials, at most 4 epochs
                                                 # each (6 in the shipped file), no time budget
    python bench/search_efficiency.py --quick    # CI: 10 % of PneumoniaMNIST, 3 trials x 2 epochs

Prints a table, writes bench/out/search_efficiency.json and a plot next to it (``--out``).
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench_module(name: str):
    """A sibling script as a module, loaded by path: bench/ on sys.path would shadow the stdlib's ``ast``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"medsweep_bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_quality = _bench_module("quality")
shared_dir, subsample = _quality.shared_dir, _quality.subsample

WAYS = {
    "tpe_asha": [],  # the space's own settings
    "random_asha": ["search.sampler.type=random"],
    "random_full": ["search.sampler.type=random", "search.scheduler=fifo"],
}
# Three sweeps one after the other: 4 epochs per trial keeps the full run near 30 minutes on 2 cores.
FULL_SETS = ["epochs=4", "search.scheduler.max_t=4"]
QUICK_SETS = ["search.n_trials=3", "epochs=2", "search.scheduler.max_t=2", "search.scheduler.reduction_factor=2",
              "backbone=resnet18"]


def curve(run_dir: Path, metric: str, mode: str) -> list[tuple[int, float]]:
    """(cumulative trial-epochs, best metric so far) after every epoch any trial reported, in time order."""
    rows = []
    for trial in sorted(p for p in run_dir.iterdir() if p.is_dir() and p.name.startswith("trial_")):
        result = trial / "result.json"
        if not result.is_file():
            continue
        for line in result.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            value = r.get(metric)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            # timestamp is whole seconds; the trial's own clock breaks ties within a second.
            rows.append((r["timestamp"], r.get("time_total_s", 0.0), float(value)))
    rows.sort()
    out, best = [], -math.inf if mode == "max" else math.inf
    for n, (_, _, v) in enumerate(rows, start=1):
        best = max(best, v) if mode == "max" else min(best, v)
        out.append((n, best))
    return out


def epochs_to_reach(points: list[tuple[int, float]], target: float, mode: str, tol: float = 0.0) -> int | None:
    for n, best in points:
        if (best >= target - tol) if mode == "max" else (best <= target + tol):
            return n
    return None


def run_way(name: str, sets: list[str], *, space: str, data_root: Path | None, out_dir: Path, log: Path) -> float:
    cmd = [sys.executable, "-m", "search.run", space, "--out", str(out_dir), "--no-ensemble", "--no-report",
           "--set", "search.time_budget_s=null"]
    if data_root is not None:
        cmd += ["--set", f"data.root={data_root}"]
    for s in sets:
        cmd += ["--set", s]
    print(f"[{name}] $ python {' '.join(cmd[1:])}", flush=True)
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench/search_efficiency.py: {name}: search.run exited {proc.returncode}; log {log}:\n"
                         + log.read_text()[-3000:])
    return time.perf_counter() - t0


def plot(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    styles = {"tpe_asha": ("-", 3.0), "random_asha": ("--", 2.0), "random_full": (":", 2.0)}  # curves can coincide
    for name, pts in curves.items():
        if pts:
            ls, lw = styles.get(name, ("-", 1.5))
            ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=name, linestyle=ls, linewidth=lw)
    ax.set_xlabel("cumulative trial-epochs")
    ax.set_ylabel(f"best {metric} so far")
    finals = [pts[-1][1] for pts in curves.values() if pts]
    if finals:
        lo = min(p[1] for pts in curves.values() for p in pts[len(pts) // 4:]) if all(curves.values()) else min(finals)
        ax.set_ylim(max(0.0, lo - 0.01), min(1.0, max(finals) + 0.005))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 %% of the data, 3 trials x 2 epochs (for CI)")
    parser.add_argument("--space", default="spaces/cxr.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for all three ways")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="read a way's finished sweep from --keep instead of running it")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "search_efficiency.json"))
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from search import load_space

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="medsweep-efficiency-"))
    work.mkdir(parents=True, exist_ok=True)
    sets = list(args.sets)
    src = shared_dir() / "pneumoniamnist.npz"
    if not src.is_file():
        print(f"bench/search_efficiency.py: skipped: {src} not found (set MEDSWEEP_DATA_DIR)")
        return 0
    data_root = shared_dir()
    if not args.quick:
        sets = FULL_SETS + sets
    if args.quick:
        data_root = work / "data"
        subsample(src, data_root / "pneumoniamnist.npz", 0.1)
        sets = QUICK_SETS + sets
    space = load_space(ROOT / args.space, overrides=sets)
    metric, mode = space.search.metric, space.search.mode

    curves, walls = {}, {}
    with _quality.one_ray():  # the three sweeps join one Ray
        for name in args.ways.split(","):
            out_dir = work / name
            if args.reuse and (out_dir / "walls.json").is_file():
                walls[name] = json.loads((out_dir / "walls.json").read_text())["wall_s"]
                curves[name] = curve(next(p for p in out_dir.iterdir() if p.is_dir()), metric, mode)
                print(f"[{name}] reused {out_dir}", flush=True)
                continue
            # FIFO has no rungs: the ASHA settings of the other two ways do not apply to it.
            common = [s for s in sets if not (name == "random_full" and s.startswith("search.scheduler."))]
            walls[name] = run_way(name, common + WAYS[name], space=args.space, data_root=data_root, out_dir=out_dir,
                                  log=work / f"{name}.log")
            (out_dir / "walls.json").write_text(json.dumps({"wall_s": walls[name]}))
            run_dir = next(p for p in out_dir.iterdir() if p.is_dir())
            curves[name] = curve(run_dir, metric, mode)

    ref = curves.get("random_full") or []
    ref_best = ref[-1][1] if ref else None
    rows = []
    for name, pts in curves.items():
        row = {"way": name, "wall_s": round(walls[name], 1), "trial_epochs": pts[-1][0] if pts else 0,
               "final_best": pts[-1][1] if pts else None}
        if ref_best is not None:
            for tol in (0.0, 0.001):
                n = epochs_to_reach(pts, ref_best, mode, tol)
                key = "epochs_to_reach_random_full_best" + ("" if tol == 0 else f"_within_{tol}")
                row[key] = n
                row[key.replace("epochs", "share")] = round(n / ref[-1][0], 3) if n is not None else None
        rows.append(row)

    print(f"\n{metric} ({mode}); reference: random_full's final best {ref_best}")
    print(f"{'way':<13} {'wall s':>7} {'trial-epochs':>12} {'final best':>10} {'epochs to ref':>13} {'share':>6} "
          f"{'share (±0.001)':>14}")
    for r in rows:
        share = r.get("share_to_reach_random_full_best")
        share_tol = r.get("share_to_reach_random_full_best_within_0.001")
        print(f"{r['way']:<13} {r['wall_s']:>7.0f} {r['trial_epochs']:>12} {r['final_best'] or float('nan'):>10.4f} "
              f"{str(r.get('epochs_to_reach_random_full_best')):>13} {str(share):>6} {str(share_tol):>14}")
    default = next((r for r in rows if r["way"] == "tpe_asha"), None)
    if default and ref_best is not None:
        share = default.get("share_to_reach_random_full_best")
        verdict = "met" if share is not None and share <= 0.40 else "MISSED"
        print(f"target: tpe_asha reaches random_full's best within <= 40 % of its trial-epochs: {verdict} ({share})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(curves, metric, png)
    out.write_text(json.dumps({
        "mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "space": args.space, "sets": sets,
        "metric": metric, "mode_": mode, "rows": rows, "curves": curves, "plot": str(png),
    }, indent=2))
    print(f"\nwritten: {out}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
