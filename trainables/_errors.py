"""The one error type for bad user input: a single line naming the file, the field and the fix."""

from __future__ import annotations

import difflib
from typing import Any, Iterable, Mapping


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


def check_keys(
    raw: Mapping[str, Any],
    valid: Iterable[str],
    *,
    origin: str | None,
    prefix: str,
    what: str | None = None,
    also_valid: Iterable[str] = (),
) -> None:
    """Fail on the first key of ``raw`` not in ``valid``, with a did-you-mean and the valid list.

    ``also_valid``: keys the caller has already taken out of ``raw``; a typo of one of them still
    gets its did-you-mean and shows in the list.
    """
    allowed = set(valid)
    shown = allowed | set(also_valid)
    for key in raw:
        if key not in allowed:
            where = f" in {what}" if what else ""
            raise ConfigError(
                f"unknown key {key!r}{where}{did_you_mean(str(key), shown)}; valid keys: {', '.join(sorted(shown))}",
                origin=origin,
                field=f"{prefix}.{key}",
            )


def cli_error_line(exc: ConfigError, path: str) -> str:
    """The one line a command prints for bad input; ``path`` names the file when the error does not."""
    return f"medsweep: error: {exc if exc.origin else f'{path}: {exc}'}"
