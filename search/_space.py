"""Space files: YAML that declares data, fixed parameters, a search space and the search, validated once at load.

The vocabulary follows Optuna's distributions: ``{type: float|int, low, high, log, step}``
and ``{type: categorical, choices}``, each with an optional ``default`` (what a standalone
run uses) and ``when`` (the parameter exists only for some values of others:
``when: {loss: focal}``, ``when: {loss: [focal, asl]}`` or ``when: {activation_rate: {lt: 1}}``).
The ``search`` section becomes a ``SearchConfig``; ``include`` merges preset files under the file.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from trainables import ConfigError, DataConfig, TrainParams, check_backbone, check_keys, did_you_mean

from ._samplers import SAMPLER, TUNE_SCHEDULER

SECTIONS = ("name", "include", "data", "fixed", "space", "search", "ensemble", "tracking", "storage", "ray")
# Where `include: [presets/cxr_ast]` looks after the including file's own folder: the shipped spaces.
SHIPPED = Path(__file__).resolve().parents[1] / "spaces"
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "default", "when"},
    "int": {"type", "low", "high", "log", "step", "default", "when"},
    "categorical": {"type", "choices", "default", "when"},
}
# Comparisons a ``when:`` condition may use besides a value or a list of values.
WHEN_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}
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
# `fixed: {epochs: auto}`: trial length sized at the start of the sweep from the data and the budget.
AUTO = "auto"
# What a space file with no `fixed:`, `space:` or `include:` runs: the shipped default sweep.
DEFAULT_PRESET = "presets/auto"
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
class Param:
    """One searched dimension: an Optuna distribution, plus ``default`` and a ``when`` condition.

    The distribution is what the sampler draws from (``suggest``) and what the report's importances
    are computed over, so both read one object.

    Example:
        >>> from optuna.distributions import FloatDistribution
        >>> Param("lr", FloatDistribution(1e-4, 1e-2, log=True)).default_value()
        0.001
    """

    name: str
    distribution: BaseDistribution
    default: Any = None
    when: Mapping[str, Any] = field(default_factory=dict)

    @property
    def type(self) -> str:
        """``categorical``, ``int`` or ``float`` (the space file's ``type``)."""
        if isinstance(self.distribution, CategoricalDistribution):
            return "categorical"
        return "int" if isinstance(self.distribution, IntDistribution) else "float"

    @property
    def choices(self) -> tuple[Any, ...]:
        return tuple(getattr(self.distribution, "choices", ()))

    @property
    def low(self) -> float | int | None:
        return getattr(self.distribution, "low", None)

    @property
    def high(self) -> float | int | None:
        return getattr(self.distribution, "high", None)

    @property
    def log(self) -> bool:
        return bool(getattr(self.distribution, "log", False))

    @property
    def step(self) -> float | int | None:
        step = getattr(self.distribution, "step", None)
        # An IntDistribution always has a step (1 unless set); the file's form leaves the 1 out.
        return None if isinstance(self.distribution, IntDistribution) and step == 1 else step

    def suggest(self, trial: Any) -> Any:
        """Draw this parameter in a define-by-run Optuna ``trial`` (Optuna's ``suggest_*``)."""
        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return trial.suggest_categorical(self.name, list(d.choices))
        if isinstance(d, IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, step=d.step, log=d.log)
        return trial.suggest_float(self.name, d.low, d.high, step=d.step, log=d.log)

    def default_value(self) -> Any:
        """``default`` if given, else the first choice, else the (log-)midpoint snapped to the grid."""
        if self.default is not None:
            return self.default
        if self.type == "categorical":
            return self.choices[0]
        lo, hi = float(self.low), float(self.high)
        mid = math.sqrt(lo * hi) if self.log else (lo + hi) / 2
        if self.step:
            mid = lo + round((mid - lo) / self.step) * self.step
        return int(round(mid)) if self.type == "int" else float(mid)

    def active(self, values: Mapping[str, Any]) -> bool:
        """Whether the ``when`` condition holds for the parameter values chosen so far.

        A condition on a parameter that is absent (itself inactive) does not hold.
        """
        return all(name in values and _matches(values[name], want) for name, want in self.when.items())

    def to_dict(self) -> dict[str, Any]:
        """The YAML form of this parameter (what ``space.yaml`` of a run holds)."""
        out: dict[str, Any] = {"type": self.type}
        if self.type == "categorical":
            out["choices"] = list(self.choices)
        else:
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        if self.default is not None:
            out["default"] = self.default
        if self.when:
            out["when"] = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.when.items()}
        return out

    def describe(self) -> str:
        """One line for people: ``float [0.0001, 0.01] log, when loss in [focal]``."""
        if self.type == "categorical":
            text = f"categorical {list(self.choices)}"
        else:
            text = f"{self.type} [{self.low}, {self.high}]" + (" log" if self.log else "") + (f" step {self.step}" if self.step else "")
        if self.when:
            text += "  when " + " and ".join(_describe_condition(k, v) for k, v in self.when.items())
        return text


def _matches(value: Any, want: Any) -> bool:
    if isinstance(want, Mapping):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        return all(_compare(value, op, bound) for op, bound in want.items())
    if isinstance(want, (list, tuple)):
        return any(_equal(value, w) for w in want)
    return _equal(value, want)


def _equal(a: Any, b: Any) -> bool:
    # True == 1 in Python; a condition on a bool must not match an int choice.
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def _compare(value: float, op: str, bound: float) -> bool:
    return {"lt": value < bound, "le": value <= bound, "gt": value > bound, "ge": value >= bound}[op]


def _describe_condition(name: str, want: Any) -> str:
    if isinstance(want, Mapping):
        return " and ".join(f"{name} {WHEN_OPS[op]} {bound}" for op, bound in want.items())
    if isinstance(want, (list, tuple)):
        return f"{name} in {list(want)}"
    return f"{name} == {want!r}"


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


@dataclass(frozen=True)
class Space:
    """A validated space file."""

    name: str
    origin: str
    data: DataConfig
    fixed: Mapping[str, Any]
    params: Mapping[str, Param]
    search: SearchConfig
    ensemble: Mapping[str, Any]
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    storage: Any = None
    ray: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    # `epochs: auto` until the sweep sizes it (``with_sizing``); then the chosen sizes.
    auto_epochs: bool = False
    sizing: Any = None

    def with_sizing(self, sizing: Any) -> "Space":
        """This space with ``epochs: auto`` replaced by ``sizing`` (a ``search._budget.Sizing``): fixed
        ``epochs`` (and ``epoch_samples``), ASHA's ``max_t`` and ``grace_period`` where the file left them
        out, and TPE's random start sized to the trials the budget is expected to start."""
        fixed = {**self.fixed, "epochs": int(sizing.epochs)}
        if sizing.epoch_samples:
            fixed.setdefault("epoch_samples", int(sizing.epoch_samples))
        sched = self.search.scheduler
        if sched.type in ("asha", "median"):
            grace = sched.grace_period if sched.grace_period is not None else int(sizing.grace_period)
            max_t = sched.max_t
            if sched.type == "asha":
                max_t = min(int(max_t), int(sizing.epochs)) if max_t is not None else int(sizing.epochs)
                grace = min(grace, max_t)
            sched = dataclasses.replace(sched, grace_period=grace, max_t=max_t)
        sampler = self.search.sampler
        if sampler.type == "tpe" and sampler.n_startup_trials is None and self.search.n_trials is None:
            sampler = dataclasses.replace(sampler, n_startup_trials=max(2, min(10, int(sizing.expected_trials) // 4)))
        search = dataclasses.replace(self.search, scheduler=sched, sampler=sampler)
        return dataclasses.replace(self, fixed=fixed, search=search, auto_epochs=False, sizing=sizing)

    def defaults(self) -> dict[str, Any]:
        """The flat training config of a standalone run: fixed values plus each parameter's default.

        A parameter whose ``when`` condition does not hold for the other defaults is left out.
        """
        out = dict(self.fixed)
        for p in self.ordered_params():
            if p.active(out):
                out[p.name] = p.default_value()
        return out

    def ordered_params(self) -> list[Param]:
        """The searched parameters, each after those its ``when`` condition names (file order otherwise)."""
        return [self.params[name] for name in _condition_order(self.params, self.origin)]

    def max_epochs(self) -> int | None:
        """The most epochs one trial can train: fixed, the highest searched value, or the default
        (``None`` while ``epochs: auto`` is unsized)."""
        if self.auto_epochs:
            return None
        return _max_epochs(self.params, self.fixed)

    def max_epochs_per_trial(self) -> int | None:
        """Epochs a trial runs at most: its ``epochs``, capped by ASHA's ``max_t``."""
        sched = self.search.scheduler
        if self.auto_epochs:
            return None
        if sched.type == "asha" and sched.max_t is not None:
            return min(self.max_epochs(), sched.max_t)
        return self.max_epochs()

    def resolved(self) -> dict[str, Any]:
        """The space after overrides and defaults, as YAML-ready data (a run's ``space.yaml``)."""
        fixed = dict(self.fixed)
        if self.auto_epochs:
            fixed = {"epochs": AUTO, **fixed}
        return {
            "name": self.name,
            "data": self.data.to_dict(),
            "fixed": fixed,
            "space": {name: p.to_dict() for name, p in self.params.items()},
            "search": self.search.to_dict(),
            "ensemble": dict(self.ensemble),
            "tracking": self.tracking.to_dict(),
            "storage": self.storage,
            "ray": dict(self.ray),
        }


def parse_override(text: str) -> tuple[str, Any]:
    """``"a.b=value"`` to ``("a.b", value)``; the value is read as a YAML scalar (``5`` is an int)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r} must look like key=value (e.g. --set epochs=5 or --set data.root=/data)")
    key, _, value = text.partition("=")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def apply_overrides(raw: dict[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides: a dotted path into the file, or a bare training-parameter name.

    A bare name (``backbone=resnet18``) fixes the parameter whether the file searches it or fixes it.
    """
    for text in overrides:
        key, value = parse_override(text)
        parts = key.split(".")
        if parts[0] not in SECTIONS:
            if len(parts) > 1:
                raise ConfigError(
                    f"--set {key}: {parts[0]!r} is not a section{did_you_mean(parts[0], SECTIONS)}; "
                    f"sections are {', '.join(SECTIONS)}, or give a bare training parameter like epochs=5"
                )
            space = raw.get("space") or {}
            if isinstance(space, dict):
                space.pop(key, None)
            raw.setdefault("fixed", {})
            if raw["fixed"] is None:
                raw["fixed"] = {}
            raw["fixed"][key] = value
            continue
        node = raw
        for part in parts[:-1]:
            if isinstance(node.get(part), str):  # a shorthand (`scheduler: median`) is its `type`
                node[part] = {"type": node[part]}
            elif not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def load_space(path: str | Path, *, overrides: Sequence[str] = ()) -> Space:
    """Read and validate a space file.

    Args:
        path: the YAML file.
        overrides: ``--set key=value`` strings applied before validation.

    Example:
        >>> space = load_space("spaces/cxr.yaml", overrides=["epochs=5"])
        >>> space.defaults()["epochs"]
        5
    """
    origin = str(path)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"space file {origin!r} does not exist; pass the path of a YAML file such as spaces/cxr.yaml")
    raw = _read_yaml(p, origin)
    if not isinstance(raw, dict):
        raise ConfigError("must hold a mapping with at least `data:`", origin=origin)
    return space_from_dict(raw, origin=origin, path=p, overrides=overrides)


def space_from_data(spec: str, *, overrides: Sequence[str] = ()) -> Space:
    """The default sweep on a data set named on the command line: ``medmnist:NAME`` or ``folder:PATH``.

    Example:
        >>> space = space_from_data("medmnist:breastmnist")
        >>> space.name, space.auto_epochs
        ('breastmnist', True)
    """
    kind, _, value = str(spec).partition(":")
    if kind == "medmnist" and value:
        data: dict[str, Any] = {"source": "medmnist", "dataset": value}
        name = value
    elif kind == "folder" and value:
        data = {"source": "folder", "root": value}
        name = Path(value).expanduser().resolve().name or "folder"
    else:
        raise ConfigError(
            f"{spec!r} names no data set; write --data medmnist:NAME (e.g. medmnist:breastmnist) or --data folder:PATH",
            field="--data",
        )
    return space_from_dict({"name": name, "data": data}, origin=f"--data {spec}", path=Path.cwd() / "space.yaml", overrides=overrides)


def space_from_dict(
    raw: dict[str, Any], *, origin: str, path: Path, overrides: Sequence[str] = ()
) -> Space:
    """Validate a space given as data (``path``: where its ``include:`` names are looked up from)."""
    raw = dict(raw)
    p = Path(path)
    if not any(key in raw for key in ("fixed", "space", "include")):
        # Only `data:` (and search or ensemble settings): the shipped default sweep around it.
        raw["include"] = [DEFAULT_PRESET]
    raw = _resolve_includes(raw, p, origin, seen=(p.resolve(),))
    raw = apply_overrides(raw, overrides)
    for key in raw:
        if key not in SECTIONS:
            raise ConfigError(
                f"unknown key {key!r}{did_you_mean(key, SECTIONS)}; valid top-level keys: {', '.join(SECTIONS)}",
                origin=origin,
                field=str(key),
            )
    if "data" not in raw:
        raise ConfigError("missing `data:` section; add e.g. `data: {source: medmnist, dataset: pneumoniamnist}`", origin=origin, field="data")
    data = DataConfig.from_dict(raw["data"], origin=origin)
    fixed = dict(_mapping(raw.get("fixed"), origin, "fixed"))
    auto_epochs = fixed.get("epochs") == AUTO
    if auto_epochs:
        fixed.pop("epochs")
    params = {name: _param(name, spec, origin) for name, spec in _mapping(raw.get("space"), origin, "space").items()}
    both = sorted(set(fixed) & set(params))
    if both:
        raise ConfigError(
            f"{both[0]!r} is both fixed and searched; remove it from `fixed` or from `space`", origin=origin, field=f"fixed.{both[0]}"
        )
    # Every fixed value, and every default, must be a valid training parameter.
    TrainParams.from_config(fixed, origin=origin, prefix="fixed.")
    for name, param in params.items():
        values = param.choices if param.type == "categorical" else (param.low, param.high, param.default_value())
        for i, value in enumerate(values):
            where = f"space.{name}.choices[{i}]" if param.type == "categorical" else f"space.{name}"
            try:
                TrainParams.from_config({name: value}, origin=origin, prefix="space.")
            except ConfigError as exc:
                raise ConfigError(exc.message, origin=origin, field=where) from None
            if name == "backbone":
                check_backbone(value, origin=origin, field=where)
    if "backbone" in fixed:
        check_backbone(fixed["backbone"], origin=origin, field="fixed.backbone")
    _check_conditions(params, fixed, origin)
    _condition_order(params, origin)  # rejects cycles
    if auto_epochs and "epochs" in params:
        raise ConfigError(
            "is `auto` but `epochs` is also searched; drop one of them", origin=origin, field="fixed.epochs"
        )
    search = _search(_mapping(raw.get("search"), origin, "search"), origin, params=params, fixed=fixed, auto=auto_epochs)
    _check_select_metric(fixed, params, origin)
    ensemble = _mapping(raw.get("ensemble"), origin, "ensemble")
    from ensemble import EnsembleSettings

    # Checked now, not after the sweep has run: a typo or a bad value here would cost the whole budget.
    EnsembleSettings.from_dict(ensemble, origin=origin, prefix="ensemble")
    ray_section = _mapping(raw.get("ray"), origin, "ray")
    check_keys(ray_section, RAY_KEYS, origin=origin, prefix="ray", what="ray")
    name = str(raw.get("name") or p.stem)
    return Space(
        name=name,
        origin=origin,
        data=data,
        fixed=fixed,
        params=params,
        search=search,
        ensemble=ensemble,
        tracking=_tracking(_mapping(raw.get("tracking"), origin, "tracking"), origin, name=name),
        storage=raw.get("storage"),
        ray=ray_section,
        raw=raw,
        auto_epochs=auto_epochs,
    )


def _read_yaml(path: Path, origin: str) -> Any:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the file ({type(exc).__name__}: {exc}); save it as UTF-8 text", origin=origin) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f"line {mark.line + 1}, column {mark.column + 1}"
        else:  # a ReaderError (a character YAML does not allow) has a position, not a mark
            where = f"character {getattr(exc, 'position', '?')}"
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError(f"YAML syntax error at {where}: {problem}; fix the file's indentation or quoting", origin=origin) from None
    except (ValueError, RecursionError) as exc:  # PyYAML's own slips, e.g. an escape "\U00ffffff" past Unicode
        reason = " ".join(str(exc).split())[:120]
        raise ConfigError(f"YAML that the parser cannot read ({type(exc).__name__}: {reason}); fix the quoted strings", origin=origin) from None


def _resolve_includes(raw: dict[str, Any], path: Path, origin: str, *, seen: tuple[Path, ...]) -> dict[str, Any]:
    """Merge ``include: [presets/cxr_ast, ...]`` files under this one; this file's values win.

    A name is looked up next to the including file, then among the shipped spaces (``.yaml``
    optional). Included files are merged in order, each over the previous; ``name`` is never
    taken from them. A parameter this file searches is no longer fixed by an include, and one it
    fixes is no longer searched.
    """
    names = raw.pop("include", None)
    if names is None:
        return raw
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ConfigError(f"must be a name or a list of names like [presets/cxr_ast], got {names!r}", origin=origin, field="include")
    base: dict[str, Any] = {}
    for i, name in enumerate(names):
        found = _find_include(name, path.parent)
        if found is None:
            shipped = sorted(str(q.relative_to(SHIPPED).with_suffix("")) for q in SHIPPED.rglob("*.yaml"))
            raise ConfigError(
                f"no space file {name!r} next to this file or among the shipped spaces; shipped: {', '.join(shipped)}",
                origin=origin,
                field=f"include[{i}]",
            )
        if found.resolve() in seen:
            raise ConfigError(f"{name!r} includes itself (through {found}); remove the cycle", origin=origin, field=f"include[{i}]")
        sub = _read_yaml(found, str(found))
        if not isinstance(sub, dict):
            raise ConfigError("must hold a mapping (e.g. `fixed:` and `space:`)", origin=str(found))
        sub.pop("name", None)
        sub = _resolve_includes(sub, found, str(found), seen=seen + (found.resolve(),))
        base = _merge(base, sub)
    own_space, own_fixed = raw.get("space") or {}, raw.get("fixed") or {}
    if isinstance(base.get("fixed"), dict) and isinstance(own_space, dict):
        base["fixed"] = {k: v for k, v in base["fixed"].items() if k not in own_space}
    if isinstance(base.get("space"), dict) and isinstance(own_fixed, dict):
        base["space"] = {k: v for k, v in base["space"].items() if k not in own_fixed}
    return _merge(base, raw)


def _find_include(name: str, folder: Path) -> Path | None:
    for root in (folder, SHIPPED):
        for candidate in (root / name, root / f"{name}.yaml"):
            if candidate.is_file():
                return candidate
    return None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` on ``base``: mappings merge key by key, except a searched parameter and a ``data``
    section with another ``source``, which are replaced whole."""
    out = dict(base)
    for key, value in over.items():
        old = out.get(key)
        if isinstance(old, dict) and isinstance(value, dict):
            if key == "data" and value.get("source", old.get("source")) != old.get("source"):
                out[key] = dict(value)
            elif key == "space":
                out[key] = {**old, **value}
            else:
                out[key] = _merge(old, value)
        else:
            out[key] = value
    return out


def _mapping(value: Any, origin: str, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping, got {type(value).__name__}", origin=origin, field=field_name)
    return dict(value)


def space_params(raw: Mapping[str, Any], *, origin: str = "space.yaml") -> dict[str, Param]:
    """The searched parameters of a space in its YAML form (a run's ``space.yaml``), as ``Param``s.

    Example:
        >>> space_params({"space": {"lr": {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}}})["lr"].log
        True
    """
    return {name: _param(name, spec, origin) for name, spec in _mapping(raw.get("space"), origin, "space").items()}


def _param(name: str, spec: Any, origin: str) -> Param:
    where = f"space.{name}"
    if not isinstance(spec, dict):
        raise ConfigError(
            f"must be a mapping like {{type: float, low: 1e-4, high: 1e-2, log: true}} or {{type: categorical, choices: [...]}}, got {spec!r}",
            origin=origin,
            field=where,
        )
    kind = spec.get("type")
    if kind not in PARAM_KEYS:
        raise ConfigError(
            f"`type` must be one of {', '.join(PARAM_KEYS)}, got {kind!r}{did_you_mean(str(kind), PARAM_KEYS)}",
            origin=origin,
            field=f"{where}.type",
        )
    for key in spec:
        if key not in PARAM_KEYS[kind]:
            raise ConfigError(
                f"unknown key {key!r} for a {kind} parameter{did_you_mean(key, PARAM_KEYS[kind])}; "
                f"valid: {', '.join(sorted(PARAM_KEYS[kind]))}",
                origin=origin,
                field=f"{where}.{key}",
            )
    when = spec.get("when") or {}
    if not isinstance(when, dict):
        raise ConfigError(f"must map parameter names to a value or a list of values, got {when!r}", origin=origin, field=f"{where}.when")
    for dep, want in when.items():
        if isinstance(want, dict):
            for op, bound in want.items():
                if op not in WHEN_OPS:
                    raise ConfigError(
                        f"unknown comparison {op!r}{did_you_mean(str(op), WHEN_OPS)}; use a value, a list of values, "
                        f"or {{lt|le|gt|ge: number}} (e.g. {{lt: 1}})",
                        origin=origin,
                        field=f"{where}.when.{dep}.{op}",
                    )
                if isinstance(bound, bool) or not isinstance(bound, (int, float)):
                    raise ConfigError(f"`{op}` needs a number, got {bound!r}", origin=origin, field=f"{where}.when.{dep}.{op}")
            if not want:
                raise ConfigError("needs at least one comparison, e.g. {lt: 1}", origin=origin, field=f"{where}.when.{dep}")
        elif isinstance(want, list) and not want:
            raise ConfigError("needs at least one value", origin=origin, field=f"{where}.when.{dep}")
    when = {k: tuple(v) if isinstance(v, list) else v for k, v in when.items()}
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError("needs a non-empty list `choices: [...]`", origin=origin, field=f"{where}.choices")
        for i, choice in enumerate(choices):
            if choice is not None and not isinstance(choice, (bool, int, float, str)):
                raise ConfigError(
                    f"choices must be numbers, strings, booleans or null (Optuna's rule), got {choice!r}",
                    origin=origin,
                    field=f"{where}.choices[{i}]",
                )
        default = spec.get("default")
        if default is not None and default not in choices:
            raise ConfigError(f"default {default!r} is not among the choices {choices}", origin=origin, field=f"{where}.default")
        return Param(name=name, distribution=CategoricalDistribution(choices), default=default, when=when)
    for key in ("low", "high"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"`{key}` must be a number, got {value!r}", origin=origin, field=f"{where}.{key}")
    step = spec.get("step")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float))):
        raise ConfigError(f"`step` must be a number > 0, got {step!r}", origin=origin, field=f"{where}.step")
    low, high, log = spec["low"], spec["high"], bool(spec.get("log", False))
    try:  # Optuna's own rules for a range (low <= high, low > 0 on a log scale, step > 0 and not with log)
        if kind == "int":
            dist: BaseDistribution = IntDistribution(int(low), int(high), log=log, step=1 if step is None else int(step))
        else:
            dist = FloatDistribution(float(low), float(high), log=log, step=step)
    except ValueError as exc:
        raise ConfigError(f"{exc} (Optuna's rule for a {kind} parameter); fix the range", origin=origin, field=where) from None
    default = spec.get("default")
    if default is not None and not (low <= default <= high):
        raise ConfigError(f"default {default!r} is outside [{low}, {high}]", origin=origin, field=f"{where}.default")
    return Param(name=name, distribution=dist, default=default, when=when)


def _check_conditions(params: Mapping[str, Param], fixed: Mapping[str, Any], origin: str) -> None:
    """Each ``when`` names another parameter, and asks only for values that parameter can take."""
    known = sorted(set(params) | set(fixed))
    for name, param in params.items():
        for dep, want in param.when.items():
            where = f"space.{name}.when.{dep}"
            if dep == name:
                raise ConfigError("a parameter cannot depend on itself; name another parameter", origin=origin, field=where)
            if dep not in params and dep not in fixed:
                raise ConfigError(
                    f"{dep!r} is neither searched nor fixed{did_you_mean(dep, known)}; "
                    f"a condition must name a parameter in `space` or `fixed` (here: {', '.join(known) or 'none'})",
                    origin=origin,
                    field=where,
                )
            if dep in fixed:
                # Allowed even when it never holds: `--set loss=ce` switches off focal's gamma.
                continue
            other = params[dep]
            if isinstance(want, Mapping):
                if other.type == "categorical":
                    numeric = [c for c in other.choices if not isinstance(c, bool) and isinstance(c, (int, float))]
                    if not numeric:
                        raise ConfigError(
                            f"compares {dep!r} with a number, but its choices {list(other.choices)} are not numbers; "
                            "list the values instead",
                            origin=origin,
                            field=where,
                        )
                    if not any(_matches(c, want) for c in numeric):
                        raise ConfigError(
                            f"no choice of {dep!r} ({list(other.choices)}) satisfies {_describe_condition(dep, want)}",
                            origin=origin,
                            field=where,
                        )
                elif not _range_meets(other, want):
                    raise ConfigError(
                        f"{dep!r} ranges over [{other.low}, {other.high}], so {_describe_condition(dep, want)} never holds",
                        origin=origin,
                        field=where,
                    )
                continue
            for value in want if isinstance(want, tuple) else (want,):
                if other.type == "categorical":
                    if not any(_equal(value, c) for c in other.choices):
                        raise ConfigError(
                            f"{value!r} is not a choice of {dep!r}; its choices are {list(other.choices)}",
                            origin=origin,
                            field=where,
                        )
                elif isinstance(value, bool) or not isinstance(value, (int, float)) or not other.low <= value <= other.high:
                    raise ConfigError(
                        f"{value!r} is not a possible value of {dep!r}, which ranges over [{other.low}, {other.high}]",
                        origin=origin,
                        field=where,
                    )


def _range_meets(param: Param, want: Mapping[str, float]) -> bool:
    lo, hi = float(param.low), float(param.high)
    for op, bound in want.items():
        if op in ("lt", "le"):
            if lo > bound or (op == "lt" and lo == bound):
                return False
        elif hi < bound or (op == "gt" and hi == bound):
            return False
    return True


def _condition_order(params: Mapping[str, Param], origin: str) -> list[str]:
    """File order, except that a parameter comes after the searched parameters its condition names."""
    order: list[str] = []
    state: dict[str, str] = {}

    def visit(name: str, path: tuple[str, ...]) -> None:
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            cycle = " -> ".join(path[path.index(name) :] + (name,))
            raise ConfigError(f"conditions form a cycle ({cycle}); one of them must not depend on the other", origin=origin, field=f"space.{name}.when")
        state[name] = "open"
        for dep in params[name].when:
            if dep in params:
                visit(dep, path + (name,))
        state[name] = "done"
        order.append(name)

    for name in params:
        visit(name, ())
    return order


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
