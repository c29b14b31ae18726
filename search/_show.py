"""What ``python -m search.show`` reads: the leaderboard of a finished sweep, or of a running one from Tune's
experiment state, and the ensemble's metrics when it is built."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables import ConfigError

from ._space import Space, load_space


def read_space(root: Path) -> Space:
    """The run's resolved ``space.yaml`` as a ``Space``."""
    path = root / "space.yaml"
    if not path.is_file():
        raise ConfigError("holds no space.yaml; pass a sweep's run folder such as runs/cxr", origin=str(root))
    return load_space(path)


def _state_files(root: Path) -> list[Path]:
    # Named by each driver session's start time (the newest name is what Tune restores); mtimes move on every sync.
    return sorted(root.glob("experiment_state-*.json"), key=lambda p: p.name)


def live_leaderboard(root: Path, space: Space | None = None) -> Any:
    """The leaderboard as Tune's experiment state has it now (a running or interrupted sweep), or ``None``."""
    if not _state_files(root):
        return None
    from ._leaderboard import tune_leaderboard

    space = space or read_space(root)
    frame = tune_leaderboard(str(root), space)
    if not frame.empty:
        # Tune stores a running trial as PENDING (what it would restart as); one that reported epochs is under way.
        under_way = (frame["status"] == "pending") & (frame["epochs"] > 0)
        frame.loc[under_way, "status"] = "running"
    return frame


def current_leaderboard(root: Path, space: Space) -> tuple[Any, str]:
    """``(frame, where)``: ``leaderboard.parquet`` when it is at least as new as Tune's state, else the live state."""
    import pandas as pd

    parquet = root / "leaderboard.parquet"
    states = _state_files(root)
    if parquet.is_file() and (not states or parquet.stat().st_mtime >= states[-1].stat().st_mtime - 1):
        return pd.read_parquet(parquet), str(parquet)
    frame = live_leaderboard(root, space)
    if frame is None:
        raise ConfigError("holds neither leaderboard.parquet nor Tune's experiment state; pass a sweep's run folder such as runs/cxr", origin=str(root))
    return frame, f"{states[-1]} (the sweep is running or was interrupted)"


def ensemble_text(root: Path) -> str:
    """The ensemble's test metrics next to the best single member, or a line saying there is none yet."""
    from ensemble import read_ensemble

    built = read_ensemble(root / "ensemble")
    if built is None:
        return f"ensemble: none yet; build it with python -m ensemble.build {root}"
    lines = [f"ensemble ({built.combiner} of {', '.join(built.members)}), test split:"] + ["  " + ln for ln in built.comparison().splitlines()]
    cv = built.cv_metrics
    if cv:
        lines.append("  validation CV: " + ", ".join(f"{k} {v:.4f}" for k, v in cv.items() if isinstance(v, (int, float))))
    return "\n".join(lines)
