"""The layers and surfaces, read from the source: trainables/ at the bottom, ensemble/ on it, search/ on top.

Every import is found by walking each file's syntax tree, so an import inside a function counts as much
as one at the top. Across packages only public names travel: no ``trainables._cache``, no
``from ensemble import _stacking``, no ``from trainables.artifacts import _floats``. And every public
module says what it offers in an ``__all__`` that names only what exists.
"""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "ensemble", "search")  # bottom to top
LAYER = {name: i for i, name in enumerate(PACKAGES)}
CHECKED = (*PACKAGES, "bench")


def source_files() -> list[Path]:
    return sorted(p for d in CHECKED for p in (ROOT / d).rglob("*.py"))


def owner(path: Path) -> str:
    return path.relative_to(ROOT).parts[0]


def imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """``(line, absolute module, imported names)`` for every import in the file, nested ones included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 0:
                out.append((node.lineno, node.module or "", names))
            else:  # relative: resolve against the file's own package
                package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
                base = package[: len(package) - (node.level - 1)]
                out.append((node.lineno, ".".join(base + ([node.module] if node.module else [])), names))
    return out


def violations(path: Path) -> list[str]:
    here = owner(path)
    found = []
    for line, module, names in imports(path):
        parts = module.split(".")
        target = parts[0]
        if target not in PACKAGES or target == here:
            continue
        where = f"{path.relative_to(ROOT)}:{line}"
        if here in LAYER and LAYER[target] > LAYER[here]:
            found.append(f"{where}: upward import of {module} ({here} sits below {target})")
        private = [p for p in parts[1:] if p.startswith("_")] + [n for n in names if n.startswith("_")]
        if private:
            shown = f"from {module} import {', '.join(names)}" if names else f"import {module}"
            found.append(f"{where}: private name across packages: {shown}")
    return found


def test_the_walker_sees_what_it_must(tmp_path, monkeypatch):
    """The check itself can fail: nested, relative, aliased and ``from X import _y`` imports are all caught."""
    pkg = tmp_path / "ensemble"
    pkg.mkdir()
    bad = pkg / "_bad.py"
    bad.write_text(
        "import trainables._cache as c\n"
        "from trainables import _errors\n"
        "from trainables.artifacts import _floats\n"
        "from . import _stacking\n"  # its own package: fine
        "def f():\n    from search import load_space\n    from search._run import trial_constants\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    found = violations(bad)
    assert len(found) == 6, found
    assert sum("upward" in v for v in found) == 2 and sum("private" in v for v in found) == 4
    assert not any("_stacking" in v for v in found)


def test_no_private_name_crosses_a_package_and_no_import_goes_up():
    found = [v for path in source_files() for v in violations(path)]
    assert not found, "\n".join(found)


def public_modules() -> list[str]:
    names = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if any(p.startswith("_") for p in parts if p != "__init__"):
                continue
            names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def private_modules() -> list[str]:
    return [
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for package in PACKAGES
        for p in sorted((ROOT / package).glob("_*.py"))
        if p.name != "__init__.py"
    ]


def test_the_public_modules_are_the_ones_expected():
    found = set(public_modules())
    assert {"trainables", "trainables.artifacts", "trainables.cli", "ensemble", "search", "search.fit"} <= found
    assert not any(m.split(".")[-1].startswith("_") for m in found)


@pytest.mark.parametrize("name", public_modules())
def test_every_public_module_has_a_correct_all(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, (list, tuple)), f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"
    assert not [n for n in exported if n.startswith("_")], f"{name}.__all__ exports private names"
    if not hasattr(module, "__path__"):
        # A public module's own top-level functions and classes are its surface: each one is in __all__.
        tree = ast.parse(Path(module.__file__).read_text())
        defined = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and not n.name.startswith("_")]
        unlisted = [n for n in defined if n not in exported]
        assert not unlisted, f"{name} defines {unlisted} but leaves them out of __all__"


@pytest.mark.parametrize("name", private_modules())
def test_a_private_modules_all_names_what_exists(name):
    module = importlib.import_module(name)
    missing = [n for n in getattr(module, "__all__", ()) if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names what it does not have: {missing}"


def test_every_script_is_a_public_main():
    """``[project.scripts]``: each entry point is a public module's ``main``, beside its ``python -m`` form."""
    tomllib = pytest.importorskip("tomllib")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert {"medsweep-run", "medsweep-show", "medsweep-fit", "medsweep-build", "medsweep-predict"} <= set(scripts)
    public = set(public_modules())
    for script, target in scripts.items():
        module_name, _, attr = target.partition(":")
        assert module_name in public and attr == "main", f"{script} = {target!r}"
        assert script == "medsweep-" + module_name.rsplit(".", 1)[-1], f"{script} is not named after {module_name}"
        assert callable(getattr(importlib.import_module(module_name), attr))
        assert f"`{script}`" in (ROOT / "README.md").read_text(), f"{script} is not listed in README.md"
