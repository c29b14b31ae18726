"""The leaderboard from Tune's results, on fakes shaped like ``ResultGrid``: statuses, best and last, order."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest

from search import load_space
from search._leaderboard import format_table, leaderboard, write_leaderboard
from search._progress import error_line
from trainables import ConfigError


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "name: s\ndata: {source: folder, root: /d}\nfixed: {epochs: 3}\n"
        "space: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\n"
        "search: {scheduler: {type: asha, max_t: 3}}\n"
    )
    return load_space(p)


def fake(trial_id: str, status: str, aurocs: list[float], *, error=None, epochs: int = 3, lr: float = 1e-3):
    history = pd.DataFrame({"training_iteration": range(1, len(aurocs) + 1), "val_auroc": aurocs}) if aurocs else None
    config = {"lr": lr, "epochs": epochs, "data": {"source": "folder"}, "_origin": "s.yaml"}
    metrics = {"training_iteration": len(aurocs), "val_auroc": aurocs[-1], "time_total_s": 2.5, "config": config} if aurocs else {}
    checkpoint = SimpleNamespace(path=f"/runs/s/trial_{trial_id}/checkpoint_000001") if aurocs else None
    result = SimpleNamespace(
        config=metrics.get("config"),
        metrics=metrics,
        metrics_dataframe=history,
        error=error,
        path=f"/runs/s/trial_{trial_id}",
        checkpoint=checkpoint,
        best_checkpoints=[(checkpoint, metrics)] if checkpoint else [],
        get_best_checkpoint=lambda metric, mode: checkpoint,
    )
    trial = SimpleNamespace(trial_id=trial_id, status=status, config=config)
    return result, trial


class FakeGrid(list):
    """Results and, as ``ExperimentAnalysis.trials`` holds them, the trials in the same order."""

    def __init__(self, pairs):
        super().__init__(r for r, _ in pairs)
        self.trials = [t for _, t in pairs]


def test_statuses_best_last_and_order(space):
    grid = FakeGrid([
        fake("a", "TERMINATED", [0.7, 0.9, 0.8]),
        fake("b", "TERMINATED", [0.6]),  # stopped by ASHA after 1 of 3 epochs
        fake("c", "ERROR", [], error=ConfigError("weights file 'x' does not exist", field="pretrained_path"), lr=5e-3),
        fake("d", "RUNNING", [0.95, 0.96]),
        fake("e", "TERMINATED", [0.91, 0.92], epochs=2),  # a trial with 2 epochs finished them
    ])
    board = leaderboard(grid, space, trials=grid.trials).set_index("trial_id")
    assert board["status"].to_dict() == {"a": "finished", "b": "pruned", "c": "errored", "d": "running", "e": "finished"}
    assert list(board.index) == ["e", "a", "b", "d", "c"]  # finished/pruned by best, then running, then errored
    assert board.loc["a", "best"] == 0.9 and board.loc["a", "last"] == 0.8 and board.loc["a", "best_epoch"] == 2
    assert board.loc["e", "max_epochs"] == 2 and board.loc["b", "epochs"] == 1
    assert board.loc["c", "error"] == "pretrained_path: weights file 'x' does not exist"
    assert board.loc["c", "config/lr"] == 5e-3  # from the trial, though it never reported
    assert math.isnan(board.loc["c", "best"]) and pd.isna(board.loc["c", "checkpoint"])
    assert board.loc["a", "predictions_val"] == "/runs/s/trial_a/checkpoint_000001/predictions_val.parquet"
    assert "config/data" not in board and "config/_origin" not in board


def test_written_files_and_table(space, tmp_path):
    grid = FakeGrid([fake("a", "TERMINATED", [0.7, 0.9, 0.8]), fake("b", "ERROR", [], error=ValueError("boom"))])
    board = leaderboard(grid, space, trials=grid.trials)
    paths = write_leaderboard(board, str(tmp_path))
    assert [p.rsplit("/", 1)[1] for p in paths] == ["leaderboard.parquet", "leaderboard.csv"]
    assert pd.read_parquet(paths[0])["trial_id"].tolist() == ["a", "b"]
    text = format_table(board, shown=["lr"])
    assert "best val_auroc" in text and "lr" in text.splitlines()[0] and "errored" in text


@pytest.mark.parametrize(
    "error,line",
    [
        (ConfigError("must be > 0", origin="s.yaml", field="lr"), "s.yaml: lr: must be > 0"),
        (ValueError("first line\nsecond line"), "ValueError: first line"),
        ("Failure # 1 (occurred at 2026)\nTraceback (most recent call last):\n  File \"x.py\", line 1\nRuntimeError: CUDA out of memory",
         "RuntimeError: CUDA out of memory"),
        (SimpleNamespace(cause=KeyError("val_f1")), "KeyError: 'val_f1'"),
    ],
    ids=["config error", "multi-line message", "error.txt", "ray task error"],
)
def test_error_line(error, line):
    assert error_line(error) == line


def test_columns_and_statuses_are_the_contracts(space, tmp_path):
    """The written board starts with LEADERBOARD_COLUMNS, holds only STATUSES, and read_leaderboard reads it back."""
    from trainables.artifacts import LEADERBOARD_COLUMNS, STATUSES, read_leaderboard

    grid = FakeGrid([fake("a", "TERMINATED", [0.7, 0.9], epochs=2), fake("b", "TERMINATED", [0.6]), fake("c", "PENDING", []),
                     fake("d", "ERROR", [], error=ValueError("loss is nan"))])
    board = leaderboard(grid, space, trials=grid.trials)
    assert tuple(board.columns[: len(LEADERBOARD_COLUMNS)]) == LEADERBOARD_COLUMNS
    assert set(board["status"]) <= set(STATUSES) and {"finished", "pruned", "pending"} <= set(board["status"])
    write_leaderboard(board, str(tmp_path))
    assert read_leaderboard(tmp_path)["trial_id"].tolist() == board["trial_id"].tolist()
    with pytest.raises(ConfigError, match=r"no leaderboard\.parquet"):
        read_leaderboard(tmp_path / "elsewhere")
