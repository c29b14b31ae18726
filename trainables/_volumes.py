"""CT (or MR) volumes to 2D slices: NIfTI files (nibabel) or DICOM series folders.

Each volume is cut along an axis (every ``stride``-th slice, or ``n_slices`` evenly spaced);
a slice's channels are several HU windows or its neighbours (2.5D). Labels are per volume (a
CSV) or per slice from a label map on the same grid: which structures the slice shows, a
multi-label task. A volume's slices are one group, so they never straddle two splits.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np

from ._errors import ConfigError
from ._groups import grouped_split

AXES = {"sagittal": 0, "coronal": 1, "axial": 2}
_NIFTI = (".nii", ".nii.gz")


def _is_nifti(p: Path) -> bool:
    return p.name.lower().endswith(_NIFTI)


def volume_name(p: Path) -> str:
    name = p.name
    for ext in (".nii.gz", ".nii"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return name


def load_volume(path: Path) -> tuple[np.ndarray, bool]:
    """(X, Y, Z) float values and whether slices need turning for display.

    NIfTI is reoriented to the closest canonical (RAS+) orientation, so axis 2 is axial; a folder
    is one DICOM series, slices in ``ImagePositionPatient`` order, in HU (modality LUT).
    """
    if _is_nifti(path):
        import nibabel as nib

        img = nib.as_closest_canonical(nib.load(str(path)))
        return np.asarray(img.dataobj, dtype=np.float64), True
    from ._dicom import dicom_values, read_dicom, scan_dicom

    records, bad = scan_dicom(path)
    if bad:
        raise ValueError(f"{len(bad)} unreadable file(s) in the series, e.g. {bad[0][0]} ({bad[0][1]})")
    if not records:
        raise ValueError("no DICOM image in the folder")
    series = {r["series_instance_uid"] for r in records}
    if len(series) > 1:
        raise ValueError(f"{len(series)} series in one folder; put each series in its own folder")
    records.sort(key=lambda r: (r["position"], r["path"]))
    return np.stack([dicom_values(read_dicom(r["path"])) for r in records], axis=-1), False


def slice_positions(depth: int, *, stride: int, n_slices: int | None) -> list[int]:
    """The slices taken from a volume of ``depth``: every ``stride``-th, or ``n_slices`` evenly spaced."""
    if n_slices:
        return sorted(set(np.linspace(0, depth - 1, num=min(n_slices, depth)).round().astype(int).tolist()))
    return list(range(0, depth, stride))


def slice_image(volume: np.ndarray, k: int, *, axis: int, context: int, windows: tuple, rotate: bool) -> np.ndarray:
    """Slice ``k`` as uint8 (H, W) or (H, W, C): each neighbour ``k-context..k+context`` (edges repeated) in each window."""
    from ._windows import to_uint8

    depth = volume.shape[axis]
    chans = []
    for w in windows:
        for j in range(k - context, k + context + 1):
            sl = np.take(volume, min(max(j, 0), depth - 1), axis=axis)
            chans.append(to_uint8(np.rot90(sl) if rotate else sl, w))
    return chans[0] if len(chans) == 1 else np.ascontiguousarray(np.stack(chans, axis=-1))


@dataclass(frozen=True)
class NiftiSource:
    """CT volumes as 2D slices: NIfTI files or DICOM series folders, labels per volume or from label maps.

    Example (space file)::

        data:
          source: nifti
          volumes: [/data/ct/case1.nii.gz]
          label_maps: [/data/ct/case1_seg.nii.gz]   # per-slice labels: which label ids a slice shows
          axis: axial
          window: [lung, mediastinum, bone]          # 3 channels
          min_label_slices: 3
    """

    name: ClassVar[str] = "nifti"

    volumes: str | list[str] | tuple[str, ...]  # files/folders, or one folder holding .nii(.gz) files
    label_maps: str | list[str] | tuple[str, ...] | None = None  # one per volume, same grid
    label_names: Mapping[Any, str] | None = None  # label id -> class name; default label_<id>
    labels_csv: str | None = None  # per-volume labels, keyed by the volume's name (file name without .nii.gz)
    id_column: str = "id"
    label_columns: tuple[str, ...] | list[str] | str = "label"
    uncertain: str = "ignore"
    blank: str = "zeros"
    axis: int | str = "axial"
    stride: int = 1
    n_slices: int | None = None
    context: int = 0  # 2.5D: this many neighbours on each side as extra channels
    window: Any = "mediastinum"
    min_label_slices: int = 3  # label-map classes shown in fewer slices are dropped
    group_slab: int | None = None  # one volume only: groups of this many consecutive slices instead of whole volumes
    pool: str | None = None  # mean | max: also score predictions pooled per volume (needs labels_csv)
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0

    @property
    def columns(self) -> list[str]:
        return [self.label_columns] if isinstance(self.label_columns, str) else list(self.label_columns)

    @property
    def axis_index(self) -> int:
        return AXES.get(self.axis, self.axis) if isinstance(self.axis, str) else int(self.axis)

    def _list(self, value: Any) -> list[Path]:
        items = [value] if isinstance(value, str) else list(value or [])
        out: list[Path] = []
        for item in items:
            p = Path(item).expanduser()
            if p.is_dir() and any(_is_nifti(c) for c in p.iterdir()):
                out += sorted(c for c in p.iterdir() if _is_nifti(c))
            else:
                out.append(p)
        return out

    def validate(self, *, origin: str, prefix: str) -> None:
        from ._sources import FolderSource
        from ._windows import parse_windows

        FolderSource.validate(self, origin=origin, prefix=prefix)  # fractions
        if not (isinstance(self.axis, int) and not isinstance(self.axis, bool) and self.axis in (0, 1, 2)) and self.axis not in AXES:
            raise ConfigError(
                f"unknown axis {self.axis!r}; valid: 0, 1, 2 or {', '.join(AXES)} (NIfTI is read as RAS: 2 = axial)",
                origin=origin, field=f"{prefix}.axis",
            )
        for key, low in (("stride", 1), ("n_slices", 1), ("context", 0), ("min_label_slices", 1), ("group_slab", 1)):
            v = getattr(self, key)
            if v is None and key in ("n_slices", "group_slab"):
                continue
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ConfigError(f"must be an integer >= {low}, got {v!r}", origin=origin, field=f"{prefix}.{key}")
        n = len(parse_windows(self.window, origin=origin, field=f"{prefix}.window")) * (2 * self.context + 1)
        if n not in (1, 3):
            raise ConfigError(
                f"windows x (2 * context + 1) slices make {n} channels; use 1 or 3 (e.g. 3 windows, or 1 window with context: 1)",
                origin=origin, field=f"{prefix}.window",
            )
        from ._groups import POOLS

        if self.pool is not None and (self.pool not in POOLS or self.labels_csv is None or self.group_slab):
            raise ConfigError(
                f"pool must be one of {', '.join(POOLS)} with per-volume labels (labels_csv, no group_slab), got {self.pool!r}; "
                "per-slice labels have no volume to pool to",
                origin=origin, field=f"{prefix}.pool",
            )
        if (self.label_maps is None) == (self.labels_csv is None):
            raise ConfigError(
                "give exactly one of label_maps (per-slice labels) and labels_csv (per-volume labels)",
                origin=origin, field=f"{prefix}.label_maps",
            )

    def describe(self) -> dict[str, Any]:
        from ._sources import _files_digest

        d = dataclasses.asdict(self)
        files = [p for p in self._list(self.volumes) + self._list(self.label_maps) + ([Path(self.labels_csv)] if self.labels_csv else [])]
        listed = []
        for p in files:
            listed += sorted(c for c in p.rglob("*") if c.is_file()) if p.is_dir() else ([p] if p.exists() else [])
        d["label_names"] = dict(self.label_names) if self.label_names else None
        return {**d, "source": self.name, "files": _files_digest(listed)}

    def _check_shape(self, path: Path, shape: tuple[int, ...]) -> None:
        if len(shape) != 3:
            raise ConfigError(
                f"{path} has shape {shape}, not a 3-D volume; give 3-D volumes (one channel, one time point)",
                field="data.volumes",
            )

    def index(self):
        from ._sources import SourceIndex, SplitIndex, _grouping
        from ._windows import parse_windows

        vols = self._list(self.volumes)
        if not vols:
            raise ConfigError("no volume given; set data.volumes to NIfTI files or DICOM series folders", field="data.volumes")
        for p in vols:
            if not p.exists():
                raise ConfigError(f"volume {str(p)!r} does not exist; fix data.volumes", field="data.volumes")
        axis = self.axis_index
        depth: dict[Path, int] = {}
        shapes: dict[Path, tuple[int, ...]] = {}
        for p in vols:
            shape = _header_shape(p)
            self._check_shape(p, shape)
            shapes[p] = shape
            depth[p] = shape[axis]
        rows: list[tuple[Path, int]] = [
            (p, k) for p in vols for k in slice_positions(depth[p], stride=self.stride, n_slices=self.n_slices)
        ]
        if self.label_maps is not None:
            task, class_names, labels = self._labels_from_maps(vols, shapes, rows, axis)
        else:
            task, class_names, labels = self._labels_from_csv(vols, rows)
        names = {p: volume_name(p) for p in vols}
        letter = "xyz"[axis]
        ids = [f"{names[p]}:{letter}{k:04d}" for p, k in rows]
        if self.group_slab:
            groups = [f"{names[p]}:slab{k // self.group_slab}" for p, k in rows]
        else:
            groups = [names[p] for p, _ in rows]
        if len(set(groups)) < 3:
            raise ConfigError(
                f"{len(set(groups))} volume(s)/slab(s) cannot be put in train, val and test with each volume in one split; "
                "add volumes, or (one volume) set data.group_slab to a slab size (consecutive slices that stay together)",
                field="data.group_slab" if not self.group_slab else "data.group_slab",
            )
        strat = labels if task != "multi-label" else np.zeros(len(rows), dtype=int)
        parts = grouped_split(
            strat, groups, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed,
            multilabel=labels if task == "multi-label" else None, where=", ".join(map(str, vols[:3])), field="data.volumes",
        )
        windows = parse_windows(self.window, origin="config", field="data.window")
        cache: dict[Path, tuple[np.ndarray, bool]] = {}
        lock = threading.Lock()

        def volume(p: Path) -> tuple[np.ndarray, bool]:
            with lock:  # slices of one volume are decoded by several threads: load it once
                if p not in cache:
                    cache[p] = load_volume(p)
                return cache[p]

        def read(row: tuple[Path, int]) -> np.ndarray:
            vol, rotate = volume(row[0])
            return slice_image(vol, row[1], axis=axis, context=self.context, windows=windows, rotate=rotate)

        splits = {}
        for split, ix in parts.items():
            sel = [rows[i] for i in ix]
            splits[split] = SplitIndex(
                ids=[ids[i] for i in ix],
                labels=labels[ix],
                read=(lambda i, _s=sel: read(_s[i])),
                paths=[f"{p}[{letter}={k}]" for p, k in sel],
                groups=[groups[i] for i in ix],
            )
        grouping = _grouping("drawn", "slab of consecutive slices" if self.group_slab else "volume")
        if self.pool:
            grouping["pool"] = self.pool
        return SourceIndex(task=task, class_names=class_names, splits=splits, grouping=grouping)

    def _labels_from_maps(self, vols, shapes, rows, axis):
        maps = self._list(self.label_maps)
        if len(maps) != len(vols):
            raise ConfigError(
                f"{len(maps)} label map(s) for {len(vols)} volume(s); give one label map per volume, in the same order",
                field="data.label_maps",
            )
        present: dict[Path, dict[int, np.ndarray]] = {}
        all_ids: set[int] = set()
        for v, m in zip(vols, maps):
            if not m.exists():
                raise ConfigError(f"label map {str(m)!r} does not exist; fix data.label_maps", field="data.label_maps")
            seg, _ = load_volume(m)
            if seg.shape != shapes[v]:
                raise ConfigError(
                    f"label map {m} has shape {seg.shape} but volume {v} has {shapes[v]}; a label map must lie on its volume's grid",
                    field="data.label_maps",
                )
            seg = np.rint(seg).astype(np.int64)
            ids = [int(i) for i in np.unique(seg) if i > 0]
            all_ids |= set(ids)
            other = tuple(a for a in range(3) if a != axis)
            present[v] = {i: (seg == i).any(axis=other) for i in ids}  # (depth,) bool per label id
        label_ids = sorted(all_ids)
        counts = {i: sum(int(present[p][i][k]) for p, k in rows if i in present[p]) for i in label_ids}
        kept = [i for i in label_ids if counts[i] >= self.min_label_slices]
        if not kept:
            raise ConfigError(
                f"no label shows in {self.min_label_slices} or more of the {len(rows)} slices; lower data.min_label_slices",
                field="data.min_label_slices",
            )
        labels = np.zeros((len(rows), len(kept)), dtype=np.float32)
        for r, (p, k) in enumerate(rows):
            for j, i in enumerate(kept):
                if i in present[p]:
                    labels[r, j] = float(present[p][i][k])
        names_map = {int(k): str(v) for k, v in (self.label_names or {}).items()}
        class_names = [names_map.get(i, f"label_{i}") for i in kept]
        return "multi-label", class_names, labels

    def _labels_from_csv(self, vols, rows):
        import pandas as pd

        from ._sources import CSVSource

        csv = Path(self.labels_csv).expanduser()
        if not csv.is_file():
            raise ConfigError(f"labels CSV {str(csv)!r} does not exist; set data.labels_csv", field="data.labels_csv")
        df = pd.read_csv(csv, dtype={self.id_column: str})
        for key, cols in (("id_column", [self.id_column]), ("label_columns", self.columns)):
            missing = [c for c in cols if c not in df.columns]
            if missing:
                raise ConfigError(
                    f"{csv} has no column(s) {', '.join(map(repr, missing))}; columns are {', '.join(map(str, df.columns))}: set data.{key}",
                    field=f"data.{key}",
                )
        by_name = df.set_index(df[self.id_column].astype(str).map(lambda s: volume_name(Path(s))))
        missing = [volume_name(p) for p in vols if volume_name(p) not in by_name.index]
        if missing:
            raise ConfigError(f"{csv}: no row for volume(s) {', '.join(missing[:5])}; add them to column {self.id_column!r}", field="data.id_column")
        per_slice = by_name.loc[[volume_name(p) for p, _ in rows]].reset_index(drop=True)
        if len(self.columns) == 1:
            task, class_names, labels, _ = CSVSource._single_label(self, per_slice, csv)
        else:
            task, class_names, labels, _ = CSVSource._multi_label(self, per_slice, csv)
        return task, class_names, labels


def _header_shape(path: Path) -> tuple[int, ...]:
    """A volume's shape without decoding it (NIfTI header, canonical orientation), or the loaded series' shape."""
    if _is_nifti(path):
        import nibabel as nib

        try:
            img = nib.load(str(path))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"cannot read {path} as NIfTI ({type(exc).__name__}: {exc}); fix or remove it", field="data.volumes") from None
        if len(img.shape) != 3:
            return tuple(int(s) for s in img.shape)
        return tuple(int(s) for s in nib.as_closest_canonical(img).shape)
    from ._dicom import scan_dicom

    # Headers only: decoding every slice here would decode the series twice.
    records, bad = scan_dicom(path)
    if bad or not records or len({r["shape"] for r in records}) != 1:
        why = f"{len(bad)} unreadable file(s)" if bad else ("no DICOM image" if not records else "slices of different sizes")
        raise ConfigError(f"cannot read the DICOM series {path}: {why}; fix the folder", field="data.volumes")
    return (*records[0]["shape"], len(records))
