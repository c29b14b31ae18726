"""What people watch, without Ray: the ``tracking`` section, the live status line, the report's helpers."""

from __future__ import annotations

import io
import math
import os
from types import SimpleNamespace

import pandas as pd
import pytest

from search import MLflowConfig, TrackingConfig, load_space
from search._html import asha_rungs, param_importances
from search._progress import Progress
from trainables import ConfigError

BASE = """
name: s
data: {source: folder, root: /data}
fixed: {epochs: 4}
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  loss: {type: categorical, choices: [ce, focal]}
  focal_gamma: {type: float, low: 0.5, high: 5.0, when: {loss: focal}}
"""


def write(tmp_path, text: str):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_tracking_defaults_to_tensorboard_only(tmp_path):
    space = load_space(write(tmp_path, BASE))
    assert space.tracking == TrackingConfig(mlflow=None, tensorboard=True)
    assert space.resolved()["tracking"] == {"tensorboard": True}


@pytest.mark.parametrize(
    "overrides,want",
    [
        (["tracking.mlflow.uri=http://127.0.0.1:5000"], MLflowConfig("http://127.0.0.1:5000", "s")),
        (["tracking.mlflow.uri=sqlite:///m.db", "tracking.mlflow.experiment=cxr-tb"], MLflowConfig("sqlite:///m.db", "cxr-tb")),
        (["tracking.mlflow.uri=databricks"], MLflowConfig("databricks", "s")),
    ],
)
def test_mlflow_uri_and_experiment(tmp_path, overrides, want):
    space = load_space(write(tmp_path, BASE), overrides=overrides)
    assert space.tracking.mlflow == want
    # The resolved space (a run's space.yaml) loads back to the same tracking section.
    again = write(tmp_path, __import__("yaml").safe_dump(space.resolved()))
    assert load_space(again).tracking == space.tracking


def test_a_folder_becomes_an_absolute_file_uri(tmp_path):
    space = load_space(write(tmp_path, BASE), overrides=[f"tracking.mlflow.uri={tmp_path / 'mlruns'}"])
    assert space.tracking.mlflow.uri == (tmp_path / "mlruns").resolve().as_uri()


TRACKING_ERRORS = [
    ("tracking: {mlfow: {uri: x}}", r"s\.yaml: tracking\.mlfow: unknown key 'mlfow' in tracking; did you mean 'mlflow'\?"),
    ("tracking: {mlflow: {url: http://h:1}}", r"tracking\.mlflow\.url: unknown key 'url' in mlflow; did you mean 'uri'\?"),
    ("tracking: {mlflow: {uri: htp://h:5000}}", r"tracking\.mlflow\.uri: unknown scheme 'htp' in 'htp://h:5000'; did you mean 'http'"),
    ("tracking: {mlflow: {uri: 'http://'}}", r"tracking\.mlflow\.uri: 'http://' names no host; write it like http://127\.0\.0\.1:5000"),
    ("tracking: {mlflow: {uri: 5000}}", r"tracking\.mlflow\.uri: must be a tracking URI such as http://127\.0\.0\.1:5000"),
    ("tracking: {mlflow: {}}", r"tracking\.mlflow\.uri: must be a tracking URI"),
    ("tracking: {mlflow: {uri: 'http://h:1', experiment: ''}}", r"tracking\.mlflow\.experiment: must be a non-empty name"),
    ("tracking: {mlflow: http://h:1}", r"tracking\.mlflow: must be a mapping like \{uri: http://127\.0\.0\.1:5000, experiment: s\}"),
    ("tracking: {tensorboard: yes please}", r"tracking\.tensorboard: must be true or false, got 'yes please'"),
    ("tracking: [mlflow]", r"tracking: must be a mapping"),
]


@pytest.mark.parametrize("text,match", TRACKING_ERRORS, ids=[str(i) for i in range(len(TRACKING_ERRORS))])
def test_bad_tracking_sections_fail_with_one_line(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_space(write(tmp_path, BASE + text + "\n"))
    assert "\n" not in str(info.value)


def test_mlflow_flag_is_the_uri_override(tmp_path, capsys):
    from search.run import main

    assert main([str(write(tmp_path, BASE)), "--mlflow", "htp://h", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medsweep: error: ") and "tracking.mlflow.uri: unknown scheme 'htp'" in err


# ---------------------------------------------------------------- the status line


def trial(status: str, *, epochs: int = 0, value: float | None = None, want: int = 4) -> SimpleNamespace:
    result = {"training_iteration": epochs}
    if value is not None:
        result["val_auroc"] = value
    analysis = {"val_auroc": {"max": value}} if value is not None else {}
    return SimpleNamespace(status=status, config={"epochs": want}, last_result=result, metric_analysis=analysis, trial_id=status.lower())


TRIALS = [
    trial("TERMINATED", epochs=4, value=0.91),  # finished
    trial("TERMINATED", epochs=1, value=0.70),  # pruned at the first rung
    trial("ERROR"),
    trial("RUNNING", epochs=2, value=0.93),
    trial("PENDING"),
]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def progress(stream, **kwargs) -> Progress:
    p = Progress(metric="val_auroc", mode="max", n_trials=8, max_t=4, shown=[], stream=stream, **kwargs)
    p.setup()
    return p


@pytest.mark.parametrize(
    "trials,want",
    [
        (TRIALS, "[medsweep] 3/8 done (1 finished, 1 pruned, 1 errored), 1 running, best val_auroc 0.9300, "),
        ([trial("PENDING")], "[medsweep] 0/8 done (0 finished, 0 pruned, 0 errored), 0 running, best val_auroc -, "),
    ],
)
def test_status_line_counts_and_best(trials, want):
    line = progress(io.StringIO()).status_line(trials)
    assert line.startswith(want), line
    assert line.endswith((" left",)) and "elapsed" in line


def test_remaining_time_follows_the_pace_and_the_budget():
    p = progress(io.StringIO())
    # 3 done in 60 s: 5 more take about 100 s.
    assert p.status_line(TRIALS, now=p._t0 + 60).endswith("1m00s elapsed, ~1m40s left")
    budget = progress(io.StringIO(), time_budget_s=90)
    assert budget.status_line(TRIALS, now=budget._t0 + 60).endswith("~30s left")


def test_in_a_terminal_the_line_redraws_in_place(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    out = Terminal()
    p = progress(out)
    p.on_step_end(1, TRIALS)
    p.on_step_end(2, TRIALS)  # within the second: no redraw
    text = out.getvalue()
    assert text.startswith("\r[medsweep] 3/8 done") and text.endswith("\x1b[K") and text.count("\r") == 1 and "\n" not in text
    # A finished trial's line clears the status line first, so the two never share a row.
    p.on_trial_complete(3, TRIALS, TRIALS[0])
    assert out.getvalue()[len(text):].startswith("\r\x1b[K[medsweep] trial ")
    p.on_experiment_end(TRIALS)
    assert out.getvalue().endswith("left\n")


@pytest.mark.parametrize("ci,stream", [("true", Terminal()), (None, io.StringIO())], ids=["CI", "pipe"])
def test_in_ci_logs_and_pipes_plain_lines_every_interval(monkeypatch, ci, stream):
    if ci:
        monkeypatch.setenv("CI", ci)
    else:
        monkeypatch.delenv("CI", raising=False)
    p = progress(stream, interval_s=3600)
    p.on_step_end(1, TRIALS)
    p.on_step_end(2, TRIALS)  # within the interval: nothing
    p._last_status -= 3600
    p.on_step_end(3, TRIALS)
    lines = stream.getvalue().split("\n")
    assert "\r" not in stream.getvalue() and "\x1b" not in stream.getvalue()
    assert [ln.split(",")[0] for ln in lines if ln] == ["[medsweep] 3/8 done (1 finished"] * 2


# ---------------------------------------------------------------- report helpers


@pytest.mark.parametrize(
    "scheduler,want",
    [
        ({"type": "asha", "max_t": 6, "grace_period": 1, "reduction_factor": 3}, [1, 3]),
        ({"type": "asha", "max_t": 2, "grace_period": 1, "reduction_factor": 2}, [1]),
        ({"type": "asha", "max_t": 20, "grace_period": 2, "reduction_factor": 2}, [2, 4, 8, 16]),
        ({"type": "fifo"}, []),
    ],
)
def test_asha_rungs(scheduler, want):
    assert asha_rungs(scheduler) == want


def importance_board(n: int = 24) -> pd.DataFrame:
    import numpy as np

    rng = np.random.default_rng(0)
    lr = 10 ** rng.uniform(-4, -2, n)
    loss = rng.choice(["ce", "focal"], n)
    # The best value follows lr only; loss is noise.
    best = 0.5 + 0.1 * (np.log10(lr) + 4) + rng.normal(0, 0.001, n)
    return pd.DataFrame(
        {
            "trial_id": [f"t{i}" for i in range(n)],
            "status": ["finished"] * (n - 2) + ["errored", "pruned"],
            "best": list(best[:-2]) + [math.nan, best[-1]],
            "config/lr": lr,
            "config/loss": loss,
            "config/focal_gamma": [2.0 if x == "focal" else None for x in loss],
        }
    )


SPACE = {
    "space": {
        "lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True},
        "loss": {"type": "categorical", "choices": ["ce", "focal"]},
        "focal_gamma": {"type": "float", "low": 0.5, "high": 5.0, "when": {"loss": "focal"}},
    }
}


def test_importances_come_from_optuna_on_the_leaderboard():
    imp = param_importances(importance_board(), SPACE, mode="max")
    assert set(imp) == {"lr", "loss"}  # focal_gamma exists in some trials only
    assert imp["lr"] > 0.8 and math.isclose(sum(imp.values()), 1.0)


def test_importances_need_history():
    with pytest.raises(ValueError, match="at least 2"):
        param_importances(importance_board().head(1), SPACE)


@pytest.mark.parametrize(
    "overrides,want",
    [
        ([], ["CSVLoggerCallback", "JsonLoggerCallback", "TBXLoggerCallback"]),
        (["tracking.tensorboard=false"], ["CSVLoggerCallback", "JsonLoggerCallback"]),
        (["tracking.mlflow.uri=sqlite:///m.db"], ["CSVLoggerCallback", "JsonLoggerCallback", "TBXLoggerCallback", "MLflowLoggerCallback"]),
    ],
)
def test_tracking_section_chooses_tunes_logger_callbacks(tmp_path, monkeypatch, overrides, want):
    from search._tracking import tracking_callbacks

    if any("mlflow" in o for o in overrides):
        pytest.importorskip("mlflow")
    monkeypatch.setenv("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "0")  # restored afterwards
    space = load_space(write(tmp_path, BASE), overrides=overrides)
    assert [type(c).__name__ for c in tracking_callbacks(space, run_dir=str(tmp_path))] == want
    # Without TensorBoard, Tune must not add its TBX logger behind our back.
    assert (os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] == "1") == ("tracking.tensorboard=false" in overrides)


def test_progress_implements_tunes_own_hooks():
    from ray.tune import Callback

    # A misspelt hook is never called, and nothing says so.
    hooks = [name for name in vars(Progress) if name.startswith("on_") or name == "setup"]
    assert {"on_step_end", "on_trial_complete", "on_trial_error", "on_experiment_end", "setup"} <= set(hooks)
    assert all(callable(getattr(Callback, name, None)) for name in hooks), hooks
