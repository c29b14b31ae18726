"""What a person sees during a sweep: one line per finished, pruned or errored trial, with the best so far,
and a status line (trials done, running, pruned, errored; best; elapsed and remaining time).

A Tune ``Callback``: Tuner pickles it with the run config, so it keeps no state but clocks and
reads everything else from the trials Tune passes in (a resumed sweep counts the earlier trials too).
In a terminal the status line redraws in place (``\\r``); in CI logs and pipes it is a plain line
every ``interval_s`` seconds, since carriage returns there only pile up.
"""

from __future__ import annotations

import math
import os
import sys
import time
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
    import pickle  # Tune writes it with its cloudpickle, whose files plain pickle reads

    for attr, read in (("pickled_error_file", lambda f: pickle.load(f)), ("error_file", lambda f: f.read().decode())):
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


def trial_state(trial: Any, max_t: int | None) -> str:
    """The leaderboard's word for a trial now: finished, pruned, errored, running or pending."""
    status = getattr(trial, "status", None)
    if status == "ERROR":
        return "errored"
    if status in ("RUNNING", "PAUSED"):
        return "running"
    if status != "TERMINATED":
        return "pending"
    epochs = int((getattr(trial, "last_result", None) or {}).get("training_iteration", 0) or 0)
    return "finished" if epochs >= trial_max_epochs(getattr(trial, "config", None) or {}, max_t) else "pruned"


def _duration(seconds: float) -> str:
    seconds = int(max(0.0, seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress(Callback):
    """Prints ``[medsweep] trial 3/8 <id> finished val_auroc 0.9312 (best 0.9431)  2/2 epochs  14s  lr=...``
    per trial, and the status line ``[medsweep] 5/14 done (3 finished, 2 pruned, 0 errored), 2 running,
    best val_auroc 0.9431, 2m13s elapsed, ~4m10s left``.

    Args:
        metric, mode: the sweep's objective (the scheduler's).
        n_trials: trials in all, for the ``3/8`` counter.
        max_t: ASHA's last rung (``None`` for other schedulers): a trial stopped before
            ``min(epochs, max_t)`` epochs counts as pruned.
        shown: the config keys to show (the searched parameters).
        time_budget_s: the sweep's time budget: the remaining time never exceeds what is left of it.
        live: redraw the status line in place; default when stdout is a terminal and ``CI`` is unset.
        interval_s: seconds between plain status lines (not live); a live line redraws every second.
        stream: where lines go; default ``sys.stdout`` at the time of printing (the callback is pickled).
    """

    # Class-level defaults: a sweep started before these options existed unpickles without them on --resume.
    time_budget_s: float | None = None
    live: bool | None = None
    interval_s: float = 30.0
    stream: Any = None
    _t0: float | None = None
    _last_status: float = -math.inf
    _drawn: bool = False

    def __init__(
        self,
        *,
        metric: str,
        mode: str,
        n_trials: int | None,
        max_t: int | None,
        shown: Sequence[str],
        time_budget_s: float | None = None,
        live: bool | None = None,
        interval_s: float = 30.0,
        stream: Any = None,
    ) -> None:
        self.metric = metric
        self.mode = mode
        self.n_trials = n_trials
        self.max_t = max_t
        self.shown = list(shown)
        self.time_budget_s = time_budget_s
        self.live = live
        self.interval_s = interval_s
        self.stream = stream
        self._t0: float | None = None
        self._last_status = -math.inf
        self._drawn = False

    def setup(self, **info: Any) -> None:
        # Elapsed time counts from this start (a resumed sweep from the resume).
        self._t0 = time.monotonic()
        self._last_status = -math.inf
        self._drawn = False

    def _out(self) -> Any:
        return self.stream if self.stream is not None else sys.stdout

    def _is_live(self) -> bool:
        if self.live is not None:
            return self.live
        out = self._out()
        return bool(getattr(out, "isatty", lambda: False)()) and not os.environ.get("CI")

    def status_line(self, trials: list, *, now: float | None = None) -> str:
        """``[medsweep] 5/14 done (3 finished, 2 pruned, 0 errored), 2 running, best val_auroc 0.9431, 2m13s elapsed, ~4m10s left``."""
        now = time.monotonic() if now is None else now
        counts = {k: 0 for k in ("finished", "pruned", "errored", "running", "pending")}
        for t in trials:
            counts[trial_state(t, self.max_t)] += 1
        done = counts["finished"] + counts["pruned"] + counts["errored"]
        best = self._best(trials)
        elapsed = now - (self._t0 if self._t0 is not None else now)
        # Trials so far set the pace; wall-clock time already holds the concurrency.
        left = "?"
        if self.n_trials is None:
            # A budget-only sweep keeps starting trials until the budget is spent.
            if self.time_budget_s:
                left = "~" + _duration(max(0.0, self.time_budget_s - elapsed))
        elif done and done < self.n_trials:
            estimate = elapsed / done * (self.n_trials - done)
            if self.time_budget_s:
                estimate = min(estimate, max(0.0, self.time_budget_s - elapsed))
            left = "~" + _duration(estimate)
        elif done >= self.n_trials:
            left = "0s"
        best_text = f"{best:.4f}" if not math.isnan(best) else "-"
        total = f"/{self.n_trials}" if self.n_trials is not None else ""
        return (
            f"[medsweep] {done}{total} done ({counts['finished']} finished, {counts['pruned']} pruned, "
            f"{counts['errored']} errored), {counts['running']} running, best {self.metric} {best_text}, "
            f"{_duration(elapsed)} elapsed, {left} left"
        )

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        # Tune calls this every pass of its event loop: draw at most once a second (live) or per interval.
        if self._t0 is None:
            self._t0 = time.monotonic()
        now = time.monotonic()
        live = self._is_live()
        if now - self._last_status < (1.0 if live else self.interval_s):
            return
        self._last_status = now
        line = self.status_line(trials, now=now)
        out = self._out()
        if live:
            out.write("\r" + line + "\x1b[K")
            out.flush()
            self._drawn = True
        else:
            print(line, file=out, flush=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        if self._is_live() and self._drawn:
            self._out().write("\r\x1b[K")
        print(self.status_line(trials), file=self._out(), flush=True)
        self._drawn = False

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, error=None)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._line(trials, trial, error=trial_error(trial) or "see error.txt in the trial's folder")

    def _best(self, trials: list) -> float:
        best = math.nan
        pick = max if self.mode == "max" else min
        for t in trials:
            value = trial_best(t, self.metric, self.mode)
            if not math.isnan(value):
                best = value if math.isnan(best) else pick(best, value)
        return best

    def _line(self, trials: list, trial: Any, *, error: str | None) -> None:
        done = 1 + sum(1 for t in trials if t is not trial and t.status in DONE)
        best = self._best(trials)
        config = trial.config or {}
        result = trial.last_result or {}
        epochs = int(result.get("training_iteration", 0) or 0)
        want = trial_max_epochs(config, self.max_t)
        seconds = float(result.get("time_total_s", 0.0) or 0.0)
        params = " ".join(f"{k}={_short(config[k])}" for k in self.shown if k in config)
        total = f"/{self.n_trials}" if self.n_trials is not None else ""
        head = f"[medsweep] trial {done}{total} {trial.trial_id}"
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
        out = self._out()
        if self._drawn and self._is_live():
            out.write("\r\x1b[K")  # the status line gives way, and is redrawn below the trial's line
            self._drawn = False
            self._last_status = -math.inf
        print(text.rstrip(), file=out, flush=True)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
