"""StackingEnsemble on synthetic member predictions where the right answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import log_loss, roc_auc_score

import ensemble._stacking as stacking
from ensemble._metrics import expected_calibration_error
from ensemble._stacking import COMBINERS, StackingEnsemble
from trainables._errors import ConfigError

FAST = {"mlp_hidden": 16}  # a tiny meta-learner keeps the suite quick; the default 256 is exercised once


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def single_label(n, k, strengths, *, seed=0, flip=(), noise=1.0):
    """(members, n, k) softmax members, member i with signal ``strengths[i]`` (0 = noise); members in
    ``flip`` have their columns reversed (for binary: p -> 1 - p, an anti-correlated member)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % k
    rng.shuffle(y)
    members = []
    for i, s in enumerate(strengths):
        p = _softmax(s * np.eye(k)[y] + noise * rng.normal(size=(n, k)))
        members.append(p[:, ::-1] if i in flip else p)
    return np.stack(members), y


def multi_label(n, k, strengths, *, seed=0, masked=0.2):
    """(members, n, k) sigmoid members and (n, k) labels in {0, 1, -1}, about ``masked`` of them -1."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, k)) < 0.4).astype(float)
    members = [_sigmoid(s * (2 * y - 1) + rng.normal(size=(n, k))) for s in strengths]
    y[rng.random((n, k)) < masked] = -1
    return np.stack(members), y


def auroc(probs, y):
    return roc_auc_score(y, probs[:, 1])


# ---------------------------------------------------------------- each combiner does its job


def test_greedy_picks_the_only_informative_member():
    P, y = single_label(480, 2, [0.0, 0.0, 2.5, 0.0, 0.0], seed=1)
    Pv, yv, Pt, yt = P[:, :240], y[:240], P[:, 240:], y[240:]
    ens = StackingEnsemble(task="binary", combiners=("greedy",), temperature=False, class_bias=False).fit(Pv, yv)
    w = np.asarray(ens.params_["weights"])
    assert ens.combiner_ == "greedy"
    # picked first and most often; later rounds may add a noise member for a sliver of in-sample AUROC
    assert w.argmax() == 2 and w[2] > 0.5
    assert auroc(ens.predict_proba(Pt), yt) == pytest.approx(auroc(Pt[2], yt), abs=0.01)
    assert w.sum() == pytest.approx(1.0)
    assert sum(ens.params_["counts"]) == ens.greedy_rounds == 25


def test_the_best_single_candidate_wins_when_the_other_members_are_noise():
    # One informative member among noisy ones: averaging dilutes it, and on a small validation split the
    # meta-learners overfit the noise; the best single member scores highest out of fold and is chosen.
    P, y = single_label(120, 2, [0.3, 2.5, 0.2, 0.0, 0.1], seed=0, noise=1.5)
    ens = StackingEnsemble(task="binary", combiners=("mean", "best", "logistic", "mlp"), temperature=False, class_bias=False).fit(P, y)
    assert ens.combiner_ == "best" and ens.params_["member"] == 1
    assert ens.cv_scores_["best"] > ens.cv_scores_["mean"]
    np.testing.assert_allclose(ens.predict_proba(P), P[1] / P[1].sum(1, keepdims=True))
    # Round trip through the JSON the bundle stores.
    again = StackingEnsemble.from_dict(json.loads(json.dumps(ens.to_dict())))
    np.testing.assert_allclose(again.predict_proba(P), ens.predict_proba(P))


def test_the_chosen_combiner_never_scores_below_the_best_member_out_of_fold():
    for seed in range(4):
        P, y = single_label(90, 3, [1.0, 0.6, 1.4, 0.2], seed=seed, noise=1.2)
        ens = StackingEnsemble(task="multi-class", temperature=False, class_bias=False).fit(P, y)
        assert ens.cv_scores_[ens.combiner_] >= ens.cv_scores_["best"] - 1e-12


def test_logistic_beats_the_mean_with_an_anticorrelated_member():
    # members 0, 1 informative; member 2 strongly informative but inverted (p -> 1 - p)
    P, y = single_label(600, 2, [1.0, 1.0, 2.5], seed=2, flip=(2,))
    Pv, yv, Pt, yt = P[:, :300], y[:300], P[:, 300:], y[300:]
    ens = StackingEnsemble(task="binary", combiners=("mean", "logistic"), temperature=False, class_bias=False).fit(Pv, yv)
    assert ens.combiner_ == "logistic"
    assert ens.cv_scores_["logistic"] > ens.cv_scores_["mean"] + 0.1
    # the inverted member gets a negative weight, and the gain holds on held-out rows
    assert np.asarray(ens.params_["coef"])[0, 2] < 0
    assert auroc(ens.predict_proba(Pt), yt) > auroc(Pt.mean(0), yt) + 0.1


def test_identical_members_tie_and_the_tie_goes_to_mean():
    P1, y = single_label(200, 2, [1.5], seed=3)
    P = np.repeat(P1, 3, axis=0)
    # the user's order does not matter: ties are broken by simplicity (mean, greedy, logistic, mlp)
    ens = StackingEnsemble(task="binary", combiners=("mlp", "logistic", "greedy", "mean"), **FAST).fit(P, y)
    assert ens.combiner_ == "mean"
    assert ens.cv_scores_["greedy"] == pytest.approx(ens.cv_scores_["mean"], abs=1e-12)
    assert max(ens.cv_scores_.values()) <= ens.cv_scores_["mean"] + 1e-12
    assert [row["combiner"] for row in ens.cv_table_] == ["mean", "greedy"] + ["logistic"] * 3 + ["mlp"] * 3


def test_mlp_meta_learner_fits_and_serialises_at_default_size():
    P, y = single_label(90, 3, [1.0, 0.5], seed=4)
    ens = StackingEnsemble(task="multi-class", combiners=("mlp",), n_folds=2).fit(P, y)
    coefs = ens.params_["coefs"]
    assert np.asarray(coefs[0]).shape == (6, 256) and np.asarray(coefs[1]).shape == (256, 3)
    assert ens.params_["activation"] == "relu" and ens.params_["out_activation"] == "softmax"


@pytest.mark.parametrize("task, k", [("binary", 2), ("multi-class", 4)])
def test_one_member_is_left_as_it_is_before_its_calibration(task, k):
    # A meta-learner on one member's logits only recalibrates it and can reorder a multi-class member's
    # one-vs-rest scores; the ensemble of one member is that member (then its temperature and offsets).
    P, y = single_label(400, k, [1.2], seed=5, noise=1.0)
    ens = StackingEnsemble(task=task, temperature=False, class_bias=False, **FAST).fit(P, y)
    assert ens.combiner_ in ("mean", "best", "greedy")
    assert {row["combiner"] for row in ens.cv_table_} == {"mean", "best", "greedy"}
    np.testing.assert_allclose(ens.predict_proba(P), P[0] / P[0].sum(1, keepdims=True), atol=1e-12)
    # Asked for a meta-learner only, it still gets one.
    assert StackingEnsemble(task=task, combiners=("logistic",), **FAST).fit(P, y).combiner_ == "logistic"


def test_meta_learners_fit_on_a_stratified_cap_of_a_large_validation_split(monkeypatch):
    import ensemble._combiners as combiners

    seen = []
    original = combiners._fit_head
    monkeypatch.setattr(combiners, "_fit_head", lambda name, settings, X, y, seed: seen.append(np.bincount(y, minlength=3)) or original(name, settings, X, y, seed))
    P, y = single_label(6000, 3, [1.2, 0.8], seed=6)
    y = np.where(np.arange(6000) < 600, 2, y % 2)  # 10 % of class 2
    ens = StackingEnsemble(task="multi-class", combiners=("mean", "logistic"), n_folds=2, **FAST).fit(P, y)
    assert seen and all(c.sum() <= combiners.HEAD_MAX_ROWS for c in seen)
    # Each fit keeps the classes' shares (within a row per class) and the same rows for the same data.
    assert all(abs(c[2] / c.sum() - 0.1) < 0.002 for c in seen)
    assert ens.cv_scores_["logistic"] > 0.5
    rows = combiners.capped_rows(y, seed=0)
    np.testing.assert_array_equal(rows, combiners.capped_rows(y, seed=0))
    assert len(np.unique(rows)) == len(rows) and len(combiners.capped_rows(y[:500])) == 500
    # Multi-label rows are drawn by their first positive label, and every label keeps rows.
    Pm, ym = multi_label(5000, 3, [1.5], seed=7)
    rows = combiners.capped_rows(ym, seed=0)
    assert len(rows) <= combiners.HEAD_MAX_ROWS and ((ym[rows] == 1).sum(0) > 0).all()


# ---------------------------------------------------------------- cross-validation


def test_cv_only_sees_the_rows_given(monkeypatch):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    seen = []
    for cls in (LogisticRegression, MLPClassifier):
        original = cls.fit

        def spy(self, X, y, *args, _original=original, **kwargs):
            seen.append((type(self).__name__, X.shape[0]))
            return _original(self, X, y, *args, **kwargs)

        monkeypatch.setattr(cls, "fit", spy)
    greedy_rows = []
    import ensemble._combiners as combiners

    original_greedy = combiners._fit_greedy
    monkeypatch.setattr(combiners, "_fit_greedy", lambda P, y, *a: greedy_rows.append(P.shape[1]) or original_greedy(P, y, *a))

    P, y = single_label(400, 2, [1.0, 0.5], seed=5)
    Pv, yv = P[:, :120], y[:120]  # the rest plays the test split: never handed to fit
    ens = StackingEnsemble(task="binary", combiners=("greedy", "logistic", "mlp"), n_folds=4, **FAST).fit(Pv, yv)
    rows = [r for _, r in seen] + greedy_rows
    assert max(rows) == 120  # the refit on all of the validation rows
    assert sorted(set(rows)) == [90, 120]  # 4-fold training parts are 90 rows
    # per grid point (greedy 1, logistic 3, mlp 3): 4 fold fits; then the chosen one once on all rows
    assert len(rows) == 4 * (1 + 3 + 3) + 1 and rows.count(120) == 1
    assert all(len(row["fold_scores"]) == 4 for row in ens.cv_table_)


def test_folds_shrink_to_the_rarest_class():
    P, y = single_label(60, 2, [1.0, 1.0], seed=6)
    y[np.flatnonzero(y == 1)[3:]] = 0  # three positives only
    ens = StackingEnsemble(task="binary", combiners=("mean", "logistic"), n_folds=5).fit(P, y)
    assert ens.n_folds_ == 3
    assert all(len(row["fold_scores"]) == 3 for row in ens.cv_table_)


@pytest.mark.parametrize(
    "options, match",
    [
        ({"combiners": ("mean", "logistc")}, r"^combiners: Unknown combiner 'logistc'; valid: best, greedy, logistic, mean, mlp; did you mean 'logistic'\?$"),
        ({"combiners": ()}, "at least one combiner"),
        ({"task": "multiclass"}, "did you mean 'multi-class'"),
        ({"metric": "auc"}, "Unknown metric 'auc'"),
        ({"n_folds": 1}, "n_folds: must be an integer >= 2"),
        ({"greedy_rounds": 0}, "greedy_rounds"),
        ({"threshold": "youdens"}, "Unknown threshold 'youdens'.*did you mean 'youden'"),
    ],
)
def test_bad_options_raise_config_error(options, match):
    P, y = single_label(40, 2, [1.0], seed=7)
    kwargs = {"task": "binary", **options}
    ens = StackingEnsemble(**kwargs)  # __init__ only stores
    with pytest.raises(ConfigError, match=match):
        ens.fit(P, y)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda P, y: (P[0], y), "must be \\(n_members, N, K\\)"),
        (lambda P, y: (P, y[:-1]), "y must be \\(N,\\)"),
        (lambda P, y: (np.log(P), y), "probabilities in \\[0, 1\\]"),
        (lambda P, y: (P, y + 5), "class indices in \\[0, 2\\)"),
        (lambda P, y: (np.concatenate([P, P[:, :, :1]], 2) / 1.5, y), "task 'binary' needs K = 2"),
        (lambda P, y: (P, np.zeros_like(y)), "single class"),
    ],
)
def test_bad_shapes_raise_value_error(make, match):
    P, y = single_label(40, 2, [1.0, 1.0], seed=8)
    with pytest.raises(ValueError, match=match):
        StackingEnsemble(task="binary", combiners=("mean",)).fit(*make(P, y))


def test_predict_checks_members_and_classes():
    P, y = single_label(60, 2, [1.0, 1.0], seed=9)
    ens = StackingEnsemble(task="binary", combiners=("mean",)).fit(P, y)
    with pytest.raises(ValueError, match="P has 1 members but the ensemble was fitted on 2"):
        ens.predict_proba(P[:1])
    with pytest.raises(ValueError, match="fitted"):
        StackingEnsemble(task="binary").predict_proba(P)


# ---------------------------------------------------------------- tasks and masks


@pytest.mark.parametrize("task, k", [("binary", 2), ("multi-class", 4), ("ordinal", 3), ("multi-label", 3)])
def test_every_task_fits_and_predicts_n_by_k(task, k):
    if task == "multi-label":
        P, y = multi_label(160, k, [1.5, 0.5, 0.0], seed=10)
    else:
        P, y = single_label(160, k, [1.5, 0.5, 0.0], seed=10)
    ens = StackingEnsemble(task=task, n_folds=3, **FAST).fit(P[:, :120], y[:120])
    out = ens.predict_proba(P[:, 120:])
    assert out.shape == (40, k) and np.isfinite(out).all()
    assert (out >= 0).all() and (out <= 1).all()
    if task != "multi-label":
        np.testing.assert_allclose(out.sum(1), 1.0, atol=1e-12)
    assert ens.n_members_ == 3 and ens.n_classes_ == k
    assert set(ens.cv_scores_) == set(COMBINERS)


@pytest.mark.parametrize("combiner", COMBINERS)
def test_masked_entries_do_not_influence_fitting(combiner):
    P, y = multi_label(200, 3, [1.5, 0.8, 0.0], seed=11, masked=0.25)
    Pv, yv, Pt = P[:, :150], y[:150], P[:, 150:]
    rng = np.random.default_rng(0)
    noisy = Pv.copy()
    masked = np.broadcast_to(yv == -1, Pv.shape)
    noisy[masked] = rng.random(int(masked.sum()))  # rewrite every member's prediction where the label is masked
    a = StackingEnsemble(task="multi-label", combiners=(combiner,), n_folds=3, **FAST).fit(Pv, yv)
    b = StackingEnsemble(task="multi-label", combiners=(combiner,), n_folds=3, **FAST).fit(noisy, yv)
    np.testing.assert_array_equal(a.predict_proba(Pt), b.predict_proba(Pt))
    assert a.temperature_ == b.temperature_
    assert [r["fold_scores"] for r in a.cv_table_] == [r["fold_scores"] for r in b.cv_table_]
    # and the same rewrite on unmasked entries does change the fit (the test is not vacuous)
    if combiner in ("logistic", "greedy"):
        known = np.broadcast_to(yv != -1, Pv.shape)
        shuffled = Pv.copy()
        shuffled[known] = rng.random(int(known.sum()))
        c = StackingEnsemble(task="multi-label", combiners=(combiner,), n_folds=3).fit(shuffled, yv)
        assert not np.allclose(a.predict_proba(Pt), c.predict_proba(Pt))


def test_multilabel_label_without_both_classes_falls_back_to_the_mean():
    P, y = multi_label(120, 3, [1.5, 0.5], seed=12, masked=0.0)
    y[:, 2] = 0  # no positive for label 2
    ens = StackingEnsemble(task="multi-label", combiners=("logistic",), temperature=False, class_bias=False, n_folds=3).fit(P, y)
    assert ens.params_["labels"][2] is None
    np.testing.assert_allclose(ens.predict_proba(P)[:, 2], P[:, :, 2].mean(0))


# ---------------------------------------------------------------- temperature


def _overconfident_binary(n, seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(scale=1.5, size=n)
    y = (rng.random(n) < _sigmoid(z)).astype(int)  # calibrated truth
    members = []
    for _ in range(2):  # each member 3x too sharp
        p = _sigmoid(3.0 * (z + 0.3 * rng.normal(size=n)))
        members.append(np.stack([1 - p, p], 1))
    return np.stack(members), y


def test_temperature_fixes_overconfidence_and_keeps_ranks():
    P, y = _overconfident_binary(1200, seed=13)
    Pv, yv, Pt, yt = P[:, :600], y[:600], P[:, 600:], y[600:]
    cold = StackingEnsemble(task="binary", combiners=("mean",), temperature=False, class_bias=False).fit(Pv, yv)
    warm = StackingEnsemble(task="binary", combiners=("mean",), temperature=True, class_bias=False).fit(Pv, yv)
    assert cold.temperature_ == 1.0
    assert 2.0 < warm.temperature_ < 4.5
    before, after = cold.predict_proba(Pt), warm.predict_proba(Pt)
    assert log_loss(yt, after) < log_loss(yt, before) - 0.05
    assert expected_calibration_error(after, yt, task="binary") < expected_calibration_error(before, yt, task="binary")
    np.testing.assert_array_equal(after.argmax(1), before.argmax(1))
    assert auroc(after, yt) == auroc(before, yt)


def test_temperature_keeps_argmax_multiclass_and_auroc_multilabel():
    rng = np.random.default_rng(14)
    truth = _softmax(1.5 * rng.normal(size=(600, 4)))
    y = (rng.random((600, 1)) > truth.cumsum(1)).sum(1)  # y ~ Categorical(truth)
    P = _softmax(3.0 * np.log(truth))[None]  # one member, 3x too sharp
    cold = StackingEnsemble(task="multi-class", combiners=("mean",), temperature=False, class_bias=False).fit(P[:, :300], y[:300])
    warm = StackingEnsemble(task="multi-class", combiners=("mean",), class_bias=False).fit(P[:, :300], y[:300])
    assert 2.0 < warm.temperature_ < 4.5
    a, b = cold.predict_proba(P[:, 300:]), warm.predict_proba(P[:, 300:])
    np.testing.assert_array_equal(b.argmax(1), a.argmax(1))
    assert log_loss(y[300:], b, labels=range(4)) < log_loss(y[300:], a, labels=range(4))

    Q, z = multi_label(300, 3, [3.0, 3.0], seed=15, masked=0.1)
    cold = StackingEnsemble(task="multi-label", combiners=("mean",), temperature=False, class_bias=False).fit(Q[:, :200], z[:200])
    warm = StackingEnsemble(task="multi-label", combiners=("mean",), class_bias=False).fit(Q[:, :200], z[:200])
    assert abs(math.log(warm.temperature_)) > 0.1  # a real rescaling
    a, b, zt = cold.predict_proba(Q[:, 200:]), warm.predict_proba(Q[:, 200:]), z[200:]
    for j in range(3):
        m = zt[:, j] >= 0
        assert roc_auc_score(zt[m, j], a[m, j]) == roc_auc_score(zt[m, j], b[m, j])


# ---------------------------------------------------------------- serialisation


def _contains_sklearn(obj, depth=0):
    if depth > 6:
        return False
    if type(obj).__module__.startswith("sklearn"):
        return True
    if isinstance(obj, dict):
        return any(_contains_sklearn(v, depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return any(_contains_sklearn(v, depth + 1) for v in obj[:3])
    return False


@pytest.mark.parametrize("task", ["binary", "multi-class", "multi-label"])
@pytest.mark.parametrize("combiner", COMBINERS)
def test_json_round_trip_reproduces_predictions(combiner, task):
    if task == "multi-label":
        P, y = multi_label(150, 3, [1.5, 0.5], seed=16)
    else:
        P, y = single_label(150, 2 if task == "binary" else 4, [1.5, 0.5], seed=16)
    ens = StackingEnsemble(task=task, combiners=(combiner,), n_folds=3, **FAST).fit(P[:, :100], y[:100])
    d = json.loads(json.dumps(ens.to_dict(), allow_nan=False))
    assert d["format"] == 1 and d["task"] == task and d["combiner"] == combiner
    assert d["n_members"] == 2 and d["n_classes"] == P.shape[2]
    back = StackingEnsemble.from_dict(d)
    assert not _contains_sklearn(vars(back))
    np.testing.assert_allclose(back.predict_proba(P[:, 100:]), ens.predict_proba(P[:, 100:]), rtol=0, atol=1e-9)
    assert back.combiner_ == ens.combiner_ and back.temperature_ == ens.temperature_


@pytest.mark.parametrize("combiner", ["logistic", "mlp"])
def test_numpy_prediction_matches_sklearn(monkeypatch, combiner):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    models = []
    cls = LogisticRegression if combiner == "logistic" else MLPClassifier
    original = cls.fit
    monkeypatch.setattr(cls, "fit", lambda self, X, y: models.append((self, X)) or original(self, X, y))
    P, y = single_label(120, 3, [1.5, 0.5], seed=17)
    ens = StackingEnsemble(task="multi-class", combiners=(combiner,), temperature=False, class_bias=False, n_folds=3, **FAST).fit(P, y)
    model, Z = models[-1]  # the refit on all rows
    np.testing.assert_allclose(ens.predict_proba(P), model.predict_proba(Z), rtol=0, atol=1e-10)


def test_from_dict_rejects_bad_dicts():
    P, y = single_label(60, 2, [1.0, 1.0], seed=18)
    d = StackingEnsemble(task="binary", combiners=("greedy",)).fit(P, y).to_dict()
    with pytest.raises(ValueError, match="unsupported stacking format 2"):
        StackingEnsemble.from_dict({**d, "format": 2})
    with pytest.raises(ValueError, match="greedy weights have shape"):
        StackingEnsemble.from_dict({**d, "params": {"weights": [1.0]}})
    with pytest.raises(ValueError, match="lacks params"):
        StackingEnsemble.from_dict({k: v for k, v in d.items() if k != "params"})
    with pytest.raises(ValueError, match="temperature must be a positive number"):
        StackingEnsemble.from_dict({**d, "temperature": 0.0})


def test_to_dict_has_no_nan():
    # a label with no positives in some folds gives undefined fold AUROCs; JSON gets null, not NaN
    P, y = multi_label(30, 2, [1.0], seed=19, masked=0.0)
    y[:, 1] = 0
    y[:2, 1] = 1
    d = StackingEnsemble(task="multi-label", combiners=("mean",), n_folds=5).fit(P, y).to_dict()
    json.dumps(d, allow_nan=False)
    assert all(v is None or math.isfinite(v) for row in d["cv_table"] for v in row["fold_scores"])


def test_youden_threshold_separates_where_sensitivity_plus_specificity_peaks():
    # Negatives score in [0.0, 0.6], positives in [0.7, 1.0]: every cut in (0.6, 0.7] separates them;
    # the rule takes the one nearest 0.5 among the ties, i.e. the lowest positive score.
    y = np.array([0] * 7 + [1] * 4)
    scores = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert stacking.youden_threshold(scores, y) == pytest.approx(0.7)
    assert stacking.youden_threshold(scores, np.ones_like(y)) == 0.5  # one class: no curve


def test_binary_threshold_is_chosen_on_out_of_fold_predictions():
    # Five equally good members shifted apart: one greedy round keeps whichever scores best on the rows it is
    # fitted on, so a fold's pick can differ from the pick on all rows and the out-of-fold probabilities (and
    # their Youden cut) differ from the in-sample ones. Each group is one CV fold (5 groups, 5 folds), so the
    # out-of-fold predictions can be rebuilt here: fit on four groups, predict the fifth.
    rng = np.random.default_rng(3)
    n = 200
    y = (rng.random(n) < 0.5).astype(int)
    groups = np.arange(n) % 5
    z = np.stack([(2 * y - 1) + shift + rng.normal(size=n) for shift in (2.0, -2.0, 1.0, -1.0, 0.0)])
    P = np.stack([1 - _sigmoid(z), _sigmoid(z)], -1)
    opts = {"task": "binary", "combiners": ("greedy",), "greedy_rounds": 1, "n_folds": 5, "temperature": False,
            "class_bias": False}
    ens = StackingEnsemble(**opts).fit(P, y, groups=groups)
    oof = np.zeros(n)
    for g in range(5):
        rest, held = groups != g, groups == g
        oof[held] = StackingEnsemble(**opts).fit(P[:, rest], y[rest], groups=groups[rest]).predict_proba(P[:, held])[:, 1]
    in_sample = ens.predict_proba(P)[:, 1]
    assert np.abs(oof - in_sample).max() > 0.1  # the case has teeth: the two cuts below differ
    assert abs(stacking.youden_threshold(oof, y) - stacking.youden_threshold(in_sample, y)) > 0.02
    assert ens.threshold_ == pytest.approx(stacking.youden_threshold(oof, y))


def test_binary_threshold_restores_balanced_decisions_and_survives_json():
    # Members that score every sample high (shifted towards the positive class): at 0.5 nearly all is
    # "positive"; the validation-chosen cut restores balanced decisions.
    rng = np.random.default_rng(3)
    y = np.array([0] * 150 + [1] * 450)
    z = np.where(y == 1, 2.0, -2.0)[None, :] + rng.normal(size=(3, len(y))) + 0.0
    P = np.stack([1 - _sigmoid(z), _sigmoid(z)], -1)
    ens = StackingEnsemble(task="binary", combiners=("mean",), temperature=False, class_bias=False).fit(P, y)
    assert 0.0 < ens.threshold_ < 1.0
    probs = ens.predict_proba(P)
    np.testing.assert_array_equal(ens.predict(P), (probs[:, 1] >= ens.threshold_).astype(int))
    balanced = lambda pred: ((pred[y == 1] == 1).mean() + (pred[y == 0] == 0).mean()) / 2  # noqa: E731
    assert balanced(ens.predict(P)) >= balanced((probs[:, 1] >= 0.5).astype(int))
    back = StackingEnsemble.from_dict(json.loads(json.dumps(ens.to_dict())))
    assert back.threshold_ == pytest.approx(ens.threshold_)
    np.testing.assert_array_equal(back.predict(P), ens.predict(P))
    assert StackingEnsemble(task="binary", combiners=("mean",), threshold="argmax").fit(P, y).threshold_ == 0.5


def test_only_binary_tasks_get_a_threshold():
    P, y = single_label(90, 3, [2.0, 2.0], seed=4)
    ens = StackingEnsemble(task="multi-class", combiners=("mean",)).fit(P, y)
    assert ens.threshold_ is None
    np.testing.assert_array_equal(ens.predict(P), ens.predict_proba(P).argmax(1))


def test_class_offsets_restore_argmax_accuracy_for_the_validation_mix():
    # Members calibrated for a 50/50 world (a balanced sampler, no correction) on data that is 85/15:
    # temperature alone keeps argmax, the class offsets move it to the validation mix's Bayes decision.
    rng = np.random.default_rng(5)
    n = 1200
    y = (rng.random(n) < 0.15).astype(int)
    x = rng.normal(loc=2.0 * y, scale=1.0)
    llr = 2.0 * x - 2.0  # log-likelihood ratio: the posterior under a uniform prior
    members = []
    for noise in (0.3, 0.5):
        p = _sigmoid(llr + rng.normal(0, noise, n))
        members.append(np.stack([1 - p, p], 1))
    P = np.stack(members)
    Pv, yv, Pt, yt = P[:, :600], y[:600], P[:, 600:], y[600:]
    plain = StackingEnsemble(task="binary", combiners=("mean",), class_bias=False).fit(Pv, yv)
    shifted = StackingEnsemble(task="binary", combiners=("mean",)).fit(Pv, yv)
    acc = lambda e: float((e.predict_proba(Pt).argmax(1) == yt).mean())  # noqa: E731
    majority = max(yt.mean(), 1 - yt.mean())
    assert acc(plain) + 0.03 < acc(shifted) and acc(shifted) > majority + 0.03
    assert shifted.class_bias_[0] == 0.0 and shifted.class_bias_[1] < -1.0  # log(0.15/0.85) ~ -1.7, plus noise
    assert log_loss(yt, shifted.predict_proba(Pt)) < log_loss(yt, plain.predict_proba(Pt))
    assert auroc(shifted.predict_proba(Pt), yt) == pytest.approx(auroc(plain.predict_proba(Pt), yt), abs=1e-12)
    again = StackingEnsemble.from_dict(json.loads(json.dumps(shifted.to_dict())))
    np.testing.assert_allclose(again.predict_proba(Pt), shifted.predict_proba(Pt))


# ---------------------------------------------------------------- at scale


def latent_multi_label(m, n, k, *, seed=0):
    """(members, n, k) sigmoid members that see a shared latent score per label through their own gain,
    bias and noise, and 0/1 labels of prevalence 1-20 % drawn from it: stored predictions of real sweeps."""
    rng = np.random.default_rng(seed)
    prevalence = np.linspace(0.01, 0.20, k)
    base = np.log(prevalence / (1 - prevalence))
    latent = rng.standard_normal((n, k))
    y = (rng.random((n, k)) < _sigmoid(2.0 * latent + base)).astype(float)
    z = rng.uniform(0.5, 2.0, (m, 1, k)) * latent + rng.uniform(0.5, 2.0, (m, 1, k)) * rng.normal(size=(m, n, k))
    return _sigmoid(z + rng.normal(size=(m, 1, k)) + base).astype(np.float32).astype(float), y


def test_multilabel_stacking_at_scale_is_fast_and_as_good_as_per_label_sklearn():
    """10 members x 2,000 rows x 14 labels: the whole CV fit in seconds (per-label scikit-learn fits took
    minutes), its logistic heads are scikit-learn's, and its test AUROC is that of a per-label logistic stack."""
    import time

    from sklearn.linear_model import LogisticRegression

    from ensemble._metrics import score

    P, y = latent_multi_label(10, 4000, 14, seed=3)
    y[np.random.default_rng(0).random(y.shape) < 0.05] = -1  # some masked entries too
    Pv, yv, Pt, yt = P[:, :2000], y[:2000], P[:, 2000:], y[2000:]
    t0 = time.perf_counter()
    ens = StackingEnsemble(task="multi-label").fit(Pv, yv)
    assert time.perf_counter() - t0 < 60
    assert set(ens.cv_scores_) == set(COMBINERS) and ens.settings_ in [r["params"] for r in ens.cv_table_]
    ours = score(ens.predict_proba(Pt), yt, task="multi-label", metric="auroc")

    # the reference: one scikit-learn LogisticRegression per label on the standardised member logits
    def logits(Q):
        Q = np.clip(Q, 1e-7, 1 - 1e-7)
        return np.log(Q) - np.log1p(-Q)

    logistic = StackingEnsemble(task="multi-label", combiners=("logistic",), temperature=False, class_bias=False).fit(Pv, yv)
    C = logistic.settings_["C"]
    ref = np.empty(yt.shape)
    for j in range(14):
        known = yv[:, j] >= 0
        X, Xt = logits(Pv[:, known, j]).T, logits(Pt[:, :, j]).T
        mean, scale = X.mean(0), X.std(0)
        model = LogisticRegression(C=C, max_iter=1000, tol=1e-8).fit((X - mean) / scale, yv[known, j].astype(int))
        ref[:, j] = model.predict_proba((Xt - mean) / scale)[:, 1]
    np.testing.assert_allclose(logistic.predict_proba(Pt), ref, atol=1e-4)
    reference = score(ref, yt, task="multi-label", metric="auroc")
    assert ours >= reference - 0.002, (ours, reference)
