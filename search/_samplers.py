"""Optuna samplers and Tune schedulers by name (``search.sampler.type``, ``search.scheduler.type``).

Heavy imports (Optuna, Ray) happen inside the factories, so loading a space stays light.
"""

from __future__ import annotations

import warnings
from numbers import Integral, Real
from typing import Any

from trainables import Interval, Registry

__all__ = ["SAMPLER", "TUNE_SCHEDULER", "register_sampler", "register_tune_scheduler"]

# A sampler gets the sweep's trial count (``None``: until the budget ends) for its start-up share.
SAMPLER = Registry("Optuna sampler", field="search.sampler.type", context=("n_trials",))
TUNE_SCHEDULER = Registry("Tune scheduler", field="search.scheduler.type")
register_sampler = SAMPLER.register
register_tune_scheduler = TUNE_SCHEDULER.register

_SEED = {"seed": [Interval(Integral, 0, None, closed="left"), None]}
_GRACE = {"grace_period": [Interval(Integral, 1, None, closed="left"), None]}


@register_sampler(
    "tpe", options={**_SEED, "n_startup_trials": [Interval(Integral, 1, None, closed="left"), None]}
)
def _tpe(*, n_trials: int | None = 40, seed: int | None = None, n_startup_trials: int | None = None) -> Any:
    """TPE models the parameters jointly (``multivariate``, ``group`` for the ``when:`` conditions) and
    counts running trials as if they were bad (``constant_liar``), so parallel trials do not all get
    the same suggestion; its random start is a quarter of the sweep unless the file says otherwise."""
    import optuna

    startup = n_startup_trials or max(2, min(10, (n_trials or 40) // 4))
    with warnings.catch_warnings():  # multivariate, group and constant_liar are "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=True
        )


@register_sampler("random", options=_SEED)
def _random(*, n_trials: int | None = 40, seed: int | None = None) -> Any:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


@register_sampler("cmaes", options=_SEED, needs="cmaes")
def _cmaes(*, n_trials: int | None = 40, seed: int | None = None) -> Any:
    import optuna

    return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)


@register_sampler("nsga2", options=_SEED)
def _nsga2(*, n_trials: int | None = 40, seed: int | None = None) -> Any:
    import optuna

    return optuna.samplers.NSGAIISampler(seed=seed)


@register_tune_scheduler(
    "asha",
    options={
        "max_t": [Interval(Integral, 1, None, closed="left"), None],
        **_GRACE,
        "reduction_factor": [Interval(Real, 1, None, closed="neither")],
    },
)
def _asha(*, max_t: int | None = None, grace_period: int | None = 1, reduction_factor: float = 2) -> Any:
    from ray.tune.schedulers import ASHAScheduler

    # Ray's own default when the rungs are not sized yet (the sweep sizes them from the data and budget).
    return ASHAScheduler(
        time_attr="training_iteration", max_t=max_t or 100, grace_period=grace_period or 1,
        reduction_factor=reduction_factor,
    )


@register_tune_scheduler(
    "median", options={**_GRACE, "min_samples_required": [Interval(Integral, 1, None, closed="left")]}
)
def _median(*, grace_period: int | None = 1, min_samples_required: int = 3) -> Any:
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(
        time_attr="training_iteration", grace_period=grace_period or 1, min_samples_required=min_samples_required
    )


@register_tune_scheduler("fifo")
def _fifo() -> Any:
    from ray.tune.schedulers import FIFOScheduler

    return FIFOScheduler()
