"""bench/quality.py's start_cli / wait_cli: the sweeps a quick bench starts at once, and one that fails."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("medsweep_bench_quality_started", REPO / "bench" / "quality.py")
quality = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(quality)


def test_a_failed_command_raises_with_its_log_and_stops_the_ones_beside_it(tmp_path):
    ok = quality.start_cli("ok", [sys.executable, "-c", "print('fine')"], log=tmp_path / "ok.log")
    slow = quality.start_cli("slow", [sys.executable, "-c", "import time; time.sleep(120)"], log=tmp_path / "slow.log")
    bad = quality.start_cli("bad", [sys.executable, "-c", "import sys; print('broken input'); sys.exit(3)"],
                            log=tmp_path / "bad.log")
    assert quality.wait_cli(ok, script="bench/x.py") >= 0
    assert "fine" in (tmp_path / "ok.log").read_text()
    with pytest.raises(SystemExit, match=r"bench/x.py: bad: search.run exited 3; log .*bad.log:\s+broken input"):
        quality.wait_cli(bad, script="bench/x.py", others=[ok, slow, bad])
    # The sleeping one was stopped, not left to run until its own end.
    assert slow.proc.poll() is not None and slow.proc.returncode != 0
