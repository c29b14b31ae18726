"""Prior correction: a model trained on a reweighted class mix answers for the real one again."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from trainables import prior_logit_bias, train

from .conftest import write_learnable_folder


def _softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_the_correction_restores_argmax_accuracy_on_a_skewed_split():
    # A calibrated model of a 90/10 task trained with a balanced sampler outputs the class likelihoods
    # (a 50/50 posterior); its argmax over-calls the rare class. Adding the log prior ratio gives back
    # the Bayes posterior of the real mix, whose argmax is the most accurate decision there is.
    rng = np.random.default_rng(0)
    y = (rng.random(20000) < 0.1).astype(int)
    x = rng.normal(loc=1.2 * y, scale=1.0)
    balanced_logits = np.stack([-0.5 * x**2, -0.5 * (x - 1.2) ** 2], 1)  # log-likelihoods: uniform prior
    bias = prior_logit_bias(y, num_classes=2, multilabel=False, sampler="balanced")
    before = (_softmax(balanced_logits).argmax(1) == y).mean()
    after = (_softmax(balanced_logits + bias).argmax(1) == y).mean()
    assert before < 0.80 < 0.89 < after  # the rare class over-called, then the prior's ~0.90 or better
    # The corrected posterior is the true one (up to the count smoothing).
    true = 1 / (1 + np.exp(-(np.log(0.1 / 0.9) + 1.2 * x - 0.72)))
    assert np.abs(_softmax(balanced_logits + bias)[:, 1] - true).max() < 0.01


@pytest.mark.parametrize(
    "kwargs, changes",
    [
        ({"sampler": "random"}, False),  # nothing reweighted: probabilities stay as trained
        ({"sampler": "balanced"}, True),
        ({"sampler": "random", "class_weights": np.array([0.55, 5.0])}, True),  # weighted_ce
        ({"sampler": "balanced", "target": "none"}, False),
        ({"sampler": "random", "target": "val", "target_labels": np.array([0, 1] * 50)}, True),
    ],
)
def test_when_the_correction_applies(kwargs, changes):
    y = np.array([0] * 90 + [1] * 10)
    bias = prior_logit_bias(y, num_classes=2, multilabel=False, **kwargs)
    assert (bias is not None) == changes
    if changes and kwargs.get("target") != "val":
        assert bias[0] > bias[1]  # back towards the common class


def test_multilabel_balanced_sampling_is_mapped_back_per_label():
    y = np.array([[1, 0]] * 10 + [[0, 1]] * 5 + [[0, 0]] * 85)
    bias = prior_logit_bias(y, num_classes=2, multilabel=True, sampler="balanced")
    # Under inverse-frequency draws label 0 is positive a third of the time, not a tenth: its logit drops.
    expected = np.log(10.5 / 90.5) - np.log(1 / 2)
    assert bias[0] == pytest.approx(expected, abs=1e-6) and bias[1] < 0


def test_a_balanced_trial_writes_corrected_probabilities_and_records_its_bias(tmp_path):
    # The same seed trains the same weights; only the written probabilities differ, by exactly the bias.
    root = write_learnable_folder(tmp_path / "img", n_per_class=24)
    import shutil

    for f in sorted((root / "normal").iterdir())[6:]:  # 6 normal against 24 pneumonia
        f.unlink()
    data = {"source": "folder", "root": str(root), "val_fraction": 0.25, "test_fraction": 0.25, "cache_dir": str(tmp_path / "c")}
    base = {"backbone": "test_resnet", "epochs": 1, "image_size": 32, "batch_size": 8, "threads": 1, "sampler": "balanced", "data": data}
    out = {}
    for mode in ("none", "train"):
        train({**base, "prior_correction": mode, "_out_dir": str(tmp_path / mode)})
        out[mode] = pd.read_parquet(tmp_path / mode / "predictions_val.parquet")
    bias = json.loads((tmp_path / "train" / "model.json").read_text())["logit_bias"]
    assert json.loads((tmp_path / "none" / "model.json").read_text())["logit_bias"] is None
    assert bias[1] > bias[0]  # pneumonia is the common class here
    def log_odds(f):
        p = f[["prob_normal", "prob_pneumonia"]].to_numpy(dtype=float)
        return np.log(p[:, 1]) - np.log(p[:, 0])
    np.testing.assert_allclose(log_odds(out["train"]) - log_odds(out["none"]), bias[1] - bias[0], atol=2e-3)
    shutil.rmtree(tmp_path / "img")
