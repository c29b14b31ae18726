"""Metrics of an ensemble's probabilities: expected calibration error, the report's metric dict, and
percentile-bootstrap intervals. The fast scorers here are also what the stacking's cross-validation uses."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from trainables import ConfigError, did_you_mean

__all__ = ["bootstrap_ci", "evaluate", "expected_calibration_error"]

TASKS = ("binary", "multi-class", "ordinal", "multi-label")
# metrics bootstrap_ci (and the stacking's CV) can compute without scikit-learn's per-call overhead
FAST_METRICS = ("auroc", "auprc", "accuracy", "log_loss", "ece")
# lower is better for these; the rest are higher-is-better
LOWER_IS_BETTER = frozenset({"log_loss", "ece"})

_LOG_EPS = 1e-15  # floor for log(p) in log loss, as scikit-learn's log_loss clips


def check_task(task: object) -> str:
    """``task`` itself, or a ConfigError naming the valid tasks."""
    if task not in TASKS:
        raise ConfigError(f"Unknown task {task!r}; valid: {', '.join(TASKS)}{did_you_mean(str(task), TASKS)}", field="task")
    return str(task)


def check_probs_labels(probs: np.ndarray, y: np.ndarray, task: str) -> tuple[np.ndarray, np.ndarray]:
    """``(probs, y)`` as float (N, K) and int (N,) or float (N, K); ValueError on shape mismatch."""
    probs = np.asarray(probs, dtype=float)
    y = np.asarray(y)
    if probs.ndim != 2:
        raise ValueError(f"probs must be 2-D (N, K); got shape {probs.shape}")
    n, k = probs.shape
    if task == "multi-label":
        if y.shape != (n, k):
            raise ValueError(f"multi-label y must have the shape of probs {probs.shape} (1 positive, 0 negative, -1 masked); got {y.shape}")
        y = y.astype(float)
        if not np.isin(y, (-1.0, 0.0, 1.0)).all():
            raise ValueError("multi-label y must hold only 0, 1 and -1 (masked)")
        return probs, y
    if y.shape != (n,):
        raise ValueError(f"y must be (N,) class indices with N = {n} (the rows of probs); got shape {y.shape}")
    if y.size and (not np.all(np.equal(np.mod(y, 1), 0)) or y.min() < 0 or y.max() >= k):
        raise ValueError(f"y must hold integer class indices in [0, {k}); got values in [{y.min()}, {y.max()}]")
    return probs, y.astype(int)


# ---------------------------------------------------------------- fast scorers


def _binary_auroc(truth: np.ndarray, score: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties (equal to scikit-learn's roc_auc_score); nan if one class."""
    truth = np.asarray(truth, dtype=bool)
    n1 = int(truth.sum())
    n0 = truth.size - n1
    if n1 == 0 or n0 == 0:
        return math.nan
    return _sorted_negatives_auroc(np.sort(score[~truth]), score[truth])


def _sorted_negatives_auroc(neg_sorted: np.ndarray, pos: np.ndarray) -> float:
    """P(positive > negative) + P(tie) / 2 from the sorted negative scores: the Mann-Whitney U with average
    ranks, counted by binary search (scipy's rankdata over all rows was 10x slower, and dominated the
    stacking's greedy loop)."""
    at = np.searchsorted(neg_sorted, pos, side="left")
    below = float(at.sum())
    # ties with negatives count half; only a key equal to the negative it landed on can have any
    tied = neg_sorted[np.minimum(at, neg_sorted.size - 1)] == pos
    if tied.any():
        below += 0.5 * float((np.searchsorted(neg_sorted, pos[tied], side="right") - at[tied]).sum())
    return below / (pos.size * neg_sorted.size)


def _binary_ap(truth: np.ndarray, score: np.ndarray) -> float:
    """Average precision as scikit-learn computes it (step-wise, one point per distinct score); nan without positives."""
    n_pos = int(truth.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-score, kind="mergesort")
    s, t = score[order], truth[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each run of equal scores
    tps = np.cumsum(t)[last]
    fps = (last + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def _nanmean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else math.nan


def _auroc(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    # the same definitions as trainables._metrics.compute_metrics: binary = positive column,
    # multi-class = macro one-vs-rest over classes with both outcomes, multi-label = macro over unmasked rows
    if task == "multi-label":
        return _nanmean([_binary_auroc(y[m, j] == 1, probs[m, j]) for j in range(y.shape[1]) for m in [y[:, j] >= 0]])
    if task == "binary":
        return _binary_auroc(y == 1, probs[:, 1]) if len(np.unique(y)) == 2 else math.nan
    return _nanmean([_binary_auroc(y == j, probs[:, j]) for j in range(probs.shape[1])])


def _auprc(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "multi-label":
        out = []
        for j in range(y.shape[1]):
            m = y[:, j] >= 0
            yj = y[m, j] == 1
            out.append(_binary_ap(yj, probs[m, j]) if 0 < yj.sum() < yj.size else math.nan)
        return _nanmean(out)
    if task == "binary":
        return _binary_ap(y == 1, probs[:, 1]) if len(np.unique(y)) == 2 else math.nan
    return _nanmean([_binary_ap(y == j, probs[:, j]) for j in range(probs.shape[1])])


def _accuracy(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "multi-label":
        known = y >= 0
        return float(((probs >= 0.5) == (y == 1))[known].mean()) if known.any() else math.nan
    return float((probs.argmax(1) == y).mean()) if y.size else math.nan


def _log_loss(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "multi-label":
        known = y >= 0
        if not known.any():
            return math.nan
        p = np.clip(probs[known], _LOG_EPS, 1 - _LOG_EPS)
        t = y[known]
        return float(-np.mean(t * np.log(p) + (1 - t) * np.log1p(-p)))
    if not y.size:
        return math.nan
    return float(-np.mean(np.log(np.clip(probs[np.arange(y.size), y], _LOG_EPS, 1.0))))


def _ece(probs: np.ndarray, y: np.ndarray, task: str, n_bins: int = 15) -> float:
    if task == "multi-label":
        per_label = []
        for j in range(y.shape[1]):
            m = y[:, j] >= 0
            if m.any():
                per_label.append(_binned_gap(probs[m, j], (y[m, j] == 1).astype(float), n_bins))
        return _nanmean(per_label)
    if not y.size:
        return math.nan
    return _binned_gap(probs.max(1), (probs.argmax(1) == y).astype(float), n_bins)


def _binned_gap(confidence: np.ndarray, outcome: np.ndarray, n_bins: int) -> float:
    """sum_b n_b/N |mean(outcome_b) - mean(confidence_b)| over equal-width bins (lo, hi], 0 in the first."""
    # bin i holds (edges[i], edges[i + 1]], as in Guo et al.'s reference code; 0 goes to the first bin
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    conf_sum = np.bincount(idx, weights=confidence, minlength=n_bins)
    out_sum = np.bincount(idx, weights=outcome, minlength=n_bins)
    return float(np.abs(out_sum - conf_sum).sum() / confidence.size)


_SCORERS: dict[str, Callable[[np.ndarray, np.ndarray, str], float]] = {
    "auroc": _auroc,
    "auprc": _auprc,
    "accuracy": _accuracy,
    "log_loss": _log_loss,
    "ece": _ece,
}


def score(probs: np.ndarray, y: np.ndarray, *, task: str, metric: str) -> float:
    """One metric of already-checked ``probs``/``y``; nan where undefined (e.g. AUROC with one class)."""
    return _SCORERS[metric](probs, y, task)


# ---------------------------------------------------------------- public


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, *, task: str, n_bins: int = 15) -> float:
    """Expected calibration error (Guo et al. 2017) over ``n_bins`` equal-width bins ``(lo, hi]``.

    Single-label: the argmax's probability (confidence) against whether the argmax is right.
    Multi-label: per label, the predicted probability against the label being positive (a binary
    reliability diagram), masked entries (-1) left out; the mean over labels that have entries.

    Example:
        >>> round(expected_calibration_error(np.array([[.9, .1], [.6, .4]]), np.array([0, 1]), task="binary", n_bins=10), 6)
        0.35
    """
    check_task(task)
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise ConfigError(f"must be an integer >= 1, got {n_bins!r}", field="n_bins")
    probs, y = check_probs_labels(probs, y, task)
    return _ece(probs, y, task, int(n_bins))


def evaluate(probs: np.ndarray, y: np.ndarray, *, task: str, class_names: list[str]) -> dict[str, float]:
    """The report's metrics of one set of probabilities, keys without prefix.

    Everything ``trainables.compute_metrics`` gives (``auroc``, ``accuracy``, ``auprc``,
    ``sensitivity/<class>``, ``specificity/<class>``, and for multi-label ``auroc/<class>``), plus ``ece``.

    Example:
        >>> evaluate(np.array([[.9, .1], [.2, .8]]), np.array([0, 1]), task="binary", class_names=["a", "b"])["auroc"]
        1.0
    """
    from trainables import compute_metrics

    check_task(task)
    probs, y = check_probs_labels(probs, y, task)
    if len(class_names) != probs.shape[1]:
        raise ValueError(f"class_names has {len(class_names)} names but probs has {probs.shape[1]} columns")
    out = compute_metrics(probs, y, task=task, class_names=list(class_names), prefix="")
    out["ece"] = _ece(probs, y, task)
    return out


def bootstrap_ci(
    probs: np.ndarray,
    y: np.ndarray,
    *,
    task: str,
    metric: str = "auroc",
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap ``1 - alpha`` interval of ``metric``, resampling rows with replacement.

    Resamples where the metric is undefined (e.g. one class only, for AUROC) are skipped; ``(nan, nan)``
    when none is defined. ``metric``: ``auroc``, ``auprc``, ``accuracy``, ``log_loss`` or ``ece``, with the
    definitions of :func:`evaluate`.

    Example:
        >>> lo, hi = bootstrap_ci(probs, y, task="binary", n_boot=1000)   # doctest: +SKIP
    """
    check_task(task)
    if metric not in _SCORERS:
        raise ConfigError(
            f"Unknown metric {metric!r}; valid: {', '.join(FAST_METRICS)}{did_you_mean(str(metric), FAST_METRICS)}",
            field="metric",
        )
    if isinstance(n_boot, bool) or not isinstance(n_boot, (int, np.integer)) or n_boot < 1:
        raise ConfigError(f"must be an integer >= 1, got {n_boot!r}", field="n_boot")
    if not 0.0 < float(alpha) < 1.0:
        raise ConfigError(f"must be in (0, 1), got {alpha!r}", field="alpha")
    probs, y = check_probs_labels(probs, y, task)
    n = probs.shape[0]
    if n == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    fn = _SCORERS[metric]
    values = []
    for _ in range(int(n_boot)):
        rows = rng.integers(0, n, n)
        v = fn(probs[rows], y[rows], task)
        if not math.isnan(v):
            values.append(v)
    if not values:
        return (math.nan, math.nan)
    lo, hi = np.quantile(np.asarray(values), [alpha / 2.0, 1.0 - alpha / 2.0])
    return (float(lo), float(hi))
