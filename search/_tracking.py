"""Where else a sweep shows up: TensorBoard event files next to each trial, MLflow runs per trial and one for the ensemble.

Both come from Ray Tune's own logger callbacks (``TBXLoggerCallback``, ``MLflowLoggerCallback``); this
module only chooses them from the space's ``tracking`` section and logs the ensemble, which Tune never sees.
"""

from __future__ import annotations

import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from trainables import ConfigError

from ._sections import MLflowConfig
from ._space import Space

# Tags on every MLflow run of a sweep: the UI can filter a sweep's trials and its ensemble by them.
SWEEP_TAG = "medsweep.sweep"
KIND_TAG = "medsweep.kind"


def _quiet_mlflow() -> None:
    # MLflow prints "View run ... at: URL" for every run it ends: one per trial would bury the progress lines.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # A new SQLite store announces its table creation and migrations at INFO. Importing mlflow sets
    # its loggers' levels, so it is imported first.
    try:
        import mlflow  # noqa: F401
    except ImportError:
        return
    for name in ("mlflow", "alembic"):
        if logging.getLogger(name).level in (logging.NOTSET, logging.INFO, logging.DEBUG):
            logging.getLogger(name).setLevel(logging.WARNING)


def check_mlflow(space: Space) -> None:
    """Fail before Ray starts when the space asks for MLflow and it is not installed."""
    if space.tracking.mlflow is None:
        return
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise ConfigError(
            "MLflow tracking needs the mlflow package: pip install mlflow, or pip install -e '.[tracking]' (or drop tracking.mlflow / --mlflow)",
            origin=space.origin,
            field="tracking.mlflow",
        ) from None


def tracking_callbacks(space: Space, *, run_dir: str) -> list[Any]:
    """Tune's logger callbacks for the space's ``tracking`` section.

    CSV and JSON: each trial's ``progress.csv`` and ``result.json``, given explicitly so they stay when
    ``tensorboard: false`` stops Tune from adding its default loggers.
    TensorBoard: each trial's scalars go to its own folder (``runs/<name>/trial_<id>/events.out.tfevents.*``,
    tags ``ray/tune/<metric>``), so ``tensorboard --logdir runs/<name>`` shows every trial.
    MLflow: one run per trial (its config as parameters, every reported metric per epoch).
    """
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    # progress.csv and result.json are what the leaderboard and the report read: always there.
    callbacks: list[Any] = [CSVLoggerCallback(), JsonLoggerCallback()]
    if space.tracking.tensorboard:
        callbacks.append(TBXLoggerCallback())
    else:
        # Tune adds the loggers a sweep lacks, TensorBoard's included, unless told not to.
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    cfg = space.tracking.mlflow
    if cfg is not None:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        _quiet_mlflow()

        callbacks.append(
            MLflowLoggerCallback(
                tracking_uri=cfg.uri,
                experiment_name=cfg.experiment,
                tags={SWEEP_TAG: space.name, KIND_TAG: "trial", "medsweep.run_dir": run_dir},
            )
        )
    return callbacks


def describe_tracking(space: Space, *, run_dir: str) -> str:
    """One line: where to watch the sweep besides this terminal."""
    where = []
    if space.tracking.tensorboard:
        where.append(f"tensorboard --logdir {run_dir}")
    cfg = space.tracking.mlflow
    if cfg is not None:
        where.append(f"MLflow {cfg.uri}, experiment {cfg.experiment}")
    where.append(f"python -m search.show {run_dir}")
    return "watch: " + "; ".join(where)


def log_ensemble(cfg: MLflowConfig, *, run_dir: str, sweep: str) -> str | None:
    """One MLflow run ``ensemble`` in the sweep's experiment: the ensemble's test and CV metrics
    (``metrics.json``; a ``[lo, hi]`` interval as ``<key>.lo``/``<key>.hi``), ``report.html`` and the
    bundle folder (``ensemble/``) as artifacts. Returns the run id, or ``None`` when there is no bundle."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from ensemble import read_ensemble

    root = Path(run_dir)
    bundle = root / "ensemble"
    built = read_ensemble(bundle)
    if built is None:
        return None
    _quiet_mlflow()
    client = MlflowClient(tracking_uri=cfg.uri)
    experiment = client.get_experiment_by_name(cfg.experiment)
    experiment_id = experiment.experiment_id if experiment is not None else client.create_experiment(cfg.experiment)
    run = client.create_run(
        experiment_id, run_name="ensemble", tags={SWEEP_TAG: sweep, KIND_TAG: "ensemble", "medsweep.run_dir": run_dir}
    )
    run_id = run.info.run_id
    try:
        stamp = int(time.time() * 1000)
        metrics = []
        for key, value in built.metrics.items():
            pairs = [(f"{key}.lo", value[0]), (f"{key}.hi", value[1])] if isinstance(value, list) and len(value) == 2 else [(key, value)]
            for name, v in pairs:
                if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                    metrics.append(Metric(name, float(v), stamp, 0))
        # MLflow takes at most 1000 metrics per batch.
        for i in range(0, len(metrics), 1000):
            client.log_batch(run_id, metrics=metrics[i : i + 1000])
        combiner = built.combiner if built.combiner != "?" else None
        for key, value in (("combiner", combiner), ("members", ",".join(built.members)), ("best_single", built.manifest.get("best_single"))):
            if value:
                client.log_param(run_id, key, str(value)[:500])
        report = root / "report.html"
        if report.is_file():
            client.log_artifact(run_id, str(report))
        client.log_artifacts(run_id, str(bundle), artifact_path="ensemble")
    except Exception:
        client.set_terminated(run_id, status="FAILED")
        raise
    client.set_terminated(run_id)
    return run_id
