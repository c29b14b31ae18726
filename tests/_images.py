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
