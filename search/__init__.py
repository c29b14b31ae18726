"""Space files and sweeps: read a YAML space, run Ray Tune with Optuna and ASHA, write a leaderboard."""

from ._html import write_html_report
from ._leaderboard import read_leaderboard, tune_leaderboard
from ._run import DefineByRun, describe, run_sweep, trial_constants
from ._files import apply_overrides, parse_override
from ._params import Param
from ._sections import (
    MLflowConfig,
    Objective,
    Resources,
    SamplerConfig,
    SchedulerConfig,
    SearchConfig,
    TrackingConfig,
    check_metric,
)
from ._space import Space, load_space

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
