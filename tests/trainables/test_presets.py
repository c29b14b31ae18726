"""Every shipped recipe preset runs standalone through ``python -m search.fit`` (tiny data, 2 epochs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from search import load_space
from search.fit import main

from .conftest import shared_npz, write_learnable_folder

PRESETS = sorted((Path(__file__).resolve().parents[2] / "spaces" / "presets").glob("*.yaml"))
TINY = ["backbone=test_resnet", "pretrained=false", "image_size=32", "batch_size=8", "epochs=2", "threads=1"]
# Each preset's schedule compressed into 2 epochs, so its techniques all run.
COMPRESS = {
    "auto": [],  # the default sweep's defaults (EMA, random sampler), epochs fixed by TINY
    "cxr_ast": ["ast_start_epoch=1"],
    "dr_two_stage": ["freeze_epochs=1", "early_stop_patience=null"],
    "tb_full": ["early_stop_patience=null"],
    "chexpert_stack": ["accum_steps=2"],
    "ct_progressive": ["unfreeze_step=1"],
}
MULTILABEL = {"chexpert_stack", "ct_progressive"}


def test_every_preset_has_a_test():
    assert {p.stem for p in PRESETS} == set(COMPRESS)


def space_including(tmp_path: Path, preset: str, data: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(f"name: {preset}\ninclude: [presets/{preset}]\ndata: {data}\n")
    return p


@pytest.mark.parametrize("preset", [p.stem for p in PRESETS])
def test_preset_runs_standalone(tmp_path, preset, tiny_multilabel):
    if preset in MULTILABEL:
        d = tiny_multilabel
        data = (f"{{source: csv, labels_csv: {d['labels_csv']}, img_dir: {d['img_dir']}, "
                f"label_columns: [effusion, nodule], uncertain: ignore, cache_dir: {tmp_path / 'c'}}}")
    else:
        root = write_learnable_folder(tmp_path / "img", n_per_class=12, classes=("covid", "normal", "tb"))
        data = f"{{source: folder, root: {root}, cache_dir: {tmp_path / 'c'}}}"
    space = space_including(tmp_path, preset, data)
    loaded = load_space(space)
    assert loaded.defaults()  # the preset's fixed values arrived through include
    out = tmp_path / "out"
    sets = [x for v in TINY + COMPRESS[preset] for x in ("--set", v)]
    assert main([str(space), "--out", str(out)] + sets) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert len(metrics) == 2 and np.isfinite(metrics["train_loss"]).all()
    if preset == "cxr_ast":
        assert metrics["ast_activation_rate"].iloc[1] < 1.0
    if preset == "dr_two_stage":
        assert metrics["trainable_params"].iloc[0] < metrics["trainable_params"].iloc[1]
    if preset == "tb_full":
        assert metrics["backbone_lr"].iloc[0] == pytest.approx(metrics["lr"].iloc[0] * 0.1)
    if preset == "ct_progressive":
        assert metrics["trainable_params"].iloc[0] < metrics["trainable_params"].iloc[1]
    if preset in MULTILABEL:
        assert "label_effusion" in pd.read_parquet(out / "predictions_val.parquet").columns


def _bloodmnist_as_multilabel_csv(tmp_path: Path, n: int = 2000) -> str:
    """Real BloodMNIST images written as PNGs with one-hot label columns: the multi-label path on real pixels."""
    from PIL import Image

    root = shared_npz("bloodmnist")
    npz = np.load(root / "bloodmnist.npz")
    img_dir = tmp_path / "blood"
    img_dir.mkdir()
    rows = ["id," + ",".join(f"c{k}" for k in range(8))]
    for split in ("train", "val", "test"):
        x, y = npz[f"{split}_images"], npz[f"{split}_labels"][:, 0]
        for i in range(n if split == "train" else n // 4):
            Image.fromarray(x[i]).save(img_dir / f"{split}{i}.png")
            rows.append(f"{split}{i}," + ",".join("1" if k == y[i] else "0" for k in range(8)))
    (tmp_path / "blood.csv").write_text("\n".join(rows) + "\n")
    return f"{{source: csv, labels_csv: {tmp_path / 'blood.csv'}, img_dir: {img_dir}, label_columns: [c0, c1, c2, c3, c4, c5, c6, c7], cache_dir: {tmp_path / 'c'}}}"


@pytest.mark.slow
@pytest.mark.skipif(shared_npz("pneumoniamnist") is None or shared_npz("bloodmnist") is None, reason="shared MedMNIST files absent")
@pytest.mark.parametrize("preset", [p.stem for p in PRESETS])
def test_preset_on_real_data(tmp_path, preset):
    """All five on real images: PneumoniaMNIST (single-label presets), BloodMNIST as one-hot multi-label CSV."""
    if preset in MULTILABEL:
        data = _bloodmnist_as_multilabel_csv(tmp_path)
    else:
        data = f"{{source: medmnist, dataset: pneumoniamnist, root: {shared_npz('pneumoniamnist')}, cache_dir: {tmp_path / 'c'}}}"
    space = space_including(tmp_path, preset, data)
    # From scratch (no pretrained weights here), each schedule compressed so that all of it runs:
    # progressive unfreezing needs one epoch per stage before the whole backbone trains.
    sets = ["backbone=resnet18", "pretrained=false", "image_size=28", "batch_size=64", "threads=2"]
    sets += {"cxr_ast": ["epochs=3", "ast_start_epoch=1"],
             "dr_two_stage": ["epochs=5", "freeze_epochs=1", "early_stop_patience=null"],
             "tb_full": ["epochs=3", "early_stop_patience=null", "lr=1e-3"],
             "chexpert_stack": ["epochs=5", "accum_steps=2", "lr=1e-3"],
             "ct_progressive": ["epochs=8", "unfreeze_step=1", "lr=1e-3"]}[preset]
    out = tmp_path / "out"
    assert main([str(space), "--out", str(out)] + [x for v in sets for x in ("--set", v)]) == 0
    metrics = pd.read_csv(out / "metrics.csv")
    assert metrics["val_auroc"].max() > 0.8, metrics[["epoch", "val_auroc"]]
