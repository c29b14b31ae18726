"""Fixtures for ensemble tests: one real smoke sweep (which builds its ensemble), and copies of its folders.

The sweep runs ``spaces/smoke.yaml`` once per package on generated 32 px images that a 2-epoch
``test_resnet`` learns only partly, so members differ and the combiners have something to do.
"""

from __future__ import annotations

import contextlib
import io
import shutil
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from .._images import write_class_folders

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "spaces" / "smoke.yaml"
PATH_COLUMNS = ("path", "checkpoint", "predictions_val", "predictions_test")


def write_images(root: Path, *, n_per_class: int = 32, **kwargs) -> Path:
    """``root/<class>/*.png``: noise with a faint bright quadrant per class (learnable, not at once)."""
    return write_class_folders(root, n_per_class=n_per_class, noise=120, signal=35, **kwargs)


def run_cli(main, argv: list[str]) -> tuple[int, str, str]:
    """Run a ``main(argv)`` with stdout and stderr captured: (status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@dataclass
class Sweep:
    run_dir: Path
    images: Path
    cache: Path
    rc: int
    stdout: str
    stderr: str

    @property
    def bundle(self) -> Path:
        return self.run_dir / "ensemble"


@pytest.fixture(scope="package")
def sweep(tmp_path_factory) -> Sweep:
    """The smoke sweep (4 trials, 2 epochs) with its ensemble step, run once for the package."""
    from search.run import main

    root = tmp_path_factory.mktemp("ensemble-sweep")
    images = write_images(root / "images")
    argv = [
        str(SMOKE),
        "--set", f"data.root={images}",
        "--set", f"data.cache_dir={root / 'cache'}",
        "--set", "ensemble.n_folds=3",
        "--out", str(root / "runs"),
    ]
    rc, stdout, stderr = run_cli(main, argv)
    return Sweep(run_dir=root / "runs" / "smoke", images=images, cache=root / "cache", rc=rc, stdout=stdout, stderr=stderr)


def copy_run(run_dir: Path, dst: Path) -> Path:
    """A copy of a run folder whose leaderboard points into the copy."""
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("ensemble", ".ensemble*"))
    board = pd.read_parquet(dst / "leaderboard.parquet")
    for col in PATH_COLUMNS:
        board[col] = [str(v).replace(str(run_dir), str(dst)) if isinstance(v, str) else v for v in board[col]]
    board.to_parquet(dst / "leaderboard.parquet", index=False)
    return dst


@pytest.fixture
def bundle_copy(sweep: Sweep, tmp_path: Path) -> Path:
    """A copy of the sweep's bundle that a test may damage."""
    return Path(shutil.copytree(sweep.bundle, tmp_path / "bundle"))
