"""A space's searched parameters: ``Param`` (an Optuna distribution with ``default`` and ``when``), their
YAML form and the checks of their ``when`` conditions."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from trainables import ConfigError, did_you_mean

PARAM_KEYS = {
    "float": {"type", "low", "high", "log", "step", "default", "when"},
    "int": {"type", "low", "high", "log", "step", "default", "when"},
    "categorical": {"type", "choices", "default", "when"},
}
# Comparisons a ``when:`` condition may use besides a value or a list of values.
WHEN_OPS = {"lt": "<", "le": "<=", "gt": ">", "ge": ">="}


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
            text = f"{self.type} [{_num(self.low)}, {_num(self.high)}]" + (" log" if self.log else "") + (f" step {_num(self.step)}" if self.step else "")
        if self.when:
            text += "  when " + " and ".join(_describe_condition(k, v) for k, v in self.when.items())
        return text


def _num(value: Any) -> Any:
    """A bound as the file would write it: Optuna keeps a float range's bounds as floats (1.0 for 1)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


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
        raise ConfigError(f"{str(exc).rstrip('.')} (Optuna's rule for a {kind} parameter); fix the range", origin=origin, field=where) from None
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
