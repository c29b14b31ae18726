"""Medical data as it comes: patients (groups), DICOM, CT volumes to slices, windows.

Real files: the shared radiographs (hannover-covid19), the CT series and volume (ct-totalseg) and
pydicom's own test files; tests on shared data skip when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from trainables._cache import DataConfig, load_dataset
from trainables._errors import ConfigError


def shared(*parts: str) -> Path:
    roots = [Path(os.environ["MEDSWEEP_DATA_DIR"])] if os.environ.get("MEDSWEEP_DATA_DIR") else []
    roots.append(Path(__file__).resolve().parents[3] / "shared" / "datasets")
    for root in roots:
        if root.joinpath(*parts).exists():
            return root.joinpath(*parts)
    pytest.skip(f"shared data {'/'.join(parts)} not found (set MEDSWEEP_DATA_DIR)")


HANNOVER = ("hannover-covid19",)
CT = ("ct-totalseg",)


def hannover(tmp_path: Path, **extra) -> dict:
    root = shared(*HANNOVER)
    return {
        "source": "csv", "labels_csv": str(root / "data.csv"), "img_dir": str(root / "png"), "id_column": "image_id",
        "label_columns": "projection", "cache_dir": str(tmp_path / "cache"), **extra,
    }


def groups_by_split(ds) -> dict[str, set[str]]:
    return {s: set(sp.groups) for s, sp in ds.splits.items()}


# ---------------------------------------------------------------- patients


def test_real_radiographs_grouped_splits_keep_every_patient_in_one_split(tmp_path, capsys):
    ds = load_dataset(DataConfig.from_dict(hannover(tmp_path, group_column="patient_id")), image_size=32)
    g = groups_by_split(ds)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    frame = pd.read_csv(shared(*HANNOVER) / "data.csv")
    assert sum(len(v) for v in g.values()) == frame["patient_id"].nunique() == 71
    assert sum(len(sp) for sp in ds.splits.values()) == len(frame) == 243
    # Each image carries its own patient, as the CSV says.
    truth = dict(zip(frame["image_id"].astype(str), frame["patient_id"].astype(str)))
    for sp in ds.splits.values():
        assert [truth[i] for i in sp.ids] == sp.groups
    # Both classes reach every split (stratified), and the build prints patients per split.
    report = ds.split_report()
    assert report["grouped_by"] == "group_column" and report["split"] == "drawn"
    for split, part in report["splits"].items():
        assert part["patients"] == len(g[split]) and min(part["counts"].values()) > 0
        assert abs(sum(part["prevalence"].values()) - 1) < 1e-6
    assert "patients" in capsys.readouterr().out


def test_real_radiographs_split_image_by_image_leaks_and_the_check_says_so(tmp_path):
    from sklearn.model_selection import train_test_split

    frame = pd.read_csv(shared(*HANNOVER) / "data.csv")
    idx = np.arange(len(frame))
    tr, rest = train_test_split(idx, test_size=0.3, random_state=0)
    va, te = train_test_split(rest, test_size=0.5, random_state=0)
    split = np.empty(len(frame), dtype=object)
    split[tr], split[va], split[te] = "train", "val", "test"
    # The leak is real: an image-by-image split puts patients on both sides.
    by = {s: set(frame["patient_id"][split == s]) for s in ("train", "val", "test")}
    assert by["train"] & by["test"]
    csv = tmp_path / "data.csv"
    frame.assign(split=split).to_csv(csv, index=False)
    raw = hannover(tmp_path, labels_csv=str(csv), group_column="patient_id", split_column="split")
    with pytest.raises(ConfigError, match=r"^data\.split_column: patient '\w+' is in \w+ \(\w+\) and in \w+ \(\w+\) of .*data\.csv: .*allow_group_overlap: true$") as info:
        load_dataset(DataConfig.from_dict(raw), image_size=32)
    assert "\n" not in str(info.value)
    # Accepting the overlap on purpose builds the data set.
    ds = load_dataset(DataConfig.from_dict({**raw, "allow_group_overlap": True}), image_size=32)
    assert len(ds.splits["train"]) == len(tr)


def test_folder_group_pattern_groups_by_file_name_and_checks_presplit_folders(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "flat"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for p in range(8):
            for k in range(3):
                Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(root / c / f"pt{c}{p}_img{k}.png")
    raw = {"source": "folder", "root": str(root), "group_pattern": r"(pt\w\d)_", "val_fraction": 0.25, "test_fraction": 0.25,
           "cache_dir": str(tmp_path / "cache")}
    ds = load_dataset(DataConfig.from_dict(raw), image_size=16, verbose=False)
    g = groups_by_split(ds)
    assert all(g[s] for s in g) and not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    for sp in ds.splits.values():
        assert all(Path(i).name.startswith(grp + "_") for i, grp in zip(sp.ids, sp.groups))
    # Pre-split folders sharing a patient: the one-line error names the patient and both files.
    pre = tmp_path / "pre"
    for s in ("train", "val", "test"):
        for c in ("a", "b"):
            (pre / s / c).mkdir(parents=True)
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(pre / s / c / f"p{s}{c}_0.png")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pre / "test" / "a" / "ptraina_1.png")
    raw = {"source": "folder", "root": str(pre), "group_pattern": r"(p[a-z]+)_", "cache_dir": str(tmp_path / "cache2")}
    with pytest.raises(ConfigError, match=r"patient 'ptraina' is in train \(.*ptraina_0\.png\) and in test \(.*ptraina_1\.png\)"):
        load_dataset(DataConfig.from_dict(raw), image_size=8, verbose=False)


def test_chexpert_style_path_pattern_and_multilabel_grouped_split(tmp_path):
    """CheXpert's ``Path`` names the patient; multi-label rows are split by iterative stratification over patients."""
    rng = np.random.default_rng(1)
    rows = []
    for p in range(30):
        for s in range(int(rng.integers(1, 4))):
            rel = f"train/patient{p:05d}/study{s}/view1_frontal.png"
            (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(tmp_path / rel)
            rows.append({"Path": rel, "Edema": int(rng.integers(0, 2)), "Effusion": [1, 0, -1][int(rng.integers(0, 3))]})
    pd.DataFrame(rows).to_csv(tmp_path / "train.csv", index=False)
    raw = {"source": "csv", "labels_csv": str(tmp_path / "train.csv"), "img_dir": str(tmp_path), "id_column": "Path",
           "label_columns": ["Edema", "Effusion"], "group_pattern": r"(patient\d+)", "val_fraction": 0.2, "test_fraction": 0.2,
           "cache_dir": str(tmp_path / "cache")}
    ds = load_dataset(DataConfig.from_dict(raw), image_size=8, verbose=False)
    g = groups_by_split(ds)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    assert sum(len(v) for v in g.values()) == 30
    for sp in ds.splits.values():
        assert (sp.labels[:, 0] == 1).any()  # iterative stratification leaves positives in every split


def test_spaces_chexpert_groups_by_patient():
    from search._space import load_space

    from trainables._groups import compile_pattern, group_of

    data = load_space(Path(__file__).resolve().parents[2] / "spaces" / "chexpert.yaml").data

    pattern = compile_pattern(data.source.group_pattern, origin="x", field="f")
    assert group_of("CheXpert-v1.0/train/patient00042/study1/view1_frontal.jpg", pattern, where="", field="") == "patient00042"


def test_predictions_carry_groups_and_stacking_folds_by_patient(tmp_path):
    from ensemble._stacking import StackingEnsemble, _splits
    from trainables._train import predictions_frame

    ds = load_dataset(DataConfig.from_dict(hannover(tmp_path, group_column="patient_id")), image_size=32, verbose=False)
    val = ds.splits["val"]
    frame = predictions_frame(ds, "val", np.full((len(val), 2), 0.5))
    assert frame["group"].tolist() == val.groups
    y = val.labels
    groups = np.asarray(val.groups)
    folds, k = _splits(y, False, 5, 0, groups=groups)
    assert k >= 2
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
    # Without groups the same rows' folds split patients: the grouped CV is what keeps them apart.
    plain, _ = _splits(y, False, 5, 0)
    assert any(set(groups[a]) & set(groups[b]) for a, b in plain)
    rng = np.random.default_rng(0)
    P = np.clip(np.stack([np.eye(2)[y] * 0.6 + rng.uniform(0, 0.4, (len(y), 2)) for _ in range(2)]), 0, 1)
    P = P / P.sum(-1, keepdims=True)
    ens = StackingEnsemble(task="binary", combiners=("mean", "logistic"), n_folds=3).fit(P, y, groups=groups)
    assert ens.n_folds_ == 3 and ens.predict_proba(P).shape == (len(y), 2)
    # Multi-label: grouped folds as well.
    Y = rng.integers(0, 2, (len(y), 3))
    for train, test in _splits(Y, True, 4, 0, groups=groups)[0]:
        assert not set(groups[train]) & set(groups[test])


# ---------------------------------------------------------------- windows


def test_percentile_window_keeps_a_bright_marker_from_darkening_the_radiograph(tmp_path):
    img = np.full((32, 32), 1000, np.uint16)
    img[:, 16:] = 3000  # two tissue levels
    img[0, 0] = 65000  # a marker
    root = tmp_path / "img"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for k in range(4):
            Image.fromarray(img).save(root / c / f"{k}.png")
    base = {"source": "folder", "root": str(root), "val_fraction": 0.25, "test_fraction": 0.25}
    mm = load_dataset(DataConfig.from_dict({**base, "cache_dir": str(tmp_path / "c1")}), image_size=32, verbose=False)
    pc = load_dataset(DataConfig.from_dict({**base, "window": "percentile", "cache_dir": str(tmp_path / "c2")}), image_size=32, verbose=False)
    a, b = mm.splits["train"].images[0, ..., 0], pc.splits["train"].images[0, ..., 0]
    assert a[5, 20] - a[5, 5] < 40  # min-max: the marker squeezes the tissue into a few grey levels
    assert b[5, 5] == 0 and b[5, 20] == 255  # percentile 0.5..99.5: tissue spans the range, the marker clips
    from trainables._windows import Window, to_uint8

    x = np.arange(1001.0)
    np.testing.assert_array_equal(to_uint8(x, Window("percentile", low=10, high=90)),
                                  np.round(np.clip((x - 100) / 800, 0, 1) * 255).astype(np.uint8))


# ---------------------------------------------------------------- DICOM


def ct_series_csv(tmp_path: Path, *, split: bool = True) -> Path:
    import pydicom

    files = sorted(p for p in shared(*CT, "dicom").iterdir() if p.is_file())
    rows = []
    for i, f in enumerate(files):
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        rows.append({"uid": ds.file_meta.MediaStorageSOPInstanceUID, "label": "upper" if i >= len(files) // 2 else "lower",
                     "split": ["train", "train", "val", "test"][i % 4]})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    return tmp_path / "labels.csv"


def test_dicom_series_reads_to_hu_exactly_as_pydicom_and_windows_as_configured(tmp_path):
    import pydicom
    from pydicom.pixels import apply_rescale

    from trainables._dicom import dicom_to_uint8, dicom_values
    from trainables._windows import NAMED_WINDOWS, parse_windows

    files = sorted(p for p in shared(*CT, "dicom").iterdir() if p.is_file())
    assert len(files) == 20 and not any(f.suffix.lower() == ".dcm" for f in files)
    wins = parse_windows(["lung", "mediastinum", "bone", "file", {"center": -100, "width": 500}], origin="t", field="w", allow_file=True)
    for f in files[:: 5]:
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless: needs the pylibjpeg decoder
        hu = dicom_values(ds)
        np.testing.assert_array_equal(hu, apply_rescale(ds.pixel_array, ds))  # every pixel
        assert hu.min() >= -1024
        out = dicom_to_uint8(ds, wins)
        assert out.shape == (512, 512, 5) and out.dtype == np.uint8
        expected = [NAMED_WINDOWS["lung"], NAMED_WINDOWS["mediastinum"], NAMED_WINDOWS["bone"],
                    (float(ds.WindowCenter[0]), float(ds.WindowWidth[0])), (-100.0, 500.0)]
        for c, (centre, width) in enumerate(expected):
            ref = np.round(np.clip((hu - (centre - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
            np.testing.assert_array_equal(out[..., c], ref)


def test_dicom_monochrome1_is_inverted():
    import pydicom
    from pydicom.data import get_testdata_file

    from trainables._dicom import dicom_to_uint8
    from trainables._windows import parse_windows

    path = get_testdata_file("6154", read=False) or get_testdata_file("dicomdirtests/77654033/CR1/6154")
    ds = pydicom.dcmread(path)
    assert ds.PhotometricInterpretation == "MONOCHROME1"  # a real CR radiograph shipped with pydicom
    w = parse_windows("file", origin="t", field="w", allow_file=True)
    inverted = dicom_to_uint8(ds, w)
    ds.PhotometricInterpretation = "MONOCHROME2"
    plain = dicom_to_uint8(ds, w)
    np.testing.assert_array_equal(inverted.astype(int), 255 - plain.astype(int))
    assert plain.std() > 0


def test_dicom_source_checks_given_splits_and_trains_two_epochs_through_fit(tmp_path, capsys):
    import yaml

    from search.fit import main

    csv = ct_series_csv(tmp_path)
    data = {"source": "dicom", "root": str(shared(*CT, "dicom")), "labels_csv": str(csv), "key_column": "uid",
            "split_column": "split", "window": ["lung", "mediastinum", "bone"], "cache_dir": str(tmp_path / "cache")}
    # One patient's series split slice by slice: the check fires (the header's patient is blank: the folder stands in).
    with pytest.raises(ConfigError, match=r"patient 'folder:.*dicom' is in train .* and in val .*allow_group_overlap: true"):
        load_dataset(DataConfig.from_dict(data), image_size=32, verbose=False)
    data["allow_group_overlap"] = True
    space = {"name": "dicom_fit", "data": data,
             "fixed": {"backbone": "test_resnet", "epochs": 2, "image_size": 32, "threads": 1, "batch_size": 4, "seed": 0},
             "search": {"metric": "val_auroc", "mode": "max"}}
    path = tmp_path / "dicom.yaml"
    path.write_text(yaml.safe_dump(space))
    assert main([str(path), "--out", str(tmp_path / "run")]) == 0
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2]
    preds = pd.read_parquet(tmp_path / "run" / "predictions_val.parquet")
    assert len(preds) == 5 and preds["group"].nunique() == 1
    import json

    model = json.loads((tmp_path / "run" / "model.json").read_text())
    assert model["in_chans"] == 3 and model["data"]["splits"]["train"]["images"] == 10


def test_dicom_without_pixel_data_goes_to_the_bad_image_list(tmp_path):
    import pydicom
    from pydicom.data import get_testdata_file

    root = tmp_path / "dcm"
    root.mkdir()
    ids = []
    for i, name in enumerate(["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm"]):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.PatientID = f"P{i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.save_as(root / f"img{i}")  # no extension
        ids.append(str(ds.SOPInstanceUID))
    header = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del header.PixelData
    header.PatientID = "P9"
    header.save_as(root / "header_only.dcm")
    (root / "junk.dcm").write_bytes(b"not a dicom file")
    pd.DataFrame({"id": ids, "label": [0, 1, 0, 1]}).to_csv(tmp_path / "l.csv", index=False)
    raw = {"source": "dicom", "root": str(root), "labels_csv": str(tmp_path / "l.csv"), "window": "minmax",
           "split_column": None, "cache_dir": str(tmp_path / "cache"), "val_fraction": 0.25, "test_fraction": 0.25}
    with pytest.raises(ConfigError, match=r"^data\.on_bad_image: 2 unreadable image\(s\): .*header_only\.dcm \(no pixel data.*junk\.dcm \(not readable as DICOM.*on_bad_image: skip$") as info:
        load_dataset(DataConfig.from_dict(raw), image_size=16, verbose=False)
    assert "\n" not in str(info.value)
    ds = load_dataset(DataConfig.from_dict({**raw, "on_bad_image": "skip"}), image_size=16, verbose=False)
    assert len(ds.bad_images) == 2 and sum(len(s) for s in ds.splits.values()) == 4
    # Patients from the header: 4 patients, one per split at least.
    assert sorted(g for s in ds.splits.values() for g in s.groups) == ["P0", "P1", "P2", "P3"]


# ---------------------------------------------------------------- CT volumes


def organs(tmp_path: Path, **extra) -> dict:
    return {"source": "nifti", "volumes": str(shared(*CT, "example_ct_sm.nii.gz")),
            "label_maps": str(shared(*CT, "example_seg.nii.gz")), "window": ["lung", "mediastinum", "bone"],
            "group_slab": 3, "min_label_slices": 8, "val_fraction": 0.25, "test_fraction": 0.25,
            "cache_dir": str(tmp_path / "cache"), **extra}


def test_ct_volume_to_slices_windows_and_per_slice_organ_labels_match_the_label_map(tmp_path):
    import nibabel as nib

    ct = nib.as_closest_canonical(nib.load(shared(*CT, "example_ct_sm.nii.gz")))
    seg = np.asarray(nib.as_closest_canonical(nib.load(shared(*CT, "example_seg.nii.gz"))).dataobj).astype(int)
    hu = np.asarray(ct.dataobj, dtype=np.float64)
    ds = load_dataset(DataConfig.from_dict(organs(tmp_path)), image_size=seg.shape[0], verbose=False)
    assert ds.multilabel and ds.channels == 3
    shown = {i: (seg == i).any((0, 1)) for i in np.unique(seg) if i > 0}
    expect = [f"label_{i}" for i, z in shown.items() if z.sum() >= 8]
    assert ds.class_names == expect
    seen = 0
    for sp in ds.splits.values():
        for sid, lab, grp in zip(sp.ids, sp.labels, sp.groups):
            z = int(sid.split(":z")[1])
            assert grp == f"example_ct_sm:slab{z // 3}"
            np.testing.assert_array_equal(lab, [float(shown[int(c[6:])][z]) for c in ds.class_names])
            seen += 1
    assert seen == seg.shape[2] == 30
    g = groups_by_split(ds)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    # Windows as configured, at the volume's own grid (101 x 122 after turning the slice for display): no resize.
    from trainables._volumes import slice_image
    from trainables._windows import parse_windows

    img = slice_image(hu, 12, axis=2, context=0, windows=parse_windows(["lung", "mediastinum", "bone"], origin="", field=""), rotate=True)
    for c, (centre, width) in enumerate([(-600, 1500), (40, 400), (400, 1800)]):
        ref = np.round(np.clip((np.rot90(hu[:, :, 12]) - (centre - width / 2)) / width, 0, 1) * 255).astype(np.uint8)
        np.testing.assert_array_equal(img[..., c], ref)


def test_ct_25d_context_uses_neighbouring_slices_as_channels(tmp_path):
    import nibabel as nib

    from trainables._volumes import slice_image
    from trainables._windows import parse_windows

    hu = np.asarray(nib.as_closest_canonical(nib.load(shared(*CT, "example_ct_sm.nii.gz"))).dataobj, dtype=np.float64)
    w = parse_windows("abdomen", origin="", field="")
    img = slice_image(hu, 0, axis=2, context=1, windows=w, rotate=False)
    one = [slice_image(hu, k, axis=2, context=0, windows=w, rotate=False) for k in (0, 0, 1)]  # the edge repeats
    np.testing.assert_array_equal(img, np.stack(one, -1))
    ds = load_dataset(DataConfig.from_dict(organs(tmp_path, window="abdomen", context=1, stride=2)), image_size=16, verbose=False)
    assert ds.channels == 3 and sum(len(s) for s in ds.splits.values()) == 15


def test_volume_labels_per_volume_from_a_csv_keep_each_volume_in_one_split(tmp_path):
    import nibabel as nib

    rng = np.random.default_rng(0)
    rows = []
    for v in range(6):
        data = rng.normal(0, 200, (12, 12, 7)).astype(np.int16)
        nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / f"case{v}.nii.gz")
        rows.append({"id": f"case{v}.nii.gz", "finding": v % 2})
    pd.DataFrame(rows).to_csv(tmp_path / "vol.csv", index=False)
    raw = {"source": "nifti", "volumes": str(tmp_path), "labels_csv": str(tmp_path / "vol.csv"), "label_columns": "finding",
           "n_slices": 4, "window": {"center": 0, "width": 800}, "val_fraction": 0.25, "test_fraction": 0.25,
           "cache_dir": str(tmp_path / "cache")}
    ds = load_dataset(DataConfig.from_dict(raw), image_size=12, verbose=False)
    g = groups_by_split(ds)
    assert not (g["train"] & g["val"]) and not (g["train"] & g["test"]) and not (g["val"] & g["test"])
    assert sum(len(s) for s in ds.splits.values()) == 24
    for sp in ds.splits.values():
        assert all(lab == int(grp[-1]) % 2 for lab, grp in zip(sp.labels, sp.groups))


# ---------------------------------------------------------------- bad input: one line, file, field, fix


def _four_d(tmp_path: Path) -> dict:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), np.eye(4)), tmp_path / "t.nii.gz")
    return {"source": "nifti", "volumes": str(tmp_path / "t.nii.gz"), "label_maps": str(tmp_path / "t.nii.gz")}


def _wrong_grid(tmp_path: Path) -> dict:
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((4, 4, 6), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 5), np.uint8), np.eye(4)), tmp_path / "s.nii.gz")
    return {"source": "nifti", "volumes": str(tmp_path / "v.nii.gz"), "label_maps": str(tmp_path / "s.nii.gz")}


def _one_volume(tmp_path: Path) -> dict:
    import nibabel as nib

    seg = np.zeros((4, 4, 6), np.uint8)
    seg[0, 0, :] = 1
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 6), np.int16), np.eye(4)), tmp_path / "v.nii.gz")
    nib.save(nib.Nifti1Image(seg, np.eye(4)), tmp_path / "s.nii.gz")
    return {"source": "nifti", "volumes": str(tmp_path / "v.nii.gz"), "label_maps": str(tmp_path / "s.nii.gz"), "min_label_slices": 1}


def _csv(tmp_path: Path) -> dict:
    (tmp_path / "img").mkdir(exist_ok=True)
    for i in range(6):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "img" / f"{i}.png")
    (tmp_path / "l.csv").write_text("id,label,patient\n" + "".join(f"{i},{i % 2},p{i}\n" for i in range(6)))
    return {"source": "csv", "labels_csv": str(tmp_path / "l.csv"), "img_dir": str(tmp_path / "img")}


BAD_INPUT = {
    "missing group column": (
        lambda t: {**_csv(t), "group_column": "patiend"},
        r"^data\.group_column: .*l\.csv has no column 'patiend'; did you mean 'patient'\?; columns are id, label, patient: set data\.group_column to the patient id column$",
    ),
    "group pattern does not match": (
        lambda t: {**_csv(t), "group_column": "patient", "group_pattern": r"pt(\d+)"},
        r"^data\.group_pattern: 'pt.*' does not match 'p0' \(.*l\.csv column 'patient'\); fix the pattern",
    ),
    "bad group regex": (
        lambda t: {**_csv(t), "group_pattern": "(patient"},
        r"^config: data\.group_pattern: not a regular expression .*; use e\.g\.",
    ),
    "unknown window": (
        lambda t: {**_csv(t), "window": "lungs"},
        r"^config: data\.window: unknown window 'lungs'; did you mean 'lung'\?; valid: minmax, percentile, lung, .*\{center: C, width: W\}",
    ),
    "file window outside DICOM": (
        lambda t: {**_csv(t), "window": "file"},
        r"^config: data\.window: unknown window 'file'; .*valid: minmax, percentile, lung",
    ),
    "bad percentile": (
        lambda t: {**_csv(t), "window": {"percentile": [99, 1]}},
        r"^config: data\.window: percentile must be \[low, high\] with 0 <= low < high <= 100, got \[99, 1\]$",
    ),
    "two windows": (
        lambda t: {"source": "dicom", "root": str(t), "labels_csv": str(t / "l.csv"), "window": ["lung", "bone"]},
        r"^config: data\.window: give 1 window or 3 \(one per channel\), got 2$",
    ),
    "unknown dicom key": (
        lambda t: {"source": "dicom", "root": str(t), "labels_csv": str(t / "l.csv"), "key": "sop_uid"},
        r"^config: data\.key: unknown key 'sop_uid'.*valid: sop_instance_uid, path, patient_id",
    ),
    "dicom key matches nothing": (
        lambda t: {**_dicom_folder(t), "key": "patient_id", "key_column": "id"},
        r"^data\.key: no file under .* matches a 'id' value of .*l\.csv by patient_id; set data\.key",
    ),
    "volume with the wrong axis": (
        lambda t: {**_wrong_grid(t), "axis": 3},
        r"^config: data\.axis: unknown axis 3; valid: 0, 1, 2 or sagittal, coronal, axial",
    ),
    "4-D volume": (
        _four_d,
        r"^data\.volumes: .*t\.nii\.gz has shape \(4, 4, 4, 2\), not a 3-D volume; give 3-D volumes",
    ),
    "label map on another grid": (
        _wrong_grid,
        r"^data\.label_maps: label map .*s\.nii\.gz has shape \(4, 4, 5\) but volume .*v\.nii\.gz has \(4, 4, 6\); a label map must lie on its volume's grid$",
    ),
    "one volume without slabs": (
        lambda t: _one_volume(t),
        r"^data\.group_slab: 1 volume\(s\)/slab\(s\) cannot be put in train, val and test .*set data\.group_slab to a slab size",
    ),
    "too many channels": (
        lambda t: {**_wrong_grid(t), "window": ["lung", "bone", "brain"], "context": 1},
        r"^config: data\.window: windows x \(2 \* context \+ 1\) slices make 9 channels; use 1 or 3",
    ),
}


def _dicom_folder(tmp_path: Path) -> dict:
    import pydicom
    from pydicom.data import get_testdata_file

    (tmp_path / "d").mkdir()
    pydicom.dcmread(get_testdata_file("CT_small.dcm")).save_as(tmp_path / "d" / "a")
    (tmp_path / "l.csv").write_text("id,label\nnobody,1\n")
    return {"source": "dicom", "root": str(tmp_path / "d"), "labels_csv": str(tmp_path / "l.csv")}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_one_line_naming_file_field_and_fix(tmp_path, case):
    make, pattern = BAD_INPUT[case]
    raw = {**make(tmp_path), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(ConfigError, match=pattern) as info:
        load_dataset(DataConfig.from_dict(raw), image_size=8, verbose=False)
    assert "\n" not in str(info.value)


def test_dicom_series_folders_stack_into_volumes_in_slice_order(tmp_path):
    import pydicom
    from pydicom.pixels import apply_rescale

    from trainables._volumes import load_volume

    series = shared(*CT, "dicom")
    vol, rotate = load_volume(series)
    assert vol.shape == (512, 512, 20) and not rotate
    files = sorted(series.iterdir(), key=lambda f: float(pydicom.dcmread(f, stop_before_pixels=True).ImagePositionPatient[2]))
    for z in (0, 7, 19):
        ds = pydicom.dcmread(files[z])
        np.testing.assert_array_equal(vol[:, :, z], apply_rescale(ds.pixel_array, ds))
    # Three series (links to the same folder), labelled per volume: each stays in one split.
    for v in range(3):
        (tmp_path / f"case{v}").symlink_to(series, target_is_directory=True)
    pd.DataFrame({"id": [f"case{v}" for v in range(3)], "finding": [0, 1, 0]}).to_csv(tmp_path / "v.csv", index=False)
    raw = {"source": "nifti", "volumes": [str(tmp_path / f"case{v}") for v in range(3)], "labels_csv": str(tmp_path / "v.csv"),
           "label_columns": "finding", "n_slices": 3, "window": "lung", "val_fraction": 0.25, "test_fraction": 0.25,
           "cache_dir": str(tmp_path / "cache")}
    ds = load_dataset(DataConfig.from_dict(raw), image_size=16, verbose=False)
    g = groups_by_split(ds)
    assert sorted(len(v) for v in g.values()) == [1, 1, 1] and set().union(*g.values()) == {"case0", "case1", "case2"}
    assert sum(len(s) for s in ds.splits.values()) == 9
    assert [i.split(":")[1] for i in ds.splits["train"].ids[:3]] == ["z0000", "z0010", "z0019"]


def write_volumes(root: Path, n: int = 8) -> Path:
    """``n`` small NIfTI volumes; finding 1 has a bright block in its middle slices."""
    import nibabel as nib

    rng = np.random.default_rng(3)
    rows = []
    for v in range(n):
        data = rng.normal(0, 30, (16, 16, 6))
        if v % 2:
            data[4:12, 4:12, 1:5] += 300
        nib.save(nib.Nifti1Image(data.astype(np.int16), np.eye(4)), root / f"vol{v}.nii.gz")
        rows.append({"id": f"vol{v}", "finding": v % 2})
    pd.DataFrame(rows).to_csv(root / "volumes.csv", index=False)
    return root


def test_pool_by_group_mean_and_max():
    from trainables import pool_by_group

    probs = np.array([[0.9, 0.1], [0.5, 0.5], [0.2, 0.8], [0.4, 0.6]])
    p, y, g = pool_by_group(probs, np.array([0, 0, 1, 1]), ["a", "a", "b", "b"], how="mean", task="binary")
    assert g == ["a", "b"] and y.tolist() == [0, 1]
    np.testing.assert_allclose(p, [[0.7, 0.3], [0.3, 0.7]])
    p, _, _ = pool_by_group(probs, np.array([[0, 1]] * 4), ["a", "b", "a", "b"], how="max", task="multi-label")
    np.testing.assert_allclose(p, [[0.9, 0.8], [0.5, 0.6]])


def test_volume_labels_train_with_pooled_volume_metrics(tmp_path):
    import yaml

    from search.fit import main

    root = write_volumes(tmp_path)
    data = {"source": "nifti", "volumes": str(root), "labels_csv": str(root / "volumes.csv"), "label_columns": "finding",
            "window": {"center": 100, "width": 600}, "pool": "max", "val_fraction": 0.25, "test_fraction": 0.25,
            "cache_dir": str(tmp_path / "cache")}
    space = {"name": "vol", "data": data, "search": {"metric": "val_auroc", "mode": "max"},
             "fixed": {"backbone": "test_resnet", "epochs": 2, "image_size": 16, "threads": 1, "batch_size": 8, "seed": 0}}
    (tmp_path / "vol.yaml").write_text(yaml.safe_dump(space))
    assert main([str(tmp_path / "vol.yaml"), "--out", str(tmp_path / "run")]) == 0
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert "val_volume_auroc" in metrics.columns and "val_volume_accuracy" in metrics.columns
    preds = pd.read_parquet(tmp_path / "run" / "predictions_val.parquet")
    assert preds["group"].nunique() == 2 and len(preds) == 12  # 2 validation volumes x 6 slices
    with pytest.raises(ConfigError, match=r"data\.pool: pool must be one of mean, max with per-volume labels"):
        DataConfig.from_dict({**_one_volume(tmp_path), "pool": "mean"})


@pytest.mark.parametrize("key", ["path", "patient_id"])
def test_dicom_labels_keyed_by_file_path_or_patient(tmp_path, key):
    import pydicom
    from pydicom.data import get_testdata_file

    root = tmp_path / "dcm"
    root.mkdir()
    names = ["CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm"]
    for i, name in enumerate(names):
        ds = pydicom.dcmread(get_testdata_file(name))
        ds.PatientID = f"P{i}"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        (root / f"s{i}").mkdir()
        ds.save_as(root / f"s{i}" / f"img{i}.dcm")
    keys = [f"s{i}/img{i}.dcm" for i in range(4)] if key == "path" else [f"P{i}" for i in range(4)]
    pd.DataFrame({"k": keys, "label": ["a", "b", "a", "b"]}).to_csv(tmp_path / "l.csv", index=False)
    raw = {"source": "dicom", "root": str(root), "labels_csv": str(tmp_path / "l.csv"), "key": key, "key_column": "k",
           "window": "minmax", "val_fraction": 0.25, "test_fraction": 0.25, "cache_dir": str(tmp_path / "cache")}
    ds = load_dataset(DataConfig.from_dict(raw), image_size=16, verbose=False)
    got = {g: int(lab) for sp in ds.splits.values() for g, lab in zip(sp.groups, sp.labels)}
    assert got == {"P0": 0, "P1": 1, "P2": 0, "P3": 1} and ds.class_names == ["a", "b"]
