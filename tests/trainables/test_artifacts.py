"""The artifact contract: a trial's files, the member spec in model.json and a manifest, predictions,
and one image preparation and normalisation for training and serving."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trainables import ConfigError
from trainables.artifacts import (
    MEMBER_FILES,
    MemberSpec,
    normalization,
    predictions_file,
    prepare_batch,
    prepare_image,
    read_model_json,
    read_predictions,
    write_model_json,
    write_predictions,
)

# A model.json as trainers before logit_bias and head wrote it: it must still load.
OLD_MODEL_JSON = {
    "backbone": "resnet18", "num_classes": 2, "in_chans": 1, "image_size": 28, "task": "binary",
    "class_names": ["normal", "pneumonia"], "mean": [0.5], "std": [0.25], "params": {"clahe": True},
    "best_epoch": 3, "best_score": 0.9,
}


def test_model_json_round_trip_and_old_files(tmp_path):
    write_model_json(tmp_path, OLD_MODEL_JSON)
    spec = MemberSpec.from_model_json(read_model_json(tmp_path))
    assert (spec.head, spec.logit_bias, spec.channels, spec.preprocessing) == ("linear", None, 1, {"clahe": True, "border_crop": False})
    assert spec.preprocess == {"clahe": True}
    again = MemberSpec.from_model_json({**spec.to_model_json(), "params": {"clahe": True}})
    assert again == spec
    entry = spec.to_manifest()
    assert MemberSpec.from_manifest(entry, task="binary", class_names=["normal", "pneumonia"]) == spec
    assert set(entry) == {"backbone", "head", "num_classes", "image_size", "channels", "mean", "std", "preprocessing", "logit_bias", "tta"}
    assert spec.tta == () and entry["tta"] == []  # written before test-time flips: the image alone, as it was stacked
    flipped = MemberSpec.from_model_json({**OLD_MODEL_JSON, "tta": ["hflip", "vflip"]})
    assert flipped.tta == ("hflip", "vflip")
    assert MemberSpec.from_manifest(flipped.to_manifest(), task="binary", class_names=["normal", "pneumonia"]) == flipped


@pytest.mark.parametrize("change, match", [
    ({"mean": [0.5, 0.5]}, r"mean and std must hold 1 numbers"),
    ({"logit_bias": [0.1]}, r"logit_bias must hold 2 finite numbers"),
    ({"logit_bias": [0.1, float("nan")]}, r"logit_bias must hold 2 finite numbers"),
    ({"tta": ["rot90"]}, r"tta must list distinct flips of hflip, vflip, got \['rot90'\]"),
    ({"tta": ["hflip", "hflip"]}, r"tta must list distinct flips"),
    ({"tta": "hflip"}, r"mistypes .*tta.* must be a list of flip names"),
])
def test_a_spec_that_does_not_fit_itself_is_refused(change, match):
    with pytest.raises(ConfigError, match=match):
        MemberSpec.from_model_json({**OLD_MODEL_JSON, **change}, origin="model.json")


def test_a_damaged_or_partial_model_json_is_one_line(tmp_path):
    (tmp_path / "model.json").write_text("{")
    with pytest.raises(ConfigError, match=r"model\.json: unreadable .*rerun the trial or lower top_k"):
        read_model_json(tmp_path)
    (tmp_path / "model.json").write_text(json.dumps({"backbone": "resnet18"}))
    with pytest.raises(ConfigError, match=r"lacks num_classes, in_chans, image_size"):
        read_model_json(tmp_path)


def test_predictions_are_written_whole_and_read_back(tmp_path):
    frame = pd.DataFrame({"sample_id": ["a", "b"], "label": [0, 1], "prob_x": [0.2, 0.7], "prob_y": [0.8, 0.3]})
    path = write_predictions(frame, tmp_path, "val")
    assert path.name == predictions_file("val") == "predictions_val.parquet" and path.name in MEMBER_FILES
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions_val.parquet"]  # no temporary file left
    pd.testing.assert_frame_equal(read_predictions(tmp_path, "val"), frame)


def test_one_preparation_for_the_cache_and_the_bundle():
    rng = np.random.default_rng(0)
    img16 = rng.integers(1000, 3000, size=(40, 50), dtype=np.uint16)
    out = prepare_image(img16, size=32, channels=3)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert np.array_equal(out[..., 0], out[..., 2])  # grey repeated into RGB
    square = prepare_image(img16[:, :40], size=40, channels=1)  # no resize: the windowing alone
    assert (square.min(), square.max()) == (0, 255)  # 16-bit windowed per image, min..max
    rgba = rng.integers(0, 255, size=(32, 32, 4), dtype=np.uint8)
    assert np.array_equal(prepare_image(rgba, size=32, channels=3), rgba[..., :3])  # alpha dropped, size kept
    spec = MemberSpec.from_model_json({**OLD_MODEL_JSON, "params": {}, "image_size": 32})
    batch = prepare_batch([img16, rgba], spec)
    assert batch.shape == (2, 32, 32, 1)
    assert np.array_equal(batch[0], prepare_image(img16, size=32, channels=1))
    assert prepare_batch([], spec).shape == (0, 32, 32, 1)


def test_normalization_is_x_over_255_minus_mean_over_std():
    torch = pytest.importorskip("torch")
    scale, shift = normalization([0.5, 0.25], [0.2, 0.5])
    x = torch.arange(0, 256, 85, dtype=torch.float32).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    expected = (x / 255.0 - torch.tensor([0.5, 0.25]).view(1, 2, 1, 1)) / torch.tensor([0.2, 0.5]).view(1, 2, 1, 1)
    assert torch.allclose(x * scale + shift, expected, atol=1e-6)
    assert scale.shape == (1, 2, 1, 1) and shift.shape == (1, 2, 1, 1)


def test_the_trainer_steps_through_a_run_with_the_contracts_input(tiny_data, tmp_path):
    """``Trainer``: the public step-by-step run the benchmarks drive; its input is ``normalization``'s."""
    torch = pytest.importorskip("torch")
    from trainables import DataConfig, Trainer, TrainParams

    params = TrainParams(backbone="test_resnet", batch_size=8, lr=3e-3, image_size=32, threads=1, epochs=1)
    run = Trainer(params, DataConfig.from_dict(tiny_data), tmp_path / "run")
    x, y = next(iter(run.train_batches()))
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, run.ds.channels) and len(x) == len(y)
    scale, shift = normalization(run.ds.mean, run.ds.std)
    expected = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() * scale + shift
    assert torch.equal(run.to_input(x).cpu(), expected)
    assert run.target(y).dtype == torch.long
    row = run.train_epoch(0)
    assert row["train_images_per_s"] > 0 and np.isfinite(row["train_loss"])
    probs, _ = run.predict("val")
    assert probs.shape == (len(run.ds.splits["val"]), 2) and np.allclose(probs.sum(1), 1.0, atol=1e-5)
