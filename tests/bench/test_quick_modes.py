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
