"""Space files: YAML that declares data, fixed parameters and a search space, validated once at load.

The vocabulary follows Optuna's distributions: ``{type: float|int, low, high, log, step}``
and ``{type: categorical, choices}``, each with an optional ``default`` (what a standalone
run uses) and ``when`` (the parameter exists only for some values of others).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from trainables._cache import DataConfig
from trainables._errors import ConfigError, did_you_mean
from trainables._model import check_backbone
from trainables._params import TrainParams

SECTIONS = ("name", "data", "fixed", "space", "search", "ensemble", "storage", "ray")
PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "default", "when"},
    "int": {"type", "low", "high", "log", "step", "default", "when"},
    "categorical": {"type", "choices", "default", "when"},
}


@dataclass(frozen=True)
class Param:
    """One searched dimension, in Optuna's vocabulary."""

    name: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    default: Any = None
    when: Mapping[str, Any] = field(default_factory=dict)

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


@dataclass(frozen=True)
class Space:
    """A validated space file."""

    name: str
    origin: str
    data: DataConfig
    fixed: Mapping[str, Any]
    params: Mapping[str, Param]
    search: Mapping[str, Any]
    ensemble: Mapping[str, Any]
    storage: Any = None
    ray: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)

    def defaults(self) -> dict[str, Any]:
        """The flat training config of a standalone run: fixed values plus each parameter's default."""
        out = dict(self.fixed)
        for name, p in self.params.items():
            out[name] = p.default_value()
        return out


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
            if not isinstance(node.get(part), dict):
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
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "?"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"YAML syntax error at {where}: {problem}; fix the file's indentation or quoting", origin=origin) from None
    if not isinstance(raw, dict):
        raise ConfigError("must hold a mapping with at least `data:`", origin=origin)
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
    fixed = _mapping(raw.get("fixed"), origin, "fixed")
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
    return Space(
        name=str(raw.get("name") or p.stem),
        origin=origin,
        data=data,
        fixed=fixed,
        params=params,
        search=_mapping(raw.get("search"), origin, "search"),
        ensemble=_mapping(raw.get("ensemble"), origin, "ensemble"),
        storage=raw.get("storage"),
        ray=_mapping(raw.get("ray"), origin, "ray"),
        raw=raw,
    )


def _mapping(value: Any, origin: str, field_name: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"must be a mapping, got {type(value).__name__}", origin=origin, field=field_name)
    return dict(value)


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
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise ConfigError("needs a non-empty list `choices: [...]`", origin=origin, field=f"{where}.choices")
        default = spec.get("default")
        if default is not None and default not in choices:
            raise ConfigError(f"default {default!r} is not among the choices {choices}", origin=origin, field=f"{where}.default")
        return Param(name=name, type=kind, choices=tuple(choices), default=default, when=when)
    for key in ("low", "high"):
        value = spec.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"`{key}` must be a number, got {value!r}", origin=origin, field=f"{where}.{key}")
    low, high = spec["low"], spec["high"]
    if not low <= high:
        raise ConfigError(f"`low <= high` must hold, but got low={low!r}, high={high!r}; swap them", origin=origin, field=where)
    log = bool(spec.get("log", False))
    step = spec.get("step")
    if log and low <= 0:
        raise ConfigError(f"`low` must be > 0 when log: true, got {low!r}", origin=origin, field=f"{where}.low")
    if step is not None and (isinstance(step, bool) or not isinstance(step, (int, float)) or step <= 0):
        raise ConfigError(f"`step` must be a number > 0, got {step!r}", origin=origin, field=f"{where}.step")
    if log and step is not None:
        raise ConfigError("`step` and `log: true` cannot be combined (Optuna's rule); drop one", origin=origin, field=f"{where}.step")
    default = spec.get("default")
    if default is not None and not (low <= default <= high):
        raise ConfigError(f"default {default!r} is outside [{low}, {high}]", origin=origin, field=f"{where}.default")
    if kind == "int":
        low, high = int(low), int(high)
    return Param(name=name, type=kind, low=low, high=high, log=log, step=step, default=default, when=when)
