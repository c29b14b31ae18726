"""Stacking of member probabilities: mean, best single member, greedy (Caruana), logistic and MLP combiners, chosen by k-fold
cross-validation on the validation predictions, optionally temperature-scaled, and saved as plain JSON.

Here: the estimator, the decision threshold and the folds; the combiners are in ``_combiners``, the
temperature and class offsets in ``_calibration``.

The fitted combiner lives in ``params_`` as lists and floats only, and ``predict_proba`` is numpy on that
dict, so a fitted ensemble and one rebuilt with :meth:`StackingEnsemble.from_dict` run the same code.
"""

from __future__ import annotations

import math
import warnings
from typing import Any, Sequence

import numpy as np

from trainables import ConfigError, did_you_mean

from ._metrics import LOWER_IS_BETTER, check_probs_labels, check_task, score

from ._calibration import _BOUND_TOL, _LOG_T_BOUNDS, _apply_temperature, _fit_calibration
from ._combiners import (
    _ML_MAX_HIDDEN,
    _TIE_TOL,
    COMBINER,
    COMBINERS,
    Combiner,
    _combine,
    _fit_combiner,
    _fit_grid,
    _grid,
    _normalise,
    register_combiner,
)

__all__ = ["COMBINER", "COMBINERS", "Combiner", "StackingEnsemble", "register_combiner"]

# The combiners that leave a single member as it is (before the temperature and class offsets).
_ONE_MEMBER = ("mean", "best", "greedy")

THRESHOLDS = ("youden", "argmax")
METRICS = ("auroc", "log_loss", "accuracy")
FORMAT = 1


class StackingEnsemble:
    """Combine members' validation probabilities into one model, the combiner chosen by k-fold CV.

    Args:
        task: ``binary``, ``multi-class``, ``ordinal`` or ``multi-label``.
        combiners: candidates among ``mean``, ``best`` (the single best member), ``greedy``, ``logistic``, ``mlp``.
        n_folds: CV folds; fewer when the rarest class has fewer validation samples (at least 2).
        mlp_hidden: hidden units of the MLP meta-learner (multi-label: at most 16 per label's MLP; the labels'
            logistic and MLP heads are fitted all at once, Newton's method and batched Adam with early stopping).
        greedy_rounds: rounds of Caruana selection with replacement.
        temperature: fit one temperature on the chosen combiner's out-of-fold predictions; one that runs
            into its search bounds (0.05, 20) is reported in ``temperature_note_`` and a warning.
        class_bias: fit, with the temperature, one logit offset per class (per label) on the out-of-fold
            predictions (bias-corrected temperature scaling, Alexandari et al. 2020), so the ensemble's
            probabilities and argmax answer for the validation split's class mix, whatever mix the members
            were trained or corrected for.
        metric: ``auroc`` (macro), ``log_loss`` or ``accuracy``; the CV choice and greedy selection use it.
        seed: folds and the MLP's initialisation.
        threshold: binary tasks' operating point. ``youden`` picks the probability cut that maximises
            sensitivity + specificity (balanced accuracy) on the out-of-fold predictions, which holds up
            when the class mix of new data differs from validation's; ``argmax`` keeps 0.5.

    Fitted attributes: ``combiner_``, ``settings_`` (its grid point), ``params_`` (its fitted parameters,
    JSON-ready), ``temperature_`` (1.0 when off), ``class_bias_`` (per-class logit offsets, zeros
    when off), ``temperature_note_`` (what a temperature at its
    bound means, else None), ``cv_scores_`` (combiner -> best mean CV score),
    ``cv_table_`` (one row per combiner and setting), ``n_folds_``, ``n_members_``, ``n_classes_``,
    ``threshold_`` (binary: the positive-class probability from which :meth:`predict` says positive; else None).

    Example:
        >>> ens = StackingEnsemble(task="binary").fit(P_val, y_val)      # P_val: (members, N, 2)
        >>> ens.predict_proba(P_test).shape                              # doctest: +SKIP
        (N_test, 2)
    """

    def __init__(
        self,
        *,
        task: str,
        combiners: Sequence[str] = ("mean", "best", "logistic", "mlp", "greedy"),
        n_folds: int = 5,
        mlp_hidden: int = 256,
        greedy_rounds: int = 25,
        temperature: bool = True,
        class_bias: bool = True,
        metric: str = "auroc",
        seed: int = 0,
        threshold: str = "youden",
    ) -> None:
        self.task = task
        self.combiners = combiners
        self.n_folds = n_folds
        self.mlp_hidden = mlp_hidden
        self.greedy_rounds = greedy_rounds
        self.temperature = temperature
        self.class_bias = class_bias
        self.metric = metric
        self.seed = seed
        self.threshold = threshold

    # ------------------------------------------------------------ options

    def _checked_options(self) -> list[str]:
        check_task(self.task)
        names = [self.combiners] if isinstance(self.combiners, str) else list(self.combiners)
        if not names:
            raise ConfigError(f"needs at least one combiner; valid: {', '.join(COMBINERS)}", field="combiners")
        for name in names:
            COMBINER.get(name)
        if self.metric not in METRICS:
            raise ConfigError(
                f"Unknown metric {self.metric!r}{did_you_mean(str(self.metric), METRICS)}; valid: {', '.join(METRICS)}",
                field="metric",
            )
        for field, value, low in (("n_folds", self.n_folds, 2), ("mlp_hidden", self.mlp_hidden, 1), ("greedy_rounds", self.greedy_rounds, 1)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", field=field)
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
            raise ConfigError(f"must be an integer, got {self.seed!r}", field="seed")
        if self.threshold not in THRESHOLDS:
            raise ConfigError(
                f"Unknown threshold {self.threshold!r}{did_you_mean(str(self.threshold), THRESHOLDS)}; valid: {', '.join(THRESHOLDS)}",
                field="threshold",
            )
        for name in ("temperature", "class_bias"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                raise ConfigError(f"must be true or false, got {getattr(self, name)!r}", field=name)
        return [c for c in COMBINERS if c in names]  # simplicity order, duplicates dropped

    def _check_P(self, P: np.ndarray, n_members: int | None = None, n_classes: int | None = None) -> np.ndarray:
        P = np.asarray(P, dtype=float)
        if P.ndim != 3:
            raise ValueError(f"P must be (n_members, N, K) member probabilities; got shape {P.shape}")
        m, _, k = P.shape
        if n_members is not None and m != n_members:
            raise ValueError(f"P has {m} members but the ensemble was fitted on {n_members}")
        if n_classes is not None and k != n_classes:
            raise ValueError(f"P has {k} classes but the ensemble was fitted on {n_classes}")
        if m < 1 or k < 1:
            raise ValueError(f"P needs at least one member and one class; got shape {P.shape}")
        if self.task == "binary" and k != 2:
            raise ValueError(f"task 'binary' needs K = 2 probability columns; got {k}")
        if not np.isfinite(P).all() or P.min() < -1e-6 or P.max() > 1 + 1e-6:
            raise ValueError("P must hold probabilities in [0, 1] (softmax or sigmoid outputs, not logits)")
        if self.task != "multi-label" and P.shape[1] and np.abs(P.sum(-1) - 1.0).max() > 1e-3:
            raise ValueError(f"task {self.task!r}: each member's row of P must sum to 1 (softmax probabilities)")
        return np.clip(P, 0.0, 1.0)

    # ------------------------------------------------------------ fit

    def fit(self, P: np.ndarray, y: np.ndarray, *, groups: Any = None) -> "StackingEnsemble":
        """Cross-validate every combiner setting on ``(P, y)``, refit the best on all of it, fit the temperature.

        Args:
            P: (n_members, N, K) member probabilities on the validation split.
            y: (N,) class indices, or (N, K) in {0, 1, -1} for multi-label (-1 = masked, ignored).
            groups: (N,) each sample's patient; the CV folds then keep a patient's samples in one fold.
        """
        from threadpoolctl import threadpool_limits

        names = self._checked_options()
        P = self._check_P(P)
        # Validation-sized meta-learning is fastest on one BLAS thread; multi-threaded BLAS on a busy machine
        # spins (this package's tests: 13 s with one thread, 82 s without the limit, on 2 shared cores).
        with threadpool_limits(limits=1, user_api="blas"):
            return self._fit(names, P, y, groups)

    def _fit(self, names: list[str], P: np.ndarray, y: np.ndarray, groups: Any = None) -> "StackingEnsemble":
        m, n, k = P.shape
        _, y = check_probs_labels(P[0], y, self.task)
        multi = self.task == "multi-label"
        if n < 2:
            raise ValueError(f"need at least 2 validation samples to cross-validate; got {n}")
        if not multi and len(np.unique(y)) < 2:
            raise ValueError("y holds a single class; stacking needs at least two classes in the validation split")
        if m == 1:
            # One member has nothing to combine: a meta-learner on its logits only recalibrates it, which the
            # temperature and class offsets below do, and can change its ranking. On a 10,000-image
            # validation split of near-duplicate images the MLP won CV (0.9995 against 0.9977) and lost 0.001
            # test AUROC to the member it was fitted on (bench/RESULTS.md, 2026-12-03, the 90,000-image set).
            names = [n for n in names if n in _ONE_MEMBER] or names
        splits, self.n_folds_ = _splits(y, multi, int(self.n_folds), int(self.seed), groups=groups)
        # one MLP per label: a few dozen hidden units each (see _ML_MAX_HIDDEN), the grid says how many
        hidden = min(int(self.mlp_hidden), _ML_MAX_HIDDEN) if multi else int(self.mlp_hidden)

        sign = -1.0 if self.metric in LOWER_IS_BETTER else 1.0
        table: list[dict[str, Any]] = []
        oof: list[np.ndarray] = []
        for name in names:
            grid = _grid(name, hidden, int(self.greedy_rounds))
            preds = [np.zeros((n, k)) for _ in grid]
            fold_scores: list[list[float]] = [[] for _ in grid]
            for train, test in splits:
                # the whole grid on one fold at once: the multi-label heads fit every setting in one batched pass
                for g, params in enumerate(_fit_grid(name, grid, P[:, train], y[train], self.task, self.metric, int(self.seed))):
                    preds[g][test] = _combine(name, params, P[:, test], self.task)
                    fold_scores[g].append(score(preds[g][test], y[test], task=self.task, metric=self.metric))
            for settings, pred, folds in zip(grid, preds, fold_scores):
                valid = [f for f in folds if not math.isnan(f)]
                mean = float(np.mean(valid)) if valid else math.nan
                std = float(np.std(valid)) if valid else math.nan
                table.append({"combiner": name, "params": dict(settings), "fold_scores": folds, "mean": mean, "std": std})
                oof.append(pred)

        keyed = [sign * row["mean"] if not math.isnan(row["mean"]) else -math.inf for row in table]
        best = max(keyed)
        if best == -math.inf:
            warnings.warn(f"the metric {self.metric!r} is undefined in every CV fold; falling back to {table[0]['combiner']!r}")
            pick = 0
        else:
            pick = next(i for i, v in enumerate(keyed) if v >= best - _TIE_TOL)  # first = simplest among ties

        self.cv_table_ = table
        best_key: dict[str, float] = {}
        self.cv_scores_ = {}
        for row, key in zip(table, keyed):  # each combiner's score is that of its best setting
            if row["combiner"] not in best_key or key > best_key[row["combiner"]]:
                best_key[row["combiner"]] = key
                self.cv_scores_[row["combiner"]] = row["mean"]
        self.combiner_ = table[pick]["combiner"]
        self.settings_ = dict(table[pick]["params"])
        self.params_ = _fit_combiner(self.combiner_, self.settings_, P, y, self.task, self.metric, int(self.seed))
        self.n_members_, self.n_classes_ = m, k
        # Fitted on out-of-fold predictions, so the temperature corrects what the combiner does on unseen rows.
        self.temperature_, self.temperature_note_ = 1.0, None
        self.class_bias_ = [0.0] * k
        if self.temperature or self.class_bias:
            self.temperature_, bias = _fit_calibration(
                _normalise(oof[pick], self.task), y, self.task, temperature=bool(self.temperature), bias=bool(self.class_bias)
            )
            self.class_bias_ = [float(b) for b in bias]
            if min(abs(math.log(self.temperature_) - b) for b in _LOG_T_BOUNDS) < _BOUND_TOL:
                # The likelihood wants more rescaling than the range allows: the bound is still its best value
                # in range, but it says the members' probabilities are far off (another class mix, or broken).
                self.temperature_note_ = (
                    f"the fitted temperature {self.temperature_:.3g} is at the bound of its range "
                    f"({math.exp(_LOG_T_BOUNDS[0]):.3g}-{math.exp(_LOG_T_BOUNDS[1]):.3g}): the out-of-fold "
                    "probabilities are far from calibrated; check the members' class mix (prior_correction)"
                )
                warnings.warn(f"ensemble: {self.temperature_note_}")
        self.threshold_ = None
        if self.task == "binary":
            oof_probs = _apply_temperature(_normalise(oof[pick], self.task), self.temperature_, self.task, self.class_bias_)
            self.threshold_ = youden_threshold(oof_probs[:, 1], y) if self.threshold == "youden" else 0.5
        return self

    # ------------------------------------------------------------ predict

    def predict_proba(self, P: np.ndarray) -> np.ndarray:
        """(N, K) ensemble probabilities (rows sum to 1 unless multi-label) from (n_members, N, K) member probabilities."""
        if not hasattr(self, "params_"):
            from sklearn.exceptions import NotFittedError

            raise NotFittedError("this StackingEnsemble is not fitted; call fit(P, y) or build it with from_dict(d)")
        P = self._check_P(P, self.n_members_, self.n_classes_)
        probs = _normalise(_combine(self.combiner_, self.params_, P, self.task), self.task)
        return _apply_temperature(probs, self.temperature_, self.task, getattr(self, "class_bias_", None))

    def predict(self, P: np.ndarray) -> np.ndarray:
        """Class indices ``(N,)`` (binary: at ``threshold_``), or ``(N, K)`` 0/1 labels above 0.5 for multi-label."""
        return decide(self.predict_proba(P), self.task, getattr(self, "threshold_", None))

    # ------------------------------------------------------------ (de)serialisation

    def to_dict(self) -> dict[str, Any]:
        """Everything ``predict_proba`` needs, as JSON-ready lists, floats and strings (NaN written as null)."""
        if not hasattr(self, "params_"):
            raise ValueError("this StackingEnsemble is not fitted; nothing to serialise")
        return _jsonable(
            {
                "format": FORMAT,
                "estimator": "StackingEnsemble",
                "task": self.task,
                "n_members": int(self.n_members_),
                "n_classes": int(self.n_classes_),
                "combiner": self.combiner_,
                "settings": self.settings_,
                "params": self.params_,
                "temperature": float(self.temperature_),
                "class_bias": [float(b) for b in getattr(self, "class_bias_", [0.0] * int(self.n_classes_))],
                "temperature_note": getattr(self, "temperature_note_", None),
                "threshold": None if self.threshold_ is None else float(self.threshold_),
                "metric": self.metric,
                "n_folds": int(self.n_folds_),
                "cv_scores": self.cv_scores_,
                "cv_table": self.cv_table_,
                "options": {
                    "combiners": [self.combiners] if isinstance(self.combiners, str) else list(self.combiners),
                    "n_folds": int(self.n_folds),
                    "mlp_hidden": int(self.mlp_hidden),
                    "greedy_rounds": int(self.greedy_rounds),
                    "temperature": bool(self.temperature),
                    "class_bias": bool(self.class_bias),
                    "metric": self.metric,
                    "seed": int(self.seed),
                    "threshold": self.threshold,
                },
            }
        )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StackingEnsemble":
        """The fitted ensemble :meth:`to_dict` wrote; no scikit-learn object is made, prediction is numpy."""
        if not isinstance(d, dict):
            raise ValueError(f"expected the dict StackingEnsemble.to_dict() wrote; got {type(d).__name__}")
        if d.get("format") != FORMAT:
            raise ValueError(f"unsupported stacking format {d.get('format')!r}; this version reads format {FORMAT}")
        missing = [key for key in ("task", "n_members", "n_classes", "combiner", "params", "temperature") if key not in d]
        if missing:
            raise ValueError(f"stacking dict lacks {', '.join(missing)}")
        task = check_task(d["task"])
        COMBINER.get(d["combiner"], field="combiner")
        options = dict(d.get("options") or {})
        ens = cls(task=task, **{key: options[key] for key in ("combiners", "n_folds", "mlp_hidden", "greedy_rounds", "temperature", "class_bias", "metric", "seed", "threshold") if key in options})
        ens.combiner_ = d["combiner"]
        ens.settings_ = dict(d.get("settings") or {})
        ens.params_ = d["params"]
        ens.n_members_, ens.n_classes_ = int(d["n_members"]), int(d["n_classes"])
        ens.temperature_ = float(d["temperature"])
        # Bundles written before class offsets existed have none.
        bias = d.get("class_bias") or [0.0] * int(d["n_classes"])
        if len(bias) != int(d["n_classes"]) or not all(isinstance(b, (int, float)) and math.isfinite(b) for b in bias):
            raise ValueError(f"class_bias must hold {d['n_classes']} finite numbers; got {bias!r}")
        ens.class_bias_ = [float(b) for b in bias]
        ens.temperature_note_ = d.get("temperature_note")
        if not (math.isfinite(ens.temperature_) and ens.temperature_ > 0):
            raise ValueError(f"temperature must be a positive number; got {d['temperature']!r}")
        thr = d.get("threshold")
        if thr is not None and not (isinstance(thr, (int, float)) and 0.0 <= float(thr) <= 1.0):
            raise ValueError(f"threshold must be a probability in [0, 1] or null; got {thr!r}")
        # Bundles written before thresholds existed decided at 0.5.
        ens.threshold_ = (float(thr) if thr is not None else 0.5) if task == "binary" else None
        ens.n_folds_ = int(d.get("n_folds", options.get("n_folds", 0)))
        ens.cv_scores_ = {k: (math.nan if v is None else float(v)) for k, v in (d.get("cv_scores") or {}).items()}
        ens.cv_table_ = list(d.get("cv_table") or [])
        # Fail now, with the cause, rather than at the first prediction.
        probe = np.full((ens.n_members_, 1, ens.n_classes_), 1.0 / ens.n_classes_ if task != "multi-label" else 0.5)
        try:
            out = ens.predict_proba(probe)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"stacking params for combiner {ens.combiner_!r} do not fit {ens.n_members_} members x {ens.n_classes_} classes: {exc}") from exc
        if out.shape != (1, ens.n_classes_) or not np.isfinite(out).all():
            raise ValueError(f"stacking params for combiner {ens.combiner_!r} give invalid predictions")
        return ens

    def __repr__(self) -> str:
        fitted = f", combiner_={self.combiner_!r}" if hasattr(self, "combiner_") else ""
        return f"StackingEnsemble(task={self.task!r}, combiners={tuple(self.combiners) if not isinstance(self.combiners, str) else self.combiners!r}{fitted})"


# ---------------------------------------------------------------- decisions


def youden_threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The cut on positive-class ``scores`` that maximises Youden's J (sensitivity + specificity - 1).

    Among ties, the one closest to 0.5; 0.5 itself when ``y`` holds a single class.
    """
    from sklearn.metrics import roc_curve

    y = np.asarray(y).ravel()
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, cuts = roc_curve(y, scores)
    j = tpr - fpr
    best = np.flatnonzero(j >= j.max() - 1e-12)
    cut = cuts[best[np.argmin(np.abs(np.clip(cuts[best], 0.0, 1.0) - 0.5))]]
    return float(np.clip(cut, 0.0, 1.0))


def decide(probs: np.ndarray, task: str, threshold: float | None) -> np.ndarray:
    """Decisions from probabilities: binary at ``threshold`` (None: 0.5), multi-class argmax, multi-label > 0.5."""
    if task == "multi-label":
        return (probs > 0.5).astype(int)
    if task == "binary":
        return (probs[:, 1] >= (0.5 if threshold is None else threshold)).astype(int)
    return probs.argmax(1)


# ---------------------------------------------------------------- folds


def _splits(
    y: np.ndarray, multi: bool, n_folds: int, seed: int, *, groups: Any = None
) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    from sklearn.model_selection import KFold, StratifiedKFold

    n = y.shape[0]
    if groups is not None and len(set(map(str, groups))) >= 2:
        return _group_splits(y, multi, n_folds, seed, np.asarray([str(g) for g in groups]))
    if groups is not None:  # one patient: nothing to keep apart, and no grouped folds exist
        warnings.warn("the validation samples come from one patient (group): the stacking CV folds samples, not patients")
    if multi:
        k = min(n_folds, n)
        return list(KFold(k, shuffle=True, random_state=seed).split(np.zeros(n))), k
    y = np.asarray(y).astype(int)
    counts = np.bincount(y)
    counts = counts[counts > 0]
    if counts.max() < 2:
        raise ValueError("too few validation samples to cross-validate: every class has a single sample")
    # Every class in every test fold needs at least n_folds samples of it; with fewer, use fewer folds
    # (never below 2, where a singleton class lands in one fold's test part only).
    k = max(2, min(n_folds, int(counts.min())))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(n), y)), k


def _group_splits(y: np.ndarray, multi: bool, n_folds: int, seed: int, groups: np.ndarray):
    """Folds that keep each patient's samples together (stratified for classes): no patient on both sides."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    if len(groups) != y.shape[0]:
        raise ValueError(f"groups has {len(groups)} entries for {y.shape[0]} samples")
    n_groups = len(np.unique(groups))
    k = max(2, min(n_folds, n_groups))
    if multi:
        return list(GroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(groups)), groups=groups)), k
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        folds = StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(groups)), np.asarray(y).astype(int), groups)
        return list(folds), k


# ---------------------------------------------------------------- JSON


def _jsonable(obj: Any) -> Any:
    """Plain JSON types only; NaN and infinities (undefined CV scores) become None."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    return obj
