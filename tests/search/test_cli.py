"""``python -m search.run`` without Ray: --dry-run, and malformed spaces ending in one line with exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from search.run import main

from .conftest import REPO, SMOKE


def test_dry_run_prints_the_space_and_the_budget(capsys, tmp_path):
    argv = [str(SMOKE), "--set", "data.root=/data/images", "--set", "search.n_trials=6", "--out", str(tmp_path), "--dry-run"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  backbone\s+'test_resnet'$", out, re.M)
    assert re.search(r"^  lr\s+float \[0\.001, 0\.01\] log$", out, re.M)
    assert re.search(r"^  batch_size\s+categorical \[8, 16\]$", out, re.M)
    assert "metric: val_auroc (max)" in out
    assert "scheduler: asha, max_t 2, grace_period 1, reduction_factor 2" in out
    assert "budget: 6 trials x at most 2 epochs = at most 12 trial-epochs" in out
    assert f"output: {tmp_path}/smoke" in out
    assert "root=/data/images" in out
    assert not (tmp_path / "smoke").exists()  # nothing written, no Ray started


def test_dry_run_shows_conditions_in_search_order(capsys, tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(
        "data: {source: folder, root: /x}\nfixed: {backbone: test_resnet, epochs: 3}\n"
        "space:\n"
        "  focal_gamma: {type: float, low: 1, high: 3, when: {loss: [focal]}}\n"
        "  loss: {type: categorical, choices: [ce, focal]}\n"
        "search: {scheduler: median, n_trials: 5}\n"
    )
    assert main([str(p), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.index("  loss ") < out.index("  focal_gamma ")
    assert "focal_gamma  float [1, 3]  when loss in ['focal']" in out
    assert "scheduler: median" in out and "budget: 5 trials x at most 3 epochs = at most 15 trial-epochs" in out


BASE = """name: t
data: {source: folder, root: /data/images}
fixed: {backbone: test_resnet, epochs: 2}
space:
  lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
  loss: {type: categorical, choices: [ce, focal]}
  focal_gamma: {type: float, low: 0.5, high: 5.0, when: {loss: focal}}
search:
  metric: val_auroc
  n_trials: 4
  scheduler: {type: asha, max_t: 2}
"""


def sub(old: str, new: str) -> str:
    assert old in BASE, old
    return BASE.replace(old, new)


# (id, space text, --set overrides, pattern the single stderr line must match after "medsweep: error: <file>: ")
MALFORMED = [
    ("yaml syntax", "data: {source: folder, root: [x\n", [], r"YAML syntax error at line \d+, column \d+"),
    ("unknown top-level key", BASE + "serach: {}\n", [], r"serach: unknown key 'serach'; did you mean 'search'\?"),
    ("unknown search key", sub("n_trials: 4", "n_trail: 4"), [], r"search\.n_trail: unknown key 'n_trail' in search; did you mean 'n_trials'\?"),
    ("wrong type n_trials", sub("n_trials: 4", "n_trials: four"), [], r"search\.n_trials: `n_trials` must be an integer >= 1 \(or null\), got 'four'"),
    ("wrong type fixed", sub("epochs: 2}", "epochs: two}"), [], r"fixed\.epochs: must be an int, got 'two'"),
    ("low > high", sub("low: 1.0e-4, high: 1.0e-2", "low: 1.0e-2, high: 1.0e-4"), [], r"space\.lr: `low <= high` must hold, but got \(low=0\.01, high=0\.0001\) \(Optuna's rule for a float parameter\); fix the range"),
    ("when on unknown parameter", sub("when: {loss: focal}", "when: {los: focal}"), [],
     r"space\.focal_gamma\.when\.los: 'los' is neither searched nor fixed; did you mean 'loss'\?"),
    ("when on an impossible value", sub("when: {loss: focal}", "when: {loss: focall}"), [],
     r"space\.focal_gamma\.when\.loss: 'focall' is not a choice of 'loss'; its choices are \['ce', 'focal'\]"),
    ("when cycle", sub("loss: {type: categorical, choices: [ce, focal]}", "loss: {type: categorical, choices: [ce, focal], when: {focal_gamma: 1.0}}"), [],
     r"space\.\w+\.when: conditions form a cycle"),
    ("unknown backbone", BASE, ["backbone=resnet1800"], r"fixed\.backbone: unknown timm backbone 'resnet1800'; close names: resnet"),
    ("metric not reported", sub("metric: val_auroc", "metric: val_f1"), [],
     r"search\.metric: the trainable does not report 'val_f1'.*; use one of val_auroc, val_accuracy"),
    ("loss maximized", sub("metric: val_auroc", "metric: val_loss\n  mode: max"), [], r"search\.mode: max with val_loss would pick the highest loss; use mode: min"),
    ("unknown sampler", BASE + "  sampler: {type: tpee}\n", [], r"search\.sampler\.type: Unknown Optuna sampler 'tpee'; valid: cmaes, nsga2, random, tpe; did you mean 'tpe'\?"),
    ("grace above max_t", sub("max_t: 2}", "max_t: 2, grace_period: 3}"), [], r"search\.scheduler\.grace_period: `grace_period` \(3\) must be <= `max_t` \(2\)"),
    ("median with asha keys", sub("{type: asha, max_t: 2}", "{type: median, max_t: 2}"), [], r"search\.scheduler\.max_t: unknown key 'max_t' in a median scheduler"),
    ("fractional gpus above one", BASE + "  resources: {cpu: 1, gpu: 1.5}\n", [], r"search\.resources\.gpu: `gpu` above 1 must be a whole number"),
    ("objectives disagree with metric", BASE + "  objectives: [{metric: val_auprc}, {metric: train_seconds}]\n", [],
     r"search\.metric: is 'val_auroc' but the first objective's metric is 'val_auprc'"),
    ("missing data folder", BASE, ["loss=ce"], r"data\.root: data folder '/data/images' does not exist; set data\.root"),
    ("bad --set", BASE, ["serch.n_trials=3"], r"--set serch\.n_trials: 'serch' is not a section; did you mean 'search'\?"),
]


@pytest.mark.parametrize("text,sets,pattern", [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_spaces_end_in_one_line_and_exit_2(tmp_path, capsys, text, sets, pattern):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    argv = [str(p), "--out", str(tmp_path / "runs")] + [x for s in sets for x in ("--set", s)]
    assert main(argv) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"medsweep: error: {p}: "), err
    assert re.search(pattern, err), err
    assert not (tmp_path / "runs").exists()


def test_resume_without_a_sweep_says_so(tmp_path, capsys):
    p = tmp_path / "s.yaml"
    p.write_text(BASE)
    assert main([str(p), "--out", str(tmp_path / "runs"), "--resume", "--set", "loss=ce"]) == 2
    err = capsys.readouterr().err.strip()
    assert re.fullmatch(rf"medsweep: error: {re.escape(str(p))}: --resume: no sweep to resume in .*/runs/t; run without --resume to start one", err), err


def test_as_a_process_the_error_has_no_traceback_and_debug_shows_it(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(sub("metric: val_auroc", "metric: auroc"))
    cmd = [sys.executable, "-m", "search.run", str(p)]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"medsweep: error: {p}: search.metric: the trainable does not report 'auroc'; did you mean 'val_auroc'")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    debug = subprocess.run(cmd + ["--debug"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr


def test_every_search_section_default_is_valid(tmp_path):
    """No `search:` at all: the defaults of the issue (val_auroc, max, tpe, asha up to the epochs)."""
    from search import load_space

    p = tmp_path / "s.yaml"
    p.write_text("data: {source: folder, root: /x}\nfixed: {epochs: 4}\n")
    cfg = load_space(p).search
    assert (cfg.metric, cfg.mode, cfg.sampler.type, cfg.scheduler.type, cfg.scheduler.max_t) == ("val_auroc", "max", "tpe", "asha", 4)
    assert (cfg.resources.cpu, cfg.resources.gpu, cfg.objectives, cfg.multi_objective) == (1, 0, (), False)


def test_shipped_smoke_space_is_small():
    from search import load_space

    space = load_space(SMOKE, overrides=["data.root=/x"])
    assert space.search.n_trials == 4 and space.search.scheduler.max_t == 2
    assert space.fixed["backbone"] == "test_resnet" and set(space.params) == {"lr", "batch_size"}
    assert Path(space.origin) == SMOKE


@pytest.mark.parametrize(
    "flag, env, expected",
    [
        (None, None, "local"),  # never a cluster that `ray start` left behind on this machine
        (None, "10.0.0.5:6379", "10.0.0.5:6379"),
        ("ray://head:10001", "10.0.0.5:6379", "ray://head:10001"),
    ],
)
def test_ray_is_joined_only_where_asked(monkeypatch, flag, env, expected):
    import ray

    from search._run import _init_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    if env is None:
        monkeypatch.delenv("RAY_ADDRESS", raising=False)
    else:
        monkeypatch.setenv("RAY_ADDRESS", env)
    assert _init_ray(flag, verbose=False) is True
    assert seen["address"] == expected
