import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, confusion_matrix, roc_auc_score

from trainables import compute_metrics


def test_binary_matches_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p1 = np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1)
    probs = np.stack([1 - p1, p1], 1)
    m = compute_metrics(probs, y, task="binary", class_names=["neg", "pos"])
    assert m["val_auroc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["val_auprc"] == pytest.approx(average_precision_score(y, p1))
    pred = probs.argmax(1)
    assert m["val_accuracy"] == pytest.approx((pred == y).mean())
    tn, fp, fn, tp = confusion_matrix(y, pred).ravel()
    assert m["val_sensitivity/pos"] == pytest.approx(tp / (tp + fn))
    assert m["val_specificity/pos"] == pytest.approx(tn / (tn + fp))
    assert m["val_sensitivity/neg"] == pytest.approx(tn / (tn + fp))


def test_multiclass_macro_auroc_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 4, 300)
    logits = rng.normal(size=(300, 4)) + np.eye(4)[y] * 1.5
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    m = compute_metrics(probs, y, task="multi-class", class_names=list("abcd"), prefix="test_")
    assert m["test_auroc"] == pytest.approx(roc_auc_score(y, probs, multi_class="ovr", average="macro"))
    cm = confusion_matrix(y, probs.argmax(1))
    for j, name in enumerate("abcd"):
        tp = cm[j, j]
        fn = cm[j].sum() - tp
        fp = cm[:, j].sum() - tp
        tn = cm.sum() - tp - fn - fp
        assert m[f"test_sensitivity/{name}"] == pytest.approx(tp / (tp + fn))
        assert m[f"test_specificity/{name}"] == pytest.approx(tn / (tn + fp))


def test_multilabel_masks_uncertain_labels():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, size=(120, 3)).astype(np.float32)
    probs = np.clip(y * 0.4 + rng.random((120, 3)) * 0.6, 0, 1)
    masked = y.copy()
    masked[::5, 1] = -1  # uncertain
    # Flip the masked entries' probabilities: if the mask were ignored, AUROC for label 1 would change.
    probs_flipped = probs.copy()
    probs_flipped[::5, 1] = 1 - probs[::5, 1]
    m = compute_metrics(probs_flipped, masked, task="multi-label", class_names=["a", "b", "c"])
    keep = masked[:, 1] >= 0
    assert m["val_auroc/b"] == pytest.approx(roc_auc_score(y[keep, 1], probs_flipped[keep, 1]))
    expected_macro = np.mean([roc_auc_score(y[:, 0], probs[:, 0]), m["val_auroc/b"], roc_auc_score(y[:, 2], probs[:, 2])])
    assert m["val_auroc"] == pytest.approx(expected_macro)
    expected_auprc = np.mean(
        [average_precision_score(y[:, 0], probs[:, 0]), average_precision_score(y[keep, 1], probs_flipped[keep, 1]),
         average_precision_score(y[:, 2], probs[:, 2])]
    )
    assert m["val_auprc"] == pytest.approx(expected_auprc)


def test_single_class_split_gives_nan_auroc_not_an_exception():
    probs = np.array([[0.8, 0.2], [0.6, 0.4]])
    m = compute_metrics(probs, np.array([0, 0]), task="binary", class_names=["a", "b"])
    assert math.isnan(m["val_auroc"])
    assert m["val_accuracy"] == 1.0
