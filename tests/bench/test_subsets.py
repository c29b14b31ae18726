"""bench/_subsets.py: stratified, seeded cuts of a MedMNIST npz (train and val cut alike, test whole)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("medsweep_bench__subsets", REPO / "bench" / "_subsets.py")
subsets = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(subsets)


@pytest.fixture
def npz(tmp_path):
    """A skewed 3-class file in MedMNIST's layout: train 1000 (800/150/50), val 200, test 90."""
    rng = np.random.default_rng(1)

    def split(counts):
        y = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])[:, None].astype(np.uint8)
        return rng.integers(0, 256, (len(y), 28, 28, 3), dtype=np.uint8), y

    arrays = {}
    for name, counts in (("train", (800, 150, 50)), ("val", (160, 30, 10)), ("test", (30, 30, 30))):
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = split(counts)
    path = tmp_path / "src" / "toymnist.npz"
    path.parent.mkdir()
    np.savez(path, **arrays)
    return path


def test_cut_is_stratified_and_cuts_val_by_the_same_fraction(npz, tmp_path):
    sizes = subsets.cut(npz, tmp_path / "a.npz", n_train=100, seed=0)
    assert sizes == {"train": 100, "val": 20, "test": 90}
    with np.load(tmp_path / "a.npz") as z, np.load(npz) as src:
        assert np.bincount(z["train_labels"][:, 0]).tolist() == [80, 15, 5]
        # 16 / 3 / 1 by share; the third class gets its 2 from the largest one
        assert np.bincount(z["val_labels"][:, 0]).tolist() == [15, 3, 2]
        assert z["train_labels"].shape == (100, 1) and z["train_images"].shape == (100, 28, 28, 3)
        np.testing.assert_array_equal(z["test_images"], src["test_images"])  # the official test split, whole
        # Every image kept is one of the source's (a subset, no copies made up).
        src_rows = {r.tobytes() for r in src["train_images"]}
        assert all(r.tobytes() in src_rows for r in z["train_images"])
        assert len({r.tobytes() for r in z["train_images"]}) == 100


def test_cut_is_deterministic_for_a_seed(npz, tmp_path):
    subsets.cut(npz, tmp_path / "a.npz", n_train=60, seed=3)
    subsets.cut(npz, tmp_path / "b.npz", n_train=60, seed=3)
    subsets.cut(npz, tmp_path / "c.npz", n_train=60, seed=4)
    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b, np.load(tmp_path / "c.npz") as c:
        np.testing.assert_array_equal(a["train_images"], b["train_images"])
        np.testing.assert_array_equal(a["val_images"], b["val_images"])
        assert not np.array_equal(a["train_images"], c["train_images"])


def test_small_classes_keep_two_images(npz, tmp_path):
    subsets.cut(npz, tmp_path / "a.npz", n_train=10, seed=0)
    with np.load(tmp_path / "a.npz") as z:
        assert np.bincount(z["train_labels"][:, 0]).min() >= 2 and len(z["train_labels"]) == 10
        assert np.bincount(z["val_labels"][:, 0]).min() >= 2


def test_allocate_sums_and_respects_the_floor():
    assert subsets.allocate(np.array([1, 5, 100]), 10).tolist() == [1, 2, 7]
    assert subsets.allocate(np.array([30, 30, 30]), 10).sum() == 10
    with pytest.raises(ValueError, match="cannot take"):
        subsets.allocate(np.array([5, 5]), 3)


def test_make_variants_writes_root_variant_dataset(npz, tmp_path):
    root = tmp_path / "data"
    got = subsets.make_variants(root, ["toymnist", "toymnist-100"], src_dir=npz.parent, seed=0)
    assert got == {"toymnist": root / "toymnist", "toymnist-100": root / "toymnist-100"}
    assert (root / "toymnist" / "toymnist.npz").resolve() == npz.resolve()  # the whole file, linked
    with np.load(root / "toymnist-100" / "toymnist.npz") as z:
        assert len(z["train_labels"]) == 100
    before = (root / "toymnist-100" / "toymnist.npz").stat().st_mtime_ns
    subsets.make_variants(root, ["toymnist-100"], src_dir=npz.parent, seed=0)  # same cut: kept
    assert (root / "toymnist-100" / "toymnist.npz").stat().st_mtime_ns == before
    subsets.make_variants(root, ["toymnist-100"], src_dir=npz.parent, seed=1)  # another seed: rewritten
    assert (root / "toymnist-100" / "toymnist.npz").stat().st_mtime_ns != before


@pytest.mark.parametrize("bad", ["Toy", "toy-", "toy-1-2"])
def test_parse_variant_rejects_bad_names(bad):
    with pytest.raises(ValueError, match="expected <dataset>"):
        subsets.parse_variant(bad)


def test_cut_rejects_n_train_out_of_range(npz, tmp_path):
    with pytest.raises(ValueError, match="n_train must be in"):
        subsets.cut(npz, tmp_path / "a.npz", n_train=1000, seed=0)
    with pytest.raises(ValueError, match="to grow"):
        subsets.cut(npz, tmp_path / "a.npz", n_train=8001, seed=0)


def test_a_size_above_the_train_split_grows_it_by_rotations_and_flips(npz, tmp_path):
    sizes = subsets.cut(npz, tmp_path / "g.npz", n_train=3000, seed=0)
    assert sizes == {"train": 3000, "val": 200, "test": 90}
    with np.load(tmp_path / "g.npz") as z, np.load(npz) as src:
        assert np.bincount(z["train_labels"][:, 0]).tolist() == [2400, 450, 150]  # stratified
        np.testing.assert_array_equal(z["val_images"], src["val_images"])
        # every grown image is one of the 8 rotations/flips of a source image of the same class
        originals = {}
        for img, y in zip(src["train_images"], src["train_labels"][:, 0]):
            for k in range(8):
                originals[subsets._dihedral(img[None], k)[0].tobytes()] = int(y)
        got = [originals.get(img.tobytes()) for img in z["train_images"]]
        assert got == z["train_labels"][:, 0].tolist()
        assert len({img.tobytes() for img in z["train_images"]}) == 3000  # drawn without replacement


def test_a_grown_variant_can_grow_its_validation_split_too(npz, tmp_path):
    assert subsets.parse_variant("toymnist-3000v1000") == ("toymnist", 3000)
    assert subsets.variant_val("toymnist-3000v1000") == 1000 and subsets.variant_val("toymnist-3000") is None
    got = subsets.make_variants(tmp_path / "v", ["toymnist-3000v1000"], src_dir=npz.parent, seed=0)
    with np.load(got["toymnist-3000v1000"] / "toymnist.npz") as z, np.load(npz) as src:
        assert (len(z["train_labels"]), len(z["val_labels"]), len(z["test_labels"])) == (3000, 1000, 90)
        assert np.bincount(z["val_labels"][:, 0]).tolist() == [800, 150, 50]  # stratified like the source's val
        originals = {subsets._dihedral(img[None], k)[0].tobytes(): int(y)
                     for img, y in zip(src["val_images"], src["val_labels"][:, 0]) for k in range(8)}
        assert [originals.get(img.tobytes()) for img in z["val_images"]] == z["val_labels"][:, 0].tolist()
    with pytest.raises(ValueError, match="only grown with the train split"):
        subsets.cut(npz, tmp_path / "a.npz", n_train=500, seed=0, n_val=1000)
    with pytest.raises(ValueError, match="grown val split must hold"):
        subsets.cut(npz, tmp_path / "a.npz", n_train=3000, seed=0, n_val=5000)


def test_a_noisy_variant_relabels_its_share_of_every_split_on_the_clean_cut_s_images(npz, tmp_path):
    assert subsets.parse_variant("toymnist-500n30") == ("toymnist", 500)
    assert subsets.variant_noise("toymnist-500n30") == 0.3 and subsets.variant_noise("toymnist-500") == 0.0
    got = subsets.make_variants(tmp_path / "v", ["toymnist-500", "toymnist-500n30"], src_dir=npz.parent, seed=0)
    with np.load(got["toymnist-500"] / "toymnist.npz") as clean, np.load(got["toymnist-500n30"] / "toymnist.npz") as noisy:
        for split in ("train", "val", "test"):
            np.testing.assert_array_equal(noisy[f"{split}_images"], clean[f"{split}_images"])
            moved = noisy[f"{split}_labels"][:, 0] != clean[f"{split}_labels"][:, 0]
            assert abs(moved.mean() - 0.3) < 0.12, (split, moved.mean())  # a changed label is always another class
            assert set(noisy[f"{split}_labels"][:, 0].tolist()) <= {0, 1, 2}


@pytest.mark.parametrize("bad", ["toy-500n0", "toy-500n100", "toy-500n"])
def test_label_noise_out_of_range_or_without_a_cut_is_rejected(bad):
    with pytest.raises(ValueError):
        subsets.variant_noise(bad)
