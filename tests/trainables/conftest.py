"""Fixtures for trainer tests: tiny, learnable image datasets written as files."""

from __future__ import annotations

from pathlib import Path

import pytest

from .._images import write_class_folders, write_multilabel_csv


def write_learnable_folder(root: Path, **kwargs) -> Path:
    """A single ``root/<class>/`` tree, each class with a bright blob in its own corner, plus noise."""
    return write_class_folders(root, **kwargs)


@pytest.fixture
def tiny_data(tmp_path) -> dict:
    """The ``data`` section for a 2-class, 48-image folder dataset, cached under tmp_path."""
    root = write_learnable_folder(tmp_path / "images", n_per_class=24)
    return {"source": "folder", "root": str(root), "val_fraction": 0.25, "test_fraction": 0.25, "cache_dir": str(tmp_path / "cache")}


@pytest.fixture
def tiny_multilabel(tmp_path) -> dict:
    """A CSV multi-label dataset with uncertain (-1) labels masked out."""
    return write_multilabel_csv(tmp_path, n=40, seed=1, noise=40, effusion_signal=180, uncertain_every=7)


def shared_npz(name: str) -> Path | None:
    import os

    candidates = []
    if os.environ.get("MEDSWEEP_DATA_DIR"):
        candidates.append(Path(os.environ["MEDSWEEP_DATA_DIR"]))
    candidates.append(Path(__file__).resolve().parents[3] / "shared" / "datasets")
    for c in candidates:
        if (c / f"{name}.npz").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance with 2 CPUs, shared by the session's Ray tests."""
    import ray

    # address="local": a Ray of the tests' own, never a cluster `ray start` left running on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
