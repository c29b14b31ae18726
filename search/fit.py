"""Run one trial without a sweep: ``python -m search.fit FILE.yaml --out DIR [--set key=value ...]``.

Each searched parameter takes its default (its ``default``, first choice, or midpoint).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from trainables import TrainingDiverged
from trainables.cli import cli_errors

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m search.fit", description=__doc__.splitlines()[0])
    parser.add_argument("space", help="a space file, e.g. spaces/cxr.yaml")
    parser.add_argument("--out", required=True, help="output directory (metrics.csv, checkpoint/, predictions_*.parquet)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value: a training parameter (epochs=5) or a dotted path (data.root=/data)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if there is one")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    diverged = (TrainingDiverged, 1, lambda exc: f"medsweep: error: {exc} (outputs of the epochs before it are in {args.out})")
    with cli_errors(args.space, debug=args.debug, also=[diverged]) as cli:
        from trainables import train

        from ._run import trial_constants
        from ._space import load_space

        space = load_space(args.space, overrides=args.overrides)
        if space.auto_epochs:
            # As long as one full-length trial of the sweep would train.
            from ._run import size_standalone

            space = size_standalone(space)
        # The same constants a sweep's trials get, so the best epoch is picked by the space's metric.
        config = {**space.defaults(), **trial_constants(space), "_out_dir": args.out, "_resume": args.resume}
        row = train(config) or {}  # standalone, train returns the last epoch's row
    if cli.status:
        return cli.status
    print(f"[medsweep] done: best {row.get('best_score', float('nan')):.4f} at epoch {row.get('best_epoch')}; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
