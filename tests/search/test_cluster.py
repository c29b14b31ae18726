"""A real two-node Ray cluster on loopback: the sweep joins it with --address and trials run on both nodes."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from .conftest import REPO, SMOKE, write_images


@pytest.mark.ray
def test_sweep_on_a_two_node_cluster_uses_both_nodes(tmp_path):
    from ray.cluster_utils import Cluster

    images = write_images(tmp_path / "images")
    # Two raylets with one CPU each: two concurrent one-CPU trials must land on different nodes.
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        env = {**os.environ, "RAY_ADDRESS": ""}
        proc = subprocess.run(
            [sys.executable, "-m", "search.run", str(SMOKE), "--address", cluster.address,
             "--set", f"data.root={images}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
             "--set", "search.n_trials=4", "--out", str(tmp_path / "runs"), "--no-ensemble"],
            cwd=REPO, capture_output=True, text=True, timeout=600, env=env,
        )
    finally:
        cluster.shutdown()
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    board = pd.read_parquet(tmp_path / "runs" / "smoke" / "leaderboard.parquet")
    assert len(board) == 4
    assert set(board["status"]) <= {"finished", "pruned"}
    assert board["node_id"].nunique() == 2, board[["trial_id", "node_id"]]
    # Storage both nodes see: every trial's predictions are in the shared run folder.
    for path in board["predictions_val"]:
        assert os.path.isfile(path), path
