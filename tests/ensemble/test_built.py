"""``read_ensemble``: a built ensemble read back from its folder, as ``search.show`` and the report read it."""

from __future__ import annotations

import json

import pytest

from ensemble import BuiltEnsemble, read_ensemble
from trainables import ConfigError

MANIFEST = {
    "task": "binary",
    "best_single": "b2",
    "members": [{"trial_id": "a1"}, {"trial_id": "b2"}],
    "combiner": {"name": "logistic", "settings": {"C": 1.0}, "state": {"n_folds": 3}},
    "data": {"split_report": {"splits": {"test": {"images": 4}}}},
}
METRICS = {"test.ensemble.auroc": 0.91, "test.best_single.auroc": 0.88, "val_cv.ensemble.auroc": 0.9}


def write(folder, manifest=MANIFEST, metrics=METRICS):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_what_a_built_ensemble_records(tmp_path):
    built = read_ensemble(write(tmp_path / "ensemble"))
    assert isinstance(built, BuiltEnsemble)
    assert (built.combiner, built.settings, built.n_folds) == ("logistic", {"C": 1.0}, 3)
    assert built.members == ["a1", "b2"] and built.best_single == "b2" and built.task == "binary"
    assert built.cv_metrics == {"auroc": 0.9}
    assert built.split_report == {"splits": {"test": {"images": 4}}}
    table = built.comparison()
    assert "best single (b2)" in table and "0.91" in table


def test_none_when_not_built_and_one_line_when_damaged(tmp_path):
    assert read_ensemble(tmp_path / "nothing") is None
    folder = write(tmp_path / "ensemble")
    (folder / "metrics.json").write_text("[1, 2]")
    with pytest.raises(ConfigError, match=r"metrics\.json: is not a JSON object; rebuild it"):
        read_ensemble(folder)

