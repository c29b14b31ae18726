"""The one error type for bad user input: a single line naming the file, the field and the fix."""

from __future__ import annotations

import difflib
from typing import Iterable


class ConfigError(ValueError):
    """Bad user input (a space file, a data folder, a CLI flag).

    The message is one line: ``<file>: <field>: <what is wrong>; <how to fix it>``.
    Command-line entry points print it without a traceback and exit with status 2.
    """

    def __init__(self, message: str, *, origin: str | None = None, field: str | None = None) -> None:
        parts = [p for p in (origin, field) if p]
        text = ": ".join(parts + [message]) if parts else message
        super().__init__(" ".join(text.split("\n")))
        self.message = message
        self.origin = origin
        self.field = field


def did_you_mean(name: str, valid: Iterable[str], *, n: int = 3) -> str:
    """Return ``"; did you mean 'x'?"`` for the closest valid names, or ``""``."""
    close = difflib.get_close_matches(str(name), list(valid), n=n, cutoff=0.6)
    if not close:
        return ""
    return "; did you mean " + " or ".join(repr(c) for c in close) + "?"
