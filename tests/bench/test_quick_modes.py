"""Each benchmark's quick mode runs in CI and writes its figures (speed targets are checked in bench/, not here)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_throughput_quick_writes_a_ratio(tmp_path):
    out = tmp_path / "throughput.json"
    proc = subprocess.run(
        [sys.executable, "bench/throughput.py", "--quick", "--rounds", "1", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["bare_median"] > 0 and result["trainable_median"] > 0
    assert result["ratio"] == round(result["trainable_median"] / result["bare_median"], 3)
    assert "ratio" in proc.stdout


def test_ast_quick_writes_time_and_auroc_per_rate(tmp_path):
    out = tmp_path / "ast.json"
    proc = subprocess.run([sys.executable, "bench/ast.py", "--quick", "--rates", "1.0,0.25", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {r["activation_rate"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows[1.0]["time_vs_dense"] == 1.0
    assert abs(rows[0.25]["achieved_rate"] - 0.25) < 0.1
    assert 0.5 <= rows[1.0]["best_val_auroc"] <= 1.0


def test_augment_quick_writes_throughput_per_level(tmp_path):
    out = tmp_path / "augment.json"
    proc = subprocess.run([sys.executable, "bench/augment.py", "--quick", "--no-train", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "simple" in out.read_text() and "advanced" in out.read_text()
