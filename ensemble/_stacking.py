"""Stacking of member probabilities: mean, best single member, greedy (Caruana), logistic and MLP combiners, chosen by k-fold
cross-validation on the validation predictions, optionally temperature-scaled, and saved as plain JSON.

The fitted combiner lives in ``params_`` as lists and floats only, and ``predict_proba`` is numpy on that
dict, so a fitted ensemble and one rebuilt with :meth:`StackingEnsemble.from_dict` run the same code.
"""

from __future__ import annotations

import math
import warnings
from numbers import Integral
from typing import Any, ClassVar, Sequence

import numpy as np

from trainables import ConfigError, Interval, Registry, did_you_mean

from ._metrics import LOWER_IS_BETTER, check_probs_labels, check_task, score

__all__ = ["COMBINER", "COMBINERS", "Combiner", "StackingEnsemble", "register_combiner"]

# Registration order is simplicity order: a tie in CV score goes to the earlier one. `best` (the single member
# that scores best on the training folds) is a candidate so that the chosen combiner never scores below it out of fold.
COMBINER = Registry("combiner", field="combiners")
COMBINERS = COMBINER  # the names, in simplicity order: mean, best, greedy, logistic, mlp
register_combiner = COMBINER.register
THRESHOLDS = ("youden", "argmax")
METRICS = ("auroc", "log_loss", "accuracy")
FORMAT = 1

# Probability floor for the meta-learners' features: keeps log/logit within about +-16, so a member that
# writes exact 0/1 (float32 softmax) does not make an outlier that dominates the standardised features.
_FEATURE_EPS = 1e-7
_TIE_TOL = 1e-12
# Temperature search range; Guo et al. report T in about [1, 3] for over-confident networks, and averaged
# ensembles are often under-confident (T < 1).
_LOG_T_BOUNDS = (math.log(0.05), math.log(20.0))
# A fitted temperature this close (in log T) to a bound is the search running out of range, not a fit.
_BOUND_TOL = 0.02


def _grid(name: str, mlp_hidden: int, greedy_rounds: int) -> list[dict[str, Any]]:
    """A combiner's settings to cross-validate, simplest (most regularised) first so ties go to it."""
    entry = COMBINER.get(name)
    given = {"hidden": mlp_hidden, "rounds": greedy_rounds}
    return COMBINER.create(name, **{k: v for k, v in given.items() if k in entry.options}).grid()


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


# ---------------------------------------------------------------- combiners: fit


def _fit_grid(name: str, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, task: str, metric: str, seed: int) -> list[dict[str, Any]]:
    """Fitted parameters of one combiner at every setting of its grid on (P, y), in grid order."""
    return COMBINER.create(name).fit_grid(grid, P, y, task=task, metric=metric, seed=seed)


def _fit_combiner(name: str, settings: dict[str, Any], P: np.ndarray, y: np.ndarray, task: str, metric: str, seed: int) -> dict[str, Any]:
    """Fitted parameters of one combiner on (P, y), as lists and floats."""
    return COMBINER.create(name).fit(settings, P, y, task=task, metric=metric, seed=seed)


def _fit_best(P: np.ndarray, y: np.ndarray, task: str, metric: str) -> dict[str, Any]:
    """The one member with the best ``metric`` on (P, y) (ties: the lower index), as one-hot weights."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    scores = []
    for i in range(P.shape[0]):
        s = score(P[i], y, task=task, metric=metric)
        scores.append(-math.inf if math.isnan(s) else sign * s)
    pick = int(np.argmax(scores))
    weights = np.zeros(P.shape[0])
    weights[pick] = 1.0
    return {"member": pick, "weights": weights.tolist()}


def _fit_greedy(P: np.ndarray, y: np.ndarray, task: str, rounds: int, metric: str) -> dict[str, Any]:
    """Caruana et al. (2004) selection with replacement: from an empty ensemble, add the member whose addition
    gives the best metric of the averaged probabilities, ``rounds`` times; weights = counts / rounds.
    Ties go to the lower member index (auto-sklearn breaks them at random)."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    m = P.shape[0]
    counts = np.zeros(m, dtype=int)
    total = np.zeros(P.shape[1:])
    if metric == "auroc":
        return _fit_greedy_auroc(P, y, task, rounds)
    for r in range(rounds):
        best, pick = -math.inf, 0
        for i in range(m):
            s = score((total + P[i]) / (r + 1), y, task=task, metric=metric)
            s = -math.inf if math.isnan(s) else sign * s
            if s > best:
                best, pick = s, i
        counts[pick] += 1
        total += P[pick]
    return {"counts": counts.tolist(), "weights": (counts / rounds).tolist()}


def _auroc_columns(y: np.ndarray, task: str) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(column, positive rows, negative rows) of every column the macro AUROC of ``_metrics.score`` averages."""
    if task == "multi-label":
        cols = [(j, np.flatnonzero(y[:, j] == 1), np.flatnonzero(y[:, j] == 0)) for j in range(y.shape[1])]
    elif task == "binary":
        cols = [(1, np.flatnonzero(y == 1), np.flatnonzero(y == 0))]
    else:
        k = int(y.max()) + 1 if y.size else 0
        cols = [(j, np.flatnonzero(y == j), np.flatnonzero(y != j)) for j in range(k)]
    return [c for c in cols if c[1].size and c[2].size]  # a column with one class is undefined (nan), left out


def _fit_greedy_auroc(P: np.ndarray, y: np.ndarray, task: str, rounds: int) -> dict[str, Any]:
    """:func:`_fit_greedy` for the macro AUROC, every member's candidate scored in one pass per column.

    Dividing by the number of picks does not change ranks, so the candidates are the running sums (exact
    for float32 member outputs); per column, every candidate's negatives and positives are sorted in one
    call each and the positives placed among the negatives by binary search (the Mann-Whitney U with ties
    counted half, as the scorer does): the same picks as scoring each candidate, several times faster.
    """
    m = P.shape[0]
    counts = np.zeros(m, dtype=int)
    cols = _auroc_columns(y, task)
    # each column's positive and negative rows, contiguous, and the running sums over them
    parts = [(np.ascontiguousarray(P[:, pos, j]), np.ascontiguousarray(P[:, neg, j])) for j, pos, neg in cols]
    sums = [(np.zeros(pos.size), np.zeros(neg.size)) for _, pos, neg in cols]
    for _ in range(rounds):
        pick = 0
        if cols:
            aucs = np.empty((m, len(cols)))
            for c, ((p_pos, p_neg), (s_pos, s_neg)) in enumerate(zip(parts, sums)):
                neg_sorted = np.sort(s_neg + p_neg, axis=1)
                # sorted keys: numpy's binary search starts from the previous key's place (fewer cache misses)
                pos_sorted = np.sort(s_pos + p_pos, axis=1)
                # _metrics._sorted_negatives_auroc for every member at once (the per-call overhead was half the time)
                at = np.stack([np.searchsorted(neg_sorted[i], pos_sorted[i], side="left") for i in range(m)])
                below = at.sum(1).astype(float)
                tied = np.take_along_axis(neg_sorted, np.minimum(at, neg_sorted.shape[1] - 1), axis=1) == pos_sorted
                for i in np.flatnonzero(tied.any(1)):  # ties with negatives count half
                    keys = pos_sorted[i][tied[i]]
                    below[i] += 0.5 * float((np.searchsorted(neg_sorted[i], keys, side="right") - at[i][tied[i]]).sum())
                aucs[:, c] = below / (pos_sorted.shape[1] * neg_sorted.shape[1])
            pick = int(np.argmax(aucs.mean(1)))  # the first of equal scores: the lower member index
        counts[pick] += 1
        for (p_pos, p_neg), (s_pos, s_neg) in zip(parts, sums):
            s_pos += p_pos[pick]
            s_neg += p_neg[pick]
    return {"counts": counts.tolist(), "weights": (counts / rounds).tolist()}


# The multi-label heads: one small model per label, all labels (and every grid setting) fitted together.
# scikit-learn per label was labels x folds x settings separate fits: 5 members x 12,800 rows x 14 labels
# took over 13 minutes, nearly all of it in 256-unit lbfgs MLPs.
_ML_MAX_HIDDEN = 16  # hidden units per label's MLP (a label's features are its members' logits: few, correlated)
_ML_NEWTON_ITERS = 50
_ML_MLP_MAX_EPOCHS = 40
_ML_MLP_PATIENCE = 4
_ML_MLP_STEPS_PER_EPOCH = 16  # batch = rows / 16: an epoch costs the same optimisation progress at any size
_ML_MLP_LR = 2e-2
_ML_HOLDOUT = 0.1  # share of the training rows that decides early stopping


def _label_features(P: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label: standardised member logits ``Z`` (K, N, M), known-row weights ``w`` (K, N), targets
    ``t`` (K, N), and the standardisation ``mean``, ``scale`` (K, M) over the known rows only.

    Masked entries are zeroed before anything is computed from them, so their values cannot matter."""
    known = (y >= 0).T  # (K, N)
    X = np.where(known[:, :, None], _logit(P).transpose(2, 1, 0), 0.0)
    w = known.astype(float)
    n_known = np.maximum(w.sum(1), 1.0)[:, None]
    mean = X.sum(1) / n_known
    scale = np.sqrt(np.maximum((np.where(known[:, :, None], X - mean[:, None, :], 0.0) ** 2).sum(1) / n_known, 0.0))
    scale[scale < 1e-12] = 1.0
    Z = np.where(known[:, :, None], (X - mean[:, None, :]) / scale[:, None, :], 0.0)
    return Z, w, (y.T == 1).astype(float), mean, scale


def _fit_label_heads(name: str, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """Multi-label logistic or MLP heads, one per label, for every setting in ``grid``: ``[{"labels": [...]}]``.

    A label whose known rows hold one class gets None (its members are averaged), as :func:`_fit_head` does.
    """
    Z, w, t, mean, scale = _label_features(P, y)
    k = Z.shape[0]
    pos = (w * t).sum(1)
    valid = (pos > 0) & (pos < w.sum(1))
    out: list[list[dict[str, Any] | None]] = [[None] * k for _ in grid]
    if valid.any():
        idx = np.flatnonzero(valid)
        if name == "logistic":
            fitted = _newton_logistic(Z[idx], w[idx], t[idx], [float(s["C"]) for s in grid])
        else:
            fitted = _batched_mlp(Z[idx], w[idx], t[idx], [float(s["alpha"]) for s in grid], [int(s["hidden"]) for s in grid], seed)
        for g, heads in enumerate(fitted):
            for j, head in zip(idx, heads):
                out[g][j] = {"mean": mean[j].tolist(), "scale": scale[j].tolist(), "classes": [0, 1], **head}
    return [{"labels": labels} for labels in out]


def _newton_logistic(Z: np.ndarray, w: np.ndarray, t: np.ndarray, Cs: list[float]) -> list[list[dict[str, Any]]]:
    """L2 logistic regressions, one per label, by Newton's method on all labels at once, warm-started along ``Cs``.

    The objective is scikit-learn's ``LogisticRegression(C)``: ``C * sum(log loss) + ||coef||^2 / 2``, the
    intercept unpenalised; it is strictly convex, so the solution is the one lbfgs approaches (closer: lbfgs
    stops at a gradient tolerance). Each step halves until the objective decreases, per label.
    """
    k, n, m = Z.shape
    A = np.concatenate([Z, np.ones((k, n, 1))], axis=2)  # (K, N, M + 1), the intercept last
    penal = np.r_[np.ones(m), 0.0]
    beta = np.zeros((k, m + 1))
    out = []

    def objective(b: np.ndarray, C: float) -> np.ndarray:
        z = np.einsum("knf,kf->kn", A, b)
        return C * (w * (np.logaddexp(0.0, z) - t * z)).sum(1) + 0.5 * (penal * b * b).sum(1)

    for C in Cs:
        f = objective(beta, C)
        for _ in range(_ML_NEWTON_ITERS):
            z = np.einsum("knf,kf->kn", A, beta)
            p = _sigmoid(z)
            grad = C * np.einsum("knf,kn->kf", A, w * (p - t)) + penal * beta
            hess = C * np.matmul(A.transpose(0, 2, 1) * (w * p * (1.0 - p))[:, None, :], A)
            hess[:, np.arange(m + 1), np.arange(m + 1)] += penal + 1e-10
            step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
            size = np.ones(k)
            for _halving in range(30):
                trial = beta - size[:, None] * step
                f_trial = objective(trial, C)
                worse = f_trial > f + 1e-12 * np.abs(f)
                if not worse.any():
                    break
                size[worse] *= 0.5
            beta, f = np.where(worse[:, None], beta, trial), np.where(worse, f, f_trial)  # a label that cannot descend has converged
            # the Newton decrement: how far the objective is from its minimum, to second order
            if np.max(np.einsum("kf,kf->k", grad, step)) < 1e-10 * max(1.0, float(np.abs(f).max())):
                break
        out.append([{"coef": [b[:m].tolist()], "intercept": [float(b[m])]} for b in beta])
    return out


def _batched_mlp(Z: np.ndarray, w: np.ndarray, t: np.ndarray, alphas: list[float], hiddens: list[int], seed: int) -> list[list[dict[str, Any]]]:
    """One-hidden-layer relu MLPs, one per label and setting, trained together (torch, batched matrix products).

    The loss is scikit-learn's MLPClassifier's: mean log loss + ``alpha / (2 * rows) * ||weights||^2``.
    Adam on minibatches of a fixed share of the rows, early-stopped per model on a held-out tenth of the
    training rows (the weights of its best held-out epoch are kept): a few hundred steps where lbfgs on a
    256-unit network took minutes per label. Initialisation (Glorot uniform, as scikit-learn) depends on the
    seed and the label only, so a setting fitted alone gets the weights it gets inside the grid.
    """
    import torch

    k, n, m = Z.shape
    hidden = max(hiddens)
    G = k * len(alphas)
    lab = np.tile(np.arange(k), len(alphas))  # group g: label lab[g], setting g // k
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # validation-sized products: one thread, as the BLAS limit in fit()
    try:
        rng = np.random.default_rng(seed)
        order = rng.permutation(n)
        n_hold = int(round(_ML_HOLDOUT * n)) if n >= 50 else 0
        hold, train = np.sort(order[:n_hold]), order[n_hold:]
        Zt = torch.from_numpy(Z.astype(np.float32))
        wt = torch.from_numpy(w.astype(np.float32))
        tt = torch.from_numpy(t.astype(np.float32))
        n_known = np.maximum(w[:, train].sum(1), 1.0)[lab]
        decay = torch.tensor([a / (2.0 * nk) for a, nk in zip(np.repeat(alphas, k), n_known)], dtype=torch.float32)
        mask = torch.zeros(G, 1, hidden)  # a setting with fewer hidden units uses the first ones only
        for g, h in enumerate(np.repeat(hiddens, k)):
            mask[g, :, : int(h)] = 1.0
        b1_bound, b2_bound = math.sqrt(6.0 / (m + hidden)), math.sqrt(6.0 / (hidden + 1))
        init = []
        for j in range(k):
            gen = np.random.default_rng([seed, j])
            init.append((gen.uniform(-b1_bound, b1_bound, (m, hidden)), gen.uniform(-b1_bound, b1_bound, hidden),
                         gen.uniform(-b2_bound, b2_bound, (hidden, 1)), gen.uniform(-b2_bound, b2_bound, 1)))
        W1 = torch.tensor(np.stack([init[j][0] for j in lab]), dtype=torch.float32).mul_(mask).requires_grad_()
        b1 = torch.tensor(np.stack([init[j][1] for j in lab])[:, None, :], dtype=torch.float32).mul_(mask).requires_grad_()
        W2 = torch.tensor(np.stack([init[j][2] for j in lab]), dtype=torch.float32).mul_(mask.transpose(1, 2)).requires_grad_()
        b2 = torch.tensor(np.stack([init[j][3] for j in lab])[:, None, :], dtype=torch.float32).requires_grad_()
        params = [W1, b1, W2, b2]
        opt = torch.optim.Adam(params, lr=_ML_MLP_LR)
        lab_t = torch.from_numpy(lab)

        def logits(rows: torch.Tensor) -> torch.Tensor:
            x = Zt[:, rows][lab_t]  # (G, B, M)
            h = torch.relu(torch.baddbmm(b1, x, W1)) * mask
            return torch.baddbmm(b2, h, W2).squeeze(-1)

        def bce(z: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            wr, tr = wt[:, rows][lab_t], tt[:, rows][lab_t]
            per = torch.nn.functional.binary_cross_entropy_with_logits(z, tr, reduction="none")
            return (per * wr).sum(1) / wr.sum(1).clamp_min(1.0)

        batch = max(1, min(len(train), math.ceil(len(train) / _ML_MLP_STEPS_PER_EPOCH)))
        hold_t = torch.from_numpy(hold)
        best_loss = torch.full((G,), math.inf)
        best = [p.detach().clone() for p in params]
        stale = torch.zeros(G, dtype=torch.long)
        for _epoch in range(_ML_MLP_MAX_EPOCHS):
            perm = torch.from_numpy(train[rng.permutation(len(train))])
            for b in range(0, len(perm), batch):
                rows = perm[b : b + batch]
                loss = bce(logits(rows), rows) + decay * ((W1 * W1).sum((1, 2)) + (W2 * W2).sum((1, 2)))
                opt.zero_grad(set_to_none=True)
                loss.sum().backward()
                opt.step()
            if not n_hold:
                continue  # too few rows to hold some out: the last epoch's weights
            with torch.no_grad():
                held = bce(logits(hold_t), hold_t)
                better = held < best_loss - 1e-6
                best_loss = torch.where(better, held, best_loss)
                for kept, p in zip(best, params):
                    kept[better] = p[better]
                stale = torch.where(better, torch.zeros_like(stale), stale + 1)
            if bool((stale >= _ML_MLP_PATIENCE).all()):
                break
        if not n_hold:
            best = [p.detach() for p in params]
    finally:
        torch.set_num_threads(threads)
    W1n, b1n, W2n, b2n = (p.double().numpy() for p in best)
    out = []
    for s, h in enumerate(hiddens):
        heads = []
        for j in range(k):
            g = s * k + j
            heads.append({
                "coefs": [W1n[g][:, :h].tolist(), W2n[g][:h].tolist()],
                "intercepts": [b1n[g, 0, :h].tolist(), b2n[g, 0].tolist()],
                "activation": "relu",
                "out_activation": "logistic",
            })
        out.append(heads)
    return out


def _fit_head(name: str, settings: dict[str, Any], X: np.ndarray, y: np.ndarray, seed: int) -> dict[str, Any] | None:
    """A logistic or MLP meta-learner on standardised features; None (average the members) with one class."""
    from sklearn.exceptions import ConvergenceWarning

    if len(np.unique(y)) < 2:
        return None
    mean = X.mean(0)
    scale = X.std(0)
    scale[scale < 1e-12] = 1.0
    Z = (X - mean) / scale
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if name == "logistic":
            from sklearn.linear_model import LogisticRegression

            # lbfgs, L2; with 3+ classes scikit-learn fits the multinomial (softmax) model
            model = LogisticRegression(C=float(settings["C"]), max_iter=1000).fit(Z, y)
            weights = {"coef": model.coef_.tolist(), "intercept": model.intercept_.tolist()}
        else:
            from sklearn.neural_network import MLPClassifier

            # lbfgs: full-batch, deterministic and fast on validation-sized data; no early stopping
            model = MLPClassifier(
                hidden_layer_sizes=(int(settings["hidden"]),),
                activation="relu",
                solver="lbfgs",
                alpha=float(settings["alpha"]),
                max_iter=300,
                early_stopping=False,
                random_state=seed,
            ).fit(Z, y)
            weights = {
                "coefs": [w.tolist() for w in model.coefs_],
                "intercepts": [b.tolist() for b in model.intercepts_],
                "activation": "relu",
                "out_activation": model.out_activation_,
            }
    return {"mean": mean.tolist(), "scale": scale.tolist(), "classes": [int(c) for c in model.classes_], **weights}


# ---------------------------------------------------------------- combiners: predict (numpy only)


def _combine(name: str, params: dict[str, Any], P: np.ndarray, task: str) -> np.ndarray:
    """(N, K) combined probabilities before normalisation and temperature."""
    if name not in COMBINER:
        raise ValueError(f"unknown combiner {name!r}")
    return COMBINER.create(name).combine(params, P, task=task)


# ---------------------------------------------------------------- the combiners


class Combiner:
    """A way to combine members' probabilities ``P`` (n_members, N, K) into one ``(N, K)``.

    ``grid()`` lists the settings to cross-validate (simplest first); ``fit`` returns JSON-ready fitted
    parameters for one setting; ``combine`` applies them with numpy only, so a bundle rebuilt from its
    JSON predicts the same. The constructor's keyword options are what the registry declares.
    """

    name: ClassVar[str] = ""

    def grid(self) -> list[dict[str, Any]]:
        return [{}]

    def fit(self, settings: dict[str, Any], P: np.ndarray, y: np.ndarray, *, task: str, metric: str, seed: int) -> dict[str, Any]:
        raise NotImplementedError

    def fit_grid(self, grid: list[dict[str, Any]], P: np.ndarray, y: np.ndarray, *, task: str, metric: str, seed: int) -> list[dict[str, Any]]:
        return [self.fit(settings, P, y, task=task, metric=metric, seed=seed) for settings in grid]

    def combine(self, params: dict[str, Any], P: np.ndarray, *, task: str) -> np.ndarray:
        raise NotImplementedError


@register_combiner("mean")
class MeanCombiner(Combiner):
    """The members' plain average."""

    name = "mean"

    def fit(self, settings, P, y, *, task, metric, seed):
        return {}

    def combine(self, params, P, *, task):
        return P.mean(0)


class _WeightedCombiner(Combiner):
    """Fitted params ``{"weights": [one per member]}``: a weighted mean of the members."""

    def combine(self, params, P, *, task):
        w = np.asarray(params["weights"], dtype=float)
        if w.shape != (P.shape[0],):
            raise ValueError(f"{self.name} weights have shape {w.shape}; expected ({P.shape[0]},)")
        return np.tensordot(w, P, axes=1) / w.sum()


@register_combiner("best")
class BestCombiner(_WeightedCombiner):
    """The single member that scores best on the fitting rows (one-hot weights)."""

    name = "best"

    def fit(self, settings, P, y, *, task, metric, seed):
        return _fit_best(P, y, task, metric)


@register_combiner("greedy", options={"rounds": [Interval(Integral, 1, None, closed="left")]})
class GreedyCombiner(_WeightedCombiner):
    """Caruana's greedy selection with replacement for ``rounds`` rounds."""

    name = "greedy"

    def __init__(self, *, rounds: int = 25) -> None:
        self.rounds = rounds

    def grid(self):
        return [{"rounds": self.rounds}]

    def fit(self, settings, P, y, *, task, metric, seed):
        return _fit_greedy(P, y, task, int(settings["rounds"]), metric)


class _HeadCombiner(Combiner):
    """A meta-learner on the members' logits (one per label for multi-label)."""

    def fit(self, settings, P, y, *, task, metric, seed):
        if task == "multi-label":
            return _fit_label_heads(self.name, [settings], P, y, seed)[0]
        return _fit_head(self.name, settings, _features(P, task), y, seed)

    def fit_grid(self, grid, P, y, *, task, metric, seed):
        if task == "multi-label":  # every setting in one batched pass
            return _fit_label_heads(self.name, grid, P, y, seed)
        return super().fit_grid(grid, P, y, task=task, metric=metric, seed=seed)

    def combine(self, params, P, *, task):
        k = P.shape[2]
        if task == "multi-label":
            labels = params["labels"]
            if len(labels) != k:
                raise ValueError(f"{len(labels)} per-label models for {k} labels")
            out = np.empty(P.shape[1:])
            for j, head in enumerate(labels):
                if head is None:
                    out[:, j] = P[:, :, j].mean(0)
                else:
                    cols = _head_proba(head, _logit(P[:, :, j]).T)
                    out[:, j] = cols[:, list(head["classes"]).index(1)]
            return out
        cols = _head_proba(params, _features(P, task))
        out = np.zeros(P.shape[1:])
        out[:, np.asarray(params["classes"], dtype=int)] = cols  # classes absent from the validation split get 0
        return out


@register_combiner("logistic")
class LogisticCombiner(_HeadCombiner):
    """L2 logistic regression, ``C`` cross-validated."""

    name = "logistic"

    def grid(self):
        return [{"C": c} for c in (0.1, 1.0, 10.0)]


@register_combiner("mlp", options={"hidden": [Interval(Integral, 1, None, closed="left")]})
class MLPCombiner(_HeadCombiner):
    """A one-hidden-layer MLP, its L2 ``alpha`` cross-validated."""

    name = "mlp"

    def __init__(self, *, hidden: int = 256) -> None:
        self.hidden = hidden

    def grid(self):
        # scikit-learn divides alpha by the number of rows; on validation-sized data (hundreds of rows) the
        # usual 1e-4 leaves a 256-unit MLP free to memorise (CV log loss 3-7 against logistic's 0.76 in a
        # 4-class trial), while alpha 1-10 makes it competitive, so the grid spans the strong end
        return [{"alpha": a, "hidden": self.hidden} for a in (10.0, 1.0, 1e-2)]


def _head_proba(head: dict[str, Any], X: np.ndarray) -> np.ndarray:
    """The meta-learner's class probabilities, columns in ``head['classes']`` order, as scikit-learn computes them."""
    mean = np.asarray(head["mean"], dtype=float)
    scale = np.asarray(head["scale"], dtype=float)
    if mean.shape != (X.shape[1],) or scale.shape != mean.shape:
        raise ValueError(f"meta-learner expects {mean.shape[0] if mean.ndim else '?'} features; got {X.shape[1]}")
    h = (X - mean) / scale
    if "coef" in head:
        z = h @ np.asarray(head["coef"], dtype=float).T + np.asarray(head["intercept"], dtype=float)
    else:
        coefs, intercepts = head["coefs"], head["intercepts"]
        for i, (w, b) in enumerate(zip(coefs, intercepts)):
            h = h @ np.asarray(w, dtype=float) + np.asarray(b, dtype=float)
            if i < len(coefs) - 1:
                h = np.maximum(h, 0.0)  # relu
        z = h
    if z.shape[1] == 1:  # binary: one logistic output for the second class
        p = _sigmoid(z[:, 0])
        return np.stack([1.0 - p, p], axis=1)
    return _softmax(z)


def _features(P: np.ndarray, task: str) -> np.ndarray:
    """Meta-learner features, (N, F): the members' logits recovered from their probabilities.

    Binary: each member's log-odds of the positive class (F = members). Multi-class and ordinal: each
    member's log-probabilities (F = members x K), which are its logits up to a per-row shift; a linear model
    on them is a weighted geometric pool of the members, and unlike raw probabilities they do not saturate
    near 0 and 1, where a confident member's evidence lies.
    """
    if task == "binary":
        return _logit(P[:, :, 1]).T
    m, n, k = P.shape
    return np.log(np.clip(P, _FEATURE_EPS, 1.0)).transpose(1, 0, 2).reshape(n, m * k)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _FEATURE_EPS, 1.0 - _FEATURE_EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    out = np.empty_like(z, dtype=float)
    pos = z >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-z[pos]))
    ez = np.exp(z[~pos])
    out[~pos] = ez / (1.0 + ez)
    return out


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def _normalise(probs: np.ndarray, task: str) -> np.ndarray:
    if task == "multi-label":
        return np.clip(probs, 0.0, 1.0)
    return probs / probs.sum(1, keepdims=True)


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


def _fit_temperature(probs: np.ndarray, y: np.ndarray, task: str) -> float:
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

    res = minimize_scalar(nll, bounds=_LOG_T_BOUNDS, method="bounded", options={"xatol": 1e-6})
    if not (res.success and math.isfinite(res.fun)) or res.fun > nll(0.0):
        return 1.0
    return float(math.exp(res.x))


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
