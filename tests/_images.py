"""Tiny learnable image folders for tests: each class has a bright quadrant of its own, over noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_class_folders(
    root: Path,
    *,
    n_per_class: int = 24,
    size: int = 32,
    classes=("normal", "pneumonia"),
    seed: int = 0,
    noise: int = 60,
    signal: int = 150,
) -> Path:
    """``root/<class>/NNN.png`` grey images; lower ``signal`` against ``noise`` makes the task harder."""
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, noise, size=(size, size)).astype(np.int32)
            r, c = divmod(ci, 2)
            h = size // 2
            img[r * h : (r + 1) * h, c * h : (c + 1) * h] += signal
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / name / f"{i:03d}.png")
    return root


def write_multilabel_csv(
    root: Path, *, n: int, seed: int, noise: int, effusion_signal: int, uncertain_every: int
) -> dict:
    """A 2-label CSV dataset (effusion: bright top half, nodule: brighter left half) with every
    ``uncertain_every``-th nodule label -1 (masked); returns its ``data`` section, cached under ``root``."""
    rng = np.random.default_rng(seed)
    img_dir = root / "ml"
    img_dir.mkdir(parents=True)
    rows = ["id,effusion,nodule"]
    for i in range(n):
        eff, nod = int(rng.integers(0, 2)), int(rng.integers(0, 2))
        img = rng.integers(0, noise, size=(32, 32)).astype(np.uint8)
        if eff:
            img[:16] += effusion_signal
        if nod:
            img[:, :16] += 60
        Image.fromarray(img).save(img_dir / f"p{i}.png")
        rows.append(f"p{i},{eff},{'-1' if i % uncertain_every == 0 else nod}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return {
        "source": "csv", "labels_csv": str(root / "labels.csv"), "img_dir": str(img_dir),
        "label_columns": ["effusion", "nodule"], "uncertain": "ignore",
        "val_fraction": 0.25, "test_fraction": 0.25, "cache_dir": str(root / "cache"),
    }
