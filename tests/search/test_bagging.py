"""Bagging: the ensemble's members refitted on folds of train+val, stacked on their out-of-fold predictions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from search._bag import _mean_in_logit_space, bagging_wanted
from trainables import FoldAverage, build_classifier

from .test_sweep import run_main, sweep_args


@pytest.mark.parametrize("setting, n_val, wanted", [
    ("auto", 67, True), ("auto", 1712, False), ("auto", None, False), (True, 5000, True), (False, 10, False),
])
def test_auto_bags_only_a_small_validation_split(setting, n_val, wanted):
    assert bagging_wanted(setting, n_val=n_val) is wanted


@pytest.mark.parametrize("multilabel", [False, True])
def test_the_bag_predicts_as_its_stacked_predictions_were_made(multilabel):
    """The fold models' written probabilities, averaged in logit space, are what the bundle's FoldAverage
    gives with the mean of their logit offsets: the ensemble stacks what it will later run."""
    torch.manual_seed(0)
    folds = [build_classifier("test_resnet", head="linear", num_classes=3, in_chans=1).eval() for _ in range(3)]
    biases = [torch.randn(3) for _ in folds]
    x = torch.randn(5, 1, 32, 32)
    act = torch.sigmoid if multilabel else (lambda z: torch.softmax(z, dim=1))
    with torch.no_grad():
        written = [act(m(x) + b).double().numpy() for m, b in zip(folds, biases)]
        bag = act(FoldAverage(folds)(x) + torch.stack(biases).mean(0)).double().numpy()
    np.testing.assert_allclose(_mean_in_logit_space(written, multilabel=multilabel), bag, atol=1e-5)


@pytest.mark.ray
def test_a_sweep_with_bagging_stacks_its_bags_and_the_bundle_runs_them(images, ray_session, tmp_path):
    from ensemble import load
    from trainables import DataConfig, load_dataset

    argv = sweep_args(images, tmp_path, "--set", "ensemble.bagging=true", "--set", "ensemble.bag_folds=3",
                      "--set", "search.n_trials=3", "--no-report")
    rc, out, err = run_main(argv)
    assert rc == 0, out[-3000:] + err[-2000:]
    assert "bagging: " in out and "x 3 folds of train+val" in out
    run = tmp_path / "smoke"
    bags = pd.read_parquet(run / "bagging" / "leaderboard.parquet")
    assert len(bags) >= 1 and all(t.endswith("_bag") for t in bags["trial_id"])
    manifest = json.loads((run / "ensemble" / "manifest.json").read_text())
    assert all(m["folds"] == 3 and m["trial_id"].endswith("_bag") for m in manifest["members"])
    # The stacker saw one out-of-fold prediction per train+val image, not the validation split alone.
    ds = load_dataset(DataConfig.from_dict({"source": "folder", "root": str(images), "val_fraction": 0.25,
                                            "test_fraction": 0.25, "cache_dir": str(images.parent / "cache")}),
                      image_size=32, verbose=False)
    member = run / "bagging" / f"trial_{manifest['members'][0]['trial_id']}"
    oof = pd.read_parquet(member / "predictions_val.parquet")
    assert sorted(oof["sample_id"]) == sorted(ds.splits["train"].ids + ds.splits["val"].ids)
    # The bundle's member (a FoldAverage of the three fold models) predicts the test split as the bag's file says.
    bundle = load(run / "ensemble", device="cpu")
    test = pd.read_parquet(member / "predictions_test.parquet")
    got = bundle.member_proba([ds.splits["test"].images[i] for i in range(len(ds.splits["test"]))])[0]
    want = test[[c for c in test.columns if c.startswith("prob_")]].to_numpy()
    np.testing.assert_allclose(got, want, atol=2e-3)


def _fake_trial(folder, *, epochs: int, seconds: float):
    folder.mkdir(parents=True)
    (folder / "params.json").write_text(json.dumps({"backbone": "test_resnet", "epochs": 50}))
    (folder / "result.json").write_text("\n".join(json.dumps({"epoch": e + 1, "epoch_seconds": seconds}) for e in range(epochs)))
    return folder


@pytest.mark.parametrize("seconds_left, folds, members", [
    # One fold trial of k folds: 40 epochs x 3 s x (k-1)/k x 600/500; the plan keeps a 1.25 margin.
    (10_000, 5, 3),   # everything fits
    (450, 5, 1),      # the first bag of 5 folds (3 rounds on 2 slots of 115 s, 346 s) fits, a second does not
    (300, 4, 1),      # 5 folds do not fit, 4 (2 rounds of 108 s) do
    (250, 3, 1),      # 3 folds (2 rounds of 96 s)
    (100, None, 0),   # not even 3 folds: no bagging, and the reason
])
def test_the_plan_fits_the_time_left(tmp_path, monkeypatch, seconds_left, folds, members):
    import ensemble
    from search._bag import BagPlan, plan_bags

    class Member:
        def __init__(self, tid):
            self.trial_id, self.folder = tid, _fake_trial(tmp_path / tid, epochs=40, seconds=3.0)

    monkeypatch.setattr(ensemble, "select_members", lambda run_dir: type("S", (), {"members": [Member(t) for t in "abc"]})())
    plan = plan_bags(tmp_path, folds=5, seconds_left=seconds_left, concurrency=2, n_train=500, n_val=100)
    if folds is None:
        assert isinstance(plan, str) and "bagging skipped" in plan
        return
    assert isinstance(plan, BagPlan) and plan.folds == folds and len(plan.members) == members
    assert [m[0] for m in plan.members] == list("abc")[:members] and all(m[2] == 40 for m in plan.members)
    assert plan.seconds * 1.25 <= seconds_left


def test_a_sweep_that_bags_sizes_its_trials_so_that_a_bag_fits():
    from search._bag import BAG_SHARE, full_trials_for_bagging
    from search._budget import FULL_TRIALS

    for slots in (1, 2, 4):
        n = full_trials_for_bagging(concurrency=slots, n_train=500, n_val=67, folds=5)
        assert n > FULL_TRIALS
        # A full-length trial then takes search_time * slots / n; a bag of 4 folds of it fits the bags' share.
        search = 1.0 - BAG_SHARE
        trial = search * slots / n
        assert -(-4 // slots) * trial * 0.75 * 567 / 500 * 1.25 <= BAG_SHARE + 1e-9
