"""Data sources: where images and labels come from (MedMNIST npz, class folders, a labels CSV).

A source only indexes its data and knows how to decode one image; resizing, channel
conversion and caching are the cache builder's job (``_cache.py``), so every source gets
them the same way.
"""

from __future__ import annotations

import dataclasses
import os
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from numbers import Integral, Real
from typing import Any, Callable, ClassVar, Iterable, Mapping, Protocol

import numpy as np

from ._errors import ConfigError, check_keys, did_you_mean
from ._groups import check_overlap, compile_pattern, group_of, grouped_split
from ._registry import Registry

SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
TASKS = ("binary", "multi-class", "multi-label", "ordinal")


@dataclass
class SplitIndex:
    """One split as the source sees it: ids, labels and a decoder for image ``i``."""

    ids: list[str]
    labels: np.ndarray  # (N,) int64, or (N, L) float32 in {0, 1, -1 (masked)} for multi-label
    read: Callable[[int], np.ndarray]
    paths: list[str] | None = None  # for reporting unreadable files
    groups: list[str] | None = None  # the patient (or volume) of each image, when known


def _windowed(img: np.ndarray, window: Any) -> np.ndarray:
    """A 16-bit (or float) image through the configured window; 8-bit images and min-max are left to the cache."""
    if window is None or window.kind == "minmax" or img.dtype == np.uint8:
        return img
    from ._windows import to_uint8

    return to_uint8(img, window)


@dataclass
class SourceIndex:
    task: str
    class_names: list[str]
    splits: dict[str, SplitIndex]
    # Files found but unreadable while indexing (a DICOM without pixel data...): [path, reason], listed
    # with the images that fail to decode and handled by ``on_bad_image`` the same way.
    bad: list[list[str]] = dataclasses.field(default_factory=list)
    grouping: dict[str, Any] = dataclasses.field(default_factory=dict)  # how the splits were made, for the report


def _source_from_dict(
    cls: type, raw: Mapping[str, Any], *, origin: str, prefix: str, also_valid: Iterable[str] = ()
) -> Any:
    allowed = {f.name for f in dataclasses.fields(cls)}
    check_keys(raw, allowed, origin=origin, prefix=prefix, also_valid=also_valid)
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in raw:
            raise ConfigError(
                f"missing required key {f.name!r} for source {cls.name!r}; add `{f.name}: ...` under `{prefix}`",
                origin=origin,
                field=f"{prefix}.{f.name}",
            )
    obj = cls(**raw)
    obj.validate(origin=origin, prefix=prefix)
    return obj


# --------------------------------------------------------------------------- medmnist


@dataclass(frozen=True)
class MedMNISTSource:
    """A MedMNIST v2 npz file by name and size (``pneumoniamnist``, ``bloodmnist``, ...)."""

    name: ClassVar[str] = "medmnist"

    dataset: str
    size: int = 28
    root: str | None = None  # default: $MEDSWEEP_DATA_DIR, then medmnist's own root (~/.medmnist)
    download: bool = True

    def validate(self, *, origin: str, prefix: str) -> None:
        from medmnist import INFO

        if self.dataset not in INFO:
            raise ConfigError(
                f"unknown MedMNIST dataset {self.dataset!r}{did_you_mean(self.dataset, INFO)}; "
                f"valid: {', '.join(sorted(INFO))}",
                origin=origin,
                field=f"{prefix}.dataset",
            )
        if self.size not in (28, 64, 128, 224):
            raise ConfigError(
                f"MedMNIST size must be one of 28, 64, 128, 224, got {self.size!r}",
                origin=origin,
                field=f"{prefix}.size",
            )

    @property
    def filename(self) -> str:
        return f"{self.dataset}.npz" if self.size == 28 else f"{self.dataset}_{self.size}.npz"

    def describe(self) -> dict[str, Any]:
        path = self.locate(download=False)
        stat = path.stat() if path is not None else None
        return {
            "source": self.name,
            "dataset": self.dataset,
            "size": self.size,
            # A different file at the same name (e.g. a reduced split) must not reuse the cache.
            "file": [str(path), stat.st_size, int(stat.st_mtime)] if stat else None,
        }

    def _roots(self) -> list[Path]:
        if self.root:
            return [Path(self.root).expanduser()]
        from medmnist.info import DEFAULT_ROOT

        roots = []
        if os.environ.get("MEDSWEEP_DATA_DIR"):
            roots.append(Path(os.environ["MEDSWEEP_DATA_DIR"]).expanduser())
        roots.append(Path(DEFAULT_ROOT).expanduser())
        return roots

    def locate(self, *, download: bool) -> Path | None:
        roots = self._roots()
        for root in roots:
            if (root / self.filename).is_file():
                return root / self.filename
        if not download:
            return None
        target = roots[-1]
        try:
            import medmnist
            from medmnist import INFO

            target.mkdir(parents=True, exist_ok=True)
            cls = getattr(medmnist, INFO[self.dataset]["python_class"])
            cls(split="train", root=str(target), size=self.size, download=True)
        except Exception as exc:  # noqa: BLE001 - any failure means "not downloadable here"
            from medmnist import INFO

            url = INFO[self.dataset].get("url" if self.size == 28 else f"url_{self.size}", "")
            raise ConfigError(
                f"{self.filename} not found in {', '.join(str(r) for r in roots)} and the download failed "
                f"({type(exc).__name__}); download it from {url} and put it at {target / self.filename}, "
                f"or set data.root to the folder that holds it",
                origin=None,
                field="data.dataset",
            ) from None
        return target / self.filename

    def index(self) -> SourceIndex:
        from medmnist import INFO

        info = INFO[self.dataset]
        path = self.locate(download=self.download)
        if path is None:
            raise ConfigError(
                f"{self.filename} not found in {', '.join(str(r) for r in self._roots())}; "
                f"put it there or set data.root (download is off)",
                field="data.dataset",
            )
        try:
            # Members of an npz are read into memory whatever mmap_mode says; close the file now,
            # also when it is damaged (np.load leaves it open then).
            with open(path, "rb") as fh, np.load(fh) as npz:
                arrays = {k: npz[k] for k in npz.files}
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"cannot read {path} ({type(exc).__name__}: {exc}); the file is damaged: delete it and download it again",
                field="data.dataset",
            ) from None
        missing = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels") if f"{s}_{k}" not in arrays]
        if missing:
            raise ConfigError(
                f"{path} lacks the arrays {', '.join(missing)}; it is not a MedMNIST npz file",
                field="data.dataset",
            )
        task = {
            "binary-class": "binary",
            "multi-class": "multi-class",
            "multi-label, binary-class": "multi-label",
            "ordinal-regression": "ordinal",
        }[info["task"]]
        class_names = [info["label"][str(i)] for i in range(len(info["label"]))]
        splits = {}
        for split in SPLITS:
            images = arrays[f"{split}_images"]
            labels = np.asarray(arrays[f"{split}_labels"])
            if task == "multi-label":
                labels = labels.astype(np.float32)
            else:
                labels = labels.reshape(-1).astype(np.int64)
                bad = (labels < 0) | (labels >= len(class_names))
                if bad.any():
                    raise ConfigError(
                        f"{path}: {split}_labels holds values outside 0..{len(class_names) - 1}; the file is not {self.dataset}",
                        field="data.dataset",
                    )
            splits[split] = SplitIndex(
                ids=[f"{split}_{i}" for i in range(len(labels))],
                labels=labels,
                read=(lambda i, _a=images: np.asarray(_a[i])),
            )
        return SourceIndex(task=task, class_names=class_names, splits=splits)


# --------------------------------------------------------------------------- image files


def read_image_file(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file to an array: (H, W) grey or (H, W, 3) RGB, uint8 or uint16.

    16-bit greyscale (common for X-ray PNGs) keeps its depth here; the cache builder
    windows it to 8 bits.
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # force a full decode now, so truncated files fail here and not mid-epoch
        if img.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(img, dtype=np.int64 if img.mode == "I" else np.uint16)
            return arr.astype(np.uint16) if arr.max(initial=0) <= 65535 and arr.min(initial=0) >= 0 else arr
        if img.mode in ("L", "1"):
            return np.asarray(img.convert("L"))
        if img.mode == "LA":
            return np.asarray(img.convert("L"))
        return np.asarray(img.convert("RGB"))


def tree_fingerprint(root: Path) -> str | None:
    """A digest of the image files' names, sizes and mtimes under ``root``.

    Part of the cache key, so adding, removing or replacing an image rebuilds the cache; listing
    is cheap next to decoding.
    """
    import hashlib

    if not root.is_dir():
        return None
    h = hashlib.sha1()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name.lower().endswith(IMAGE_EXTENSIONS):
                st = os.stat(os.path.join(dirpath, name))
                h.update(f"{os.path.relpath(dirpath, root)}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _files_digest(files: Iterable[Path]) -> str:
    """A digest of the files' paths, sizes and mtimes (part of a cache key, like ``tree_fingerprint``)."""
    import hashlib

    h = hashlib.sha1()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


@dataclass(frozen=True)
class FolderSource:
    """``root/{train,val,test}/<class>/`` or a single ``root/<class>/`` tree split by stratified fractions."""

    name: ClassVar[str] = "folder"

    root: str
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    group_pattern: str | None = None  # regex on the file's path under root; its first group names the patient
    allow_group_overlap: bool = False  # accept a patient in two given (pre-split) splits
    window: Any = "minmax"  # 16-bit images: minmax, percentile, {percentile: [lo, hi]}, {center, width}

    def validate(self, *, origin: str, prefix: str) -> None:
        _validate_common(self, origin=origin, prefix=prefix)
        for key in ("val_fraction", "test_fraction"):
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0 < value < 1:
                raise ConfigError(
                    f"`{key}` must be in (0, 1), got {value!r}; use e.g. 0.15",
                    origin=origin,
                    field=f"{prefix}.{key}",
                )
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError(
                f"val_fraction + test_fraction must be below 1, got {self.val_fraction + self.test_fraction:.3f}; lower one of them",
                origin=origin,
                field=f"{prefix}.val_fraction",
            )

    def describe(self) -> dict[str, Any]:
        root = Path(self.root).expanduser().resolve()
        return {**dataclasses.asdict(self), "source": self.name, "root": str(root), "files": tree_fingerprint(root)}

    def index(self) -> SourceIndex:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise ConfigError(
                f"data folder {str(root)!r} does not exist; set data.root to a folder holding one sub-folder per class "
                "(or train/, val/, test/ each with one sub-folder per class)",
                field="data.root",
            )
        presplit = all((root / s).is_dir() for s in SPLITS)
        if presplit:
            class_names = sorted(
                {p.name for s in SPLITS for p in (root / s).iterdir() if p.is_dir() and not p.name.startswith(".")}
            )
            per_split = {}
            for split in SPLITS:
                files, labels = [], []
                for ci, cname in enumerate(class_names):
                    cdir = root / split / cname
                    if cdir.is_dir():
                        imgs = _list_images(cdir)
                        files += imgs
                        labels += [ci] * len(imgs)
                per_split[split] = (files, np.asarray(labels, dtype=np.int64))
            empty = [c for c in class_names if not any((root / s / c).is_dir() and _list_images(root / s / c) for s in ("train",))]
            self._check_classes(root, class_names, empty, where=f"{root}/train")
        else:
            class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
            class_names = [p.name for p in class_dirs]
            files_by_class = {p.name: _list_images(p) for p in class_dirs}
            empty = [c for c, fs in files_by_class.items() if not fs]
            self._check_classes(root, class_names, empty, where=str(root))
            files = [f for c in class_names for f in files_by_class[c]]
            labels = np.asarray([i for i, c in enumerate(class_names) for _ in files_by_class[c]], dtype=np.int64)
            if self.group_pattern:
                groups = self._groups(root, files)
                parts = grouped_split(
                    labels, groups, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed,
                    where=str(root), field="data.group_pattern",
                )
                per_split = {s: ([files[i] for i in ix], labels[ix]) for s, ix in parts.items()}
            else:
                per_split = self._stratified_split(root, files, labels, class_names)
        window = _window_of(self)
        splits = {}
        for split, (files, labels) in per_split.items():
            paths = [str(f) for f in files]
            splits[split] = SplitIndex(
                ids=[str(Path(p).relative_to(root)) for p in paths],
                labels=labels,
                read=(lambda i, _p=paths: _windowed(read_image_file(_p[i]), window)),
                paths=paths,
                groups=self._groups(root, files) if self.group_pattern else None,
            )
        if presplit and self.group_pattern:
            check_overlap(
                {s: sp.groups for s, sp in splits.items()}, {s: sp.paths for s, sp in splits.items()},
                allow=self.allow_group_overlap, where=str(root), field="data.group_pattern",
            )
        task = "binary" if len(class_names) == 2 else "multi-class"
        grouping = _grouping("given (train/, val/, test/ folders)" if presplit else "drawn", self.group_pattern and "group_pattern")
        return SourceIndex(task=task, class_names=class_names, splits=splits, grouping=grouping)

    def _groups(self, root: Path, files: list[Path]) -> list[str]:
        pattern = compile_pattern(self.group_pattern, origin="config", field="data.group_pattern")
        return [group_of(str(Path(f).relative_to(root)), pattern, where=str(root), field="data.group_pattern") for f in files]

    @staticmethod
    def _check_classes(root: Path, class_names: list[str], empty: list[str], *, where: str) -> None:
        if empty:
            raise ConfigError(
                f"class folder(s) {', '.join(empty)} in {where} hold no images ({', '.join(IMAGE_EXTENSIONS)}); "
                "add images or remove the empty folders",
                field="data.root",
            )
        if len(class_names) < 2:
            found = f"only {class_names[0]!r}" if class_names else "none"
            raise ConfigError(
                f"{root} must hold at least 2 class folders, found {found}; put each class's images in its own sub-folder",
                field="data.root",
            )

    def _stratified_split(self, root: Path, files: list[Path], labels: np.ndarray, class_names: list[str]):
        from sklearn.model_selection import train_test_split

        counts = np.bincount(labels, minlength=len(class_names))
        if counts.min() < 3:
            small = [class_names[i] for i in np.flatnonzero(counts < 3)]
            raise ConfigError(
                f"class(es) {', '.join(small)} in {root} have fewer than 3 images, too few to split into train/val/test; "
                "add images or provide train/, val/ and test/ folders",
                field="data.root",
            )
        idx = np.arange(len(files))
        held = self.val_fraction + self.test_fraction
        try:
            train_idx, rest_idx = train_test_split(idx, test_size=held, stratify=labels, random_state=self.seed)
            val_idx, test_idx = train_test_split(
                rest_idx, test_size=self.test_fraction / held, stratify=labels[rest_idx], random_state=self.seed
            )
        except ValueError as exc:  # e.g. 3 images per class: stratifying the held-out part leaves 1 per class
            raise ConfigError(
                f"{root}: too few images per class ({', '.join(f'{c}: {n}' for c, n in zip(class_names, counts))}) "
                f"to put every class in train, val and test with val_fraction={self.val_fraction} and "
                f"test_fraction={self.test_fraction} ({exc}); add images, raise the fractions, "
                "or provide train/, val/ and test/ folders",
                field="data.root",
            ) from None
        return {
            s: ([files[i] for i in sorted(ix)], labels[sorted(ix)])
            for s, ix in (("train", train_idx), ("val", val_idx), ("test", test_idx))
        }


def _validate_common(src: Any, *, origin: str, prefix: str) -> None:
    """Group and window options shared by the sources: a bad regex or window fails at load time."""
    compile_pattern(getattr(src, "group_pattern", None), origin=origin, field=f"{prefix}.group_pattern")
    if not isinstance(getattr(src, "allow_group_overlap", False), bool):
        raise ConfigError(
            f"must be true or false, got {src.allow_group_overlap!r}", origin=origin, field=f"{prefix}.allow_group_overlap"
        )
    if hasattr(src, "window"):
        from ._windows import parse_windows

        parse_windows(src.window, origin=origin, field=f"{prefix}.window", allow_file=src.name == "dicom")


def _window_of(src: Any) -> Any:
    from ._windows import parse_window

    return parse_window(src.window, origin="config", field="data.window")


def _grouping(how: str, by: str | None) -> dict[str, Any]:
    return {"split": how, "grouped_by": by or None}


# --------------------------------------------------------------------------- csv


@dataclass(frozen=True)
class CSVSource:
    """A labels CSV and an image folder; one label column (classes) or several (multi-label).

    Uncertain multi-label values (-1) follow ``uncertain``: ``ones``, ``zeros`` or ``ignore``
    (masked out of loss and metrics); blanks follow ``blank`` the same way.
    """

    name: ClassVar[str] = "csv"

    labels_csv: str
    img_dir: str
    id_column: str = "id"
    label_columns: tuple[str, ...] | list[str] | str = "label"
    extension: str | None = None  # e.g. ".png" when ids carry none; tried automatically when missing
    split_column: str | None = None  # a column with train/val/test; else stratified fractions
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    uncertain: str = "ignore"
    blank: str = "zeros"
    group_column: str | None = None  # the patient id column: a patient's images stay in one split
    group_pattern: str | None = None  # regex on the group column (else the id); its first group names the patient
    allow_group_overlap: bool = False  # accept a patient in two splits of split_column
    window: Any = "minmax"  # 16-bit images: minmax, percentile, {percentile: [lo, hi]}, {center, width}

    @property
    def columns(self) -> list[str]:
        return [self.label_columns] if isinstance(self.label_columns, str) else list(self.label_columns)

    def validate(self, *, origin: str, prefix: str) -> None:
        FolderSource.validate(self, origin=origin, prefix=prefix)  # same fraction, group and window rules
        for key in ("uncertain", "blank"):
            value = getattr(self, key)
            if value not in ("ones", "zeros", "ignore"):
                raise ConfigError(
                    f"`{key}` must be one of ones, zeros, ignore, got {value!r}",
                    origin=origin,
                    field=f"{prefix}.{key}",
                )
        if not self.columns:
            raise ConfigError("label_columns is empty; name at least one column", origin=origin, field=f"{prefix}.label_columns")

    def describe(self) -> dict[str, Any]:
        csv = Path(self.labels_csv).expanduser()
        stat = csv.stat() if csv.is_file() else None
        d = dataclasses.asdict(self)
        d["label_columns"] = self.columns
        return {
            **d,
            "source": self.name,
            "csv_stat": [stat.st_size, int(stat.st_mtime)] if stat else None,
            "files": tree_fingerprint(Path(self.img_dir).expanduser()),
        }

    def _resolve(self, img_dir: Path, image_id: str) -> Path | None:
        candidate = img_dir / image_id
        if candidate.suffix.lower() in IMAGE_EXTENSIONS and candidate.is_file():
            return candidate
        exts = [self.extension] if self.extension else []
        for ext in exts + [e for e in IMAGE_EXTENSIONS if e != self.extension]:
            ext = ext if ext.startswith(".") else "." + ext
            p = img_dir / f"{image_id}{ext}"
            if p.is_file():
                return p
        return None

    def index(self) -> SourceIndex:
        import pandas as pd

        csv = Path(self.labels_csv).expanduser()
        img_dir = Path(self.img_dir).expanduser()
        if not csv.is_file():
            raise ConfigError(f"labels CSV {str(csv)!r} does not exist; set data.labels_csv to the file", field="data.labels_csv")
        if not img_dir.is_dir():
            raise ConfigError(f"image folder {str(img_dir)!r} does not exist; set data.img_dir", field="data.img_dir")
        try:
            df = pd.read_csv(csv, dtype={self.id_column: str})
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{csv}: cannot parse the CSV ({type(exc).__name__}: {exc})", field="data.labels_csv") from None
        for key, cols in (("id_column", [self.id_column]), ("label_columns", self.columns)):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise ConfigError(
                    f"{csv} has no column(s) {', '.join(map(repr, missing))}{did_you_mean(missing[0], df.columns)}; "
                    f"columns are {', '.join(map(str, df.columns))}: set data.{key}",
                    field=f"data.{key}",
                )
        if self.split_column and self.split_column not in df.columns:
            raise ConfigError(f"{csv} has no column {self.split_column!r}; set data.split_column", field="data.split_column")
        groups = groups_from_frame(df, self, csv)
        blank = df[self.id_column].isna().to_numpy()
        if blank.any():  # pandas 3 keeps a blank as NaN through astype(str): not an id to look up
            rows = (np.flatnonzero(blank)[:5] + 2).tolist()
            raise ConfigError(
                f"{csv}: column {self.id_column!r} is blank on line(s) {rows}; fill or drop those rows", field="data.id_column"
            )
        ids = df[self.id_column].astype(str).tolist()
        paths = [self._resolve(img_dir, i) for i in ids]
        unknown = [i for i, p in zip(ids, paths) if p is None]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f" and {len(unknown) - 5} more" if len(unknown) > 5 else "")
            raise ConfigError(
                f"{csv}: {len(unknown)} id(s) match no image in {img_dir}: {shown}; fix the ids, data.img_dir or data.extension",
                field=f"data.{'id_column'}",
            )
        if len(self.columns) == 1:
            task, class_names, labels, strat = self._single_label(df, csv)
        else:
            task, class_names, labels, strat = self._multi_label(df, csv)
        if self.split_column:
            split_of = df[self.split_column].astype(str).str.lower().to_numpy()
            bad = sorted(set(split_of) - set(SPLITS))
            if bad:
                raise ConfigError(
                    f"{csv}: column {self.split_column!r} holds {', '.join(bad[:5])}; allowed values are train, val, test",
                    field="data.split_column",
                )
            parts = {s: np.flatnonzero(split_of == s) for s in SPLITS}
            if groups is not None:
                check_overlap(
                    {s: [groups[i] for i in ix] for s, ix in parts.items()},
                    {s: [ids[i] for i in ix] for s, ix in parts.items()},
                    allow=self.allow_group_overlap, where=str(csv), field="data.split_column",
                )
        elif groups is not None:
            parts = grouped_split(
                strat, groups, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed,
                multilabel=labels if task == "multi-label" else None, where=str(csv),
                field=f"data.{'group_column' if self.group_column else 'group_pattern'}",
            )
        else:
            from sklearn.model_selection import train_test_split

            idx = np.arange(len(df))
            held = self.val_fraction + self.test_fraction
            try:
                tr, rest = train_test_split(idx, test_size=held, stratify=strat, random_state=self.seed)
                va, te = train_test_split(rest, test_size=self.test_fraction / held, stratify=strat[rest], random_state=self.seed)
            except ValueError:  # a class too small to stratify: fall back to a plain random split
                try:
                    tr, rest = train_test_split(idx, test_size=held, random_state=self.seed)
                    va, te = train_test_split(rest, test_size=self.test_fraction / held, random_state=self.seed)
                except ValueError:
                    raise ConfigError(
                        f"{csv} has {len(df)} row(s), too few to split into train, val and test "
                        f"(val_fraction {self.val_fraction:g}, test_fraction {self.test_fraction:g}); add rows or set data.split_column",
                        field="data.labels_csv",
                    ) from None
            parts = {"train": np.sort(tr), "val": np.sort(va), "test": np.sort(te)}
        window = _window_of(self)
        splits = {}
        for split, ix in parts.items():
            sp = [str(paths[i]) for i in ix]
            splits[split] = SplitIndex(
                ids=[ids[i] for i in ix], labels=labels[ix], read=(lambda i, _p=sp: _windowed(read_image_file(_p[i]), window)),
                paths=sp, groups=[groups[i] for i in ix] if groups is not None else None,
            )
        by = "group_column" if self.group_column else ("group_pattern" if self.group_pattern else None)
        grouping = _grouping("given (split_column)" if self.split_column else "drawn", by)
        return SourceIndex(task=task, class_names=class_names, splits=splits, grouping=grouping)

    def _single_label(self, df, csv):
        import pandas as pd

        col = df[self.columns[0]]
        if col.isna().any():
            rows = (col[col.isna()].index[:5] + 2).tolist()
            raise ConfigError(f"{csv}: column {self.columns[0]!r} is blank on line(s) {rows}; fill or drop those rows", field="data.label_columns")
        # pandas' own check: np.issubdtype raises on pandas 3's StringDtype (class-name labels).
        if pd.api.types.is_integer_dtype(col.dtype):
            if col.min() < 0:
                raise ConfigError(f"{csv}: column {self.columns[0]!r} holds negative labels; use 0..K-1 or class names", field="data.label_columns")
            # The values present are the classes: labels {1, 2} make 2 classes, not a phantom empty "0".
            values = np.unique(col.to_numpy(dtype=np.int64))
            class_names = [str(v) for v in values]
            labels = np.searchsorted(values, col.to_numpy(dtype=np.int64)).astype(np.int64)
        else:
            class_names = sorted(col.astype(str).unique().tolist())
            lookup = {c: i for i, c in enumerate(class_names)}
            labels = np.asarray([lookup[v] for v in col.astype(str)], dtype=np.int64)
        counts = np.bincount(labels, minlength=len(class_names))
        if (counts > 0).sum() < 2:
            raise ConfigError(f"{csv}: column {self.columns[0]!r} holds a single class; a classifier needs at least 2", field="data.label_columns")
        return ("binary" if len(class_names) == 2 else "multi-class"), class_names, labels, labels

    def _multi_label(self, df, csv):
        import pandas as pd

        raw = df[self.columns]
        numeric = raw.apply(lambda c: pd.to_numeric(c, errors="coerce"))
        values = numeric.to_numpy(dtype=np.float64)
        # A value that is present but not a number is as wrong as a number outside {1, 0, -1}.
        ok = (np.isnan(values) & raw.isna().to_numpy()) | np.isin(values, (0.0, 1.0, -1.0))
        if not ok.all():
            r, c = np.argwhere(~ok)[0]
            raise ConfigError(
                f"{csv}: column {self.columns[c]!r} line {r + 2} holds {str(raw.iloc[r, c])!r}; "
                "multi-label columns may hold only 1, 0, -1 (uncertain) or blank",
                field="data.label_columns",
            )
        fill = {"ones": 1.0, "zeros": 0.0, "ignore": -1.0}
        labels = values.copy()
        labels[values == -1.0] = fill[self.uncertain]
        labels[np.isnan(values)] = fill[self.blank]
        # Stratify on the rarest positive label of each row, a cheap proxy that keeps rare findings in every split.
        pos = labels == 1
        freq = pos.sum(0)
        strat = np.where(pos.any(1), np.argmin(np.where(pos, freq, np.inf), axis=1), -1)
        return "multi-label", list(self.columns), labels.astype(np.float32), strat


def groups_from_frame(df: Any, src: Any, csv: Path) -> list[str] | None:
    """Each row's patient: ``group_column`` (optionally through ``group_pattern``), else ``group_pattern`` on the id."""
    column = src.group_column
    if column is not None and column not in df.columns:
        raise ConfigError(
            f"{csv} has no column {column!r}{did_you_mean(column, [str(c) for c in df.columns])}; "
            f"columns are {', '.join(map(str, df.columns))}: set data.group_column to the patient id column",
            field="data.group_column",
        )
    if column is None and not src.group_pattern:
        return None
    values = df[column if column is not None else src.id_column]
    field = "data.group_column" if column is not None else "data.group_pattern"
    if values.isna().any():
        rows = (np.flatnonzero(values.isna().to_numpy())[:5] + 2).tolist()
        raise ConfigError(f"{csv}: column {values.name!r} is blank on line(s) {rows}; every row needs its patient", field=field)
    texts = values.astype(str).tolist()
    if not src.group_pattern:
        return texts
    pattern = compile_pattern(src.group_pattern, origin="config", field="data.group_pattern")
    return [group_of(t, pattern, where=f"{csv} column {values.name!r}", field="data.group_pattern") for t in texts]


from ._dicom import DicomSource  # noqa: E402 - they build on the helpers above
from ._volumes import NiftiSource  # noqa: E402

class Source(Protocol):
    """What every data source is: a frozen dataclass of its YAML keys, registered under ``name``."""

    name: ClassVar[str]

    def validate(self, *, origin: str, prefix: str) -> None:
        """Check the keys against the world (files exist, names are known); a ``ConfigError`` if not."""

    def describe(self) -> dict[str, Any]:
        """What identifies the data (for the cache key)."""

    def index(self) -> SourceIndex:
        """The task, class names and each split's ids, labels and image decoder."""


# Constraints from the dataclass annotations: what a YAML value of each field may be. Meaning (a file
# exists, a name is known) is each source's ``validate``.
_ANNOTATION_CONSTRAINTS: dict[str, list[Any]] = {
    "str": [str], "int": [Integral], "float": [Real], "bool": [bool], "None": [None],
    "list[str]": [list], "tuple[str, ...]": [tuple], "Mapping[Any, str]": [abc.Mapping], "Any": [object],
}
SOURCE = Registry("data source", field="source")
SOURCES = SOURCE  # the names, as before
register_source = SOURCE.register


def _field_constraints(cls: type) -> dict[str, list[Any]]:
    out = {}
    for f in dataclasses.fields(cls):
        out[f.name] = [c for part in str(f.type).split(" | ") for c in _ANNOTATION_CONSTRAINTS.get(part.strip(), [object])]
    return out


def _add_source(cls: type) -> type:
    """Register a source dataclass: its fields are its options, its field defaults theirs."""

    def build(**options: Any) -> Any:
        return _source_from_dict(cls, options, origin="config", prefix="data")

    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    SOURCE.add(cls.name, build, options=_field_constraints(cls), defaults=defaults, cls=cls)
    return cls


for _cls in (MedMNISTSource, FolderSource, CSVSource, DicomSource, NiftiSource):
    _add_source(_cls)


def create_source(
    raw: Mapping[str, Any], *, origin: str = "config", prefix: str = "data", also_valid: Iterable[str] = ()
) -> Any:
    """Build a source from the ``data`` mapping of a space file (``source:`` picks the kind).

    ``also_valid`` names keys the caller handles itself (``DataConfig``'s ``cache_dir``, ...): they are
    offered as suggestions for unknown keys but are not accepted here.

    Example:
        >>> create_source({"source": "medmnist", "dataset": "pneumoniamnist"}).size
        28
    """
    raw = dict(raw)
    kind = raw.pop("source", None)
    entry = SOURCE.get(kind, origin=origin, field=f"{prefix}.source")
    return _source_from_dict(entry.meta["cls"], raw, origin=origin, prefix=prefix, also_valid=("source", *also_valid))
