"""Calibration of the combined probabilities: one temperature and per-class logit offsets fitted by log loss
(bias-corrected temperature scaling), and applied with numpy only."""

from __future__ import annotations

import math
from typing import Any

import numpy as np



from ._combiners import _sigmoid, _softmax

__all__ = ["tempered_log_loss"]

# Temperature search range; Guo et al. report T in about [1, 3] for over-confident networks, and averaged
# ensembles are often under-confident (T < 1).
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
# The narrower range for comparing candidate averages (``tempered_log_loss``): it covers what the ensembles
# of real sweeps were fitted to (0.4-0.6 on full BloodMNIST) and stops short of the limit a separable
# validation split drives the fit to.
_SELECTION_LOG_T_BOUNDS = (math.log(0.25), math.log(4.0))
# A fitted temperature this close (in log T) to a bound is the search running out of range, not a fit.
_BOUND_TOL = 0.02

# ---------------------------------------------------------------- temperature


# Only 0 and exact 1 are moved, so distinct probabilities stay distinct and ranks (AUROC) are kept.
_TINY = np.finfo(float).tiny
_BELOW_ONE = np.nextafter(1.0, 0.0)


def _temperature_logits(probs: np.ndarray, task: str) -> np.ndarray:
    """Logits whose softmax (single-label) or sigmoid (multi-label) gives back ``probs``."""
    if task == "multi-label":
        p = np.clip(probs, _TINY, _BELOW_ONE)
        return np.log(p) - np.log1p(-p)
    return np.log(np.maximum(probs, _TINY))


def _apply_temperature(probs: np.ndarray, t: float, task: str, bias: Any = None) -> np.ndarray:
    """``softmax(z / t + bias)`` (sigmoid per label), z the logits of ``probs``; ``probs`` itself when that is the identity."""
    b = np.zeros(probs.shape[1]) if bias is None else np.asarray(bias, dtype=float)
    if t == 1.0 and not b.any():
        return probs
    z = _temperature_logits(probs, task) / t + b
    return _sigmoid(z) if task == "multi-label" else _softmax(z)


def _fit_calibration(probs: np.ndarray, y: np.ndarray, task: str, *, temperature: bool, bias: bool) -> tuple[float, np.ndarray]:
    """The temperature (Guo et al. 2017) and, with ``bias``, one logit offset per class or label that minimise
    the NLL of ``softmax(z / T + b)`` on out-of-fold probabilities (bias-corrected temperature scaling)."""
    k = probs.shape[1]
    t = _fit_temperature(probs, y, task) if temperature else 1.0
    if not bias:
        return t, np.zeros(k)
    from scipy.optimize import minimize

    z = _temperature_logits(probs, task)
    multi = task == "multi-label"
    if multi:
        known = y >= 0
        target = np.where(known, y, 0).astype(float)
    else:
        rows = np.arange(y.size)
        counts = np.bincount(y, minlength=k)

    def unpack(x: np.ndarray) -> tuple[float, np.ndarray]:
        log_t = x[0] if temperature else 0.0
        b = x[1:] if temperature else x
        if not multi:  # softmax ignores a shared shift: class 0's offset stays 0
            b = np.concatenate([[0.0], b])
        return log_t, b

    def nll(x: np.ndarray) -> float:
        log_t, b = unpack(x)
        s = z / math.exp(log_t) + b
        if multi:
            return float(((np.logaddexp(0.0, s) - target * s) * known).sum() / max(known.sum(), 1))
        mx = s.max(1)
        lse = mx + np.log(np.exp(s - mx[:, None]).sum(1))
        return float(np.mean(lse - s[rows, y]))

    n_bias = k if multi else k - 1
    x0 = np.concatenate([[math.log(t)] if temperature else [], np.zeros(n_bias)])
    bounds = ([_LOG_T_BOUNDS] if temperature else []) + [(-10.0, 10.0)] * n_bias
    res = minimize(nll, x0, method="L-BFGS-B", bounds=bounds)
    if not (res.success or res.status == 2) or not math.isfinite(res.fun) or res.fun > nll(x0) + 1e-12:
        return t, np.zeros(k)
    if not multi and (counts == 0).any():
        # A class absent from validation has no evidence for its offset: keep the temperature only.
        return t, np.zeros(k)
    log_t, b = unpack(res.x)
    return float(math.exp(log_t)), b


def _fit_temperature(probs: np.ndarray, y: np.ndarray, task: str, *, log_t_bounds: tuple[float, float] = _LOG_T_BOUNDS) -> float:
    """Guo et al. (2017): the one T > 0 minimising the NLL of softmax(z / T) (sigmoid per label, masked
    entries left out), z the logits of the out-of-fold probabilities; bounded 1-D search over log T."""
    from scipy.optimize import minimize_scalar

    z = _temperature_logits(probs, task)
    if task == "multi-label":
        known = y >= 0
        z, t = z[known], y[known]
        if not z.size:
            return 1.0

        def nll(log_t: float) -> float:
            s = z / math.exp(log_t)
            # -[t log sigmoid(s) + (1 - t) log sigmoid(-s)] = logaddexp(0, s) - t s
            return float(np.mean(np.logaddexp(0.0, s) - t * s))

    else:
        rows = np.arange(y.size)

        def nll(log_t: float) -> float:
            s = z / math.exp(log_t)
            mx = s.max(1)
            lse = mx + np.log(np.exp(s - mx[:, None]).sum(1))
            return float(np.mean(lse - s[rows, y]))

    res = minimize_scalar(nll, bounds=log_t_bounds, method="bounded", options={"xatol": 1e-6})
    if not (res.success and math.isfinite(res.fun)) or res.fun > nll(0.0):
        return 1.0
    return float(math.exp(res.x))


def tempered_log_loss(probs: np.ndarray, y: np.ndarray, task: str) -> float:
    """The log loss of ``probs`` after the temperature that fits them best (``_fit_temperature``).

    What an average of members is worth once the ensemble step has calibrated it: unlike the raw log loss, it
    does not count against a member whose probabilities are merely softer or sharper than the others' (label
    smoothing, focal loss, a balanced sampler), only against one that ranks the cases worse. The temperature
    is kept within ``_SELECTION_LOG_T_BOUNDS``: on a validation split that a member separates perfectly the
    best temperature is as low as the range allows and every candidate's loss goes to 0, which would let a
    weak member in.
    """
    from ._metrics import score

    t = _fit_temperature(probs, y, task, log_t_bounds=_SELECTION_LOG_T_BOUNDS)
    return score(_apply_temperature(probs, t, task), y, task=task, metric="log_loss")
