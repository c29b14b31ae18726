"""A sweep stopped mid-run with Ctrl-C (a real SIGINT to the driver) and continued with --resume."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from .conftest import REPO, SMOKE, write_images

N_TRIALS = 6


def checkpoints(trial_dir: Path) -> dict[str, float]:
    return {p.name: p.stat().st_mtime for p in trial_dir.glob("checkpoint_*/state.pt")}


@pytest.mark.ray
@pytest.mark.slow  # failed 1 run in 4 here for a reason not yet found; out of CI until issue 8 hardens it
def test_interrupted_sweep_resumes_to_n_trials_without_rerunning_finished_ones(tmp_path):
    images = write_images(tmp_path / "images")
    out = tmp_path / "runs"
    argv = [sys.executable, "-m", "search.run", str(SMOKE), "--set", f"data.root={images}",
            "--set", f"data.cache_dir={tmp_path / 'cache'}", "--set", f"search.n_trials={N_TRIALS}",
            "--set", "search.max_concurrent=1", "--out", str(out), "--no-ensemble"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    done: list[str] = []
    lines: list[str] = []

    def read():
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"trial \d+/\d+ (\w+) (finished|pruned)", line)
            if m:
                done.append(m.group(1))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + 300
    while len(done) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(done) >= 2, "".join(lines)[-3000:]
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=180)
    reader.join(timeout=10)
    assert rc != 0, "".join(lines)[-3000:]  # interrupted: 130, or a stop before the table
    run = out / "smoke"
    before = {tid: checkpoints(run / f"trial_{tid}") for tid in done}
    assert all(before.values())
    assert len(list(run.glob("trial_*"))) < N_TRIALS

    resumed = subprocess.run(argv + ["--resume"], cwd=REPO, capture_output=True, text=True, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    board = pd.read_parquet(run / "leaderboard.parquet")
    assert len(board) == N_TRIALS
    assert set(board["status"]) <= {"finished", "pruned"}
    for tid, ckpts in before.items():
        # A re-run would write new checkpoints or rewrite these ones.
        assert checkpoints(run / f"trial_{tid}") == ckpts, tid
