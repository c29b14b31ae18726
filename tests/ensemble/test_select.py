"""Choosing members: top-k by the sweep metric, the per-backbone cap, the ``ensemble:`` section, aligned predictions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from ensemble import EnsembleSettings, select_members
from trainables import ConfigError

from .conftest import copy_run, run_cli


@pytest.mark.ray
def test_the_top_k_trials_by_the_sweep_metric_with_aligned_predictions(sweep):
    board = pd.read_parquet(sweep.run_dir / "leaderboard.parquet")
    usable = board[board["status"].isin(["finished", "pruned"])].sort_values(["best", "trial_id"], ascending=[False, True])
    sel = select_members(sweep.run_dir, top_k=2, selection="top_k")
    assert [m.trial_id for m in sel.members] == usable["trial_id"].tolist()[:2]
    assert sel.P_val.shape == (2, 16, 2) and sel.P_test.shape == (2, 16, 2)
    assert sel.settings.n_folds == 3  # from the sweep's space.yaml (--set ensemble.n_folds=3)
    # Rows follow the first member's sample order in every member.
    second = pd.read_parquet(sel.members[1].folder / "predictions_val.parquet").set_index("sample_id").loc[sel.val_ids]
    assert np.array_equal(sel.members[1].val, second[["prob_normal", "prob_pneumonia"]].to_numpy(dtype=float))
    assert np.array_equal(sel.y_val, second["label"].to_numpy())


@pytest.mark.ray
def test_top_k_larger_than_the_available_trials_builds_from_all_with_a_warning(sweep):
    from ensemble.build import main

    out_dir = sweep.run_dir.parent / "all-four"
    with pytest.warns(UserWarning, match="only 4 usable trial"):
        rc, out, err = run_cli(main, [str(sweep.run_dir), "--top-k", "9", "--selection", "top_k", "--out", str(out_dir)])
    assert rc == 0, err
    assert "fewer than top_k 9: the ensemble takes all of them" in out
    assert (out_dir / "manifest.json").is_file()
    import json

    assert len(json.loads((out_dir / "manifest.json").read_text())["members"]) == 4


@pytest.mark.ray
def test_a_top_k_set_in_the_space_file_larger_than_the_trials_takes_all_of_them(sweep, tmp_path):
    run = copy_run(sweep.run_dir, tmp_path / "run")
    space = yaml.safe_load((run / "space.yaml").read_text())
    space["ensemble"] = {"top_k": 6, "selection": "top_k"}
    (run / "space.yaml").write_text(yaml.safe_dump(space))
    with pytest.warns(UserWarning, match="fewer than top_k 6"):
        sel = select_members(run)
    assert len(sel.members) == sel.n_available == 4


@pytest.mark.ray
def test_max_per_backbone_caps_the_members(sweep):
    sel = select_members(sweep.run_dir, max_per_backbone=1)  # every smoke trial is test_resnet
    assert len(sel.members) == 1 and sel.n_available == 1
    with pytest.warns(UserWarning, match="fewer than top_k 2"):
        assert len(select_members(sweep.run_dir, top_k=2, max_per_backbone=1).members) == 1


def _binary_probs(z: np.ndarray) -> np.ndarray:
    """Two-class probabilities from logits ``z`` of the positive class."""
    p = 1 / (1 + np.exp(-z))
    return np.stack([1 - p, p], 1)


def _member(tid: str, val: np.ndarray):
    from ensemble import Member

    return Member(trial_id=tid, backbone="b", head="linear", val_score=0.0, config={}, folder=None, model={}, val=val, test=val)


def test_greedy_selection_passes_over_a_copy_of_a_member_for_one_that_errs_elsewhere():
    from ensemble._select import _forward_select

    # Two noisy views of one score: a copy of member a adds nothing to the average, member c (its own
    # noise) does, though c alone ranks below the copy.
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    signal = 1.5 * (2 * y - 1)
    a = _binary_probs(signal + rng.normal(0, 2.0, 400))
    c = _binary_probs(signal + rng.normal(0, 2.3, 400))
    members = [_member("a", a), _member("copy", a.copy()), _member("c", c)]
    chosen, note = _forward_select(members, y, task="binary", k=2, metric="auroc")
    assert [m.trial_id for m in chosen] == ["a", "c"]
    assert "greedy selection over the 3 best trials picked 2: a (#1), c (#3)" in note
    assert note.endswith("(# = rank by the sweep metric)")
    # When the start rule moved a trial to the front, the note says so (the ranks are those of the new order).
    _, moved = _forward_select(members, y, task="binary", k=2, metric="auroc", moved_start=True)
    assert moved.endswith("(# = rank by the sweep metric, the start first)")
    # A clearly worse member is not averaged in.
    bad = _binary_probs(-signal + rng.normal(0, 1.0, 400))
    chosen, _ = _forward_select([_member("a", a), _member("bad", bad)], y, task="binary", k=2, metric="auroc")
    assert [m.trial_id for m in chosen] == ["a"]


def test_greedy_selection_leaves_out_a_weak_member_that_a_saturated_auroc_does_not_see():
    from ensemble._metrics import score
    from ensemble._select import _STOP_DROP, _forward_select

    # A small validation split where the best member's AUROC is near 1: averaging in a weak, unsure member
    # leaves the AUROC about where it was but raises the log loss, so it must stay out.
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 70)
    strong = _binary_probs(4.0 * (2 * y - 1) + rng.normal(0, 1.5, 70))
    weak = _binary_probs(0.3 * (2 * y - 1) + rng.normal(0, 0.8, 70))
    both = (strong + weak) / 2
    drop = score(strong, y, task="binary", metric="auroc") - score(both, y, task="binary", metric="auroc")
    assert drop <= _STOP_DROP  # the AUROC alone would not keep it out
    assert score(both, y, task="binary", metric="log_loss") > score(strong, y, task="binary", metric="log_loss")
    chosen, _ = _forward_select([_member("strong", strong), _member("weak", weak)], y, task="binary", k=5, metric="auroc")
    assert [m.trial_id for m in chosen] == ["strong"]
    # ...while a second strong member with its own errors, which lowers the log loss, joins.
    other = _binary_probs(4.0 * (2 * y - 1) + rng.normal(0, 1.5, 70))
    chosen, _ = _forward_select([_member("strong", strong), _member("weak", weak), _member("other", other)], y,
                                task="binary", k=5, metric="auroc")
    assert [m.trial_id for m in chosen] == ["strong", "other"]


@pytest.mark.ray
def test_members_whose_predictions_cover_other_samples_are_refused(sweep, tmp_path):
    run = copy_run(sweep.run_dir, tmp_path / "run")
    sel = select_members(run, top_k=2, selection="top_k")
    victim = sel.members[1].folder / "predictions_val.parquet"
    pd.read_parquet(victim).iloc[1:].to_parquet(victim, index=False)
    with pytest.raises(ConfigError, match=f"trial {sel.members[1].trial_id}'s val predictions cover other samples"):
        select_members(run, top_k=2, selection="top_k")


@pytest.mark.ray
def test_a_moved_run_folder_is_still_found(sweep, tmp_path):
    import shutil

    run = tmp_path / "moved"
    shutil.copytree(sweep.run_dir, run, ignore=shutil.ignore_patterns("ensemble"))
    board = pd.read_parquet(run / "leaderboard.parquet")
    board["checkpoint"] = [str(p).replace(str(sweep.run_dir), "/gone/smoke") for p in board["checkpoint"]]
    board["path"] = [str(p).replace(str(sweep.run_dir), "/gone/smoke") for p in board["path"]]
    board.to_parquet(run / "leaderboard.parquet", index=False)
    sel = select_members(run, top_k=2)
    assert all(str(m.folder).startswith(str(run)) for m in sel.members)


def test_a_folder_without_leaderboard_is_not_a_sweep(tmp_path):
    with pytest.raises(ConfigError, match="not a finished sweep"):
        select_members(tmp_path)


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"top_kk": 3}, "unknown key 'top_kk'.*did you mean 'top_k'"),
        ({"top_k": 0}, r"ensemble\.top_k: must be an integer >= 1, got 0"),
        ({"top_k": "5"}, r"ensemble\.top_k: must be an integer"),
        ({"n_folds": 1}, r"ensemble\.n_folds: must be an integer >= 2"),
        ({"combiners": ["mean", "stack"]}, r"ensemble\.combiners: Unknown combiner 'stack'; valid: best, greedy, logistic, mean, mlp$"),
        ({"selection": "topk"}, r"ensemble\.selection: Unknown selection 'topk'; did you mean 'top_k'\?; valid: greedy, top_k"),
        ({"combiners": []}, r"ensemble\.combiners: must be a list"),
        ({"temperature": "yes"}, r"ensemble\.temperature: must be true or false"),
        ({"max_per_backbone": 0}, r"ensemble\.max_per_backbone: must be an integer >= 1"),
        ({"metric": "auc"}, r"Unknown metric 'auc'.*valid: auroc, log_loss, accuracy"),
        ({"threshold": "best"}, r"ensemble\.threshold: Unknown threshold 'best'; valid: youden, argmax"),
        ({"weights_dtype": "fp16"}, r"ensemble\.weights_dtype: Unknown weights_dtype 'fp16'.*valid: float32, float16"),
        ({"bagging": "yes"}, r"ensemble\.bagging: must be auto, true or false, got 'yes'"),
        ({"bagging": 1}, r"ensemble\.bagging: must be auto, true or false, got 1"),
        ({"bag_folds": 1}, r"ensemble\.bag_folds: must be an integer >= 2, got 1"),
    ],
)
def test_the_ensemble_section_is_checked(raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        EnsembleSettings.from_dict(raw, origin="space.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("space.yaml: ")


def test_the_ensemble_section_defaults_and_values():
    s = EnsembleSettings.from_dict({})
    assert (s.top_k, s.combiners, s.n_folds, s.temperature, s.max_per_backbone) == (5, ("mean", "best", "logistic", "mlp", "greedy"), 5, True, None)
    assert (s.selection, s.pool) == ("greedy", 20)
    assert not s.top_k_set and s.stacking_metric("val_auroc") == "auroc" and s.stacking_metric("val_loss") == "log_loss"
    s = EnsembleSettings.from_dict({"top_k": 3, "combiners": "greedy", "max_per_backbone": 2, "temperature": False})
    assert (s.top_k, s.combiners, s.max_per_backbone, s.temperature, s.top_k_set) == (3, ("greedy",), 2, False, True)


@pytest.mark.ray
def test_a_trial_stopped_before_its_first_result_is_passed_over(sweep, tmp_path):
    # A time budget can end a trial before it reports: its leaderboard row has no paths (NaN), which
    # once crashed the ensemble step at the end of a sweep.
    import shutil

    run = tmp_path / "budget"
    shutil.copytree(sweep.run_dir, run, ignore=shutil.ignore_patterns("ensemble"))
    board = pd.read_parquet(run / "leaderboard.parquet")
    ghost = board.iloc[[0]].copy()
    ghost["trial_id"], ghost["status"], ghost["epochs"], ghost["best"] = "ghost000", "pruned", 0, float("nan")
    for col in ("checkpoint", "path", "predictions_val", "predictions_test"):
        ghost[col] = float("nan")
    pd.concat([board, ghost], ignore_index=True).to_parquet(run / "leaderboard.parquet", index=False)
    sel = select_members(run, top_k=2, selection="top_k")
    assert "ghost000" not in [m.trial_id for m in sel.members] and len(sel.members) == 2


def test_greedy_selection_takes_a_good_member_whose_probabilities_are_only_softer():
    from ensemble._metrics import score
    from ensemble._select import _forward_select

    # Two members of equal skill with their own errors; the second was trained with label smoothing, so its
    # probabilities are squeezed toward 0.5. The raw average is less sure of the right class than the first
    # member alone (raw log loss up) though it ranks better; the ensemble step calibrates the average with a
    # temperature, and after it the pair is better: the second member joins.
    rng = np.random.default_rng(5)
    y = rng.integers(0, 2, 1000)
    sharp = _binary_probs(6.0 * (2 * y - 1) + rng.normal(0, 4.0, 1000))
    soft = _binary_probs(0.25 * (6.0 * (2 * y - 1) + rng.normal(0, 4.0, 1000)))
    both = (sharp + soft) / 2
    assert score(both, y, task="binary", metric="auroc") > score(sharp, y, task="binary", metric="auroc")
    assert score(both, y, task="binary", metric="log_loss") > score(sharp, y, task="binary", metric="log_loss")
    chosen, _ = _forward_select([_member("sharp", sharp), _member("soft", soft)], y, task="binary", k=5, metric="auroc")
    assert [m.trial_id for m in chosen] == ["sharp", "soft"]


def _row(tid: str, epochs: int, max_epochs: int = 13) -> dict:
    return {"trial_id": tid, "epochs": epochs, "max_epochs": max_epochs}


@pytest.mark.parametrize("ranked, mode, start", [
    # The leader stopped at epoch 4 of 13 and leads a finished trial by 0.0001: start from the finished one.
    ([(_row("pruned", 4), 0.9959), (_row("done", 13), 0.9958), (_row("mid", 7), 0.9957)], "max", 1),
    # Among the trials within the noise, the one that trained the most of its schedule, then the better score.
    ([(_row("pruned", 4), 0.9959), (_row("mid", 7), 0.9958), (_row("late", 12), 0.9900)], "max", 2),
    # A finished trial further below than the noise (0.01) does not displace the leader.
    ([(_row("pruned", 4), 0.9959), (_row("done", 13), 0.9800)], "max", 0),
    # The leader ran most of its schedule (the deadline cut it): it stays.
    ([(_row("cut", 9), 0.9959), (_row("done", 13), 0.9958)], "max", 0),
    # The leader finished: it stays, whatever else is near.
    ([(_row("done", 13), 0.9959), (_row("also", 13), 0.9958)], "max", 0),
    # A loss (lower is better, unbounded) has no noise band in these units: the leader stays.
    ([(_row("pruned", 4), 0.20), (_row("done", 13), 0.21)], "min", 0),
])
def test_greedy_selection_starts_from_the_trial_that_trained_its_schedule_when_the_leader_is_within_noise(ranked, mode, start):
    from ensemble._select import _greedy_start

    got, note = _greedy_start(ranked, mode=mode)
    assert got == start
    if start:
        assert note.startswith(f"greedy selection starts from trial {ranked[start][0]['trial_id']} (#{start + 1}")
        assert "stopped at epoch 4/13" in note
    else:
        assert note == ""
