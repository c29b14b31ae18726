"""Which trials join the ensemble: a sweep's top-k by its metric, and their predictions aligned by sample.

Reads only what a sweep leaves in its run folder: ``leaderboard.parquet``, the resolved ``space.yaml``
(its ``ensemble:`` section) and, per trial, the checkpoint folder with ``best.safetensors``,
``model.json`` and the best epoch's ``predictions_val.parquet`` / ``predictions_test.parquet``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from trainables import ConfigError, check_keys, did_you_mean
from trainables.artifacts import (
    BEST_WEIGHTS,
    LEADERBOARD_PARQUET,
    MEMBER_FILES,
    PREDICTION_SPLITS,
    USABLE_STATUSES,
    read_leaderboard,
    read_model_json,
    read_predictions,
)

__all__ = ["ENSEMBLE_KEYS", "EnsembleSettings", "Member", "Selection", "select_members"]

# How members are picked from the usable trials (EnsembleSettings.selection).
SELECTIONS = ("greedy", "top_k")
# Greedy selection: a change of the averaged members' metric within this is noise (a small validation
# split moves AUROC by more than this between near-equal models); the log loss decides there.
_STOP_DROP = 0.01
# Sweep metric -> the stacking's CV metric (StackingEnsemble.metric).
_METRIC_OF_SWEEP = {"val_auroc": "auroc", "val_accuracy": "accuracy", "val_loss": "log_loss"}
_STACKING_METRICS = ("auroc", "log_loss", "accuracy")


@dataclass(frozen=True)
class EnsembleSettings:
    """The ``ensemble:`` section of a space file, validated.

    Attributes:
        top_k: at most this many members (default 5; with fewer usable trials, all of them, with a note).
        selection: how members are picked: ``greedy`` (forward selection over the ``pool`` best trials:
            each step adds the trial that most improves the averaged validation predictions, so a
            near-copy of a member is passed over for one that errs elsewhere) or ``top_k`` (the best
            trials by the sweep metric).
        pool: greedy selection's candidates, the best trials by the sweep metric.
        combiners: candidates, chosen among by k-fold CV on the validation predictions (``best``: the
            single best member, so the ensemble never scores below it out of fold).
        n_folds: CV folds.
        temperature: fit a temperature on the out-of-fold predictions.
        class_bias: fit one logit offset per class with it, so argmax answers for the validation mix.
        max_per_backbone: at most this many members per backbone (diversity); ``None``: no cap.
        mlp_hidden: hidden units of the MLP combiner.
        greedy_rounds: rounds of Caruana selection.
        metric: the CV metric (``auroc``, ``log_loss``, ``accuracy``); default follows the sweep's metric.
        seed: CV folds and the MLP's initialisation.
        threshold: binary tasks' operating point: ``youden`` (chosen on validation) or ``argmax`` (0.5).
        weights_dtype: the bundle's member weights, ``float32`` or ``float16`` (half the size; the members
            run in float32 as before, predictions move by about 1e-4).
        bagging: refit the chosen members on ``bag_folds`` folds of train+val after the search and stack
            their out-of-fold predictions (AutoGluon's bagging): ``auto`` (when the validation split is
            small; the search then gets less of the budget), ``true`` or ``false`` (the default).
        bag_folds: folds of a bag (grouped by patient, stratified).
        top_k_set: whether ``top_k`` was given (file or flag) rather than defaulted.
    """

    top_k: int = 5
    selection: str = "greedy"
    pool: int = 20
    combiners: tuple[str, ...] = ("mean", "best", "logistic", "mlp", "greedy")
    n_folds: int = 5
    temperature: bool = True
    class_bias: bool = True
    max_per_backbone: int | None = None
    mlp_hidden: int = 256
    greedy_rounds: int = 25
    metric: str | None = None
    seed: int = 0
    threshold: str = "youden"
    weights_dtype: str = "float32"
    # Off by default: measured once on pneumoniamnist-500 (bench/RESULTS.md), bagging gained test AUROC
    # but lost argmax accuracy and left 30 % of the budget unused, so it is not yet the winner to ship.
    bagging: str | bool = False
    bag_folds: int = 5
    top_k_set: bool = False

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, *, origin: str = "space.yaml", prefix: str = "ensemble") -> "EnsembleSettings":
        from ._stacking import COMBINERS, THRESHOLDS

        raw = dict(raw or {})
        check_keys(raw, ENSEMBLE_KEYS, origin=origin, prefix=prefix)
        values: dict[str, Any] = {}
        for key in ("top_k", "pool", "n_folds", "mlp_hidden", "greedy_rounds", "max_per_backbone", "seed", "bag_folds"):
            if key not in raw or (key == "max_per_backbone" and raw[key] is None):
                continue
            low = {"n_folds": 2, "seed": 0, "bag_folds": 2}.get(key, 1)
            value = raw[key]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ConfigError(f"must be an integer >= {low}, got {value!r}", origin=origin, field=f"{prefix}.{key}")
            values[key] = int(value)
        if "bagging" in raw:
            if raw["bagging"] not in ("auto", True, False) or isinstance(raw["bagging"], (int, float)) and not isinstance(raw["bagging"], bool):
                raise ConfigError(f"must be auto, true or false, got {raw['bagging']!r}", origin=origin, field=f"{prefix}.bagging")
            values["bagging"] = raw["bagging"]
        for key in ("temperature", "class_bias"):
            if key in raw:
                if not isinstance(raw[key], bool):
                    raise ConfigError(f"must be true or false, got {raw[key]!r}", origin=origin, field=f"{prefix}.{key}")
                values[key] = raw[key]
        if "combiners" in raw:
            names = [raw["combiners"]] if isinstance(raw["combiners"], str) else raw["combiners"]
            if not isinstance(names, (list, tuple)) or not names:
                raise ConfigError(
                    f"must be a list of combiners from {', '.join(COMBINERS)}, got {raw['combiners']!r}",
                    origin=origin, field=f"{prefix}.combiners",
                )
            for name in names:
                if name not in COMBINERS:
                    raise COMBINERS.unknown(name, origin=origin, field=f"{prefix}.combiners")
            values["combiners"] = tuple(str(n) for n in names)
        for key, valid in (("threshold", THRESHOLDS), ("metric", _STACKING_METRICS), ("selection", SELECTIONS),
                           ("weights_dtype", WEIGHTS_DTYPES)):
            if raw.get(key) is not None:
                if raw[key] not in valid:
                    raise ConfigError(
                        f"Unknown {key} {raw[key]!r}{did_you_mean(str(raw[key]), valid)}; valid: {', '.join(valid)}",
                        origin=origin, field=f"{prefix}.{key}",
                    )
                values[key] = raw[key]
        return cls(**values, top_k_set="top_k" in raw)

    def stacking_metric(self, sweep_metric: str) -> str:
        """The CV metric: the file's ``metric``, else the sweep's own when the stacking knows it, else AUROC."""
        return self.metric or _METRIC_OF_SWEEP.get(sweep_metric, "auroc")


WEIGHTS_DTYPES = ("float32", "float16")
ENSEMBLE_KEYS = tuple(f.name for f in dataclasses.fields(EnsembleSettings) if f.name != "top_k_set")


@dataclass
class Member:
    """One trial of the ensemble: where its files are and its predictions, rows in the selection's order."""

    trial_id: str
    backbone: str
    head: str
    val_score: float  # the sweep metric at its best epoch (the leaderboard's ``best``)
    config: dict[str, Any]
    folder: Path  # holds MEMBER_FILES
    model: dict[str, Any]  # model.json
    val: np.ndarray  # (N_val, K) probabilities
    test: np.ndarray  # (N_test, K)

    @property
    def weights(self) -> Path:
        return self.folder / BEST_WEIGHTS


@dataclass
class Selection:
    """The members and what the stacking fits on: ``P_val`` (members, N, K), ``y_val``, and the same for test."""

    run_dir: Path
    metric: str
    mode: str
    settings: EnsembleSettings
    members: list[Member]
    task: str
    class_names: list[str]
    val_ids: list[str]
    test_ids: list[str]
    y_val: np.ndarray
    y_test: np.ndarray
    n_available: int
    notes: list[str] = field(default_factory=list)
    groups_val: list[str] | None = None  # each validation sample's patient, when the trials' predictions carry it

    @property
    def P_val(self) -> np.ndarray:
        return np.stack([m.val for m in self.members])

    @property
    def P_test(self) -> np.ndarray:
        return np.stack([m.test for m in self.members])

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"


def read_settings(run_dir: Path) -> tuple[dict[str, Any], EnsembleSettings]:
    """The resolved ``space.yaml`` the sweep wrote, and its ``ensemble:`` section validated."""
    import yaml

    path = run_dir / "space.yaml"
    if not path.is_file():
        return {}, EnsembleSettings()
    try:
        space = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML ({' '.join(str(exc).split())[:160]}); rerun the sweep or fix the file", origin=str(path)) from None
    if not isinstance(space, dict):
        raise ConfigError("must be a mapping (a resolved space file)", origin=str(path))
    section = space.get("ensemble") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"must be a mapping, got {type(section).__name__}", origin=str(path), field="ensemble")
    return space, EnsembleSettings.from_dict(section, origin=str(path))


def select_members(
    run_dir: str | Path,
    *,
    top_k: int | None = None,
    max_per_backbone: int | None = None,
    selection: str | None = None,
) -> Selection:
    """The ensemble's members among a finished sweep's trials, and their aligned validation and test predictions.

    Args:
        run_dir: a sweep's run folder (``runs/<name>``), holding ``leaderboard.parquet`` and ``space.yaml``.
        top_k: members; overrides the space's ``ensemble.top_k`` (default 5).
        max_per_backbone: at most this many members per backbone; overrides ``ensemble.max_per_backbone``.
        selection: ``greedy`` or ``top_k``; overrides ``ensemble.selection`` (default greedy).

    Raises:
        ConfigError: no leaderboard, no usable trial, or members whose predictions do not cover the
            same samples.

    Example:
        >>> sel = select_members("runs/cxr", top_k=3)
        >>> sel.P_val.shape          # (members, validation samples, classes)
        (3, 524, 2)
    """
    if "://" in str(run_dir):
        raise ConfigError(
            "the ensemble step reads a local run folder; copy it here first (e.g. `aws s3 sync`) "
            "and run python -m ensemble.build on the copy",
            origin=str(run_dir),
        )
    run_dir = Path(run_dir).expanduser().resolve()
    board_path = run_dir / LEADERBOARD_PARQUET
    if not board_path.is_file():
        what = "no such folder" if not run_dir.is_dir() else "no leaderboard.parquet in it"
        raise ConfigError(f"not a finished sweep ({what}); run python -m search.run SPACE first, or pass its run folder", origin=str(run_dir))
    space, settings = read_settings(run_dir)
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
            raise ConfigError(f"must be an integer >= 1, got {top_k!r}", field="--top-k")
        settings = dataclasses.replace(settings, top_k=int(top_k), top_k_set=True)
    if max_per_backbone is not None:
        if isinstance(max_per_backbone, bool) or not isinstance(max_per_backbone, (int, np.integer)) or max_per_backbone < 1:
            raise ConfigError(f"must be an integer >= 1, got {max_per_backbone!r}", field="--max-per-backbone")
        settings = dataclasses.replace(settings, max_per_backbone=int(max_per_backbone))
    if selection is not None:
        if selection not in SELECTIONS:
            raise ConfigError(
                f"Unknown selection {selection!r}{did_you_mean(str(selection), SELECTIONS)}; valid: {', '.join(SELECTIONS)}",
                field="--selection",
            )
        settings = dataclasses.replace(settings, selection=selection)

    origin = str(run_dir)
    board = read_leaderboard(run_dir)
    search = space.get("search") or {}
    metric = str(search.get("metric") or (board["metric"].iloc[0] if len(board) and "metric" in board else "val_auroc"))
    mode = str(search.get("mode") or "max")
    notes: list[str] = []
    candidates = []
    weightless = 0
    for row in board.to_dict("records"):
        if row.get("status") not in USABLE_STATUSES:
            continue
        best = _float(row.get("best"))
        folder = _member_folder(row, run_dir)
        if folder is None:
            if _member_folder(row, run_dir, files=MEMBER_FILES[1:]) is not None:
                weightless += 1  # predictions without weights: `search.keep: best` kept only the ensemble's
            else:
                notes.append(f"trial {row['trial_id']}: no folder with {', '.join(MEMBER_FILES)}; left out")
            continue
        candidates.append((row, best, folder))
    if weightless:
        notes.append(
            f"{weightless} trial(s) kept their predictions but not their weights (search.keep: best keeps the "
            "ensemble's members' only; search.keep: weights keeps every trial's): passed over"
        )
    # Best first by the sweep metric (NaN last); ties by trial id, so the choice is reproducible.
    sign = -1.0 if mode == "max" else 1.0
    candidates.sort(key=lambda c: (math.isnan(c[1]), sign * c[1] if not math.isnan(c[1]) else 0.0, str(c[0]["trial_id"])))

    chosen, per_backbone = [], {}
    for row, best, folder in candidates:
        model = read_model_json(folder)
        backbone = str(model.get("backbone") or row.get("config/backbone"))
        if settings.max_per_backbone is not None and per_backbone.get(backbone, 0) >= settings.max_per_backbone:
            continue
        per_backbone[backbone] = per_backbone.get(backbone, 0) + 1
        chosen.append((row, best, folder, model))
    available = len(chosen)
    cap = f" with at most {settings.max_per_backbone} per backbone" if settings.max_per_backbone is not None else ""
    if available == 0:
        raise ConfigError(
            f"no trial left predictions and weights (finished or pruned){cap}; "
            "see the leaderboard's status and error columns",
            origin=origin,
        )
    k = settings.top_k
    if k > available:
        # A short sweep (a budget spent on few trials) still gets an ensemble of what it has.
        notes.append(f"only {available} usable trial(s){cap}, fewer than top_k {k}: the ensemble takes all of them")
        warnings.warn(f"ensemble: only {available} usable trial(s), fewer than top_k {k}; using all of them")
        k = available
    # Forward selection also when the sweep left no more trials than top_k: it may stop before taking them all.
    greedy = settings.selection == "greedy" and available > 1
    start = 0
    if greedy:
        start, why = _greedy_start([(row, best) for row, best, _, _ in chosen], mode=mode)
        if start:
            chosen.insert(0, chosen.pop(start))
            notes.append(why)
    chosen = chosen[: max(k, settings.pool)] if greedy else chosen[:k]

    members: list[Member] = []
    first = chosen[0][3]
    task, class_names = str(first["task"]), list(first["class_names"])
    val_ids = test_ids = None
    y_val = y_test = None
    for row, best, folder, model in chosen:
        tid = str(row["trial_id"])
        if str(model["task"]) != task or list(model["class_names"]) != class_names:
            raise ConfigError(
                f"trial {tid} predicts {model['task']} {model['class_names']} but trial {chosen[0][0]['trial_id']} "
                f"predicts {task} {class_names}; ensemble members must share one data set",
                origin=origin,
            )
        frames = {}
        for split in PREDICTION_SPLITS:
            frames[split] = read_predictions(folder, split)
        if val_ids is None:
            val_ids = _ids(frames["val"], tid, "val")
            test_ids = _ids(frames["test"], tid, "test")
            y_val = _labels(frames["val"], class_names, task, tid, "val")
            y_test = _labels(frames["test"], class_names, task, tid, "test")
            groups_val = [str(g) for g in frames["val"]["group"]] if "group" in frames["val"].columns else None
            groups_test = [str(g) for g in frames["test"]["group"]] if "group" in frames["test"].columns else None
        val = _aligned(frames["val"], val_ids, y_val, class_names, task, tid, str(chosen[0][0]["trial_id"]), "val")
        test = _aligned(frames["test"], test_ids, y_test, class_names, task, tid, str(chosen[0][0]["trial_id"]), "test")
        config = {key[len("config/"):]: _plain(v) for key, v in row.items() if key.startswith("config/") and not _missing(v)}
        members.append(
            Member(
                trial_id=tid,
                backbone=str(model["backbone"]),
                head=str(model.get("head") or "linear"),
                val_score=best,
                config=config,
                folder=folder,
                model=model,
                val=val,
                test=test,
            )
        )
    pool = (first.get("data") or {}).get("pool")
    if pool and groups_val is not None and groups_test is not None:
        # Volumes carry the labels: the ensemble fits and reports on one pooled prediction per volume.
        from trainables import pool_by_group

        for m in members:
            m.val, y_pooled, ids_val = pool_by_group(m.val, y_val, groups_val, how=pool, task=task)
            m.test, y_pooled_test, ids_test = pool_by_group(m.test, y_test, groups_test, how=pool, task=task)
        y_val, y_test, val_ids, test_ids, groups_val = y_pooled, y_pooled_test, ids_val, ids_test, None
        notes.append(f"slice predictions pooled per volume ({pool}): {len(val_ids)} validation and {len(test_ids)} test volumes")
    if greedy:
        members, picked_note = _forward_select(members, y_val, task=task, k=k, metric=settings.stacking_metric(metric),
                                               moved_start=bool(start))
        notes.append(picked_note)
    return Selection(
        run_dir=run_dir,
        metric=metric,
        mode=mode,
        settings=settings,
        members=members,
        task=task,
        class_names=class_names,
        val_ids=list(val_ids),
        test_ids=list(test_ids),
        y_val=y_val,
        y_test=y_test,
        n_available=available,
        notes=notes,
        groups_val=groups_val,
    )


# ---------------------------------------------------------------- greedy selection


def _greedy_start(ranked: list[tuple[Mapping[str, Any], float]], *, mode: str) -> tuple[int, str]:
    """Where forward selection starts: the index in ``ranked`` (best first by the sweep metric) and a note.

    The best trial, unless it stopped before half its schedule (ASHA pruned it at an early rung) and a
    trial that trained more of it scores within ``_STOP_DROP`` (the noise of a small or saturated validation
    split): then the one that trained the most of its schedule, best score first among equals. Such a
    trial's best epoch comes from early in its learning-rate schedule, and a validation split that
    cannot tell the two apart cannot tell which generalizes; on full PneumoniaMNIST a resnet34 pruned at
    epoch 4 of 13 led the validation AUROC by 0.0001 and scored 0.921 test AUROC, the finished trial
    beside it 0.966 (bench/RESULTS.md, 2026-12-06). Only for a score in [0, 1] where higher is better
    (AUROC, accuracy), the unit ``_STOP_DROP`` is in.
    """

    def done(row: Mapping[str, Any]) -> float:
        epochs, most = _float(row.get("epochs")), _float(row.get("max_epochs"))
        return min(1.0, epochs / most) if most > 0 and not math.isnan(epochs) else 0.0

    if mode != "max" or not ranked or math.isnan(ranked[0][1]) or not all(0.0 <= b <= 1.0 for _, b in ranked if not math.isnan(b)):
        return 0, ""
    if done(ranked[0][0]) >= 0.5:  # most of its schedule behind it (the deadline cut it a round or two early)
        return 0, ""
    top = ranked[0][1]
    near = [i for i, (_, b) in enumerate(ranked) if not math.isnan(b) and b >= top - _STOP_DROP]
    start = max(near, key=lambda i: (done(ranked[i][0]), ranked[i][1], -i))
    if done(ranked[start][0]) <= done(ranked[0][0]):
        return 0, ""
    row0, row = ranked[0][0], ranked[start][0]
    return start, (
        f"greedy selection starts from trial {row['trial_id']} (#{start + 1}, {row.get('epochs')}/{row.get('max_epochs')} "
        f"epochs, {ranked[start][1]:.4f}): #1 {row0['trial_id']} stopped at epoch {row0.get('epochs')}/{row0.get('max_epochs')} "
        f"and leads by {top - ranked[start][1]:.4f}, within the noise of the validation split ({_STOP_DROP:g})"
    )


def _forward_select(members: list[Member], y: np.ndarray, *, task: str, k: int, metric: str,
                    moved_start: bool = False) -> tuple[list[Member], str]:
    """Forward selection without replacement (Caruana et al. 2004) of at most ``k`` members.

    Starts from ``members[0]``: the best member by the sweep metric, or the one ``_greedy_start`` moved there
    (``moved_start``, which the note then says); each step adds the candidate whose
    addition gives the best ``metric`` of the averaged validation probabilities, log loss breaking ties
    (AUROC saturates on small validation splits). The selection ends at the first step that neither
    raises the primary metric by more than ``_STOP_DROP`` nor keeps it within ``_STOP_DROP`` while
    lowering the log loss: averaging in a weaker model is not free. The log loss is taken after a fitted
    temperature (``tempered_log_loss``), as the ensemble step calibrates the average: raw, it had kept
    out a member trained with label smoothing whose softer probabilities raised it although the pair
    ranked the validation images better (full BloodMNIST, bench/RESULTS.md).
    """
    from ._calibration import tempered_log_loss
    from ._metrics import LOWER_IS_BETTER, score

    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0

    def quality(total: np.ndarray, n: int) -> tuple[float, float]:
        probs = total / n
        primary = score(probs, y, task=task, metric=metric)
        loss = tempered_log_loss(probs, y, task)
        return (-math.inf if math.isnan(primary) else sign * primary, -loss if not math.isnan(loss) else -math.inf)

    picked = [0]
    total = members[0].val.astype(float).copy()
    current = quality(total, 1)
    while len(picked) < k:
        best_i, best_q = None, None
        for i, m in enumerate(members):
            if i in picked:
                continue
            q = quality(total + m.val, len(picked) + 1)
            if best_q is None or q > best_q:
                best_i, best_q = i, q
        if best_i is None:
            break
        # A member joins when it clearly raises the metric, or keeps it (within the noise of a small
        # validation split, where AUROC saturates) and lowers the log loss. A weak member that leaves a
        # saturated AUROC where it was but makes the average less sure of the right class stays out: on
        # held-out data such a member lowered the ensemble below its best member.
        gain = best_q[0] - current[0]
        if not (gain > _STOP_DROP or (gain >= -_STOP_DROP and best_q[1] > current[1])):
            break
        picked.append(best_i)
        total += members[best_i].val
        current = best_q
    chosen = [members[i] for i in picked]
    ranks = ", ".join(f"{members[i].trial_id} (#{i + 1})" for i in picked)
    note = (
        f"greedy selection over the {len(members)} best trials picked {len(chosen)}: {ranks} "
        f"(# = rank by the sweep metric{', the start first' if moved_start else ''})"
    )
    return chosen, note


# ---------------------------------------------------------------- helpers


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _plain(value: Any) -> Any:
    """A JSON-ready value from a parquet cell (numpy scalars and arrays to Python)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    return value


def _rebased(path: str | None, run_dir: Path) -> Path | None:
    """A leaderboard path as it is, or, when the run folder has moved, the same path under ``run_dir``."""
    if not isinstance(path, (str, Path)) or not str(path) or "://" in str(path):  # NaN: a trial with no result
        return None
    p = Path(path)
    if p.exists():
        return p
    parts = p.parts
    for i, part in enumerate(parts):
        if part.startswith("trial_"):
            return run_dir.joinpath(*parts[i:])
    return None


def _member_folder(row: Mapping[str, Any], run_dir: Path, *, files: tuple[str, ...] = MEMBER_FILES) -> Path | None:
    """The trial's best checkpoint when it holds every member file, else its trial folder, else None.

    Weights and predictions must come from one folder: a checkpoint's ``best.safetensors`` is the
    epoch whose predictions lie next to it.
    """
    for key in ("checkpoint", "path"):
        folder = _rebased(row.get(key), run_dir)
        if folder is not None and all((folder / name).is_file() for name in files):
            return folder
    return None


def _ids(frame: Any, tid: str, split: str) -> list[str]:
    if "sample_id" not in frame.columns:
        raise ConfigError(f"trial {tid}: predictions_{split}.parquet has no sample_id column; rerun the trial")
    ids = [str(v) for v in frame["sample_id"]]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"trial {tid}: predictions_{split}.parquet repeats sample ids; rerun the trial")
    return ids


def _labels(frame: Any, class_names: list[str], task: str, tid: str, split: str) -> np.ndarray:
    if task == "multi-label":
        cols = [f"label_{c}" for c in class_names]
        missing = [c for c in cols if c not in frame.columns]
        if missing:
            raise ConfigError(f"trial {tid}: predictions_{split}.parquet lacks {', '.join(missing)}; rerun the trial")
        return np.nan_to_num(frame[cols].to_numpy(dtype=float), nan=-1.0).round().astype(int)
    if "label" not in frame.columns:
        raise ConfigError(f"trial {tid}: predictions_{split}.parquet has no label column; rerun the trial")
    return frame["label"].to_numpy().astype(int)


def _aligned(frame: Any, ids: list[str], labels: np.ndarray, class_names: list[str], task: str, tid: str, ref: str, split: str) -> np.ndarray:
    """This member's (N, K) probabilities in the order of ``ids``; errors when its samples or labels differ."""
    cols = [f"prob_{c}" for c in class_names]
    missing = [c for c in cols if c not in frame.columns]
    if missing:
        raise ConfigError(f"trial {tid}: predictions_{split}.parquet lacks {', '.join(missing)}; rerun the trial")
    own = _ids(frame, tid, split)
    if set(own) != set(ids):
        only_here = len(set(own) - set(ids))
        only_ref = len(set(ids) - set(own))
        raise ConfigError(
            f"trial {tid}'s {split} predictions cover other samples than trial {ref}'s ({only_here} only in {tid}, "
            f"{only_ref} only in {ref}); members must be trained on one data split: ensemble one sweep's trials "
            "or lower top_k"
        )
    frame = frame.assign(sample_id=own).set_index("sample_id").loc[ids]
    if not np.array_equal(_labels(frame, class_names, task, tid, split), labels):
        raise ConfigError(f"trial {tid}'s {split} labels differ from trial {ref}'s for the same samples; members must share one data set")
    probs = frame[cols].to_numpy(dtype=np.float64)
    if not np.isfinite(probs).all():
        raise ConfigError(f"trial {tid}: predictions_{split}.parquet holds NaN probabilities; the trial diverged: lower top_k or rerun it")
    return probs
