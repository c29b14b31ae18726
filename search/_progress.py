"""What a person sees during a sweep: one line per finished, pruned or errored trial, with the best so far.

A Tune ``Callback``: Tuner pickles it with the run config, so it keeps no state of its own and
reads everything from the trials Tune passes in (a resumed sweep counts the earlier trials too).
"""

from __future__ import annotations

import math
import sys
from typing import Any, Mapping, Sequence

from ray.tune import Callback

DONE = ("TERMINATED", "ERROR")
# How the error of a trial whose loss became NaN or infinite begins (``trainables.TrainingDiverged``).
DIVERGED = "TrainingDiverged"


def is_diverged(error: str | None) -> bool:
    """Whether a trial's one-line error (``error_line``) is a diverged loss rather than a fault."""
    return DIVERGED in (error or "").split(": ", 1)[0]


def error_line(error: Any) -> str:
    """One line for a trial's error: the original exception's type and message, without Ray's wrapping."""
    if error is None:
        return ""
    if isinstance(error, str):  # the text of a trial's error.txt
        text = error
    else:
        cause = getattr(error, "cause", None) or error
        text = str(cause) if _is_config_error(cause) else f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if len(lines) > 1 and any(m in lines[0] for m in ("Traceback", "ray::", "Failure #")):
        text = lines[-1]  # a traceback: its last line names the exception
    else:
        text = lines[0] if lines else ""
    return " ".join(text.split())[:500]


def trial_error(trial: Any) -> str:
    """The one-line error of a failed trial, read from the files Tune wrote next to it."""
    import cloudpickle

    for attr, read in (("pickled_error_file", lambda f: cloudpickle.load(f)), ("error_file", lambda f: f.read().decode())):
        path = getattr(trial, attr, None)
        try:
            with open(path, "rb") as f:
                return error_line(read(f))
        except (OSError, TypeError, ValueError, EOFError, AttributeError):
            continue
    return ""


def _is_config_error(exc: Any) -> bool:
    from trainables import ConfigError

    return isinstance(exc, ConfigError)


def trial_best(trial: Any, metric: str, mode: str) -> float:
    """The trial's best value of ``metric`` so far (NaN when it reported none)."""
    analysis = getattr(trial, "metric_analysis", None) or {}
    value = (analysis.get(metric) or {}).get(mode)
    if value is None:
        value = (getattr(trial, "last_result", None) or {}).get(metric)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def trial_max_epochs(config: Mapping[str, Any], max_t: int | None) -> int:
    """Epochs a trial would run if no scheduler stopped it: its ``epochs``, capped by ASHA's ``max_t``."""
    from trainables import TrainParams

    epochs = int(config.get("epochs", TrainParams.epochs))
    return min(epochs, max_t) if max_t else epochs


class Progress(Callback):
    """Prints ``[medsweep] trial 3/8 <id> finished val_auroc 0.9312 (best 0.9431)  2/2 epochs  14s  lr=...``.

    Args:
        metric, mode: the sweep's objective (the scheduler's).
        n_trials: trials in all, for the ``3/8`` counter.
        max_t: ASHA's last rung (``None`` for other schedulers): a trial stopped before
            ``min(epochs, max_t)`` epochs counts as pruned.
        shown: the config keys to show (the searched parameters).
    """

    def __init__(self, *, metric: str, mode: str, n_trials: int, max_t: int | None, shown: Sequence[str]) -> None:
        self.metric = metric
        self.mode = mode
        self.n_trials = n_trials
        self.max_t = max_t
        self.shown = list(shown)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, error=trial_error(trial) or "see error.txt in the trial's folder")

    def _line(self, trials: list, trial: Any, *, error: str | None) -> None:
        done = 1 + sum(1 for t in trials if t is not trial and t.status in DONE)
        best = math.nan
        pick = max if self.mode == "max" else min
        for t in trials:
            value = trial_best(t, self.metric, self.mode)
            if not math.isnan(value):
                best = value if math.isnan(best) else pick(best, value)
        config = trial.config or {}
        result = trial.last_result or {}
        epochs = int(result.get("training_iteration", 0) or 0)
        want = trial_max_epochs(config, self.max_t)
        seconds = float(result.get("time_total_s", 0.0) or 0.0)
        params = " ".join(f"{k}={_short(config[k])}" for k in self.shown if k in config)
        head = f"[medsweep] trial {done}/{self.n_trials} {trial.trial_id}"
        if error is not None:
            outcome = "diverged" if is_diverged(error) else "errored"
            text = f"{head} {outcome} after {epochs} epochs: {error}"
        else:
            status = "finished" if epochs >= want else f"pruned at epoch {epochs}"
            value = trial_best(trial, self.metric, self.mode)
            text = (
                f"{head} {status}  {self.metric} {value:.4f} (best so far {best:.4f})"
                f"  {epochs}/{want} epochs  {seconds:.1f}s  {params}"
            )
        print(text.rstrip(), file=sys.stdout, flush=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
