"""Show a sweep: ``python -m search.show RUN_DIR [--top N] [--html]``.

Prints the leaderboard (a running sweep's from Tune's experiment state) and the ensemble's test
metrics; ``--html`` writes ``RUN_DIR/report.html`` again from what the folder holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from trainables import ConfigError
from trainables.cli import cli_errors

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    Example:
        >>> main(["runs/cxr"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m search.show", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a sweep's run folder, e.g. runs/cxr (finished or running)")
    parser.add_argument("--top", type=int, default=20, help="leaderboard rows to print (default 20)")
    parser.add_argument("--html", action="store_true", help="also write RUN_DIR/report.html")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    root = Path(args.run_dir)
    with cli_errors(str(root), debug=args.debug) as cli:
        if not root.is_dir():
            raise ConfigError("is not a folder; pass a sweep's run folder such as runs/cxr", origin=str(root))
        from ._leaderboard import format_table
        from ._show import current_leaderboard, ensemble_text, read_space

        space = read_space(root)
        frame, where = current_leaderboard(root, space)
        counts = frame["status"].value_counts().to_dict() if not frame.empty else {}
        summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "no trials yet"
        cfg = space.search
        print(f"sweep {space.name}: {len(frame)}/{cfg.n_trials} trials ({summary}); {cfg.metric} ({cfg.mode}); from {where}")
        print(format_table(frame, shown=list(space.params), top=args.top))
        print()
        print(ensemble_text(root))
        if args.html:
            from ._html import write_html_report

            print(f"report: {write_html_report(root)}")
    return cli.status


if __name__ == "__main__":
    sys.exit(main())
