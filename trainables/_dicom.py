"""DICOM: files or series folders (with or without ``.dcm``) read through pydicom.

Pixels go stored values -> modality LUT (rescale slope and intercept: HU for CT, exactly as
``pydicom.pixels.apply_modality_lut``) -> window(s) to uint8 -> MONOCHROME1 inverted, so bright
is dense in every image. Compressed transfer syntaxes (JPEG 2000, JPEG-LS...) decode through the
pylibjpeg plug-ins. Labels come from a CSV keyed by SOP Instance UID, file path, patient, study or
series; the patient is the CSV's group column or else the header's PatientID.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ._errors import ConfigError, did_you_mean
from ._groups import check_overlap, grouped_split

# How a labels CSV row finds its files: the key's name -> the DICOM keyword (None: the file path).
KEYS = {
    "sop_instance_uid": "SOPInstanceUID",
    "path": None,
    "patient_id": "PatientID",
    "study_instance_uid": "StudyInstanceUID",
    "series_instance_uid": "SeriesInstanceUID",
}
_NOT_DICOM = {".csv", ".txt", ".json", ".md", ".yaml", ".yml", ".py", ".html", ".png", ".jpg", ".jpeg", ".gz", ".nii", ".xml", ".zip"}


def read_dicom(path: str | os.PathLike) -> Any:
    """The full dataset of one file (pydicom ``dcmread``)."""
    import pydicom

    return pydicom.dcmread(str(path))


def dicom_values(ds: Any) -> np.ndarray:
    """The image in modality units (HU for CT): ``apply_modality_lut(ds.pixel_array, ds)``, float64.

    Raises:
        ValueError: the file holds no pixel data, or several frames.
    """
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise ValueError("no pixel data (PixelData) in the file: not an image")
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise ValueError(f"{int(ds.NumberOfFrames)} frames: multi-frame files are not read; export single frames")
    return np.asarray(apply_modality_lut(arr, ds), dtype=np.float64)


def dicom_to_uint8(ds: Any, windows: tuple) -> np.ndarray:
    """One file as uint8: (H, W) for one window, (H, W, C) for several; MONOCHROME1 inverted; RGB kept."""
    from ._windows import Window, to_uint8

    values = dicom_values(ds)
    if int(ds.get("SamplesPerPixel", 1)) > 1:  # colour (e.g. secondary captures): no window applies
        return values.astype(np.uint8) if values.max(initial=0) <= 255 else to_uint8(values, Window("minmax"))
    chans = [to_uint8(values, w, dicom=ds) for w in windows]
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        chans = [255 - c for c in chans]  # MONOCHROME1: the lowest value is white
    return chans[0] if len(chans) == 1 else np.stack(chans, axis=-1)


def _candidate_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith(".") or name.upper() == "DICOMDIR" or Path(name).suffix.lower() in _NOT_DICOM:
                continue
            if name.upper() in ("LICENSE", "README", "NOTICE"):
                continue
            files.append(Path(dirpath) / name)
    return files


def scan_dicom(root: Path) -> tuple[list[dict[str, Any]], list[list[str]]]:
    """Header of every DICOM file under ``root`` (pixels deferred) and the files that could not be read."""
    import pydicom

    records, bad = [], []
    for path in _candidate_files(root):
        try:
            ds = pydicom.dcmread(str(path), defer_size="4 KB")
        except Exception as exc:  # noqa: BLE001 - listed with the bad images
            bad.append([str(path), f"not readable as DICOM ({type(exc).__name__}: {exc})".splitlines()[0][:200]])
            continue
        if "PixelData" not in ds:
            bad.append([str(path), "no pixel data (PixelData) in the file: not an image; remove it from the folder"])
            continue
        pos = ds.get("ImagePositionPatient")
        records.append(
            {
                "path": str(path),
                "rel": str(path.relative_to(root)) if root.is_dir() else path.name,
                **{k: str(ds.get(v, "") or "") for k, v in KEYS.items() if v},
                # Anonymised exports may blank the dataset's UID; the file meta keeps it.
                "sop_instance_uid": str(ds.get("SOPInstanceUID", "") or ds.file_meta.get("MediaStorageSOPInstanceUID", "")
                                        if hasattr(ds, "file_meta") else ds.get("SOPInstanceUID", "")),
                "folder": str(path.parent),
                "shape": (int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)),
                "position": float(pos[2]) if pos is not None and len(pos) == 3 else float(ds.get("InstanceNumber", 0) or 0),
            }
        )
    return records, bad


@dataclass(frozen=True)
class DicomSource:
    """DICOM files (a file, a folder, or folders of series) with labels from a CSV.

    Example (space file)::

        data:
          source: dicom
          root: /data/ct              # files with or without .dcm, any depth
          labels_csv: /data/ct/labels.csv
          key: sop_instance_uid       # or path, patient_id, study_instance_uid, series_instance_uid
          key_column: SOPInstanceUID
          label_columns: finding
          window: [lung, mediastinum, bone]   # 3 channels; or file, a name, {center: 40, width: 400}
    """

    name: ClassVar[str] = "dicom"

    root: str
    labels_csv: str
    key: str = "sop_instance_uid"
    key_column: str = "id"
    label_columns: tuple[str, ...] | list[str] | str = "label"
    group_column: str | None = None  # in the CSV; default: the header's PatientID (StudyInstanceUID when blank)
    group_pattern: str | None = None
    split_column: str | None = None
    allow_group_overlap: bool = False
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0
    uncertain: str = "ignore"
    blank: str = "zeros"
    window: Any = "file"

    @property
    def columns(self) -> list[str]:
        return [self.label_columns] if isinstance(self.label_columns, str) else list(self.label_columns)

    @property
    def id_column(self) -> str:  # what groups_from_frame reads when only a pattern is given
        return self.key_column

    def validate(self, *, origin: str, prefix: str) -> None:
        from ._sources import CSVSource

        CSVSource.validate(self, origin=origin, prefix=prefix)
        if self.key not in KEYS:
            raise ConfigError(
                f"unknown key {self.key!r}{did_you_mean(self.key, KEYS)}; valid: {', '.join(KEYS)}", origin=origin, field=f"{prefix}.key"
            )
        n = len(self.windows())
        if n not in (1, 3):
            raise ConfigError(f"give 1 window or 3 (one per channel), got {n}", origin=origin, field=f"{prefix}.window")

    def windows(self) -> tuple:
        from ._windows import parse_windows

        return parse_windows(self.window, origin="config", field="data.window", allow_file=True)

    def describe(self) -> dict[str, Any]:
        from ._sources import _files_digest

        root = Path(self.root).expanduser().resolve()
        csv = Path(self.labels_csv).expanduser()
        d = dataclasses.asdict(self)
        d["label_columns"] = self.columns
        return {
            **d,
            "source": self.name,
            "root": str(root),
            "csv_stat": [csv.stat().st_size, int(csv.stat().st_mtime)] if csv.is_file() else None,
            "files": _files_digest(_candidate_files(root)) if root.exists() else None,
        }

    def index(self):
        import pandas as pd

        from ._sources import CSVSource, SourceIndex, SplitIndex, _grouping, groups_from_frame

        root = Path(self.root).expanduser()
        csv = Path(self.labels_csv).expanduser()
        if not root.exists():
            raise ConfigError(f"DICOM path {str(root)!r} does not exist; set data.root to a DICOM file or folder", field="data.root")
        if not csv.is_file():
            raise ConfigError(f"labels CSV {str(csv)!r} does not exist; set data.labels_csv to the file", field="data.labels_csv")
        records, bad = scan_dicom(root)
        if not records:
            raise ConfigError(f"no readable DICOM image under {root} ({len(bad)} unreadable file(s)); set data.root", field="data.root")
        try:
            labels_df = pd.read_csv(csv, dtype={self.key_column: str})
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(f"{csv}: cannot parse the CSV ({type(exc).__name__}: {exc})", field="data.labels_csv") from None
        for key, cols in (("key_column", [self.key_column]), ("label_columns", self.columns)):
            missing = [c for c in cols if c not in labels_df.columns]
            if missing:
                raise ConfigError(
                    f"{csv} has no column(s) {', '.join(map(repr, missing))}{did_you_mean(missing[0], labels_df.columns)}; "
                    f"columns are {', '.join(map(str, labels_df.columns))}: set data.{key}",
                    field=f"data.{key}",
                )
        files = pd.DataFrame(records)
        # A path key matches the path under root or the bare file name, whichever the CSV holds.
        file_key = "rel" if self.key == "path" else self.key
        if self.key == "path" and not files["rel"].isin(labels_df[self.key_column].astype(str)).any():
            file_key = "name"
            files["name"] = [Path(p).name for p in files["path"]]
        labels_df = labels_df.assign(**{self.key_column: labels_df[self.key_column].astype(str)})
        if labels_df[self.key_column].duplicated().any() and self.key in ("sop_instance_uid", "path"):
            dup = labels_df[self.key_column][labels_df[self.key_column].duplicated()].iloc[0]
            raise ConfigError(f"{csv}: key {dup!r} is on several rows; one row per image", field="data.key_column")
        df = files.merge(labels_df, left_on=file_key, right_on=self.key_column, how="inner", suffixes=("", "_csv"))
        if df.empty:
            raise ConfigError(
                f"no file under {root} matches a {self.key_column!r} value of {csv} by {self.key}; "
                f"set data.key (valid: {', '.join(KEYS)}) to what the column holds",
                field="data.key",
            )
        unlabelled = len(files) - len(set(df["path"]))
        if unlabelled:
            print(f"[medsweep] {unlabelled} DICOM file(s) under {root} have no row in {csv}: left out", file=sys.stderr)
        df = df.sort_values(["series_instance_uid", "position", "path"]).reset_index(drop=True)
        if len(self.columns) == 1:
            task, class_names, labels, strat = CSVSource._single_label(self, df, csv)
        else:
            task, class_names, labels, strat = CSVSource._multi_label(self, df, csv)
        groups = groups_from_frame(df, self, csv) if (self.group_column or self.group_pattern) else None
        by = "group_column" if self.group_column else ("group_pattern" if self.group_pattern else None)
        if groups is None:  # the header's patient; anonymised exports often blank it, the study still is one patient's
            groups = [r.patient_id or (f"study:{r.study_instance_uid}" if r.study_instance_uid else f"folder:{r.folder}")
                      for r in df.itertuples()]
            by = "PatientID (DICOM header; StudyInstanceUID, else the folder, where blank)"
        ids = [r.sop_instance_uid or r.rel for r in df.itertuples()]
        if self.split_column:
            if self.split_column not in df.columns:
                raise ConfigError(f"{csv} has no column {self.split_column!r}; set data.split_column", field="data.split_column")
            split_of = df[self.split_column].astype(str).str.lower().to_numpy()
            wrong = sorted(set(split_of) - {"train", "val", "test"})
            if wrong:
                raise ConfigError(
                    f"{csv}: column {self.split_column!r} holds {', '.join(wrong[:5])}; allowed values are train, val, test",
                    field="data.split_column",
                )
            parts = {s: np.flatnonzero(split_of == s) for s in ("train", "val", "test")}
            check_overlap(
                {s: [groups[i] for i in ix] for s, ix in parts.items()},
                {s: [df["path"][i] for i in ix] for s, ix in parts.items()},
                allow=self.allow_group_overlap, where=str(root), field="data.split_column",
            )
        else:
            parts = grouped_split(
                strat, groups, val_fraction=self.val_fraction, test_fraction=self.test_fraction, seed=self.seed,
                multilabel=labels if task == "multi-label" else None, where=str(root),
                field="data.group_column",
            )
        windows = self.windows()
        paths = df["path"].tolist()
        splits = {}
        for split, ix in parts.items():
            sp = [paths[i] for i in ix]
            splits[split] = SplitIndex(
                ids=[ids[i] for i in ix],
                labels=labels[ix],
                read=(lambda i, _p=sp: dicom_to_uint8(read_dicom(_p[i]), windows)),
                paths=sp,
                groups=[groups[i] for i in ix],
            )
        grouping = _grouping("given (split_column)" if self.split_column else "drawn", by)
        return SourceIndex(task=task, class_names=class_names, splits=splits, bad=bad, grouping=grouping)
