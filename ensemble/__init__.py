"""Stacking ensembles of a sweep's top trials: select, fit, export to a bundle, load it back to predict and explain.

Example:
    >>> from ensemble import build_ensemble, load
    >>> build_ensemble("runs/cxr")                      # writes runs/cxr/ensemble/
    >>> load("runs/cxr/ensemble").predict_proba(["xray.png"])
    >>> export_onnx("runs/cxr/ensemble", "cxr.onnx")         # one ONNX graph, checked against the bundle
"""

from ._built import BuiltEnsemble, read_ensemble
from ._bundle import Bundle, export_bundle, load, verify_bundle
from ._card import model_card
from ._metrics import bootstrap_ci, evaluate, expected_calibration_error, score
from ._report import Summary, format_comparison, summarise
from ._select import EnsembleSettings, Member, Selection, select_members
from ._stacking import COMBINERS, Combiner, StackingEnsemble, register_combiner

__all__ = [
    "COMBINERS",
    "Combiner",
    "BuildResult",
    "BuiltEnsemble",
    "Bundle",
    "EnsembleSettings",
    "OnnxExport",
    "Member",
    "Selection",
    "StackingEnsemble",
    "Summary",
    "bootstrap_ci",
    "build_ensemble",
    "evaluate",
    "expected_calibration_error",
    "export_bundle",
    "export_onnx",
    "format_comparison",
    "load",
    "model_card",
    "read_ensemble",
    "register_combiner",
    "score",
    "select_members",
    "summarise",
    "verify_bundle",
]


def __getattr__(name: str):
    # ``build`` is also a command (python -m ensemble.build): imported on first use, so running it
    # does not find the module half-imported by this package.
    if name in ("BuildResult", "build_ensemble"):
        from . import build

        return getattr(build, name)
    if name in ("OnnxExport", "export_onnx"):  # torch.onnx and onnx are imported on first use only
        from . import _onnx

        return getattr(_onnx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
