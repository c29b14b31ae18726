"""Fixtures for sweep tests: a tiny learnable image folder, a Ray instance for this package's tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "spaces" / "smoke.yaml"


def write_images(root: Path, *, n_per_class: int = 24, size: int = 32, classes=("normal", "pneumonia"), seed: int = 0) -> Path:
    """``root/<class>/*.png``: each class has a bright quadrant of its own, plus noise."""
    rng = np.random.default_rng(seed)
    for ci, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, size=(size, size)).astype(np.uint8)
            r, c = divmod(ci, 2)
            h = size // 2
            img[r * h : (r + 1) * h, c * h : (c + 1) * h] += 150
            Image.fromarray(img).save(root / name / f"{i:03d}.png")
    return root


@pytest.fixture(scope="package")
def images(tmp_path_factory) -> Path:
    """48 images in two classes, 32 px, and a cache folder next to them."""
    return write_images(tmp_path_factory.mktemp("sweep-data") / "images")


@pytest.fixture(scope="package")
def ray_session():
    """A local 2-CPU Ray for this package's tests; shut down before other packages start their own."""
    import ray

    if ray.is_initialized():  # another package's session fixture is still up: share it
        yield ray
        return
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
