"""Space files and sweeps: read a YAML space, run Ray Tune with Optuna and ASHA, write a leaderboard."""

from ._html import write_html_report
from ._leaderboard import read_leaderboard, tune_leaderboard
from ._run import DefineByRun, describe, run_sweep, trial_constants
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
    "read_leaderboard",
    "run_sweep",
    "trial_constants",
    "tune_leaderboard",
    "write_html_report",
]
