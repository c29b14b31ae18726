"""Fixtures for sweep tests: a tiny learnable image folder, a Ray instance for this package's tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .._images import write_class_folders

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "spaces" / "smoke.yaml"


def write_images(root: Path, **kwargs) -> Path:
    """``root/<class>/*.png``: each class has a bright quadrant of its own, plus noise."""
    return write_class_folders(root, **kwargs)


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
    # address="local": a Ray of the tests' own, never a cluster `ray start` left running on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
