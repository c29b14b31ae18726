"""Space files and sweeps: read a YAML space, run Ray Tune with Optuna and ASHA, write a leaderboard."""

from ._space import (
    MLflowConfig,
    Objective,
    Param,
    Resources,
    SamplerConfig,
    SchedulerConfig,
    SearchConfig,
    Space,
    TrackingConfig,
    apply_overrides,
    check_metric,
    load_space,
    parse_override,
)
from ._run import DefineByRun, describe, run_sweep, trial_constants

__all__ = [
    "DefineByRun",
    "MLflowConfig",
    "Objective",
    "Param",
    "Resources",
    "SamplerConfig",
    "SchedulerConfig",
    "SearchConfig",
    "Space",
    "TrackingConfig",
    "apply_overrides",
    "check_metric",
    "describe",
    "load_space",
    "parse_override",
    "run_sweep",
    "trial_constants",
]
