"""Reading space files: YAML with line numbers in errors, ``include:`` of presets, ``--set`` overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import yaml

from trainables import ConfigError, did_you_mean

# The top-level keys of a space file.
SECTIONS = ("name", "include", "data", "fixed", "space", "search", "ensemble", "tracking", "storage", "ray")
# Where `include: [presets/cxr_ast]` looks after the including file's own folder: the shipped spaces.
SHIPPED = Path(__file__).resolve().parents[1] / "spaces"
# What a space file with no `fixed:`, `space:` or `include:` runs: the shipped default sweep.
DEFAULT_PRESET = "presets/auto"


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
