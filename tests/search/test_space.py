"""Space files: every shipped one loads; defaults, overrides and errors behave."""

from __future__ import annotations

from pathlib import Path

import pytest

from search import load_space
from trainables import ConfigError, TrainParams

SPACES = sorted((Path(__file__).resolve().parents[2] / "spaces").glob("*.yaml"))


@pytest.mark.parametrize("path", SPACES, ids=[p.stem for p in SPACES])
def test_every_shipped_space_loads_and_its_defaults_are_valid(path):
    space = load_space(path)
    params = TrainParams.from_config(space.defaults(), origin=str(path))
    assert params.backbone
    assert space.data.source.name in ("medmnist", "folder", "csv")


def write(tmp_path, text: str) -> Path:
    p = tmp_path / "s.yaml"
    p.write_text(text)
    return p


BASE = """
name: t
data: {source: medmnist, dataset: pneumoniamnist}
fixed: {epochs: 3}
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  backbone: {type: categorical, choices: [resnet18, resnet34]}
  batch_size: {type: int, low: 16, high: 64, step: 16}
"""


def test_defaults_first_choice_log_midpoint_and_grid(tmp_path):
    d = load_space(write(tmp_path, BASE)).defaults()
    assert d["backbone"] == "resnet18"
    assert d["lr"] == pytest.approx(1e-3)  # geometric midpoint of 1e-4 and 1e-2
    assert d["batch_size"] in (32, 48) and (d["batch_size"] - 16) % 16 == 0
    assert d["epochs"] == 3


def test_set_fixes_a_searched_parameter_and_reaches_nested_keys(tmp_path):
    space = load_space(write(tmp_path, BASE), overrides=["backbone=resnet34", "epochs=5", "data.root=/data", "space.lr.high=0.1"])
    assert "backbone" not in space.params and space.fixed["backbone"] == "resnet34"
    assert space.defaults()["epochs"] == 5
    assert space.data.source.root == "/data"
    assert space.params["lr"].high == 0.1


ERRORS = [
    ("data: [1, 2", r"s\.yaml: YAML syntax error at line"),
    (BASE + "serch: {}\n", r"s\.yaml: serch: unknown key 'serch'; did you mean 'search'\?"),
    (BASE.replace("epochs: 3", "epochs: three"), r"s\.yaml: fixed\.epochs: must be an int, got 'three'"),
    (BASE.replace("epochs: 3", "epohcs: 3"), r"fixed\.epohcs: unknown training parameter 'epohcs'; did you mean 'epochs'\?"),
    (BASE.replace("epochs: 3", "epochs: 0"), r"fixed\.epochs: `epochs` must be an integer >= 1, got 0"),
    (BASE.replace("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-4"), r"space\.lr: `low <= high` must hold"),
    (BASE.replace("low: 1.0e-4, high: 1.0e-2", "low: 0, high: 1.0e-2"), r"space\.lr\.low: `low` must be > 0 when log: true"),
    (BASE.replace("type: float", "type: flaot"), r"space\.lr\.type: `type` must be one of .*did you mean 'float'"),
    (BASE.replace("resnet34]", "resnet81]"), r"space\.backbone\.choices\[1\]: unknown timm backbone 'resnet81'; close names: resnet18"),
    (BASE.replace("fixed: {epochs: 3}", "fixed: {epochs: 3, backbone: resnet18}"), r"fixed\.backbone: 'backbone' is both fixed and searched"),
    (BASE.replace("fixed: {epochs: 3}", "fixed: {epochs: 3, backbone: resnt50}").replace("  backbone: {type: categorical, choices: [resnet18, resnet34]}\n", ""), r"fixed\.backbone: unknown timm backbone 'resnt50'; close names: .*resnet50"),
    (BASE.replace("dataset: pneumoniamnist", "dataset: pneumonia"), r"data\.dataset: unknown MedMNIST dataset 'pneumonia'; did you mean 'pneumoniamnist'"),
    (BASE.replace("source: medmnist", "source: dicom"), r"data\.source: unknown data source 'dicom'; valid: csv, folder, medmnist"),
    ("fixed: {epochs: 3}\n", r"missing `data:` section"),
]


@pytest.mark.parametrize("text,match", ERRORS, ids=[m.split(":")[0][:30] + str(i) for i, (_, m) in enumerate(ERRORS)])
def test_bad_space_files_fail_with_one_line(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match) as info:
        load_space(write(tmp_path, text))
    assert "\n" not in str(info.value)


def test_missing_space_file(tmp_path):
    with pytest.raises(ConfigError, match=r"space file '.*nope\.yaml' does not exist"):
        load_space(tmp_path / "nope.yaml")
