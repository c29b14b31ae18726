"""Run one trial without a sweep: ``python -m trainables.fit FILE.yaml --out DIR [--set key=value ...]``.

Each searched parameter takes its default (its ``default``, first choice, or midpoint).
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from ._errors import ConfigError, cli_error_line
from ._train import TrainingDiverged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainables.fit", description=__doc__.splitlines()[0])
    parser.add_argument("space", help="a space file, e.g. spaces/cxr.yaml")
    parser.add_argument("--out", required=True, help="output directory (metrics.csv, checkpoint/, predictions_*.parquet)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a value: a training parameter (epochs=5) or a dotted path (data.root=/data)")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint if there is one")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    try:
        from search._run import trial_constants
        from search._space import load_space

        from ._train import train

        space = load_space(args.space, overrides=args.overrides)
        if space.auto_epochs:
            # As long as one full-length trial of the sweep would train.
            from search._run import size_standalone

            space = size_standalone(space)
        # The same constants a sweep's trials get, so the best epoch is picked by the space's metric.
        config = {**space.defaults(), **trial_constants(space), "_out_dir": args.out, "_resume": args.resume}
        row = train(config) or {}  # standalone: the last epoch's row (None only under Tune)
    except ConfigError as exc:
        if args.debug:
            raise
        print(cli_error_line(exc, args.space), file=sys.stderr)
        return 2
    except TrainingDiverged as exc:
        if args.debug:
            raise
        print(f"medsweep: error: {exc} (outputs of the epochs before it are in {args.out})", file=sys.stderr)
        return 1
    print(f"[medsweep] done: best {row.get('best_score', float('nan')):.4f} at epoch {row.get('best_epoch')}; outputs in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
