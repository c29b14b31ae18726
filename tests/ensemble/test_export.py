"""The export is atomic: a failure mid-export leaves the previous bundle as it was and no temporary folder."""

from __future__ import annotations

import json

import pytest

from ensemble import StackingEnsemble, export_bundle, select_members, verify_bundle

pytestmark = pytest.mark.ray  # the shared sweep starts a local Ray


@pytest.fixture
def fitted(sweep):
    sel = select_members(sweep.run_dir, top_k=2, selection="top_k")
    ens = StackingEnsemble(task=sel.task, combiners=("mean", "greedy"), n_folds=3, temperature=False).fit(sel.P_val, sel.y_val)
    return sel, ens


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("stage", ["report", "manifest", "rename"])
def test_a_failure_mid_export_leaves_the_previous_bundle_intact(fitted, bundle_copy, monkeypatch, stage):
    import ensemble._bundle as bundle_mod

    sel, ens = fitted
    before = _snapshot(bundle_copy)

    def boom(*args, **kwargs):
        raise RuntimeError(f"simulated failure at {stage}")

    if stage == "report":
        monkeypatch.setattr(bundle_mod, "write_report", boom)
    elif stage == "manifest":
        monkeypatch.setattr(bundle_mod, "build_manifest", boom)
    else:  # the old bundle is moved aside, then renaming the new one into place fails
        real = bundle_mod.os.replace
        calls = []

        def replace(src, dst):
            calls.append((src, dst))
            if len(calls) == 2:
                raise OSError("simulated failure at rename")
            return real(src, dst)

        monkeypatch.setattr(bundle_mod.os, "replace", replace)
    with pytest.raises((RuntimeError, OSError), match="simulated failure"):
        export_bundle(sel, ens, out=bundle_copy, n_boot=20)
    monkeypatch.undo()
    assert _snapshot(bundle_copy) == before
    verify_bundle(bundle_copy)
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["bundle"], "no temporary folder is left"


def test_a_successful_export_replaces_the_bundle_and_leaves_nothing_else(fitted, bundle_copy):
    sel, ens = fitted
    export_bundle(sel, ens, out=bundle_copy, n_boot=20)
    manifest, _ = verify_bundle(bundle_copy)
    assert len(manifest["members"]) == 2 and manifest["combiner"]["name"] in ("mean", "greedy")
    assert len(json.loads((bundle_copy / "metrics.json").read_text())) > 10
    assert sorted(p.name for p in bundle_copy.parent.iterdir()) == ["bundle"]
    # the previous bundle's extra members are gone with it
    assert len(list((bundle_copy / "members").iterdir())) == 2


def test_a_temporary_folder_of_a_killed_export_is_cleaned_up(fitted, bundle_copy):
    sel, ens = fitted
    stale = bundle_copy.parent / ".bundle.tmp-999999999"  # no such process
    stale.mkdir()
    (stale / "half.safetensors").write_bytes(b"x")
    export_bundle(sel, ens, out=bundle_copy, n_boot=20)
    assert not stale.exists()


def test_float16_member_weights_halve_the_bundle_and_keep_the_predictions(fitted, sweep, tmp_path):
    """ensemble.weights_dtype: float16 stores members in half precision; the members still run in float32."""
    import dataclasses
    from pathlib import Path

    import numpy as np
    from safetensors import safe_open

    from ensemble import load

    sel, ens = fitted
    full = export_bundle(sel, ens, out=tmp_path / "f32")
    half_sel = dataclasses.replace(sel, settings=dataclasses.replace(sel.settings, weights_dtype="float16"))
    half = export_bundle(half_sel, ens, out=tmp_path / "f16")
    size = lambda b: sum(p.stat().st_size for p in (b / "members").glob("*.safetensors"))  # noqa: E731
    assert size(half) < 0.6 * size(full)
    with safe_open(str(next((half / "members").glob("*.safetensors"))), framework="pt") as f:
        dtypes = {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118 - a safetensors handle, not a dict
    assert "torch.float16" in dtypes and "torch.float32" not in dtypes
    images = sorted(str(p) for p in Path(sweep.images).rglob("*.png"))[:24]
    a, b = load(full, device="cpu").predict_proba(images), load(half, device="cpu").predict_proba(images)
    assert np.abs(a - b).max() < 1e-3
    verify_bundle(half)
