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
    assert manifest["task"] == "multi-label" and len(manifest["class_names"]) >= 20 and "spleen" in manifest["class_names"]
    data = manifest["data"]
    assert data["grouped_by"] == "slab of consecutive slices"
    assert sum(s["images"] for s in data["splits"].values()) == 30
    # The validation predictions carried the slabs, so the stacking CV folded by them.
    assert result.selection.groups_val is not None and len(set(result.selection.groups_val)) >= 2
    assert "patients" in _data_splits(run_dir)
    metrics = json.loads((result.path / "metrics.json").read_text())
    assert metrics["data.val.patients"] == data["splits"]["val"]["patients"] and "data.test.prevalence.liver" in metrics


def test_volume_labels_pooled_per_volume_reach_the_ensemble(ray_session, tmp_path):
    """Slices train, the ensemble fits and reports on one pooled prediction per volume."""
    import yaml

    from ensemble.build import build_ensemble
    from search.run import main
    from tests.trainables.test_medical import write_volumes

    root = tmp_path / "vols"
    root.mkdir()
    write_volumes(root, n=16)
    space = {
        "name": "vol",
        "data": {"source": "nifti", "volumes": str(root), "labels_csv": str(root / "volumes.csv"), "label_columns": "finding",
                 "window": {"center": 100, "width": 600}, "pool": "mean", "val_fraction": 0.35, "test_fraction": 0.25,
                 "cache_dir": str(tmp_path / "cache")},
        "fixed": {"backbone": "test_resnet", "epochs": 2, "image_size": 16, "threads": 1, "batch_size": 8, "seed": 0},
        "space": {"lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True}},
        "search": {"metric": "val_volume_auroc", "mode": "max", "n_trials": 2, "sampler": {"type": "random", "seed": 0},
                   "scheduler": {"type": "fifo"}, "resources": {"cpu": 1, "gpu": 0}},
        "ensemble": {"top_k": 2, "n_folds": 2, "combiners": ["mean", "logistic"]},
    }
    (tmp_path / "vol.yaml").write_text(yaml.safe_dump(space))
    assert main([str(tmp_path / "vol.yaml"), "--out", str(tmp_path / "runs"), "--no-ensemble", "--no-report"]) == 0
    result = build_ensemble(tmp_path / "runs" / "vol", n_boot=20, echo=None)
    sel = result.selection
    assert all(i.startswith("vol") and ":" not in i for i in sel.val_ids + sel.test_ids)  # volumes, not slices
    assert len(sel.val_ids) + len(sel.test_ids) < 16 and sel.P_val.shape[1] == len(sel.val_ids)
    assert any("pooled per volume (mean)" in n for n in sel.notes)
