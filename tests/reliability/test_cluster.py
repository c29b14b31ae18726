"""A worker node of a real two-node Ray cluster (on loopback) killed mid-sweep: its trial goes on from its
last checkpoint on the remaining node and the sweep completes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest

from .conftest import descendants, start, sweep_argv, tail, wait_gone, wait_until

pytestmark = pytest.mark.ray

EPOCHS = 8


def results(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:  # the line being written
            break
    return rows


def test_a_killed_worker_node_costs_its_trials_only_the_epochs_since_their_checkpoint(images, tmp_path):
    from ray.cluster_utils import Cluster

    # One CPU per node: the two one-CPU trials start one on each node. The GCS notices a dead node
    # after ~1.5 s instead of Ray's default ~15 s.
    fast_health_checks = {"health_check_initial_delay_ms": 0, "health_check_period_ms": 500, "health_check_failure_threshold": 3}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False, "_system_config": fast_health_checks})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        run_dir = tmp_path / "runs" / "smoke"
        argv = sweep_argv(images, tmp_path / "runs", "--address", cluster.address, "--no-ensemble",
                          "--set", "search.n_trials=2", "--set", "search.scheduler=fifo", "--set", f"epochs={EPOCHS}",
                          "--set", "image_size=64",
                          "--set", "search.max_failures=2")
        log = tmp_path / "sweep.log"
        proc = start(argv, log)
        on_worker: list[str] = []

        def a_trial_has_a_checkpoint_on_the_worker() -> bool:
            assert proc.poll() is None, tail(log)
            for trial in run_dir.glob("trial_*"):
                rows = results(trial)
                if rows and rows[-1].get("node_id") == worker.node_id and rows[-1]["epoch"] < EPOCHS:
                    on_worker.append(trial.name)
                    return True
            return False

        raylet = worker.all_processes["raylet"][0].process.pid
        wait_until(a_trial_has_a_checkpoint_on_the_worker, timeout=300, every=0.02, what="an epoch reported from the worker node")
        # Frozen at once (the trial must not finish while the node is being taken down), then killed.
        left = descendants(raylet) | {raylet}
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        cluster.remove_node(worker, allow_graceful=False)
        for pid in left:  # whatever remove_node did not kill itself
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        # A trial process of the dead node must not write into the trial folder while its retry does.
        wait_gone(left, timeout=30)
        rc = proc.wait(timeout=400)
    finally:
        cluster.shutdown()
    assert rc == 0, tail(log)
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert len(board) == 2 and set(board["status"]) == {"finished"}, board[["trial_id", "status", "error"]]
    assert (board["epochs"] == EPOCHS).all()
    rows = results(run_dir / on_worker[0])
    epochs = [r["epoch"] for r in rows]
    # Resumed, not restarted: every epoch once, the first ones on the dead node, the rest elsewhere.
    assert epochs == list(range(1, EPOCHS + 1)), epochs
    assert rows[0]["node_id"] == worker.node_id and rows[-1]["node_id"] != worker.node_id
    checkpoint = board.set_index("trial_id").loc[on_worker[0].removeprefix("trial_"), "checkpoint"]
    assert Path(checkpoint).is_dir()

