"""Each benchmark's quick mode runs in CI and writes its figures (speed targets are checked in bench/, not here)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("MEDSWEEP_DATA_DIR", REPO.parent / "shared" / "datasets"))
needs_medmnist = pytest.mark.skipif(
    not (SHARED / "pneumoniamnist.npz").is_file() or not (SHARED / "bloodmnist.npz").is_file(),
    reason=f"the MedMNIST files are not in {SHARED} (set MEDSWEEP_DATA_DIR)",
)


def _bench(script, *args, out):
    proc = subprocess.run([sys.executable, f"bench/{script}", "--quick", *args, "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, json.loads(out.read_text())


@needs_medmnist
def test_throughput_quick_measures_every_part(tmp_path):
    stdout, result = _bench("throughput.py", "--rounds", "1", "--gpu-smoke", out=tmp_path / "throughput.json")
    assert result["bare_median"] > 0 and result["trainable_median"] > 0
    # The ratio comes from the unrounded medians; the medians are written rounded to 0.1 img/s.
    assert result["ratio"] == pytest.approx(result["trainable_median"] / result["bare_median"], abs=2e-3)
    levels = result["pipeline"]["levels"]
    assert list(levels) == ["none", "simple", "enhanced", "advanced"]
    assert all(v["images_per_s"] > 0 and v["vs_training"] > 0 for v in levels.values())
    ray = result["ray"]
    # ideal_s is written rounded to 0.1 s (about 10 s in quick mode), so the check allows that rounding.
    assert ray["sum_trial_s"] > 0 and ray["ratio"] == pytest.approx(ray["sweep_wall_s"] / ray["ideal_s"], rel=2e-2)
    bundle = result["bundle"]
    assert len(bundle["members"]) >= 2 and bundle["bundle_images_per_s"] > 0 and bundle["ratio"] > 0
    epoch = result["epoch"]  # end to end: a whole trial epoch under Tune against a bare train-and-evaluate epoch
    assert epoch["trial_median_s"] > 0 and epoch["bare_median_s"] > 0 and epoch["epochs_counted"] >= 1
    assert epoch["ratio"] == pytest.approx(epoch["bare_median_s"] / epoch["trial_median_s"], rel=2e-2)
    onnx = result["onnx"]  # the same bundle as one ONNX graph, side by side with Bundle.predict_proba
    assert onnx["onnx_images_per_s"] > 0 and onnx["bundle_images_per_s"] > 0 and onnx["images"] == bundle["images"]
    assert onnx["max_abs_diff"] < 1e-4 and onnx["export_check_max_abs_diff"] < 1e-4
    gpu = result["gpu"]  # on this CPU machine: the same code at 32 px (--gpu-smoke)
    assert gpu["raw_images_per_s"] > 0 and gpu["trainable_images_per_s"] > 0 and set(gpu["sharing"]) == {"1", "2"}
    for part in ("trainable:", "epoch:", "pipeline:", "ray:", "bundle:", "onnx:", "gpu:"):
        assert part in stdout


@needs_medmnist
def test_quality_quick_compares_with_the_medmnist_table(tmp_path):
    stdout, result = _bench("quality.py", out=tmp_path / "quality.json")
    rows = {r["dataset"]: r for r in result["rows"]}
    assert set(rows) == {"pneumoniamnist", "bloodmnist"}
    for row in rows.values():
        for who in ("ensemble", "best_single"):
            assert 0.0 <= row[f"{who}_auroc"] <= 1.0 and 0.0 <= row[f"{who}_accuracy"] <= 1.0
        assert all(t["met"] == (t["got"] >= t["target"]) for t in row["targets"].values())
        diag = row["trials_on_test"]  # each trial's test figures, read after the fact
        assert diag["trials"] >= 1 and 0.0 <= diag["best_test_accuracy"] <= 1.0
        assert row["best_single_accuracy"] <= diag["best_test_accuracy"] + 1e-4  # one of them (diag rounds to 4 places)
    assert 0.0 <= rows["pneumoniamnist"]["ensemble_accuracy_at_threshold"] <= 1.0  # binary: the validation-chosen cut
    for row in rows.values():  # the plain baseline beside medsweep, and issue 13's checks from both
        base = row["baseline"]["top3_mean_of_metrics"]
        assert 0.0 <= base["auroc"] <= 1.0 and 0.0 <= base["accuracy"] <= 1.0
        check = row["checks"]["auroc >= baseline top-3 mean"]
        assert check["met"] == (row["ensemble_auroc"] >= base["auroc"])
        assert row["checks"]["auroc >= its best member"]["target"] == row["best_single_auroc"]
    assert "baseline: top-3 mean of metrics" in stdout
    assert "Google AutoML Vision" in stdout and "target accuracy >= 0.966" in stdout


@needs_medmnist
def test_search_efficiency_quick_traces_three_ways(tmp_path):
    stdout, result = _bench("search_efficiency.py", out=tmp_path / "efficiency.json")
    assert result["seeds"] == [0]  # quick mode: one repeat
    rows = {r["way"]: r for r in result["per_seed"]["0"]}
    assert set(rows) == {"tpe_asha", "random_asha", "random_full"}
    assert rows["random_full"]["trial_epochs"] == 3 * 2  # no pruning: every trial runs every epoch
    for pts in result["curves"]["0"].values():
        epochs, best = zip(*pts)
        assert list(epochs) == list(range(1, len(pts) + 1)) and list(best) == sorted(best)  # cumulative, monotone
    full = rows["random_full"]
    # The share is measured against random_full's own trial-epochs to its best: 1 for itself by definition.
    assert full["epochs_to_reach_random_full_best"] == full["random_full_epochs_to_its_best"] <= 6
    assert full["share_to_reach_random_full_best"] == 1.0
    assert full["share_of_random_full_total"] == round(full["epochs_to_reach_random_full_best"] / 6, 3) <= 1.0
    for r in rows.values():
        if r["epochs_to_reach_random_full_best"] is not None:
            assert r["share_to_reach_random_full_best"] == round(
                r["epochs_to_reach_random_full_best"] / full["random_full_epochs_to_its_best"], 3)
    summary = {r["way"]: r for r in result["summary"]}
    assert summary["random_full"]["share_to_reach_random_full_best"] == {"mean": 1.0, "min": 1.0, "max": 1.0, "n": 1}
    assert "over seeds 0" in stdout
    assert Path(result["plot"]).is_file()


def test_ast_quick_writes_time_and_auroc_per_rate(tmp_path):
    out = tmp_path / "ast.json"
    proc = subprocess.run([sys.executable, "bench/ast.py", "--quick", "--rates", "1.0,0.25", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["activation_rate"]: r for r in json.loads(out.read_text())["rows"]}
    dense, sparse = rows[1.0], rows[0.25]
    # The ratio is the sparse rate's epoch time over the dense one's, and backpropagating a quarter of the
    # samples costs less than all of them (about half in bench/RESULTS.md).
    assert sparse["time_vs_dense"] == pytest.approx(sparse["epoch_seconds"] / dense["epoch_seconds"], rel=0.02, abs=0.01)
    assert sparse["time_vs_dense"] < 1.0
    assert abs(sparse["achieved_rate"] - 0.25) < 0.1
    assert sparse["samples_backprop_per_epoch"] == pytest.approx(0.25 * 768, rel=0.4)  # quick mode: 768 train images
    assert 0.5 <= rows[1.0]["best_val_auroc"] <= 1.0
    for row in rows.values():  # accuracy beside time, measured at the epoch validation picks
        assert 1 <= row["best_epoch"] <= 2 and 0.0 <= row["val_accuracy"] <= 1.0
        assert 0.0 <= row["test_auroc"] <= 1.0 and 0.0 <= row["test_accuracy"] <= 1.0


def test_augment_quick_writes_throughput_per_level(tmp_path):
    out = tmp_path / "augment.json"
    proc = subprocess.run([sys.executable, "bench/augment.py", "--quick", "--no-train", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "simple" in out.read_text() and "advanced" in out.read_text()


@needs_medmnist
def test_baseline_quick_scores_its_top_trials_on_test(tmp_path):
    stdout, result = _bench("baseline.py", "--n-boot", "200", out=tmp_path / "baseline.json")
    assert result["trials_started"] == 2 and result["trials_errored"] == 0 and result["trial_epochs"] == 2
    assert result["sizes"]["train"] < 500  # the 10 % subset
    top = result["top3"]
    assert result["top_k"] == len(top) == 2
    assert [t["best_val_auroc"] for t in top] == sorted((t["best_val_auroc"] for t in top), reverse=True)
    mean = result["top3_mean_of_metrics"]
    for k in ("auroc", "accuracy"):  # the mean of metrics is the mean of the members' own figures
        assert mean[k] == pytest.approx(sum(t[f"test_{k}"] for t in top) / len(top), abs=1e-3)
        for m in (mean, result["top3_mean_probs"]):
            lo, hi = m[f"{k}_ci95"]
            assert 0.0 <= lo <= hi <= 1.0
    assert result["top3_mean_probs"]["accuracy_ci95"][0] <= result["top3_mean_probs"]["accuracy"] <= result["top3_mean_probs"]["accuracy_ci95"][1]
    assert "top-2 mean of probabilities" in stdout and "top-2 mean of metrics" in stdout


@needs_medmnist
def test_scale_quick_times_the_stacker_and_measures_disk_and_report(tmp_path):
    stdout, result = _bench("scale.py", out=tmp_path / "scale.json")
    rows = result["stacker"]["rows"]
    assert [(r["members"], r["rows"], r["labels"]) for r in rows] == [(5, 1000, 14), (10, 1000, 14)]
    assert all(r["fit_s"] > 0 and 0.5 < r["test_auroc"] <= 1.0 for r in rows)
    disk = result["disk"]  # a 2-trial sweep of spaces/cxr.yaml with a tiny model
    assert disk["trials"] == 2 and disk["trials_mb"] > 0 and disk["total_mb"] >= disk["trials_mb"] * 0.5
    assert disk["per_trial_mb"] == pytest.approx(disk["trials_mb"] / 2, abs=0.1)
    assert "MB on disk" in disk["sweep"]["summary_line"]
    report = result["report"]
    assert report["median_s"] > 0 and report["grad_cam_images"] >= 2 and report["size_kb"] > 10
    for part in ("stacker:", "disk:", "report:"):
        assert part in stdout
