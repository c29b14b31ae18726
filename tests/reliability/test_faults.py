"""Trials that fail: a NaN loss stops its trial at once as ``diverged``, a trial that raises is recorded as
``errored`` with its reason, the sweep goes on; each trial keeps only its last checkpoint (the best weights
in it, the resume state dropped once the trial ended), and the leaderboard says how much disk the sweep takes."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest

from search.run import main

from .conftest import SMOKE

pytestmark = pytest.mark.ray

BAD_WEIGHTS = "/nonexistent/weights.safetensors"
# Random sampler, seed 0, three trials: (lr 1e30) diverges, (lr 1e30, missing weights) raises before
# training, (lr 0.003) finishes.
FAULTS = [
    "--set", "space.lr={type: categorical, choices: [0.003, 1.0e+30]}",
    "--set", "space.batch_size={type: categorical, choices: [8]}",
    "--set", f"space.pretrained_path={{type: categorical, choices: [null, {BAD_WEIGHTS}]}}",
    "--set", "search.n_trials=3",
    "--set", "search.scheduler=fifo",
    "--set", "epochs=3",
]


@pytest.fixture(scope="module")
def ray_module():
    import ray

    if ray.is_initialized():
        yield ray
        return
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def faulty(images, ray_module, tmp_path_factory):
    """(run folder, exit status, stdout, leaderboard) of a sweep with one good, one diverging and one raising trial."""
    out = tmp_path_factory.mktemp("faults")
    argv = [str(SMOKE), "--set", f"data.root={images}", "--set", f"data.cache_dir={images.parent / 'cache'}",
            *FAULTS, "--out", str(out), "--no-ensemble"]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(io.StringIO()):
        rc = main(argv)
    run_dir = out / "smoke"
    return run_dir, rc, buf.getvalue(), pd.read_parquet(run_dir / "leaderboard.parquet")


def test_the_sweep_goes_on_past_failing_trials(faulty):
    _, rc, stdout, board = faulty
    assert rc == 0, stdout
    assert sorted(board["status"]) == ["diverged", "errored", "finished"], board[["trial_id", "status", "error"]]
    assert board["status"].iloc[0] == "finished"  # failures rank last


def test_a_nan_loss_stops_its_trial_at_once_as_diverged(faulty):
    run_dir, _, stdout, board = faulty
    row = board[board["status"] == "diverged"].iloc[0]
    assert row["config/lr"] == 1e30 and row["epochs"] == 0, row
    assert "TrainingDiverged" in row["error"] and "training diverged; lower `lr`" in row["error"]
    # FailureConfig's retry does not train it again: it reads the first attempt's verdict.
    assert "not retried" in row["error"]
    assert (run_dir / f"trial_{row['trial_id']}" / "diverged.txt").is_file()
    assert not list((run_dir / f"trial_{row['trial_id']}").glob("checkpoint_*"))
    assert f"{row['trial_id']} diverged after 0 epochs: TrainingDiverged: loss is" in stdout


def test_a_trial_that_raises_is_errored_with_its_reason(faulty):
    _, _, stdout, board = faulty
    row = board[board["status"] == "errored"].iloc[0]
    assert row["config/pretrained_path"] == BAD_WEIGHTS
    assert "does not exist" in row["error"] and "\n" not in row["error"]
    assert f"{row['trial_id']} errored after 0 epochs: " in stdout


def test_only_the_last_checkpoint_is_kept_with_the_best_weights_and_no_resume_state(faulty):
    import json

    from safetensors.torch import load_file

    run_dir, _, _, board = faulty
    row = board[board["status"] == "finished"].iloc[0]
    trial = run_dir / f"trial_{row['trial_id']}"
    kept = sorted(p.name for p in trial.glob("checkpoint_*"))
    history = pd.read_csv(trial / "progress.csv")
    assert len(history) == 3 and kept == ["checkpoint_000002"], kept  # the last epoch's: it carries the best along
    ckpt = trial / kept[0]
    assert Path(row["checkpoint"]) == ckpt
    # The trial ended: no optimizer state and no latest weights (search.keep: best), its best weights stay.
    assert sorted(p.name for p in ckpt.iterdir()) == ["best.safetensors", "model.json", "predictions_test.parquet", "predictions_val.parquet"]
    best_epochs = set(history.loc[history["val_auroc"] == history["val_auroc"].max(), "epoch"])
    assert json.loads((ckpt / "model.json").read_text())["best_epoch"] in best_epochs
    assert load_file(ckpt / "best.safetensors")


def test_the_leaderboard_reports_the_disk_a_sweep_uses(faulty):
    run_dir, _, stdout, board = faulty
    assert (board["disk_mb"] > 0).all()
    total = sum(f.stat().st_size for t in run_dir.glob("trial_*") for f in t.rglob("*") if f.is_file()) / 1e6
    assert board["disk_mb"].sum() == pytest.approx(total, rel=0.05)
    assert "MB on disk" in stdout


@pytest.mark.parametrize(
    "error, status",
    [
        ("TrainingDiverged: loss is nan at epoch 2: training diverged; lower `lr` or set `clip_grad_norm`", "diverged"),
        ("ray.exceptions.RayTaskError(TrainingDiverged): loss is inf at epoch 1", "diverged"),
        ("OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "errored"),
        ("trial.yaml: pretrained_path: /x.safetensors does not exist; set pretrained_path", "errored"),
        ("ValueError: mentions TrainingDiverged: only later", "errored"),
    ],
)
def test_a_failed_trial_is_diverged_only_for_a_diverged_loss(error, status):
    from types import SimpleNamespace

    from search._leaderboard import _status

    trial = SimpleNamespace(status="ERROR")
    assert _status(trial, SimpleNamespace(error=None), 1, 2, error=error) == status


@pytest.mark.parametrize(
    "n_rows, seconds, budget, rc",
    [
        (2, 10.0, None, 130),  # Ctrl-C between two trials: none running, two never started
        (4, 10.0, None, 0),
        (2, 10.0, 5.0, 0),  # the time budget ended it: done, with fewer trials
    ],
)
def test_a_sweep_stopped_before_n_trials_is_unfinished(n_rows, seconds, budget, rc, capsys, images):
    from search._run import _report
    from search._space import load_space

    overrides = [f"data.root={images}", "search.n_trials=4"] + ([f"search.time_budget_s={budget}"] if budget else [])
    space = load_space(SMOKE, overrides=overrides)
    frame = pd.DataFrame({
        "trial_id": [f"t{i}" for i in range(n_rows)], "status": ["finished"] * n_rows, "epochs": [2] * n_rows,
        "best": [0.9] * n_rows, "last": [0.9] * n_rows, "wall_s": [1.0] * n_rows, "metric": ["val_auroc"] * n_rows,
        "disk_mb": [1.5] * n_rows,
    })
    assert _report(frame, space, paths=[], seconds=seconds, ensemble=False) == rc
    captured = capsys.readouterr()
    assert f"{1.5 * n_rows:.1f} MB on disk" in captured.out
    if rc == 130:
        assert "continue the sweep with --resume" in captured.err
