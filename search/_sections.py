"""The ``search`` and ``tracking`` sections of a space file, validated into frozen configs, and the metric checks."""

from __future__ import annotations

import dataclasses
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from trainables import ConfigError, TrainParams, check_keys, did_you_mean

from ._params import Param
from ._samplers import SAMPLER, TUNE_SCHEDULER

SEARCH_KEYS = (
    "metric",
    "mode",
    "n_trials",
    "max_concurrent",
    "time_budget_s",
    "max_failures",
    "sampler",
    "scheduler",
    "resources",
    "objectives",
    "keep",
)
# What a trial leaves on disk once it ended: `best` the ensemble's candidates' best weights (every trial's
# predictions), `weights` every trial's best weights, `all` everything Tune wrote (resume state included).
KEEP = ("best", "weights", "all")
SAMPLERS = SAMPLER  # the names, as before: tpe, random, cmaes, nsga2
TRACKING_KEYS = ("mlflow", "tensorboard")
RAY_KEYS = ("address",)
MLFLOW_KEYS = ("uri", "experiment")
# Tracking URIs MLflow understands (a plain path is a local file store); anything else is most likely a typo.
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite", "postgresql", "mysql", "mssql", "databricks")
# Each Tune scheduler's keys: ``type`` and the options its registry entry declares.
SCHEDULER_KEYS = {name: {"type", *entry.options} for name, entry in TUNE_SCHEDULER.items()}


@dataclass(frozen=True)
class Objective:
    """One metric the sweep optimizes: ``metric`` (a reported key) and ``mode`` (max or min)."""

    metric: str
    mode: str = "max"


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna's sampler: ``tpe``, ``random``, ``cmaes`` (numeric spaces, one objective) or ``nsga2``.

    Attributes:
        type: the sampler.
        seed: its seed.
        n_startup_trials: tpe: random trials before the model takes over; default a quarter of
            ``n_trials`` (at least 2, at most Optuna's 10), so small sweeps are not mostly random.
    """

    type: str = "tpe"
    seed: int | None = None
    n_startup_trials: int | None = None


@dataclass(frozen=True)
class SchedulerConfig:
    """Tune's trial scheduler.

    Attributes:
        type: ``asha`` (stops the worst trials at each rung), ``median`` (stops trials below the
            median of others at the same epoch) or ``fifo`` (never stops a trial).
        max_t: asha: epochs of the last rung; default the most epochs a trial can run.
        grace_period: asha and median: epochs every trial runs before it can be stopped; ``None``
            until ``epochs: auto`` sizes it.
        reduction_factor: asha: 1/reduction_factor of the trials go on at each rung.
        min_samples_required: median: trials needed at an epoch before comparing.
    """

    type: str = "asha"
    max_t: int | None = None
    grace_period: int | None = 1
    reduction_factor: float = 2
    min_samples_required: int = 3

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in sorted(SCHEDULER_KEYS[self.type]) if getattr(self, k) is not None}


@dataclass(frozen=True)
class Resources:
    """What Tune reserves for each trial: CPUs (torch threads follow) and a GPU share (0.5: two per GPU)."""

    cpu: float = 1
    gpu: float = 0


@dataclass(frozen=True)
class SearchConfig:
    """The ``search`` section, validated.

    Attributes:
        metric: the reported key the sweep optimizes and the scheduler prunes on.
        mode: ``max`` or ``min`` (default ``min`` for a loss, else ``max``).
        n_trials: trials to run in all; ``None``: keep sampling until ``time_budget_s`` is spent.
        max_concurrent: at most this many trials at once; default as many as the resources allow.
        time_budget_s: the sweep's whole time (trials, ensemble, report): trials stop a reserve before
            it (at most 10 % of it), so the ensemble step and the report fit too.
        max_failures: how often Tune retries a trial that raised, from its last checkpoint.
        sampler: Optuna's sampler and its seed.
        scheduler: Tune's scheduler (ASHA by default).
        resources: CPUs and GPU share per trial.
        objectives: several objectives for a multi-objective sweep; the first is ``metric``/``mode``.
        keep: what an ended (finished or pruned) trial leaves on disk: ``best`` (default) the best weights of
            the trials the ensemble can use and every trial's predictions, ``weights`` every trial's best
            weights, ``all`` everything, the state to resume from included.
    """

    metric: str = "val_auroc"
    mode: str = "max"
    n_trials: int | None = None
    max_concurrent: int | None = None
    time_budget_s: float | None = None
    max_failures: int = 1
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: Resources = field(default_factory=Resources)
    objectives: tuple[Objective, ...] = ()
    keep: str = "best"

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    def to_dict(self) -> dict[str, Any]:
        """The YAML form, defaults filled in."""
        out: dict[str, Any] = {
            "metric": self.metric,
            "mode": self.mode,
            "n_trials": self.n_trials,
            "max_concurrent": self.max_concurrent,
            "time_budget_s": self.time_budget_s,
            "max_failures": self.max_failures,
            "sampler": dataclasses.asdict(self.sampler),
            "scheduler": self.scheduler.to_dict(),
            "resources": dataclasses.asdict(self.resources),
            "keep": self.keep,
        }
        if self.objectives:
            out["objectives"] = [dataclasses.asdict(o) for o in self.objectives]
        return out


@dataclass(frozen=True)
class MLflowConfig:
    """Where MLflow gets the sweep: every trial a run of ``experiment`` (default the space's name), plus one for the ensemble."""

    uri: str
    experiment: str


@dataclass(frozen=True)
class TrackingConfig:
    """The ``tracking`` section: MLflow (off unless ``mlflow.uri`` or ``--mlflow`` is given) and TensorBoard event files.

    Attributes:
        mlflow: the tracking server or store and the experiment; ``None`` for no MLflow.
        tensorboard: write each trial's scalars into its folder, so ``tensorboard --logdir runs/<name>`` finds them.
    """

    mlflow: MLflowConfig | None = None
    tensorboard: bool = True

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tensorboard": self.tensorboard}
        if self.mlflow is not None:
            out["mlflow"] = dataclasses.asdict(self.mlflow)
        return out


def check_metric(metric: Any, *, origin: str, field: str) -> str:
    """A metric the trainable reports every epoch (``trainables.METRICS``), or a one-line error listing them."""
    from trainables import METRICS, metric_mode

    if isinstance(metric, str) and metric_mode(metric) is not None:
        return metric
    raise ConfigError(
        f"the trainable does not report {metric!r}{did_you_mean(str(metric), METRICS)}; "
        f"use one of {', '.join(METRICS)}, or a per-class key like val_sensitivity/<class>",
        origin=origin,
        field=field,
    )


def _check_select_metric(fixed: Mapping[str, Any], params: Mapping[str, Param], origin: str) -> None:
    """``select_metric`` picks each trial's best epoch as the highest value: a reported validation metric
    where higher is better (not a loss, which would pick the worst epoch)."""
    values = []
    if "select_metric" in fixed:
        values.append(("fixed.select_metric", fixed["select_metric"]))
    p = params.get("select_metric")
    if p is not None and p.type == "categorical":
        values += [(f"space.select_metric.choices[{i}]", c) for i, c in enumerate(p.choices)]
    for where, value in values:
        metric = check_metric(value, origin=origin, field=where)
        if not metric.startswith("val_") or _default_mode(metric) == "min":
            raise ConfigError(
                f"{metric!r} cannot pick the best epoch: it must be a validation metric where higher is better, "
                "such as val_auroc, val_accuracy or val_auprc",
                origin=origin,
                field=where,
            )


def _default_mode(metric: str) -> str:
    from trainables import metric_mode

    return metric_mode(metric) or "max"


def _number(
    raw: Mapping[str, Any],
    key: str,
    *,
    origin: str,
    where: str,
    kind: type,
    minimum: float,
    strict: bool = False,
    default: Any = None,
    optional: bool = False,
) -> Any:
    value = raw.get(key, default)
    if value is None and optional:
        return None
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    if ok and kind is int:
        ok = float(value).is_integer()
    if ok:
        ok = value > minimum if strict else value >= minimum
    if not ok:
        want = ("an integer" if kind is int else "a number") + f" {'>' if strict else '>='} {minimum:g}"
        if optional:
            want += " (or null)"
        raise ConfigError(f"`{key}` must be {want}, got {value!r}", origin=origin, field=f"{where}.{key}")
    return int(value) if kind is int else value


def _mode(value: Any, *, origin: str, field: str) -> str:
    if value not in ("max", "min"):
        raise ConfigError(f"must be max or min, got {value!r}{did_you_mean(str(value), ('max', 'min'))}", origin=origin, field=field)
    return value


def _search(
    raw: Mapping[str, Any], origin: str, *, params: Mapping[str, Param], fixed: Mapping[str, Any], auto: bool = False
) -> SearchConfig:
    """Validate the ``search`` section into a ``SearchConfig``."""
    w = "search"
    check_keys(raw, SEARCH_KEYS, origin=origin, prefix=w, what="search")
    objectives: tuple[Objective, ...] = ()
    if raw.get("objectives") is not None:
        items = raw["objectives"]
        if not isinstance(items, list) or not items:
            raise ConfigError(
                "must be a list like [{metric: val_auroc, mode: max}, {metric: train_seconds, mode: min}]",
                origin=origin,
                field=f"{w}.objectives",
            )
        objs = []
        for i, item in enumerate(items):
            where = f"{w}.objectives[{i}]"
            if isinstance(item, str):
                item = {"metric": item}
            if not isinstance(item, dict):
                raise ConfigError(f"must be a mapping {{metric: ..., mode: max|min}}, got {item!r}", origin=origin, field=where)
            check_keys(item, ("metric", "mode"), origin=origin, prefix=where, what="an objective")
            metric = check_metric(item.get("metric"), origin=origin, field=f"{where}.metric")
            mode = _mode(item.get("mode", _default_mode(metric)), origin=origin, field=f"{where}.mode")
            objs.append(Objective(metric, mode))
        names = [o.metric for o in objs]
        if len(set(names)) != len(names):
            raise ConfigError(f"lists a metric twice ({names}); each objective needs its own metric", origin=origin, field=f"{w}.objectives")
        objectives = tuple(objs)
        for key in ("metric", "mode"):
            given = raw.get(key)
            first = getattr(objectives[0], key)
            if given is not None and given != first:
                raise ConfigError(
                    f"is {given!r} but the first objective's {key} is {first!r}; the first objective is the one the "
                    f"scheduler prunes on: drop `search.{key}` or make them agree",
                    origin=origin,
                    field=f"{w}.{key}",
                )
        metric, mode = objectives[0].metric, objectives[0].mode
    else:
        metric = check_metric(raw.get("metric", "val_auroc"), origin=origin, field=f"{w}.metric")
        mode = _mode(raw.get("mode", _default_mode(metric)), origin=origin, field=f"{w}.mode")
    for obj in objectives or (Objective(metric, mode),):
        if obj.metric.endswith("loss") and obj.mode == "max":
            where = f"{w}.objectives" if objectives else f"{w}.mode"
            raise ConfigError(f"max with {obj.metric} would pick the highest loss; use mode: min", origin=origin, field=where)

    n_trials = _number(raw, "n_trials", origin=origin, where=w, kind=int, minimum=1, optional=True)
    max_concurrent = _number(raw, "max_concurrent", origin=origin, where=w, kind=int, minimum=1, optional=True)
    budget = raw.get("time_budget_s")
    if isinstance(budget, str):  # "15m", "1h30m"
        from ._budget import parse_duration

        try:
            budget = parse_duration(budget, field=f"{w}.time_budget_s")
        except ConfigError as exc:
            raise ConfigError(exc.message, origin=origin, field=f"{w}.time_budget_s") from None
    time_budget_s = _number({"time_budget_s": budget}, "time_budget_s", origin=origin, where=w, kind=float, minimum=0, strict=True, optional=True)
    if n_trials is None and time_budget_s is None:
        from ._budget import DEFAULT_BUDGET_S

        # Neither a count nor a budget: a budget, so the sweep ends on its own.
        time_budget_s = DEFAULT_BUDGET_S
    max_failures = _number(raw, "max_failures", origin=origin, where=w, kind=int, minimum=0, default=1)

    sampler = _sampler(raw.get("sampler"), origin, multi=len(objectives) > 1)
    scheduler = _scheduler(raw.get("scheduler"), origin, params=params, fixed=fixed, auto=auto)
    resources = _resources(raw.get("resources"), origin)
    keep = raw.get("keep", "best")
    if keep not in KEEP:
        raise ConfigError(f"must be one of {', '.join(KEEP)}, got {keep!r}{did_you_mean(str(keep), KEEP)}", origin=origin, field=f"{w}.keep")
    return SearchConfig(
        metric=metric,
        mode=mode,
        n_trials=n_trials,
        max_concurrent=max_concurrent,
        time_budget_s=time_budget_s,
        max_failures=max_failures,
        sampler=sampler,
        scheduler=scheduler,
        resources=resources,
        objectives=objectives,
        keep=keep,
    )


def _typed_section(value: Any, origin: str, where: str, kinds: Any, example: str) -> dict[str, Any]:
    """``tpe`` or ``{type: tpe, ...}`` to a mapping with a valid ``type`` (the first kind when left out).

    ``kinds``: the registry of the section's types (its one unknown-name message).
    """
    names = list(kinds)
    if isinstance(value, str):
        value = {"type": value}
    if not isinstance(value, dict):
        raise ConfigError(f"must be one of {', '.join(names)} or a mapping like {example}, got {value!r}", origin=origin, field=where)
    value = {"type": names[0], **value}
    kind = value["type"]
    if kind not in kinds:
        raise kinds.unknown(kind, origin=origin, field=f"{where}.type")
    return dict(value)


def _sampler(value: Any, origin: str, *, multi: bool) -> SamplerConfig:
    where = "search.sampler"
    if value is None:
        return SamplerConfig()
    raw = _typed_section(value, origin, where, SAMPLERS, "{type: tpe, seed: 0}")
    declared = {option for _, entry in SAMPLER.items() for option in entry.options}  # seed, n_startup_trials
    check_keys(raw, ("type", *sorted(declared)), origin=origin, prefix=where, what="the sampler")
    seed = _number(raw, "seed", origin=origin, where=where, kind=int, minimum=0, optional=True)
    startup = _number(raw, "n_startup_trials", origin=origin, where=where, kind=int, minimum=1, optional=True)
    kind = raw["type"]
    if startup is not None and kind != "tpe":
        raise ConfigError(f"n_startup_trials applies to the tpe sampler only, not {kind}; remove it", origin=origin, field=f"{where}.n_startup_trials")
    if kind == "cmaes":
        if multi:
            raise ConfigError("cmaes optimizes one objective; use nsga2 or tpe for several objectives", origin=origin, field=f"{where}.type")
        if importlib.util.find_spec("cmaes") is None:
            raise ConfigError("the cmaes sampler needs the `cmaes` package: pip install cmaes (or use tpe)", origin=origin, field=f"{where}.type")
    return SamplerConfig(type=kind, seed=seed, n_startup_trials=startup)


def _scheduler(
    value: Any, origin: str, *, params: Mapping[str, Param], fixed: Mapping[str, Any], auto: bool = False
) -> SchedulerConfig:
    where = "search.scheduler"
    if value is None:
        value = "asha"
    raw = _typed_section(value, origin, where, TUNE_SCHEDULER, "{type: asha, max_t: 10, grace_period: 1, reduction_factor: 2}")
    kind = raw["type"]
    check_keys(raw, SCHEDULER_KEYS[kind], origin=origin, prefix=where, what=f"a {kind} scheduler")
    if kind == "fifo":
        return SchedulerConfig(type="fifo", grace_period=1)
    # With `epochs: auto` the rungs follow the trial length chosen at the start, unless the file sets them.
    grace = _number(raw, "grace_period", origin=origin, where=where, kind=int, minimum=1, default=None if auto else 1, optional=auto)
    if kind == "median":
        n = _number(raw, "min_samples_required", origin=origin, where=where, kind=int, minimum=1, default=3)
        return SchedulerConfig(type="median", grace_period=grace, min_samples_required=n)
    max_t = _number(raw, "max_t", origin=origin, where=where, kind=int, minimum=1, optional=True)
    if max_t is None and not auto:
        max_t = _max_epochs(params, fixed)
    if grace is not None and max_t is not None and grace > max_t:
        raise ConfigError(
            f"`grace_period` ({grace}) must be <= `max_t` ({max_t}); lower grace_period or raise max_t",
            origin=origin,
            field=f"{where}.grace_period",
        )
    rf = _number(raw, "reduction_factor", origin=origin, where=where, kind=float, minimum=1, strict=True, default=2)
    return SchedulerConfig(type="asha", max_t=max_t, grace_period=grace, reduction_factor=rf)


def _max_epochs(params: Mapping[str, Param], fixed: Mapping[str, Any]) -> int:
    if "epochs" in fixed:
        return int(fixed["epochs"])
    p = params.get("epochs")
    if p is not None:
        return int(max(p.choices) if p.type == "categorical" else p.high)
    return TrainParams.epochs


def _resources(value: Any, origin: str) -> Resources:
    where = "search.resources"
    if value is None:
        return Resources()
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping like {{cpu: 1, gpu: 0.5}}, got {value!r}", origin=origin, field=where)
    check_keys(value, ("cpu", "gpu"), origin=origin, prefix=where, what="resources")
    cpu = _number(value, "cpu", origin=origin, where=where, kind=float, minimum=0, strict=True, default=1)
    gpu = _number(value, "gpu", origin=origin, where=where, kind=float, minimum=0, default=0)
    if gpu > 1 and not float(gpu).is_integer():
        raise ConfigError(f"`gpu` above 1 must be a whole number (Ray's rule), got {gpu!r}", origin=origin, field=f"{where}.gpu")
    return Resources(cpu=cpu, gpu=gpu)


def _tracking(raw: Mapping[str, Any], origin: str, *, name: str) -> TrackingConfig:
    """Validate the ``tracking`` section: ``mlflow: {uri, experiment}`` and ``tensorboard: true|false``."""
    check_keys(raw, TRACKING_KEYS, origin=origin, prefix="tracking", what="tracking")
    tensorboard = raw.get("tensorboard", True)
    if not isinstance(tensorboard, bool):
        raise ConfigError(f"must be true or false, got {tensorboard!r}", origin=origin, field="tracking.tensorboard")
    section = raw.get("mlflow")
    if section is None:
        return TrackingConfig(tensorboard=tensorboard)
    where = "tracking.mlflow"
    if not isinstance(section, dict):
        raise ConfigError(f"must be a mapping like {{uri: http://127.0.0.1:5000, experiment: {name}}}, got {section!r}", origin=origin, field=where)
    check_keys(section, MLFLOW_KEYS, origin=origin, prefix=where, what="mlflow")
    uri = mlflow_uri(section.get("uri"), origin=origin, field=f"{where}.uri")
    experiment = section.get("experiment", name)
    if not isinstance(experiment, str) or not experiment.strip():
        raise ConfigError(f"must be a non-empty name, got {experiment!r}; leave it out to use the space's name", origin=origin, field=f"{where}.experiment")
    return TrackingConfig(mlflow=MLflowConfig(uri=uri, experiment=experiment.strip()), tensorboard=tensorboard)


def mlflow_uri(value: Any, *, origin: str | None = None, field: str = "tracking.mlflow.uri") -> str:
    """A tracking URI MLflow accepts: ``http(s)://host[:port]``, ``sqlite:///file.db``, ``file:///dir``,
    ``databricks``, or a folder (made an absolute ``file://`` URI, since trials run elsewhere)."""
    example = "http://127.0.0.1:5000, sqlite:///mlflow.db or a folder"
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"must be a tracking URI such as {example}, got {value!r}", origin=origin, field=field)
    uri = value.strip()
    if uri == "databricks" or uri.startswith("databricks://"):
        return uri
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*):", uri)
    if match and len(match.group(1)) > 1:  # one letter is a Windows drive, not a scheme
        scheme = match.group(1).lower().split("+", 1)[0]
        if scheme not in MLFLOW_SCHEMES:
            raise ConfigError(
                f"unknown scheme {scheme!r} in {uri!r}{did_you_mean(scheme, MLFLOW_SCHEMES)}; use one of "
                f"{', '.join(MLFLOW_SCHEMES)}, e.g. {example}",
                origin=origin,
                field=field,
            )
        if scheme in ("http", "https") and not re.match(r"^https?://[^/:\s]+", uri):
            raise ConfigError(f"{uri!r} names no host; write it like http://127.0.0.1:5000", origin=origin, field=field)
        return uri
    return Path(uri).expanduser().resolve().as_uri()
