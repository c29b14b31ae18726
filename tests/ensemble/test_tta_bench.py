"""bench/tta.py on the package's real smoke sweep: the paired figures it prints are the trials' own."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd

from ensemble import score

from .conftest import REPO


def test_the_paired_bench_scores_each_trial_as_its_own_predictions_do(sweep, tmp_path):
    out = tmp_path / "tta.json"
    proc = subprocess.run([sys.executable, "bench/tta.py", str(sweep.run_dir), "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    board = pd.read_parquet(sweep.run_dir / "leaderboard.parquet").set_index("trial_id")
    assert len(result["trials"]) == len(board)  # top_k keeps every usable trial's weights
    for row in result["trials"]:
        assert row["trained_flips"] == ["hflip"]
        # The mirror view is what the trial wrote: the bench rebuilt the model and its input as the trial did.
        stored = pd.read_parquet(board.loc[row["trial"].removeprefix("trial_"), "predictions_test"])
        probs = stored[[c for c in stored.columns if c.startswith("prob_")]].to_numpy()
        assert np.isclose(row["test.hflip.auroc"], score(probs, stored["label"].to_numpy(), task="binary", metric="auroc"), atol=1e-6)
        lo, hi = row["test.hflip-image.auroc.ci95"]
        assert lo <= row["test.hflip.auroc"] - row["test.image.auroc"] <= hi
    assert set(result["summary"]) == {"val.auroc", "val.accuracy", "test.auroc", "test.accuracy"}
