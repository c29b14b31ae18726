"""What every ``python -m`` command shares: bad input ends in one line on stderr and exit status 2.

Example:
    >>> from trainables import ConfigError
    >>> from trainables.cli import cli_errors
    >>> def main(argv=None) -> int:
    ...     with cli_errors("spaces/cxr.yaml", debug=False) as cli:
    ...         raise ConfigError("unknown key 'epoch'", field="fixed.epoch")
    ...     return cli.status
    >>> main()            # prints "medsweep: error: spaces/cxr.yaml: fixed.epoch: unknown key 'epoch'"
    2
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TypeVar

from ._errors import ConfigError, cli_error_line

__all__ = ["cli_error_line", "cli_errors"]

_T = TypeVar("_T", bound="cli_errors")
# (exception type, exit status, the line printed for it)
Handler = tuple[type[BaseException], int, Callable[[BaseException], str]]


class cli_errors:  # used as a context manager, named like one (contextlib.suppress)
    """Catch a command's bad input: print ``medsweep: error: ...`` to stderr and set ``status`` (2).

    Args:
        path: what the error names when it names no file itself (the space file, the run folder).
        debug: re-raise instead (the command's ``--debug``), to show the traceback.
        also: further ``(exception type, exit status, message)`` handlers, e.g. an interrupt (130).

    ``status`` is 0 until an error is caught; ``return cli.status`` after the block.
    """

    def __init__(self, path: str, *, debug: bool = False, also: Sequence[Handler] = ()) -> None:
        self.path = path
        self.debug = debug
        self.also = tuple(also)
        self.status = 0

    def __enter__(self: _T) -> _T:  # noqa: PYI019 - typing.Self needs Python 3.11; 3.10 is supported
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> bool:
        if exc is None or self.debug:
            return False
        if isinstance(exc, ConfigError):
            print(cli_error_line(exc, self.path), file=sys.stderr)
            self.status = 2
            return True
        for handled, status, message in self.also:
            if isinstance(exc, handled):
                print(message(exc), file=sys.stderr)
                self.status = status
                return True
        return False
