"""Run a sweep: ``python -m search.run SPACE.yaml [--set key=value ...] [--address ADDR] [--resume] [--dry-run]``.

Ray Tune runs the trials, Optuna (define-by-run) picks their parameters, ASHA stops the weak
ones early; the run folder gets ``leaderboard.parquet``/``.csv`` and ``space.yaml``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Sequence

from trainables import ConfigError
from trainables.cli import cli_errors

__all__ = ["main"]


def main(argv: Sequence[str] | None = None, *, started_at: float | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    ``started_at``: the ``time.perf_counter()`` from which the budget counts (``python -m search.run``
    passes its process start); by default the sweep's own start.

    Example:
        >>> main(["spaces/smoke.yaml", "--set", "data.root=/tmp/images", "--dry-run"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    parser.add_argument("space", nargs="?", default=None,
                        help="a space file, e.g. spaces/cxr.yaml (or --data for the default sweep on a data set)")
    parser.add_argument("--data", default=None, metavar="SOURCE:NAME",
                        help="the default sweep on a data set, no space file needed: medmnist:NAME or folder:PATH")
    parser.add_argument("--budget", default=None, metavar="DURATION",
                        help="the sweep's time budget (900, 15m, 1h30m): trials keep starting until it is spent; "
                        "the same as --set search.time_budget_s=SECONDS")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value: a training parameter (epochs=5) or a dotted path "
                        "(data.root=/data, search.n_trials=20)")
    parser.add_argument("--address", default=None,
                        help="join a running Ray cluster (auto, or HOST:PORT); default the file's ray.address, else a local Ray")
    parser.add_argument("--resume", action="store_true",
                        help="continue the sweep in the run folder: finished trials are kept, the Optuna history restored")
    parser.add_argument("--dry-run", action="store_true", help="print the resolved space and the trial budget, then exit")
    parser.add_argument("--no-ensemble", action="store_true", help="skip the ensemble step after the sweep")
    parser.add_argument("--no-report", action="store_true",
                        help="skip report.html (write it later with python -m search.show RUN_DIR --html)")
    parser.add_argument("--out", default=None,
                        help="where run folders go (a path or a URI such as s3://bucket/sweeps); the sweep writes "
                        "OUT/<name>/. Default: the file's `storage`, else ./runs")
    parser.add_argument("--mlflow", default=None, metavar="URI",
                        help="log every trial and the ensemble to MLflow at URI (http://HOST:PORT, sqlite:///mlflow.db, "
                        "a folder); the same as --set tracking.mlflow.uri=URI")
    parser.add_argument("--verbose", action="store_true", help="show Ray's own progress and logs")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    interrupted = (KeyboardInterrupt, 130, lambda _: "medsweep: interrupted; continue the sweep with --resume")
    where = args.space or (f"--data {args.data}" if args.data else "search.run")
    with cli_errors(where, debug=args.debug, also=[interrupted]) as cli:
        from ._run import describe, run_dir_of, run_sweep
        from ._space import load_space

        from ._budget import parse_duration
        from ._space import space_from_data

        overrides = list(args.overrides)
        if args.mlflow is not None:
            overrides.append(f"tracking.mlflow.uri={args.mlflow}")
        if args.budget is not None:
            overrides.append(f"search.time_budget_s={parse_duration(args.budget)}")
        if (args.space is None) == (args.data is None):
            raise ConfigError("give a space file (python -m search.run spaces/cxr.yaml) or --data medmnist:NAME, not both or neither",
                              field="space" if args.space is None else "--data")
        space = load_space(args.space, overrides=overrides) if args.space else space_from_data(args.data, overrides=overrides)
        if args.dry_run:
            print(describe(space, run_dir=run_dir_of(space, args.out)))
            return 0
        return run_sweep(
            space,
            out=args.out,
            address=args.address,
            resume=args.resume,
            verbose=args.verbose,
            ensemble=not args.no_ensemble,
            report=not args.no_report,
            spent_s=0.0 if started_at is None else time.perf_counter() - started_at,
        )
    return cli.status


def _seconds_since_start() -> float:
    """Seconds since this process started (the interpreter and the imports so far): a user times the whole
    command, so its budget counts them. Read from /proc; 0 where there is none."""
    import os

    try:
        with open("/proc/self/stat") as f:
            # Field 22 (starttime, in clock ticks since boot); the command name before it may hold spaces.
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


if __name__ == "__main__":
    sys.exit(main(started_at=time.perf_counter() - _seconds_since_start()))
