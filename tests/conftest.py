"""Shared fixtures: tiny generated images and ``data`` sections whose cache stays under tmp_path."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image


def _write_image(path: Path, array: np.ndarray, **save_kwargs: Any) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array)).save(path, **save_kwargs)
    return path


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, array, **save_kwargs)``: save an array with PIL (format from the suffix), making parent folders."""
    return _write_image


@pytest.fixture
def cache_root(tmp_path: Path) -> Path:
    """Where a test's decoded arrays go; never ``~/.cache``."""
    return tmp_path / "cache"


@pytest.fixture
def data_config(cache_root: Path) -> Callable[..., Any]:
    """``data_config(source=..., **keys)``: a validated ``DataConfig`` with ``cache_dir`` under tmp_path."""
    from trainables._cache import DataConfig

    def make(**raw: Any) -> DataConfig:
        raw.setdefault("cache_dir", str(cache_root))
        return DataConfig.from_dict(raw)

    return make


@pytest.fixture
def no_home_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the default cache into tmp_path, in case a code path ignores ``cache_dir``."""
    monkeypatch.setenv("MEDSWEEP_CACHE", str(tmp_path / "default-cache"))
