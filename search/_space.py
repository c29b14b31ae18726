"""Space files: YAML that declares data, fixed parameters, a search space and the search, validated once at load.

The vocabulary follows Optuna's distributions: ``{type: float|int, low, high, log, step}``
and ``{type: categorical, choices}``, each with an optional ``default`` (what a standalone
run uses) and ``when`` (the parameter exists only for some values of others:
``when: {loss: focal}``, ``when: {loss: [focal, asl]}`` or ``when: {activation_rate: {lt: 1}}``).
The ``search`` section becomes a ``SearchConfig``; ``include`` merges preset files under the file.

Here: ``Space`` and the loaders (``load_space``, ``space_from_data``, ``space_from_dict``). The parts:
reading files, includes and overrides (``_files``), the searched parameters (``_params``), the
``search`` and ``tracking`` sections and the metric checks (``_sections``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from optuna.distributions import CategoricalDistribution

from trainables import ConfigError, DataConfig, TrainParams, check_backbone, check_keys, did_you_mean

# The parts of a space live in their own modules: the file (_files), its parameters (_params), its sections (_sections).
from ._files import DEFAULT_PRESET, SECTIONS, _read_yaml, _resolve_includes, apply_overrides
from ._params import Param, _check_conditions, _condition_order, _mapping, _param
from ._sections import (
    RAY_KEYS,
    SearchConfig,
    TrackingConfig,
    _check_select_metric,
    _max_epochs,
    _search,
    _tracking,
)

# `fixed: {epochs: auto}`: trial length sized at the start of the sweep from the data and the budget.
AUTO = "auto"



def choice_values(per_choice: Mapping[str, Mapping[Any, Mapping[str, Any]]], values: Mapping[str, Any]) -> dict[str, Any]:
    """What follows the choices in ``values`` (``Space.per_choice``): the entry of each value drawn."""
    out: dict[str, Any] = {}
    for name, table in per_choice.items():
        out.update(table.get(values.get(name), {}))
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
    # Values that follow a searched choice, set by the sizing: {"backbone": {"resnet18": {"epoch_samples": 6800}}}
    # (rounds of equal time). Each trial gets the entry of the value it drew; ``fixed`` holds the fallback.
    per_choice: Mapping[str, Mapping[Any, Mapping[str, Any]]] = field(default_factory=dict)

    def with_sizing(self, sizing: Any) -> "Space":
        """This space with ``epochs: auto`` replaced by ``sizing`` (a ``search._budget.Sizing``): fixed
        ``epochs`` (and ``epoch_samples``), ASHA's ``max_t`` and ``grace_period`` where the file left them
        out, TPE's random start sized to the trials the budget is expected to start, and the backbone
        choices narrowed to those the sizing kept (``Sizing.backbones``). With rounds of equal time
        (``Sizing.round_samples``) a searched backbone's ``epoch_samples`` follows it (``per_choice``)
        and a fixed one's is its own."""
        fixed = {**self.fixed, "epochs": int(sizing.epochs)}
        per_choice: dict[str, dict[Any, dict[str, Any]]] = {}
        rounds = dict(getattr(sizing, "round_samples", ()) or ())
        if "epoch_samples" not in fixed:  # a file's own epoch_samples stays, for every backbone
            if rounds and "backbone" not in self.params:
                samples = rounds.get(str(fixed.get("backbone", TrainParams.backbone)), sizing.epoch_samples)
            else:
                samples = sizing.epoch_samples
                if rounds:
                    per_choice["backbone"] = {b: {"epoch_samples": int(n)} for b, n in rounds.items()}
            if samples:
                fixed["epoch_samples"] = int(samples)
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
        params = dict(self.params)
        kept = getattr(sizing, "backbones", None)
        if kept and "backbone" in params and tuple(kept) != params["backbone"].choices:
            p = params["backbone"]
            params["backbone"] = dataclasses.replace(
                p, distribution=CategoricalDistribution(list(kept)), default=p.default if p.default in kept else None
            )
        return dataclasses.replace(self, fixed=fixed, params=params, search=search, auto_epochs=False, sizing=sizing,
                                   per_choice=per_choice)

    def follow_choices(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """``values`` with what follows its drawn choices (``per_choice``) put in.

        Example:
            >>> space.per_choice
            {'backbone': {'resnet18': {'epoch_samples': 6800}, 'resnet10t': {'epoch_samples': 13400}}}
            >>> space.follow_choices({"backbone": "resnet10t", "epoch_samples": 9000})["epoch_samples"]
            13400
        """
        return {**values, **choice_values(self.per_choice, values)}

    def defaults(self) -> dict[str, Any]:
        """The flat training config of a standalone run: fixed values plus each parameter's default.

        A parameter whose ``when`` condition does not hold for the other defaults is left out.
        """
        out = dict(self.fixed)
        for p in self.ordered_params():
            if p.active(out):
                out[p.name] = p.default_value()
        return self.follow_choices(out)

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
