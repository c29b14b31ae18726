"""The bundle a sweep's ensemble step writes: its files, its metrics, and loading it back (in a fresh process too).

All tests share the package's smoke sweep; those that damage a bundle work on a copy.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ensemble import COMBINERS, StackingEnsemble, load, verify_bundle
from trainables import ConfigError

from .conftest import REPO, run_cli

pytestmark = pytest.mark.ray  # the shared sweep starts a local Ray

PICKLE_SUFFIXES = (".pkl", ".pickle", ".pt", ".pth", ".bin", ".joblib", ".npy", ".npz", ".ckpt")


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())


def write_manifest(bundle: Path, manifest: dict) -> None:
    (bundle / "manifest.json").write_text(json.dumps(manifest))


def board_of(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "leaderboard.parquet").set_index("trial_id")


def test_the_sweep_builds_a_complete_bundle(sweep):
    assert sweep.rc == 0, sweep.stdout + sweep.stderr
    assert "ensemble: bundle written to" in sweep.stdout and "Traceback" not in sweep.stdout + sweep.stderr
    bundle = sweep.bundle
    manifest = manifest_of(bundle)
    for name in ("manifest.json", "metrics.json", "report/roc.png", "report/confusion_matrix.png", "report/calibration.png",
                 "report/classification_report.txt", "report/leaderboard.csv", "report/predictions_test.csv"):
        assert (bundle / name).is_file(), name
    on_disk = {p.relative_to(bundle).as_posix() for p in bundle.rglob("*") if p.is_file()}
    assert set(manifest["files"]) == on_disk - {"manifest.json"}
    # smoke.yaml has no ensemble section: top_k defaults to 5, the sweep has 4 usable trials, so all of them.
    assert len(manifest["members"]) == 4 and "note: only 4 usable trial(s)" in sweep.stdout
    for m in manifest["members"]:
        assert m["weights"] == f"members/{m['trial_id']}.safetensors"
        assert m["sha256"] == manifest["files"][m["weights"]] == hashlib.sha256((bundle / m["weights"]).read_bytes()).hexdigest()
    # No leftovers of the atomic export next to the bundle.
    assert not [p.name for p in sweep.run_dir.iterdir() if p.name.startswith(".ensemble")]


def test_no_file_in_the_bundle_is_a_pickle(sweep):
    from safetensors import safe_open

    for path in (p for p in sweep.bundle.rglob("*") if p.is_file()):
        head = path.read_bytes()[:4]
        assert not head.startswith(b"\x80"), f"{path} starts like a pickle"
        assert not head.startswith(b"PK"), f"{path} is a zip (torch.save) archive"
        assert path.suffix.lower() not in PICKLE_SUFFIXES, path
        assert path.suffix in (".json", ".safetensors", ".png", ".txt", ".csv", ".md"), path
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                assert len(list(f.keys())) > 0


def test_manifest_schema(sweep):
    manifest = manifest_of(sweep.bundle)
    board = board_of(sweep.run_dir)
    assert manifest["format"] == "medsweep-ensemble" and manifest["format_version"] == 1
    assert manifest["task"] == "binary" and manifest["class_names"] == ["normal", "pneumonia"]
    assert manifest["image_size"] == 32 and manifest["channels"] == 1
    assert len(manifest["normalization"]["mean"]) == len(manifest["normalization"]["std"]) == 1
    assert manifest["preprocessing"]["clahe"] is False and manifest["preprocessing"]["border_crop"] is False
    assert manifest["sweep"]["metric"] == "val_auroc" and manifest["sweep"]["mode"] == "max"
    ids = [m["trial_id"] for m in manifest["members"]]
    scores = [m["val_metric"]["value"] for m in manifest["members"]]
    assert scores == sorted(scores, reverse=True), "members come best first"
    for m in manifest["members"]:
        assert m["backbone"] == "test_resnet" and m["head"] == "linear" and m["num_classes"] == 2
        assert m["config"]["lr"] == pytest.approx(board.loc[m["trial_id"], "config/lr"])
        assert m["val_metric"]["value"] == pytest.approx(board.loc[m["trial_id"], "best"])
    assert manifest["best_single"] == ids[int(np.argmax(scores))]
    combiner = manifest["combiner"]
    assert combiner["name"] in COMBINERS and combiner["state"]["combiner"] == combiner["name"]
    assert combiner["temperature"] > 0
    StackingEnsemble.from_dict(combiner["state"])  # pure JSON in, a working combiner out


def test_metrics_keys_and_the_ensemble_auroc_recomputed_from_the_parquet_files(sweep):
    from sklearn.metrics import roc_auc_score

    metrics = json.loads((sweep.bundle / "metrics.json").read_text())
    manifest = manifest_of(sweep.bundle)
    ids = [m["trial_id"] for m in manifest["members"]]
    for who in ("ensemble", "best_single"):
        for key in ("auroc", "accuracy", "auprc", "ece", "sensitivity.normal", "sensitivity.pneumonia",
                    "specificity.normal", "specificity.pneumonia"):
            assert f"test.{who}.{key}" in metrics, (who, key)
        lo, hi = metrics[f"test.{who}.auroc_ci95"]
        assert lo <= metrics[f"test.{who}.auroc"] <= hi
    for tid in ids:
        assert f"test.members.{tid}.auroc" in metrics and f"val_cv.members.{tid}.auroc" in metrics
    assert set(k.rsplit(".", 1)[1] for k in metrics if k.startswith("val_cv.combiners.")) == set(COMBINERS)
    assert metrics["val_cv.ensemble.auroc"] == max(metrics[f"val_cv.combiners.{c}"] for c in COMBINERS)
    assert "val_cv.best_single.auroc" in metrics

    # Recompute from what the trials left: their test parquet files and the manifest's combiner.
    board = board_of(sweep.run_dir)
    frames = [pd.read_parquet(board.loc[tid, "predictions_test"]).set_index("sample_id").sort_index() for tid in ids]
    P = np.stack([f[["prob_normal", "prob_pneumonia"]].to_numpy(dtype=float) for f in frames])
    y = frames[0]["label"].to_numpy()
    probs = StackingEnsemble.from_dict(manifest["combiner"]["state"]).predict_proba(P)
    assert metrics["test.ensemble.auroc"] == pytest.approx(roc_auc_score(y, probs[:, 1]), abs=1e-12)
    best = ids.index(manifest["best_single"])
    assert metrics["test.best_single.auroc"] == pytest.approx(roc_auc_score(y, P[best][:, 1]), abs=1e-12)
    assert metrics[f"test.members.{ids[1]}.auroc"] == pytest.approx(roc_auc_score(y, P[1][:, 1]), abs=1e-12)
    # The stored ensemble probabilities are these.
    stored = pd.read_csv(sweep.bundle / "report" / "predictions_test.csv", dtype={"sample_id": str}).set_index("sample_id").sort_index()
    assert np.abs(stored[["prob_normal", "prob_pneumonia"]].to_numpy() - probs).max() < 1e-12


FRESH = r"""
import json, pickle, sys
import numpy as np, pandas as pd, torch, yaml
from trainables import DataConfig, load_dataset

bundle, run_dir = sys.argv[1], sys.argv[2]
space = yaml.safe_load(open(f"{run_dir}/space.yaml"))
ds = load_dataset(DataConfig.from_dict(space["data"]), image_size=space["fixed"]["image_size"], verbose=False)
test = ds.splits["test"]
stored = pd.read_csv(f"{bundle}/report/predictions_test.csv", dtype={"sample_id": str})
where = {sid: i for i, sid in enumerate(test.ids)}
images = [np.array(test.images[where[sid]]) for sid in stored["sample_id"]]
files = [f"{space['data']['root']}/{sid}" for sid in stored["sample_id"]]

def refuse(*args, **kwargs):
    raise AssertionError("a bundle must load without pickle")

pickle.load = pickle.loads = torch.load = np.load = refuse
import ensemble

b = ensemble.load(bundle, device="cpu")
ref = stored[[c for c in stored.columns if c.startswith("prob_")]].to_numpy()
print(json.dumps({
    "from_arrays": float(np.abs(b.predict_proba(images, batch_size=5) - ref).max()),
    "from_files": float(np.abs(b.predict_proba(files) - ref).max()),
    "n": len(images),
}))
"""


def test_a_fresh_process_reproduces_the_stored_test_probabilities(sweep):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", FRESH, str(sweep.bundle), str(sweep.run_dir)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["n"] == 16
    assert result["from_arrays"] < 1e-5
    assert result["from_files"] < 1e-5  # the PNGs go through the cache's own decoding and resizing


def test_members_average_their_logits_over_the_flips_they_trained_with(sweep):
    import torch

    b = load(sweep.bundle, device="cpu")
    assert all(spec.tta == ("hflip",) for spec in b.specs)  # smoke.yaml trains with horizontal flips
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (32, 32), dtype=np.uint8) for _ in range(3)]
    mirrored = [img[:, ::-1] for img in images]
    own = b.member_proba(images)
    # Averaged over the image and its mirror, a member cannot tell the two apart; alone, it can.
    assert np.allclose(b.member_proba(mirrored), own, atol=1e-6)
    plain = b.member_proba(images, tta=False)
    assert not np.allclose(b.member_proba(mirrored, tta=False), plain, atol=1e-4)
    for i, model in enumerate(b.models):
        x = b.model_input(b.prepare(images, i), i)
        with torch.inference_mode():
            logits = (model(x) + model(torch.flip(x, dims=[3]))) / 2  # the mean of logits, not of probabilities
        assert np.allclose(own[i], torch.softmax(logits, 1).numpy(), atol=1e-6)
    assert np.allclose(b.member_proba(images, tta=True), own, atol=1e-6)  # the mirror is already one of their views
    assert np.allclose(b.predict_proba(images), b.combiner.predict_proba(own), atol=1e-6)
    assert np.allclose(b.predict_proba(images, tta=False), b.combiner.predict_proba(plain), atol=1e-6)


def test_inputs_of_other_depths_sizes_and_channels_are_converted_as_in_training(sweep):
    b = load(sweep.bundle, device="cpu")
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (32, 32), dtype=np.uint8)
    img[0, 0], img[0, 1] = 0, 255  # full range: windowing a 16-bit copy gives the same 8 bits back
    base = b.predict_proba([img])
    assert np.allclose(b.predict_proba([img.astype(np.uint16) * 257]), base, atol=1e-6)
    assert np.allclose(b.predict_proba([np.repeat(img[:, :, None], 3, axis=2)]), base, atol=1e-6)  # grey RGB -> L
    big = b.predict_proba([rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)])  # resized, converted
    assert big.shape == (1, 2) and np.allclose(big.sum(1), 1.0)
    assert b.predict_proba(np.stack([img, img])[..., None]).shape == (2, 2)  # one (N, H, W, C) array
    with pytest.raises(ConfigError, match="wrap a single image in a list"):
        b.predict_proba(img)
    assert b.predict([img]) in (["normal"], ["pneumonia"])


def test_a_missing_member_file_fails_with_one_line(bundle_copy, tmp_path):
    from ensemble.predict import main

    victim = manifest_of(bundle_copy)["members"][1]["weights"]
    (bundle_copy / victim).unlink()
    with pytest.raises(ConfigError, match=f"{victim} is missing"):
        load(bundle_copy)
    img = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32), np.uint8)).save(img)
    rc, out, err = run_cli(main, [str(bundle_copy), str(img)])
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("medsweep: error: ")
    assert victim in err and "ensemble.build" in err


def test_a_tampered_member_file_fails_with_one_line(bundle_copy):
    from ensemble.predict import main

    victim = bundle_copy / manifest_of(bundle_copy)["members"][0]["weights"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, in the middle of the tensors
    victim.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="does not match its sha256"):
        load(bundle_copy)
    rc, _, err = run_cli(main, [str(bundle_copy), str(bundle_copy)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "does not match its sha256" in err


def test_a_tampered_report_file_is_refused_too(bundle_copy):
    with open(bundle_copy / "metrics.json", "a") as fh:
        fh.write(" ")
    with pytest.raises(ConfigError, match="metrics.json does not match"):
        verify_bundle(bundle_copy)


@pytest.mark.parametrize("where", ["files", "weights"])
@pytest.mark.parametrize("bad", ["../outside.safetensors", "members/../../outside.safetensors", "/etc/hostname", "link"])
def test_manifest_paths_that_leave_the_bundle_are_refused(bundle_copy, tmp_path, where, bad):
    outside = tmp_path / "outside.safetensors"
    manifest = manifest_of(bundle_copy)
    real = manifest["members"][0]["weights"]
    outside.write_bytes((bundle_copy / real).read_bytes())
    if bad == "link":  # a link inside the folder that leads out of it, with the right hash
        (bundle_copy / "members" / "evil.safetensors").symlink_to(outside)
        bad = "members/evil.safetensors"
    digest = manifest["files"][real]
    if where == "files":
        manifest["files"][bad] = digest
    else:
        manifest["members"][0]["weights"] = bad
        manifest["files"][bad] = digest
    write_manifest(bundle_copy, manifest)
    with pytest.raises(ConfigError, match="inside its folder") as info:
        load(bundle_copy)
    assert "\n" not in str(info.value) and repr(bad) in str(info.value)


def test_a_folder_without_manifest_is_not_a_bundle(tmp_path):
    with pytest.raises(ConfigError, match="manifest.json is missing"):
        load(tmp_path)
    with pytest.raises(ConfigError, match="no such bundle folder"):
        load(tmp_path / "nope")
