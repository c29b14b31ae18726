"""``python -m search.fit``: a real run, and bad input ending in one line with exit code 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from search.fit import main

from .conftest import write_learnable_folder

REPO = Path(__file__).resolve().parents[2]


def space(tmp_path, data: str, fixed: str = "backbone: test_resnet, epochs: 1, batch_size: 8, image_size: 32, threads: 1") -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(f"name: t\ndata: {data}\nfixed: {{{fixed}}}\n")
    return p


def test_fit_runs_a_folder_space_with_set(tmp_path, capsys):
    root = write_learnable_folder(tmp_path / "img", n_per_class=12)
    s = space(tmp_path, f"{{source: folder, root: {root}, cache_dir: {tmp_path / 'c'}}}")
    assert main([str(s), "--out", str(tmp_path / "out"), "--set", "epochs=2"]) == 0
    assert len(pd.read_csv(tmp_path / "out" / "metrics.csv")) == 2
    assert (tmp_path / "out" / "predictions_test.parquet").is_file()
    assert "class" in capsys.readouterr().out  # class counts printed when the cache is built


def _one_class(tmp_path):
    write_learnable_folder(tmp_path / "one", n_per_class=6, classes=("normal",))
    return f"{{source: folder, root: {tmp_path / 'one'}, cache_dir: {tmp_path / 'c'}}}"


def _csv_without_id(tmp_path):
    root = write_learnable_folder(tmp_path / "img", n_per_class=4)
    (tmp_path / "l.csv").write_text("image,label\nnormal/000,0\n")
    return f"{{source: csv, labels_csv: {tmp_path / 'l.csv'}, img_dir: {root}, cache_dir: {tmp_path / 'c'}}}"


CASES = [
    # (what, data section builder, extra --set, pattern the single line must match)
    ("missing dataset", lambda t: f"{{source: medmnist, dataset: bloodmnist, root: {t / 'empty'}, download: false, cache_dir: {t / 'c'}}}",
     [], r"space\.yaml: data\.dataset: bloodmnist\.npz not found in .*empty; put it there or set data\.root"),
    ("folder with one class", _one_class, [], r"space\.yaml: data\.root: .*must hold at least 2 class folders, found only 'normal'; put each class"),
    ("csv missing id column", _csv_without_id, [], r"space\.yaml: data\.id_column: .*has no column\(s\) 'id'.*columns are image, label: set data\.id_column"),
    ("unknown backbone", lambda t: f"{{source: medmnist, dataset: bloodmnist, root: {t}, cache_dir: {t / 'c'}}}",
     ["backbone=resnet1800"], r"space\.yaml: fixed\.backbone: unknown timm backbone 'resnet1800'; close names: resnet"),
]


@pytest.mark.parametrize("what,data,sets,pattern", CASES, ids=[c[0] for c in CASES])
def test_bad_input_ends_in_one_line_and_exit_2(tmp_path, capsys, what, data, sets, pattern):
    (tmp_path / "empty").mkdir()
    s = space(tmp_path, data(tmp_path))
    argv = [str(s), "--out", str(tmp_path / "out")] + [x for v in sets for x in ("--set", v)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("medsweep: error: ")
    import re

    assert re.search(pattern, err), err


def test_cli_as_a_process_has_no_traceback(tmp_path):
    s = space(tmp_path, f"{{source: folder, root: {tmp_path / 'nowhere'}}}")
    proc = subprocess.run([sys.executable, "-m", "search.fit", str(s), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "data.root" in proc.stderr and "does not exist" in proc.stderr


def test_fit_picks_the_best_epoch_by_the_spaces_metric(tmp_path, monkeypatch):
    """A standalone run selects its best epoch (and so its predictions) as the space's sweep would."""
    import trainables

    seen = {}
    monkeypatch.setattr(trainables, "train", lambda config: seen.update(config) or {"best_score": 0.5})
    s = space(tmp_path, f"{{source: medmnist, dataset: bloodmnist, root: {tmp_path}}}")
    s.write_text(s.read_text() + "search: {metric: val_accuracy, mode: max}\n")
    assert main([str(s), "--out", str(tmp_path / "out")]) == 0
    assert seen["select_metric"] == "val_accuracy" and seen["backbone"] == "test_resnet"
    s.write_text(s.read_text().replace("fixed: {", "fixed: {select_metric: val_auprc, "))
    assert main([str(s), "--out", str(tmp_path / "out")]) == 0
    assert seen["select_metric"] == "val_auprc"  # an explicit choice wins


def test_the_old_command_names_the_new_one(tmp_path):
    """``python -m trainables.fit`` moved to ``search.fit`` (trainables import nothing of search): one line, exit 2."""
    s = space(tmp_path, f"{{source: folder, root: {tmp_path / 'nowhere'}}}")
    proc = subprocess.run([sys.executable, "-m", "trainables.fit", str(s), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == ["medsweep: error: python -m trainables.fit is now python -m search.fit (same arguments), or medsweep-fit"]
    assert not (tmp_path / "o").exists()
