"""Each recipe technique does what it says: staging, learning rates, sampling, AST, schedules, divergence."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import ConfigError, TrainParams, train
from trainables._ast import ASTController
from trainables._cache import DataConfig
from trainables._optim import backbone_stages
from trainables._train import TrainingDiverged, _Run, sample_weights

from .conftest import write_learnable_folder

TINY = {"backbone": "test_resnet", "batch_size": 8, "lr": 3e-3, "image_size": 32, "threads": 1}


def rows(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def make_run(data: dict, tmp_path: Path, **params) -> _Run:
    return _Run(TrainParams.from_config({**TINY, **params}), DataConfig.from_dict(data), tmp_path / "run",
                tune=False, resume=False, config={})


def test_frozen_epochs_leave_the_backbone_unchanged_then_train_it(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, epochs=2, freeze_epochs=1)
    backbone0 = {k: v.clone() for k, v in run.model.backbone.state_dict().items()}
    head0 = {k: v.clone() for k, v in run.model.head.state_dict().items()}
    run._train_epoch(0)
    for k, v in run.model.backbone.state_dict().items():  # weights and batch-norm statistics
        torch.testing.assert_close(v, backbone0[k], msg=f"backbone {k} changed while frozen")
    assert any(not torch.equal(v, head0[k]) for k, v in run.model.head.state_dict().items())
    run._train_epoch(1)
    assert any(not torch.equal(v, backbone0[k]) for k, v in run.model.backbone.state_dict().items())


def test_unfreeze_epoch_is_an_alias_of_freeze_epochs(tiny_data, tmp_path):
    assert TrainParams.from_config({"unfreeze_epoch": 3}).frozen_epochs == 3
    with pytest.raises(ConfigError, match="same setting and disagree"):
        TrainParams.from_config({"unfreeze_epoch": 3, "freeze_epochs": 2})


def test_progressive_unfreezing_raises_trainable_params_at_each_step(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, backbone="resnet18", image_size=32, unfreeze="progressive", unfreeze_step=1)
    n_stages = len(run.stager.stages)
    assert n_stages >= 4  # resnet18: stem + 4 layers
    counts = [run.stager.apply(e) for e in range(n_stages + 2)]
    head = sum(p.numel() for p in run.model.head.parameters())
    assert counts[0] == head  # head only
    assert all(b > a for a, b in zip(counts[: n_stages + 1], counts[1 : n_stages + 1]))
    assert counts[n_stages] == sum(p.numel() for p in run.model.parameters())
    assert counts[-1] == counts[n_stages]
    # Top-down: the first stage opened is the last (deepest) one.
    run.stager.apply(1)
    last = backbone_stages(run.model.backbone)[-1]
    params = dict(run.model.backbone.named_parameters())
    assert all(params[n].requires_grad for n in last)
    assert not any(params[n].requires_grad for n in backbone_stages(run.model.backbone)[0])


def test_backbone_lr_is_head_lr_times_multiplier(tiny_data, tmp_path):
    out = tmp_path / "lr"
    train({**TINY, "epochs": 2, "lr": 1e-4, "backbone_lr_mult": 0.1, "scheduler": "none", "data": tiny_data, "_out_dir": str(out)})
    for r in rows(out / "metrics.csv"):
        assert float(r["lr"]) == pytest.approx(1e-4)
        assert float(r["backbone_lr"]) == pytest.approx(1e-5)


def test_backbone_lr_multiplier_survives_a_schedule(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, epochs=3, lr=1e-3, backbone_lr_mult=0.25, warmup_epochs=1)
    for step in (1, 5, 20):
        run.sched.step_update(num_updates=step)
        lrs = {g["name"]: g["lr"] for g in run.opt.param_groups}
        assert lrs["backbone"] == pytest.approx(lrs["head"] * 0.25)
        # every group of a part (with and without weight decay) is on the same rate
        assert all(g["lr"] == pytest.approx(lrs[g["name"]]) for g in run.opt.param_groups)


def test_weight_decay_spares_norm_weights_and_biases(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, epochs=1, weight_decay=0.05)
    decayed = {id(p) for g in run.opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    spared = {id(p) for g in run.opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    named = dict(run.model.named_parameters())
    assert spared and decayed
    for name, p in named.items():
        if p.ndim <= 1 or name.endswith(".bias"):
            assert id(p) in spared, name
        else:
            assert id(p) in decayed, name
    assert {g["weight_decay"] for g in run.opt.param_groups if g["weight_decay"] > 0} == {0.05}


def test_finetune_lr_applies_after_unfreezing(tiny_data, tmp_path):
    out = tmp_path / "ft"
    train({**TINY, "epochs": 2, "lr": 1e-3, "finetune_lr": 1e-4, "freeze_epochs": 1, "scheduler": "none",
           "data": tiny_data, "_out_dir": str(out)})
    r = rows(out / "metrics.csv")
    # lr is read at the start of an epoch: epoch 2 starts before the switch, so look at the optimizer after it.
    run = make_run(tiny_data, tmp_path, epochs=2, lr=1e-3, finetune_lr=1e-4, freeze_epochs=1, scheduler="none")
    run._train_epoch(0)
    assert run.opt.param_groups[0]["lr"] == pytest.approx(1e-3)
    run._train_epoch(1)
    run.sched.step_update(num_updates=run.updates)
    assert run.opt.param_groups[0]["lr"] == pytest.approx(1e-4)
    assert int(r[0]["trainable_params"]) < int(r[1]["trainable_params"])


def test_balanced_sampler_draws_classes_about_evenly():
    labels = np.array([0] * 900 + [1] * 100)
    w = torch.as_tensor(sample_weights(labels, multilabel=False))
    from torch.utils.data import WeightedRandomSampler

    draws = np.array(list(WeightedRandomSampler(w, num_samples=20000, replacement=True, generator=torch.Generator().manual_seed(0))))
    share = (labels[draws] == 1).mean()
    assert share == pytest.approx(0.5, abs=0.02)


def test_balanced_sampler_in_training_order(tmp_path):
    root = write_learnable_folder(tmp_path / "imb", n_per_class=4)
    for i in range(4, 40):  # make class 'normal' 10x larger
        (root / "normal" / f"{i:03d}.png").write_bytes((root / "normal" / "000.png").read_bytes())
    data = {"source": "folder", "root": str(root), "val_fraction": 0.2, "test_fraction": 0.2, "cache_dir": str(tmp_path / "c")}
    run = make_run(data, tmp_path, sampler="balanced")
    labels = run.ds.splits["train"].labels
    assert (labels == 1).mean() < 0.2
    drawn = np.concatenate([labels[run._train_order()] for _ in range(50)])
    assert (drawn == 1).mean() == pytest.approx(0.5, abs=0.06)


def test_ast_controller_tracks_the_target_rate():
    gen = torch.Generator().manual_seed(0)
    for target in (0.5, 0.25, 0.1):
        ctl = ASTController(activation_rate=target)
        for step in range(300):
            scale = 1.0 + step / 100  # losses drift as training goes: the controller must follow
            losses = torch.rand(64, generator=gen) * scale
            ent = torch.rand(64, generator=gen)
            if step == 50:
                ctl.reset_epoch()  # count after warm-up
            ctl.select(losses, ent)
        assert ctl.achieved_rate == pytest.approx(target, abs=0.05), target


def test_ast_keeps_a_minimum_share():
    ctl = ASTController(activation_rate=0.1, min_share=0.25)
    ctl.threshold = 1e9  # nothing passes the threshold
    mask = ctl.select(torch.rand(40), torch.rand(40))
    assert int(mask.sum()) == 10


def test_ast_training_backprops_only_selected_samples(tmp_path):
    root = write_learnable_folder(tmp_path / "ast", n_per_class=160, size=16)
    data = {"source": "folder", "root": str(root), "val_fraction": 0.1, "test_fraction": 0.1, "cache_dir": str(tmp_path / "c")}
    out = tmp_path / "astrun"
    train({**TINY, "image_size": 16, "epochs": 3, "batch_size": 16, "activation_rate": 0.25, "ast_start_epoch": 1,
           "data": data, "_out_dir": str(out)})
    r = rows(out / "metrics.csv")
    n_train = 256
    assert float(r[0]["ast_activation_rate"]) == 1.0 and int(r[0]["ast_samples_backprop"]) == n_train
    for sparse in r[1:]:
        assert float(sparse["ast_activation_rate"]) == pytest.approx(0.25, abs=0.05)
        assert int(sparse["ast_samples_backprop"]) == pytest.approx(0.25 * n_train, abs=0.05 * n_train)
        assert "compute_savings" in sparse and "energy_savings" not in sparse  # nothing measured energy on CPU


@pytest.mark.parametrize("name", ["cosine", "onecycle", "step", "none"])  # plateau: the test below
def test_every_scheduler_runs_and_shapes_the_rate(tiny_data, tmp_path, name):
    out = tmp_path / name
    train({**TINY, "epochs": 3, "scheduler": name, "step_epochs": 1, "warmup_epochs": 0, "data": tiny_data, "_out_dir": str(out)})
    lrs = [float(r["lr"]) for r in rows(out / "metrics.csv")]
    if name in ("cosine", "step"):
        assert lrs[0] > lrs[1] > lrs[2]
    if name == "none":
        assert lrs == [pytest.approx(3e-3)] * 3
    if name == "onecycle":
        assert lrs[0] < 3e-3  # starts low: warm-up from lr/25


def test_plateau_cuts_the_rate_after_patience_epochs_without_improvement(tiny_data, tmp_path, monkeypatch):
    from trainables import _train as mod

    real = mod.compute_metrics

    def flat(*args, **kwargs):  # validation AUROC never improves after the first epoch
        return {**real(*args, **kwargs), "val_auroc": 0.75}

    monkeypatch.setattr(mod, "compute_metrics", flat)
    out = tmp_path / "plateau"
    train({**TINY, "epochs": 4, "scheduler": "plateau", "plateau_patience": 1, "decay_rate": 0.1, "warmup_epochs": 0,
           "select_metric": "val_auroc", "data": tiny_data, "_out_dir": str(out)})
    lrs = [float(r["lr"]) for r in rows(out / "metrics.csv")]  # the rate each epoch trained at
    # Epoch 1 sets the best, epoch 2 is one epoch without improvement (within patience), epoch 3 a second:
    # the rate drops by decay_rate from epoch 4 on.
    assert lrs[:3] == [pytest.approx(3e-3)] * 3
    assert lrs[3] == pytest.approx(3e-4)


def test_warmup_rises_then_cosine_decays(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, epochs=4, warmup_epochs=1)
    spe = run.steps_per_epoch
    lrs = []
    for step in range(0, 4 * spe + 1):
        run.sched.step_update(num_updates=step)
        lrs.append(run.opt.param_groups[0]["lr"])
    peak = int(np.argmax(lrs))
    assert abs(peak - spe) <= 1
    assert lrs[0] < lrs[peak] and lrs[-1] < lrs[peak]


@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_every_optimizer_trains(tiny_data, tmp_path, opt):
    out = tmp_path / opt
    last = train({**TINY, "epochs": 2, "optimizer": opt, "lr": 1e-2 if opt == "sgd" else 3e-3, "accum_steps": 2,
                  "clip_grad_norm": 1.0, "data": tiny_data, "_out_dir": str(out)})
    assert np.isfinite(last["train_loss"])


def test_gradient_clipping_bounds_the_update(tiny_data, tmp_path):
    """With SGD, lr 1 and clip 1e-3, no parameter can move more than 1e-3 in one step."""
    run = make_run(tiny_data, tmp_path, optimizer="sgd", momentum=0.0, lr=1.0, weight_decay=0.0, clip_grad_norm=1e-3, scheduler="none")
    run.stager.apply(0)
    before = torch.cat([p.detach().flatten().clone() for p in run.model.parameters()])
    images, labels = next(run._batches("train", shuffle=True, batch_size=8))
    run._step(run._to_input(images), run._target(labels), {"micro": 0, "loss": 0.0, "backprop": 0})
    after = torch.cat([p.detach().flatten() for p in run.model.parameters()])
    assert 0 < float((after - before).norm()) <= 1e-3 + 1e-7


def test_gradient_accumulation_steps_every_n_micro_batches(tiny_data, tmp_path):
    run = make_run(tiny_data, tmp_path, accum_steps=3, scheduler="none")
    run.stager.apply(0)
    calls = []
    original = run.opt.step
    run.opt.step = lambda *a, **k: (calls.append(1), original(*a, **k))[1]
    state = {"micro": 0, "loss": 0.0, "backprop": 0}
    images, labels = next(run._batches("train", shuffle=True, batch_size=8))
    for _ in range(6):
        run._step(run._to_input(images), run._target(labels), state)
    assert len(calls) == 2


def test_early_stopping_standalone(tiny_data, tmp_path):
    out = tmp_path / "es"
    train({**TINY, "epochs": 8, "lr": 1e-9, "early_stop_patience": 1, "select_metric": "val_accuracy",
           "scheduler": "none", "data": tiny_data, "_out_dir": str(out)})
    assert len(rows(out / "metrics.csv")) < 8


def test_nan_loss_stops_the_trial_at_once(tiny_data, tmp_path):
    with pytest.raises(TrainingDiverged, match="diverged; lower `lr`"):
        train({**TINY, "epochs": 3, "lr": 1e30, "optimizer": "sgd", "momentum": 0.0, "data": tiny_data, "_out_dir": str(tmp_path / "nan")})
