"""The plain baseline medsweep has to beat: a hand-wired Ray Tune + OptunaSearch + ASHA sweep around a timm loop.

What a user writes without medsweep (it imports none of it): resnet18 / resnet10t, learning rate
log-uniform in [1e-4, 3e-3], batch size 32 or 64, AdamW, a cosine schedule, random horizontal flips,
at most 12 epochs, ASHA (max_t 12, grace period 2, reduction factor 3), 16 trials of Optuna's TPE
(seeded), one CPU and one torch thread per trial, two trials at a time, a time budget. Each trial
reports its validation AUROC every epoch and keeps the test probabilities of its best epoch. At the
end the three trials with the best validation AUROC are scored on the test split two ways: the mean
of their probabilities, and the mean of their own metrics (the "mean of its top-3 trials" of issue 13).
AUROC is the positive class's (binary) or macro one-vs-rest (multi-class), accuracy is argmax, as the
medmnist package's ``Evaluator`` scores them; 95 % bootstrap intervals over the test split (seeded).

    python bench/baseline.py --npz ../shared/datasets/pneumoniamnist.npz           # 900 s budget
    python bench/baseline.py --npz DATA/pneumoniamnist-500/pneumoniamnist.npz --budget 300 --seed 0
    python bench/baseline.py --quick                  # CI: 10 % of PneumoniaMNIST, 2 trials x 1 epoch

Prints a table and writes bench/out/baseline_<name>.json (``--out``).
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
METRIC = "val_auroc"


def auroc(y: np.ndarray, prob: np.ndarray) -> float:
    """Binary: AUROC of the positive class; multi-class: macro one-vs-rest (medmnist's ``Evaluator``)."""
    from sklearn.metrics import roc_auc_score

    if prob.shape[1] == 2:
        return float(roc_auc_score(y, prob[:, 1]))
    return float(roc_auc_score(y, prob, multi_class="ovr", average="macro", labels=np.arange(prob.shape[1])))


def auroc_by_ranks(y: np.ndarray, prob: np.ndarray) -> float:
    """``auroc`` from average ranks (Mann-Whitney U), without scikit-learn's per-call checks: the bootstrap
    calls it thousands of times (1000 resamples of BloodMNIST's 3421 test images: about 5 s, not 100)."""
    from scipy.stats import rankdata

    cols = [1] if prob.shape[1] == 2 else range(prob.shape[1])
    ranks = rankdata(prob[:, list(cols)], axis=0)
    aucs = []
    for j, c in enumerate(cols):
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        aucs.append((ranks[pos, j].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return float(np.mean(aucs))


def accuracy(y: np.ndarray, prob: np.ndarray) -> float:
    return float(np.mean(prob.argmax(1) == y))


# ---------------------------------------------------------------------------------------------------
# The sweep as a user writes it: one function per trial, then Tuner(OptunaSearch, ASHA).
# ---------------------------------------------------------------------------------------------------


def train_trial(config: dict, data: dict) -> None:
    """One trial: train ``config["backbone"]`` and report ``val_auroc`` every epoch to Tune."""
    import timm
    import torch
    import torch.nn.functional as F
    from ray import tune

    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])

    def tensor(images):  # uint8 (N, H, W[, C]) -> float (N, C, H, W) in [-1, 1]
        x = torch.from_numpy(images).float().div(255)
        x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
        return (x - 0.5) / 0.5

    x_tr, x_va, x_te = (tensor(data[f"{s}_images"]) for s in ("train", "val", "test"))
    y_tr = torch.from_numpy(data["train_labels"][:, 0].astype(np.int64))
    y_va = data["val_labels"][:, 0]
    n_classes = int(data["n_classes"])
    model = timm.create_model(config["backbone"], pretrained=False, num_classes=n_classes, in_chans=x_tr.shape[1])
    bs, epochs = config["batch_size"], config["epochs"]
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x_tr, y_tr), batch_size=bs, shuffle=True,
        drop_last=len(y_tr) % bs == 1,  # a last batch of one image breaks BatchNorm
        generator=torch.Generator().manual_seed(config["seed"]),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs * len(loader))

    @torch.no_grad()
    def predict(x):
        model.eval()
        return torch.cat([model(x[i:i + 256]).softmax(1) for i in range(0, len(x), 256)]).numpy()

    best, best_epoch = -1.0, 0
    out = Path(config["probs_dir"]) / f"{tune.get_context().get_trial_id()}.npy"
    for epoch in range(1, epochs + 1):
        model.train()
        for x, y in loader:
            flip = torch.rand(len(x)) < 0.5  # random horizontal flip
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        score = auroc(y_va, predict(x_va))
        if score > best:  # keep the test probabilities of the best validation epoch, on disk (too big for a report)
            best, best_epoch = score, epoch
            tmp = out.with_suffix(".tmp.npy")
            np.save(tmp, predict(x_te))
            os.replace(tmp, out)
        tune.report({METRIC: score, "best_val_auroc": best, "best_epoch": best_epoch, "loss": float(loss)})


def sweep(data: dict, *, probs_dir: Path, storage: Path, seed: int, n_trials: int, max_epochs: int,
          grace_period: int, budget_s: float | None, concurrent: int):
    """Tune's results of the sweep: TPE (seeded) proposes, ASHA stops, ``concurrent`` one-CPU trials at a time."""
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {
        "backbone": tune.choice(["resnet18", "resnet10t"]),
        "lr": tune.loguniform(1e-4, 3e-3),
        "batch_size": tune.choice([32, 64]),
        "epochs": max_epochs, "seed": seed, "probs_dir": str(probs_dir),
    }
    tuner = tune.Tuner(
        tune.with_resources(tune.with_parameters(train_trial, data=data), {"cpu": 1}),
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC, mode="max",
            search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed)),
            scheduler=ASHAScheduler(time_attr="training_iteration", max_t=max_epochs, grace_period=grace_period,
                                    reduction_factor=3),
            num_samples=n_trials, max_concurrent_trials=concurrent, time_budget_s=budget_s,
            reuse_actors=True,  # the next trial runs in a worker that already imported torch and timm
        ),
        run_config=tune.RunConfig(name="baseline", storage_path=str(storage), verbose=0),
    )
    return tuner.fit()


# ---------------------------------------------------------------------------------------------------
# Bench machinery: data, scoring, bootstrap, output.
# ---------------------------------------------------------------------------------------------------


def load_npz(path: Path, *, fraction: float | None = None, seed: int = 0) -> dict:
    """The MedMNIST npz as arrays (labels (N, 1)); with ``fraction``, a stratified share of every split."""
    with np.load(path) as z:
        data = {k: z[k] for k in ("train_images", "train_labels", "val_images", "val_labels", "test_images", "test_labels")}
    if fraction is not None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("medsweep_bench__subsets", ROOT / "bench" / "_subsets.py")
        subsets = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(subsets)
        rng = np.random.default_rng(seed)
        for s in ("train", "val", "test"):
            y = data[f"{s}_labels"][:, 0]
            keep = subsets.stratified_indices(y, max(2, int(round(len(y) * fraction))), rng)
            data[f"{s}_images"], data[f"{s}_labels"] = data[f"{s}_images"][keep], data[f"{s}_labels"][keep]
    data["n_classes"] = int(max(data[f"{s}_labels"].max() for s in ("train", "val", "test")) + 1)
    return data


def bootstrap(y: np.ndarray, probs: list[np.ndarray], *, n_boot: int, seed: int) -> dict:
    """95 % percentile intervals over test resamples: of the mean-probability ensemble, and of the mean of metrics."""
    rng = np.random.default_rng(seed)
    mean = np.mean(probs, axis=0)
    got = {k: [] for k in ("mean_probs_auroc", "mean_probs_accuracy", "mean_of_metrics_auroc", "mean_of_metrics_accuracy")}
    n_classes = mean.shape[1]
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        yb = y[idx]
        got["mean_probs_accuracy"].append(accuracy(yb, mean[idx]))
        got["mean_of_metrics_accuracy"].append(np.mean([accuracy(yb, p[idx]) for p in probs]))
        if len(np.unique(yb)) < n_classes:  # AUROC needs every class in the resample
            continue
        got["mean_probs_auroc"].append(auroc_by_ranks(yb, mean[idx]))
        got["mean_of_metrics_auroc"].append(np.mean([auroc_by_ranks(yb, p[idx]) for p in probs]))
    return {k: [round(float(np.percentile(v, 2.5)), 4), round(float(np.percentile(v, 97.5)), 4)] if v else None
            for k, v in got.items()}


def summarise(results, *, probs_dir: Path, y_test: np.ndarray, max_epochs: int, top_k: int, n_boot: int, seed: int) -> dict:
    trials = []
    for r in results:
        df = r.metrics_dataframe
        tid = (r.metrics or {}).get("trial_id") or Path(r.path).name
        row = {"trial_id": tid, "error": None if r.error is None else " ".join(str(r.error).split())[:300],
               "config": {k: r.config[k] for k in ("backbone", "lr", "batch_size")} if r.config else {},
               "epochs": 0, "best_val_auroc": None, "best_epoch": None}
        if df is not None and METRIC in df:
            row["epochs"] = int(df["training_iteration"].max())
            i = int(df[METRIC].to_numpy().argmax())
            row["best_val_auroc"], row["best_epoch"] = round(float(df[METRIC].iloc[i]), 4), int(df["training_iteration"].iloc[i])
        f = probs_dir / f"{tid}.npy"
        if row["best_val_auroc"] is not None and f.is_file():
            p = np.load(f)
            row["test_auroc"], row["test_accuracy"] = round(auroc(y_test, p), 4), round(accuracy(y_test, p), 4)
            row["_probs"] = p
        trials.append(row)
    usable = sorted((t for t in trials if "_probs" in t), key=lambda t: -t["best_val_auroc"])
    top = usable[:top_k]
    out = {
        "trials_started": sum(t["epochs"] > 0 or t["error"] is not None for t in trials),  # not those the budget left unstarted
        "trials_full_length": sum(t["epochs"] == max_epochs for t in trials),
        "trials_stopped_early": sum(0 < t["epochs"] < max_epochs and t["error"] is None for t in trials),  # ASHA or the budget
        "trials_errored": sum(t["error"] is not None for t in trials),
        "trial_epochs": sum(t["epochs"] for t in trials),
    }
    if top:
        probs = [t["_probs"] for t in top]
        mean = np.mean(probs, axis=0)
        ci = bootstrap(y_test, probs, n_boot=n_boot, seed=seed)
        out["top_k"] = len(top)
        out["top3_mean_probs"] = {"auroc": round(auroc(y_test, mean), 4), "accuracy": round(accuracy(y_test, mean), 4),
                                  "auroc_ci95": ci["mean_probs_auroc"], "accuracy_ci95": ci["mean_probs_accuracy"]}
        out["top3_mean_of_metrics"] = {
            "auroc": round(float(np.mean([t["test_auroc"] for t in top])), 4),
            "accuracy": round(float(np.mean([t["test_accuracy"] for t in top])), 4),
            "auroc_ci95": ci["mean_of_metrics_auroc"], "accuracy_ci95": ci["mean_of_metrics_accuracy"]}
        out["top3"] = [{k: v for k, v in t.items() if k != "_probs"} for t in top]
    out["trials"] = sorted(({k: v for k, v in t.items() if k != "_probs"} for t in trials),
                           key=lambda t: -(t["best_val_auroc"] or -1))
    return out


def table(res: dict) -> str:
    lines = [f"baseline {res['name']}: {res['wall_s']:.0f} s of a {res['budget_s']:g} s budget; "
             f"{res['trials_started']} trials ({res['trials_full_length']} full length, {res['trials_stopped_early']} stopped "
             f"early, {res['trials_errored']} errored), {res['trial_epochs']} trial-epochs"]
    if "top3" not in res:
        return "\n".join(lines + ["  no trial reported a validation AUROC"])
    lines.append(f"  {'':<40} {'test AUROC':>10} {'95 % CI':>17} {'test acc':>9} {'95 % CI':>17}")

    def row(label, m):
        ci = lambda v: f"[{v[0]:.3f}, {v[1]:.3f}]" if v else "-"  # noqa: E731
        return f"  {label:<40} {m['auroc']:>10.4f} {ci(m.get('auroc_ci95')):>17} {m['accuracy']:>9.4f} {ci(m.get('accuracy_ci95')):>17}"

    k = res["top_k"]
    lines.append(row(f"top-{k} mean of probabilities", res["top3_mean_probs"]))
    lines.append(row(f"top-{k} mean of metrics", res["top3_mean_of_metrics"]))
    for t in res["top3"]:
        c = t["config"]
        label = f"  {c['backbone']} lr {c['lr']:.1e} bs {c['batch_size']} ep {t['best_epoch']}/{t['epochs']}"
        lines.append(row(label, {"auroc": t["test_auroc"], "accuracy": t["test_accuracy"]}) + f"   val {t['best_val_auroc']:.4f}")
    return "\n".join(lines)


def default_name(npz: Path) -> str:
    """``pneumoniamnist``, or the variant folder's name for ``<root>/pneumoniamnist-500/pneumoniamnist.npz``."""
    parent = npz.resolve().parent.name
    return parent if parent.startswith(npz.stem + "-") else npz.stem


def run_baseline(npz: str | Path, *, budget_s: float | None = 900, seed: int = 0, quick: bool = False,
                 storage: str | Path | None = None, n_trials: int = 16, max_epochs: int = 12, grace_period: int = 2,
                 concurrent: int = 2, n_boot: int = 1000, name: str | None = None) -> dict:
    """Run the baseline sweep on ``npz`` and score its top-3 trials on the test split; returns the figures.

    Joins the Ray at ``RAY_ADDRESS`` when one is set (as bench/quality.py does), else starts a local one.

    Example:
        >>> res = run_baseline("../shared/datasets/pneumoniamnist.npz", budget_s=300, seed=0)
        >>> res["top3_mean_probs"]["auroc"], res["top3_mean_of_metrics"]["auroc"]
    """
    import ray

    npz = Path(npz)
    if quick:
        n_trials, max_epochs, grace_period = 2, 1, 1
    data = load_npz(npz, fraction=0.1 if quick else None, seed=seed)
    work = Path(storage) if storage else Path(tempfile.mkdtemp(prefix="medsweep-baseline-"))
    probs_dir = work / "probs"
    probs_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    started = not ray.is_initialized()
    if started:
        address = os.environ.get("RAY_ADDRESS") or "local"
        kwargs = {"num_cpus": concurrent} if address == "local" else {}
        ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR, **kwargs)
    load_before = os.getloadavg()
    try:
        t0 = time.perf_counter()
        results = sweep(data, probs_dir=probs_dir, storage=work, seed=seed, n_trials=n_trials, max_epochs=max_epochs,
                        grace_period=grace_period, budget_s=budget_s, concurrent=concurrent)
        wall = time.perf_counter() - t0
    finally:
        if started:
            ray.shutdown()
    res = {"name": name or default_name(npz), "npz": str(npz.resolve()), "mode": "quick" if quick else "full", "seed": seed,
           "sizes": {s: int(len(data[f"{s}_labels"])) for s in ("train", "val", "test")}, "n_classes": data["n_classes"],
           "sweep": {"n_trials": n_trials, "max_epochs": max_epochs, "grace_period": grace_period, "reduction_factor": 3,
                     "concurrent": concurrent, "backbones": ["resnet18", "resnet10t"], "lr": [1e-4, 3e-3],
                     "batch_size": [32, 64]},
           "budget_s": budget_s, "wall_s": round(wall, 1),
           "budget_used": round(wall / budget_s, 3) if budget_s else None}
    res.update(summarise(results, probs_dir=probs_dir, y_test=data["test_labels"][:, 0], max_epochs=max_epochs,
                         top_k=3, n_boot=n_boot, seed=seed))
    res["load_avg_1min"] = {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)}
    res["date"] = time.strftime("%Y-%m-%d %H:%M")
    res["machine"] = f"{platform.machine()}, {os.cpu_count()} CPU cores"
    if not storage:
        shutil.rmtree(work, ignore_errors=True)
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--npz", default=None, help="a MedMNIST npz (default: ../shared/datasets/pneumoniamnist.npz)")
    parser.add_argument("--budget", type=float, default=900, help="time budget of the sweep in seconds (default 900)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the sampler, torch and the data order")
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--concurrent", type=int, default=2, help="trials at a time, one CPU each (default 2)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples of the test split")
    parser.add_argument("--storage", default=None, help="keep Tune's folder and the probabilities here (default: a temporary folder)")
    parser.add_argument("--name", default=None, help="names the output (default: the npz's dataset or variant folder)")
    parser.add_argument("--quick", action="store_true", help="10 %% of every split, 2 trials x 1 epoch (for CI)")
    parser.add_argument("--out", default=None, help="the JSON (default bench/out/baseline_<name>.json)")
    args = parser.parse_args(argv)

    shared = Path(os.environ.get("MEDSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    npz = Path(args.npz) if args.npz else shared / "pneumoniamnist.npz"
    if not npz.is_file():
        if args.npz:
            parser.error(f"--npz: {npz} not found")
        print(f"bench/baseline.py: skipped: {npz} not found (set MEDSWEEP_DATA_DIR or pass --npz)")
        return 0
    if args.budget <= 0 or args.trials < 1 or args.concurrent < 1:
        parser.error("--budget, --trials and --concurrent must be positive")
    res = run_baseline(npz, budget_s=args.budget, seed=args.seed, quick=args.quick, storage=args.storage, n_trials=args.trials,
                       concurrent=args.concurrent, n_boot=args.n_boot, name=args.name)
    res["command"] = "python bench/baseline.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(table(res))
    out = Path(args.out or ROOT / "bench" / "out" / f"baseline_{res['name']}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"\nwritten: {out}")
    return 0 if "top3" in res else 1


if __name__ == "__main__":
    raise SystemExit(main())
