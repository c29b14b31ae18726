"""A multi-label run folder made without Ray: two standalone trials, a leaderboard and a space.yaml in the
shape the sweep writes; build, load, and reproduce the stored test probabilities from the cached images."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from .._images import write_multilabel_csv

from ensemble import build_ensemble, load


def write_multilabel(root: Path, n: int = 64) -> dict:
    return write_multilabel_csv(root, n=n, seed=3, noise=60, effusion_signal=120, uncertain_every=9)


def make_run(run: Path, data: dict, configs: list[dict]) -> Path:
    """Train each config standalone into ``run/trial_<id>/`` and write the sweep's leaderboard and space.yaml."""
    from trainables import train

    rows = []
    for i, cfg in enumerate(configs):
        tid = f"t{i}"
        out = run / f"trial_{tid}"
        last = train({**cfg, "data": data, "_out_dir": str(out)})
        rows.append({
            "trial_id": tid, "status": "finished", "epochs": cfg["epochs"], "max_epochs": cfg["epochs"],
            "metric": "val_auroc", "best": float(last["best_score"]), "path": str(out),
            "checkpoint": str(out / "checkpoint"),
            "predictions_val": str(out / "checkpoint" / "predictions_val.parquet"),
            "predictions_test": str(out / "checkpoint" / "predictions_test.parquet"),
            **{f"config/{k}": v for k, v in cfg.items()},
        })
    pd.DataFrame(rows).sort_values("best", ascending=False).to_parquet(run / "leaderboard.parquet", index=False)
    space = {"name": run.name, "data": data, "search": {"metric": "val_auroc", "mode": "max"},
             "ensemble": {"top_k": len(configs), "n_folds": 2, "combiners": ["mean", "logistic", "greedy"]}}
    (run / "space.yaml").write_text(yaml.safe_dump(space))
    return run


def test_a_multilabel_ensemble_round_trip(tmp_path):
    from trainables import DataConfig, load_dataset

    data = write_multilabel(tmp_path)
    base = {"backbone": "test_resnet", "epochs": 2, "image_size": 32, "threads": 1, "batch_size": 8, "eval_batch_size": 64}
    run = make_run(tmp_path / "run", data, [{**base, "lr": 3e-3, "seed": 0}, {**base, "lr": 1e-2, "seed": 1}])
    result = build_ensemble(run, n_boot=50, echo=None)
    metrics = result.metrics
    for key in ("test.ensemble.auroc", "test.ensemble.auprc", "test.ensemble.ece", "test.ensemble.sensitivity.effusion",
                "test.best_single.auroc", "test.members.t1.auroc", "val_cv.ensemble.auroc"):
        assert key in metrics, key
    assert all(m is None or not (isinstance(m, float) and math.isnan(m)) for m in metrics.values())
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["task"] == "multi-label" and [m["trial_id"] for m in manifest["members"]][0] == result.summary.best_single

    # The bundle, given the cached test images, gives back the probabilities stored at build time.
    ds = load_dataset(DataConfig.from_dict(data), image_size=32, verbose=False)
    stored = pd.read_csv(result.path / "report" / "predictions_test.csv", dtype={"sample_id": str})
    assert {"label_effusion", "label_nodule", "prob_effusion", "prob_nodule"} <= set(stored.columns)
    where = {sid: i for i, sid in enumerate(ds.splits["test"].ids)}
    images = [np.array(ds.splits["test"].images[where[s]]) for s in stored["sample_id"]]
    bundle = load(result.path, device="cpu")
    probs = bundle.predict_proba(images)
    assert np.abs(probs - stored[["prob_effusion", "prob_nodule"]].to_numpy()).max() < 1e-5
    labels = bundle.labels_of(probs)
    for row, text in zip(probs, labels):
        assert text == ";".join(c for c, p in zip(["effusion", "nodule"], row) if p > 0.5)
