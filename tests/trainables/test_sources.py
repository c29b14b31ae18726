"""Data sources (folder, CSV, MedMNIST) seen through the cache: shapes, labels, ids and the errors users get.

Every image is generated in tmp_path and carries its identity in its pixels (a constant grey
value, a colour, a gradient), so a test can check that each cached image sits next to its own
label and id, not only that the shapes are right.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainables._cache import load_dataset
from trainables._errors import ConfigError
from trainables._sources import SPLITS, CSVSource, FolderSource

pytestmark = pytest.mark.usefixtures("no_home_cache")

SIZES = [(16, 16), (20, 12), (9, 31), (40, 40)]  # (height, width): every one is resized to 16x16


def _cached_values(split) -> dict[str, np.ndarray]:
    """id -> cached image of one split."""
    return dict(zip(split.ids, split.images))


# --------------------------------------------------------------------------- folder, pre-split


GREY_LAYOUT = {"train": {"benign": 4, "malignant": 3}, "val": {"benign": 2, "malignant": 2}, "test": {"benign": 1, "malignant": 2}}


def _grey_value(ci: int, i: int) -> int:
    return 30 + 120 * ci + 7 * i  # class 0 dark (30..51), class 1 bright (150..171)


@pytest.fixture
def grey_tree(tmp_path, write_image):
    """``root/{train,val,test}/{benign,malignant}/*.png`` of constant grey images in four sizes.

    Returns the root and ``{id: (label, grey value)}``.
    """
    root = tmp_path / "grey"
    expected = {}
    for split, classes in GREY_LAYOUT.items():
        for ci, cname in enumerate(sorted(classes)):
            for i in range(classes[cname]):
                value = _grey_value(ci, i)
                write_image(root / split / cname / f"{cname}_{i}.png", np.full(SIZES[i % len(SIZES)], value, np.uint8))
                expected[f"{split}/{cname}/{cname}_{i}.png"] = (ci, value)
    # Things a real folder holds that are not images of a class.
    (root / "train" / "benign" / "notes.txt").write_text("not an image")
    (root / "train" / ".thumbnails").mkdir()
    return root, expected


def test_folder_presplit_grey_png(grey_tree, data_config):
    root, expected = grey_tree
    ds = load_dataset(data_config(source="folder", root=str(root)), image_size=16)

    assert ds.task == "binary" and not ds.multilabel
    assert ds.class_names == ["benign", "malignant"] and ds.num_classes == 2
    assert ds.channels == 1 and ds.image_size == 16
    assert ds.class_counts == {"train": [4, 3], "val": [2, 2], "test": [1, 2]}
    assert ds.bad_images == []
    for split in SPLITS:
        sp = ds.splits[split]
        want = {k: v for k, v in expected.items() if k.startswith(f"{split}/")}
        assert sorted(sp.ids) == sorted(want)
        assert sp.images.shape == (len(want), 16, 16, 1) and sp.images.dtype == np.uint8
        assert sp.labels.dtype == np.int64
        for sid, label, img in zip(sp.ids, sp.labels, sp.images):
            assert label == want[sid][0], sid
            assert np.all(img == want[sid][1]), sid  # a constant image stays exact through the resize
        dark, bright = (float(sp.images[sp.labels == c].mean()) for c in (0, 1))
        assert dark < 60 and bright > 140


COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]  # by sorted class index: red, green, blue


@pytest.fixture
def rgb_tree(tmp_path, write_image):
    """``root/{train,val,test}/<class>/*.jpg``, three classes each in its own colour."""
    root = tmp_path / "rgb"
    names = ["platelet", "basophil", "erythroblast"]  # written unsorted on purpose
    for split, n in (("train", 3), ("val", 1), ("test", 2)):
        for cname in names:
            colour = COLOURS[sorted(names).index(cname)]
            for i in range(n):
                write_image(root / split / cname / f"{i}.jpg", np.full((*SIZES[i], 3), colour, np.uint8), quality=95)
    return root


def test_folder_presplit_rgb_jpeg(rgb_tree, data_config):
    ds = load_dataset(data_config(source="folder", root=str(rgb_tree), channels="auto"), image_size=16)

    assert ds.task == "multi-class"
    assert ds.class_names == ["basophil", "erythroblast", "platelet"]
    assert ds.channels == 3
    assert ds.class_counts == {"train": [3, 3, 3], "val": [1, 1, 1], "test": [2, 2, 2]}
    for split, n in (("train", 9), ("val", 3), ("test", 6)):
        sp = ds.splits[split]
        assert sp.images.shape == (n, 16, 16, 3)
        for sid, label, img in zip(sp.ids, sp.labels, sp.images):
            assert sid.split("/")[1] == ds.class_names[label]
            # JPEG is lossy: the colour comes back within a few levels.
            assert np.abs(img.astype(int) - COLOURS[label]).max() <= 8, sid


def test_folder_16bit_png_is_windowed_per_image(tmp_path, data_config, write_image):
    root = tmp_path / "xray16"
    ramp = np.arange(256, dtype=np.uint16).reshape(16, 16)
    written = {}
    # Each image uses only part of the 12-bit range, at a different offset; class 1 runs the other way.
    for split in SPLITS:
        for ci, cname in enumerate(("normal", "pneumonia")):
            for i, (lo, step) in enumerate(((0, 16), (1000, 4), (3000, 3))):
                pattern = ramp if ci == 0 else ramp[::-1, ::-1]
                path = write_image(root / split / cname / f"{i}.png", (lo + step * pattern).astype(np.uint16))
                written[f"{split}/{cname}/{i}.png"] = pattern
    with Image.open(path) as img:
        assert img.mode == "I;16"  # the files really are 16-bit

    ds = load_dataset(data_config(source="folder", root=str(root)), image_size=16)

    assert ds.channels == 1 and ds.task == "binary"
    for split in SPLITS:
        for sid, img in _cached_values(ds.splits[split]).items():
            assert img.dtype == np.uint8
            assert img.min() == 0 and img.max() == 255, sid  # the full 8-bit range, whatever the offset
            np.testing.assert_array_equal(img[..., 0], written[sid], err_msg=sid)


@pytest.mark.parametrize("channels", [1, 3])
def test_folder_channels_can_be_forced(grey_tree, rgb_tree, data_config, channels):
    grey = load_dataset(data_config(source="folder", root=str(grey_tree[0]), channels=channels), image_size=8)
    rgb = load_dataset(data_config(source="folder", root=str(rgb_tree), channels=channels), image_size=8)

    for ds in (grey, rgb):
        assert ds.channels == channels
        assert ds.splits["train"].images.shape[1:] == (8, 8, channels)
    if channels == 3:  # grey copied into three equal channels
        g = grey.splits["train"].images
        assert np.array_equal(g[..., 0], g[..., 1]) and np.array_equal(g[..., 1], g[..., 2])
    else:  # colour converted to luminance: red, green, blue give three distinct greys, green the brightest
        sp = rgb.splits["train"]
        means = [float(sp.images[sp.labels == c].mean()) for c in range(3)]
        assert means[1] > means[0] > means[2]


# --------------------------------------------------------------------------- folder, one tree split by fractions

TREE_COUNTS = {"normal": 10, "opacity": 12, "nodule": 14}  # sorted: nodule, normal, opacity


@pytest.fixture
def class_tree(tmp_path, write_image):
    """``root/<class>/*.png`` with no split folders; each image's grey value encodes its class."""
    root = tmp_path / "tree"
    names = sorted(TREE_COUNTS)
    for cname, n in TREE_COUNTS.items():
        for i in range(n):
            write_image(root / cname / f"{i:03d}.png", np.full((12, 12), 40 + 80 * names.index(cname), np.uint8))
    return root


def _split_ids(source: FolderSource) -> dict[str, list[str]]:
    return {s: sp.ids for s, sp in source.index().splits.items()}


def test_folder_split_by_fractions_is_stratified_and_complete(class_tree, data_config):
    ds = load_dataset(
        data_config(source="folder", root=str(class_tree), val_fraction=0.2, test_fraction=0.2, seed=0), image_size=8
    )

    assert ds.class_names == ["nodule", "normal", "opacity"] and ds.task == "multi-class"
    all_ids = [sid for s in SPLITS for sid in ds.splits[s].ids]
    expected = {f"{c}/{i:03d}.png" for c, n in TREE_COUNTS.items() for i in range(n)}
    assert len(all_ids) == len(set(all_ids)) == 36  # no id in two splits
    assert set(all_ids) == expected  # every image is somewhere
    for split in SPLITS:
        sp = ds.splits[split]
        assert set(sp.labels.tolist()) == {0, 1, 2}, split  # every class in every split
        for sid, label, img in zip(sp.ids, sp.labels, sp.images):
            assert ds.class_names[label] == sid.split("/")[0]
            assert np.all(img == 40 + 80 * label)
    assert len(ds.splits["train"]) > len(ds.splits["val"]) > 0 and len(ds.splits["test"]) > 0
    # Stratified: class proportions of train follow the folder's.
    assert ds.class_counts["train"] == [8, 6, 7]
    assert sum(map(sum, ds.class_counts.values())) == 36


def test_folder_split_depends_on_seed_only(class_tree):
    make = lambda seed: FolderSource(root=str(class_tree), val_fraction=0.2, test_fraction=0.2, seed=seed)  # noqa: E731
    first, again, other = _split_ids(make(0)), _split_ids(make(0)), _split_ids(make(1))

    assert first == again
    assert first != other
    assert {s: len(v) for s, v in first.items()} == {s: len(v) for s, v in other.items()}
    assert sorted(sum(first.values(), [])) == sorted(sum(other.values(), []))


# --------------------------------------------------------------------------- csv


@pytest.fixture
def csv_images(tmp_path, write_image):
    """``img/p00..p11`` (mostly .png, p03 and p07 .jpg); the grey value is 40 for even ids, 200 for odd."""
    img_dir = tmp_path / "img"
    for i in range(12):
        ext = ".jpg" if i in (3, 7) else ".png"
        write_image(img_dir / f"p{i:02d}{ext}", np.full((10, 10), 40 if i % 2 == 0 else 200, np.uint8))
    return img_dir


def _write_csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text("\n".join([header, *rows]) + "\n")
    return path


SPLIT_OF = ["Train", "train", "TRAIN", "train", "train", "train", "val", "VAL", "val", "test", "test", "test"]


@pytest.mark.parametrize("extension", [".png", "png", None])
def test_csv_class_names_split_column_and_extension(tmp_path, csv_images, data_config, extension):
    # Class names as strings; ids without extension; the split from a column (case-insensitive).
    rows = [f"p{i:02d},{'normal' if i % 2 == 0 else 'effusion'},{SPLIT_OF[i]}" for i in range(12)]
    csv = _write_csv(tmp_path / "labels.csv", "image_id,finding,split", rows)
    ds = load_dataset(
        data_config(
            source="csv", labels_csv=str(csv), img_dir=str(csv_images), id_column="image_id", label_columns="finding",
            split_column="split", extension=extension,
        ),
        image_size=8,
    )

    assert ds.task == "binary" and ds.class_names == ["effusion", "normal"]
    assert ds.splits["train"].ids == [f"p{i:02d}" for i in range(6)]
    assert ds.splits["val"].ids == ["p06", "p07", "p08"]
    assert ds.splits["test"].ids == ["p09", "p10", "p11"]
    for split in SPLITS:
        sp = ds.splits[split]
        for sid, label, img in zip(sp.ids, sp.labels, sp.images):
            odd = int(sid[1:]) % 2 == 1
            assert label == (0 if odd else 1), sid  # effusion=0 on odd ids
            assert abs(int(img.mean()) - (200 if odd else 40)) <= 3, sid  # p03/p07 are JPEGs
    assert ds.class_counts["train"] == [3, 3]


def test_csv_extension_picks_between_two_files(tmp_path, write_image):
    img_dir = tmp_path / "img"
    for i in range(6):
        write_image(img_dir / f"q{i}.png", np.zeros((4, 4), np.uint8))
        write_image(img_dir / f"q{i}.jpg", np.zeros((4, 4), np.uint8))
    csv = _write_csv(tmp_path / "l.csv", "id,label", [f"q{i},{i % 2}" for i in range(6)])

    def paths(**keys) -> list[str]:
        index = CSVSource(labels_csv=str(csv), img_dir=str(img_dir), **keys).index()
        return sorted(p for sp in index.splits.values() for p in sp.paths)

    assert paths(extension=".jpg") == sorted(str(img_dir / f"q{i}.jpg") for i in range(6))
    assert paths() == sorted(str(img_dir / f"q{i}.png") for i in range(6))  # automatic: first of IMAGE_EXTENSIONS


def test_csv_integer_labels_and_ids_with_extension(tmp_path, csv_images, data_config):
    exts = {3: ".jpg", 7: ".jpg"}
    rows = [f"p{i:02d}{exts.get(i, '.png')},{i % 3}" for i in range(12)]
    csv = _write_csv(tmp_path / "labels.csv", "id,label", rows)
    ds = load_dataset(
        data_config(source="csv", labels_csv=str(csv), img_dir=str(csv_images), val_fraction=0.25, test_fraction=0.25),
        image_size=8,
    )

    assert ds.task == "multi-class" and ds.class_names == ["0", "1", "2"]
    all_ids = [sid for s in SPLITS for sid in ds.splits[s].ids]
    assert sorted(all_ids) == sorted(r.split(",")[0] for r in rows)
    for split in SPLITS:
        sp = ds.splits[split]
        assert set(sp.labels.tolist()) == {0, 1, 2}, split  # stratified
        for sid, label in zip(sp.ids, sp.labels):
            assert label == int(sid[1:3]) % 3


# Rows m0..m4 train, m5..m6 val, m7..m8 test; "" is a blank, -1 uncertain.
ML_ROWS = [
    ("m0", "1", "0", "", "train"),
    ("m1", "0", "-1", "1", "train"),
    ("m2", "-1", "1", "0", "train"),
    ("m3", "1", "", "0", "train"),
    ("m4", "0", "0", "1", "train"),
    ("m5", "1", "1", "-1", "val"),
    ("m6", "", "0", "1", "val"),
    ("m7", "0", "1", "0", "test"),
    ("m8", "1", "-1", "", "test"),
]
FILL = {"ones": 1.0, "zeros": 0.0, "ignore": -1.0}


@pytest.fixture
def multilabel_csv(tmp_path, write_image):
    img_dir = tmp_path / "ml"
    for i, row in enumerate(ML_ROWS):
        write_image(img_dir / f"{row[0]}.png", np.full((8, 8), 20 * i, np.uint8))
    csv = _write_csv(tmp_path / "ml.csv", "id,effusion,edema,mass,split", [",".join(r) for r in ML_ROWS])
    return {"source": "csv", "labels_csv": str(csv), "img_dir": str(img_dir), "label_columns": ["effusion", "edema", "mass"]}


@pytest.mark.parametrize("uncertain", ["ones", "zeros", "ignore"])
@pytest.mark.parametrize("blank", ["ones", "zeros", "ignore"])
def test_csv_multilabel_uncertain_and_blank_policies(multilabel_csv, data_config, uncertain, blank):
    ds = load_dataset(data_config(**multilabel_csv, split_column="split", uncertain=uncertain, blank=blank), image_size=8)

    assert ds.task == "multi-label" and ds.multilabel
    assert ds.class_names == ["effusion", "edema", "mass"]
    want = {r[0]: [FILL[blank] if v == "" else FILL[uncertain] if v == "-1" else float(v) for v in r[1:4]] for r in ML_ROWS}
    for split in SPLITS:
        sp = ds.splits[split]
        assert sp.ids == [r[0] for r in ML_ROWS if r[4] == split]
        assert sp.labels.dtype == np.float32 and sp.labels.shape == (len(sp.ids), 3)
        np.testing.assert_array_equal(sp.labels, [want[i] for i in sp.ids])
        for sid, img in zip(sp.ids, sp.images):
            assert np.all(img == 20 * int(sid[1:]))
        assert ds.class_counts[split] == [int(v) for v in (sp.labels == 1).sum(0)]
    # Class weights: negatives / positives per label on train, masked (-1) entries left out.
    train = ds.splits["train"].labels
    neg, pos = (train == 0).sum(0), (train == 1).sum(0)
    assert ds.class_weights == pytest.approx([n / p if p else 1.0 for n, p in zip(neg, pos)])


def test_csv_multilabel_default_policies_mask_uncertain(multilabel_csv, data_config):
    ds = load_dataset(data_config(**multilabel_csv, split_column="split"), image_size=8)

    # Defaults: uncertain -> -1 (masked), blank -> 0.
    np.testing.assert_array_equal(ds.splits["train"].labels[1], [0, -1, 1])
    np.testing.assert_array_equal(ds.splits["train"].labels[0], [1, 0, 0])
    # train: effusion 2 pos / 2 neg (m2 masked), edema 1 / 3 (m1 masked), mass 2 / 3
    assert ds.class_weights == pytest.approx([1.0, 3.0, 1.5])
    assert ds.class_counts == {"train": [2, 1, 2], "val": [1, 1, 1], "test": [1, 1, 0]}


def test_csv_multilabel_without_split_column_keeps_every_row(multilabel_csv, data_config):
    ds = load_dataset(data_config(**multilabel_csv, val_fraction=0.25, test_fraction=0.25), image_size=8)

    ids = [sid for s in SPLITS for sid in ds.splits[s].ids]
    assert sorted(ids) == [r[0] for r in ML_ROWS]
    assert all(len(ds.splits[s]) > 0 for s in SPLITS)


# --------------------------------------------------------------------------- unreadable files


@pytest.fixture
def tree_with_bad_files(grey_tree, write_image):
    """The grey tree plus a PNG of garbage bytes in train and a JPEG cut in half in val."""
    root, expected = grey_tree
    garbage = root / "train" / "benign" / "garbage.png"
    garbage.write_bytes(b"this is not a PNG file at all" * 20)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    truncated = write_image(root / "val" / "malignant" / "truncated.jpg", noise, quality=90)
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return root, expected, garbage, truncated


def test_bad_images_error_lists_both_and_leaves_no_cache(tree_with_bad_files, data_config, cache_root):
    root, _, garbage, truncated = tree_with_bad_files
    data = data_config(source="folder", root=str(root), on_bad_image="error")

    with pytest.raises(ConfigError, match=r"^data\.on_bad_image: 2 unreadable image\(s\): ") as info:
        load_dataset(data, image_size=16)

    message = str(info.value)
    assert "\n" not in message
    assert str(garbage) in message and str(truncated) in message
    assert "data.on_bad_image: skip" in message  # the way out
    assert [p.name for p in cache_root.iterdir() if not p.name.endswith(".lock")] == []

    # Once the files are gone, the same config builds.
    garbage.unlink()
    truncated.unlink()
    ds = load_dataset(data, image_size=16)
    assert ds.class_counts["train"] == [4, 3] and ds.bad_images == []


def test_bad_images_skip_drops_them_and_keeps_labels_aligned(tree_with_bad_files, data_config, capsys):
    root, expected, garbage, truncated = tree_with_bad_files
    ds = load_dataset(data_config(source="folder", root=str(root), on_bad_image="skip"), image_size=16)

    assert sorted(p for p, _ in ds.bad_images) == sorted([str(garbage), str(truncated)])
    assert all(reason for _, reason in ds.bad_images)  # each says why
    assert "skipped 2 unreadable image(s)" in capsys.readouterr().err
    assert ds.class_counts == {"train": [4, 3], "val": [2, 2], "test": [1, 2]}
    for split in SPLITS:
        sp = ds.splits[split]
        assert len(sp.ids) == len(sp.labels) == len(sp.images)
        assert sorted(sp.ids) == sorted(k for k in expected if k.startswith(f"{split}/"))
        for sid, label, img in zip(sp.ids, sp.labels, sp.images):
            assert (label, int(img[0, 0, 0])) == expected[sid], sid


# --------------------------------------------------------------------------- configuration errors


def _png_tree(root: Path, counts: dict[str, int]) -> Path:
    for cname, n in counts.items():
        (root / cname).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((4, 4), 10 * i, np.uint8)).save(root / cname / f"{i}.png")
    return root


def _csv_case(tmp_path: Path, header: str, rows: list[str], **keys) -> dict:
    img_dir = tmp_path / "csvimg"
    img_dir.mkdir()
    for i in range(4):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(img_dir / f"p{i}.png")
    csv = _write_csv(tmp_path / "labels.csv", header, rows)
    return {"source": "csv", "labels_csv": str(csv), "img_dir": str(img_dir), **keys}


def _presplit_empty_class(tmp_path: Path) -> dict:
    for split in SPLITS:
        _png_tree(tmp_path / "ps" / split, {"a": 1, "b": 0 if split == "train" else 1})
    return {"source": "folder", "root": str(tmp_path / "ps")}


ERROR_CASES = {
    "missing data folder": (
        lambda t: {"source": "folder", "root": str(t / "no-such-folder")},
        r"^data\.root: data folder '.*no-such-folder' does not exist; set data\.root",
    ),
    "one class folder": (
        lambda t: {"source": "folder", "root": str(_png_tree(t / "one", {"only": 5}))},
        r"^data\.root: .*one must hold at least 2 class folders, found only 'only'",
    ),
    "empty class folder": (
        lambda t: {"source": "folder", "root": str(_png_tree(t / "e", {"a": 5, "b": 0}))},
        r"^data\.root: class folder\(s\) b in .*e hold no images",
    ),
    "empty class folder in train/": (
        _presplit_empty_class,
        r"^data\.root: class folder\(s\) b in .*ps/train hold no images",
    ),
    "class too small to split": (
        lambda t: {"source": "folder", "root": str(_png_tree(t / "s", {"a": 5, "b": 2}))},
        r"^data\.root: class\(es\) b in .* have fewer than 3 images",
    ),
    "classes too small to stratify": (
        lambda t: {"source": "folder", "root": str(_png_tree(t / "s", {"a": 3, "b": 3}))},
        r"^data\.root: .*too few images per class \(a: 3, b: 3\) to put every class in train, val and test",
    ),
    "csv without its id column": (
        lambda t: _csv_case(t, "image,label", [f"p{i},{i % 2}" for i in range(4)]),
        r"^data\.id_column: .*labels\.csv has no column\(s\) 'id'; columns are image, label: set data\.id_column",
    ),
    "csv with an unknown id": (
        lambda t: _csv_case(t, "id,label", [f"p{i},{i % 2}" for i in range(4)] + ["ghost,1"]),
        r"^data\.id_column: .*labels\.csv: 1 id\(s\) match no image in .*csvimg: ghost;",
    ),
    "csv label blank": (
        lambda t: _csv_case(t, "id,label", ["p0,a", "p1,", "p2,b", "p3,a"]),
        r"column 'label' is blank on line\(s\) \[3\]",
    ),
    "csv split column value": (
        lambda t: _csv_case(t, "id,label,split", [f"p{i},{i % 2},training" for i in range(4)], split_column="split"),
        r"^data\.split_column: .*column 'split' holds training; allowed values are train, val, test",
    ),
    "multi-label value 2": (
        lambda t: _csv_case(t, "id,a,b", ["p0,1,0", "p1,0,2", "p2,1,1", "p3,0,0"], label_columns=["a", "b"]),
        r"^data\.label_columns: .*column 'b' line 3 holds '2'; multi-label columns may hold only 1, 0, -1",
    ),
    "multi-label value yes": (
        lambda t: _csv_case(t, "id,a,b", ["p0,1,0", "p1,0,1", "p2,yes,1", "p3,0,0"], label_columns=["a", "b"]),
        r"^data\.label_columns: .*column 'a' line 4 holds 'yes'; multi-label columns may hold only",
    ),
    "unknown source": (
        lambda t: {"source": "folders", "root": str(t)},
        r"^config: data\.source: Unknown data source 'folders'; valid: csv, dicom, folder, medmnist, nifti; did you mean 'folder'\?$",
    ),
    "no source": (
        lambda t: {"root": str(t)},
        r"^config: data\.source: Unknown data source None; valid: csv, dicom, folder, medmnist, nifti$",
    ),
    "unknown key": (
        lambda t: {"source": "folder", "root": str(t), "val_fractoin": 0.2},
        r"^config: data\.val_fractoin: unknown key 'val_fractoin'; did you mean 'val_fraction'.*; valid keys: ",
    ),
    "unknown key close to a common key": (
        lambda t: {"source": "folder", "root": str(t), "on_bad_images": "skip"},
        r"unknown key 'on_bad_images'; did you mean 'on_bad_image'\?; valid keys: allow_group_overlap, cache_dir, channels, group_pattern, on_bad_image",
    ),
    "missing required key": (
        lambda t: {"source": "csv", "img_dir": str(t)},
        r"^config: data\.labels_csv: missing required key 'labels_csv' for source 'csv'",
    ),
    "bad on_bad_image": (
        lambda t: {"source": "folder", "root": str(t), "on_bad_image": "ignore"},
        r"^config: data\.on_bad_image: must be skip or error, got 'ignore'$",
    ),
    "bad channels": (
        lambda t: {"source": "folder", "root": str(t), "channels": 2},
        r"^config: data\.channels: must be auto, 1 or 3, got 2$",
    ),
    "val_fraction above 1": (
        lambda t: {"source": "folder", "root": str(t), "val_fraction": 1.5},
        r"^config: data\.val_fraction: `val_fraction` must be in \(0, 1\), got 1\.5",
    ),
    "val_fraction zero": (
        lambda t: {"source": "csv", "labels_csv": "x.csv", "img_dir": str(t), "val_fraction": 0},
        r"^config: data\.val_fraction: `val_fraction` must be in \(0, 1\), got 0",
    ),
    "fractions leave no train": (
        lambda t: {"source": "folder", "root": str(t), "val_fraction": 0.5, "test_fraction": 0.5},
        r"^config: data\.val_fraction: val_fraction \+ test_fraction must be below 1, got 1\.000",
    ),
    "bad uncertain policy": (
        lambda t: {"source": "csv", "labels_csv": "x.csv", "img_dir": str(t), "uncertain": "maybe"},
        r"^config: data\.uncertain: `uncertain` must be one of ones, zeros, ignore, got 'maybe'",
    ),
    "unknown medmnist dataset": (
        lambda t: {"source": "medmnist", "dataset": "pneumonia_mnist", "root": str(t)},
        r"^config: data\.dataset: unknown MedMNIST dataset 'pneumonia_mnist'; did you mean 'pneumoniamnist'",
    ),
    "bad medmnist size": (
        lambda t: {"source": "medmnist", "dataset": "pneumoniamnist", "size": 32, "root": str(t)},
        r"^config: data\.size: MedMNIST size must be one of 28, 64, 128, 224, got 32",
    ),
}


@pytest.mark.parametrize("case", list(ERROR_CASES), ids=list(ERROR_CASES))
def test_config_errors_are_one_line_and_say_what_to_fix(tmp_path, data_config, case):
    make_raw, pattern = ERROR_CASES[case]
    raw = make_raw(tmp_path)

    with pytest.raises(ConfigError, match=pattern) as info:
        load_dataset(data_config(**raw), image_size=8)

    assert "\n" not in str(info.value)
    assert info.value.field and info.value.field.startswith("data")


# --------------------------------------------------------------------------- medmnist

FAKE_COUNTS = {"train": 10, "val": 4, "test": 6}


def _write_fake_npz(path: Path, counts: dict[str, int] = FAKE_COUNTS, *, max_label: int = 1) -> Path:
    """A MedMNIST-layout npz: image i of split s is constant ``60 * s + 5 * i``; label ``i % (max_label + 1)``."""
    arrays = {}
    for si, (split, n) in enumerate(counts.items()):
        values = (60 * si + 5 * np.arange(n)).astype(np.uint8)
        arrays[f"{split}_images"] = np.broadcast_to(values[:, None, None], (n, 28, 28)).copy()
        arrays[f"{split}_labels"] = (np.arange(n) % (max_label + 1)).reshape(-1, 1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return path


def test_medmnist_fake_npz(tmp_path, data_config):
    _write_fake_npz(tmp_path / "mm" / "pneumoniamnist.npz")
    ds = load_dataset(data_config(source="medmnist", dataset="pneumoniamnist", root=str(tmp_path / "mm"), download=False))

    assert ds.task == "binary" and ds.class_names == ["normal", "pneumonia"]
    assert ds.channels == 1 and ds.image_size == 28  # the file's own size by default
    for si, (split, n) in enumerate(FAKE_COUNTS.items()):
        sp = ds.splits[split]
        assert sp.ids == [f"{split}_{i}" for i in range(n)]
        assert sp.images.shape == (n, 28, 28, 1)
        np.testing.assert_array_equal(sp.labels, np.arange(n) % 2)
        np.testing.assert_array_equal(sp.images[:, 3, 3, 0], 60 * si + 5 * np.arange(n))
    assert ds.class_counts == {"train": [5, 5], "val": [2, 2], "test": [3, 3]}


def test_medmnist_missing_file_without_download(tmp_path, data_config):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"pneumoniamnist_64\.npz not found in .*empty; .*download is off") as info:
        load_dataset(data_config(source="medmnist", dataset="pneumoniamnist", size=64, root=str(tmp_path / "empty"), download=False))
    assert "\n" not in str(info.value)


def test_medmnist_damaged_file(tmp_path, data_config):
    path = _write_fake_npz(tmp_path / "mm" / "pneumoniamnist.npz")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])

    with pytest.raises(ConfigError, match=r"^data\.dataset: cannot read .*pneumoniamnist\.npz .*the file is damaged") as info:
        load_dataset(data_config(source="medmnist", dataset="pneumoniamnist", root=str(tmp_path / "mm"), download=False))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "arrays, pattern",
    [
        ({"train_images": np.zeros((2, 28, 28), np.uint8)}, r"lacks the arrays train_labels, val_images, .*; it is not a MedMNIST npz"),
        (None, r"train_labels holds values outside 0\.\.1; the file is not pneumoniamnist"),
    ],
    ids=["missing arrays", "labels out of range"],
)
def test_medmnist_wrong_file(tmp_path, data_config, arrays, pattern):
    path = tmp_path / "mm" / "pneumoniamnist.npz"
    if arrays is None:
        _write_fake_npz(path, max_label=3)
    else:
        path.parent.mkdir()
        np.savez(path, **arrays)

    with pytest.raises(ConfigError, match=pattern):
        load_dataset(data_config(source="medmnist", dataset="pneumoniamnist", root=str(path.parent), download=False))


def _shared_dataset_dir(name: str) -> Path | None:
    """``$MEDSWEEP_DATA_DIR`` or ``<repo>/../shared/datasets``, if it holds ``name``."""
    candidates = [Path(os.environ["MEDSWEEP_DATA_DIR"])] if os.environ.get("MEDSWEEP_DATA_DIR") else []
    candidates.append(Path(__file__).resolve().parents[2].parent / "shared" / "datasets")
    return next((c for c in candidates if (c / name).is_file()), None)


REAL_DIR = _shared_dataset_dir("pneumoniamnist.npz")  # read before any fixture touches the environment


@pytest.mark.skipif(REAL_DIR is None, reason="pneumoniamnist.npz not in $MEDSWEEP_DATA_DIR or ../shared/datasets")
def test_medmnist_real_pneumoniamnist(data_config):
    ds = load_dataset(data_config(source="medmnist", dataset="pneumoniamnist", root=str(REAL_DIR), download=False))

    assert ds.task == "binary" and ds.class_names == ["normal", "pneumonia"] and ds.channels == 1
    assert {s: ds.splits[s].images.shape for s in SPLITS} == {
        "train": (3882, 28, 28, 1),
        "val": (524, 28, 28, 1),
        "test": (624, 28, 28, 1),
    }
    assert ds.class_counts["train"] == [388, 3494]
    assert ds.class_counts["test"] == [234, 390]
    assert ds.splits["val"].ids[:2] == ["val_0", "val_1"]
    assert 0.2 < ds.mean[0] < 0.8 and 0.05 < ds.std[0] < 0.5


def test_csv_integer_labels_use_the_values_present(tmp_path, write_image, data_config):
    """Labels {1, 2} are two classes named '1' and '2', not three with an empty '0'."""
    rows = ["id,label"]
    for i in range(24):
        write_image(tmp_path / "img" / f"x{i}.png", np.full((8, 8), 10 * i, np.uint8))
        rows.append(f"x{i},{1 + i % 2}")
    (tmp_path / "l.csv").write_text("\n".join(rows) + "\n")
    from trainables._cache import load_dataset as load

    ds = load(data_config(source="csv", labels_csv=str(tmp_path / "l.csv"), img_dir=str(tmp_path / "img")), image_size=8, verbose=False)
    assert ds.class_names == ["1", "2"] and ds.task == "binary"
    assert set(np.unique(ds.splits["train"].labels)) == {0, 1}
