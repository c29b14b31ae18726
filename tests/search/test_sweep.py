"""End to end: ``search.run.main`` sweeps spaces/smoke.yaml on generated images under a local Ray.

One sweep (4 trials, one of which draws a weights file that does not exist) is shared by the
tests below; ``--resume`` runs on the same folder afterwards.
"""

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


def sweep_args(images: Path, out: Path, *extra: str) -> list[str]:
    return [
        str(SMOKE),
        "--set", f"data.root={images}",
        "--set", f"data.cache_dir={images.parent / 'cache'}",
        # Trials that draw the missing file raise in the trainable: they must be recorded, not stop the sweep.
        "--set", f"space.pretrained_path={{type: categorical, choices: [null, {BAD_WEIGHTS}]}}",
        "--set", "search.max_failures=0",
        "--out", str(out),
        *extra,
    ]


def run_main(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="package")
def sweep(images, ray_session, tmp_path_factory):
    """The smoke sweep, run once: (run folder, exit status, stdout, argv)."""
    out = tmp_path_factory.mktemp("sweep-runs")
    argv = sweep_args(images, out)
    rc, stdout, _ = run_main(argv)
    return out / "smoke", rc, stdout, argv


def trial_dirs(run_dir: Path) -> set[str]:
    return {p.name for p in run_dir.glob("trial_*") if p.is_dir()}


def test_sweep_writes_a_leaderboard_row_per_trial(sweep):
    run_dir, rc, stdout, _ = sweep
    assert rc == 0, stdout
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert len(board) == 4
    assert pd.read_csv(run_dir / "leaderboard.csv")["trial_id"].tolist() == board["trial_id"].tolist()
    for col in ("trial_id", "status", "epochs", "max_epochs", "best", "last", "wall_s", "error", "checkpoint",
                "predictions_val", "predictions_test", "config/lr", "config/batch_size", "config/backbone", "config/epochs"):
        assert col in board.columns, col
    assert not any(c.startswith("config/data") or c.startswith("config/_") for c in board.columns)
    assert set(board["status"]) <= {"finished", "pruned", "errored"}
    assert board["trial_id"].is_unique and trial_dirs(run_dir) == {f"trial_{t}" for t in board["trial_id"]}
    # lr and batch_size come from the space, within its bounds.
    assert board["config/lr"].between(1e-3, 1e-2).all()
    assert set(board["config/batch_size"]) <= {8, 16}
    assert (run_dir / "space.yaml").is_file()


def test_errored_trials_keep_their_reason_and_the_sweep_goes_on(sweep):
    run_dir, _, stdout, _ = sweep
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    bad = board["config/pretrained_path"].fillna("") == BAD_WEIGHTS
    assert bad.any() and (~bad).any(), "seed 0 of the random sampler draws both kinds of trial"
    assert (board.loc[bad, "status"] == "errored").all()
    assert board.loc[bad, "error"].str.contains("does not exist").all()
    assert board.loc[~bad, "status"].isin(["finished", "pruned"]).all()
    assert board.loc[~bad, "error"].isna().all()
    assert "errored after 0 epochs: " in stdout


def test_finished_trials_leave_predictions_and_scores(sweep):
    run_dir, _, _, _ = sweep
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    ok = board[board["status"].isin(["finished", "pruned"])]
    assert len(ok)
    for _, row in ok.iterrows():
        assert 1 <= row["epochs"] <= row["max_epochs"] == 2
        assert row["status"] == ("finished" if row["epochs"] == 2 else "pruned")
        assert 0.0 <= row["best"] <= 1.0 and row["best"] >= row["last"] - 1e-12
        val = pd.read_parquet(row["predictions_val"])
        assert {"sample_id", "label", "prob_normal", "prob_pneumonia"} <= set(val.columns) and len(val) == 12
        assert Path(row["predictions_test"]).is_file()
        assert Path(row["checkpoint"]).parent == Path(row["path"])
    # Best first.
    assert ok["best"].is_monotonic_decreasing


def test_ended_trials_keep_predictions_and_the_ensembles_weights_not_resume_state(sweep):
    """search.keep: best (the default): no trial that ended keeps optimizer state or its latest weights; the
    trials the ensemble uses keep their best weights, the others only predictions; disk_mb counts what is left."""
    import json

    run_dir, _, stdout, _ = sweep
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    ok = board[board["status"].isin(["finished", "pruned"])]
    members = {m["trial_id"] for m in json.loads((run_dir / "ensemble" / "manifest.json").read_text())["members"]}
    assert members and members <= set(ok["trial_id"])
    for _, row in ok.iterrows():
        trial = Path(row["path"])
        assert len(list(trial.glob("checkpoint_*"))) == 1  # the latest only: it carries the best weights along
        assert not list(trial.rglob("state.pt")) and not list(trial.rglob("model.safetensors"))
        assert (Path(row["checkpoint"]) / "best.safetensors").is_file() == (row["trial_id"] in members)
        assert Path(row["predictions_val"]).is_file() and (Path(row["checkpoint"]) / "model.json").is_file()
        on_disk = sum(f.stat().st_size for f in trial.rglob("*") if f.is_file()) / 1e6
        assert row["disk_mb"] == pytest.approx(on_disk, rel=1e-6)
    assert f"{board['disk_mb'].sum():.1f} MB on disk" in stdout


def test_keep_all_keeps_the_state_to_resume_from(images, ray_session, tmp_path):
    out = tmp_path / "runs"
    argv = [str(SMOKE), "--set", f"data.root={images}", "--set", f"data.cache_dir={images.parent / 'cache'}", "--out", str(out),
            "--set", "search.keep=all", "--set", "search.n_trials=2", "--no-ensemble", "--no-report"]
    rc, stdout, _ = run_main(argv)
    assert rc == 0, stdout
    board = pd.read_parquet(out / "smoke" / "leaderboard.parquet")
    assert set(board["status"]) <= {"finished", "pruned"} and len(board) == 2
    for _, row in board.iterrows():
        assert (Path(row["checkpoint"]) / "state.pt").is_file() and (Path(row["checkpoint"]) / "best.safetensors").is_file()


def test_what_a_person_sees(sweep):
    _, _, stdout, _ = sweep
    lines = stdout.splitlines()
    progress = [ln for ln in lines if ln.startswith("[medsweep] trial ")]
    assert len(progress) == 4, stdout
    assert any("(best so far " in ln for ln in progress)
    assert "/4 " in progress[-1]
    assert any(ln.lstrip().startswith("trial_id") and "best val_auroc" in ln for ln in lines)  # the table
    assert "leaderboard.parquet" in stdout and "leaderboard.csv" in stdout
    assert "ensemble: bundle written to" in stdout
    assert "Traceback" not in stdout


def test_resume_of_a_finished_sweep_runs_no_finished_trial_again(sweep):
    run_dir, _, _, argv = sweep
    before = pd.read_parquet(run_dir / "leaderboard.parquet").set_index("trial_id")
    dirs = trial_dirs(run_dir)
    done = before.index[before["status"] != "errored"]
    # Tune rewrites each trial's log files on restore; a trial that ran again would add checkpoints and rows.
    stamps = {t: _trial_state(run_dir / f"trial_{t}") for t in done}
    report = (run_dir / "report.html").stat().st_mtime_ns
    rc, stdout, _ = run_main(argv + ["--resume", "--no-ensemble", "--no-report"])
    assert rc == 0, stdout
    assert (run_dir / "report.html").stat().st_mtime_ns == report and "report:" not in stdout
    after = pd.read_parquet(run_dir / "leaderboard.parquet").set_index("trial_id")
    assert trial_dirs(run_dir) == dirs
    assert sorted(after.index) == sorted(before.index)
    for t in done:
        assert _trial_state(run_dir / f"trial_{t}") == stamps[t], f"trial {t} ran again"
        assert after.loc[t, "status"] == before.loc[t, "status"]
        assert after.loc[t, "epochs"] == before.loc[t, "epochs"]
    assert "resuming" in stdout and "ensemble: skipped (--no-ensemble)" in stdout
    # Only the errored trials (resume_errored) are tried again, and fail the same way.
    rerun = [ln for ln in stdout.splitlines() if ln.startswith("[medsweep] trial ")]
    assert all("errored" in ln for ln in rerun)


def _trial_state(trial_dir: Path) -> tuple:
    checkpoints = sorted((p.name, p.stat().st_mtime_ns) for p in trial_dir.glob("checkpoint_*"))
    return checkpoints, pd.read_csv(trial_dir / "progress.csv")["epoch"].tolist()


def test_a_second_sweep_into_the_same_folder_needs_resume(sweep, capsys):
    run_dir, _, _, argv = sweep
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("medsweep: error: ")
    assert "already holds a sweep; pass --resume" in err
