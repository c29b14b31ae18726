"""Space files and sweeps: read a YAML space, run Ray Tune with Optuna and ASHA, write a leaderboard."""

from ._space import Param, Space, apply_overrides, load_space, parse_override

__all__ = ["Param", "Space", "apply_overrides", "load_space", "parse_override"]
