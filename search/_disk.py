"""What a sweep leaves on disk (``search.keep``): a trial that ended drops the state only resuming needs, and
with ``keep: best`` only the trials the ensemble can use keep their weights once the sweep is done.

Each trial's checkpoint holds its resume state (optimizer, scheduler, RNG, the latest weights: about three
times the weights with Adam) and its best weights; Tune keeps only the latest checkpoint, which carries the
best weights and the best epoch's predictions along.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterable

from ray.tune import Callback

from trainables import drop_resume_state
from trainables.artifacts import BEST_WEIGHTS, LAST_WEIGHTS

__all__ = ["KeepCallback", "keep_what_was_asked"]

# Weights files a trial's folder or checkpoint may hold (the trainer's names).
_WEIGHTS = (BEST_WEIGHTS, LAST_WEIGHTS)


class KeepCallback(Callback):
    """Drops a finished or pruned trial's resume state once Tune's saved experiment state says it ended.

    Not at once: a driver killed between the trial's end and the next save of the experiment state would
    resume the trial from its checkpoint, which must then still be whole.
    """

    def __init__(self, keep: str, run_dir: str, *, every_s: float = 10.0) -> None:
        self.keep = keep
        self.run_dir = run_dir
        self.every_s = every_s
        self._ended: dict[str, str] = {}  # trial id -> trial folder
        self._checked = 0.0

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.keep != "all" and trial.path and "://" not in str(trial.path):
            self._ended[trial.trial_id] = str(trial.path)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if not self._ended or time.monotonic() - self._checked < self.every_s:
            return
        self._checked = time.monotonic()
        saved = saved_trial_states(Path(self.run_dir))
        for tid in [t for t, status in saved.items() if status == "TERMINATED" and t in self._ended]:
            drop_trial_resume_state(Path(self._ended.pop(tid)))


def saved_trial_states(run_dir: Path) -> dict[str, str]:
    """Trial id -> status in Tune's newest saved experiment state (what a resumed sweep starts from)."""
    # One file per driver session, named by its start time: the newest name is the one Tune restores.
    # Not by mtime: each background sync rewrites every file in the folder within the same millisecond.
    states = sorted(run_dir.glob("experiment_state-*.json"), key=lambda p: p.name)
    if not states:
        return {}
    try:
        data = json.loads(states[-1].read_text())
        return {t["trial_id"]: t["status"] for t in (json.loads(item) for item, _ in data["trial_data"])}
    except (OSError, ValueError, KeyError, TypeError):  # caught mid-write: the next check reads it again
        return {}


def drop_trial_resume_state(trial_dir: Path) -> int:
    """Resume state out of every checkpoint of one trial; the bytes freed."""
    return sum(drop_resume_state(ckpt) for ckpt in sorted(trial_dir.glob("checkpoint_*")) if ckpt.is_dir())


def keep_what_was_asked(frame: Any, run_dir: str, *, keep: str, members: Iterable[str] | None) -> int:
    """At the end of a complete sweep: resume state out of every ended trial, and with ``keep: best`` the
    weights out of every trial not in ``members`` (the trial ids the ensemble can use); the bytes freed.

    Predictions, ``model.json`` and Tune's logs stay, so the leaderboard, ``search.show`` and the report
    still see every trial.
    """
    if keep == "all" or "://" in run_dir or frame.empty:
        return 0
    freed = 0
    kept = set(members) if members is not None else None
    for row in frame.to_dict("records"):
        if row.get("status") not in ("finished", "pruned") or not row.get("path"):
            continue
        trial_dir = Path(str(row["path"]))
        if not trial_dir.is_dir():
            continue
        freed += drop_trial_resume_state(trial_dir)
        if keep == "best" and kept is not None and str(row["trial_id"]) not in kept:
            for folder in [trial_dir, *trial_dir.glob("checkpoint_*")]:
                for name in _WEIGHTS:
                    path = folder / name
                    if path.is_file():
                        freed += path.stat().st_size
                        path.unlink()
    return freed
