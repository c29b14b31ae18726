"""Predict with an ensemble bundle: ``python -m ensemble.predict BUNDLE INPUT... [--out predictions.csv] [--tta | --no-tta]``.

INPUT: image files, folders (searched recursively for image files) or a CSV with a ``path`` column
(relative paths are taken from the CSV's folder). One row per image: ``path``, ``prob_<class>``...,
``predicted`` (the class, or for multi-label the labels above 0.5 joined with ``;``).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Sequence

from trainables import ConfigError
from trainables.cli import cli_errors

__all__ = ["collect_inputs", "main", "predict_files"]


def collect_inputs(inputs: Sequence[str | os.PathLike]) -> list[str]:
    """Image paths from files, folders (recursive, sorted) and CSVs with a ``path`` column, in the given order."""
    import pandas as pd

    from trainables import IMAGE_EXTENSIONS

    out: list[str] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(
                str(f) for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS and not f.name.startswith(".")
            )
            if not found:
                raise ConfigError(f"holds no image files ({', '.join(IMAGE_EXTENSIONS)})", origin=str(p))
            out.extend(found)
        elif p.suffix.lower() == ".csv":
            if not p.is_file():
                raise ConfigError("no such CSV file", origin=str(p))
            try:
                frame = pd.read_csv(p)
            except Exception as exc:  # noqa: BLE001 - pandas raises several kinds for a bad file
                raise ConfigError(f"not a readable CSV ({' '.join(str(exc).split())[:120]})", origin=str(p)) from None
            if "path" not in frame.columns:
                raise ConfigError(f"needs a `path` column of image files; it has {', '.join(map(str, frame.columns))}", origin=str(p))
            for value in frame["path"].dropna().astype(str):
                q = Path(value).expanduser()
                out.append(str(q if q.is_absolute() else p.parent / q))
        elif p.is_file():
            out.append(str(p))
        else:
            raise ConfigError("no such file or folder", origin=str(p))
    return out


def predict_files(bundle, paths: Sequence[str], *, tta: bool | None = None, batch_size: int = 64):
    """A frame with one row per path: ``path``, ``prob_<class>``..., ``predicted``."""
    import pandas as pd

    probs = bundle.predict_proba(list(paths), tta=tta, batch_size=batch_size)
    frame = pd.DataFrame({"path": list(paths)})
    for j, name in enumerate(bundle.class_names):
        frame[f"prob_{name}"] = probs[:, j]
    frame["predicted"] = bundle.labels_of(probs)
    return frame


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    Example:
        >>> main(["runs/cxr/ensemble", "scans/", "--out", "predictions.csv"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m ensemble.predict", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="an ensemble bundle folder, e.g. runs/cxr/ensemble")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders, or CSV files with a `path` column")
    parser.add_argument("--out", default=None, help="write the rows to this CSV (default: print them)")
    views = parser.add_mutually_exclusive_group()
    views.add_argument("--tta", dest="tta", action="store_const", const=True, default=None,
                       help="add the horizontal mirror for members that do not already average over it "
                            "(by default each member averages over the flips it trained with, as the ensemble was fitted)")
    views.add_argument("--no-tta", dest="tta", action="store_const", const=False, help="predict the image alone")
    parser.add_argument("--batch-size", type=int, default=64, help="images per forward pass (default 64)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the members run (default auto)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with cli_errors(args.bundle, debug=args.debug) as cli:
        from ._bundle import load

        if args.batch_size < 1:
            raise ConfigError(f"must be an integer >= 1, got {args.batch_size}", field="--batch-size")
        paths = collect_inputs(args.inputs)
        bundle = load(args.bundle, device=args.device)
        frame = predict_files(bundle, paths, tta=args.tta, batch_size=args.batch_size)
    if cli.status:
        return cli.status
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, index=False, float_format="%.6g")
        thr = getattr(bundle.combiner, "threshold_", None)
        at = f" ({bundle.class_names[1]} when its probability >= {thr:.4g}, the threshold chosen on validation)" if thr is not None else ""
        print(f"[medsweep] {len(frame)} predictions written to {out}{at}")
    else:
        frame.to_csv(sys.stdout, index=False, float_format="%.6g")
    return 0


if __name__ == "__main__":
    sys.exit(main())
