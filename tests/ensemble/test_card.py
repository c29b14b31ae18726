"""Every bundle says what it is: MODEL_CARD.md (under the manifest's sha256 check) and the manifest's provenance."""

from __future__ import annotations

import hashlib
import json
import warnings

import pytest

from ensemble import load, verify_bundle
from ensemble._card import listing_sha256
from trainables import ConfigError

pytestmark = pytest.mark.ray  # the shared sweep starts a local Ray


def manifest_of(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def test_the_card_holds_what_the_bundle_is(sweep):
    bundle = sweep.bundle
    card = (bundle / "MODEL_CARD.md").read_text()
    manifest = manifest_of(bundle)
    metrics = json.loads((bundle / "metrics.json").read_text())
    assert manifest["files"]["MODEL_CARD.md"] == hashlib.sha256(card.encode()).hexdigest()
    for heading in ("# Model card: smoke ensemble", "## Task and classes", "## Data", "## Members and combiner", "## Test metrics",
                    "## Calibration", "## Threshold", "## Search space and budget", "## Intended use and limits",
                    "## How to load it", "## Provenance"):
        assert heading in card, heading
    assert "binary classification" in card and "`normal`, `pneumonia`" in card
    assert "This is not a medical device" in card and "Research use only" in card
    # The figures are the bundle's own.
    auroc, (lo, hi) = metrics["test.ensemble.auroc"], metrics["test.ensemble.auroc_ci95"]
    assert f"| ensemble | {auroc:.4f} |" in card and f"[{lo:.4f}, {hi:.4f}]" in card
    thr = manifest["combiner"]["state"]["threshold"]
    assert f"when its probability is at least **{thr:.4f}**" in card and "Youden's J" in card
    assert f"temperature: {manifest['combiner']['temperature']:.3f}" in card
    for m in manifest["members"]:
        assert f"| `{m['trial_id']}` | test_resnet |" in card
    # The sweep's space and budget, from its space.yaml.
    assert "| `lr` |" in card and "| `batch_size` |" in card and "n_trials 4" in card
    # Images per split and class: 32 generated images per class, split 50/25/25 by the folder source.
    splits = manifest["data"]["split_report"]["splits"]
    assert manifest["data"]["split_report"]["from"] == "data"  # the trials' own report (model.json)
    assert sum(s["images"] for s in splits.values()) == 64
    assert {c: sum(s["counts"][c] for s in splits.values()) for c in ("normal", "pneumonia")} == {"normal": 32, "pneumonia": 32}
    assert f"| test | {splits['test']['images']} |" in card


def test_the_manifest_records_provenance(sweep):
    import timm
    import torch

    manifest = manifest_of(sweep.bundle)
    prov = manifest["provenance"]
    packages = prov["packages"]
    assert packages["torch"] == torch.__version__ and packages["timm"] == timm.__version__
    assert packages["python"].count(".") == 2 and packages["medsweep"]
    assert packages["onnx"] in (None,) or packages["onnx"].count(".") >= 1
    assert prov["medsweep_commit"] is None or len(prov["medsweep_commit"]) == 40
    assert prov["space_sha256"] == hashlib.sha256((sweep.run_dir / "space.yaml").read_bytes()).hexdigest()
    assert prov["seeds"]["sampler"] == 0 and prov["seeds"]["training"] == 0 and prov["seeds"]["ensemble"] == 0
    assert prov["created_utc"].endswith("Z")
    # The data: the image folder hashed by its file list and sizes.
    (entry,) = manifest["data"]["files"]
    digest, n, total = listing_sha256(sweep.images)
    assert entry["key"] == "root" and entry["kind"] == "listing" and entry["sha256"] == digest and entry["files"] == n == 64
    assert manifest["data"]["source"] == "folder"
    assert manifest["sweep"]["budget"]["n_trials"] == 4 and set(manifest["sweep"]["space"]) == {"lr", "batch_size"}


def test_the_card_is_shown_in_the_report(sweep):
    from search._html import _model_card

    section = _model_card(sweep.run_dir)
    assert "<h4>Intended use and limits</h4>" in section and "<b>Research use only. This is not a medical device</b>" in section
    assert section.count("<table>") >= 3


def test_a_tampered_card_fails_the_manifest_check(bundle_copy):
    card = bundle_copy / "MODEL_CARD.md"
    card.write_text(card.read_text().replace("not a medical device", "a medical device"))
    with pytest.raises(ConfigError, match="MODEL_CARD.md does not match its sha256"):
        verify_bundle(bundle_copy)
    with pytest.raises(ConfigError, match="MODEL_CARD.md does not match its sha256"):
        load(bundle_copy)


def test_a_removed_card_fails_the_manifest_check(bundle_copy):
    (bundle_copy / "MODEL_CARD.md").unlink()
    with pytest.raises(ConfigError, match="MODEL_CARD.md is missing"):
        verify_bundle(bundle_copy)


def test_a_bundle_from_another_major_timm_warns_once(bundle_copy):
    import ensemble._bundle as bundle_mod

    manifest = manifest_of(bundle_copy)
    manifest["provenance"]["packages"]["timm"] = "0.9.16"  # the manifest is not among its own hashed files
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    bundle_mod._TIMM_WARNED.clear()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(bundle_copy, device="cpu")
        load(bundle_copy, device="cpu")
    timm_warnings = [w for w in caught if "built with timm 0.9.16" in str(w.message)]
    assert len(timm_warnings) == 1 and "pip install 'timm==0.9.16'" in str(timm_warnings[0].message)
    # The same major version: no warning.
    import timm

    manifest["provenance"]["packages"]["timm"] = timm.__version__.split(".")[0] + ".99.0"
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load(bundle_copy, device="cpu")
    assert not [w for w in caught if "built with timm" in str(w.message)]
