"""The decode-once cache: built once per key, reused, memory-mapped, and the statistics it stores."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from sklearn.utils.class_weight import compute_class_weight

import trainables._cache as cache_mod
import trainables._sources as sources_mod
from trainables._cache import DataConfig, load_dataset
from trainables._sources import SPLITS

pytestmark = pytest.mark.usefixtures("no_home_cache")

LAYOUT = {"train": {"normal": 6, "pneumonia": 2}, "val": {"normal": 2, "pneumonia": 2}, "test": {"normal": 1, "pneumonia": 3}}
N_IMAGES = sum(sum(c.values()) for c in LAYOUT.values())


@pytest.fixture
def folder(tmp_path, write_image):
    """An unbalanced pre-split 2-class folder of 20x20 grey PNGs with a little noise."""
    root = tmp_path / "images"
    rng = np.random.default_rng(0)
    for split, classes in LAYOUT.items():
        for ci, cname in enumerate(sorted(classes)):
            for i in range(classes[cname]):
                img = (rng.integers(0, 30, (20, 20)) + 40 + 150 * ci).astype(np.uint8)
                write_image(root / split / cname / f"{i}.png", img)
    return root


@pytest.fixture
def count_calls(monkeypatch):
    """``count_calls(module, name)`` wraps a function so calls are counted; returns the list of call args."""

    def wrap(module, name):
        calls = []
        original = getattr(module, name)
        lock = threading.Lock()

        def counted(*args, **kwargs):
            with lock:
                calls.append(args)
            return original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
        return calls

    return wrap


def test_cache_is_built_once_and_reused(folder, data_config, cache_root, count_calls):
    decoded = count_calls(sources_mod, "read_image_file")
    builds = count_calls(cache_mod, "_build")
    data = data_config(source="folder", root=str(folder))

    first = load_dataset(data, image_size=16)
    meta = first.path / "meta.json"
    built_at = meta.stat().st_mtime_ns
    n_decoded = len(decoded)
    assert len(builds) == 1 and n_decoded >= N_IMAGES  # every image decoded (plus a few to guess channels)

    # Same data, and the same data after the round trip through Tune's plain config dict.
    second = load_dataset(data, image_size=16)
    third = load_dataset(DataConfig.from_dict(data.to_dict()), image_size=16)

    assert len(builds) == 1 and len(decoded) == n_decoded  # nothing decoded again
    assert second.path == third.path == first.path
    assert meta.stat().st_mtime_ns == built_at
    assert sorted(p.name for p in cache_root.iterdir()) == sorted([first.path.name, f"{first.path.name}.lock"])
    for split in SPLITS:
        assert second.splits[split].ids == first.splits[split].ids
        np.testing.assert_array_equal(second.splits[split].images, first.splits[split].images)
        np.testing.assert_array_equal(second.splits[split].labels, first.splits[split].labels)


def test_cached_images_are_memory_mapped_read_only(folder, data_config):
    ds = load_dataset(data_config(source="folder", root=str(folder)), image_size=16)

    for split in SPLITS:
        images = ds.splits[split].images
        assert isinstance(images, np.memmap)
        assert images.dtype == np.uint8 and images.shape[1:] == (16, 16, 1)
        with pytest.raises(ValueError):  # trials share the file: none may write to it
            images[0, 0, 0, 0] = 1


@pytest.mark.parametrize(
    "change",
    [{"image_size": 24}, {"channels": 3}, {"on_bad_image": "skip"}, {"val_fraction": 0.2}],
    ids=["image_size", "channels", "on_bad_image", "source option"],
)
def test_cache_key_covers_what_changes_the_arrays(folder, data_config, cache_root, change):
    change = dict(change)
    size = change.pop("image_size", 16)
    base = load_dataset(data_config(source="folder", root=str(folder)), image_size=16)
    other = load_dataset(data_config(source="folder", root=str(folder), **change), image_size=size)

    assert other.path != base.path
    assert other.path.parent == base.path.parent == cache_root
    assert (base.path / "meta.json").is_file() and (other.path / "meta.json").is_file()  # both stay
    assert other.splits["train"].images.shape[1:3] == (size, size)
    assert f"-{size}px-" in other.path.name


def test_replaced_medmnist_file_gets_a_new_cache(tmp_path, data_config):
    path = tmp_path / "mm" / "pneumoniamnist.npz"
    path.parent.mkdir()

    def write(n_train):
        arrays = {}
        for split, n in (("train", n_train), ("val", 2), ("test", 2)):
            arrays[f"{split}_images"] = np.zeros((n, 28, 28), np.uint8)
            arrays[f"{split}_labels"] = (np.arange(n) % 2).reshape(-1, 1)
        np.savez(path, **arrays)

    data = dict(source="medmnist", dataset="pneumoniamnist", root=str(path.parent), download=False)
    write(4)
    before = load_dataset(data_config(**data))
    write(6)  # e.g. a reduced split swapped for the full one, under the same name
    after = load_dataset(data_config(**data))

    assert len(before.splits["train"]) == 4 and len(after.splits["train"]) == 6
    assert after.path != before.path


def test_class_counts_printed_on_build_only(folder, data_config, capsys):
    data = data_config(source="folder", root=str(folder))

    ds = load_dataset(data, image_size=16)
    out = capsys.readouterr().out
    assert out.count("[medsweep] binary data, 2 classes") == 1
    assert str(ds.path) in out
    lines = out.splitlines()
    assert lines[1].split() == ["class", "train", "val", "test"]
    assert lines[2].split() == ["normal", "6", "2", "1"]
    assert lines[3].split() == ["pneumonia", "2", "2", "3"]

    load_dataset(data, image_size=16)
    assert capsys.readouterr().out == ""


def test_verbose_false_prints_nothing(folder, data_config, capsys):
    load_dataset(data_config(source="folder", root=str(folder)), image_size=16, verbose=False)
    assert capsys.readouterr().out == ""


def test_class_weights_balanced_from_train_labels(folder, data_config):
    ds = load_dataset(data_config(source="folder", root=str(folder)), image_size=16)

    train = ds.splits["train"].labels
    expected = compute_class_weight("balanced", classes=np.arange(ds.num_classes), y=train)
    assert ds.class_weights == pytest.approx(expected.tolist())
    assert ds.class_weights == pytest.approx([8 / (2 * 6), 8 / (2 * 2)])  # n / (k * n_c)
    assert ds.class_counts == {s: [c["normal"], c["pneumonia"]] for s, c in LAYOUT.items()}


def test_class_weight_of_a_class_absent_from_train_is_one(tmp_path, write_image, data_config):
    img_dir = tmp_path / "img"
    rows = []
    for i, (label, split) in enumerate([(0, "train"), (1, "train"), (1, "train"), (0, "val"), (2, "test")]):
        write_image(img_dir / f"r{i}.png", np.full((4, 4), 50 * i, np.uint8))
        rows.append(f"r{i},{label},{split}")
    (tmp_path / "l.csv").write_text("id,label,split\n" + "\n".join(rows) + "\n")
    ds = load_dataset(
        data_config(source="csv", labels_csv=str(tmp_path / "l.csv"), img_dir=str(img_dir), split_column="split"),
        image_size=4,
    )

    present = compute_class_weight("balanced", classes=np.array([0, 1]), y=ds.splits["train"].labels)
    assert ds.class_names == ["0", "1", "2"]
    assert ds.class_weights == pytest.approx([*present.tolist(), 1.0])


def test_channel_mean_and_std_come_from_train(folder, data_config):
    ds = load_dataset(data_config(source="folder", root=str(folder)), image_size=16)

    train = np.asarray(ds.splits["train"].images, dtype=np.float64) / 255.0
    assert ds.mean == pytest.approx([train.mean()], abs=1e-9)
    assert ds.std == pytest.approx([train.std()], abs=1e-6)


def test_concurrent_loads_build_once(folder, data_config, count_calls):
    builds = count_calls(cache_mod, "_build")
    data = data_config(source="folder", root=str(folder))
    start = threading.Barrier(3)
    results, errors = [], []

    def load():
        start.wait()
        try:
            results.append(load_dataset(data, image_size=16, verbose=False))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)

    assert errors == [] and len(results) == 3
    assert len(builds) == 1  # the lock made the others wait, then they found the cache
    assert len({r.path for r in results}) == 1
    assert all(len(r.splits["train"]) == 8 for r in results)


def test_adding_an_image_to_the_folder_rebuilds_the_cache(folder, data_config, write_image):
    data = data_config(source="folder", root=str(folder))
    before = load_dataset(data, image_size=16, verbose=False)
    write_image(folder / "train" / "pneumonia" / "new.png", np.full((20, 20), 200, np.uint8))
    after = load_dataset(data_config(source="folder", root=str(folder)), image_size=16, verbose=False)
    assert after.path != before.path
    assert len(after.splits["train"]) == len(before.splits["train"]) + 1
    assert "pneumonia/new.png" in [i.split("train/", 1)[-1] for i in after.splits["train"].ids]


def test_auto_channels_looks_beyond_the_first_class(tmp_path, write_image, data_config):
    """Class 'a' is grey and listed first; class 'b' is colour: auto must give 3 channels."""
    rng = np.random.default_rng(0)
    for split in SPLITS:
        for i in range(40):
            write_image(tmp_path / "c" / split / "a" / f"{i}.png", rng.integers(0, 255, (8, 8), dtype=np.uint8))
        for i in range(3):
            write_image(tmp_path / "c" / split / "b" / f"{i}.png", rng.integers(0, 255, (8, 8, 3), dtype=np.uint8))
    ds = load_dataset(data_config(source="folder", root=str(tmp_path / "c")), image_size=8, verbose=False)
    assert ds.channels == 3
