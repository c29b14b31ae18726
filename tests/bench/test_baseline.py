"""bench/baseline.py's scoring (fast parts; the sweep itself runs in test_quick_modes.py)."""

import ast
import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("medsweep_bench_baseline", REPO / "bench" / "baseline.py")
baseline = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(baseline)


def test_baseline_imports_no_medsweep_code():
    tree = ast.parse((REPO / "bench" / "baseline.py").read_text())
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"trainables", "search", "ensemble", "spaces"}, names


@pytest.mark.parametrize("n_classes", [2, 5])
def test_rank_auroc_matches_scikit_learn_with_ties(n_classes):
    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, 400)
    prob = np.round(rng.dirichlet(np.ones(n_classes), 400), 1)  # rounded: many ties
    prob[np.arange(400), y] += 0.2 * rng.random(400)  # some signal
    prob /= prob.sum(1, keepdims=True)
    want = roc_auc_score(y, prob[:, 1]) if n_classes == 2 else roc_auc_score(y, prob, multi_class="ovr")
    assert baseline.auroc(y, prob) == pytest.approx(want, abs=1e-12)
    assert baseline.auroc_by_ranks(y, prob) == pytest.approx(want, abs=1e-12)


def test_bootstrap_intervals_hold_the_estimates_and_are_seeded():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    probs = []
    for noise in (0.5, 1.0, 2.0):
        logits = np.eye(3)[y] + noise * rng.standard_normal((300, 3))
        probs.append(np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    ci = baseline.bootstrap(y, probs, n_boot=200, seed=1)
    mean = np.mean(probs, axis=0)
    lo, hi = ci["mean_probs_auroc"]
    assert lo < baseline.auroc(y, mean) < hi and hi - lo < 0.2
    lo, hi = ci["mean_of_metrics_accuracy"]
    assert lo < np.mean([baseline.accuracy(y, p) for p in probs]) < hi
    assert baseline.bootstrap(y, probs, n_boot=200, seed=1) == ci
    assert baseline.bootstrap(y, probs, n_boot=200, seed=2) != ci


def test_default_name_is_the_variant_folder(tmp_path):
    assert baseline.default_name(tmp_path / "pneumoniamnist-500" / "pneumoniamnist.npz") == "pneumoniamnist-500"
    assert baseline.default_name(tmp_path / "data" / "bloodmnist.npz") == "bloodmnist"
