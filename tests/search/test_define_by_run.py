"""The define-by-run search space on in-memory Optuna studies: conditions, order, log and step, constants."""

from __future__ import annotations

import math
import pickle

import optuna
import pytest

from search import load_space
from search._run import DefineByRun, trial_constants

CONDITIONAL = """
name: cond
data: {source: folder, root: /data/images}
fixed: {backbone: test_resnet, epochs: 2, image_size: 32}
space:
  # Listed before what it depends on: the search must still draw `loss` first.
  focal_gamma: {type: float, low: 0.5, high: 5.0, when: {loss: focal}}
  loss: {type: categorical, choices: [ce, focal]}
  activation_rate: {type: categorical, choices: [1.0, 0.5, 0.3]}
  ast_kp: {type: float, low: 0.1, high: 1.0, log: true, when: {activation_rate: {lt: 1}}}
  batch_size: {type: int, low: 8, high: 32, step: 8}
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""


@pytest.fixture
def space(tmp_path):
    p = tmp_path / "cond.yaml"
    p.write_text(CONDITIONAL)
    return load_space(p)


def draw(space, n: int, seed: int = 0) -> list[dict]:
    """Configs as OptunaSearch builds them: suggested values merged with the returned constants."""
    fn = DefineByRun(space.ordered_params(), trial_constants(space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed), direction="maximize")
    configs = []
    for i in range(n):
        trial = study.ask()
        constants = fn(trial)
        configs.append({**trial.params, **constants})
        study.tell(trial, float(i % 3))
    return configs


def test_conditional_parameters_exist_only_when_their_condition_holds(space):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    configs = draw(space, 40)
    for c in configs:
        assert ("focal_gamma" in c) == (c["loss"] == "focal"), c
        assert ("ast_kp" in c) == (c["activation_rate"] < 1), c
        if "focal_gamma" in c:
            assert 0.5 <= c["focal_gamma"] <= 5.0
    # Both sides of each condition were drawn.
    assert {c["loss"] for c in configs} == {"ce", "focal"}
    assert {c["activation_rate"] < 1 for c in configs} == {True, False}


def test_order_puts_conditions_after_what_they_name(space):
    order = [p.name for p in space.ordered_params()]
    assert order.index("loss") < order.index("focal_gamma")
    assert order.index("activation_rate") < order.index("ast_kp")
    assert order == ["loss", "focal_gamma", "activation_rate", "ast_kp", "batch_size", "lr"]


def test_log_step_and_constants(space):
    configs = draw(space, 20, seed=1)
    for c in configs:
        assert c["batch_size"] in (8, 16, 24, 32)
        assert 1e-4 <= c["lr"] <= 1e-2
        assert c["backbone"] == "test_resnet" and c["epochs"] == 2
        assert c["data"]["source"] == "folder" and c["data"]["root"] == "/data/images"
        assert c["_origin"].endswith("cond.yaml")
        assert c["select_metric"] == "val_auroc"  # best epoch chosen by the sweep's metric
    # A log-uniform draw spreads over decades.
    logs = [math.log10(c["lr"]) for c in configs]
    assert max(logs) - min(logs) > 1


def test_optuna_distributions_follow_the_space(space):
    fn = DefineByRun(space.ordered_params(), trial_constants(space))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    fn(trial)
    dists = trial.distributions
    assert dists["lr"] == optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True)
    assert dists["batch_size"] == optuna.distributions.IntDistribution(8, 32, step=8)
    assert dists["loss"] == optuna.distributions.CategoricalDistribution(["ce", "focal"])


def test_defaults_skip_parameters_whose_condition_fails(space):
    d = space.defaults()
    assert d["loss"] == "ce" and "focal_gamma" not in d
    assert d["activation_rate"] == 1.0 and "ast_kp" not in d


def test_ray_optuna_search_takes_the_function_and_survives_pickling(space):
    """What Tune does with it: suggest configs (constants merged in), save and restore the searcher."""
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(
        space=DefineByRun(space.ordered_params(), trial_constants(space)),
        metric="val_auroc",
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=0),
    )
    config = searcher.suggest("t1")
    assert config["data"]["root"] == "/data/images" and "lr" in config and "loss" in config
    searcher.on_trial_complete("t1", {"val_auroc": 0.9, "training_iteration": 1})
    clone = pickle.loads(pickle.dumps(searcher.__dict__))  # OptunaSearch.save pickles its __dict__
    assert len(clone["_ot_study"].trials) == 1
