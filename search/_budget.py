"""The budget drives the sweep: ``epochs: auto`` sized from the data, the batch size, this machine's speed
and ``search.time_budget_s``; ASHA's rungs follow in the same unit.

A trial's length is fixed so that about ``FULL_TRIALS`` trials of full length fit the budget on the
sweep's concurrent slots; ASHA stops most trials long before that, so the budget starts several times as
many. A small data set gets many epochs (capped at ``MAX_EPOCHS``). A large one, whose full pass does not
fit ``MIN_ROUNDS`` times into such a trial, is sized for fewer, longer trials (down to
``MIN_FULL_TRIALS``, and never fewer than the slots): there the training length, not the search, is
what the budget is short of. When even that leaves fewer than ``MIN_ROUNDS`` passes, it gets
``MIN_ROUNDS`` sub-epochs of ``epoch_samples`` draws each, so every trial still reports often enough to
be pruned and still leaves predictions when the budget ends it.

When the budget is sized for no more full-length trials than there are slots, a full-length trial may
take the budget's whole wall time. There a round (one report, one ASHA step) is sized per backbone to
take the same time (``Sizing.round_samples``): a slower backbone trains fewer images a round and still
ends within the budget, a faster one more, and ASHA compares trials at equal compute.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from trainables import ConfigError

__all__ = ["DEFAULT_BUDGET_S", "Sizing", "equal_time_rounds", "parse_duration", "size_space", "size_trials"]

# What a sweep gets when its file names neither a time budget nor a trial count.
DEFAULT_BUDGET_S = 900.0
# Full-length trials the budget is sized for; with ASHA (reduction 3) a started trial costs about a
# quarter of a full one, so the budget starts about 4x as many.
FULL_TRIALS = 5
# The fewest full-length trials a large data set's budget is sized for: on this 2-core machine's 2 slots,
# the first trials may each train for the whole budget. There the training length, not the number of
# trials, is what the budget is short of: 2 instead of 3 raised test accuracy by about 0.005 on full
# BloodMNIST and a 30,000-image set (bench/RESULTS.md, 2026-12-03). Never fewer than the slots (below).
MIN_FULL_TRIALS = 2
# MedMNIST's own baselines train 100 epochs; more only spends the budget on fewer, overfitted trials.
MAX_EPOCHS = 100
# Reports per trial when a full pass does not fit: ASHA (reduction 3) then has rungs at 1, 3 and 9.
MIN_ROUNDS = 9
# Fewer samples per sub-epoch than this makes the validation pass the trial's main cost.
MIN_EPOCH_SAMPLES = 256
# Training steps are slower in a trial than in the probe: augmentation, data reads, two trials per machine.
_TRAIN_OVERHEAD = 1.3
# Seconds per epoch besides images: the checkpoint, the report, the scheduler's bookkeeping.
_EPOCH_FIXED_S = 0.4
# When a trial cannot train full passes, backbones this many times slower than the fastest are left out:
# ASHA's rungs count epochs, so such a backbone pays that many times as much for each rung, and a trial of
# it sees a fraction of the data before it is judged (on full BloodMNIST, 3 sub-epochs of resnet34 took
# 39 % of a sweep's compute and were pruned). Within the factor, the search still weighs speed against depth.
SLOW_FACTOR = 2.0
# Rounds of equal time (see the module's docstring): a full-length trial of every backbone is sized to this
# share of the budget. A trial's time is estimated from the probe, and trials ran 6 % and 17 % longer than
# that on full BloodMNIST (bench/RESULTS.md, 2026-12-03); at 0.85 both trials that started first were stopped
# by the deadline a round before their end, so 0.75 leaves room for an estimate a third too low. Measured at
# 0.75 (2026-12-06): the trials of full length ran all their rounds, at the same test figures within the intervals.
EQUAL_TIME_SHARE = 0.75


@dataclass(frozen=True)
class Sizing:
    """How long each trial trains, chosen from the data and the budget.

    Attributes:
        epochs: reports per trial (epochs, or sub-epochs of ``epoch_samples``); ASHA's ``max_t``.
        epoch_samples: training draws per sub-epoch; ``None`` when an epoch is one pass.
        grace_period: ASHA's first rung, in the same unit.
        epoch_seconds: estimated seconds of one epoch of one trial.
        trial_seconds: estimated seconds of a full-length trial.
        expected_trials: about how many trials the budget starts (ASHA stopping most early).
        budget_s: the seconds the trials share.
        concurrency: trials running at once.
        n_train: training images.
        batch_size: the batch size the sizing assumed.
        full_trials: full-length trials the budget was sized for.
        backbones: the backbone choices the sweep keeps when slow ones were left out; ``None`` when all stay.
        left_out: the backbones left out, each with its training images per second.
        round_samples: training draws per round for each measured backbone when rounds are sized to take
            equal time (as many full-length trials as slots); empty otherwise. A backbone it does not name
            trains ``epoch_samples`` (or full passes).
    """

    epochs: int
    epoch_samples: int | None
    grace_period: int
    epoch_seconds: float
    trial_seconds: float
    expected_trials: int
    budget_s: float
    concurrency: int
    n_train: int
    batch_size: int
    full_trials: int
    backbones: tuple[str, ...] | None = None
    left_out: tuple[tuple[str, float], ...] = ()
    round_samples: tuple[tuple[str, int], ...] = ()

    def samples_for(self, backbone: Any) -> int | None:
        """Training draws per round for ``backbone``: its equal-time share, else ``epoch_samples``."""
        return dict(self.round_samples).get(str(backbone), self.epoch_samples)

    @property
    def steps_per_trial(self) -> int:
        """Optimizer steps of a full-length trial (with rounds of equal time, the backbones' mean)."""
        if self.round_samples:
            per_epoch = sum(n for _, n in self.round_samples) / len(self.round_samples)
        else:
            per_epoch = self.epoch_samples or self.n_train
        return self.epochs * max(1, int(per_epoch) // self.batch_size)

    def describe(self) -> str:
        """One line for the start of a sweep."""
        if self.round_samples:
            each = ", ".join(f"{b} {n}" for b, n in self.round_samples)
            unit = f"{self.epochs} rounds of equal time, training images a round: {each} (a full pass is {self.n_train})"
        elif self.epoch_samples is None:
            unit = f"{self.epochs} epochs"
        else:
            unit = f"{self.epochs} sub-epochs of {self.epoch_samples} images (a full pass is {self.n_train})"
        return (
            f"epochs: auto -> {unit}, about {self.steps_per_trial} optimizer steps a trial "
            f"(~{self.epoch_seconds:.1f}s an epoch, ~{self.trial_seconds:.0f}s a full trial); "
            f"ASHA grace {self.grace_period}, max_t {self.epochs}; "
            f"about {self.expected_trials} trials ({self.full_trials} of full length) in {self.budget_s:.0f}s "
            f"on {self.concurrency} slot(s)"
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def size_trials(
    *,
    n_train: int,
    n_val: int,
    n_test: int,
    batch_size: int,
    train_s: float,
    eval_s: float,
    budget_s: float,
    concurrency: int,
    reduction_factor: float = 3.0,
    full_trials: int = FULL_TRIALS,
    min_full_trials: int = MIN_FULL_TRIALS,
    max_epochs: int = MAX_EPOCHS,
) -> Sizing:
    """Trial length for a data set and a budget.

    Args:
        n_train: training images.
        n_val: validation images (one pass every epoch).
        n_test: test images (predicted whenever validation improves; counted at half an epoch's share).
        batch_size: training batch size.
        train_s: seconds per training image (``trainables.measure_speed``).
        eval_s: seconds per evaluated image.
        budget_s: seconds the sweep's trials may run.
        concurrency: trials at once.
        reduction_factor: ASHA's; sets the grace period so that rungs fall at about max_t / rf^2 and / rf.
        full_trials: full-length trials the budget is sized for.
        min_full_trials: the fewest it is sized for when a full pass does not fit ``MIN_ROUNDS`` times
            into a trial (pass ``full_trials`` to keep the count fixed). Neither is ever below
            ``concurrency``, so that a full-length trial fits the budget's wall time.
        max_epochs: the most epochs a trial gets, however small the data.

    Example:
        >>> small = size_trials(n_train=500, n_val=70, n_test=600, batch_size=64, train_s=4e-3, eval_s=6e-4,
        ...                     budget_s=800, concurrency=2)
        >>> large = size_trials(n_train=12000, n_val=1700, n_test=3400, batch_size=64, train_s=4e-3, eval_s=6e-4,
        ...                     budget_s=800, concurrency=2)
        >>> small.epochs > large.epochs
        True
    """
    eval_cost = (n_val + 0.5 * n_test) * eval_s + _EPOCH_FIXED_S
    full_epoch = n_train * train_s * _TRAIN_OVERHEAD + eval_cost
    slot_seconds = budget_s * max(1, concurrency)
    # As many of the full_trials as each still gets MIN_ROUNDS full passes, but no fewer than min_full_trials.
    fitting = int(slot_seconds // (MIN_ROUNDS * full_epoch))
    # Never fewer than the slots: a full-length trial longer than the budget's wall time could not finish.
    full_trials = max(1, concurrency, min(full_trials, max(min_full_trials, fitting)))
    trial_budget = slot_seconds / full_trials
    raw = trial_budget / full_epoch
    epoch_samples: int | None = None
    if raw >= MIN_ROUNDS:
        epochs = int(min(max_epochs, round(raw)))
        epoch_s = full_epoch
    else:
        epochs = MIN_ROUNDS
        per_round = trial_budget / MIN_ROUNDS - eval_cost
        samples = int(per_round / (train_s * _TRAIN_OVERHEAD)) if per_round > 0 else 0
        samples = max(MIN_EPOCH_SAMPLES, 2 * batch_size, samples)
        if samples >= n_train:  # rounding: a full pass fits after all
            epochs = MIN_ROUNDS
        else:
            epoch_samples = samples
        epoch_s = min(samples, n_train) * train_s * _TRAIN_OVERHEAD + eval_cost
    grace = max(1, int(round(epochs / reduction_factor**2)))
    trial_s = epochs * epoch_s
    cost = _asha_cost(epochs, grace, reduction_factor) * trial_s
    expected = max(1, int(budget_s * max(1, concurrency) / max(cost, 1e-9)))
    return Sizing(
        epochs=epochs,
        epoch_samples=epoch_samples,
        grace_period=grace,
        epoch_seconds=epoch_s,
        trial_seconds=trial_s,
        expected_trials=expected,
        budget_s=budget_s,
        concurrency=max(1, concurrency),
        n_train=n_train,
        batch_size=batch_size,
        full_trials=full_trials,
    )


def equal_time_rounds(
    sizing: Sizing,
    speeds: Sequence[tuple[str, Any]],
    *,
    n_val: int,
    n_test: int,
    reduction_factor: float = 3.0,
    share: float = EQUAL_TIME_SHARE,
) -> Sizing:
    """``sizing`` with rounds of equal time per backbone when a full-length trial may take the whole budget.

    Only when the budget is sized for no more full-length trials than slots (``full_trials <=
    concurrency``); otherwise ``sizing`` unchanged. Each backbone's round is sized so that ``epochs`` of
    them take ``share`` of a full-length trial's budget, its validation (and half-weighted test) pass
    included: ASHA's rungs then fall at equal compute, and a backbone slower than the mean still ends.

    Args:
        sizing: from ``size_trials`` on the backbones' mean speed.
        speeds: ``(backbone, Speed)`` for each measured backbone the sweep keeps.
        n_val: validation images.
        n_test: test images.
        reduction_factor: ASHA's, for the expected trial count.
        share: of the trial's budget a full-length trial is sized to take.

    Example:
        >>> from trainables import Speed
        >>> s = size_trials(n_train=12000, n_val=1700, n_test=3400, batch_size=64, train_s=4e-3, eval_s=6e-4,
        ...                 budget_s=800, concurrency=2)
        >>> eq = equal_time_rounds(s, [("fast", Speed(3e-3, 5e-4)), ("slow", Speed(6e-3, 8e-4))], n_val=1700, n_test=3400)
        >>> dict(eq.round_samples)["fast"] > dict(eq.round_samples)["slow"]
        True
    """
    if sizing.full_trials > sizing.concurrency or not speeds:
        return sizing
    trial_budget = sizing.budget_s * sizing.concurrency / sizing.full_trials
    round_s = share * trial_budget / sizing.epochs
    floor = max(MIN_EPOCH_SAMPLES, 2 * sizing.batch_size)
    rounds = []
    for backbone, speed in speeds:
        eval_cost = (n_val + 0.5 * n_test) * speed.eval_s + _EPOCH_FIXED_S
        samples = int(max(0.0, round_s - eval_cost) / (speed.train_s * _TRAIN_OVERHEAD))
        rounds.append((str(backbone), max(floor, samples)))
    trial_s = share * trial_budget
    cost = _asha_cost(sizing.epochs, sizing.grace_period, reduction_factor) * trial_s
    return dataclasses.replace(
        sizing,
        round_samples=tuple(rounds),
        epoch_seconds=round_s,
        trial_seconds=trial_s,
        expected_trials=max(1, int(sizing.budget_s * sizing.concurrency / max(cost, 1e-9))),
    )


def _asha_cost(max_t: int, grace: int, rf: float) -> float:
    """The mean share of ``max_t`` that a trial trains under ASHA: 1/rf of trials pass each rung."""
    rungs = []
    r = float(grace)
    while r < max_t:
        rungs.append(r)
        r *= rf
    cost, share, done = 0.0, 1.0, 0.0
    for rung in rungs:
        cost += share * (rung - done)
        done, share = rung, share / rf
    cost += share * (max_t - done)
    return cost / max_t


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(h|m|s)?", re.IGNORECASE)


def parse_duration(text: Any, *, field: str = "--budget") -> float:
    """Seconds from ``900``, ``900s``, ``15m``, ``1h30m`` or ``1.5h``.

    Example:
        >>> parse_duration("1h30m"), parse_duration("15m"), parse_duration(90)
        (5400.0, 900.0, 90.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip().replace(" ", "")
        parts = _DURATION.findall(s)
        if not s or "".join(n + u for n, u in parts).lower() != s.lower():
            raise ConfigError(f"{text!r} is not a duration; write it like 900, 900s, 15m, 1h30m", field=field)
        scale = {"h": 3600.0, "m": 60.0, "s": 1.0, "": 1.0}
        seconds = sum(float(n) * scale[u.lower()] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ConfigError(f"must be a positive duration like 15m, got {text!r}", field=field)
    return seconds


def size_space(
    space: Any,
    dataset: Any,
    *,
    budget_s: float,
    concurrency: int,
    echo: Any = None,
    full_trials: int = FULL_TRIALS,
    min_full_trials: int = MIN_FULL_TRIALS,
) -> Sizing:
    """Measure this machine on the space's backbones and size its trials for ``dataset`` and ``budget_s``.

    Args:
        space: a loaded ``Space`` with ``epochs: auto``.
        dataset: the loaded ``trainables.Dataset`` (split sizes, channels, classes, image size).
        budget_s: seconds the trials share.
        concurrency: trials at once.
        echo: ``print`` for a line per measured backbone; ``None`` for silence.
        full_trials: full-length trials the budget is sized for (more when the sweep bags: see ``search._bag``).
        min_full_trials: the fewest when the data set is large (see ``size_trials``).
    """
    import torch

    from trainables import Speed, TrainParams, build_augment, flip_views, measure_speed, trained_flips

    def value(name: str, default: Any) -> Any:
        if name in space.fixed:
            return space.fixed[name]
        p = space.params.get(name)
        return p.default_value() if p is not None else default

    bp = space.params.get("backbone")
    backbones = list(bp.choices) if bp is not None and bp.type == "categorical" else [value("backbone", TrainParams.backbone)]
    batch_size = int(value("batch_size", TrainParams.batch_size))
    threads = int(space.fixed.get("threads") or max(1, int(space.search.resources.cpu)))
    device = "cuda" if space.search.resources.gpu > 0 and torch.cuda.is_available() else "cpu"
    # Validation and test are predicted once per test-time view (the default trial's flips; see TrainParams.tta).
    views = 1
    if value("tta", TrainParams.tta):
        aug = build_augment(str(value("augment", TrainParams.augment)), image_size=int(dataset.image_size),
                            hflip=value("hflip", None), vflip=value("vflip", None))
        views = len(flip_views(trained_flips(aug)))
    speeds = []
    measured = backbones[:4]  # a handful is enough for a mean; each takes about a second
    for backbone in measured:
        s = measure_speed(
            str(backbone), image_size=int(dataset.image_size), channels=int(dataset.channels),
            num_classes=int(dataset.num_classes), batch_size=batch_size, threads=threads,
            head=str(value("head", "linear")), device=device,
        )
        speeds.append(Speed(train_s=s.train_s, eval_s=s.eval_s * views))
        if echo is not None:
            echo(f"[medsweep] speed of {backbone} at {dataset.image_size}px on {threads} thread(s): "
                 f"{1 / s.train_s:.0f} training images/s, {1 / s.eval_s:.0f} evaluated/s"
                 + (f" ({views} test-time views each)" if views > 1 else ""))
    splits = dataset.splits

    def size(chosen: list[Any]) -> Sizing:
        return size_trials(
            n_train=len(splits["train"]),
            n_val=len(splits["val"]),
            n_test=len(splits["test"]),
            batch_size=batch_size,
            train_s=float(sum(s.train_s for s in chosen) / len(chosen)),
            eval_s=float(sum(s.eval_s for s in chosen) / len(chosen)),
            budget_s=budget_s,
            concurrency=concurrency,
            reduction_factor=float(space.search.scheduler.reduction_factor or 3),
            full_trials=full_trials,
            min_full_trials=min_full_trials,
        )

    def equal_time(sized: Sizing, kept: list[int]) -> Sizing:
        return equal_time_rounds(
            sized, [(str(measured[i]), speeds[i]) for i in kept], n_val=len(splits["val"]), n_test=len(splits["test"]),
            reduction_factor=float(space.search.scheduler.reduction_factor or 3),
        )

    sizing = size(speeds)
    fastest_i = min(range(len(speeds)), key=lambda i: speeds[i].train_s)
    fastest = speeds[fastest_i].train_s
    slow = [i for i, s in enumerate(speeds) if s.train_s > SLOW_FACTOR * fastest]
    if sizing.epoch_samples is None or not slow or bp is None:
        return equal_time(sizing, list(range(len(speeds))))
    # Only now, when a trial cannot train full passes: on a set that fits, a deeper backbone costs
    # epochs it can spare. Backbones past the measured handful stay (their speed is not known).
    kept = [b for i, b in enumerate(measured) if i not in slow] + list(backbones[len(measured):])
    left_out = tuple((str(measured[i]), 1.0 / speeds[i].train_s) for i in slow)
    resized = size([s for i, s in enumerate(speeds) if i not in slow])
    if echo is not None:
        names = ", ".join(f"{b} ({ips:.0f} images/s)" for b, ips in left_out)
        echo(f"[medsweep] epochs: auto leaves out {names}: more than {SLOW_FACTOR:g}x slower than "
             f"{measured[fastest_i]} ({1 / fastest:.0f} images/s), "
             f"when no trial fits a full pass {MIN_ROUNDS} times; set a number of epochs to keep every backbone")
    resized = equal_time(resized, [i for i in range(len(speeds)) if i not in slow])
    return dataclasses.replace(resized, backbones=tuple(str(b) for b in kept), left_out=left_out)
