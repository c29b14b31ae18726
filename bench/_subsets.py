"""Small, stratified, seeded cuts of a MedMNIST npz, standing in for small real medical sets.

A variant is named ``<dataset>`` (the whole file) or ``<dataset>-<n_train>`` (a cut): ``pneumoniamnist-500``
has 500 training images stratified by class, a validation split cut to the same fraction of the original
(about 67 of PneumoniaMNIST's 524; small real sets have 78-120), and the official test split whole.

A size above the train split's (``bloodmnist-30000``) grows it instead, standing in for a large set: the
pool is the train images under the 8 rotations and flips of the square (label-preserving for blood cells,
a stand-in only for radiographs), ``n_train`` of them are drawn stratified, and val and test are whole.
It has as many training arrays as a large set and costs as much to train on, but fewer independent images.
A ``v<n_val>`` suffix (``bloodmnist-90000v10000``) grows the validation split the same way, standing in for
a large set's large validation split (PathMNIST's 10,004, ChestMNIST's 11,219): its copies are near-duplicates.

An ``n<percent>`` suffix (``bloodmnist-1000n30``) then gives that share of every split's labels, test included,
a uniformly drawn other class (seeded apart from the cut, so the images are those of ``bloodmnist-1000``):
a stand-in for a task whose graders disagree and whose ceiling is low, such as RetinaMNIST's five grades
(test AUROC about 0.72 in the MedMNIST v2 table), where training longer memorises noise and a
validation split of a hundred images ranks trials loosely.

Bench scripts load this file by path (bench/ is not a package, and bench/ast.py shadows the stdlib's ``ast``)::

    spec = importlib.util.spec_from_file_location("_subsets", Path(__file__).with_name("_subsets.py"))
    subsets = importlib.util.module_from_spec(spec); spec.loader.exec_module(subsets)
    paths = subsets.make_variants("/tmp/bench-data", ["pneumoniamnist-500"], src_dir=shared_dir())
    # then: python -m search.run spaces/cxr.yaml --set data.root=/tmp/bench-data/pneumoniamnist-500
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` when this file runs as a script.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import json
import os
import re
from pathlib import Path

import numpy as np

# The bench's datasets: both shared files whole, and 500- and 1,000-image cuts of their train splits.
VARIANTS = ("pneumoniamnist", "pneumoniamnist-500", "pneumoniamnist-1000", "bloodmnist", "bloodmnist-500", "bloodmnist-1000")
MIN_PER_CLASS = 2
_NAME = re.compile(r"^(?P<dataset>[a-z0-9_]+?)(?:-(?P<n>[0-9]+)(?:v(?P<v>[0-9]+))?(?:n(?P<noise>[0-9]+))?)?$")


def parse_variant(name: str) -> tuple[str, int | None]:
    """``"bloodmnist-1000"`` -> ``("bloodmnist", 1000)``; ``"bloodmnist"`` -> ``("bloodmnist", None)`` (the whole file)."""
    m = _NAME.match(name)
    if m is None:
        raise ValueError(f"variant {name!r}: expected <dataset>, <dataset>-<n_train>, <dataset>-<n_train>v<n_val> "
                         "or any of those cuts with n<percent> (label noise), e.g. pneumoniamnist-500 or bloodmnist-1000n30")
    if m["noise"] is not None and not 0 < int(m["noise"]) < 100:
        raise ValueError(f"variant {name!r}: the label noise n<percent> must be in 1-99, got n{m['noise']}")
    return m["dataset"], (int(m["n"]) if m["n"] else None)


def variant_val(name: str) -> int | None:
    """The grown validation size a variant names (``"bloodmnist-90000v10000"`` -> 10000), else ``None``."""
    parse_variant(name)
    v = _NAME.match(name)["v"]
    return int(v) if v else None


def variant_noise(name: str) -> float:
    """The share of relabelled images a variant names (``"bloodmnist-1000n30"`` -> 0.3), else 0."""
    parse_variant(name)
    noise = _NAME.match(name)["noise"]
    return int(noise) / 100 if noise else 0.0


def allocate(counts: np.ndarray, n: int, *, minimum: int = MIN_PER_CLASS) -> np.ndarray:
    """Per-class sizes summing to ``n``, proportional to ``counts``, each >= ``minimum``.

    A class with fewer than ``minimum`` images keeps all of them.
    """
    counts = np.asarray(counts, dtype=int)
    floor = np.minimum(counts, minimum)
    if n < floor.sum() or n > counts.sum():
        raise ValueError(f"cannot take {n} images from classes of sizes {counts.tolist()} with at least {minimum} each")
    share = counts / counts.sum() * n
    size = np.clip(np.floor(share).astype(int), floor, counts)
    # The rest one image at a time: added where the class is most under its share, relative to the share,
    # taken back where that costs least (so a floor raised for a small class comes out of a large one).
    while size.sum() != n:
        if size.sum() < n:
            gap = np.where(size < counts, (share - size) / share, -np.inf)
            size[int(np.argmax(gap))] += 1
        else:
            gap = np.where(size > floor, (share - size + 1) / share, np.inf)
            size[int(np.argmin(gap))] -= 1
    return size


def stratified_indices(labels: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n`` of ``labels`` (1-D), stratified by class, at least 2 per class, drawn with ``rng``."""
    classes, counts = np.unique(labels, return_counts=True)
    sizes = allocate(counts, n)
    keep = [rng.choice(np.flatnonzero(labels == c), size=k, replace=False) for c, k in zip(classes, sizes)]
    return np.sort(np.concatenate(keep))


def cut(src_npz: str | Path, dst_npz: str | Path, *, n_train: int, seed: int, val_ratio: float | None = None,
        n_val: int | None = None, noise: float = 0.0) -> dict:
    """Write a stratified, seeded subset of the MedMNIST npz ``src_npz`` to ``dst_npz``; return its split sizes.

    Train: ``n_train`` images, stratified by class, at least 2 per class. Val: the same fraction of the
    original val split as train was cut to (``val_ratio`` overrides it), stratified, at least 2 per class.
    Test: kept whole (the official split). The same seed gives the same images. A grown train split
    (``n_train`` above the original's) keeps val whole, or grows it to ``n_val`` alike. ``noise`` in [0, 1):
    that share of every split's labels is replaced by another class (see ``relabel``).

    Example:
        >>> cut("../shared/datasets/pneumoniamnist.npz", "/tmp/p500/pneumoniamnist.npz", n_train=500, seed=0)
        {'train': 500, 'val': 67, 'test': 624}
    """
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    with np.load(src_npz) as z:
        y_train = z["train_labels"].reshape(len(z["train_labels"]), -1)[:, 0]
        if len(y_train) < n_train <= 8 * len(y_train):
            return _write(dst_npz, relabel(_grow(z, n_train=n_train, rng=rng, n_val=n_val), noise, seed=seed))
        if n_val is not None:
            raise ValueError(f"a validation size (v{n_val}) is only grown with the train split; n_train {n_train} cuts it")
        if not 0 < n_train < len(y_train):
            raise ValueError(f"n_train must be in (0, {len(y_train)}) to cut or up to {8 * len(y_train)} to grow {src_npz}, got {n_train}")
        ratio = n_train / len(y_train) if val_ratio is None else val_ratio
        if not 0 < ratio <= 1:
            raise ValueError(f"val_ratio must be in (0, 1], got {ratio}")
        for split in ("train", "val", "test"):
            images, labels = z[f"{split}_images"], z[f"{split}_labels"]
            if split == "test":
                keep = np.arange(len(labels))
            else:
                flat = labels.reshape(len(labels), -1)[:, 0]
                n = n_train if split == "train" else max(int(round(len(flat) * ratio)), 1)
                n = max(n, int(np.minimum(np.unique(flat, return_counts=True)[1], MIN_PER_CLASS).sum()))
                keep = stratified_indices(flat, n, rng)
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images[keep], labels[keep]
    return _write(dst_npz, relabel(arrays, noise, seed=seed))


def relabel(arrays: dict[str, np.ndarray], noise: float, *, seed: int) -> dict[str, np.ndarray]:
    """``arrays`` with ``noise`` of each split's labels replaced by a uniformly drawn other class.

    Its own generator (from ``seed``), so a noisy variant keeps the images of its clean one. Single-label
    files only: a multi-label file's columns are not classes to swap.
    """
    if not noise:
        return arrays
    if not 0 < noise < 1:
        raise ValueError(f"noise must be in [0, 1), got {noise}")
    splits = ("train", "val", "test")
    if any(arrays[f"{s}_labels"].reshape(len(arrays[f"{s}_labels"]), -1).shape[1] != 1 for s in splits):
        raise ValueError("label noise needs a single-label file (one label column)")
    k = int(max(arrays[f"{s}_labels"].max() for s in splits)) + 1
    rng = np.random.default_rng([seed, 1])
    out = dict(arrays)
    for s in splits:
        labels = arrays[f"{s}_labels"].copy()
        flat = labels.reshape(-1)
        hit = rng.random(len(flat)) < noise
        flat[hit] = (flat[hit] + rng.integers(1, k, size=int(hit.sum()))) % k  # never the class it had
        out[f"{s}_labels"] = labels
    return out


def _dihedral(images: np.ndarray, k: int) -> np.ndarray:
    """The ``k``-th (0-7) rotation/flip of the square of ``images`` (N, H, W[, C])."""
    out = np.rot90(images, k % 4, axes=(1, 2))
    return np.ascontiguousarray(out[:, :, ::-1] if k >= 4 else out)


def _grow(z, *, n_train: int, rng: np.random.Generator, n_val: int | None = None) -> dict[str, np.ndarray]:
    """The arrays of a train split of ``n_train`` drawn from the 8 rotations/flips of ``z``'s train split; val
    whole (or grown to ``n_val`` alike), test whole."""
    arrays = {}
    for split, n in (("train", n_train), ("val", n_val)):
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
        if n is None or n == len(labels):
            arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
            continue
        if not len(labels) < n <= 8 * len(labels):
            raise ValueError(f"a grown {split} split must hold ({len(labels)}, {8 * len(labels)}] images, got {n}")
        pool_labels = np.concatenate([labels] * 8)
        flat = pool_labels.reshape(len(pool_labels), -1)[:, 0]
        keep = stratified_indices(flat, n, rng)
        copy, index = np.divmod(keep, len(labels))
        grown = np.empty((n, *images.shape[1:]), dtype=images.dtype)
        for k in range(8):
            sel = copy == k
            if sel.any():
                grown[sel] = _dihedral(images[index[sel]], k)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = grown, pool_labels[keep]
    arrays["test_images"], arrays["test_labels"] = z["test_images"], z["test_labels"]
    return arrays


def _write(dst_npz: str | Path, arrays: dict[str, np.ndarray]) -> dict:
    dst = Path(dst_npz)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    with open(tmp, "wb") as fh:  # a file object: np.savez would append ".npz" to a path
        np.savez(fh, **arrays)
    os.replace(tmp, dst)  # a reader never sees half a file
    return {s: int(len(arrays[f"{s}_labels"])) for s in ("train", "val", "test")}


def make_variants(root: str | Path, names=VARIANTS, *, src_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Write each variant as ``<root>/<variant>/<dataset>.npz``; return ``{variant: folder}`` for ``data.root``.

    The whole-file variants link to the source. A cut already written with the same source, size and
    seed is kept (``cut.json`` beside it says how it was made).

    Example:
        >>> make_variants("/tmp/bench-data", ["pneumoniamnist-500"], src_dir="../shared/datasets")
        {'pneumoniamnist-500': PosixPath('/tmp/bench-data/pneumoniamnist-500')}
    """
    out: dict[str, Path] = {}
    for name in names:
        dataset, n_train = parse_variant(name)
        src = Path(src_dir).resolve() / f"{dataset}.npz"
        if not src.is_file():
            raise FileNotFoundError(f"{src} not found (variant {name})")
        folder = Path(root) / name
        dst = folder / f"{dataset}.npz"
        folder.mkdir(parents=True, exist_ok=True)
        if n_train is None:
            if not (dst.is_symlink() and dst.resolve() == src):
                dst.unlink(missing_ok=True)
                dst.symlink_to(src)
        else:
            stat = src.stat()
            meta = {"src": str(src), "src_size": stat.st_size, "src_mtime": stat.st_mtime, "n_train": n_train, "seed": seed,
                    "n_val": variant_val(name), "noise": variant_noise(name)}
            meta_file = folder / "cut.json"
            old = json.loads(meta_file.read_text()) if meta_file.is_file() else None
            if not (dst.is_file() and old is not None and {k: old.get(k) for k in meta} == meta):
                meta["sizes"] = cut(src, dst, n_train=n_train, seed=seed, n_val=meta["n_val"], noise=meta["noise"])
                meta_file.write_text(json.dumps(meta, indent=2))
        out[name] = folder
    return out


def main(argv=None) -> int:
    """``python bench/_subsets.py ROOT [VARIANT ...] [--seed 0]``: write the variants, print their folders."""
    import argparse

    parser = argparse.ArgumentParser(description="Write MedMNIST bench variants as ROOT/<variant>/<dataset>.npz.")
    parser.add_argument("root")
    parser.add_argument("variants", nargs="*", default=list(VARIANTS), help=f"default: {' '.join(VARIANTS)}")
    parser.add_argument("--src-dir", default=os.environ.get("MEDSWEEP_DATA_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "datasets")))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        for name, folder in make_variants(args.root, args.variants, src_dir=args.src_dir, seed=args.seed).items():
            sizes = json.loads((folder / "cut.json").read_text())["sizes"] if (folder / "cut.json").is_file() else "whole file"
            print(f"{name}: {folder} ({sizes})")
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
