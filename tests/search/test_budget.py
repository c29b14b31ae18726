"""The budget drives the sweep: `epochs: auto`, a trial count that is optional, --budget and --data."""

from __future__ import annotations

import dataclasses
import json
import re
import time

import pandas as pd
import pytest
import yaml

from search import load_space
from search._budget import FULL_TRIALS, MIN_FULL_TRIALS, MIN_ROUNDS, parse_duration, size_space, size_trials
from trainables import ConfigError

from .._images import write_class_folders

SPEED = {"train_s": 4e-3, "eval_s": 6e-4, "batch_size": 64}


def test_epochs_auto_gives_a_small_set_more_epochs_than_a_large_one():
    small = size_trials(n_train=500, n_val=70, n_test=600, budget_s=800, concurrency=2, **SPEED)
    mid = size_trials(n_train=4000, n_val=520, n_test=620, budget_s=800, concurrency=2, **SPEED)
    large = size_trials(n_train=30000, n_val=3000, n_test=6000, budget_s=800, concurrency=2, **SPEED)
    assert small.epochs > mid.epochs > large.epochs
    # A set whose full pass does not fit gets sub-epochs: enough reports for ASHA, and a trial that ends.
    assert small.epoch_samples is None and mid.epoch_samples is None
    assert large.epochs == MIN_ROUNDS and 0 < large.epoch_samples < 30000
    assert large.trial_seconds <= 800 * 1.05
    # Every size trains a comparable number of optimizer steps in the same budget (a large set more: it is
    # sized for fewer, longer trials), and ASHA's rungs follow.
    steps = [s.steps_per_trial for s in (small, mid, large)]
    assert max(steps[:2]) < 2.5 * min(steps[:2]) and steps[2] > steps[1]
    assert small.grace_period > large.grace_period >= 1
    # A longer budget trains longer (the small set is capped at 100 epochs).
    assert size_trials(n_train=4000, n_val=520, n_test=620, budget_s=3200, concurrency=2, **SPEED).epochs > mid.epochs
    assert size_trials(n_train=100, n_val=20, n_test=20, budget_s=3600, concurrency=2, **SPEED).epochs == 100


def test_a_large_set_is_sized_for_fewer_longer_trials():
    small = size_trials(n_train=500, n_val=70, n_test=600, budget_s=800, concurrency=2, **SPEED)
    large = size_trials(n_train=30000, n_val=3000, n_test=6000, budget_s=800, concurrency=2, **SPEED)
    fixed = size_trials(n_train=30000, n_val=3000, n_test=6000, budget_s=800, concurrency=2,
                        min_full_trials=FULL_TRIALS, **SPEED)
    # A small set's full passes fit many times: the budget stays shared by FULL_TRIALS full-length trials.
    assert small.full_trials == FULL_TRIALS
    assert small.trial_seconds <= 800 * 2 / FULL_TRIALS * 1.05
    # A large one gets fewer of them, each longer: more optimizer steps a trial, fewer trials.
    assert large.full_trials == MIN_FULL_TRIALS and fixed.full_trials == FULL_TRIALS
    assert large.steps_per_trial > 1.4 * fixed.steps_per_trial
    assert large.expected_trials < fixed.expected_trials
    assert large.trial_seconds <= 800 * 2 / MIN_FULL_TRIALS * 1.05
    # In between, as many full-length trials as still get MIN_ROUNDS full passes each.
    mid = size_trials(n_train=4000, n_val=520, n_test=620, budget_s=800, concurrency=2, **SPEED)
    passes = (mid.epoch_samples or mid.n_train) * mid.epochs / mid.n_train
    assert MIN_FULL_TRIALS <= mid.full_trials <= FULL_TRIALS and passes >= MIN_ROUNDS
    assert f"{large.full_trials} of full length" in large.describe()


@pytest.mark.parametrize("n_train", [500, 4000, 30000])
@pytest.mark.parametrize("concurrency", [1, 2, 8])
def test_a_full_length_trial_fits_the_budget_however_many_run_at_once(n_train, concurrency):
    # With 8 slots, 5 (or 2) full-length trials would each be longer than the budget and none could finish.
    sizing = size_trials(n_train=n_train, n_val=n_train // 8, n_test=600, budget_s=800, concurrency=concurrency, **SPEED)
    assert sizing.full_trials >= concurrency
    assert sizing.trial_seconds <= 800 * 1.05


# Training images/s this machine measured at 28 px on one thread (full BloodMNIST, 2026-12-02).
_MEASURED = {"resnet18": 177.0, "resnet10t": 312.0, "resnet34": 96.0}


def _sized(monkeypatch, tmp_path, n_train: int):
    import types

    import trainables
    from trainables import Speed

    monkeypatch.setattr(trainables, "measure_speed",
                        lambda backbone, **kw: Speed(train_s=1 / _MEASURED[backbone], eval_s=0.2 / _MEASURED[backbone]))
    p = tmp_path / "s.yaml"
    p.write_text("data: {source: medmnist, dataset: bloodmnist}\n")
    space = load_space(p)
    assert space.params["backbone"].choices == ("resnet18", "resnet10t", "resnet34")
    splits = {"train": range(n_train), "val": range(n_train // 7), "test": range(n_train // 3)}
    data = types.SimpleNamespace(splits=splits, image_size=28, channels=3, num_classes=8)
    lines: list[str] = []
    sizing = size_space(space, data, budget_s=800, concurrency=2, echo=lines.append)
    return space, sizing, lines


def test_a_large_set_leaves_out_backbones_too_slow_to_train_it(monkeypatch, tmp_path):
    space, sizing, lines = _sized(monkeypatch, tmp_path, 12000)
    # With every backbone's mean speed a trial could not train full passes here, and resnet34 is 3.2x slower
    # than resnet10t: it is left out.
    assert sizing.backbones == ("resnet18", "resnet10t") and [b for b, _ in sizing.left_out] == ["resnet34"]
    assert any("leaves out resnet34 (96 images/s)" in line for line in lines)
    sized = space.with_sizing(sizing)
    assert sized.params["backbone"].choices == ("resnet18", "resnet10t")
    assert sized.resolved()["space"]["backbone"]["choices"] == ["resnet18", "resnet10t"]
    # The kept backbones' mean speed sizes the trials: each sees more images than with resnet34 counted.
    every = size_trials(n_train=12000, n_val=12000 // 7, n_test=4000, batch_size=64, budget_s=800, concurrency=2,
                        train_s=sum(1 / v for v in _MEASURED.values()) / 3,
                        eval_s=sum(0.2 / v for v in _MEASURED.values()) / 3)
    assert every.epoch_samples is not None

    def images(z):
        return z.epochs * (z.epoch_samples or z.n_train)

    assert images(sizing) > 1.3 * images(every)


def test_a_small_set_keeps_every_backbone(monkeypatch, tmp_path):
    space, sizing, lines = _sized(monkeypatch, tmp_path, 1000)
    assert sizing.epoch_samples is None and sizing.backbones is None and sizing.left_out == ()
    assert not any("leaves out" in line for line in lines)
    assert space.with_sizing(sizing).params["backbone"].choices == ("resnet18", "resnet10t", "resnet34")


@pytest.mark.parametrize("text, seconds", [("900", 900), (900, 900), ("900s", 900), ("15m", 900), ("1h30m", 5400), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "15x", "m", "-5", "0", "1h 30 potatoes"])
def test_bad_durations_fail_with_one_line(text):
    with pytest.raises(ConfigError, match=r"--budget: .*(duration|15m)") as info:
        parse_duration(text)
    assert "\n" not in str(info.value)


def test_a_space_with_only_data_is_the_default_sweep(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("data: {source: medmnist, dataset: breastmnist}\n")
    space = load_space(p)
    assert space.auto_epochs and "epochs" not in space.fixed
    assert space.search.n_trials is None and space.search.time_budget_s == 900
    assert {"backbone", "lr", "sampler", "ema"} <= set(space.params)
    assert space.search.scheduler.max_t is None and space.search.scheduler.grace_period is None
    # A budget in a file as a duration; a trial count adds to the default budget (the preset's).
    p.write_text("data: {source: medmnist, dataset: breastmnist}\nsearch: {time_budget_s: 20m}\n")
    assert load_space(p).search.time_budget_s == 1200
    p.write_text("data: {source: medmnist, dataset: breastmnist}\nsearch: {n_trials: 8}\n")
    assert (load_space(p).search.n_trials, load_space(p).search.time_budget_s) == (8, 900)


def test_sizing_fills_in_what_the_file_left_out(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text("data: {source: medmnist, dataset: breastmnist}\n")
    sizing = size_trials(n_train=30000, n_val=3000, n_test=6000, budget_s=800, concurrency=2, **SPEED)
    sized = load_space(p).with_sizing(sizing)
    assert not sized.auto_epochs and sized.fixed["epochs"] == sizing.epochs == sized.search.scheduler.max_t
    assert sized.fixed["epoch_samples"] == sizing.epoch_samples
    assert sized.search.scheduler.grace_period == sizing.grace_period
    assert sized.search.sampler.n_startup_trials == max(2, min(10, sizing.expected_trials // 4))
    # A rung the file sets stays.
    p.write_text("data: {source: medmnist, dataset: breastmnist}\nsearch: {scheduler: {type: asha, grace_period: 3, reduction_factor: 3}}\n")
    assert load_space(p).with_sizing(sizing).search.scheduler.grace_period == 3
    # `epochs: auto` and a searched `epochs` cannot both hold.
    p.write_text("data: {source: medmnist, dataset: breastmnist}\nfixed: {epochs: auto}\nspace: {epochs: {type: int, low: 2, high: 9}}\n")
    with pytest.raises(ConfigError, match=r"fixed\.epochs: is `auto` but `epochs` is also searched"):
        load_space(p)


def test_data_on_the_command_line(tmp_path):
    from search.run import main

    assert main(["--data", "medmnist:breastmnist", "--budget", "5m", "--dry-run"]) == 0
    assert main(["--data", "breastmnist", "--dry-run"]) == 2
    assert main(["spaces/cxr.yaml", "--data", "medmnist:breastmnist", "--dry-run"]) == 2


@pytest.mark.ray
def test_a_space_with_only_data_runs_to_an_ensemble_within_its_budget(tmp_path, capsys):
    from search.run import main

    images = write_class_folders(tmp_path / "images", n_per_class=40, noise=110, signal=60)
    space = tmp_path / "only_data.yaml"
    space.write_text(yaml.safe_dump({"name": "only", "data": {"source": "folder", "root": str(images), "val_fraction": 0.25,
                                                            "test_fraction": 0.25, "cache_dir": str(tmp_path / "cache")}}))
    budget, spent = 50, 8.0
    # As `python -m search.run` does: the budget counts from the process start (here, 8 s before the call).
    rc = main([str(space), "--budget", str(budget), "--out", str(tmp_path / "runs"), "--no-report",
               "--set", "backbone=test_resnet", "--set", "image_size=32"], started_at=time.perf_counter() - spent)
    out = capsys.readouterr().out
    assert rc == 0, out[-3000:]
    # The trials get the budget less the ensemble's reserve (5 s) and what was spent before the sweep.
    trials_s = float(re.search(r"budget 50s \(trials (\d+)s\)", out).group(1))
    assert trials_s <= budget - 5 - spent
    assert "epochs: auto -> " in out and "trials until the budget is spent" in out
    run = tmp_path / "runs" / "only"
    resolved = yaml.safe_load((run / "space.yaml").read_text())
    epochs = resolved["fixed"]["epochs"]
    assert isinstance(epochs, int) and resolved["search"]["scheduler"]["max_t"] == epochs
    board = pd.read_parquet(run / "leaderboard.parquet")
    assert len(board) >= 3  # trials kept starting while the budget lasted
    assert set(board["config/epochs"].dropna()) == {epochs}
    manifest = json.loads((run / "ensemble" / "manifest.json").read_text())
    assert manifest["members"]
    # The budget, not a trial count, ended it (how much of it was used is a benchmark figure, not a test).
    assert f"s of the {budget}s budget" in out and "ended early" not in out


def test_the_command_counts_its_start_up_against_the_budget():
    import subprocess
    import sys

    # A process that slept 1.5 s before asking has spent at least that; the figure is its age, not the epoch's.
    code = "import time; time.sleep(1.5); from search.run import _seconds_since_start as s; print(s())"
    age = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    assert 1.5 <= age < 120


def _trial_s(sizing, backbone: str, n_val: int, n_test: int) -> float:
    """A full-length trial's seconds for one backbone, as the sizing estimates them."""
    from search._budget import _EPOCH_FIXED_S, _TRAIN_OVERHEAD

    # Two test-time views (the image and its mirror) per evaluated image: the default trial's (TrainParams.tta).
    train_s, eval_s = 1 / _MEASURED[backbone], 2 * 0.2 / _MEASURED[backbone]
    samples = sizing.samples_for(backbone) or sizing.n_train
    return sizing.epochs * (samples * train_s * _TRAIN_OVERHEAD + (n_val + 0.5 * n_test) * eval_s + _EPOCH_FIXED_S)


@pytest.mark.parametrize("n_train", [12000, 30000])
def test_a_large_set_gets_rounds_of_equal_time_so_a_slower_backbone_still_ends(monkeypatch, tmp_path, n_train):
    from search._budget import EQUAL_TIME_SHARE

    space, sizing, lines = _sized(monkeypatch, tmp_path, n_train)
    assert sizing.full_trials == sizing.concurrency == 2
    rounds = dict(sizing.round_samples)
    assert set(rounds) == {"resnet18", "resnet10t"}  # resnet34 is left out; the kept ones are sized apart
    assert rounds["resnet10t"] > 1.5 * rounds["resnet18"]
    # With the mean speed a full-length resnet18 trial would outlast the budget's wall time (800 s); each
    # backbone's own rounds end it within the share, and the faster backbone trains more images than the mean would.
    mean = dataclasses.replace(sizing, round_samples=())
    assert _trial_s(mean, "resnet18", n_train // 7, n_train // 3) > 800
    for backbone in rounds:
        assert 0.95 * EQUAL_TIME_SHARE * 800 < _trial_s(sizing, backbone, n_train // 7, n_train // 3) <= EQUAL_TIME_SHARE * 800 * 1.01
    # (The mean's round, cut to the same share of the trial's budget.)
    assert rounds["resnet10t"] > EQUAL_TIME_SHARE * (sizing.epoch_samples or n_train)
    assert "rounds of equal time" in sizing.describe() and f"resnet10t {rounds['resnet10t']}" in sizing.describe()


def test_each_trial_trains_the_rounds_of_the_backbone_it_drew(monkeypatch, tmp_path):
    import optuna

    from search._run import DefineByRun, trial_constants

    space, sizing, _ = _sized(monkeypatch, tmp_path, 12000)
    sized = space.with_sizing(sizing)
    rounds = dict(sizing.round_samples)
    fn = DefineByRun(sized.ordered_params(), trial_constants(sized), per_choice=sized.per_choice)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = {}
    for _ in range(12):
        trial = study.ask()
        config = {**fn(trial), **trial.params}
        seen[config["backbone"]] = config["epoch_samples"]
    assert seen == rounds
    # A standalone run (search.fit) trains the default backbone's rounds.
    assert sized.defaults()["epoch_samples"] == rounds[sized.defaults()["backbone"]]
    # A fixed backbone gets its own rounds; a file's own epoch_samples is kept for every backbone.
    fixed = dataclasses.replace(space, params={k: v for k, v in space.params.items() if k != "backbone"},
                                fixed={**space.fixed, "backbone": "resnet10t"})
    assert fixed.with_sizing(sizing).fixed["epoch_samples"] == rounds["resnet10t"]
    own = dataclasses.replace(space, fixed={**space.fixed, "epoch_samples": 5000}).with_sizing(sizing)
    assert own.fixed["epoch_samples"] == 5000 and own.per_choice == {}


def test_a_small_set_keeps_one_round_length_for_every_backbone(monkeypatch, tmp_path):
    # Its budget is shared by FULL_TRIALS full-length trials: even resnet34's fits the wall time.
    space, sizing, _ = _sized(monkeypatch, tmp_path, 1000)
    assert sizing.full_trials == FULL_TRIALS and sizing.round_samples == ()
    assert space.with_sizing(sizing).per_choice == {}
    assert _trial_s(sizing, "resnet34", 1000 // 7, 1000 // 3) < 800


def test_test_time_views_are_counted_in_the_evaluation_cost(monkeypatch, tmp_path):
    # The default trial averages over the image and its mirror (TrainParams.tta): two forward passes per
    # validation and test image, which a round's estimate has to pay for.
    _, flipped, lines = _sized(monkeypatch, tmp_path, 1000)
    assert any("(2 test-time views each)" in line for line in lines)
    (tmp_path / "s.yaml").write_text("data: {source: medmnist, dataset: bloodmnist}\nfixed: {tta: false}\n")
    import types

    space = load_space(tmp_path / "s.yaml")
    data = types.SimpleNamespace(splits={"train": range(1000), "val": range(1000 // 7), "test": range(1000 // 3)},
                                 image_size=28, channels=3, num_classes=8)
    alone = size_space(space, data, budget_s=800, concurrency=2)
    assert flipped.epoch_seconds > alone.epoch_seconds
    assert flipped.epochs <= alone.epochs
