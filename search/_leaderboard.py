"""The leaderboard: one row per trial of a sweep, from Tune's results, written as parquet and CSV.

Columns: ``trial_id``, ``status`` (finished, pruned, diverged, errored, running, pending), ``epochs``,
``max_epochs``, ``metric``, ``best``, ``last``, ``best_epoch``, ``wall_s``, ``node_ip``, ``node_id``, ``error``,
``disk_mb`` (what the trial's folder holds; empty for remote storage), ``path`` (the trial's folder),
``checkpoint`` (its best checkpoint), ``predictions_val`` and ``predictions_test``
(the best epoch's predictions, inside that checkpoint), ``last/<metric>`` for each further
objective, then every config value as ``config/<key>`` (the data section left out).
"""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from trainables.artifacts import (
    LEADERBOARD_COLUMNS,
    LEADERBOARD_CSV,
    LEADERBOARD_PARQUET,
    STATUSES,
    USABLE_STATUSES,
    predictions_file,
    read_leaderboard,
)

from ._progress import error_line, is_diverged, trial_max_epochs
from ._space import Space

if TYPE_CHECKING:  # pandas is imported where a frame is built: the annotations only name it
    import pandas as pd

# The leaderboard's contract lives with the other run-folder files (the ensemble reads it too); here it is written.
__all__ = [
    "LEADERBOARD_COLUMNS",
    "STATUSES",
    "USABLE_STATUSES",
    "format_table",
    "leaderboard",
    "read_leaderboard",
    "tune_leaderboard",
    "write_leaderboard",
]

# Tune's trial states to the leaderboard's.
_STATUS = {"ERROR": "errored", "RUNNING": "running", "PAUSED": "running", "PENDING": "pending"}
# The sort order of the statuses (STATUSES): ended trials by their metric, then running, pending, failed.
_RANK = {"finished": 0, "pruned": 0, "running": 1, "pending": 2, "diverged": 3, "errored": 3}
# Config keys that are not training parameters: the data section and the driver's bookkeeping.
_HIDDEN = ("data",)


def tune_leaderboard(experiment: str, space: Space, *, uri_prefix: str = "") -> "pd.DataFrame":
    """The leaderboard of the Tune experiment stored at ``experiment`` (a run folder or URI), as stored now.

    Read through Tune's public ``ExperimentAnalysis``: its ``trials`` carry each trial's status, and
    ``ResultGrid(analysis)`` lists their results in the same order.

    Example:
        >>> tune_leaderboard("runs/cxr", load_space("runs/cxr/space.yaml"))[["trial_id", "status", "best"]]
    """
    from ray.tune import ExperimentAnalysis, ResultGrid

    analysis = ExperimentAnalysis(experiment, default_metric=space.search.metric, default_mode=space.search.mode)
    return leaderboard(ResultGrid(analysis), space, trials=analysis.trials, uri_prefix=uri_prefix)


def leaderboard(results: Any, space: Space, *, trials: Sequence[Any] = (), uri_prefix: str = "") -> "pd.DataFrame":
    """A table of every trial in a Tune ``ResultGrid``, best first (errored and unfinished last).

    Args:
        results: Tune's results, e.g. ``ResultGrid(analysis)``.
        space: the sweep's space (metric, mode, objectives, ASHA's ``max_t``).
        trials: Tune's ``Trial`` objects in the order of ``results`` (``ExperimentAnalysis.trials``), whose
            status tells running, pending and errored trials apart; without them every trial reads as ended.
        uri_prefix: prepended to paths (``s3://``) when the storage is not a local folder.
    """
    import pandas as pd

    cfg = space.search
    metric, mode = cfg.metric, cfg.mode
    max_t = cfg.scheduler.max_t if cfg.scheduler.type == "asha" else None
    trials = list(trials)
    rows = []
    for i, result in enumerate(results):
        trial = trials[i] if i < len(trials) else None
        rows.append(_row(result, trial, metric=metric, mode=mode, max_t=max_t, objectives=cfg.objectives, uri_prefix=uri_prefix))
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    rank = frame["status"].map(_RANK).fillna(_RANK["pending"])
    key = frame["best"].astype(float)
    key = -key if mode == "max" else key
    frame = frame.assign(_rank=rank, _key=key.fillna(math.inf)).sort_values(["_rank", "_key", "trial_id"], kind="stable")
    frame = frame.drop(columns=["_rank", "_key"]).reset_index(drop=True)
    return _parquet_safe(frame)


def _row(result: Any, trial: Any, *, metric: str, mode: str, max_t: int | None, objectives: Sequence[Any], uri_prefix: str) -> dict[str, Any]:
    # A trial that failed before its first report has no config in its result: take the trial's own.
    config = dict(getattr(trial, "config", None) or result.config or {})
    metrics = dict(result.metrics or {})
    history = result.metrics_dataframe
    trial_id = metrics.get("trial_id") or getattr(trial, "trial_id", None) or _basename(result.path)
    epochs = int(metrics.get("training_iteration", 0) or 0)
    if history is not None and "training_iteration" in getattr(history, "columns", ()):
        epochs = max(epochs, int(history["training_iteration"].max() or 0)) if len(history) else epochs
    max_epochs = trial_max_epochs(config, max_t)
    values = _column(history, metric)
    best, best_epoch = math.nan, None
    if values.size and not np.all(np.isnan(values)):
        j = int(np.nanargmax(values) if mode == "max" else np.nanargmin(values))
        best = float(values[j])
        epochs_col = _column(history, "training_iteration")
        best_epoch = int(epochs_col[j]) if epochs_col.size > j and not math.isnan(epochs_col[j]) else j + 1
    last = metrics.get(metric, math.nan)
    if math.isnan(best) and isinstance(last, (int, float)) and not math.isnan(last):
        # No history: Tune syncs progress.csv from a staging folder, and a driver killed mid-sync leaves
        # it empty; the last result survives in the experiment state, and the trainable reports its best epoch.
        best, best_epoch = float(last), metrics.get("best_epoch") or epochs or None
    error = error_line(result.error) if result.error is not None else None
    status = _status(trial, result, epochs, max_epochs, error=error)
    ckpt = None
    if status != "pending":
        try:
            ckpt = result.get_best_checkpoint(metric, mode) if result.best_checkpoints else None
        except Exception:  # noqa: BLE001 - e.g. every value NaN: fall back to the latest checkpoint
            ckpt = None
        ckpt = ckpt or result.checkpoint
    ckpt_path = uri_prefix + ckpt.path if ckpt is not None else None
    row: dict[str, Any] = {
        "trial_id": str(trial_id),
        "status": status,
        "epochs": epochs,
        "max_epochs": max_epochs,
        "metric": metric,
        "best": best,
        "last": float(last) if isinstance(last, (int, float)) else math.nan,
        "best_epoch": best_epoch,
        "wall_s": float(metrics.get("time_total_s", math.nan) or math.nan),
        "node_ip": metrics.get("node_ip"),  # where it ran (Tune adds it to every result)
        "node_id": metrics.get("node_id"),  # the trainable's Ray node id: distinguishes nodes on one machine
        "error": error,
        "disk_mb": _disk_mb(result.path) if result.path and not uri_prefix else None,
        "path": uri_prefix + result.path if result.path else None,
        "checkpoint": ckpt_path,
        "predictions_val": f"{ckpt_path}/{predictions_file('val')}" if ckpt_path else None,
        "predictions_test": f"{ckpt_path}/{predictions_file('test')}" if ckpt_path else None,
    }
    for obj in objectives[1:]:
        value = metrics.get(obj.metric, math.nan)
        row[f"last/{obj.metric}"] = float(value) if isinstance(value, (int, float)) else math.nan
    for key in sorted(config):
        if key not in _HIDDEN and not key.startswith("_"):
            row[f"config/{key}"] = config[key]
    return row


def _status(trial: Any, result: Any, epochs: int, max_epochs: int, *, error: str | None = None) -> str:
    state = getattr(trial, "status", None)
    if state == "ERROR" or (state is None and result.error is not None):
        # A NaN/inf loss is the trial's own outcome (lower lr, clip gradients), not a fault to retry.
        return "diverged" if is_diverged(error) else "errored"
    if state in _STATUS:
        return _STATUS[state]
    # TERMINATED (or unknown): stopped by the scheduler or the time budget before its last epoch?
    return "finished" if epochs >= max_epochs else "pruned"


def _disk_mb(path: str) -> float | None:
    """Megabytes under a local trial folder (checkpoints, predictions, logs); ``None`` when it is not here."""
    import os

    if not os.path.isdir(path):
        return None
    total = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_size
            except OSError:  # removed meanwhile (Tune deleting an old checkpoint)
                continue
    return total / 1e6


def _column(frame: Any, name: str) -> np.ndarray:
    if frame is None or name not in getattr(frame, "columns", ()):
        return np.array([], dtype=float)
    return frame[name].to_numpy(dtype=float, na_value=np.nan)


def _basename(path: str | None) -> str:
    return (path or "").rstrip("/").rsplit("/", 1)[-1]


def _parquet_safe(frame: "pd.DataFrame") -> "pd.DataFrame":
    """A config column mixing types (``[null, 16, "auto"]``) becomes strings, so parquet can hold it."""
    for col in frame.columns:
        if not col.startswith("config/") or frame[col].dtype != object:
            continue
        kinds = {type(v) for v in frame[col] if v is not None and not (isinstance(v, float) and math.isnan(v))}
        if len(kinds) > 1 or any(k in (list, dict, tuple) for k in kinds):
            frame[col] = [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[col]]
    return frame


def format_table(frame: "pd.DataFrame", *, shown: Sequence[str], top: int = 10) -> str:
    """The first ``top`` rows for people: rank, id, status, epochs, best, last, seconds, searched values."""
    if frame.empty:
        return "(no trials)"
    cols = ["trial_id", "status", "epochs", "best", "last", "wall_s"] + [f"config/{k}" for k in shown if f"config/{k}" in frame]
    view = frame[cols].head(top).copy()
    view.columns = [c.removeprefix("config/") for c in cols]
    view.index = range(1, len(view) + 1)
    metric = frame["metric"].iloc[0]
    view = view.rename(columns={"best": f"best {metric}", "last": "last"})
    with _pd_options():
        text = view.to_string(float_format=lambda v: f"{v:.4g}", na_rep="-")
    more = f"\n({len(frame) - top} more in the leaderboard files)" if len(frame) > top else ""
    return text + more


def _pd_options():
    import pandas as pd

    return pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 40)


def write_bytes(run_dir: str, name: str, data: bytes) -> str:
    """Write a file into the run folder: a local path, or a URI (``s3://...``) through pyarrow."""
    if "://" in run_dir:
        import pyarrow.fs

        fs, base = pyarrow.fs.FileSystem.from_uri(run_dir)
        fs.create_dir(base, recursive=True)
        with fs.open_output_stream(f"{base}/{name}") as out:
            out.write(data)
        return f"{run_dir}/{name}"
    from pathlib import Path

    path = Path(run_dir) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return str(path)


def write_leaderboard(frame: "pd.DataFrame", run_dir: str) -> list[str]:
    """``leaderboard.parquet`` and ``leaderboard.csv`` in ``run_dir``; returns their paths."""
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    paths = [write_bytes(run_dir, LEADERBOARD_PARQUET, buf.getvalue())]
    paths.append(write_bytes(run_dir, LEADERBOARD_CSV, frame.to_csv(index=False).encode()))
    return paths


def read_text(run_dir: str, name: str) -> str | None:
    """A file of the run folder as text, or ``None`` when it is absent."""
    try:
        if "://" in run_dir:
            import pyarrow.fs

            fs, base = pyarrow.fs.FileSystem.from_uri(run_dir)
            with fs.open_input_stream(f"{base}/{name}") as f:
                return f.readall().decode()
        from pathlib import Path

        return (Path(run_dir) / name).read_text()
    except (FileNotFoundError, OSError):
        return None

