"""Shipped space files; ``spaces.path("cxr")`` gives the installed copy's path."""

from pathlib import Path

__all__ = ["path", "names"]

_HERE = Path(__file__).resolve().parent


def names() -> list[str]:
    """Names of the shipped spaces (file stems)."""
    return sorted(p.stem for p in _HERE.glob("*.yaml"))


def path(name: str) -> Path:
    """Path of a shipped space by name, e.g. ``path("cxr")``."""
    p = _HERE / f"{name}.yaml"
    if not p.is_file():
        raise FileNotFoundError(f"no shipped space {name!r}; shipped: {', '.join(names())}")
    return p
