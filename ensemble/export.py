"""Export a bundle as one ONNX graph: ``python -m ensemble.export BUNDLE --onnx model.onnx [--opset N] [--images ...]``.

The graph (uint8 images in; probabilities, and for binary bundles the decision, out) is run in
onnxruntime on test-split images (when the sweep's data cache is on this machine) and generated ones,
and written only when it matches ``Bundle.predict_proba`` within the tolerance; the figure is printed
and stored in the bundle's manifest and model card. Needs ``pip install -e ".[export]"``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from trainables.cli import cli_errors

from ._onnx import OPSET, TOLERANCE, OnnxExport, export_onnx

__all__ = ["OnnxExport", "export_onnx", "main"]


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    Example:
        >>> main(["runs/cxr/ensemble", "--onnx", "cxr.onnx"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m ensemble.export", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="the bundle folder, e.g. runs/cxr/ensemble")
    parser.add_argument("--onnx", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", type=int, default=OPSET, help=f"ONNX opset (default {OPSET})")
    parser.add_argument("--images", nargs="+", default=None, help="image files or folders to check the graph on (default: the sweep's test split when cached here)")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help=f"largest difference in probability allowed (default {TOLERANCE:g})")
    parser.add_argument("--no-manifest", action="store_true", help="do not store the figure in the bundle's manifest and card")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with cli_errors(args.bundle, debug=args.debug) as cli:
        images = None
        if args.images:
            from .predict import collect_inputs

            images = collect_inputs(args.images)
        export_onnx(args.bundle, args.onnx, opset=args.opset, images=images, tolerance=args.tolerance, update_manifest=not args.no_manifest)
    return cli.status


if __name__ == "__main__":
    sys.exit(main())
