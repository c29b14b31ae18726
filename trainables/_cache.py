"""Decode once: every dataset becomes uint8 arrays on disk, memory-mapped by every trial on the node.

The cache directory is keyed by the source's description, the image size, the channel
count and the preprocessing version, built under a file lock into a temporary folder and
renamed into place, so concurrent trials build it once and never see half a cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from filelock import FileLock

from ._errors import ConfigError
from ._sources import SPLITS, SourceIndex, create_source
from .artifacts import prepare_image

CACHE_VERSION = 1
_COMMON_KEYS = ("cache_dir", "on_bad_image", "channels")


@dataclass(frozen=True)
class DataConfig:
    """The ``data`` section of a space file, validated.

    Attributes:
        source: the source object (``MedMNISTSource``, ``FolderSource`` or ``CSVSource``).
        cache_dir: where decoded arrays live; default ``$MEDSWEEP_CACHE`` or ``~/.cache/medsweep``.
        on_bad_image: ``skip`` drops unreadable files (listed once), ``error`` stops before training.
        channels: ``auto`` (grey stays 1 channel, colour 3), or 1 or 3 to force.
    """

    source: Any
    cache_dir: str | None = None
    on_bad_image: str = "error"
    channels: str | int = "auto"

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, origin: str = "config", prefix: str = "data") -> "DataConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(
                f"must be a mapping with at least `source:`, got {type(raw).__name__}", origin=origin, field=prefix
            )
        common = {k: raw[k] for k in _COMMON_KEYS if k in raw}
        source = create_source(
            {k: v for k, v in raw.items() if k not in _COMMON_KEYS}, origin=origin, prefix=prefix, also_valid=_COMMON_KEYS
        )
        if common.get("on_bad_image", "error") not in ("skip", "error"):
            raise ConfigError(
                f"must be skip or error, got {common['on_bad_image']!r}", origin=origin, field=f"{prefix}.on_bad_image"
            )
        if common.get("channels", "auto") not in ("auto", 1, 3):
            raise ConfigError(
                f"must be auto, 1 or 3, got {common['channels']!r}", origin=origin, field=f"{prefix}.channels"
            )
        return cls(source=source, **common)

    def to_dict(self) -> dict[str, Any]:
        """The plain mapping this config was built from (what travels in Tune's config)."""
        out = {"source": self.source.name}
        for f in dataclasses.fields(self.source):
            value = getattr(self.source, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out.update({k: getattr(self, k) for k in _COMMON_KEYS})
        return out

    @property
    def default_image_size(self) -> int:
        return int(getattr(self.source, "size", 224))


@dataclass
class Split:
    images: np.ndarray  # (N, H, W, C) uint8, memory-mapped
    labels: np.ndarray  # (N,) int64, or (N, L) float32 with -1 = masked
    ids: list[str]
    groups: list[str] | None = None  # the patient (or volume) of each image, when the source knows it

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """A decoded, cached dataset: what every trial on a node shares."""

    task: str
    class_names: list[str]
    channels: int
    image_size: int
    splits: dict[str, Split]
    mean: list[float]
    std: list[float]
    class_counts: dict[str, list[int]]
    class_weights: list[float]
    bad_images: list[list[str]]
    path: Path
    grouping: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split_report(self) -> dict[str, Any]:
        """Per split: images, patients (when known), counts and prevalence per class; and how the splits were made.

        Example:
            >>> ds.split_report()["splits"]["test"]["patients"]
            11
        """
        return split_report(self.task, self.class_names, self.splits, self.grouping)

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"


def fold_dataset(ds: Dataset, *, n_folds: int, fold: int, seed: int = 0) -> Dataset:
    """``ds`` with train and val merged and cut into ``n_folds`` folds: fold ``fold`` is the new val split.

    The folds are grouped by patient and stratified (``fold_of``) and depend on the data and ``seed``
    only, so every configuration refitted on them shares them and their held-out predictions line up.
    The test split stays as it is. The merged images are read into memory (meant for small sets).

    Example:
        >>> f = fold_dataset(ds, n_folds=5, fold=0)
        >>> len(f.splits["train"]) + len(f.splits["val"]) == len(ds.splits["train"]) + len(ds.splits["val"])
        True
    """
    from ._groups import fold_of

    tr, va = ds.splits["train"], ds.splits["val"]
    labels = np.concatenate([np.asarray(tr.labels), np.asarray(va.labels)])
    groups = list(tr.groups) + list(va.groups) if tr.groups is not None and va.groups is not None else None
    where = fold_of(labels, groups, n_folds=n_folds, seed=seed, multilabel=ds.multilabel)
    images = np.concatenate([np.asarray(tr.images), np.asarray(va.images)])
    ids = list(tr.ids) + list(va.ids)

    def part(mask: np.ndarray) -> Split:
        rows = np.flatnonzero(mask)
        return Split(images=images[rows], labels=labels[rows], ids=[ids[i] for i in rows],
                     groups=[groups[i] for i in rows] if groups is not None else None)

    splits = {"train": part(where != fold), "val": part(where == fold), "test": ds.splits["test"]}
    counts = {**ds.class_counts, **{s: _class_counts(splits[s].labels, ds) for s in ("train", "val")}}
    return dataclasses.replace(
        ds, splits=splits, class_counts=counts, class_weights=_class_weights(splits["train"].labels, ds),
        grouping={**ds.grouping, "cv": {"folds": n_folds, "fold": fold, "seed": seed}},
    )


def default_cache_dir() -> Path:
    return Path(os.environ.get("MEDSWEEP_CACHE", "~/.cache/medsweep")).expanduser()


def _to_uint8(img: np.ndarray) -> np.ndarray:
    if img.dtype == np.uint8:
        return img
    img = img.astype(np.float64)
    # Not min(initial=0): that clamps lo to 0 and leaves an image of 1000..2000 at 127..255.
    lo, hi = (float(img.min()), float(img.max())) if img.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(img.shape, np.uint8)
    # Per-image windowing: 16-bit X-rays rarely use the full 0..65535 range.
    return np.round((img - lo) * (255.0 / (hi - lo))).astype(np.uint8)


def _guess_channels(index: SourceIndex) -> int:
    train = index.splits["train"]
    # Evenly spaced samples: file lists are sorted by class, so the first few would speak for one class only.
    for i in np.unique(np.linspace(0, len(train.labels) - 1, num=min(48, len(train.labels))).astype(int)):
        try:
            img = np.asarray(train.read(i))
        except Exception:  # noqa: BLE001 - bad files are reported by the build
            continue
        if img.ndim == 3 and img.shape[2] >= 3 and not (
            np.array_equal(img[..., 0], img[..., 1]) and np.array_equal(img[..., 1], img[..., 2])
        ):
            return 3
    return 1


def _cache_key(data: DataConfig, size: int, preprocess: Mapping[str, Any] | None = None) -> str:
    desc = {
        "version": CACHE_VERSION,
        "preprocess": dict(sorted((preprocess or {}).items())),
        "source": data.source.describe(),
        "size": size,
        "channels": data.channels,
        "on_bad_image": data.on_bad_image,
    }
    digest = hashlib.sha1(json.dumps(desc, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return f"{data.source.name}-{getattr(data.source, 'dataset', 'data')}-{size}px-{digest}"


def load_dataset(
    data: DataConfig, *, image_size: int | None = None, preprocess: Mapping[str, Any] | None = None, verbose: bool = True
) -> Dataset:
    """Return the cached dataset, building it first if this node has not yet.

    Args:
        data: the validated ``data`` section.
        image_size: side length in pixels; default the source's native size (MedMNIST) or 224.
        preprocess: deterministic preprocessing applied once at decode time, e.g.
            ``{"clahe": True, "border_crop": True}`` (see ``trainables._augment.preprocess``).
        verbose: print class counts when the cache is built.

    Example:
        >>> ds = load_dataset(DataConfig.from_dict({"source": "medmnist", "dataset": "pneumoniamnist"}))
        >>> ds.splits["train"].images.shape
        (3882, 28, 28, 1)
    """
    size = int(image_size or data.default_image_size)
    root = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    preprocess = {k: v for k, v in (preprocess or {}).items() if v}
    key = _cache_key(data, size, preprocess)
    final = root / key
    if not (final / "meta.json").is_file():
        # filelock, not fcntl: the same exclusive lock on Windows too (fcntl would fail to import there).
        with FileLock(root / f"{key}.lock"):
            if not (final / "meta.json").is_file():
                _build(data, size, final, preprocess=preprocess, verbose=verbose)
    return _open(final)


def open_cached(
    data: DataConfig, *, image_size: int | None = None, preprocess: Mapping[str, Any] | None = None
) -> Dataset | None:
    """The dataset when this node's cache already holds it, else None: never decodes anything.

    For readers that only want a look at the data a sweep saw (a bundle's ONNX check, its model card).

    Example:
        >>> ds = open_cached(DataConfig.from_dict({"source": "medmnist", "dataset": "pneumoniamnist"}))
        >>> ds is None or ds.splits["test"].images.dtype == np.uint8
        True
    """
    size = int(image_size or data.default_image_size)
    root = Path(data.cache_dir).expanduser() if data.cache_dir else default_cache_dir()
    final = root / _cache_key(data, size, {k: v for k, v in (preprocess or {}).items() if v})
    return _open(final) if (final / "meta.json").is_file() else None


def _open(path: Path) -> Dataset:
    meta = json.loads((path / "meta.json").read_text())
    ids = json.loads((path / "ids.json").read_text())
    groups = json.loads((path / "groups.json").read_text()) if (path / "groups.json").is_file() else {}
    splits = {
        s: Split(
            images=np.load(path / f"{s}_images.npy", mmap_mode="r"),
            labels=np.load(path / f"{s}_labels.npy"),
            ids=ids[s],
            groups=groups.get(s),
        )
        for s in SPLITS
    }
    return Dataset(
        task=meta["task"],
        class_names=meta["class_names"],
        channels=meta["channels"],
        image_size=meta["image_size"],
        splits=splits,
        mean=meta["mean"],
        std=meta["std"],
        class_counts=meta["class_counts"],
        class_weights=meta["class_weights"],
        bad_images=meta["bad_images"],
        path=path,
        grouping=meta.get("grouping", {}),
    )


def _build(data: DataConfig, size: int, final: Path, *, preprocess: Mapping[str, Any], verbose: bool) -> None:
    from numpy.lib.format import open_memmap

    t0 = time.perf_counter()
    index = data.source.index()
    channels = data.channels if data.channels != "auto" else _guess_channels(index)
    tmp = final.with_name(f".{final.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    bad: list[list[str]] = [list(b) for b in index.bad]  # found while indexing (e.g. a DICOM without pixels)
    kept: dict[str, np.ndarray] = {}
    try:
        for split in SPLITS:
            sp = index.splits[split]
            n = len(sp.labels)
            out = open_memmap(tmp / f"{split}_images.npy", mode="w+", dtype=np.uint8, shape=(n, size, size, channels))
            ok = np.ones(n, dtype=bool)

            def work(i: int, out=out, ok=ok, sp=sp, split=split) -> None:  # binds this split's arrays
                try:
                    out[i] = prepare_image(sp.read(i), size=size, channels=channels, preprocess=preprocess)
                except Exception as exc:  # noqa: BLE001 - every failure is listed, none crashes training
                    ok[i] = False
                    where = sp.paths[i] if sp.paths else f"{split}[{i}]"
                    bad.append([where, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]])

            if sp.paths:  # file decoding releases the GIL: use threads
                with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
                    list(pool.map(work, range(n), chunksize=64))
            else:
                for i in range(n):
                    work(i)
            del work  # its defaults hold the memmap, which `del out` below must release before the file is rewritten
            out.flush()
            kept[split] = ok
            if not ok.all():
                del out
                if data.on_bad_image == "skip":
                    arr = np.load(tmp / f"{split}_images.npy", mmap_mode="r")[ok]
                    np.save(tmp / f"{split}_images.npy", arr)
            else:
                del out
        if bad:
            listing = "; ".join(f"{p} ({e})" for p, e in sorted(bad))
            if data.on_bad_image == "error":
                raise ConfigError(
                    f"{len(bad)} unreadable image(s): {listing}; fix or remove them, or set data.on_bad_image: skip",
                    field="data.on_bad_image",
                )
            print(f"[medsweep] skipped {len(bad)} unreadable image(s): {listing}", file=sys.stderr)
        ids: dict[str, list[str]] = {}
        groups: dict[str, list[str]] = {}
        counts: dict[str, list[int]] = {}
        for split in SPLITS:
            sp = index.splits[split]
            ok = kept[split]
            labels = sp.labels[ok]
            np.save(tmp / f"{split}_labels.npy", labels)
            ids[split] = [sid for sid, k in zip(sp.ids, ok) if k]
            if sp.groups is not None:
                groups[split] = [str(g) for g, k in zip(sp.groups, ok) if k]
            counts[split] = _class_counts(labels, index)
            if len(labels) == 0:
                raise ConfigError(f"the {split} split holds no images; add images or change the split fractions", field="data")
        mean, std = _channel_stats(np.load(tmp / "train_images.npy", mmap_mode="r"))
        weights = _class_weights(np.load(tmp / "train_labels.npy"), index)
        meta = {
            "version": CACHE_VERSION,
            "task": index.task,
            "class_names": index.class_names,
            "channels": channels,
            "image_size": size,
            "mean": mean,
            "std": std,
            "class_counts": counts,
            "class_weights": weights,
            "bad_images": sorted(bad),
            "grouping": index.grouping,
            "source": data.source.describe(),
            "preprocess": preprocess,
            "build_seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "ids.json").write_text(json.dumps(ids))
        if groups:
            (tmp / "groups.json").write_text(json.dumps(groups))
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if verbose:
        patients = {s: len(set(g)) for s, g in groups.items()} if groups else None
        print(format_class_counts(index.class_names, counts, task=index.task, path=final, patients=patients))


def _class_counts(labels: np.ndarray, index: SourceIndex | Dataset) -> list[int]:
    k = len(index.class_names)
    if index.task == "multi-label":
        return [int(v) for v in (labels == 1).sum(0)]
    return [int(v) for v in np.bincount(labels, minlength=k)]


def _class_weights(labels: np.ndarray, index: SourceIndex | Dataset) -> list[float]:
    """Balanced weights from the training split: sklearn's ``n / (k * n_c)``; for multi-label, neg/pos per label."""
    if index.task == "multi-label":
        known = labels >= 0
        pos = ((labels == 1) & known).sum(0)
        neg = ((labels == 0) & known).sum(0)
        return [float(n / p) if p else 1.0 for n, p in zip(neg, pos)]
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(labels)
    w = compute_class_weight("balanced", classes=present, y=labels)
    out = np.ones(len(index.class_names))
    out[present] = w
    return [float(v) for v in out]


def _channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[list[float], list[float]]:
    c = images.shape[-1]
    s = np.zeros(c)
    s2 = np.zeros(c)
    n = 0
    for i in range(0, len(images), chunk):
        x = np.asarray(images[i : i + chunk], dtype=np.float64) / 255.0
        s += x.sum(axis=(0, 1, 2))
        s2 += (x**2).sum(axis=(0, 1, 2))
        n += x.shape[0] * x.shape[1] * x.shape[2]
    mean = s / max(n, 1)
    std = np.sqrt(np.maximum(s2 / max(n, 1) - mean**2, 1e-12))
    return [float(v) for v in mean], [float(max(v, 1e-3)) for v in std]


def format_class_counts(
    class_names: list[str],
    counts: dict[str, list[int]],
    *,
    task: str,
    path: Path | None = None,
    patients: dict[str, int] | None = None,
) -> str:
    width = max(len(c) for c in [*class_names, "patients"])
    lines = [f"[medsweep] {task} data, {len(class_names)} classes" + (f" (cache {path})" if path else "")]
    lines.append("  " + "class".ljust(width) + "".join(s.rjust(8) for s in SPLITS))
    for i, c in enumerate(class_names):
        lines.append("  " + c.ljust(width) + "".join(str(counts[s][i]).rjust(8) for s in SPLITS))
    if patients:
        lines.append("  " + "patients".ljust(width) + "".join(str(patients.get(s, "?")).rjust(8) for s in SPLITS))
    return "\n".join(lines)


def split_report(task: str, class_names: list[str], splits: Mapping[str, Split], grouping: Mapping[str, Any]) -> dict[str, Any]:
    """The split and balance report (see ``Dataset.split_report``), plain JSON."""
    out: dict[str, Any] = {"task": task, **dict(grouping), "splits": {}}
    for name, sp in splits.items():
        labels = np.asarray(sp.labels)
        n = len(labels)
        if task == "multi-label":
            known = (labels >= 0).sum(0) if n else np.zeros(len(class_names))
            pos = (labels == 1).sum(0) if n else np.zeros(len(class_names))
            prev = [float(p / k) if k else None for p, k in zip(pos, known)]
        else:
            pos = np.bincount(labels.astype(int), minlength=len(class_names)) if n else np.zeros(len(class_names))
            prev = [float(p / n) if n else None for p in pos]
        out["splits"][name] = {
            "images": int(n),
            "patients": len(set(sp.groups)) if sp.groups is not None else None,
            "counts": {c: int(v) for c, v in zip(class_names, pos)},
            "prevalence": {c: (round(v, 4) if v is not None else None) for c, v in zip(class_names, prev)},
        }
    return out
