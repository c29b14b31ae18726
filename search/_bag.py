"""Bagging after the search: the chosen configurations refitted on k folds of train+val, stacked out of fold.

A validation split of a few dozen images cannot tell a good member from a lucky one, nor fit a stacker
(bench/RESULTS.md: a member at 0.98 validation AUROC and 0.89 on test). So, as AutoGluon's bagging does,
the members the ensemble step would choose are each trained again ``bag_folds`` times, once per fold of
train+val (grouped by patient, stratified; the same folds for every configuration). Each fold model
predicts its held-out fold at its last epoch, so a bag has one out-of-fold prediction for every train+val
image, and the test split's prediction is the mean of its fold models' logits. The ensemble step then
chooses and stacks on all of train+val instead of the validation split alone.

The bags live in ``<run_dir>/bagging/``, laid out like a run folder (``leaderboard.parquet``,
``space.yaml``, one ``trial_<id>_bag`` folder per bag with the member files), so ``ensemble.build``
reads them as it reads a sweep; the fold trials are a Tune experiment in ``bagging/folds``.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from trainables import DEADLINE_KEY, TUNE_KEY, ConfigError

__all__ = ["BAG_DIR", "BAG_MAX_VAL", "BAG_SHARE", "BagPlan", "assemble_bags", "bagging_wanted", "plan_bags", "run_bags", "train_fold"]

BAG_DIR = "bagging"
# ``bagging: auto`` bags when the validation split has fewer images than this: below it the members'
# validation scores are too noisy to choose and stack on (67 and 143 images in the bench's small sets).
BAG_MAX_VAL = 400
# The share of the trials' time a sweep that will bag keeps back for the bags.
BAG_SHARE = 0.4
_MEMBER_KEY = "_bag_member"
# Fold trials run slower than their estimate (the last fold of a round waits for a slot, trials share a
# machine): the plan keeps this factor of headroom, so a bag's last fold does not hit the deadline.
_MARGIN = 1.25


@dataclass(frozen=True)
class BagPlan:
    """What the bagging step trains: per bag the original trial, its config and its epochs.

    Attributes:
        members: ``(trial_id, config, epochs)`` per bag, in the selection's order.
        folds: folds of each bag.
        seconds: the estimated wall time of all fold trials on the sweep's slots.
        note: why members were left out (time), or ``""``.
    """

    members: tuple[tuple[str, dict[str, Any], int], ...]
    folds: int
    seconds: float
    note: str = ""


def bagging_wanted(setting: str | bool, *, n_val: int | None) -> bool:
    """Whether a sweep bags: ``true``/``false`` as set; ``auto`` when the validation split is small."""
    if setting == "auto":
        return n_val is not None and 0 < n_val < BAG_MAX_VAL
    return bool(setting)


def full_trials_for_bagging(*, concurrency: int, n_train: int, n_val: int, folds: int) -> int:
    """How many full-length trials to size the search's share for, so that a bag of a full-length
    trial (at least ``min(folds, 4)`` folds, with a margin for slower trials than the probe's) fits
    the bags' share (``BAG_SHARE``) of the trials' time."""
    from ._budget import FULL_TRIALS

    slots = max(1, concurrency)
    k = min(folds, 4)
    bag_per_trial = _MARGIN * math.ceil(k / slots) * (k - 1) / k * (n_train + n_val) / max(1, n_train)
    return max(FULL_TRIALS, math.ceil(slots * bag_per_trial * (1 - BAG_SHARE) / BAG_SHARE))


def plan_bags(run_dir: str | Path, *, folds: int, seconds_left: float, concurrency: int, n_train: int, n_val: int) -> BagPlan | str:
    """The bags that fit ``seconds_left``: the ensemble step's members, in its order; or why there are none.

    A fold trial trains as many epochs as the member's own trial did, on ``(k-1)/k`` of train+val, at
    the seconds per epoch that trial measured. The folds of the first bag run side by side on the
    sweep's slots; when ``folds`` of them do not fit the time left, fewer do (down to 3; every bag has
    the same folds, so they are chosen once). Later bags join while their share of the slots fits.
    """
    import warnings

    from ensemble import select_members

    run_dir = Path(run_dir)
    try:
        with warnings.catch_warnings():  # the ensemble step says it once, for the bags
            warnings.simplefilter("ignore", UserWarning)
            selection = select_members(run_dir)
    except ConfigError as exc:
        return f"no members to bag ({exc.message})"
    slots = max(1, concurrency)
    candidates, left_out = [], []
    for m in selection.members:
        trial_dir = m.folder if (m.folder / "params.json").is_file() else m.folder.parent
        params_file = trial_dir / "params.json"
        ran, per_epoch = _trial_epochs(trial_dir)
        if not params_file.is_file() or per_epoch is None:
            left_out.append(f"{m.trial_id} (no params.json or epoch times)")
            continue
        config = json.loads(params_file.read_text())
        # As long as the trial itself trained (to the end, or to where ASHA stopped it): its best epoch
        # alone is often a noisy early peak on a small validation split.
        epochs = max(1, ran or int(config.get("epochs") or 1))
        candidates.append((m.trial_id, config, epochs, epochs * per_epoch))
    if not candidates:
        return "bagging skipped: " + ("; ".join(left_out) or "no members")

    def fold_seconds(k: int, epoch_cost: float) -> float:
        return epoch_cost * (k - 1) / k * (n_train + n_val) / max(1, n_train)

    seconds_left = seconds_left / _MARGIN
    first = candidates[0]
    k = next((k for k in range(folds, min(folds, 3) - 1, -1) if math.ceil(k / slots) * fold_seconds(k, first[3]) <= seconds_left), None)
    if k is None:
        need = math.ceil(folds / slots) * fold_seconds(folds, first[3])
        return f"bagging skipped: one bag of {folds} folds takes ~{need:.0f}s, {seconds_left:.0f}s are left"
    chosen = [first[:3]]
    total = math.ceil(k / slots) * fold_seconds(k, first[3])
    for tid, config, epochs, cost in candidates[1:]:
        more = k * fold_seconds(k, cost) / slots
        if total + more > seconds_left:
            left_out.append(f"{tid} (~{more:.0f}s more than the {seconds_left - total:.0f}s left)")
            continue
        chosen.append((tid, config, epochs))
        total += more
    notes = [f"{k} folds, not {folds}, fit the time left"] if k < folds else []
    if left_out:
        notes.append(f"left out {', '.join(left_out)}")
    return BagPlan(members=tuple(chosen), folds=k, seconds=total, note="; ".join(notes))


def _trial_epochs(trial_dir: Path) -> tuple[int, float | None]:
    """The epochs a trial ran and their median seconds, from Tune's ``result.json``."""
    path = trial_dir / "result.json"
    if not path.is_file():
        return 0, None
    seconds, last = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        value = row.get("epoch_seconds")
        if isinstance(value, (int, float)) and value > 0:
            seconds.append(float(value))
        if isinstance(row.get("epoch"), int):
            last = max(last, int(row["epoch"]))
    return last, (float(np.median(seconds)) if seconds else None)


def train_fold(config: Mapping[str, Any]) -> None:
    """The fold trial's trainable: ``trainables.train`` on the grid point's config, less the bag's own key."""
    from trainables import train

    train({k: v for k, v in config["_fold"].items() if k != _MEMBER_KEY})


def run_bags(
    plan: BagPlan,
    *,
    run_dir: str | Path,
    resources: Mapping[str, float],
    time_budget_s: float | None,
    deadline_file: Path | None,
    verbose: bool = False,
) -> Any:
    """Train every fold of every bag in ``plan`` as one Tune experiment (``<run_dir>/bagging/folds``).

    Returns Tune's ``ResultGrid``. An interrupted bagging step is continued where it stopped.
    """
    from ray import tune

    bag_dir = Path(run_dir) / BAG_DIR
    bag_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    for trial_id, config, epochs in plan.members:
        for fold in range(plan.folds):
            c = {k: v for k, v in config.items() if k not in ("_resume", "_out_dir")}
            c.update({"epochs": epochs, "cv_folds": plan.folds, "cv_fold": fold, TUNE_KEY: True, _MEMBER_KEY: trial_id})
            if deadline_file is not None:
                c[DEADLINE_KEY] = str(deadline_file)
            else:
                c.pop(DEADLINE_KEY, None)
            configs.append(c)
    trainable = tune.with_resources(train_fold, dict(resources))
    path = bag_dir / "folds"
    if tune.Tuner.can_restore(str(path)):
        tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            param_space={"_fold": tune.grid_search(configs)},
            tune_config=tune.TuneConfig(time_budget_s=time_budget_s, reuse_actors=True, trial_dirname_creator=_fold_dirname),
            run_config=tune.RunConfig(
                name="folds",
                storage_path=str(bag_dir),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                verbose=1 if verbose else 0,
            ),
        )
    return tuner.fit()


def _fold_dirname(trial: Any) -> str:
    c = trial.config.get("_fold") or {}
    return f"trial_{c.get(_MEMBER_KEY, 'bag')}_fold{c.get('cv_fold', 0)}_{trial.trial_id}"


def assemble_bags(results: Any, plan: BagPlan, *, run_dir: str | Path, sweep_board: Any, metric: str) -> tuple[Path | None, list[str]]:
    """The finished bags as a run folder for ``ensemble.build``: ``(bagging folder, notes)``, or ``(None, notes)``.

    A bag whose folds did not all finish (the budget ended them) is left out: its out-of-fold
    predictions would not cover train+val.
    """
    import pandas as pd
    from safetensors.torch import load_file, save_file

    from trainables import compute_metrics, drop_resume_state
    from trainables.artifacts import (
        BEST_WEIGHTS,
        SPACE_FILE,
        predictions_file,
        read_model_json,
        read_predictions,
        write_model_json,
        write_predictions,
    )

    from ._leaderboard import write_leaderboard

    run_dir = Path(run_dir)
    bag_dir = run_dir / BAG_DIR
    done: dict[str, dict[int, Path]] = {}
    for result in results:
        c = (result.config or {}).get("_fold") or {}
        tid, fold, epochs = c.get(_MEMBER_KEY), c.get("cv_fold"), c.get("epochs")
        ckpt = Path(result.checkpoint.path) if result.checkpoint is not None else None
        if result.error is not None or ckpt is None or (result.metrics or {}).get("epoch") != epochs:
            continue
        if all((ckpt / name).is_file() for name in (BEST_WEIGHTS, "model.json", predictions_file("val"), predictions_file("test"))):
            done.setdefault(str(tid), {})[int(fold)] = ckpt
    rows, notes = [], []
    board = sweep_board.set_index("trial_id", drop=False) if "trial_id" in sweep_board else None
    for tid, _config, epochs in plan.members:
        folds = done.get(tid, {})
        if len(folds) < plan.folds:
            notes.append(f"bag of {tid}: {len(folds)} of {plan.folds} folds finished in time; left out")
            continue
        out = bag_dir / f"trial_{tid}_bag"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        models = [read_model_json(folds[i]) for i in range(plan.folds)]
        vals = [read_predictions(folds[i], "val") for i in range(plan.folds)]
        tests = [read_predictions(folds[i], "test") for i in range(plan.folds)]
        class_names = list(models[0]["class_names"])
        task = str(models[0]["task"])
        prob_cols = [f"prob_{c}" for c in class_names]
        oof = pd.concat(vals, ignore_index=True).sort_values("sample_id", kind="stable").reset_index(drop=True)
        test = tests[0].copy()
        for t in tests[1:]:
            if list(t["sample_id"]) != list(test["sample_id"]):
                raise ConfigError(f"bag of {tid}: its fold models predicted different test samples; rerun the sweep", origin=str(out))
        test[prob_cols] = _mean_in_logit_space([t[prob_cols].to_numpy(np.float64) for t in tests], multilabel=task == "multi-label")
        write_predictions(oof, out, "val")
        write_predictions(test, out, "test")
        state = {}
        for i in range(plan.folds):
            state.update({f"folds.{i}.{k}": v for k, v in load_file(folds[i] / BEST_WEIGHTS).items()})
        save_file(state, out / BEST_WEIGHTS)
        biases = [m.get("logit_bias") for m in models]
        info = {
            **models[0],
            "folds": plan.folds,
            "best_epoch": epochs,
            # Each fold model's offset is added to its own logits; the bag averages logits, so it adds the mean.
            "logit_bias": None if any(b is None for b in biases) else [float(v) for v in np.mean(np.asarray(biases, float), axis=0)],
            # Their predictions and model.json (the weights are in this folder's file).
            "bag": {"trial_id": tid, "folds": plan.folds, "fold_checkpoints": [str(folds[i]) for i in range(plan.folds)]},
        }
        write_model_json(out, info)
        # The bag's file holds the fold models' weights now; their checkpoints keep model.json and predictions.
        for i in range(plan.folds):
            drop_resume_state(folds[i])
            (folds[i] / BEST_WEIGHTS).unlink(missing_ok=True)
        labels = oof["label"].to_numpy() if task != "multi-label" else oof[[f"label_{c}" for c in class_names]].to_numpy()
        score = compute_metrics(oof[prob_cols].to_numpy(np.float64), labels, task=task, class_names=class_names).get(metric, math.nan)
        row: dict[str, Any] = {
            "trial_id": f"{tid}_bag", "status": "finished", "epochs": epochs, "max_epochs": epochs, "metric": metric,
            "best": float(score), "last": float(score), "best_epoch": epochs, "path": str(out), "checkpoint": str(out),
            "predictions_val": str(out / predictions_file("val")), "predictions_test": str(out / predictions_file("test")),
        }
        if board is not None and tid in board.index:
            row.update({k: v for k, v in board.loc[tid].items() if str(k).startswith("config/")})
        row["config/cv_folds"] = plan.folds
        rows.append(row)
    if not rows:
        return None, notes
    write_leaderboard(pd.DataFrame(rows), str(bag_dir))
    shutil.copyfile(run_dir / SPACE_FILE, bag_dir / SPACE_FILE)
    return bag_dir, notes


def _mean_in_logit_space(probs: Sequence[np.ndarray], *, multilabel: bool) -> np.ndarray:
    """The fold models' probabilities averaged as their logits are: softmax of mean log-probabilities
    (the shared log-sum-exp cancels), or sigmoid of mean logits per label."""
    eps = 1e-7
    stack = np.clip(np.stack(probs), eps, 1 - eps if multilabel else 1.0)
    if multilabel:
        z = np.mean(np.log(stack) - np.log1p(-stack), axis=0)
        return 1.0 / (1.0 + np.exp(-z))
    z = np.mean(np.log(stack), axis=0)
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)
