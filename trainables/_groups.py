"""Patients (groups): splits that keep each patient's images together, and the check on given splits.

One patient often has many images; an image-by-image split puts the same patient in train and test
and inflates every figure. Splits medsweep draws are grouped and stratified (scikit-learn's
``StratifiedGroupKFold``; multi-label: iterative stratification over patients); splits a user gives
(a split column, pre-split folders) are checked for a patient in two of them.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Sequence

import numpy as np

from ._errors import ConfigError

SPLITS = ("train", "val", "test")


def compile_pattern(pattern: str | None, *, origin: str, field: str) -> re.Pattern | None:
    """``pattern`` compiled, or a ConfigError naming the field when it is not a regular expression."""
    if pattern is None:
        return None
    try:
        return re.compile(str(pattern))
    except re.error as exc:
        raise ConfigError(
            f"not a regular expression ({exc}): {pattern!r}; use e.g. '(patient\\d+)' (the first group names the patient)",
            origin=origin,
            field=field,
        ) from None


def group_of(text: str, pattern: re.Pattern, *, where: str, field: str) -> str:
    """The patient named in ``text``: the pattern's first capture group (or its whole match)."""
    m = pattern.search(text)
    if m is None:
        raise ConfigError(
            f"{pattern.pattern!r} does not match {text!r} ({where}); fix the pattern so it finds the patient in every name",
            field=field,
        )
    return m.group(1) if m.re.groups else m.group(0)


def grouped_split(
    strat: np.ndarray,
    groups: Sequence[str],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    multilabel: np.ndarray | None = None,
    where: str,
    field: str,
) -> dict[str, np.ndarray]:
    """Row indices of train/val/test with every group in one split, stratified by ``strat``.

    Args:
        strat: (N,) class per row (single-label), ignored when ``multilabel`` is given.
        groups: (N,) the patient (or volume) of each row.
        multilabel: (N, L) labels in {0, 1, -1}: iterative stratification on each group's positives.
        where: the file the rows come from, for errors.
        field: the config field to name in errors.

    The held-out fractions are met in whole patients, so they are approximate.
    """
    groups = np.asarray([str(g) for g in groups])
    uniq, inverse = np.unique(groups, return_inverse=True)
    if len(uniq) < 3:
        raise ConfigError(
            f"{where}: {len(uniq)} patient(s)/group(s) only, too few to put different ones in train, val and test; "
            "add data, or give the split yourself (split_column) with allow_group_overlap: true",
            field=field,
        )
    held = val_fraction + test_fraction
    idx = np.arange(len(groups))
    # The first cut must hold out at least 2 patients: val and test then get one each.
    if multilabel is not None:
        tr, rest = _multilabel_group_split(idx, inverse, multilabel, held, seed, min_held=2)
        va, te = _multilabel_group_split(rest, inverse, multilabel, test_fraction / held, seed, min_held=1)
    else:
        tr, rest = _group_split(idx, inverse, strat, held, seed, min_held=2)
        va, te = _group_split(rest, inverse, strat, test_fraction / held, seed, min_held=1)
    parts = {"train": np.sort(tr), "val": np.sort(va), "test": np.sort(te)}
    empty = [s for s, ix in parts.items() if len(ix) == 0]
    if empty:
        raise ConfigError(
            f"{where}: {len(uniq)} patients are too few for a grouped {', '.join(empty)} split with "
            f"val_fraction {val_fraction:g} and test_fraction {test_fraction:g}; add data or raise the fractions",
            field=field,
        )
    return parts


def fold_of(
    labels: np.ndarray, groups: Sequence[str] | None, *, n_folds: int, seed: int = 0, multilabel: bool = False
) -> np.ndarray:
    """The fold (``0 .. n_folds-1``) of each row: every patient in one fold, stratified by class when possible.

    Args:
        labels: (N,) classes, or (N, L) multi-label rows (then grouped, not stratified).
        groups: (N,) the patient of each row; ``None``: each row its own.
        n_folds: folds; fewer patients than folds is an error.
        seed: the shuffle; the same seed gives the same folds, whatever config trains on them.

    Example:
        >>> fold_of(np.array([0, 0, 1, 1, 0, 1]), None, n_folds=3).tolist()
        [0, 2, 1, 2, 1, 0]
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    n = len(labels)
    g = np.asarray([str(v) for v in groups]) if groups is not None else np.arange(n).astype(str)
    if len(np.unique(g)) < n_folds:
        raise ConfigError(f"{len(np.unique(g))} patient(s) are too few for {n_folds} folds; lower cv_folds", field="cv_folds")
    out = np.full(n, -1, dtype=np.int64)
    idx = np.arange(n)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        try:
            if multilabel:
                raise ValueError("multi-label rows: grouped folds")
            splits = StratifiedGroupKFold(n_folds, shuffle=True, random_state=seed).split(idx, labels, g)
            for k, (_, held) in enumerate(splits):
                out[held] = k
        except ValueError:  # a class with fewer patients than folds, or multi-label: grouped only
            for k, (_, held) in enumerate(GroupKFold(n_folds, shuffle=True, random_state=seed).split(idx, groups=g)):
                out[held] = k
    return out


def _group_split(idx: np.ndarray, inverse: np.ndarray, strat: np.ndarray, fraction: float, seed: int, *, min_held: int):
    """Split ``idx`` into (kept, held) with ~``fraction`` of its groups held out, stratified when possible."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedGroupKFold

    g = inverse[idx]
    n_groups = len(np.unique(g))
    # k stratified folds, m of them held out: the fewest folds whose m/k meets the fraction best (folds of
    # several patients each, else stratifying has nothing to balance).
    cands = [(abs(max(1, round(fraction * kk)) / kk - fraction), kk) for kk in range(2, max(2, min(10, n_groups // 2)) + 1)]
    k = min(cands)[1]
    m = min(max(1, int(round(fraction * k))), k - 1)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*least populated class.*")
        try:
            folds = [test for _, test in StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(idx, strat[idx], g)]
            held = np.sort(np.concatenate(folds[:m]))
            if min_held <= len(np.unique(g[held])) < n_groups:
                return np.setdiff1d(idx, idx[held]), idx[held]
        except ValueError:  # e.g. a class with fewer rows than folds: still grouped, no longer stratified
            pass
    n_held = min(max(min_held, int(round(fraction * n_groups))), n_groups - 1)
    kept, held = next(GroupShuffleSplit(1, test_size=n_held, random_state=seed).split(idx, groups=g))
    return idx[kept], idx[held]


def _multilabel_group_split(idx: np.ndarray, inverse: np.ndarray, y: np.ndarray, fraction: float, seed: int, *, min_held: int):
    """Iterative stratification over groups: a group's labels are the positives of any of its rows."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    g = inverse[idx]
    ug, gi = np.unique(g, return_inverse=True)
    yg = np.zeros((len(ug), y.shape[1]), dtype=int)
    np.maximum.at(yg, gi, (y[idx] == 1).astype(int))
    n_held = min(max(min_held, int(round(fraction * len(ug)))), len(ug) - 1)
    splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_held, random_state=seed)
    kept_g, held_g = next(splitter.split(np.zeros(len(ug)), yg))
    held = np.isin(gi, held_g)
    return idx[~held], idx[held]


def check_overlap(
    groups: dict[str, Sequence[str]],
    names: dict[str, Sequence[str]],
    *,
    allow: bool,
    where: str,
    field: str,
) -> None:
    """Fail when a patient has images in two given splits (unless ``allow``), naming the patient and the files."""
    if allow:
        return
    first: dict[str, tuple[str, str]] = {}
    for split in SPLITS:
        for g, name in zip(groups.get(split, ()), names.get(split, ())):
            seen = first.setdefault(str(g), (split, str(name)))
            if seen[0] != split:
                raise ConfigError(
                    f"patient {g!r} is in {seen[0]} ({seen[1]}) and in {split} ({name}) of {where}: one patient's images in "
                    "two splits leak into every score; move them into one split, or set data.allow_group_overlap: true",
                    field=field,
                )


POOLS = ("mean", "max")


def pool_by_group(
    probs: np.ndarray, labels: np.ndarray, groups: Sequence[str], *, how: str, task: str
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One prediction per group (e.g. per CT volume from its slices): ``mean`` or ``max`` of the probabilities.

    Labels are the group's own (its first row's: per-volume labels are the same on every slice). For
    single-label tasks pooled rows are renormalised to sum to 1.

    Example:
        >>> p, y, g = pool_by_group(np.array([[.8, .2], [.4, .6]]), np.array([1, 1]), ["v1", "v1"], how="max", task="binary")
        >>> g, y.tolist()
        (['v1'], [1])
    """
    if how not in POOLS:
        raise ValueError(f"unknown pool {how!r}; valid: {', '.join(POOLS)}")
    groups = np.asarray([str(g) for g in groups])
    order, first = np.unique(groups, return_index=True)
    order = order[np.argsort(first)]  # groups in order of first appearance
    pooled = np.stack([(probs[groups == g].max(0) if how == "max" else probs[groups == g].mean(0)) for g in order])
    if task != "multi-label":
        pooled = pooled / np.clip(pooled.sum(1, keepdims=True), 1e-12, None)
    ys = np.stack([labels[np.flatnonzero(groups == g)[0]] for g in order])
    return pooled, ys, [str(g) for g in order]


def pooled_metrics(ds: Any, split: str, probs: np.ndarray) -> dict[str, float]:
    """``val_volume_*`` metrics of the predictions pooled per volume, when the data ask for pooling; else ``{}``."""
    how = (getattr(ds, "grouping", None) or {}).get("pool")
    sp = ds.splits[split]
    if not how or sp.groups is None or len(sp) == 0:
        return {}
    from ._metrics import compute_metrics

    p, y, _ = pool_by_group(probs, sp.labels, sp.groups, how=how, task=ds.task)
    return compute_metrics(p, y, task=ds.task, class_names=ds.class_names, prefix=f"{split}_volume_")
