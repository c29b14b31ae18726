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
    assert space.data.source.name in ("medmnist", "folder", "csv", "dicom", "nifti")


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
    (BASE.replace("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-4"), r"space\.lr: `low <= high` must hold.*fix the range"),
    (BASE.replace("low: 1.0e-4, high: 1.0e-2", "low: 0, high: 1.0e-2"), r"space\.lr: `low > 0` must hold for `log=True`"),
    (BASE.replace("log: true}", "log: true, step: 0.001}"), r"space\.lr: The parameter `step` is not supported when `log` is true"),
    (BASE.replace("step: 16", "step: 0"), r"space\.batch_size: `step > 0` must hold"),
    (BASE.replace("type: float", "type: flaot"), r"space\.lr\.type: `type` must be one of .*did you mean 'float'"),
    (BASE.replace("resnet34]", "resnet81]"), r"space\.backbone\.choices\[1\]: unknown timm backbone 'resnet81'; close names: resnet18"),
    (BASE.replace("fixed: {epochs: 3}", "fixed: {epochs: 3, backbone: resnet18}"), r"fixed\.backbone: 'backbone' is both fixed and searched"),
    (BASE.replace("fixed: {epochs: 3}", "fixed: {epochs: 3, backbone: resnt50}").replace("  backbone: {type: categorical, choices: [resnet18, resnet34]}\n", ""), r"fixed\.backbone: unknown timm backbone 'resnt50'; close names: .*resnet50"),
    (BASE.replace("dataset: pneumoniamnist", "dataset: pneumonia"), r"data\.dataset: unknown MedMNIST dataset 'pneumonia'; did you mean 'pneumoniamnist'"),
    (BASE.replace("source: medmnist", "source: dicm"), r"data\.source: Unknown data source 'dicm'; valid: csv, dicom, folder, medmnist, nifti; did you mean 'dicom'\?"),
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


SEARCH = """
name: s
data: {source: folder, root: /data}
fixed: {epochs: 6}
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  loss: {type: categorical, choices: [ce, focal]}
  focal_gamma: {type: float, low: 0.5, high: 5.0, when: {loss: focal}}
  activation_rate: {type: float, low: 0.2, high: 1.0}
  ast_kp: {type: float, low: 0.1, high: 1.0, when: {activation_rate: {lt: 1}}}
search:
  metric: val_auprc
  n_trials: 12
  max_concurrent: 2
  time_budget_s: 600
  sampler: {type: nsga2, seed: 3}
  scheduler: {type: asha, grace_period: 2, reduction_factor: 3}
  resources: {cpu: 2, gpu: 0.25}
"""


def test_search_section_becomes_a_frozen_search_config(tmp_path):
    import dataclasses

    from search import SearchConfig

    cfg = load_space(write(tmp_path, SEARCH)).search
    assert isinstance(cfg, SearchConfig)
    assert (cfg.metric, cfg.mode, cfg.n_trials, cfg.max_concurrent, cfg.time_budget_s) == ("val_auprc", "max", 12, 2, 600)
    assert (cfg.sampler.type, cfg.sampler.seed) == ("nsga2", 3)
    assert (cfg.scheduler.type, cfg.scheduler.max_t, cfg.scheduler.grace_period, cfg.scheduler.reduction_factor) == ("asha", 6, 2, 3)
    assert (cfg.resources.cpu, cfg.resources.gpu) == (2, 0.25)
    assert cfg.keep == "best" and load_space(write(tmp_path, SEARCH.replace("n_trials: 12", "n_trials: 12\n  keep: all"))).search.keep == "all"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_trials = 3


def test_shorthands_loss_mode_and_objectives(tmp_path):
    text = SEARCH.replace("sampler: {type: nsga2, seed: 3}", "sampler: random").replace(
        "scheduler: {type: asha, grace_period: 2, reduction_factor: 3}", "scheduler: fifo"
    )
    cfg = load_space(write(tmp_path, text), overrides=["search.metric=val_loss"]).search
    assert (cfg.sampler.type, cfg.scheduler.type, cfg.mode) == ("random", "fifo", "min")
    multi = text.replace("metric: val_auprc", "objectives: [{metric: val_auroc}, {metric: compute_savings, mode: max}]")
    cfg = load_space(write(tmp_path, multi)).search
    assert cfg.multi_objective and (cfg.metric, cfg.mode) == ("val_auroc", "max")
    assert [(o.metric, o.mode) for o in cfg.objectives] == [("val_auroc", "max"), ("compute_savings", "max")]
    per_class = load_space(write(tmp_path, text), overrides=["search.metric=val_sensitivity/pneumonia"]).search
    assert per_class.metric == "val_sensitivity/pneumonia"


def test_resolved_space_loads_again(tmp_path):
    import yaml

    space = load_space(write(tmp_path, SEARCH))
    again_path = tmp_path / "again.yaml"
    again_path.write_text(yaml.safe_dump(space.resolved(), sort_keys=False))
    again = load_space(again_path)
    assert again.search == space.search
    assert {k: p.to_dict() for k, p in again.params.items()} == {k: p.to_dict() for k, p in space.params.items()}
    assert again.data.to_dict() == space.data.to_dict() and dict(again.fixed) == dict(space.fixed)


WHEN_ERRORS = [
    ("when: {loss: focal}", "when: {los: focal}", r"space\.focal_gamma\.when\.los: 'los' is neither searched nor fixed; did you mean 'loss'\?"),
    ("when: {loss: focal}", "when: {loss: [focal, asl]}", r"space\.focal_gamma\.when\.loss: 'asl' is not a choice of 'loss'"),
    ("when: {loss: focal}", "when: {focal_gamma: 1.0}", r"space\.focal_gamma\.when\.focal_gamma: a parameter cannot depend on itself"),
    ("when: {loss: focal}", "when: {loss: []}", r"space\.focal_gamma\.when\.loss: needs at least one value"),
    ("when: {activation_rate: {lt: 1}}", "when: {activation_rate: {below: 1}}", r"when\.activation_rate\.below: unknown comparison 'below'"),
    ("when: {activation_rate: {lt: 1}}", "when: {activation_rate: {lt: 0.1}}", r"ranges over \[0\.2, 1\.0\], so activation_rate < 0\.1 never holds"),
    ("when: {activation_rate: {lt: 1}}", "when: {activation_rate: 3}", r"3 is not a possible value of 'activation_rate', which ranges over \[0\.2, 1\.0\]"),
    ("when: {loss: focal}", "when: {loss: {lt: 1}}", r"compares 'loss' with a number, but its choices \['ce', 'focal'\] are not numbers"),
    ("when: {loss: focal}", "when: loss", r"space\.focal_gamma\.when: must map parameter names"),
    ("n_trials: 12", "n_trials: 0", r"search\.n_trials: `n_trials` must be an integer >= 1( \(or null\))?, got 0"),
    ("n_trials: 12", "n_trials: 2.5", r"search\.n_trials: `n_trials` must be an integer >= 1( \(or null\))?, got 2\.5"),
    ("max_concurrent: 2", "max_concurrent: -1", r"search\.max_concurrent: `max_concurrent` must be an integer >= 1 \(or null\)"),
    ("time_budget_s: 600", "time_budget_s: 0", r"search\.time_budget_s: `time_budget_s` must be a number > 0"),
    ("time_budget_s: 600", "time_budget_s: 600\n  keep: bestt", r"search\.keep: must be one of best, weights, all, got 'bestt'; did you mean 'best'"),
    ("cpu: 2", "cpus: 2", r"search\.resources\.cpus: unknown key 'cpus' in resources; did you mean 'cpu'\?"),
    ("metric: val_auprc", "metric: auprc", r"search\.metric: the trainable does not report 'auprc'; did you mean 'val_auprc'"),
    ("metric: val_auprc", "metric: val_auroc\n  mode: maximize", r"search\.mode: must be max or min, got 'maximize'"),
    ("metric: val_auprc", "objectives: [{metric: val_auroc}, {metric: val_auroc, mode: max}]", r"search\.objectives: lists a metric twice"),
    ("metric: val_auprc", "objectives: [{metric: val_auroc, goal: max}]", r"search\.objectives\[0\]\.goal: unknown key 'goal' in an objective"),
    ("sampler: {type: nsga2, seed: 3}", "sampler: {type: tpe, seed: -1}", r"search\.sampler\.seed: `seed` must be an integer >= 0"),
    ("sampler: {type: nsga2, seed: 3}", "sampler: {type: random, n_startup_trials: 3}",
     r"search\.sampler\.n_startup_trials: n_startup_trials applies to the tpe sampler only, not random; remove it"),
    ("reduction_factor: 3", "reduction_factor: 1", r"search\.scheduler\.reduction_factor: `reduction_factor` must be a number > 1"),
    ("loss: {type: categorical, choices: [ce, focal]}", "loss: {type: categorical, choices: [ce, [focal]]}",
     r"space\.loss\.choices\[1\]: choices must be numbers, strings, booleans or null \(Optuna's rule\)"),
]


@pytest.mark.parametrize("old,new,match", WHEN_ERRORS, ids=[m.split(":")[0][:40] + str(i) for i, (_, _, m) in enumerate(WHEN_ERRORS)])
def test_bad_conditions_and_search_sections_fail_with_one_line(tmp_path, old, new, match):
    assert old in SEARCH
    with pytest.raises(ConfigError, match=match) as info:
        load_space(write(tmp_path, SEARCH.replace(old, new)))
    assert "\n" not in str(info.value)


def test_a_condition_on_a_fixed_parameter_is_allowed(tmp_path):
    """`--set loss=ce` fixes what a condition names: focal's gamma then never exists."""
    space = load_space(write(tmp_path, SEARCH), overrides=["loss=ce"])
    assert space.fixed["loss"] == "ce" and "focal_gamma" not in space.defaults()


def test_include_merges_presets_under_the_file(tmp_path):
    (tmp_path / "base.yaml").write_text(
        "name: ignored\nfixed: {epochs: 7, lr: 0.01, batch_size: 16}\n"
        "space: {drop_rate: {type: float, low: 0.0, high: 0.5}}\nsearch: {n_trials: 3, scheduler: {type: asha, grace_period: 2}}\n"
    )
    p = write(
        tmp_path,
        "include: [base]\ndata: {source: folder, root: /data}\nfixed: {batch_size: 32, drop_rate: 0.1}\n"
        "space: {lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}}\nsearch: {scheduler: {type: asha, max_t: 5}}\n",
    )
    space = load_space(p)
    assert space.name == "s"  # never a preset's name
    assert dict(space.fixed) == {"epochs": 7, "batch_size": 32, "drop_rate": 0.1}  # lr searched here, so not fixed
    assert set(space.params) == {"lr"}  # drop_rate fixed here, so not searched
    assert (space.search.n_trials, space.search.scheduler.grace_period, space.search.scheduler.max_t) == (3, 2, 5)


def test_include_finds_shipped_presets():
    presets = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "spaces" / "presets").glob("*.yaml"))
    if not presets:
        pytest.skip("no shipped presets")
    from search._files import _find_include

    assert _find_include(f"presets/{presets[0]}", Path("/nonexistent")) is not None


@pytest.mark.parametrize(
    "text,match",
    [
        ("include: [presets/nope]\ndata: {source: folder, root: /d}\n", r"s\.yaml: include\[0\]: no space file 'presets/nope' next to this file or among the shipped spaces; shipped: "),
        ("include: s\ndata: {source: folder, root: /d}\n", r"include\[0\]: 's' includes itself"),
        ("include: {a: 1}\ndata: {source: folder, root: /d}\n", r"s\.yaml: include: must be a name or a list of names"),
    ],
    ids=["missing", "cycle", "wrong type"],
)
def test_bad_includes(tmp_path, text, match):
    with pytest.raises(ConfigError, match=match):
        load_space(write(tmp_path, text))


@pytest.mark.parametrize("key,value,valid", [
    ("head", "cbma", "cbam"), ("loss", "focla", "focal"), ("optimizer", "adamm", "adam"),
    ("scheduler", "cosin", "cosine"), ("augment", "advancd", "advanced"),
])
def test_unknown_recipe_names_fail_at_load_with_the_valid_list(tmp_path, key, value, valid):
    text = BASE.replace("fixed: {epochs: 3}", f"fixed: {{epochs: 3, {key}: {value}}}")
    with pytest.raises(ConfigError, match=rf"fixed\.{key}: Unknown [a-z ]*'{value}'; valid: [^;]*; did you mean '{valid}'"):
        load_space(write(tmp_path, text))


def test_set_reaches_into_a_shorthand_section(tmp_path):
    text = SEARCH.replace("scheduler: {type: asha, grace_period: 2, reduction_factor: 3}", "scheduler: median")
    cfg = load_space(write(tmp_path, text), overrides=["search.scheduler.grace_period=3", "search.sampler.seed=7"]).search
    assert (cfg.scheduler.type, cfg.scheduler.grace_period, cfg.sampler.type, cfg.sampler.seed) == ("median", 3, "nsga2", 7)


@pytest.mark.parametrize("n_trials, given, startup", [(14, None, 3), (8, None, 2), (200, None, 10), (14, 6, 6)])
def test_tpe_starts_with_a_quarter_of_the_sweep_at_random(n_trials, given, startup):
    # Optuna's default 10 random trials would leave a 14-trial sweep only 4 guided ones.
    from search._run import create_sampler
    from search._sections import SamplerConfig

    sampler = create_sampler(SamplerConfig(type="tpe", seed=0, n_startup_trials=given), n_trials=n_trials)
    assert sampler._n_startup_trials == startup
    assert sampler._multivariate and sampler._group and sampler._constant_liar


@pytest.mark.parametrize(
    "extra, match",
    [
        ("ensemble: {top_k: 0}\n", r"ensemble\.top_k: must be an integer >= 1, got 0"),
        ("ensemble: {topk: 3}\n", r"ensemble\.topk: unknown key 'topk'; did you mean 'top_k'\?"),
        ("ensemble: {selection: best}\n", r"ensemble\.selection: Unknown selection 'best'"),
        ("ensemble: {combiners: [mean, stack]}\n", r"ensemble\.combiners.*Unknown combiner 'stack'"),
        ("ray: {adress: auto}\n", r"ray\.adress: unknown key 'adress' in ray; did you mean 'address'\?"),
        ("fixed: {epochs: 2, select_metric: val_loss}\n", r"fixed\.select_metric: 'val_loss' cannot pick the best epoch"),
        ("fixed: {epochs: 2, select_metric: val_aucroc}\n", r"fixed\.select_metric: the trainable does not report 'val_aucroc'; did you mean 'val_auroc'"),
        ("space: {select_metric: {type: categorical, choices: [val_auroc, train_loss]}}\n",
         r"space\.select_metric\.choices\[1\]: 'train_loss' cannot pick the best epoch"),
    ],
)
def test_every_section_is_checked_when_the_space_loads(tmp_path, extra, match):
    # Before Ray starts: a bad ensemble or ray section, or a select_metric that would pick the wrong epoch.
    p = tmp_path / "s.yaml"
    p.write_text("data: {source: medmnist, dataset: breastmnist}\n" + extra)
    with pytest.raises(ConfigError, match=match) as info:
        load_space(p)
    assert "\n" not in str(info.value) and str(info.value).startswith(str(p))
