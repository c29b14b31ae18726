"""Bad input, end to end through the commands: each case ends with exit code 2 and one line on stderr
that names the file, the field and the fix; no traceback unless ``--debug``.

Each case writes its input under tmp_path and returns (command, argv, file named, field named, fix named).
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from .._images import write_class_folders
from .conftest import REPO, assert_one_line_error, child_env

FIXED = "{backbone: test_resnet, epochs: 1, batch_size: 8, image_size: 16, threads: 1}"


def space_file(tmp: Path, data: str, fixed: str = FIXED, extra: str = "") -> Path:
    p = tmp / "space.yaml"
    p.write_text(f"name: t\ndata: {data}\nfixed: {fixed}\n{extra}")
    return p


def folder(tmp: Path, **kwargs) -> Path:
    return write_class_folders(tmp / "img", n_per_class=6, size=16, **kwargs)


def fit(tmp: Path, space: Path) -> list[str]:
    return [str(space), "--out", str(tmp / "out")]


# ----------------------------------------------------------------- data


def missing_data_dir(tmp):
    s = space_file(tmp, f"{{source: folder, root: {tmp / 'nowhere'}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), str(tmp / "nowhere"), "data.root", "set data.root"


def empty_class_folder(tmp):
    root = folder(tmp)
    (root / "effusion").mkdir()
    s = space_file(tmp, f"{{source: folder, root: {root}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), "effusion", "data.root", "add images"


def single_class(tmp):
    root = folder(tmp, classes=("normal",))
    s = space_file(tmp, f"{{source: folder, root: {root}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), str(root), "data.root", "at least 2"


def corrupt_png(tmp):
    root = folder(tmp)
    (root / "normal" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    s = space_file(tmp, f"{{source: folder, root: {root}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), "bad.png", "data.on_bad_image", "fix or remove them"


def truncated_jpeg(tmp):
    from PIL import Image

    root = folder(tmp)
    path = root / "pneumonia" / "cut.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes()[:300])
    s = space_file(tmp, f"{{source: folder, root: {root}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), "cut.jpg", "data.on_bad_image", "fix or remove them"


def _npz(tmp: Path, **arrays) -> Path:
    (tmp / "npz").mkdir()
    path = tmp / "npz" / "pneumoniamnist.npz"
    np.savez(path, **arrays)
    return path


def _medmnist_arrays(label: int = 1) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = rng.integers(0, 255, (8, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = np.array([[0], [label]] * 4)
    return arrays


def truncated_npz(tmp):
    path = _npz(tmp, **_medmnist_arrays())
    path.write_bytes(path.read_bytes()[:2000])
    s = space_file(tmp, f"{{source: medmnist, dataset: pneumoniamnist, root: {path.parent}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), str(path), "data.dataset", "download it again"


def npz_labels_out_of_range(tmp):
    path = _npz(tmp, **_medmnist_arrays(label=7))
    s = space_file(tmp, f"{{source: medmnist, dataset: pneumoniamnist, root: {path.parent}, cache_dir: {tmp / 'c'}}}")
    return "fit", fit(tmp, s), str(path), "data.dataset", "outside 0..1"


def _csv(tmp: Path, rows: list[str], header: str = "id,label") -> tuple[Path, Path]:
    img = folder(tmp)
    files = sorted(img.rglob("*.png"))
    csv = tmp / "labels.csv"
    csv.write_text("\n".join([header] + [r.format(f=files[i].relative_to(img).with_suffix("")) for i, r in enumerate(rows)]) + "\n")
    return csv, img


def _csv_space(tmp, csv, img, columns="[label]"):
    return space_file(tmp, f"{{source: csv, labels_csv: {csv}, img_dir: {img}, label_columns: {columns}, cache_dir: {tmp / 'c'}}}")


def csv_unknown_ids(tmp):
    csv, img = _csv(tmp, ["{f},0", "{f},1"] * 4 + ["no_such_image,1"])
    return "fit", fit(tmp, _csv_space(tmp, csv, img)), str(csv), "data.", "no_such_image"


def csv_missing_column(tmp):
    csv, img = _csv(tmp, ["{f},0", "{f},1"] * 4)
    return "fit", fit(tmp, _csv_space(tmp, csv, img, columns="[finding]")), str(csv), "data.label_columns", "finding"


def csv_negative_label(tmp):
    csv, img = _csv(tmp, ["{f},0", "{f},1"] * 4 + ["{f},-3"])
    return "fit", fit(tmp, _csv_space(tmp, csv, img)), str(csv), "data.label_columns", "use 0..K-1"


def multilabel_bad_value(tmp):
    csv, img = _csv(tmp, ["{f},1,0", "{f},0,-1", "{f},,1"] * 3 + ["{f},yes,0"], header="id,effusion,nodule")
    return ("fit", fit(tmp, _csv_space(tmp, csv, img, columns="[effusion, nodule]")), str(csv), "data.label_columns",
            "only 1, 0, -1 (uncertain) or blank")


class _Payload:
    """A pickle that runs a command when unpickled."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.target}",)


def code_in_checkpoint(tmp):
    import pickle

    root = folder(tmp)
    s = space_file(tmp, f"{{source: folder, root: {root}, cache_dir: {tmp / 'c'}}}")
    (tmp / "out" / "checkpoint").mkdir(parents=True)
    (tmp / "out" / "checkpoint" / "state.pt").write_bytes(pickle.dumps({"epoch": _Payload(tmp / "pwned")}, protocol=2))
    return "fit", fit(tmp, s) + ["--resume"], "state.pt", "checkpoint", "delete the checkpoint folder"


# ----------------------------------------------------------------- space files


def _yaml(tmp, text: str) -> Path:
    p = tmp / "space.yaml"
    p.write_text(text)
    return p


GOOD = "name: t\ndata: {source: folder, root: /data}\nfixed: {backbone: test_resnet, epochs: 1}\n"


def yaml_syntax_error(tmp):
    return "run", [str(_yaml(tmp, GOOD + "space:\n  lr: {type: float, low: 1, high: [2\n")), "--dry-run"], "space.yaml", "line", "YAML"


def unknown_key(tmp):
    return "run", [str(_yaml(tmp, GOOD + "serch: {n_trials: 3}\n")), "--dry-run"], "space.yaml", "serch", "did you mean 'search'"


def unknown_parameter(tmp):
    p = _yaml(tmp, GOOD.replace("epochs: 1", "epochs: 1, learning_rate: 0.1"))
    return "run", [str(p), "--dry-run"], "space.yaml", "fixed.learning_rate", "did you mean"


def wrong_type(tmp):
    return "run", [str(_yaml(tmp, GOOD.replace("epochs: 1", "epochs: three"))), "--dry-run"], "space.yaml", "epochs", "three"


def impossible_bounds(tmp):
    p = _yaml(tmp, GOOD + "space:\n  lr: {type: float, low: 0.1, high: 0.001, log: true}\n")
    return "run", [str(p), "--dry-run"], "space.yaml", "space.lr", "low"


def unknown_backbone(tmp):
    return "run", [str(_yaml(tmp, GOOD.replace("test_resnet", "resnet_nope"))), "--dry-run"], "space.yaml", "backbone", "resnet_nope"


def unsafe_yaml_tag(tmp):
    # A safe loader refuses Python tags: nothing is constructed, let alone run.
    p = _yaml(tmp, GOOD + f"storage: !!python/object/apply:os.system ['touch {tmp / 'pwned'}']\n")
    return "run", [str(p), "--dry-run"], "space.yaml", "", "python/object"


DATA_CASES: dict[str, Callable] = {f.__name__: f for f in (
    missing_data_dir, empty_class_folder, single_class, corrupt_png, truncated_jpeg, truncated_npz,
    npz_labels_out_of_range, code_in_checkpoint, csv_unknown_ids, csv_missing_column, csv_negative_label, multilabel_bad_value,
    yaml_syntax_error, unknown_key, unknown_parameter, wrong_type, impossible_bounds, unknown_backbone, unsafe_yaml_tag,
)}


def _main(command: str):
    if command == "fit":
        from search.fit import main
    elif command == "run":
        from search.run import main
    elif command == "build":
        from ensemble.build import main
    else:
        from ensemble.predict import main
    return main


def run_cli(command: str, argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = _main(command)(argv)
    return rc, err.getvalue()


def check(command, argv, file, field, fix) -> None:
    rc, err = run_cli(command, argv)
    assert rc == 2, err
    assert_one_line_error(err, file, field, fix)
    with (pytest.raises(Exception) as info,  # --debug: the error itself, traceback and all
          contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO())):
        _main(command)(argv + ["--debug"])
    from trainables import ConfigError

    assert isinstance(info.value, ConfigError)


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_bad_data_and_space_files(case, tmp_path, no_home_cache):
    command, argv, file, field, fix = DATA_CASES[case](tmp_path)
    check(command, argv, file, field, fix)
    assert not (tmp_path / "pwned").exists()


# ----------------------------------------------------------------- sweeps and bundles (need a finished sweep)


def bad_selection(run_dir, tmp):
    # (A top_k above the usable trials is no longer an error: the ensemble takes all of them, with a warning.)
    return "build", [str(run_dir), "--selection", "topk", "--out", str(tmp / "b")], str(run_dir), "--selection", "top_k"


def _bundle(run_dir: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(run_dir / "ensemble", tmp / "bundle"))


def _predict(bundle: Path, run_dir: Path) -> list[str]:
    image = next((run_dir.parent.parent / "images").rglob("*.png"), None) or next(run_dir.rglob("*.png"))
    return [str(bundle), str(image)]


def bundle_missing_file(run_dir, tmp):
    b = _bundle(run_dir, tmp)
    victim = next((b / "members").glob("*.safetensors"))
    victim.unlink()
    return "predict", _predict(b, run_dir), str(b), victim.name, "rebuild it with python -m ensemble.build"


def bundle_altered_file(run_dir, tmp):
    b = _bundle(run_dir, tmp)
    victim = next((b / "members").glob("*.safetensors"))
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    return "predict", _predict(b, run_dir), str(b), victim.name, "altered"


def bundle_path_outside(run_dir, tmp):
    b = _bundle(run_dir, tmp)
    manifest = json.loads((b / "manifest.json").read_text())
    (tmp / "evil.safetensors").write_bytes((b / manifest["members"][0]["weights"]).read_bytes())
    old = manifest["members"][0]["weights"]
    manifest["members"][0]["weights"] = "../evil.safetensors"
    manifest["files"]["../evil.safetensors"] = manifest["files"].pop(old)
    (b / "manifest.json").write_text(json.dumps(manifest))
    return "predict", _predict(b, run_dir), "manifest.json", "../evil.safetensors", "folder"


SWEEP_CASES = {f.__name__: f for f in (bad_selection, bundle_missing_file, bundle_altered_file, bundle_path_outside)}


@pytest.mark.ray
@pytest.mark.parametrize("case", list(SWEEP_CASES))
def test_bad_sweeps_and_bundles(case, stopped, tmp_path):
    command, argv, file, field, fix = SWEEP_CASES[case](stopped.run_dir, tmp_path)
    check(command, argv, file, field, fix)


# ----------------------------------------------------------------- the real processes


def test_a_real_process_exits_2_with_one_line_and_a_traceback_only_with_debug(tmp_path, no_home_cache):
    # One real process stands for all: the cases above call the same ``main`` in this process.
    _, argv, file, field, fix = unknown_key(tmp_path)
    cmd = [sys.executable, "-m", "search.run", *argv]
    proc = subprocess.run(cmd, cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert_one_line_error(proc.stderr, file, field, fix)
    debug = subprocess.run(cmd + ["--debug"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=120)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
