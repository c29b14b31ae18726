"""The trainable on tiny generated data: outputs, checkpoint round trip, multi-label, Ray Tune."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from trainables import DEADLINE_KEY, TUNE_KEY, train
from trainables._train import BEST_WEIGHTS, LAST_WEIGHTS

from .conftest import shared_npz

TINY = {"backbone": "test_resnet", "batch_size": 8, "lr": 3e-3, "image_size": 32, "threads": 1}


def rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def test_standalone_writes_metrics_checkpoint_and_predictions(tiny_data, tmp_path):
    out = tmp_path / "run"
    last = train({**TINY, "epochs": 2, "data": tiny_data, "_out_dir": str(out)})
    metrics = rows(out / "metrics.csv")
    assert [r["epoch"] for r in metrics] == ["1", "2"]
    for key in ("train_loss", "val_loss", "val_auroc", "val_accuracy", "val_auprc", "lr", "train_images_per_s",
                "epoch_seconds", "val_sensitivity/pneumonia", "val_specificity/normal"):
        assert key in metrics[0], key
    assert float(metrics[1]["lr"]) < float(metrics[0]["lr"])  # cosine decay
    assert last["epoch"] == 2
    for split, n in (("val", 12), ("test", 12)):
        frame = pd.read_parquet(out / f"predictions_{split}.parquet")
        assert list(frame.columns) == ["sample_id", "label", "prob_normal", "prob_pneumonia"]
        assert len(frame) == n and frame["sample_id"].is_unique
        np.testing.assert_allclose(frame[["prob_normal", "prob_pneumonia"]].sum(1), 1.0, rtol=1e-5)
    assert (out / "checkpoint" / "state.pt").is_file()
    assert set(load_file(out / BEST_WEIGHTS)) == set(load_file(out / "checkpoint" / LAST_WEIGHTS))


def test_predictions_come_from_the_best_epoch(tiny_data, tmp_path):
    """The parquet files hold the best epoch's probabilities, not the last one's."""
    out = tmp_path / "run"
    train({**TINY, "epochs": 3, "data": tiny_data, "_out_dir": str(out), "select_metric": "val_accuracy"})
    metrics = rows(out / "metrics.csv")
    best = max(range(3), key=lambda i: (float(metrics[i]["val_accuracy"]), -i))
    frame = pd.read_parquet(out / "predictions_val.parquet")
    acc = (frame[["prob_normal", "prob_pneumonia"]].to_numpy().argmax(1) == frame["label"]).mean()
    assert acc == pytest.approx(float(metrics[best]["val_accuracy"]))
    assert int(metrics[-1]["best_epoch"]) == best + 1


def test_checkpoint_round_trip_continues_where_it_stopped(tiny_data, tmp_path):
    """1 epoch, stop, resume to 2 epochs == 2 epochs straight (weights, optimizer and RNG restored)."""
    straight, split_run = tmp_path / "straight", tmp_path / "split"
    base = {**TINY, "drop_rate": 0.2, "data": tiny_data}
    train({**base, "epochs": 2, "_out_dir": str(straight)})
    _train_one_then_resume(base, split_run)
    a = load_file(straight / "checkpoint" / LAST_WEIGHTS)
    b = load_file(split_run / "checkpoint" / LAST_WEIGHTS)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
    assert [r["epoch"] for r in rows(split_run / "metrics.csv")] == ["1", "2"]


def _train_one_then_resume(base: dict, out: Path) -> None:
    """Run epoch 1 of a 2-epoch schedule, crash, then resume with --resume semantics."""
    from trainables import _train as mod

    calls = {"n": 0}
    original = mod._Run._report

    def crash_after_first(self, row, epoch):
        original(self, row, epoch)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt("simulated stop after epoch 1")

    mod._Run._report = crash_after_first
    try:
        with pytest.raises(KeyboardInterrupt):
            train({**base, "epochs": 2, "_out_dir": str(out)})
    finally:
        mod._Run._report = original
    assert [r["epoch"] for r in rows(out / "metrics.csv")] == ["1"]
    train({**base, "epochs": 2, "_out_dir": str(out), "_resume": True})


def test_multilabel_with_uncertain_mask(tiny_multilabel, tmp_path):
    out = tmp_path / "ml"
    last = train({**TINY, "epochs": 2, "data": tiny_multilabel, "_out_dir": str(out)})
    assert "val_auprc" in last and "val_auroc/effusion" in last
    frame = pd.read_parquet(out / "predictions_val.parquet")
    assert list(frame.columns) == ["sample_id", "label_effusion", "label_nodule", "prob_effusion", "prob_nodule"]
    assert set(np.unique(frame[["label_effusion", "label_nodule"]])) <= {-1.0, 0.0, 1.0}
    # Sigmoid outputs: per-label probabilities, not a distribution over labels.
    assert not np.allclose(frame[["prob_effusion", "prob_nodule"]].sum(1), 1.0)


@pytest.mark.ray
def test_under_ray_tune_reports_each_epoch_and_retries_from_checkpoint(tiny_data, tmp_path, ray_local):
    """A trial that dies after epoch 1 is retried by Tune from its checkpoint and does not redo epoch 1."""
    from ray import tune

    marker = tmp_path / "crashed-once"

    def flaky(config):
        from trainables import _train as mod

        original = mod._Run._report
        if not marker.exists():

            def crash(self, row, epoch):
                original(self, row, epoch)
                marker.touch()
                raise RuntimeError("simulated node failure after epoch 1")

            mod._Run._report = crash
        try:
            return mod.train(config)
        finally:
            mod._Run._report = original

    tuner = tune.Tuner(
        flaky,
        param_space={**TINY, "epochs": 2, "data": tiny_data, TUNE_KEY: True},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray"),
            name="t",
            failure_config=tune.FailureConfig(max_failures=1),
            verbose=0,
        ),
    )
    results = tuner.fit()
    result = results[0]
    assert result.error is None
    assert result.metrics["epoch"] == 2
    # After the retry only epoch 2 runs (a redone epoch 1 would show up again). Epoch 1's own row may
    # be missing from Tune's log when the crash beats its write, so [2] is as right as [1, 2].
    assert list(result.metrics_dataframe["epoch"]) in ([1, 2], [2])
    assert marker.exists()
    assert result.checkpoint is not None
    with result.checkpoint.as_directory() as ckpt:
        assert (Path(ckpt) / BEST_WEIGHTS).is_file()
        assert (Path(ckpt) / "predictions_val.parquet").is_file()


def test_a_trial_stops_before_an_epoch_that_would_end_past_the_deadline(tiny_data, tmp_path, ray_local):
    """The sweep's deadline file ends a trial at a report, its files written; without one it runs its epochs."""
    import time

    from ray import tune

    deadline = tmp_path / "deadline.txt"
    runs = {}
    for name, seconds_left in (("late", -1.0), ("early", 3600.0)):
        deadline.write_text(f"{time.time() + seconds_left:.3f}\n")
        tuner = tune.Tuner(
            train,
            param_space={**TINY, "epochs": 4, "data": tiny_data, TUNE_KEY: True, DEADLINE_KEY: str(deadline)},
            run_config=tune.RunConfig(storage_path=str(tmp_path / "ray"), name=name, verbose=0),
        )
        runs[name] = tuner.fit()[0]
    late, early = runs["late"], runs["early"]
    assert late.error is None and early.error is None
    # Past the deadline a trial still trains its first epoch (it has no measure of an epoch before that).
    assert late.metrics["epoch"] == 1 and early.metrics["epoch"] == 4
    assert (Path(late.path) / "predictions_val.parquet").is_file() and (Path(late.path) / "model.json").is_file()


@pytest.mark.skipif(shared_npz("pneumoniamnist") is None, reason="../shared/datasets/pneumoniamnist.npz is absent")
def test_real_pneumoniamnist_two_epochs(tmp_path):
    root = shared_npz("pneumoniamnist")
    data = {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(root), "cache_dir": str(tmp_path / "cache")}
    out = tmp_path / "real"
    last = train({"backbone": "resnet18", "epochs": 2, "batch_size": 64, "lr": 1e-3, "data": data, "_out_dir": str(out)})
    assert last["best_score"] > 0.9
    val = pd.read_parquet(out / "predictions_val.parquet")
    test = pd.read_parquet(out / "predictions_test.parquet")
    assert len(val) == 524 and len(test) == 624
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(val["label"], val["prob_pneumonia"]) == pytest.approx(last["best_score"], abs=1e-4)


def test_fold_refits_cover_train_and_val_once_with_last_epoch_predictions(tiny_data, tmp_path):
    """cv_folds: each fold's held-out predictions are the last epoch's; together they cover train+val once."""
    from trainables import DataConfig, load_dataset

    ds = load_dataset(DataConfig.from_dict(tiny_data), image_size=32, verbose=False)
    pool = set(ds.splits["train"].ids) | set(ds.splits["val"].ids)
    seen: list[str] = []
    for fold in range(3):
        out = tmp_path / f"fold{fold}"
        train({**TINY, "epochs": 2, "cv_folds": 3, "cv_fold": fold, "data": tiny_data, "_out_dir": str(out)})
        val = pd.read_parquet(out / "predictions_val.parquet")
        test = pd.read_parquet(out / "predictions_test.parquet")
        seen += list(val["sample_id"])
        assert list(test["sample_id"]) == list(ds.splits["test"].ids)
        import json

        assert json.loads((out / "model.json").read_text())["best_epoch"] == 2  # the last, not the best
    assert sorted(seen) == sorted(pool) and len(seen) == len(pool)


@pytest.mark.parametrize("folds, fold, match", [(1, 0, "cv_folds"), (3, 3, "cv_fold"), (3, -1, "cv_fold")])
def test_bad_fold_settings_fail_with_one_line(tiny_data, tmp_path, folds, fold, match):
    from trainables import ConfigError

    with pytest.raises(ConfigError, match=match) as info:
        train({**TINY, "epochs": 1, "cv_folds": folds, "cv_fold": fold, "data": tiny_data, "_out_dir": str(tmp_path)})
    assert "\n" not in str(info.value)



@pytest.mark.parametrize("params, flips, views", [
    ({"augment": "simple"}, ["hflip"], [[], [3]]),
    ({"augment": "simple", "vflip": True}, ["hflip", "vflip"], [[], [3], [2], [3, 2]]),
    ({"augment": "simple", "tta": False}, [], [[]]),
    ({"augment": "none"}, [], [[]]),
])
def test_predictions_average_the_logits_over_the_flips_the_trial_trained_with(tiny_data, tmp_path, params, flips, views):
    """The written probabilities are softmax(mean logits over the image and its trained flips), and model.json says which."""
    from trainables import build_member, load_dataset
    from trainables._cache import DataConfig
    from trainables.artifacts import MemberSpec, normalization, read_model_json

    out = tmp_path / "run"
    train({**TINY, "epochs": 1, "data": tiny_data, "_out_dir": str(out), **params})
    info = read_model_json(out)
    assert info["tta"] == flips
    spec = MemberSpec.from_model_json(info)
    model = build_member(spec)
    model.load_state_dict(load_file(out / BEST_WEIGHTS))
    model.eval()
    # The cache holds the test split at the trial's size, in the order the predictions were written.
    test = load_dataset(DataConfig.from_dict(tiny_data), image_size=32, verbose=False).splits["test"]
    scale, shift = normalization(spec.mean, spec.std)
    x = torch.from_numpy(np.array(test.images)).permute(0, 3, 1, 2).float() * scale + shift
    with torch.inference_mode():
        expected = torch.softmax(torch.stack([model(torch.flip(x, d) if d else x) for d in views]).mean(0), 1).numpy()
        plain = torch.softmax(model(x), 1).numpy()
    frame = pd.read_parquet(out / "predictions_test.parquet")
    assert list(frame["sample_id"]) == list(test.ids)
    got = frame[["prob_normal", "prob_pneumonia"]].to_numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    if len(views) > 1:  # the views change what it predicts, or the check above would pass for the image alone too
        assert np.abs(got - plain).max() > 1e-4
