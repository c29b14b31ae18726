"""ECE, the report's metric dict, bootstrap intervals, and the fast scorers the stacking's CV uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ensemble._metrics import bootstrap_ci, evaluate, expected_calibration_error, score
from trainables._errors import ConfigError
from trainables._metrics import compute_metrics


def _binary(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = 1.0 / (1.0 + np.exp(-(1.2 * (2 * y - 1) + rng.normal(size=n))))
    return np.stack([1 - p, p], 1), y


def test_ece_single_label_hand_computed():
    probs = np.array([[0.9, 0.05, 0.05], [0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.85, 0.05], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 0, 1, 2])
    # bins of width 0.2, (lo, hi]: {0.4: right}, {0.5: right}, {0.7: wrong}, {0.9, 0.85: both right}
    expected = (abs(1 - 0.4) + abs(1 - 0.5) + abs(0 - 0.7) + 2 * abs(1 - 0.875)) / 5
    assert expected_calibration_error(probs, y, task="multi-class", n_bins=5) == pytest.approx(expected, abs=1e-12)
    assert expected == pytest.approx(0.41)


def test_ece_multi_label_hand_computed_ignores_masked():
    probs = np.array([[0.2, 0.6], [0.4, 0.6], [0.7, 0.1], [0.9, 0.3]])
    y = np.array([[0, -1], [1, 0], [1, 0], [-1, 1]])
    # label 0, rows 0-2: bin (0, .5] {.2, .4} vs 1/2 positive -> .2 gap x2; bin (.5, 1] {.7} vs 1 -> .3
    # label 1, rows 1-3: bin (0, .5] {.1, .3} vs 1/2 -> .3 x2; bin (.5, 1] {.6} vs 0 -> .6
    expected = ((2 * 0.2 + 0.3) / 3 + (2 * 0.3 + 0.6) / 3) / 2
    got = expected_calibration_error(probs, y, task="multi-label", n_bins=2)
    assert got == pytest.approx(expected, abs=1e-12)
    changed = probs.copy()
    changed[0, 1] = changed[3, 0] = 0.01  # the masked entries
    assert expected_calibration_error(changed, y, task="multi-label", n_bins=2) == got


def test_ece_of_calibrated_probabilities_is_small():
    rng = np.random.default_rng(0)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    probs = np.stack([1 - p, p], 1)
    assert expected_calibration_error(probs, y, task="binary") < 0.02
    assert expected_calibration_error(probs ** 0.2 / (probs ** 0.2).sum(1, keepdims=True), y, task="binary") > 0.1


@pytest.mark.parametrize("task", ["binary", "multi-class", "multi-label"])
def test_fast_scores_match_compute_metrics(task):
    rng = np.random.default_rng(1)
    n, k = 150, (2 if task == "binary" else 4)
    if task == "multi-label":
        y = (rng.random((n, k)) < 0.3).astype(float)
        probs = np.round(1 / (1 + np.exp(-(2 * y - 1 + rng.normal(size=(n, k))))), 1)  # rounded: ties
        y[rng.random((n, k)) < 0.2] = -1
    else:
        y = rng.integers(0, k, n)
        z = np.eye(k)[y] + rng.normal(size=(n, k))
        probs = np.round(np.exp(z) / np.exp(z).sum(1, keepdims=True), 1)
        probs /= probs.sum(1, keepdims=True)
    ref = compute_metrics(probs, y, task=task, class_names=[str(j) for j in range(k)], prefix="")
    for metric in ("auroc", "auprc", "accuracy"):
        assert score(probs, y, task=task, metric=metric) == pytest.approx(ref[metric], abs=1e-12), metric


def test_bootstrap_ci_contains_the_estimate_and_narrows_with_more_samples():
    small, big = _binary(100, 2), _binary(1000, 3)
    widths = []
    for probs, y in (small, big):
        point = evaluate(probs, y, task="binary", class_names=["neg", "pos"])["auroc"]
        lo, hi = bootstrap_ci(probs, y, task="binary", n_boot=300, seed=0)
        assert lo < point < hi
        widths.append(hi - lo)
    assert widths[1] < 0.6 * widths[0]
    probs, y = small
    assert bootstrap_ci(probs, y, task="binary", n_boot=300, seed=0) == bootstrap_ci(probs, y, task="binary", n_boot=300, seed=0)
    lo, hi = bootstrap_ci(probs, y, task="binary", metric="ece", n_boot=200, alpha=0.1)
    assert 0 <= lo < hi <= 1


def test_bootstrap_skips_undefined_resamples():
    probs, y = _binary(20, 4)
    y[:] = 0
    y[0] = 1  # one positive: about a third of resamples have no positive and no AUROC
    lo, hi = bootstrap_ci(probs, y, task="binary", n_boot=200)
    assert math.isfinite(lo) and math.isfinite(hi) and lo <= hi
    y[0] = 0
    lo, hi = bootstrap_ci(probs, y, task="binary", n_boot=50)
    assert math.isnan(lo) and math.isnan(hi)


@pytest.mark.parametrize(
    "task, k, expected",
    [
        ("binary", 2, {"auroc", "accuracy", "auprc", "ece"}),
        ("multi-class", 3, {"auroc", "accuracy", "auprc", "ece"}),
        ("multi-label", 3, {"auroc", "accuracy", "auprc", "ece", "auroc/c0", "auroc/c1", "auroc/c2"}),
    ],
)
def test_evaluate_keys(task, k, expected):
    rng = np.random.default_rng(5)
    names = [f"c{j}" for j in range(k)]
    if task == "multi-label":
        y = rng.integers(-1, 2, (60, k))
        probs = rng.random((60, k))
    else:
        y = np.arange(60) % k
        probs = rng.dirichlet(np.ones(k), 60)
    out = evaluate(probs, y, task=task, class_names=names)
    per_class = {f"{what}/{c}" for what in ("sensitivity", "specificity") for c in names}
    assert set(out) == expected | per_class
    assert not any(key.startswith("val_") for key in out)
    assert out["ece"] == expected_calibration_error(probs, y, task=task)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda p, y: bootstrap_ci(p, y, task="binary", metric="aurc"), ConfigError, "Unknown metric 'aurc'; valid: .*did you mean 'auroc'"),
        (lambda p, y: bootstrap_ci(p, y, task="binary", alpha=1.5), ConfigError, "alpha"),
        (lambda p, y: evaluate(p, y, task="bianry", class_names=["a", "b"]), ConfigError, "did you mean 'binary'"),
        (lambda p, y: evaluate(p, y, task="binary", class_names=["a"]), ValueError, "class_names has 1 names"),
        (lambda p, y: expected_calibration_error(p, y[:-1], task="binary"), ValueError, "y must be \\(N,\\)"),
        (lambda p, y: expected_calibration_error(p, y, task="binary", n_bins=0), ConfigError, "n_bins"),
    ],
)
def test_bad_input(call, error, match):
    probs, y = _binary(20, 6)
    with pytest.raises(error, match=match):
        call(probs, y)
