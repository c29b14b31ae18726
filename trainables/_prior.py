"""Prior correction: map a model trained on a reweighted class mix back to the mix it should predict for.

A balanced sampler or class-weighted loss trains the network as if every class were equally common, so its
softmax answers for a 50/50 world; argmax and a 0.5 cut then over-call the rare class on data with the real
mix. Logit adjustment (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021) undoes it exactly
for a calibrated model: add ``log(target prior) - log(effective training prior)`` to the logits.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PRIOR_CORRECTIONS", "prior_logit_bias"]

# train: the training split's mix (what an unweighted model would learn); val: the validation split's mix
# (when validation, not train, resembles deployment); none: probabilities as trained.
PRIOR_CORRECTIONS = ("train", "val", "none")
# Additive smoothing of class counts, so a class absent from a split gets a finite (large) correction.
_SMOOTH = 0.5


def prior_logit_bias(
    train_labels: np.ndarray,
    *,
    num_classes: int,
    multilabel: bool,
    sampler: str,
    class_weights: np.ndarray | None = None,
    target: str = "train",
    target_labels: np.ndarray | None = None,
) -> np.ndarray | None:
    """The per-class (or per-label) logit offset that maps a reweighted model back to the target prior.

    Args:
        train_labels: (N,) class indices, or (N, L) in {0, 1, -1} (multi-label, -1 = unknown).
        num_classes: classes (labels, for multi-label).
        multilabel: sigmoid per label instead of softmax.
        sampler: ``random`` (the split's own mix) or ``balanced`` (inverse-frequency draws).
        class_weights: per-class loss weights (``weighted_ce``); for multi-label, the positive term's weight.
        target: ``train`` (the training split's prior), ``val`` (``target_labels``' prior) or ``none``.
        target_labels: labels of the split whose prior is the target when ``target == "val"``.

    Returns:
        A float array of shape (num_classes,) to add to the logits, or ``None`` when nothing changes the
        training prior (plain sampling, unweighted loss, target ``train``).

    Example:
        >>> y = np.array([0] * 90 + [1] * 10)
        >>> b = prior_logit_bias(y, num_classes=2, multilabel=False, sampler="balanced")
        >>> round(float(b[0] - b[1]), 2)  # log(90.5 / 10.5), smoothed counts: class 0 is ~9x as likely again
        2.15
    """
    if target == "none":
        return None
    if target == "val" and target_labels is None:
        raise ValueError("target 'val' needs target_labels")
    from trainables._train import sample_weights

    weights = np.asarray(class_weights, dtype=float) if class_weights is not None else None
    if multilabel:
        y = np.asarray(train_labels)
        known = y >= 0
        pos = (y == 1) & known
        prior = (pos.sum(0) + _SMOOTH) / (known.sum(0) + 2 * _SMOOTH)
        if sampler == "balanced":
            w = sample_weights(y, multilabel=True)[:, None] * known
            eff = ((w * pos).sum(0) + 1e-12) / (w.sum(0) + 2e-12)
            eff = np.clip(eff, 1e-6, 1 - 1e-6)
        else:
            eff = prior.copy()
        if weights is not None:  # pos_weight scales the positive term: odds multiply by it
            odds = eff / (1 - eff) * weights
            eff = odds / (1 + odds)
        goal = prior if target == "train" else _label_prior(np.asarray(target_labels))
        bias = _logit(goal) - _logit(eff)
    else:
        y = np.asarray(train_labels).astype(int)
        counts = np.bincount(y, minlength=num_classes).astype(float)
        prior = (counts + _SMOOTH) / (counts.sum() + _SMOOTH * num_classes)
        if sampler == "balanced":
            # WeightedRandomSampler with 1/count weights: every class present is drawn equally often.
            eff = np.where(counts > 0, 1.0, _SMOOTH / max(counts.sum(), 1.0))
        else:
            eff = prior.copy()
        if weights is not None:
            eff = eff * weights
        eff = eff / eff.sum()
        if target == "train":
            goal = prior
        else:
            c = np.bincount(np.asarray(target_labels).astype(int), minlength=num_classes).astype(float)
            goal = (c + _SMOOTH) / (c.sum() + _SMOOTH * num_classes)
        bias = np.log(goal) - np.log(eff)
        bias = bias - bias.mean()  # softmax ignores a shared shift; centred numbers read better
    if np.allclose(bias, 0.0, atol=1e-9):
        return None
    return bias.astype(np.float64)


def _label_prior(y: np.ndarray) -> np.ndarray:
    known = y >= 0
    return (((y == 1) & known).sum(0) + _SMOOTH) / (known.sum(0) + 2 * _SMOOTH)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p) - np.log1p(-p)
