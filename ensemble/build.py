"""Build the ensemble of a finished sweep: ``python -m ensemble.build RUN_DIR [--top-k K] [--out DIR]``.

Takes the sweep's top-k trials, fits the stacking combiners on their validation predictions (the
choice among them by k-fold CV), reports the test split, and exports the bundle (default
``RUN_DIR/ensemble``). No training: only the trials' stored predictions and weights are used.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from trainables import ConfigError
from trainables.cli import cli_errors

from ._report import Summary, format_combiners, format_comparison, summarise
from ._select import Selection, select_members

__all__ = ["BuildResult", "build_ensemble", "main"]


@dataclass
class BuildResult:
    """What ``build_ensemble`` made: the bundle folder, the members, the fitted ensemble and its numbers."""

    path: Path
    selection: Selection
    ensemble: Any  # StackingEnsemble
    summary: Summary

    @property
    def metrics(self) -> dict[str, Any]:
        return self.summary.metrics


def build_ensemble(
    run_dir: str | Path,
    *,
    top_k: int | None = None,
    max_per_backbone: int | None = None,
    selection: str | None = None,
    out: str | Path | None = None,
    n_boot: int = 1000,
    echo: Callable[[str], None] | None = print,
) -> BuildResult:
    """Select, fit, evaluate and export the stacking ensemble of the sweep in ``run_dir``.

    Args:
        run_dir: a finished sweep's folder (``leaderboard.parquet``, ``space.yaml``, the trials).
        top_k: members; default the space's ``ensemble.top_k`` (5).
        max_per_backbone: at most this many members per backbone.
        selection: ``greedy`` (forward selection over the best trials) or ``top_k``; default the space's.
        out: the bundle folder; default ``run_dir/ensemble``.
        n_boot: bootstrap resamples for the 95 % intervals.
        echo: where the tables go (``print``); ``None`` for silence.

    Raises:
        ConfigError: not a sweep folder, too few usable trials, or members that cannot be stacked.

    Example:
        >>> result = build_ensemble("runs/cxr", top_k=3)
        >>> result.metrics["test.ensemble.auroc"] >= result.metrics["test.best_single.auroc"]
        True
    """
    from ._bundle import export_bundle
    from ._stacking import StackingEnsemble

    say = echo or (lambda _: None)
    chosen = select_members(run_dir, top_k=top_k, max_per_backbone=max_per_backbone, selection=selection)
    s = chosen.settings
    for note in chosen.notes:
        say(f"ensemble: note: {note}")
    ids = ", ".join(f"{m.trial_id} ({m.backbone}, {chosen.metric} {m.val_score:.4f})" for m in chosen.members)
    say(f"ensemble: {len(chosen.members)} of {chosen.n_available} usable trials: {ids}")
    ensemble = StackingEnsemble(
        task=chosen.task,
        combiners=s.combiners,
        n_folds=s.n_folds,
        mlp_hidden=s.mlp_hidden,
        greedy_rounds=s.greedy_rounds,
        temperature=s.temperature,
        class_bias=s.class_bias,
        metric=s.stacking_metric(chosen.metric),
        seed=s.seed,
        threshold=s.threshold,
    )
    try:
        ensemble.fit(chosen.P_val, chosen.y_val, groups=chosen.groups_val)
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(
            f"cannot stack the members' validation predictions: {' '.join(str(exc).split())}; "
            "a larger validation split helps",
            origin=str(chosen.run_dir),
        ) from None
    if getattr(ensemble, "temperature_note_", None):
        say(f"ensemble: warning: {ensemble.temperature_note_}")
    summary = summarise(chosen, ensemble, n_boot=n_boot, seed=s.seed)
    path = export_bundle(chosen, ensemble, out=out, summary=summary)
    say(f"ensemble: combiners by {ensemble.n_folds_}-fold CV on validation ({ensemble.metric}; * = chosen, "
        f"temperature {ensemble.temperature_:.3g}):")
    say(_indent(format_combiners(summary)))
    say("ensemble: test split")
    say(_indent(format_comparison(summary, task=chosen.task)))
    say(f"ensemble: bundle written to {path} (manifest.json, metrics.json, MODEL_CARD.md, members/, report/)")
    return BuildResult(path=path, selection=chosen, ensemble=ensemble, summary=summary)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    Example:
        >>> main(["runs/cxr", "--top-k", "3"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m ensemble.build", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a finished sweep's folder, e.g. runs/cxr")
    parser.add_argument("--top-k", type=int, default=None, help="members: the best K trials (default: the space's ensemble.top_k, else 5)")
    parser.add_argument("--max-per-backbone", type=int, default=None, help="at most this many members per backbone")
    parser.add_argument("--selection", default=None, help="greedy (forward selection over the best trials) or top_k (default: the space's, else greedy)")
    parser.add_argument("--out", default=None, help="the bundle folder (default RUN_DIR/ensemble)")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples for the 95%% intervals (default 1000)")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with cli_errors(args.run_dir, debug=args.debug) as cli:
        if args.n_boot < 1:
            raise ConfigError(f"must be an integer >= 1, got {args.n_boot}", field="--n-boot")
        build_ensemble(
            args.run_dir, top_k=args.top_k, max_per_backbone=args.max_per_backbone, selection=args.selection,
            out=args.out, n_boot=args.n_boot,
        )
    return cli.status


if __name__ == "__main__":
    sys.exit(main())
