"""``runs/<name>/report.html``: one self-contained page for people, every figure embedded as a data URI.

The page holds the leaderboard, the search's progress (best metric against trial-epochs), the
parameter importances (Optuna's evaluators on the sweep's history), ASHA's rungs (which trials
stopped where), the ensemble's test metrics, ROC, confusion matrix and calibration figures, and
Grad-CAM overlays for a few test images per class. It reads only what the run folder holds, so it
can be written again at any time (``python -m search.show RUN_DIR --html``); a section whose inputs
are missing (no ensemble yet, a sweep still running) says so instead of failing the page.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import html
import io
import json
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

__all__ = ["asha_rungs", "param_importances", "search_history", "write_html_report"]

# Leaderboard statuses to colours, in every figure of the page.
STATUS_COLORS = {"finished": "#2e7d32", "pruned": "#ef6c00", "errored": "#c62828", "running": "#1565c0", "pending": "#9e9e9e"}
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1150px;color:#222;padding:0 1em}
h1{margin-bottom:.2em} h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:13px;margin:.5em 0} th,td{border:1px solid #ddd;padding:3px 7px;text-align:right}
th{background:#f4f4f4} td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px} .missing{color:#8a6d3b;background:#fcf8e3;padding:.5em;border-radius:4px}
figure{display:inline-block;margin:.5em 1em .5em 0;vertical-align:top} figcaption{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #eee} pre{background:#f7f7f7;padding:.7em;font-size:12px;overflow-x:auto}
.scroll{overflow-x:auto} .finished{color:#2e7d32} .pruned{color:#ef6c00} .errored{color:#c62828} .running{color:#1565c0}
"""


def write_html_report(run_dir: str | Path, *, out: str | Path | None = None, n_cam_per_class: int = 2) -> Path:
    """Write ``report.html`` for the sweep in ``run_dir`` (default ``run_dir/report.html``); returns its path.

    Args:
        run_dir: a sweep's folder (finished or running): ``leaderboard.parquet``, ``space.yaml``, the trials,
            ``ensemble/`` when built.
        out: where to write the page.
        n_cam_per_class: test images per class shown with their Grad-CAM overlays.

    Example:
        >>> write_html_report("runs/cxr")
        PosixPath('runs/cxr/report.html')
    """
    root = Path(run_dir)
    page = build_html(root, n_cam_per_class=n_cam_per_class)
    path = Path(out) if out is not None else root / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


def build_html(root: Path, *, n_cam_per_class: int = 2) -> str:
    """The page as a string."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    space = _read_space(root)
    board = _read_board(root)
    search = space.get("search") or {}
    metric, mode = str(search.get("metric", "val_auroc")), str(search.get("mode", "max"))
    name = str(space.get("name") or root.name)
    counts = board["status"].value_counts().to_dict() if board is not None and not board.empty else {}
    summary = ", ".join(f'<span class="{html.escape(s)}">{n} {html.escape(s)}</span>' for s, n in sorted(counts.items()))
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!DOCTYPE html>",
        f'<html lang="en"><head><meta charset="utf-8"><title>medsweep report: {html.escape(name)}</title>',
        f"<style>{CSS}</style></head><body>",
        f"<h1>Sweep <code>{html.escape(name)}</code></h1>",
        f'<p class="note">{html.escape(str(root.resolve()))} &middot; written {stamp} &middot; objective {html.escape(metric)} ({html.escape(mode)})'
        f" &middot; trials: {summary or 'none yet'}</p>",
    ]
    sections: list[tuple[str, Callable[[], str]]] = [
        ("Ensemble on the test split", lambda: _ensemble_metrics(root)),
        ("Leaderboard", lambda: _leaderboard(board, space)),
        ("Data splits", lambda: _data_splits(root)),
        ("Search progress", lambda: _progress(board, metric, mode)),
        ("Parameter importances", lambda: _importances(board, space, mode)),
        ("ASHA rungs: which trials stopped where", lambda: _rungs(board, space, metric)),
        ("Ensemble figures", lambda: _ensemble_figures(root)),
        ("Model card", lambda: _model_card(root)),
        ("Grad-CAM", lambda: _gradcam(root, space, n_cam_per_class)),
        ("The space", lambda: _space_text(root)),
    ]
    for title, make in sections:
        parts.append(f"<section><h2>{html.escape(title)}</h2>")
        try:
            parts.append(make())
        except Exception as exc:  # noqa: BLE001 - one section's missing input must not cost the page
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            parts.append(_missing(f"not available: {reason}"))
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


# ---------------------------------------------------------------- inputs


def _read_space(root: Path) -> dict[str, Any]:
    import yaml

    path = root / "space.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    return data if isinstance(data, dict) else {}


def _read_board(root: Path) -> Any:
    import pandas as pd

    path = root / "leaderboard.parquet"
    if path.is_file():
        return pd.read_parquet(path)
    from ._show import live_leaderboard

    return live_leaderboard(root)


def search_history(board: Any, metric: str) -> Any:
    """Every epoch of every trial in the order they were reported: ``trial_id``, ``epoch``, ``value``, ``timestamp``."""
    import pandas as pd

    frames = []
    for _, row in board.iterrows():
        path = Path(str(row.get("path") or "")) / "progress.csv"
        if not path.is_file():
            continue
        try:
            hist = pd.read_csv(path)
        except (pd.errors.EmptyDataError, OSError):
            continue
        if metric not in hist or "training_iteration" not in hist:
            continue
        frames.append(
            pd.DataFrame(
                {
                    "trial_id": str(row["trial_id"]),
                    "epoch": hist["training_iteration"].astype(int),
                    "value": pd.to_numeric(hist[metric], errors="coerce"),
                    "timestamp": pd.to_numeric(hist.get("timestamp", pd.Series(range(len(hist)))), errors="coerce"),
                }
            )
        )
    if not frames:
        return pd.DataFrame(columns=["trial_id", "epoch", "value", "timestamp"])
    out = pd.concat(frames, ignore_index=True)
    return out.sort_values(["timestamp", "trial_id", "epoch"], kind="stable").reset_index(drop=True)


def param_importances(board: Any, space: Mapping[str, Any], *, mode: str = "max", seed: int = 0) -> dict[str, float]:
    """Optuna's fANOVA importances of the searched parameters for the trials' best values.

    Builds an in-memory Optuna study from the leaderboard: every finished or pruned trial becomes a
    complete trial with its searched values (distributions from ``space.yaml``) and its best value,
    as the searcher saw it. Parameters that exist only under a ``when`` condition are left out by
    Optuna (it assesses the parameters every trial has), as are those that never varied.

    Raises:
        ValueError: fewer than two usable trials, or no parameter that varied.
    """
    import optuna

    from ._params import space_params

    # The same Param objects (Optuna distributions) the sweep's sampler drew from.
    dists = {name: p.distribution for name, p in space_params(space).items()}
    usable = board[board["status"].isin(["finished", "pruned"]) & board["best"].notna()]
    trials = []
    for _, row in usable.iterrows():
        params, used = {}, {}
        for name, dist in dists.items():
            value = _param_value(row.get(f"config/{name}"), dist)
            if value is not _ABSENT:
                params[name], used[name] = value, dist
        trials.append(optuna.trial.create_trial(params=params, distributions=used, value=float(row["best"])))
    if len(trials) < 2:
        raise ValueError(f"{len(trials)} finished or pruned trial(s); importances need at least 2")
    if len({t.value for t in trials}) < 2:
        raise ValueError(f"all {len(trials)} trials scored the same, so no parameter explains a difference")
    varied = [n for n in dists if len({repr(t.params.get(n, _ABSENT)) for t in trials}) > 1 and all(n in t.params for t in trials)]
    if not varied:
        raise ValueError("no searched parameter that every trial has took more than one value")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize" if mode == "max" else "minimize")
    study.add_trials(trials)
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    return dict(optuna.importance.get_param_importances(study, evaluator=evaluator, params=varied))


_ABSENT = object()


def _param_value(value: Any, dist: Any) -> Any:
    """A leaderboard cell as the distribution's value (parquet may hold ints as floats, mixed choices as text)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    if value is None or (isinstance(value, float) and math.isnan(value)):
        return _ABSENT
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:
            if choice == value or str(choice) == str(value):
                return choice
        return _ABSENT
    if isinstance(value, np.generic):
        value = value.item()
    value = int(value) if isinstance(dist, IntDistribution) else float(value)
    return value if dist.low <= value <= dist.high else _ABSENT


def asha_rungs(scheduler: Mapping[str, Any]) -> list[int]:
    """The epochs where ASHA compares trials: ``grace_period * reduction_factor**k`` below ``max_t`` (Tune's milestones)."""
    if scheduler.get("type", "asha") != "asha" or not scheduler.get("max_t"):
        return []
    grace, rf, max_t = int(scheduler.get("grace_period") or 1), float(scheduler.get("reduction_factor") or 2), int(scheduler["max_t"])
    rungs, k = [], 0
    while grace * rf**k < max_t:
        rungs.append(int(grace * rf**k))
        k += 1
    return rungs


# ---------------------------------------------------------------- sections


def _leaderboard(board: Any, space: Mapping[str, Any]) -> str:
    if board is None or board.empty:
        return _missing("no trials yet")
    searched = [k for k in (space.get("space") or {}) if f"config/{k}" in board]
    cols = ["trial_id", "status", "epochs", "best", "best_epoch", "last", "wall_s"] + [f"config/{k}" for k in searched] + ["error"]
    view = board[[c for c in cols if c in board]].copy()
    if "error" in view:  # None in a text column: na_rep does not reach it
        view["error"] = view["error"].where(view["error"].notna(), "-")
    view.columns = [c.removeprefix("config/") for c in view.columns]
    metric = str(board["metric"].iloc[0]) if "metric" in board else "metric"
    view = view.rename(columns={"best": f"best {metric}", "last": f"last {metric}", "wall_s": "seconds"})
    view.index = range(1, len(view) + 1)
    table = view.to_html(float_format=lambda v: f"{v:.4g}", na_rep="-", border=0, escape=True)
    return (
        f'<p class="note">One row per trial, best first (errored and unfinished last). {len(board)} trials; '
        "the full table with every column and each trial's prediction files is <code>leaderboard.csv</code>.</p>"
        f'<div class="scroll">{table}</div>'
    )


def _progress(board: Any, metric: str, mode: str) -> str:
    import matplotlib.pyplot as plt

    hist = search_history(board, metric) if board is not None and not board.empty else None
    if hist is None or hist.empty:
        return _missing("no trial has reported an epoch yet")
    values = hist["value"].to_numpy(dtype=float)
    x = np.arange(1, len(values) + 1)
    filled = np.where(np.isnan(values), -np.inf if mode == "max" else np.inf, values)
    best = np.maximum.accumulate(filled) if mode == "max" else np.minimum.accumulate(filled)
    best = np.where(np.isfinite(best), best, np.nan)
    status = dict(zip(board["trial_id"].astype(str), board["status"]))
    fig, ax = plt.subplots(figsize=(8, 4))
    colors = [STATUS_COLORS.get(status.get(t, ""), "#9e9e9e") for t in hist["trial_id"]]
    ax.scatter(x, values, s=14, c=colors, alpha=0.6, label="one epoch of one trial (colour: the trial's status)")
    ax.step(x, best, where="post", color="black", lw=1.8, label=f"best {metric} so far")
    ax.set(xlabel="trial-epochs trained (in the order they finished)", ylabel=metric, title=f"search progress: {metric} ({mode})")
    ax.legend(loc="lower right" if mode == "max" else "upper right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    final = best[~np.isnan(best)]
    text = f"best {metric} {final[-1]:.4f} after {len(values)} trial-epochs" if final.size else ""
    return f'<p class="note">{html.escape(text)}; every epoch any trial reported, in the order they were reported.</p>' + _figure(fig, "search progress")


def _importances(board: Any, space: Mapping[str, Any], mode: str) -> str:
    import matplotlib.pyplot as plt

    if board is None or board.empty:
        return _missing("no trials yet")
    try:
        imp = param_importances(board, space, mode=mode)
    except ValueError as exc:
        return _missing(f"not enough history for importances: {exc}")
    names = list(imp)[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, [imp[n] for n in names], color="#3f6fb5")
    ax.set(xlabel="importance (fANOVA, sums to 1)", title="which searched parameters explained the best values")
    ax.set_xlim(0, 1)
    fig.tight_layout()
    searched = list((space.get("space") or {}))
    left = [n for n in searched if n not in imp]
    note = (
        "Optuna's fANOVA importance evaluator on the sweep's history: each finished or pruned trial counts with its best "
        "value. With few trials the numbers are rough."
    )
    if left:
        note += " Not assessed (conditional on another parameter, or never varied): " + ", ".join(left) + "."
    return f'<p class="note">{html.escape(note)}</p>' + _figure(fig, "parameter importances")


def _rungs(board: Any, space: Mapping[str, Any], metric: str) -> str:
    import matplotlib.pyplot as plt

    if board is None or board.empty:
        return _missing("no trials yet")
    scheduler = (space.get("search") or {}).get("scheduler") or {}
    rungs = asha_rungs(scheduler)
    rows = board.iloc[::-1]  # best at the top of the figure
    fig, ax = plt.subplots(figsize=(8, 0.28 * len(rows) + 1.5))
    for i, (_, row) in enumerate(rows.iterrows()):
        epochs = int(row["epochs"] or 0)
        ax.barh(i, max(epochs, 0.05), left=0, color=STATUS_COLORS.get(row["status"], "#9e9e9e"), height=0.6)
        best = row["best"]
        ax.text(max(epochs, 0) + 0.05, i, f"{best:.3f}" if best == best else "-", va="center", fontsize=7)
    for r in rungs:
        ax.axvline(r, ls="--", color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), [str(t) for t in rows["trial_id"]], fontsize=7)
    top = max([int(board["epochs"].max() or 0)] + rungs + [int(scheduler.get("max_t") or 0)])
    ax.set(xlabel="epochs trained", xlim=(0, top + 0.8), title=f"epochs per trial (label: best {metric}); dashed: rungs")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for s, c in STATUS_COLORS.items() if s in set(board["status"])]
    ax.legend(handles, [s for s in STATUS_COLORS if s in set(board["status"])], loc="lower right", fontsize=7)
    fig.tight_layout()
    if rungs:
        table = ["<table><tr><th>rung (epoch)</th><th>trials that reached it</th><th>stopped here</th></tr>"]
        stops = _stop_rungs(board, rungs)
        for r in rungs + [int(scheduler["max_t"])]:
            reached = int((board["epochs"] >= r).sum())
            stopped = [t for t, at in stops.items() if at == r]
            label = f"{r} (max_t)" if r == int(scheduler["max_t"]) else str(r)
            table.append(f"<tr><td>{label}</td><td>{reached}</td><td>{html.escape(', '.join(stopped)) or '-'}</td></tr>")
        table.append("</table>")
        note = (
            f"ASHA (grace_period {scheduler.get('grace_period')}, reduction_factor {scheduler.get('reduction_factor')}, "
            f"max_t {scheduler.get('max_t')}) compares trials at each rung and stops those below the top 1/reduction_factor."
        )
        budget = (space.get("search") or {}).get("time_budget_s")
        if budget:
            note += f" The sweep's time budget ({budget:g} s) also stops the trials still running when it runs out."
        return f'<p class="note">{html.escape(note)}</p>' + "".join(table) + _figure(fig, "ASHA rungs")
    kind = scheduler.get("type", "asha")
    return f'<p class="note">The {html.escape(str(kind))} scheduler has no rungs; the figure shows where each trial stopped.</p>' + _figure(fig, "epochs per trial")


def _stop_rungs(board: Any, rungs: list[int]) -> dict[str, int]:
    """Pruned trials and the rung that stopped them (the last rung they reached)."""
    out = {}
    for _, row in board[board["status"] == "pruned"].iterrows():
        reached = [r for r in rungs if int(row["epochs"]) >= r]
        if reached:
            out[str(row["trial_id"])] = reached[-1]
    return out


def _ensemble_metrics(root: Path) -> str:
    from ensemble import read_ensemble

    bundle = root / "ensemble"
    built = read_ensemble(bundle)
    if built is None:
        return _missing(f"no ensemble built yet; build it with python -m ensemble.build {root}")
    m = built.metrics
    keys = [k for k in ("auroc", "accuracy", "auprc", "ece") if f"test.ensemble.{k}" in m]
    best = built.best_single
    rows = ["<table><tr><th></th>" + "".join(f"<th>test {k}</th>" for k in keys) + "<th>auroc 95% CI</th></tr>"]
    for label, prefix in (("ensemble", "test.ensemble"), (f"best single member ({best})", "test.best_single")):
        ci = m.get(f"{prefix}.auroc_ci95") or [None, None]
        cells = "".join(f"<td>{_fmt(m.get(f'{prefix}.{k}'))}</td>" for k in keys)
        rows.append(f"<tr><td>{html.escape(label)}</td>{cells}<td>[{_fmt(ci[0])}, {_fmt(ci[1])}]</td></tr>")
    rows.append("</table>")
    members = built.members
    # The folds the fitted combiner records (the manifest's combiner.state.n_folds).
    folds = f"{built.n_folds}-fold CV" if built.n_folds is not None else "cross-validation"
    note = (
        f"{len(members)} members ({', '.join(members)}), combined by {built.combiner} "
        f"{json.dumps(built.settings)}, chosen by {folds} on validation; "
        f"the test split only reports. Bundle: {bundle}."
    )
    members_csv = bundle / "report" / "leaderboard.csv"
    extra = ""
    if members_csv.is_file():
        import pandas as pd

        frame = pd.read_csv(members_csv)
        table = frame.to_html(index=False, float_format=lambda v: f"{v:.4f}", na_rep="-", border=0)
        extra = f'<h3>Members and combiners</h3><div class="scroll">{table}</div>'
    report = bundle / "report" / "classification_report.txt"
    if report.is_file():
        extra += f"<details><summary>classification report</summary><pre>{html.escape(report.read_text())}</pre></details>"
    return f'<p class="note">{html.escape(note)}</p>' + "".join(rows) + extra


def _data_splits(root: Path) -> str:
    """Images, patients and class balance per split, from the bundle's manifest or else a trial's model.json."""
    from ensemble import read_ensemble
    from trainables.artifacts import MODEL_JSON

    built = read_ensemble(root / "ensemble")
    report = built.split_report if built is not None else None
    if not report or report.get("from") not in (None, "data"):  # only the data layer's report has patients and prevalence
        found = next(iter(sorted(root.glob(f"**/{MODEL_JSON}"))), None)
        report = json.loads(found.read_text()).get("data") if found is not None else None
    if not report or not report.get("splits"):
        return _missing("no split report yet (written by the trials into model.json)")
    splits = report["splits"]
    classes = list(next(iter(splits.values()))["counts"])
    head = "<tr><th>split</th><th>images</th><th>patients</th>" + "".join(f"<th>{html.escape(c)}</th>" for c in classes) + "</tr>"
    rows = [
        f"<tr><td>{html.escape(s)}</td><td>{d['images']}</td><td>{d['patients'] if d.get('patients') is not None else '-'}</td>"
        + "".join(f"<td>{d['counts'][c]} ({_fmt(d['prevalence'][c])})</td>" for c in classes) + "</tr>"
        for s, d in splits.items()
    ]
    how = f"splits {report.get('split') or 'given'}; patients by {report.get('grouped_by') or 'unknown (no groups: images may share patients)'}"
    return f'<p class="note">{html.escape(how)}; cells: count (prevalence)</p><div class="scroll"><table>{head}{"".join(rows)}</table></div>'


def _ensemble_figures(root: Path) -> str:
    folder = root / "ensemble" / "report"
    names = [("roc.png", "ROC curves, test split"), ("confusion_matrix.png", "confusion matrix"), ("calibration.png", "calibration (reliability)")]
    found = [(folder / n, c) for n, c in names if (folder / n).is_file()]
    if not found:
        return _missing("no ensemble report figures yet")
    return "".join(_img(p.read_bytes(), c) for p, c in found)


def _model_card(root: Path) -> str:
    card = root / "ensemble" / "MODEL_CARD.md"
    if not card.is_file():
        return _missing("no model card yet; the ensemble bundle writes MODEL_CARD.md")
    return (f'<p class="note">{html.escape(str(card))}: what the bundle is, what it was tested on, and what it is not for.</p>'
            f"<details open><summary>MODEL_CARD.md</summary>{markdown_html(card.read_text())}</details>")


def markdown_html(text: str) -> str:
    """The small Markdown a model card uses (headings, lists, tables, code blocks, `code`, **bold**) as HTML."""
    import re

    def inline(s: str) -> str:
        s = html.escape(s)
        s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
        return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", s)

    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            j = i + 1
            while j < len(lines) and not lines[j].startswith("```"):
                j += 1
            out.append(f"<pre>{html.escape(chr(10).join(lines[i + 1 : j]))}</pre>")
            i = j + 1
            continue
        if line.startswith("#"):
            level = min(len(line) - len(line.lstrip("#")) + 2, 6)  # the page's own h1/h2 stay above the card's
            out.append(f"<h{level}>{inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                cells = [c.strip() for c in re.split(r"(?<!\\)\|", lines[i].strip())[1:-1]]
                if not all(re.fullmatch(r"-+", c) for c in cells):
                    tag = "th" if not rows else "td"
                    rows.append("<tr>" + "".join(f"<{tag}>{inline(c.replace(chr(92) + '|', '|'))}</{tag}>" for c in cells) + "</tr>")
                i += 1
            out.append(f'<div class="scroll"><table>{"".join(rows)}</table></div>')
            continue
        elif line.startswith("- "):
            items = []
            while i < len(lines) and lines[i].startswith("- "):
                items.append(f"<li>{inline(lines[i][2:])}</li>")
                i += 1
            out.append(f"<ul>{''.join(items)}</ul>")
            continue
        elif line.strip():
            out.append(f"<p>{inline(line)}</p>")
        i += 1
    return "\n".join(out)


def _gradcam(root: Path, space: Mapping[str, Any], n_per_class: int) -> str:
    bundle_dir = root / "ensemble"
    if not (bundle_dir / "manifest.json").is_file():
        return _missing("no ensemble bundle yet")
    if n_per_class < 1:
        return _missing("switched off (n_cam_per_class=0)")
    from ensemble import load

    with _one_torch_thread():
        return _gradcam_figures(root, space, n_per_class, load(bundle_dir, device="cpu"))


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """Single-image forward and backward passes are fastest on one thread; torch's default (every core)
    spins on a shared machine: resnet34 at 28 px, forward + backward 305 ms on 2 threads, 84 ms on 1."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _gradcam_figures(root: Path, space: Mapping[str, Any], n_per_class: int, bundle: Any) -> str:
    from ensemble.explain import explain, save_figure
    from trainables import DataConfig, load_dataset

    data = DataConfig.from_dict(space.get("data") or {}, origin=str(root / "space.yaml"))
    ds = load_dataset(data, image_size=int(bundle.manifest["image_size"]), verbose=False)
    test = ds.splits["test"]
    ids = [str(m["trial_id"]) for m in bundle.members]
    parts = [
        '<p class="note">Test images, a few per class: the input, each member\'s Grad-CAM for the true class on its last '
        "spatial convolution, and the maps combined with the ensemble's member weights.</p>"
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for j, cls in enumerate(ds.class_names):
            labels = test.labels
            rows = np.flatnonzero(labels[:, j] == 1) if labels.ndim == 2 else np.flatnonzero(labels == j)
            for k in rows[:n_per_class]:
                exp = explain(bundle, test.images[k], target=cls)
                png = save_figure(exp, Path(tmp) / f"{j}_{k}.png", member_ids=ids, source=f"{test.ids[k]}")
                parts.append(_img(png.read_bytes(), f"{cls}: test image {test.ids[k]} (ensemble p={exp.probs[j]:.3f})", block=True))
    return "".join(parts)


def _space_text(root: Path) -> str:
    path = root / "space.yaml"
    if not path.is_file():
        return _missing("no space.yaml")
    return f"<details><summary>space.yaml as the sweep ran it</summary><pre>{html.escape(path.read_text())}</pre></details>"


# ---------------------------------------------------------------- html pieces


def _figure(fig: Any, caption: str) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return _img(buf.getvalue(), caption)


def _img(png: bytes, caption: str, *, block: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    style = ' style="display:block"' if block else ""
    alt = html.escape(caption, quote=True)
    return f'<figure{style}><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{html.escape(caption)}</figcaption></figure>'


def _missing(text: str) -> str:
    return f'<p class="missing">{html.escape(text)}</p>'


def _fmt(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"
