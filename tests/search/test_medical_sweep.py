"""End to end on real CT: ``spaces/ct_organs.yaml`` (slices of a real volume, organ labels from its label map)
sweeps under Ray to a bundle whose manifest records how the data were split and grouped."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .conftest import REPO

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _ct() -> Path:
    roots = [Path(os.environ["MEDSWEEP_DATA_DIR"])] if os.environ.get("MEDSWEEP_DATA_DIR") else []
    roots.append(REPO.parent / "shared" / "datasets")
    for root in roots:
        if (root / "ct-totalseg" / "example_seg.nii.gz").is_file():
            return root / "ct-totalseg"
    pytest.skip("shared CT data not found (set MEDSWEEP_DATA_DIR)")


def test_ct_organs_sweep_runs_to_a_bundle(ray_session, tmp_path):
    from ensemble.build import build_ensemble
    from search._html import _data_splits
    from search.run import main

    ct = _ct()
    argv = [
        str(REPO / "spaces" / "ct_organs.yaml"),
        "--set", f"data.volumes={ct / 'example_ct_sm.nii.gz'}",
        "--set", f"data.label_maps={ct / 'example_seg.nii.gz'}",
        "--set", f"data.cache_dir={tmp_path / 'cache'}",
        "--set", "backbone=test_resnet", "--set", "epochs=2", "--set", "image_size=32", "--set", "threads=1",
        "--set", "search.n_trials=2", "--set", "search.scheduler.max_t=2", "--set", "search.scheduler.grace_period=1",
        "--set", "search.resources.cpu=1", "--set", "ensemble.top_k=2", "--set", "ensemble.n_folds=2",
        "--out", str(tmp_path / "runs"), "--no-ensemble", "--no-report",
    ]
    assert main(argv) == 0
    run_dir = tmp_path / "runs" / "ct_organs"
    result = build_ensemble(run_dir, n_boot=20, echo=None)
    manifest = json.loads((result.path / "manifest.json").read_text())
    assert manifest["task"] == "multi-label" and len(manifest["class_names"]) >= 20
    data = manifest["data"]
    assert data["grouped_by"] == "slab of consecutive slices"
    assert sum(s["images"] for s in data["splits"].values()) == 30
    # The validation predictions carried the slabs, so the stacking CV folded by them.
    assert result.selection.groups_val is not None and len(set(result.selection.groups_val)) >= 2
    assert "patients" in _data_splits(run_dir)
