"""What a bundle says about itself: where it came from (package versions, the hashes of the space and the
data files, the seeds) and ``MODEL_CARD.md``, the page for people, written from the manifest and metrics alone.

The card is a pure function of ``manifest.json`` and ``metrics.json``, so an ONNX export can write it again
with its own figure; like every other file of a bundle it is covered by the manifest's sha256 check.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["data_description", "file_sha256", "listing_sha256", "model_card", "provenance", "split_report", "sweep_description"]

_CHUNK = 1 << 20
# Data keys that name where things go, not what the data are.
_NOT_DATA = ("cache_dir",)


# ---------------------------------------------------------------- provenance


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def listing_sha256(root: Path) -> tuple[str, int, int]:
    """sha256 over a folder's file list (relative path and size per file, sorted), the file count and bytes.

    Cheap next to reading every image, and it changes when a file is added, removed, renamed or resized.
    """
    h = hashlib.sha256()
    n = total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = os.path.join(dirpath, name)
            try:
                size = os.stat(full).st_size
            except OSError:
                continue
            h.update(f"{os.path.relpath(full, root)}\t{size}\n".encode())
            n += 1
            total += size
    return h.hexdigest(), n, total


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _git_commit(folder: Path) -> str | None:
    """The commit of the checkout ``folder`` (a package folder) is in; None when it is not medsweep's own checkout."""
    try:
        out = subprocess.run(["git", "-C", str(folder), "rev-parse", "--show-toplevel", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.split()
    if out.returncode != 0 or len(lines) != 2 or len(lines[1]) != 40:
        return None
    # Installed into some other project's repository (a venv inside it), the commit would be that project's.
    return lines[1] if Path(lines[0]).resolve() == folder.resolve().parent else None


def package_versions() -> dict[str, str | None]:
    """Versions of what made (and runs) the bundle; None for a package that is not installed."""
    import torch  # imported by the package already; timm is not, and its metadata says the same

    versions = {"python": platform.python_version(), "torch": str(torch.__version__), "timm": _version("timm")}
    for dist in ("medsweep", "numpy", "scikit-learn", "safetensors", "onnx", "onnxruntime"):
        versions[dist] = _version(dist)
    return versions


def provenance(selection: Any, space_text: str | None) -> dict[str, Any]:
    """The manifest's ``provenance``: versions, medsweep's git commit, the space file's sha256, the seeds, the date."""
    space_path = selection.run_dir / "space.yaml"
    space = _safe_yaml(space_text)
    search = space.get("search") or {}
    sampler = search.get("sampler") if isinstance(search.get("sampler"), Mapping) else {}
    fixed = space.get("fixed") if isinstance(space.get("fixed"), Mapping) else {}
    seeds = {
        "sampler": sampler.get("seed"),
        "training": fixed.get("seed"),
        "members": sorted({m.config.get("seed") for m in selection.members if m.config.get("seed") is not None}),
        "ensemble": int(selection.settings.seed),
    }
    return {
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "packages": package_versions(),
        "medsweep_commit": _git_commit(Path(__file__).resolve().parent),
        "platform": platform.platform(),
        "space_file": str(space_path) if space_text is not None else None,
        "space_sha256": hashlib.sha256(space_text.encode()).hexdigest() if space_text is not None else None,
        "seeds": seeds,
    }


def _safe_yaml(text: str | None) -> dict[str, Any]:
    import yaml

    if not text:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}


def _file_entry(key: str, path: Path) -> dict[str, Any]:
    try:
        if path.is_file():
            return {"key": key, "path": str(path), "kind": "file", "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        if path.is_dir():
            digest, n, total = listing_sha256(path)
            return {"key": key, "path": str(path), "kind": "listing", "files": n, "bytes": total, "sha256": digest}
    except OSError as exc:  # provenance must not cost the bundle
        return {"key": key, "path": str(path), "kind": "unreadable", "sha256": None, "error": exc.strerror or str(exc)}
    return {"key": key, "path": str(path), "kind": "missing", "sha256": None}


def data_description(space: Mapping[str, Any], *, origin: str = "space.yaml") -> dict[str, Any]:
    """The manifest's ``data``: the source, its settings, and a sha256 for every data file it names.

    A file (a MedMNIST npz, a labels CSV) is hashed whole; a folder of images by its file list and sizes.
    """
    data = dict(space.get("data") or {}) if isinstance(space.get("data"), Mapping) else {}
    files: list[dict[str, Any]] = []
    seen: set[str] = set()
    if data.get("source") == "medmnist":
        try:
            from trainables import DataConfig

            located = DataConfig.from_dict(data, origin=origin).source.locate(download=False)
        except Exception:  # noqa: BLE001 - provenance is best effort; the bundle must still be written
            located = None
        if located is not None:
            files.append(_file_entry("dataset", Path(located)))
            seen.add(str(Path(located)))
    for key, value in sorted(data.items()):
        if key in _NOT_DATA or not isinstance(value, str) or not value or "://" in value:
            continue
        if key not in ("root", "labels_csv", "img_dir", "path", "paths", "file", "dir") and os.sep not in value:
            continue  # a setting such as `source: folder`, not a path
        path = Path(value).expanduser()
        if str(path) in seen or (key == "root" and data.get("source") == "medmnist" and path.is_dir()):
            continue
        seen.add(str(path))
        files.append(_file_entry(key, path))
    return {"source": data.get("source"), "settings": {k: v for k, v in data.items() if k not in _NOT_DATA}, "files": files}


def split_report(selection: Any, summary: Any) -> dict[str, Any]:
    """Images and class (or label) counts per split.

    Taken, in this order, from a ``split_report`` the data layer wrote (a member's ``model.json`` or the
    metrics), from the sweep's data cache (train, val and test), or counted from the stored predictions'
    labels (val and test).
    """
    for m in selection.members:
        # The trials write the data layer's report (images, patients, counts, prevalence) as model.json's "data".
        for key in ("data", "split_report"):
            if isinstance(m.model.get(key), Mapping) and isinstance(m.model[key].get("splits"), Mapping):
                return {"from": "data", **dict(m.model[key])}
    if isinstance(summary.metrics.get("split_report"), Mapping):
        return {"from": "data", **dict(summary.metrics["split_report"])}
    names = list(selection.class_names)
    from_cache = _cached_counts(selection)
    if from_cache is not None:
        return {"from": "data cache", "splits": from_cache}
    splits = {}
    for split, y in (("val", selection.y_val), ("test", selection.y_test)):
        splits[split] = _counts(np.asarray(y), names, selection.multilabel)
    return {"from": "predictions", "splits": splits}


def _counts(y: np.ndarray, names: list[str], multilabel: bool) -> dict[str, Any]:
    if multilabel:
        return {"images": int(y.shape[0]), "classes": {c: int((y[:, j] == 1).sum()) for j, c in enumerate(names)},
                "masked": {c: int((y[:, j] < 0).sum()) for j, c in enumerate(names)}}
    return {"images": int(y.shape[0]), "classes": {c: int((y == j).sum()) for j, c in enumerate(names)}}


def _cached_counts(selection: Any) -> dict[str, Any] | None:
    try:
        from trainables import DataConfig, open_cached

        space = _safe_yaml((selection.run_dir / "space.yaml").read_text()) if (selection.run_dir / "space.yaml").is_file() else {}
        if not isinstance(space.get("data"), Mapping):
            return None
        model = selection.members[0].model
        pre = {k: bool((model.get("params") or {}).get(k)) for k in ("clahe", "border_crop")}
        ds = open_cached(DataConfig.from_dict(space["data"]), image_size=int(model["image_size"]), preprocess=pre)
    except Exception:  # noqa: BLE001 - the counts from the predictions do instead
        return None
    if ds is None or list(ds.class_names) != list(selection.class_names):
        return None
    return {split: _counts(np.asarray(ds.splits[split].labels), list(ds.class_names), ds.multilabel) for split in ds.splits}


def sweep_description(space: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's ``sweep`` additions: the search space and the budget the sweep ran with."""
    search = space.get("search") if isinstance(space.get("search"), Mapping) else {}
    budget = {k: search.get(k) for k in ("n_trials", "max_concurrent", "time_budget_s", "sampler", "scheduler", "resources") if k in search}
    return {"name": space.get("name"), "space": space.get("space") or {}, "fixed": space.get("fixed") or {}, "budget": budget}


# ---------------------------------------------------------------- the card


def _f(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{v:.{digits}f}"
    return str(v)


def _ci(v: Any) -> str:
    return f"[{_f(v[0])}, {_f(v[1])}]" if isinstance(v, (list, tuple)) and len(v) == 2 else "-"


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return out


def _compact(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(", ", ": "), default=str)


def model_card(manifest: Mapping[str, Any], metrics: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md`` as text, from a bundle's manifest and metrics.

    Example:
        >>> text = model_card(json.load(open("runs/cxr/ensemble/manifest.json")), json.load(open("runs/cxr/ensemble/metrics.json")))
        >>> text.splitlines()[0]
        '# Model card: cxr ensemble'
    """
    task = str(manifest.get("task"))
    names = [str(c) for c in manifest.get("class_names") or []]
    sweep = manifest.get("sweep") or {}
    data = manifest.get("data") or {}
    prov = manifest.get("provenance") or {}
    comb = manifest.get("combiner") or {}
    members = [m for m in manifest.get("members") or [] if isinstance(m, Mapping)]
    title = sweep.get("name") or Path(str(sweep.get("run_dir") or "bundle")).name
    L: list[str] = [f"# Model card: {title} ensemble", ""]
    L.append(f"Written by medsweep {(prov.get('packages') or {}).get('medsweep') or '?'} on {prov.get('created_utc') or manifest.get('created_utc') or '?'}; "
             "this file is part of the bundle and covered by the sha256 check of `manifest.json`.")
    L += ["", "## Task and classes", ""]
    kinds = {"binary": "binary classification (one of two classes)", "multi-class": "multi-class classification (one class per image)",
             "ordinal": "ordinal classification (one graded class per image)", "multi-label": "multi-label classification (any number of labels per image)"}
    L.append(f"- task: {kinds.get(task, task)}")
    L.append(f"- {'labels' if task == 'multi-label' else 'classes'}: " + ", ".join(f"`{c}`" for c in names))
    size, ch = manifest.get("image_size"), manifest.get("channels")
    norm = manifest.get("normalization") or {}
    L.append(f"- input: {size} x {size} px, {ch} channel(s), uint8; inside the model `x = (uint8 / 255 - mean) / std` "
             f"with mean {norm.get('mean')} and std {norm.get('std')}")
    pre = manifest.get("preprocessing") or {}
    flags = [k for k in ("clahe", "border_crop") if pre.get(k)]
    L.append(f"- preprocessing before resizing: {', '.join(flags) if flags else 'none (windowing to uint8 and resizing only)'}")

    L += ["", "## Data", ""]
    settings = data.get("settings") or {}
    L.append(f"- source: `{data.get('source') or '?'}` {_compact(settings) if settings else ''}".rstrip())
    for f in data.get("files") or []:
        what = (f"{f.get('files')} files, {f.get('bytes')} bytes, sha256 of the file list and sizes" if f.get("kind") == "listing"
                else f"{f.get('bytes')} bytes, sha256" if f.get("kind") == "file" else f"{f.get('kind')} when the bundle was written, sha256")
        L.append(f"- `{f.get('key')}`: `{f.get('path')}` ({what} `{f.get('sha256') or '-'}`)")
    report = data.get("split_report") or {}
    splits = report.get("splits") if isinstance(report.get("splits"), Mapping) else None
    if splits:
        L += ["", f"Images per split and {'positive labels' if task == 'multi-label' else 'class counts'} (from the {report.get('from', 'data')}):", ""]
        def counts(s: Mapping) -> Mapping:  # the data layer says "counts", the fallbacks "classes"
            return s.get("counts") or s.get("classes") or {}

        cols = sorted({c for s in splits.values() if isinstance(s, Mapping) for c in counts(s)}, key=lambda c: names.index(c) if c in names else len(names))
        extra = [k for k in ("patients", "groups") if any(isinstance(s, Mapping) and k in s for s in splits.values())]
        rows = []
        for split, s in splits.items():
            if isinstance(s, Mapping):
                rows.append([split, _f(s.get("images"))] + [_f(s.get(k)) for k in extra] + [_f(counts(s).get(c)) for c in cols])
        L += _table(["split", "images"] + extra + cols, rows)
    other = {k: v for k, v in report.items() if k not in ("splits", "from")}
    if other:
        L += ["", f"Split and grouping: `{_compact(other)}`"]

    L += ["", "## Members and combiner", ""]
    val_metric = sweep.get("metric", "val metric")
    rows = []
    for m in members:
        vm = m.get("val_metric") or {}
        rows.append([f"`{m.get('trial_id')}`", m.get("backbone"), m.get("head"), _f(vm.get("value")), _f(m.get("best_epoch")),
                     "yes" if m.get("logit_bias") is not None else "no", "+".join(m.get("tta") or []) or "none",
                     _f(metrics.get(f"test.members.{m.get('trial_id')}.auroc"))])
    L += _table(["member", "backbone", "head", val_metric, "best epoch", "logit bias", "test-time flips", "test auroc"], rows)
    if any(m.get("tta") for m in members):
        L.append("")
        L.append("A member with test-time flips predicts the mean of its logits over the image and those mirrors of it (the flips "
                 "it trained with); its validation and test predictions above were made that way, and so are the bundle's and "
                 "the ONNX graph's.")
    weights = comb.get("member_weights")
    L += ["", f"Combiner: **{comb.get('name')}** {_compact(comb.get('settings') or {})}, chosen among "
          f"{', '.join((comb.get('state') or {}).get('options', {}).get('combiners', []) or ['?'])} by "
          f"{(comb.get('state') or {}).get('n_folds', 'k')}-fold cross-validation on the validation predictions "
          f"({comb.get('cv_metric')}); best single member: `{manifest.get('best_single')}`."]
    if weights:
        L.append("Member weights: " + ", ".join(f"`{m.get('trial_id')}` {_f(w, 3)}" for m, w in zip(members, weights)) + ".")
    folds = sorted({int(m.get("folds") or 1) for m in members})
    if folds != [1]:
        L.append(f"Bagged members: each is {' or '.join(map(str, folds))} models of one configuration, refitted on folds of "
                 "train+val (grouped by patient) and averaged; the \"validation\" predictions above are their out-of-fold "
                 "predictions of train+val, so every member has seen the validation images in training, never those of the test split.")
    L.append(f"Sweep: {sweep.get('top_k')} of {sweep.get('available')} usable trials, ranked by {val_metric} ({sweep.get('mode')}).")

    L += ["", "## Test metrics", "", "The test split only reports: members were chosen on validation and the combiner by CV on validation. "
          "Intervals are 95 % bootstrap intervals over the test images.", ""]
    keys = [k for k in ("auroc", "accuracy", "balanced_accuracy", "auprc", "log_loss", "ece", "brier") if f"test.ensemble.{k}" in metrics]
    rows = []
    for label, prefix in (("ensemble", "test.ensemble"), (f"best single (`{manifest.get('best_single')}`)", "test.best_single")):
        rows.append([label] + [_f(metrics.get(f"{prefix}.{k}")) for k in keys] + [_ci(metrics.get(f"{prefix}.auroc_ci95"))])
    L += _table([""] + keys + ["auroc 95 % CI"], rows)
    per = [(c, metrics.get(f"test.ensemble.sensitivity.{c}"), metrics.get(f"test.ensemble.specificity.{c}")) for c in names]
    if any(s is not None for _, s, _ in per):
        L += ["", "Per class on the test split (ensemble):", ""]
        L += _table(["class", "sensitivity", "specificity"], [[f"`{c}`", _f(s), _f(p)] for c, s, p in per])

    L += ["", "## Calibration", ""]
    t = comb.get("temperature")
    how = ("fitted on the combiner's out-of-fold validation predictions (Guo et al. 2017); the combined logits are divided by it"
           if t not in (None, 1.0) else "none (1.0)")
    L.append(f"- temperature: {_f(t, 3)} ({how})")
    L.append(f"- expected calibration error on the test split: ensemble {_f(metrics.get('test.ensemble.ece'))}, best single {_f(metrics.get('test.best_single.ece'))}; the reliability figure is `report/calibration.png`")
    if any(m.get("logit_bias") is not None for m in members):
        L.append("- members with a logit bias have it added to their logits before softmax/sigmoid: it corrects the class prior a balanced sampler taught them")

    L += ["", "## Threshold", ""]
    thr = (comb.get("state") or {}).get("threshold")
    if task == "binary":
        rule = (comb.get("state") or {}).get("options", {}).get("threshold", "youden")
        L.append(f"The bundle says `{names[1] if len(names) > 1 else 'positive'}` when its probability is at least **{_f(thr)}** "
                 + ("(Youden's J on the out-of-fold validation predictions: the cut that maximises sensitivity + specificity)." if rule == "youden" else "(argmax: 0.5)."))
        L.append(f"At that threshold on the test split: sensitivity {_f(metrics.get('test.ensemble.at_threshold.sensitivity'))}, "
                 f"specificity {_f(metrics.get('test.ensemble.at_threshold.specificity'))}, balanced accuracy {_f(metrics.get('test.ensemble.at_threshold.balanced_accuracy'))}. "
                 "A different operating point (for screening, say) is a different cut on the same probability; choose it on your own validation data.")
    elif task == "multi-label":
        L.append("Each label is predicted present when its probability is above 0.5; labels are independent.")
    else:
        L.append("The predicted class is the one with the highest probability.")

    L += ["", "## Search space and budget", ""]
    budget = sweep.get("budget") or {}
    if budget:
        L.append("- budget: " + "; ".join(f"{k} {_compact(v) if isinstance(v, (dict, list)) else v}" for k, v in budget.items()))
    if sweep.get("fixed"):
        L.append(f"- fixed: `{_compact(sweep['fixed'])}`")
    space = sweep.get("space") or {}
    if space:
        L += ["", "Searched parameters:", ""]
        L += _table(["parameter", "distribution"], [[f"`{k}`", f"`{_compact(v)}`"] for k, v in space.items()])
    if prov.get("space_sha256"):
        L += ["", f"The sweep's resolved space file: `{prov.get('space_file')}`, sha256 `{prov.get('space_sha256')}`."]

    L += ["", "## Intended use and limits", "",
          "- **Research use only. This is not a medical device** and it has not been cleared or approved by any regulator; "
          "it must not be used to diagnose, treat or triage patients.",
          "- It was fitted and tested on the data above only. Other scanners, sites, populations, label definitions or "
          "image preparations change what it does; measure it on your own data before relying on any figure here.",
          "- The test figures come from a single split of that data; their intervals show sampling noise, not shifts between sites.",
          "- Images must be prepared as in training (see the input line above); an image the members never saw the like of "
          "still gets a confident-looking probability."]

    L += ["", "## How to load it", "", "With medsweep (verifies every sha256 first):", "", "```python",
          "from ensemble import load", "bundle = load(\"path/to/ensemble\")", "probs = bundle.predict_proba([\"image.png\"])  # (N, K)",
          "labels = bundle.predict([\"image.png\"])", "```", "",
          "As one ONNX graph (onnxruntime and numpy only; input uint8 `(N, H, W, C)` already at the size and channels above):", "",
          "```bash", "pip install -e \".[export]\" && python -m ensemble.export path/to/ensemble --onnx model.onnx", "```", "",
          "```python", "import numpy as np, onnxruntime as ort",
          "session = ort.InferenceSession(\"model.onnx\", providers=[\"CPUExecutionProvider\"])",
          "probs = session.run([\"probabilities\"], {\"images\": batch_uint8})[0]" + ("  # and \"decision\": 1 at the threshold" if task == "binary" else ""), "```"]
    onnx = manifest.get("onnx")
    if isinstance(onnx, Mapping):
        L += ["", f"Last ONNX export: `{onnx.get('file')}` (opset {onnx.get('opset')}, sha256 `{onnx.get('sha256')}`), checked in "
              f"onnxruntime {onnx.get('onnxruntime')} against `Bundle.predict_proba` on {onnx.get('n_images')} images "
              f"({onnx.get('inputs')}): largest difference {onnx.get('max_abs_diff'):.2e} (limit {onnx.get('tolerance')})."]

    L += ["", "## Provenance", ""]
    pk = prov.get("packages") or {}
    L.append("- made with " + ", ".join(f"{k} {v}" for k, v in pk.items() if v) + (f"; medsweep commit `{prov['medsweep_commit']}`" if prov.get("medsweep_commit") else ""))
    seeds = prov.get("seeds") or {}
    if seeds:
        L.append("- seeds: " + ", ".join(f"{k} {v}" for k, v in seeds.items() if v not in (None, [])))
    L.append("- every file of the bundle has its sha256 in `manifest.json`; `ensemble.verify_bundle(path)` checks them")
    return "\n".join(L) + "\n"
