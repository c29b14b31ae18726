"""Moved: one trial without a sweep is ``python -m search.fit SPACE.yaml --out DIR`` (or ``medsweep-fit``).

A space file is the search layer's to read; the trainables stay below it and import nothing of it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

MOVED = "medsweep: error: python -m trainables.fit is now python -m search.fit (same arguments), or medsweep-fit"


def main(argv: Sequence[str] | None = None) -> int:
    """Print where the command went, one line on stderr; exit status 2.

    Example:
        >>> main(["spaces/cxr.yaml", "--out", "runs/cxr-fit"])   # prints the line, returns 2
        2
    """
    print(MOVED, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
