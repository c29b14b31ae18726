"""What a built ensemble is worth: the metrics (flat ``test.ensemble.auroc`` keys), the tables people read,
and the report's figures (ROC, confusion matrix, calibration) and texts.

The test split only reports: the members are chosen on validation, the combiner by CV on validation.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._metrics import bootstrap_ci, evaluate
from ._select import Selection

if TYPE_CHECKING:  # read back from a folder; _built imports the bundle, which imports this module
    from ._built import BuiltEnsemble

__all__ = ["Summary", "format_comparison", "summarise", "write_report"]


@dataclass
class Summary:
    """The numbers of one build: test probabilities, the flat metrics, the best single member, the tables."""

    test_probs: np.ndarray  # (N_test, K) ensemble probabilities on the test split
    metrics: dict[str, Any]  # flat, dotted keys; floats, None for undefined, [lo, hi] for intervals
    best_single: str  # trial id of the member with the best validation metric
    members: list[dict[str, Any]]  # the ensemble, then one row per member (leaderboard.csv)
    combiners: list[dict[str, Any]]  # one row per combiner setting (cv_table_)


def _flat(prefix: str, values: dict[str, float]) -> dict[str, Any]:
    # ``sensitivity/pneumonia`` -> ``<prefix>.sensitivity.pneumonia``: every level of the key is a dot.
    return {f"{prefix}.{k.replace('/', '.')}": _num(v) for k, v in values.items()}


def _num(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    return v


def _best_single(selection: Selection) -> int:
    """Index of the member with the best validation metric (the selection is sorted that way already)."""
    sign = 1.0 if selection.mode == "max" else -1.0
    scores = [sign * m.val_score if not math.isnan(m.val_score) else -math.inf for m in selection.members]
    return int(np.argmax(scores))


def summarise(selection: Selection, ensemble: Any, *, n_boot: int = 1000, seed: int = 0) -> Summary:
    """Metrics of the fitted ``ensemble`` and of every member on the test split, plus the validation CV scores.

    Keys: ``test.ensemble.<m>``, ``test.best_single.<m>``, ``test.members.<trial_id>.<m>`` for every
    metric of :func:`evaluate` (``auroc``, ``accuracy``, ``auprc``, ``ece``, ``sensitivity.<class>``, ...);
    ``test.ensemble.auroc_ci95`` and ``test.best_single.auroc_ci95`` (bootstrap, ``[lo, hi]``);
    ``val_cv.ensemble.<cv metric>`` (the chosen combiner's CV score), ``val_cv.combiners.<name>``,
    ``val_cv.best_single.<cv metric>`` and ``val_cv.members.<trial_id>.<cv metric>`` (each member's mean
    over the same folds, so the numbers compare).
    """
    from ._metrics import score
    from ._stacking import _splits, youden_threshold

    task, names = selection.task, selection.class_names
    y_test, y_val = selection.y_test, selection.y_val
    test_probs = ensemble.predict_proba(selection.P_test)
    best = _best_single(selection)
    best_member = selection.members[best]
    metrics: dict[str, Any] = {}

    metrics.update(_flat("test.ensemble", evaluate(test_probs, y_test, task=task, class_names=names)))
    metrics["test.ensemble.auroc_ci95"] = [_num(v) for v in bootstrap_ci(test_probs, y_test, task=task, n_boot=n_boot, seed=seed)]
    if task != "multi-label":  # argmax accuracy, as the medmnist Evaluator scores it, with its interval too
        metrics["test.ensemble.accuracy_ci95"] = [
            _num(v) for v in bootstrap_ci(test_probs, y_test, task=task, metric="accuracy", n_boot=n_boot, seed=seed)
        ]
    member_test = {m.trial_id: evaluate(m.test, y_test, task=task, class_names=names) for m in selection.members}
    metrics.update(_flat("test.best_single", member_test[best_member.trial_id]))
    if task == "binary":
        # The operating point people deploy, chosen on validation only: the ensemble's from its out-of-fold
        # predictions, the best single trial's from its own validation predictions (the same rule).
        single_thr = youden_threshold(best_member.val[:, 1], y_val) if ensemble.threshold == "youden" else 0.5
        for who, probs, thr in (("ensemble", test_probs, ensemble.threshold_), ("best_single", best_member.test, single_thr)):
            metrics[f"test.{who}.threshold"] = _num(thr)
            metrics.update(_flat(f"test.{who}.at_threshold", decision_metrics(probs, y_test, thr)))
    metrics["test.best_single.auroc_ci95"] = [
        _num(v) for v in bootstrap_ci(best_member.test, y_test, task=task, n_boot=n_boot, seed=seed)
    ]
    for tid, values in member_test.items():
        metrics.update(_flat(f"test.members.{tid}", values))

    cv_metric = ensemble.metric
    metrics[f"val_cv.ensemble.{cv_metric}"] = _num(ensemble.cv_scores_.get(ensemble.combiner_, math.nan))
    for name, value in ensemble.cv_scores_.items():
        metrics[f"val_cv.combiners.{name}"] = _num(value)
    # The members on the stacking's own folds: the honest single-model number next to the ensemble's CV score.
    splits, _ = _splits(y_val, task == "multi-label", int(ensemble.n_folds_), int(ensemble.seed))
    member_cv = {}
    for m in selection.members:
        folds = [score(m.val[test], y_val[test], task=task, metric=cv_metric) for _, test in splits]
        valid = [f for f in folds if not math.isnan(f)]
        member_cv[m.trial_id] = float(np.mean(valid)) if valid else math.nan
    metrics[f"val_cv.best_single.{cv_metric}"] = _num(member_cv[best_member.trial_id])
    for tid, value in member_cv.items():
        metrics[f"val_cv.members.{tid}.{cv_metric}"] = _num(value)

    weights = member_weights(ensemble.combiner_, ensemble.params_, len(selection.members))
    members = []
    for i, m in enumerate(selection.members):
        t = member_test[m.trial_id]
        members.append(
            {
                "kind": "member",
                "name": m.trial_id,
                "backbone": m.backbone,
                "head": m.head,
                f"val {selection.metric}": _num(m.val_score),
                f"val_cv {cv_metric}": _num(member_cv[m.trial_id]),
                "test auroc": _num(t.get("auroc")),
                "test accuracy": _num(t.get("accuracy")),
                "test auprc": _num(t.get("auprc")),
                "test ece": _num(t.get("ece")),
                "weight": _num(weights[i]) if weights is not None else None,
                "best_single": i == best,
            }
        )
    ens_row = {
        "kind": "ensemble",
        "name": ensemble.combiner_,
        f"val_cv {cv_metric}": metrics[f"val_cv.ensemble.{cv_metric}"],
        **{f"test {k}": metrics.get(f"test.ensemble.{k}") for k in ("auroc", "accuracy", "auprc", "ece")},
        "params": json.dumps(ensemble.settings_, sort_keys=True),
    }
    members.insert(0, ens_row)
    combiners = []
    for row in ensemble.cv_table_:
        combiners.append(
            {
                "kind": "combiner",
                "name": row["combiner"],
                "params": json.dumps(row.get("params") or {}, sort_keys=True),
                f"val_cv {cv_metric}": _num(row.get("mean")),
                "std": _num(row.get("std")),
                "chosen": row["combiner"] == ensemble.combiner_ and dict(row.get("params") or {}) == dict(ensemble.settings_),
            }
        )
    return Summary(test_probs=test_probs, metrics=metrics, best_single=best_member.trial_id, members=members, combiners=combiners)


def decision_metrics(probs: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    """Binary accuracy, balanced accuracy, sensitivity and specificity when deciding at ``threshold``."""
    from ._stacking import decide

    pred, y = decide(probs, "binary", threshold), np.asarray(y).ravel()
    pos, neg = y == 1, y == 0
    sens = float((pred[pos] == 1).mean()) if pos.any() else math.nan
    spec = float((pred[neg] == 0).mean()) if neg.any() else math.nan
    return {"accuracy": float((pred == y).mean()), "balanced_accuracy": (sens + spec) / 2, "sensitivity": sens, "specificity": spec}


def member_weights(combiner: str, params: dict[str, Any], n_members: int) -> list[float] | None:
    """Per-member weights when the combiner has them (greedy selection), else None."""
    if combiner in ("greedy", "best") and isinstance(params, dict) and len(params.get("weights") or []) == n_members:
        return [float(w) for w in params["weights"]]
    return None


# ---------------------------------------------------------------- text for people


def format_combiners(summary: Summary) -> str:
    """The CV table of combiners, the chosen one marked."""
    import pandas as pd

    frame = pd.DataFrame(summary.combiners).drop(columns=["kind"])
    frame["chosen"] = frame["chosen"].map({True: "*", False: ""})
    with pd.option_context("display.width", 200, "display.max_colwidth", 40):
        return frame.to_string(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-")


def format_comparison(summary: Summary | BuiltEnsemble, *, task: str) -> str:
    """Test metrics of the ensemble next to the best single member, with the bootstrap intervals.

    ``summary``: a build's ``Summary``, or a ``BuiltEnsemble`` read back from its folder (``read_ensemble``).
    """
    m = summary.metrics
    keys = ["auroc", "accuracy" if task != "multi-label" else "auprc", "ece"]
    lines = [f"{'':<26}" + "".join(f"{k:>10}" for k in keys) + "   auroc 95% CI"]
    for label, prefix in (("ensemble", "test.ensemble"), (f"best single ({summary.best_single})", "test.best_single")):
        ci = m.get(f"{prefix}.auroc_ci95") or [None, None]
        cells = "".join(f"{_fmt(m.get(f'{prefix}.{k}')):>10}" for k in keys)
        lines.append(f"{label:<26}{cells}   [{_fmt(ci[0])}, {_fmt(ci[1])}]")
    if task == "binary":
        lines.append("at the threshold chosen on validation (Youden's J): accuracy / balanced accuracy")
        for label, prefix in (("ensemble", "test.ensemble"), (f"best single ({summary.best_single})", "test.best_single")):
            lines.append(f"{label:<26}threshold {_fmt(m.get(f'{prefix}.threshold'))}: "
                         f"{_fmt(m.get(f'{prefix}.at_threshold.accuracy'))} / {_fmt(m.get(f'{prefix}.at_threshold.balanced_accuracy'))}")
    return "\n".join(lines)


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


# ---------------------------------------------------------------- the report folder


def write_report(folder: Path, selection: Selection, summary: Summary) -> list[Path]:
    """``roc.png``, ``confusion_matrix.png``, ``calibration.png``, ``classification_report.txt``,
    ``leaderboard.csv`` (members and combiners) and ``predictions_test.csv`` (the ensemble's test
    probabilities) in ``folder``."""
    try:
        import matplotlib
    except ImportError:
        from trainables import ConfigError

        raise ConfigError("the ensemble report draws its figures with matplotlib, which is not installed: pip install matplotlib") from None

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import pandas as pd

    folder.mkdir(parents=True, exist_ok=True)
    best = next(m for m in selection.members if m.trial_id == summary.best_single)
    written = []
    with plt.rc_context({"figure.dpi": 100, "font.size": 9}):
        for name, fn in (("roc.png", _plot_roc), ("confusion_matrix.png", _plot_confusion), ("calibration.png", _plot_calibration)):
            fig = fn(selection, summary, best)
            fig.savefig(folder / name)
            plt.close(fig)
            written.append(folder / name)
    (folder / "classification_report.txt").write_text(_classification_report(selection, summary, best))
    written.append(folder / "classification_report.txt")
    board = pd.DataFrame(summary.members + summary.combiners)
    first = ["kind", "name", "backbone", "head", f"val {selection.metric}"]
    board = board[[c for c in first if c in board] + [c for c in board if c not in first]]
    board.to_csv(folder / "leaderboard.csv", index=False)
    written.append(folder / "leaderboard.csv")
    cols: dict[str, Any] = {"sample_id": selection.test_ids}
    if selection.multilabel:
        for j, c in enumerate(selection.class_names):
            cols[f"label_{c}"] = selection.y_test[:, j]
    else:
        cols["label"] = selection.y_test
    for j, c in enumerate(selection.class_names):
        cols[f"prob_{c}"] = summary.test_probs[:, j]
    # 17 significant digits: the float64 values exactly, so a reload compares bit for bit.
    pd.DataFrame(cols).to_csv(folder / "predictions_test.csv", index=False, float_format="%.17g")
    written.append(folder / "predictions_test.csv")
    return written


def _curves(selection: Selection) -> list[tuple[str, int]]:
    """(label, column) pairs a ROC or calibration plot shows: the positive class for binary, else every class."""
    names = selection.class_names
    if selection.task == "binary":
        return [(names[1], 1)]
    return [(c, j) for j, c in enumerate(names)]


def _truth(selection: Selection, j: int) -> tuple[np.ndarray, np.ndarray]:
    """(mask of known rows, 0/1 truth) of column ``j`` on the test split."""
    y = selection.y_test
    if selection.multilabel:
        known = y[:, j] >= 0
        return known, (y[:, j] == 1).astype(int)
    return np.ones(len(y), bool), (y == j).astype(int)


def _plot_roc(selection: Selection, summary: Summary, best: Any):
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    curves = _curves(selection)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for label, j in curves:
        known, truth = _truth(selection, j)
        if truth[known].min(initial=1) == truth[known].max(initial=0):
            continue  # one outcome only: no curve
        fpr, tpr, _ = roc_curve(truth[known], summary.test_probs[known, j])
        line = ax.plot(fpr, tpr, lw=2, label=f"ensemble {label}" if len(curves) > 1 else "ensemble")[0]
        fpr, tpr, _ = roc_curve(truth[known], best.test[known, j])
        ax.plot(fpr, tpr, lw=1.2, ls="--", color=line.get_color(), label=f"best single {label}" if len(curves) > 1 else f"best single ({best.trial_id})")
        if len(curves) == 1:
            for m in selection.members:
                if m is not best:
                    fpr, tpr, _ = roc_curve(truth[known], m.test[known, j])
                    ax.plot(fpr, tpr, lw=0.8, alpha=0.4, color="grey")
    ax.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8)
    auc = summary.metrics.get("test.ensemble.auroc")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", xlim=(0, 1), ylim=(0, 1.01),
           title=f"ROC, test split (ensemble AUROC {_fmt(auc)})")
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    return fig


def _plot_confusion(selection: Selection, summary: Summary, best: Any):
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

    names = selection.class_names
    if selection.multilabel:
        fig, axes = plt.subplots(1, len(names), figsize=(2.6 * len(names) + 0.4, 3), squeeze=False)
        for j, c in enumerate(names):
            known, truth = _truth(selection, j)
            cm = confusion_matrix(truth[known], (summary.test_probs[known, j] >= 0.5).astype(int), labels=[0, 1])
            _matrix(axes[0, j], cm, ["neg", "pos"], title=c)
        fig.suptitle("ensemble on the test split (threshold 0.5)")
    else:
        size = max(4.0, 0.6 * len(names) + 2.5)
        fig, ax = plt.subplots(figsize=(size, size))
        thr = summary.metrics.get("test.ensemble.threshold")
        cm = confusion_matrix(selection.y_test, _decisions(summary.test_probs, selection.task, thr), labels=list(range(len(names))))
        _matrix(ax, cm, names, title="ensemble on the test split" + (f" (threshold {thr:.3g})" if thr is not None else ""))
    fig.tight_layout()
    return fig


def _decisions(probs: np.ndarray, task: str, threshold: float | None) -> np.ndarray:
    from ._stacking import decide

    return decide(probs, task, threshold)


def _matrix(ax: Any, cm: np.ndarray, labels: list[str], *, title: str) -> None:
    ax.imshow(cm, cmap="Blues", vmin=0, vmax=max(int(cm.max()), 1) if cm.size else 1)
    ax.set_xticks(range(len(labels)), labels, rotation=45 if len(labels) > 3 else 0, ha="right" if len(labels) > 3 else "center")
    ax.set_yticks(range(len(labels)), labels)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    top = cm.max() if cm.size else 0
    for (i, j), v in np.ndenumerate(cm):
        ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")


def _reliability(conf: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    edges = np.linspace(0, 1, n_bins + 1)
    idx = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    xs, ys = [], []
    for b in range(n_bins):
        sel = idx == b
        if sel.any():
            xs.append(conf[sel].mean())
            ys.append(outcome[sel].mean())
    return np.asarray(xs), np.asarray(ys)


def _calibration_points(selection: Selection, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confidence and outcome pairs: the top class against being right (single-label), every known label entry (multi-label)."""
    y = selection.y_test
    if selection.multilabel:
        known = y >= 0
        return probs[known], (y[known] == 1).astype(float)
    return probs.max(1), (probs.argmax(1) == y).astype(float)


def _plot_calibration(selection: Selection, summary: Summary, best: Any):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], ls=":", color="black", lw=0.8, label="perfect")
    for label, probs, key in (
        ("ensemble", summary.test_probs, "test.ensemble.ece"),
        (f"best single ({best.trial_id})", best.test, "test.best_single.ece"),
    ):
        conf, outcome = _calibration_points(selection, probs)
        xs, ys = _reliability(conf, outcome)
        ax.plot(xs, ys, marker="o", label=f"{label}, ECE {_fmt(summary.metrics.get(key))}")
    what = "predicted probability" if selection.multilabel else "confidence (top class)"
    ax.set(xlabel=what, ylabel="observed frequency" if selection.multilabel else "accuracy", xlim=(0, 1), ylim=(0, 1),
           title="calibration, test split")
    ax.legend(loc="upper left", fontsize=7)
    fig.tight_layout()
    return fig


def _classification_report(selection: Selection, summary: Summary, best: Any) -> str:
    from sklearn.metrics import classification_report

    names = selection.class_names
    parts = []
    m = summary.metrics
    for label, probs, thr in (("ensemble", summary.test_probs, m.get("test.ensemble.threshold")),
                              (f"best single member ({best.trial_id})", best.test, m.get("test.best_single.threshold"))):
        at = f", deciding at the validation-chosen threshold {thr:.4g}" if thr is not None else ""
        parts.append(f"{label}, test split ({len(selection.test_ids)} samples){at}")
        if selection.multilabel:
            for j, c in enumerate(names):
                known, truth = _truth(selection, j)
                pred = (probs[known, j] >= 0.5).astype(int)
                parts.append(f"label {c} (threshold 0.5, {int((~known).sum())} masked)")
                parts.append(classification_report(truth[known], pred, labels=[0, 1], target_names=["negative", "positive"], digits=4, zero_division=0))
        else:
            parts.append(classification_report(selection.y_test, _decisions(probs, selection.task, thr), labels=list(range(len(names))), target_names=names, digits=4, zero_division=0))
    return "\n".join(parts)
