"""End to end, what people watch: a tiny tracked sweep logs to a real ``mlflow server`` (loopback, SQLite),
leaves TensorBoard event files where ``tensorboard --logdir`` finds them, prints its status line, and
writes a ``report.html`` that headless Chromium opens with every image loaded.

One sweep (3 trials of spaces/smoke.yaml on generated images, ensemble included) is shared by the tests.
Each tool the tests need (mlflow, tensorboard, chromium) skips only its own test when it is absent;
CI installs all three (``.ci/run``, the ``test`` extra).
"""

from __future__ import annotations

import contextlib
import html
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from search.run import main

from .._images import write_class_folders
from .conftest import SMOKE

pytestmark = pytest.mark.ray

N_TRIALS = 3
EXPERIMENT = "medsweep-test"


def run_main(fn, argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = fn(argv)
    return rc, out.getvalue(), err.getvalue()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on loopback with a SQLite backend and served artifacts; its URI, or ``None`` without mlflow."""
    try:
        import mlflow  # noqa: F401
    except ImportError:
        yield None
        return
    root = tmp_path_factory.mktemp("mlflow")
    port = _free_port()
    uri = f"http://127.0.0.1:{port}"
    log = open(root / "server.log", "wb")  # noqa: SIM115 - the server holds it; closed after the session
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}", "--artifacts-destination", str(root / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180  # a busy 2-core machine takes tens of seconds to import the server
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(1)
        yield uri
    finally:
        # The server runs helper processes (a job runner, a task consumer): end its whole session, which it leads.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="module")
def tracked(ray_session, mlflow_server, tmp_path_factory):
    """The tracked sweep, run once: (run folder, exit status, stdout, stderr, MLflow URI or None)."""
    base = tmp_path_factory.mktemp("tracked")
    # A harder task than the package's images, so the trials' scores differ and importances have something to explain.
    images = write_class_folders(base / "images", signal=45, noise=120, seed=1)
    argv = [
        str(SMOKE),
        "--set", f"data.root={images}",
        "--set", f"data.cache_dir={base / 'cache'}",
        "--set", f"search.n_trials={N_TRIALS}",
        "--set", f"tracking.mlflow.experiment={EXPERIMENT}",
        "--out", str(base / "runs"),
    ]
    if mlflow_server:
        argv += ["--mlflow", mlflow_server]
    rc, out, err = run_main(main, argv)
    return base / "runs" / "smoke", rc, out, err, mlflow_server


def test_the_sweep_ends_with_a_report(tracked):
    run_dir, rc, out, err, _ = tracked
    assert rc == 0, out + err
    assert f"report: {run_dir / 'report.html'}" in out
    assert "warning" not in err, err


def test_mlflow_holds_every_trial_and_the_ensemble(tracked):
    run_dir, _, out, _, uri = tracked
    if uri is None:
        pytest.skip("mlflow is not installed (pip install -e '.[test]')")
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    trials = {r.data.tags["trial_name"].rsplit("_", 1)[-1]: r for r in runs if r.data.tags.get("medsweep.kind") == "trial"}
    board = pd.read_parquet(run_dir / "leaderboard.parquet").set_index("trial_id")
    assert sorted(trials) == sorted(board.index)
    for tid, run in trials.items():
        assert run.info.status == "FINISHED" and run.data.tags["medsweep.sweep"] == "smoke"
        # Parameters: the trial's config, as Tune handed it to the trainable.
        assert float(run.data.params["lr"]) == pytest.approx(board.loc[tid, "config/lr"])
        assert int(run.data.params["batch_size"]) == board.loc[tid, "config/batch_size"]
        # Metrics: one value per epoch, the same as the trial's own progress.csv.
        history = client.get_metric_history(run.info.run_id, "val_auroc")
        progress = pd.read_csv(run_dir / f"trial_{tid}" / "progress.csv")
        assert [m.step for m in history] == progress["training_iteration"].tolist()
        assert [m.value for m in history] == pytest.approx(progress["val_auroc"].tolist())
    [ensemble] = [r for r in runs if r.data.tags.get("medsweep.kind") == "ensemble"]
    metrics = json.loads((run_dir / "ensemble" / "metrics.json").read_text())
    assert ensemble.data.metrics["test.ensemble.auroc"] == pytest.approx(metrics["test.ensemble.auroc"])
    assert ensemble.data.metrics["test.ensemble.auroc_ci95.lo"] == pytest.approx(metrics["test.ensemble.auroc_ci95"][0])
    top = {a.path for a in client.list_artifacts(ensemble.info.run_id)}
    assert {"report.html", "ensemble"} <= top
    bundle = {a.path for a in client.list_artifacts(ensemble.info.run_id, "ensemble")}
    assert {"ensemble/manifest.json", "ensemble/metrics.json", "ensemble/members"} <= bundle
    # The report comes back byte for byte through the server's artifact store.
    got = Path(client.download_artifacts(ensemble.info.run_id, "report.html", dst_path=str(run_dir.parent)))
    assert got.read_bytes() == (run_dir / "report.html").read_bytes()
    assert f"mlflow: ensemble logged to {uri}" in out


def test_tensorboard_finds_every_trials_scalars(tracked):
    run_dir = tracked[0]
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -e '.[test]')")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    # What `tensorboard --logdir runs/smoke` does: every folder below with event files is a run.
    mux = EventMultiplexer()
    mux.AddRunsFromDirectory(str(run_dir))
    mux.Reload()
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert sorted(mux.Runs()) == sorted(f"trial_{t}" for t in board["trial_id"])
    for run in mux.Runs():
        scalars = mux.Scalars(run, "ray/tune/val_auroc")
        progress = pd.read_csv(run_dir / run / "progress.csv")
        assert [s.step for s in scalars] == progress["training_iteration"].tolist()
        assert [s.value for s in scalars] == pytest.approx(progress["val_auroc"].tolist(), abs=1e-6)
        assert "ray/tune/train_loss" in mux.GetAccumulator(run).Tags()["scalars"]


def test_status_line_in_captured_output_is_plain_lines(tracked):
    _, _, out, _, _ = tracked
    status = [ln for ln in out.splitlines() if re.match(r"\[medsweep\] \d+/\d+ done \(", ln)]
    # The first from Tune's first step, the last when the experiment ends.
    assert len(status) >= 2 and status[0].startswith(f"[medsweep] 0/{N_TRIALS} done (0 finished"), out
    assert re.fullmatch(
        rf"\[medsweep\] {N_TRIALS}/{N_TRIALS} done \(\d finished, \d pruned, 0 errored\), 0 running, best val_auroc [01]\.\d{{4}}, "
        r"\S+ elapsed, 0s left",
        status[-1],
    ), status[-1]
    assert "\r" not in out and "\x1b" not in out


def test_report_is_self_contained_and_has_every_section(tracked):
    run_dir = tracked[0]
    page = (run_dir / "report.html").read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert not re.search(r"<(link|script|iframe)\b", page)  # nothing else to fetch
    alts = re.findall(r'<img alt="([^"]*)"', page)
    for caption in ("search progress", "parameter importances", "ASHA rungs", "ROC curves, test split", "confusion matrix",
                    "calibration (reliability)"):
        assert caption in alts, (caption, alts)
    # Grad-CAM: two test images of each class.
    assert sum(a.startswith(("normal: test image", "pneumonia: test image")) for a in alts) == 4
    assert 'class="missing"' not in page, re.findall(r'class="missing">([^<]*)', page)
    # The bundle's model card, shown as HTML.
    assert "<h2>Model card</h2>" in page and "This is not a medical device" in page and "<h4>Test metrics</h4>" in page
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert all(str(t) in page for t in board["trial_id"])


CHECK = """<script>
window.addEventListener("load", () => {
  const bad = [...document.images].filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const el = document.createElement("pre");
  el.id = "image-check";
  el.textContent = JSON.stringify({n: document.images.length, bad: bad});
  document.body.appendChild(el);
});
</script>"""
# A broken image the check must catch: proof that it looks at decoding, not only at the markup.
CONTROL = '<img alt="control: broken on purpose" src="data:image/png;base64,iVBORw0KGgoAAAA=">'


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _headless(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=180,
    )


def test_report_opens_in_headless_chromium_with_every_image_loaded(tracked, tmp_path, tmp_path_factory):
    browser = _chromium()
    if browser is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: apt-get install chromium)")
    run_dir = tracked[0]
    report = run_dir / "report.html"
    page = report.read_text()
    n_images = page.count("<img ")
    checked = tmp_path / "checked.html"
    checked.write_text(page.replace("</body>", CONTROL + CHECK + "</body>"))
    # --virtual-time-budget lets the page finish loading and run its load handler before the DOM is dumped.
    done = _headless(browser, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom", checked.as_uri())
    found = re.search(r'<pre id="image-check">(.*?)</pre>', done.stdout, re.S)
    assert found, done.stderr[-2000:]
    result = json.loads(html.unescape(found.group(1)))
    assert result == {"n": n_images + 1, "bad": ["control: broken on purpose"]}
    # The screenshot a person can look at: kept with the test's artifacts.
    artifacts = Path(os.environ.get("MEDSWEEP_TEST_ARTIFACTS") or tmp_path_factory.mktemp("artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "report.png"
    done = _headless(browser, tmp_path / "profile", "--window-size=1200,6000", f"--screenshot={shot}", report.as_uri())
    assert shot.is_file() and shot.stat().st_size > 10_000, done.stderr[-2000:]
    shutil.copy(report, artifacts / "report.html")
    print(f"report screenshot: {shot}")


def test_show_prints_the_leaderboard_and_the_ensemble(tracked):
    from search.show import main as show

    run_dir = tracked[0]
    rc, out, err = run_main(show, [str(run_dir)])
    assert rc == 0, err
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert out.startswith(f"sweep smoke: {N_TRIALS}/{N_TRIALS} trials (") and "leaderboard.parquet" in out.splitlines()[0]
    assert all(str(t) in out for t in board["trial_id"])
    assert "ensemble (" in out and "best single (" in out and "auroc 95% CI" in out


def test_show_reads_a_running_sweep_from_tunes_state(tracked, tmp_path):
    from search.show import main as show

    run_dir = tracked[0]
    # A sweep still running has Tune's experiment state but no leaderboard and no ensemble yet.
    live = tmp_path / "smoke"
    shutil.copytree(run_dir, live, ignore=shutil.ignore_patterns("leaderboard.*", "ensemble", "report.html"))
    rc, out, err = run_main(show, [str(live)])
    assert rc == 0, err
    assert "experiment_state" in out.splitlines()[0] and "running or was interrupted" in out.splitlines()[0]
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert all(str(t) in out for t in board["trial_id"])
    assert f"ensemble: none yet; build it with python -m ensemble.build {live}" in out


@pytest.mark.parametrize(
    "argv,match",
    [
        (["/nonexistent/run"], r"^medsweep: error: /nonexistent/run: is not a folder; pass a sweep's run folder"),
        ([], r"^medsweep: error: /\S+: holds no space\.yaml; pass a sweep's run folder"),
    ],
)
def test_show_bad_folders_fail_with_one_line(tmp_path, argv, match):
    from search.show import main as show

    rc, _, err = run_main(show, argv or [str(tmp_path)])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and re.search(match, err), err


def test_the_report_names_the_recorded_folds(tmp_path):
    """report.html said "k-fold CV" whatever the bundle held: it read a key the manifest never writes."""
    from search._html import _ensemble_metrics
    from tests.ensemble.test_built import MANIFEST, write

    write(tmp_path / "ensemble")
    assert "chosen by 3-fold CV on validation" in _ensemble_metrics(tmp_path)
    write(tmp_path / "ensemble", manifest={**MANIFEST, "combiner": {"name": "mean", "state": {"n_folds": 5}}})
    assert "chosen by 5-fold CV on validation" in _ensemble_metrics(tmp_path)
