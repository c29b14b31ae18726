"""One registry shape for every named choice (timm's ``register_*`` / ``create_*`` / ``list_*``).

Each entry declares its options with their constraints in scikit-learn's ``_parameter_constraints``
shape (``{"gamma": [Interval(Real, 0, None, closed="left")], "reduction": [StrOptions({"mean", "sum"})]}``),
so ``create`` checks them, and the trainer, the space loader and error messages read them from one place.
scikit-learn's own ``Interval`` lives in a private module; this is the small subset we need.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ._errors import ConfigError, did_you_mean

__all__ = ["Entry", "Interval", "Options", "Registry", "StrOptions", "check_option", "describe", "registries"]

_REGISTRIES: list["Registry"] = []


class Interval:
    """Numbers of ``type`` (``Integral`` or ``Real``) between ``left`` and ``right`` (``None``: unbounded).

    ``closed`` is ``"left"``, ``"right"``, ``"both"`` or ``"neither"``; booleans and non-finite numbers
    never satisfy it.
    """

    def __init__(self, type: type, left: float | None, right: float | None, *, closed: str) -> None:
        if type not in (Integral, Real) or closed not in ("left", "right", "both", "neither"):
            raise TypeError(f"Interval(type=Integral|Real, closed=left|right|both|neither), got {type}, {closed!r}")
        self.type, self.left, self.right, self.closed = type, left, right, closed

    def is_satisfied_by(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.type):
            return False
        if not math.isfinite(float(value)):
            return False
        if self.left is not None and (value < self.left or (value == self.left and self.closed in ("right", "neither"))):
            return False
        return not (self.right is not None and (value > self.right or (value == self.right and self.closed in ("left", "neither"))))

    def __str__(self) -> str:
        what = "an integer" if self.type is Integral else "a number"
        lo_in = self.closed in ("left", "both")
        hi_in = self.closed in ("right", "both")
        if self.left is not None and self.right is not None:
            return f"{what} in {'[' if lo_in else '('}{self.left:g}, {self.right:g}{']' if hi_in else ')'}"
        if self.left is not None:
            return f"{what} {'>=' if lo_in else '>'} {self.left:g}"
        if self.right is not None:
            return f"{what} {'<=' if hi_in else '<'} {self.right:g}"
        return what


class Options:
    """One of a fixed set of values of ``type``."""

    def __init__(self, type: type, options: Iterable[Any]) -> None:
        self.type = type
        self.options = frozenset(options)

    def is_satisfied_by(self, value: Any) -> bool:
        return isinstance(value, self.type) and not isinstance(value, bool) and value in self.options

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(o) for o in sorted(self.options, key=str))


class StrOptions(Options):
    """One of a fixed set of strings."""

    def __init__(self, options: Iterable[str]) -> None:
        super().__init__(str, options)


def _satisfies(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        if constraint is bool:
            return isinstance(value, bool)
        if constraint in (int, Integral, float, Real):
            return isinstance(value, constraint) and not isinstance(value, bool)
        return isinstance(value, constraint)
    return bool(constraint.is_satisfied_by(value))


def _describe_one(constraint: Any) -> str:
    if constraint is None:
        return "null"
    if isinstance(constraint, type):
        names = {bool: "true or false", int: "an integer", Integral: "an integer", float: "a number", Real: "a number", str: "a string"}
        return names.get(constraint, f"a {constraint.__name__}")
    return str(constraint)


def describe(constraints: Sequence[Any]) -> str:
    """What ``constraints`` allow, in words: ``"a number in [0, 1] or null"``."""
    return " or ".join(_describe_one(c) for c in constraints)


def check_option(name: str, value: Any, constraints: Sequence[Any], *, origin: str | None = None, field: str | None = None) -> Any:
    """``value`` if it satisfies one of ``constraints``, else a one-line ``ConfigError`` naming ``name``."""
    if any(_satisfies(c, value) for c in constraints):
        return value
    raise ConfigError(f"must be {describe(constraints)}, got {value!r}", origin=origin, field=field or name)


@dataclass(frozen=True)
class Entry:
    """One registered choice: its factory, its options' constraints and defaults, and free metadata."""

    name: str
    factory: Any
    options: Mapping[str, Sequence[Any]] = field(default_factory=dict)
    defaults: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)


def _signature_defaults(factory: Any) -> dict[str, Any]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    return {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}


class Registry:
    """Named choices of one kind (``"loss"``, ``"head"``, ...), each with declared, checked options.

    ``context`` names the keyword arguments the caller always supplies (``num_classes``, the
    optimizer's parameter groups...): they reach the factory unchecked, and are not user options.

    Example:
        >>> LOSS = Registry("loss", context=("num_classes",))
        >>> @LOSS.register("smooth_ce", options={"smoothing": [Interval(Real, 0, 1, closed="left")]})
        ... def smooth_ce(*, num_classes, smoothing=0.1): ...
        >>> LOSS.create("smooth_ce", num_classes=3, smoothing=0.2)
    """

    def __init__(self, kind: str, *, field: str | None = None, context: Iterable[str] = ()) -> None:
        self.kind = kind
        self.field = field
        self.context = frozenset(context)
        self._entries: dict[str, Entry] = {}
        _REGISTRIES.append(self)

    # ------------------------------------------------------------ registering

    def register(
        self,
        name: str,
        *,
        options: Mapping[str, Sequence[Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> Callable[[Any], Any]:
        """A decorator adding ``factory`` as ``name``; options' defaults come from its signature unless given."""

        def add(factory: Any) -> Any:
            self.add(name, factory, options=options, defaults=defaults, **meta)
            return factory

        return add

    def add(
        self,
        name: str,
        factory: Any,
        *,
        options: Mapping[str, Sequence[Any]] | None = None,
        defaults: Mapping[str, Any] | None = None,
        **meta: Any,
    ) -> Entry:
        """Register ``factory`` as ``name`` (``register`` without the decorator)."""
        if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
            raise ValueError(f"{self.kind} names are snake_case identifiers, got {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        options = {k: list(v) for k, v in (options or {}).items()}
        found = _signature_defaults(factory)
        chosen = {k: found[k] for k in options if k in found}
        chosen.update(defaults or {})
        entry = Entry(name, factory, options, chosen, dict(meta))
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests that register an example take it out again)."""
        self._entries.pop(name, None)

    # ------------------------------------------------------------ looking up

    def names(self) -> tuple[str, ...]:
        """The names, in registration order."""
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, name: str) -> Entry:
        return self.get(name)

    def items(self) -> list[tuple[str, Entry]]:
        return list(self._entries.items())

    def unknown(self, name: Any, *, origin: str | None = None, field: str | None = None, also: Sequence[str] = ()) -> ConfigError:
        """The one message for every registry: ``Unknown loss 'focla'; valid: ...; did you mean 'focal'?``.

        ``also``: names the caller accepts besides the registry's (``auto``), listed first.
        """
        valid = [*also, *sorted(self._entries)]
        return ConfigError(
            f"Unknown {self.kind} {name!r}; valid: {', '.join(valid)}{did_you_mean(str(name), valid)}",
            origin=origin,
            field=field or self.field,
        )

    def get(self, name: Any, *, origin: str | None = None, field: str | None = None) -> Entry:
        """The entry ``name``, or the one unknown-name ``ConfigError``."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.unknown(name, origin=origin, field=field)
        return self._entries[name]

    # ------------------------------------------------------------ options and creating

    def check_options(
        self, name: str, options: Mapping[str, Any], *, origin: str | None = None, prefix: str = ""
    ) -> dict[str, Any]:
        """``options`` checked against ``name``'s declared constraints, defaults filled in."""
        entry = self.get(name, origin=origin)
        for key in options:
            if key not in entry.options:
                declared = sorted(entry.options)
                hint = f"valid: {', '.join(declared)}" if declared else "it takes no options"
                raise ConfigError(
                    f"unknown option {key!r} for {self.kind} {name!r}; {hint}{did_you_mean(str(key), declared)}",
                    origin=origin,
                    field=prefix + str(key),
                )
        out = dict(entry.defaults)
        for key, value in options.items():
            out[key] = check_option(key, value, entry.options[key], origin=origin, field=prefix + key)
        return out

    def create(self, name: str, /, **options: Any) -> Any:
        """Call ``name``'s factory with the caller's context and the checked options."""
        entry = self.get(name)
        context = {k: v for k, v in options.items() if k in self.context}
        checked = self.check_options(name, {k: v for k, v in options.items() if k not in self.context})
        return entry.factory(**context, **checked)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={list(self._entries)})"


def registries() -> list[Registry]:
    """Every registry created so far: those of ``trainables``, and of ``ensemble`` and ``search`` once imported.

    Example:
        >>> import ensemble, search  # their registries join on import
        >>> sorted(r.kind for r in registries())[:2]
        ['Optuna sampler', 'Tune scheduler']
    """
    return list(_REGISTRIES)
