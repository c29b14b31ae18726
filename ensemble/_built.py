"""Reading a built ensemble's folder without loading its members: the metrics, the combiner, the members.

What ``search.show``, the report and the tracking read of ``runs/<name>/ensemble`` (``Bundle`` loads
the weights to predict; this reads two JSON files).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainables.artifacts import read_json_object

from ._bundle import MANIFEST, METRICS

__all__ = ["BuiltEnsemble", "read_ensemble"]


@dataclass(frozen=True)
class BuiltEnsemble:
    """A built ensemble as its ``manifest.json`` and ``metrics.json`` record it.

    Attributes:
        path: the bundle folder.
        metrics: ``metrics.json`` (flat, dotted keys: ``test.ensemble.auroc``, ``val_cv.ensemble.<metric>``, ...).
        manifest: ``manifest.json`` (empty when the folder has none).
    """

    path: Path
    metrics: Mapping[str, Any]
    manifest: Mapping[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return str(self.manifest.get("task", "binary"))

    @property
    def best_single(self) -> str:
        """The trial id of the member with the best validation metric."""
        return str(self.manifest.get("best_single", "?"))

    @property
    def members(self) -> list[str]:
        """The members' trial ids, in the manifest's order."""
        return [str(m.get("trial_id")) for m in self.manifest.get("members") or [] if isinstance(m, dict)]

    @property
    def combiner(self) -> str:
        """The combiner the CV chose (``mean``, ``greedy``, ``logistic``, ...), ``?`` when not recorded."""
        return str(self._combiner.get("name", "?"))

    @property
    def settings(self) -> dict[str, Any]:
        """The chosen combiner's settings."""
        return dict(self._combiner.get("settings") or {})

    @property
    def n_folds(self) -> int | None:
        """The folds of the CV that chose and fitted the combiner, as the fitted state records them."""
        value = (self._combiner.get("state") or {}).get("n_folds")
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    @property
    def cv_metrics(self) -> dict[str, Any]:
        """The ensemble's out-of-fold validation metrics, ``{metric: value}``."""
        prefix = "val_cv.ensemble."
        return {k[len(prefix):]: v for k, v in self.metrics.items() if k.startswith(prefix)}

    @property
    def split_report(self) -> dict[str, Any] | None:
        """Images, patients and class balance per split, as the bundle recorded them (or None)."""
        report = (self.manifest.get("data") or {}).get("split_report")
        return dict(report) if isinstance(report, Mapping) else None

    @property
    def _combiner(self) -> Mapping[str, Any]:
        combiner = self.manifest.get("combiner")
        return combiner if isinstance(combiner, Mapping) else {}

    def comparison(self) -> str:
        """The test metrics of the ensemble next to the best single member, as ``ensemble.build`` prints them."""
        from ._report import format_comparison

        return format_comparison(self, task=self.task)


def read_ensemble(path: str | os.PathLike[str]) -> BuiltEnsemble | None:
    """The ensemble built in ``path`` (a bundle folder such as ``runs/cxr/ensemble``), or None when none is.

    Raises:
        ConfigError: ``metrics.json`` or ``manifest.json`` is there but not a JSON object.

    Example:
        >>> built = read_ensemble("runs/cxr/ensemble")
        >>> built.combiner, built.members, built.metrics["test.ensemble.auroc"]
        ('logistic', ['1a2b3c4d', '5e6f7a8b'], 0.912)
    """
    folder = Path(path)
    if not (folder / METRICS).is_file():
        return None
    return BuiltEnsemble(path=folder, metrics=_read_object(folder / METRICS), manifest=_read_object(folder / MANIFEST) if (folder / MANIFEST).is_file() else {})


def _read_object(path: Path) -> dict[str, Any]:
    return read_json_object(path, fix="rebuild it with python -m ensemble.build RUN_DIR")
