"""Validation metrics, computed with scikit-learn: AUROC, accuracy, AUPRC, per-class sensitivity/specificity."""

from __future__ import annotations

import math
import re

import numpy as np

# What a trial reports every epoch (``trainables.train``) and which way is better: the one list a space's
# `search.metric`, `objectives` and `select_metric` are checked against. A sweep's `mode` defaults to it.
METRICS: dict[str, str] = {
    "val_auroc": "max",
    "val_accuracy": "max",
    "val_auprc": "max",
    "val_loss": "min",
    "best_score": "max",  # the best `select_metric` so far (higher is better by definition)
    "train_loss": "min",
    "train_images_per_s": "max",
    "train_seconds": "min",
    "epoch_seconds": "min",
    # Volume-level pooling (data.pool_by), one prediction per volume or patient:
    "val_volume_auroc": "max",
    "val_volume_accuracy": "max",
    "val_volume_auprc": "max",
    # Adaptive Sparse Training (activation_rate < 1) only:
    "compute_savings": "max",
    "energy_savings": "max",
    "energy_joules": "min",
    "ast_activation_rate": "max",  # a target, not an objective; max as Tune would default
}
# Per-class keys: ``val_sensitivity/pneumonia``, ``val_specificity/normal``, ``val_auroc/effusion`` (multi-label).
PER_CLASS_METRIC = re.compile(r"^val_(sensitivity|specificity|auroc)/.+$")


def metric_mode(name: str) -> str | None:
    """``"max"`` or ``"min"``: which way ``name`` is better; ``None`` if the trainable does not report it.

    Example:
        >>> metric_mode("val_loss"), metric_mode("val_sensitivity/pneumonia"), metric_mode("val_aurco")
        ('min', 'max', None)
    """
    if name in METRICS:
        return METRICS[name]
    return "max" if PER_CLASS_METRIC.match(name) else None


def compute_metrics(
    probs: np.ndarray, labels: np.ndarray, *, task: str, class_names: list[str], prefix: str = "val_"
) -> dict[str, float]:
    """Metrics of predicted probabilities against labels.

    Args:
        probs: (N, K) class probabilities (softmax), or per-label probabilities (sigmoid) for multi-label.
        labels: (N,) class indices, or (N, K) in {0, 1, -1}, where -1 is masked out (uncertain).
        task: ``binary``, ``multi-class``, ``ordinal`` or ``multi-label``.
        class_names: names used in the per-class keys.

    Returns:
        ``auroc`` (macro; for binary the positive class), ``accuracy``, ``auprc`` (macro; all tasks),
        and ``sensitivity/<class>`` and ``specificity/<class>``, each prefixed.

    Example:
        >>> compute_metrics(np.array([[.9, .1], [.2, .8]]), np.array([0, 1]), task="binary", class_names=["a", "b"])["val_auroc"]
        1.0
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = len(class_names)
    out: dict[str, float] = {}
    if task == "multi-label":
        y = labels
        known = y >= 0
        pred = probs >= 0.5
        aurocs, auprcs = [], []
        for j in range(k):
            m = known[:, j]
            yj, pj = y[m, j], probs[m, j]
            both = m.any() and 0 < yj.sum() < len(yj)
            aurocs.append(roc_auc_score(yj, pj) if both else math.nan)
            auprcs.append(average_precision_score(yj, pj) if both else math.nan)
            _sens_spec(out, prefix, class_names[j], yj == 1, pred[m, j])
            out[f"{prefix}auroc/{class_names[j]}"] = float(aurocs[-1])
        out[f"{prefix}auroc"] = _nanmean(aurocs)
        out[f"{prefix}auprc"] = _nanmean(auprcs)
        out[f"{prefix}accuracy"] = float((pred == (y == 1))[known].mean()) if known.any() else math.nan
        return out
    y = labels.astype(int)
    pred = probs.argmax(1)
    out[f"{prefix}accuracy"] = float((pred == y).mean()) if len(y) else math.nan
    present = np.unique(y)
    if task == "binary":
        ok = len(present) == 2
        out[f"{prefix}auroc"] = float(roc_auc_score(y, probs[:, 1])) if ok else math.nan
        out[f"{prefix}auprc"] = float(average_precision_score(y, probs[:, 1])) if ok else math.nan
    else:
        onehot = np.eye(k, dtype=int)[y]
        aurocs = [roc_auc_score(onehot[:, j], probs[:, j]) if 0 < onehot[:, j].sum() < len(y) else math.nan for j in range(k)]
        auprcs = [average_precision_score(onehot[:, j], probs[:, j]) if onehot[:, j].sum() > 0 else math.nan for j in range(k)]
        out[f"{prefix}auroc"] = _nanmean(aurocs)
        out[f"{prefix}auprc"] = _nanmean(auprcs)
    for j, name in enumerate(class_names):
        _sens_spec(out, prefix, name, y == j, pred == j)
    return out


def _sens_spec(out: dict, prefix: str, name: str, truth: np.ndarray, pred: np.ndarray) -> None:
    tp = int((truth & pred).sum())
    fn = int((truth & ~pred).sum())
    tn = int((~truth & ~pred).sum())
    fp = int((~truth & pred).sum())
    out[f"{prefix}sensitivity/{name}"] = tp / (tp + fn) if tp + fn else math.nan
    out[f"{prefix}specificity/{name}"] = tn / (tn + fp) if tn + fp else math.nan


def _nanmean(values) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan
