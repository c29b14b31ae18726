"""Fixtures for the reliability suite: tiny images, sweep drivers run as real processes, and the
helpers that make killing them deterministic (watch Tune's saved state, wait for what a killed
driver leaves behind)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

from search._disk import saved_trial_states  # the one the sweep reads (a test of its own package may use it)

from .._images import write_class_folders

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "spaces" / "smoke.yaml"
def child_env() -> dict[str, str]:
    """The environment of a driver in a subprocess: its own local Ray (never the test process's, unless
    --address says so), this checkout on the path. Read at call time: a Ray started in this process
    (another package's fixture, a ``Cluster``) sets variables, e.g. its auth token, that a child needs."""
    # Tune saves the experiment state every ~10 s by default; each second here, so the stop tests see
    # a finished trial in the saved state before the (fast) sweep is over.
    return {**os.environ, "RAY_ADDRESS": "", "TUNE_GLOBAL_CHECKPOINT_S": "1",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


@pytest.fixture(scope="package")
def images(tmp_path_factory) -> Path:
    """48 grey 32 px images in two classes."""
    return write_class_folders(tmp_path_factory.mktemp("reliability-data") / "images")


def sweep_argv(images: Path, out: Path, *extra: str) -> list[str]:
    """``python -m search.run spaces/smoke.yaml`` on ``images`` into ``out``."""
    return [
        sys.executable, "-m", "search.run", str(SMOKE),
        "--set", f"data.root={images}",
        "--set", f"data.cache_dir={images.parent / 'cache'}",
        "--out", str(out),
        *extra,
    ]


def start(argv: Sequence[str], log: Path, **kwargs) -> subprocess.Popen:
    """A command in its own process, stdout and stderr to ``log`` (a pipe nobody reads could block it)."""
    fh = open(log, "w")  # noqa: SIM115 - the child holds it; closed when the test's tmp_path goes
    return subprocess.Popen(list(argv), cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=child_env(), **kwargs)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.is_file() else ""


def wait_until(predicate, *, timeout: float, every: float = 0.1, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Ray's GCS, raylet, workers), read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields after the last ')' are fixed.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    todo = [pid]
    while todo:
        p = todo.pop()
        children = {c for c, pp in parents.items() if pp == p and c not in found}
        found |= children
        todo.extend(children)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: set[int], *, timeout: float = 60.0) -> set[int]:
    """Wait for the processes a stopped driver left; any still there after ``timeout`` get SIGKILL.

    Returns the ones that had to be killed (Ray's own clean-up should leave none).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.2)
    stragglers = {p for p in pids if alive(p)}
    for p in stragglers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(p, signal.SIGKILL)
    return stragglers


def assert_one_line_error(err: str, *needles: str) -> str:
    """stderr is exactly one ``medsweep: error:`` line holding every needle, with no traceback."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("medsweep: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# ----------------------------------------------------------------- a sweep stopped and resumed

N_TRIALS = 4
# Ray's agents outlive a driver killed with SIGKILL (they do not notice their raylet is gone): the
# tests reap them; everything else (GCS, raylet, the trial workers) must exit on its own.
RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


@dataclass
class Stage:
    """One driver run stopped by a signal: its exit status, the trials finished in the state it saved
    (id -> ``trial_state``), its output, and the processes it left that had to be killed."""

    rc: int
    finished: dict[str, tuple]
    output: str
    stragglers: list[str]


@dataclass
class Stopped:
    run_dir: Path
    argv: list[str]
    ctrl_c: Stage
    sigkill: Stage
    rc_resumed: int
    resumed_out: str


def trial_state(trial_dir: Path) -> list[tuple[str, int]]:
    """What a trial that ran again would change: its checkpoints (names, model.json times; every checkpoint
    writes one, and unlike state.pt it stays when the trial ends and drops its resume state).

    Not progress.csv: Tune writes it in a staging folder and copies it into the run folder, so a
    driver killed mid-copy leaves it short (the experiment state and the checkpoints are whole).
    """
    return sorted((p.parent.name, p.stat().st_mtime_ns) for p in trial_dir.glob("checkpoint_*/model.json"))


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def stop_after(argv: list[str], log: Path, run_dir: Path, *, n_finished: int, sig: int) -> Stage:
    """Run the driver until Tune's saved state holds ``n_finished`` finished trials, then send ``sig``."""
    # Its own process group, like a command in a terminal: Ctrl-C there reaches the whole group.
    proc = start(argv, log, start_new_session=True)
    try:
        def enough() -> bool:
            assert proc.poll() is None, tail(log)
            return sum(s == "TERMINATED" for s in saved_trial_states(run_dir).values()) >= n_finished

        wait_until(enough, timeout=300, what=f"{n_finished} finished trials in the saved state")
        tree = descendants(proc.pid)
        if sig == signal.SIGINT:
            os.killpg(proc.pid, sig)
        else:  # SIGKILL hits the driver alone, as the OOM killer or a lost node would
            proc.send_signal(sig)
        rc = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    names = {p: cmdline(p) or str(p) for p in tree}
    agents = {p for p in tree if names[p].startswith(RAY_AGENTS)}
    killed = wait_gone(tree - agents, timeout=60)
    wait_gone(agents, timeout=0)
    finished = [t for t, s in saved_trial_states(run_dir).items() if s == "TERMINATED"]
    return Stage(rc, {t: trial_state(run_dir / f"trial_{t}") for t in finished}, log.read_text(errors="replace"),
                 sorted(names[p] for p in killed))


@pytest.fixture(scope="package")
def stopped(images, tmp_path_factory) -> Stopped:
    """The smoke sweep (4 trials, one at a time) stopped by Ctrl-C after one finished trial, resumed and
    killed with SIGKILL after two, then resumed to the end (with its ensemble)."""
    tmp = tmp_path_factory.mktemp("stopped")
    out = tmp / "runs"
    run_dir = out / "smoke"
    # Trials of seconds (60 epochs, no pruning): a reused actor runs a 2-epoch smoke trial in 0.1 s.
    argv = sweep_argv(images, out, "--set", f"search.n_trials={N_TRIALS}", "--set", "search.max_concurrent=1",
                      "--set", "ensemble.n_folds=3", "--set", "epochs=60", "--set", "search.scheduler=fifo")
    ctrl_c = stop_after(argv, tmp / "ctrl_c.log", run_dir, n_finished=1, sig=signal.SIGINT)
    # A copy of the stopped sweep for the lost-checkpoint test (test_interrupt.py), which damages its copy.
    shutil.copytree(run_dir, tmp / "lost" / "smoke")
    sigkill = stop_after(argv + ["--resume"], tmp / "sigkill.log", run_dir, n_finished=2, sig=signal.SIGKILL)
    resumed = subprocess.run(argv + ["--resume"], cwd=REPO, env=child_env(), capture_output=True, text=True, timeout=400)
    return Stopped(run_dir, argv, ctrl_c, sigkill, resumed.returncode, resumed.stdout + resumed.stderr)
