"""How much compute the default search (Optuna TPE + ASHA) saves against random search, on one space.

The same space and trial count searched three ways, one after the other on the same machine (``--quick``
starts the three at once):

    tpe_asha       Optuna TPE sampler + ASHA early stopping (medsweep's default)
    random_asha    random sampler + ASHA
    random_full    random sampler, every trial runs all its epochs (FIFO)

For each, the best validation metric against cumulative trial-epochs (every epoch any trial ran, in
the order they were reported), and the share: the trial-epochs a way needs to reach random_full's final
best, divided by the trial-epochs random_full itself needed to reach it (not by all it ran: trials after
its best are wasted for random search too). Target: at most 40 %. Each seed (``--seeds``, the sampler's
and the training's) is one repeat of all three ways; the summary gives the share's mean and range.

    python bench/search_efficiency.py            # full: spaces/cxr.yaml's space and 14 trials, at most 4 epochs
                                                 # each (6 in the shipped file), no time budget, seeds 0 1 2
    python bench/search_efficiency.py --quick    # CI: 10 % of PneumoniaMNIST, 3 trials x 2 epochs, seed 0

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
# The shipped default sizes trials from a time budget; this bench compares the ways at one trial count instead
# (14 trials of at most 4 epochs, ASHA grace 1), so every way gets the same trials to spend, not the same seconds.
FULL_SETS = ["epochs=4", "search.scheduler.max_t=4", "search.scheduler.grace_period=1", "search.n_trials=14",
             "search.time_budget_s=null"]
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


def start_way(name: str, sets: list[str], *, space: str, data_root: Path | None, out_dir: Path, log: Path):
    """Start one way's sweep (``python -m search.run``); ``finish_way`` waits for it and returns its wall seconds."""
    cmd = [sys.executable, "-m", "search.run", space, "--out", str(out_dir), "--no-ensemble", "--no-report",
           "--set", "search.time_budget_s=null"]
    if data_root is not None:
        cmd += ["--set", f"data.root={data_root}"]
    for s in sets:
        cmd += ["--set", s]
    print(f"[{name}] $ python {' '.join(cmd[1:])}", flush=True)
    return _quality.start_cli(name, cmd, log=log)


def finish_way(started, *, others=()) -> float:
    """The way's wall seconds; a way that failed stops ``others`` (started beside it) and raises."""
    return _quality.wait_cli(started, script="bench/search_efficiency.py", others=others)


def plot(curves: dict[int, dict[str, list[tuple[int, float]]]], metric: str, path: Path) -> None:
    """Best-so-far against trial-epochs: one colour per way, one line per seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    styles = {"tpe_asha": ("-", 3.0, "C0"), "random_asha": ("--", 2.0, "C1"), "random_full": (":", 2.0, "C2")}  # curves can coincide
    every = [pts for by_way in curves.values() for pts in by_way.values()]
    for i, by_way in enumerate(curves.values()):
        for name, pts in by_way.items():
            if pts:
                ls, lw, colour = styles.get(name, ("-", 1.5, None))
                ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", label=name if i == 0 else None,
                        linestyle=ls, linewidth=lw, color=colour, alpha=1.0 if len(curves) == 1 else 0.7)
    ax.set_xlabel("cumulative trial-epochs")
    ax.set_ylabel(f"best {metric} so far" + (f" ({len(curves)} seeds)" if len(curves) > 1 else ""))
    finals = [pts[-1][1] for pts in every if pts]
    if finals:
        lo = min(p[1] for pts in every for p in pts[len(pts) // 4:]) if all(every) else min(finals)
        ax.set_ylim(max(0.0, lo - 0.01), min(1.0, max(finals) + 0.005))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def score_seed(curves: dict[str, list[tuple[int, float]]], walls: dict[str, float], mode: str) -> list[dict]:
    """One seed's row per way: trial-epochs, final best, and the trial-epochs to reach random_full's best.

    ``share_to_reach_random_full_best`` divides by the trial-epochs random_full needed to reach its own best
    (so random_full's share is 1); ``share_of_random_full_total`` divides by all random_full ran.
    """
    ref = curves.get("random_full") or []
    ref_best = ref[-1][1] if ref else None
    ref_to_best = epochs_to_reach(ref, ref_best, mode) if ref else None
    rows = []
    for name, pts in curves.items():
        row = {"way": name, "wall_s": round(walls[name], 1), "trial_epochs": pts[-1][0] if pts else 0,
               "final_best": pts[-1][1] if pts else None}
        if ref_best is not None:
            for tol in (0.0, 0.001):
                n = epochs_to_reach(pts, ref_best, mode, tol)
                suffix = "" if tol == 0 else f"_within_{tol}"
                row["epochs_to_reach_random_full_best" + suffix] = n
                row["share_to_reach_random_full_best" + suffix] = round(n / ref_to_best, 3) if n is not None else None
                row["share_of_random_full_total" + suffix] = round(n / ref[-1][0], 3) if n is not None else None
            row["random_full_epochs_to_its_best"] = ref_to_best
        rows.append(row)
    return rows


def summarise_seeds(per_seed: dict[int, list[dict]]) -> list[dict]:
    """Per way over the seeds: mean, min and max of each share (a seed that never reached the best counts as missing)."""
    ways = list(dict.fromkeys(r["way"] for rows in per_seed.values() for r in rows))
    out = []
    for way in ways:
        rows = [r for rows in per_seed.values() for r in rows if r["way"] == way]
        row = {"way": way, "seeds": len(rows), "trial_epochs_mean": round(sum(r["trial_epochs"] for r in rows) / len(rows), 1),
               "final_best_mean": round(sum(r["final_best"] or 0 for r in rows) / len(rows), 4),
               "wall_s_total": round(sum(r["wall_s"] for r in rows), 1)}
        for key in ("share_to_reach_random_full_best", "share_to_reach_random_full_best_within_0.001",
                    "share_of_random_full_total"):
            got = [r[key] for r in rows if r.get(key) is not None]
            row[key] = {"mean": round(sum(got) / len(got), 3), "min": min(got), "max": max(got), "n": len(got)} if got else None
        out.append(row)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 %% of the data, 3 trials x 2 epochs, seed 0 (for CI)")
    parser.add_argument("--space", default="spaces/cxr.yaml")
    parser.add_argument("--set", dest="sets", action="append", default=[], help="extra --set for all three ways")
    parser.add_argument("--ways", default=",".join(WAYS))
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="one repeat of every way per seed (sampler and training seed); default 0 1 2, quick 0")
    parser.add_argument("--keep", default=None, help="keep the run folders here (default: a temporary folder)")
    parser.add_argument("--reuse", action="store_true", help="read a way's finished sweep from --keep instead of running it")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "search_efficiency.json"))
    args = parser.parse_args(argv)
    seeds = args.seeds if args.seeds is not None else ([0] if args.quick else [0, 1, 2])
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        parser.error(f"--seeds: distinct non-negative integers, got {seeds}")

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

    curves: dict[int, dict] = {}
    per_seed: dict[int, list[dict]] = {}
    with _quality.one_ray():  # every sweep joins one Ray
        for seed in seeds:
            seed_sets = [f"search.sampler.seed={seed}", f"seed={seed}"]
            curves[seed], walls = {}, {}
            started = {}
            for name in args.ways.split(","):
                # Seed 0 keeps the folder a single-seed run had, so --reuse still finds it.
                out_dir = work / name if seed == 0 else work / f"seed{seed}" / name
                label = f"{name} seed {seed}"
                out_dir.parent.mkdir(parents=True, exist_ok=True)
                if args.reuse and (out_dir / "walls.json").is_file():
                    walls[name] = json.loads((out_dir / "walls.json").read_text())["wall_s"]
                    curves[seed][name] = curve(next(p for p in out_dir.iterdir() if p.is_dir()), metric, mode)
                    print(f"[{label}] reused {out_dir}", flush=True)
                    continue
                # FIFO has no rungs: the ASHA settings of the other two ways do not apply to it.
                common = [s for s in sets if not (name == "random_full" and s.startswith("search.scheduler."))]
                # Its own experiment name: Tune stages a driver's files under the session's <start second>/<name>,
                # which sweeps started in the same second would share.
                named = [f"name={name}"] if args.quick else []
                started[name] = out_dir, start_way(label, common + seed_sets + WAYS[name] + named, space=args.space,
                                                   data_root=data_root, out_dir=out_dir, log=out_dir.parent / f"{name}.log")
                # The full run times each way alone; the quick one (CI) starts all three at once on the shared
                # Ray: the shares count each way's own trial-epochs, which do not depend on what runs beside it.
                if not args.quick:
                    walls[name] = finish_way(started[name][1])
            for name, (out_dir, handle) in started.items():
                if args.quick:
                    walls[name] = finish_way(handle, others=[h for _, h in started.values()])
                (out_dir / "walls.json").write_text(json.dumps({"wall_s": walls[name]}))
                run_dir = next(p for p in out_dir.iterdir() if p.is_dir())
                curves[seed][name] = curve(run_dir, metric, mode)
            per_seed[seed] = score_seed(curves[seed], walls, mode)
    summary = summarise_seeds(per_seed)

    for seed, rows in per_seed.items():
        ref = next((r for r in rows if r["way"] == "random_full"), {})
        print(f"\nseed {seed}: {metric} ({mode}); reference: random_full's final best {ref.get('final_best')}, "
              f"reached after {ref.get('random_full_epochs_to_its_best')} of its {ref.get('trial_epochs')} trial-epochs")
        print(f"{'way':<13} {'wall s':>7} {'trial-epochs':>12} {'final best':>10} {'epochs to ref':>13} {'share':>6} "
              f"{'share (±0.001)':>14} {'of total':>8}")
        for r in rows:
            print(f"{r['way']:<13} {r['wall_s']:>7.0f} {r['trial_epochs']:>12} {r['final_best'] or float('nan'):>10.4f} "
                  f"{str(r.get('epochs_to_reach_random_full_best')):>13} {str(r.get('share_to_reach_random_full_best')):>6} "
                  f"{str(r.get('share_to_reach_random_full_best_within_0.001')):>14} {str(r.get('share_of_random_full_total')):>8}")
    print(f"\nover seeds {' '.join(map(str, seeds))}: share = trial-epochs to reach random_full's best / random_full's own")
    print(f"{'way':<13} {'share mean':>10} {'min':>6} {'max':>6} {'reached':>8} {'of total, mean':>14} {'final best, mean':>16}")
    for r in summary:
        sh, tot = r["share_to_reach_random_full_best"], r["share_of_random_full_total"]
        if sh is None:
            print(f"{r['way']:<13} {'-':>10} {'-':>6} {'-':>6} {'0/' + str(r['seeds']):>8} {'-':>14} {r['final_best_mean']:>16.4f}")
            continue
        print(f"{r['way']:<13} {sh['mean']:>10.3f} {sh['min']:>6.3f} {sh['max']:>6.3f} {str(sh['n']) + '/' + str(r['seeds']):>8} "
              f"{tot['mean']:>14.3f} {r['final_best_mean']:>16.4f}")
    default = next((r for r in summary if r["way"] == "tpe_asha"), None)
    if default and "random_full" in args.ways.split(","):
        share = default["share_to_reach_random_full_best"]
        mean = share["mean"] if share and share["n"] == len(seeds) else None
        verdict = "met" if mean is not None and mean <= 0.40 else "MISSED"
        print(f"target: tpe_asha reaches random_full's best within <= 40 % of random_full's trial-epochs to it "
              f"(mean over seeds): {verdict} ({mean})")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    png = out.with_suffix(".png")
    plot(curves, metric, png)
    out.write_text(json.dumps({
        "mode": "quick" if args.quick else "full", "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores", "space": args.space, "sets": sets,
        "seeds": seeds, "metric": metric, "mode_": mode, "summary": summary,
        "per_seed": {str(k): v for k, v in per_seed.items()}, "curves": {str(k): v for k, v in curves.items()},
        "plot": str(png),
    }, indent=2))
    print(f"\nwritten: {out}, {png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
