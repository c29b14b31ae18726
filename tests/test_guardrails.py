"""Guard rails run by the README's test command: ruff over the tree, mypy over the public modules, every
third-party import declared in pyproject.toml, and the built wheel's smoke sweep run from outside the checkout."""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ._images import write_class_folders

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("trainables", "search", "ensemble", "spaces")
LINTED = ("trainables", "search", "ensemble", "bench", "tests")
# Import names whose distribution need not be installed here (an optional extra), so packages_distributions()
# cannot name it.
NOT_INSTALLED_HERE = {"pynvml": "nvidia-ml-py"}


def _tool(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing():
    proc = _tool("ruff", "check", *LINTED)  # rules and line length: [tool.ruff] in pyproject.toml
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]


def test_mypy_passes_on_the_public_modules():
    proc = _tool("mypy", timeout=600)  # which files and how: [tool.mypy] in pyproject.toml
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    checked = int(proc.stdout.rsplit(" in ", 1)[1].split()[0])  # "Success: no issues found in 11 source files"
    public = [p for pkg in PACKAGES for p in (REPO / pkg).glob("*.py") if p.name == "__init__.py" or p.name[0] != "_"]
    assert checked == len(public), f"mypy checked {checked} files, the public modules are {len(public)}: {public}"


def _third_party_imports() -> dict[str, list[tuple[str, bool]]]:
    """Import name -> [(file, imported at module level)] for every absolute import outside the stdlib and ours."""
    found: dict[str, list[tuple[str, bool]]] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            top_level = {id(node) for node in tree.body}
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in sys.stdlib_module_names and top not in PACKAGES:
                        found.setdefault(top, []).append((str(path.relative_to(REPO)), id(node) in top_level))
    return found


def test_every_third_party_import_is_declared():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    # A lazy import (inside a function) may come from an extra; `test` is not one a user installs for a feature.
    extras = {canonicalize_name(Requirement(r).name)
              for extra, reqs in project.get("optional-dependencies", {}).items() if extra != "test" for r in reqs}
    dists = packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "numpy", "yaml"} <= set(imports)  # the scan sees the imports at all
    problems = []
    for name, where in sorted(imports.items()):
        provided = {canonicalize_name(d) for d in dists.get(name, [])} or {NOT_INSTALLED_HERE.get(name, "")} - {""}
        if not provided:
            problems.append(f"{name} ({where[0][0]}): no installed distribution provides it; install it or name it in "
                            "NOT_INSTALLED_HERE")
            continue
        module_level = [f for f, top in where if top]
        allowed = core if module_level else core | extras
        if not provided & allowed:
            kind = "dependencies" if module_level else "dependencies or an extra"
            problems.append(f"{name} ({(module_level or [where[0][0]])[0]}): add {sorted(provided)[0]} to {kind}")
    assert not problems, "undeclared imports:\n" + "\n".join(problems)


def _copy_source(dest: Path) -> Path:
    """The files a wheel is built from, outside the checkout: a stale build/ there cannot leak into the wheel."""
    dest.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, dest / pkg, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


@pytest.mark.ray
def test_the_built_wheel_runs_the_smoke_sweep_outside_the_checkout(tmp_path):
    src = _copy_source(tmp_path / "src")
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=300,
    )
    assert build.returncode == 0, build.stderr[-4000:]
    (wheel,) = dist.glob("medsweep-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.startswith("spaces/") and n.endswith(".yaml")}
    expected = {p.relative_to(REPO).as_posix() for p in (REPO / "spaces").rglob("*.yaml")}
    assert shipped == expected, f"not in the wheel: {sorted(expected - shipped)}"

    # torch, ray and the rest from this environment; medsweep from the wheel only (its editable install from a
    # checkout is found after the venv's own site-packages, and the assertion below proves which copy runs).
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    python = str(venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python"))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["RAY_ADDRESS"] = ""  # its own local Ray, never one this test process may have started
    install = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                              str(wheel)], capture_output=True, text=True, env=env, timeout=300)
    assert install.returncode == 0, install.stderr[-4000:]

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([python, *argv], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=timeout)

    where = run("-c", "import json, search, ensemble, trainables, spaces; "
                      "print(json.dumps({m.__name__: m.__file__ for m in (search, ensemble, trainables, spaces)}))")
    assert where.returncode == 0, where.stderr[-4000:]
    files = {name: Path(f).resolve() for name, f in json.loads(where.stdout.splitlines()[-1]).items()}
    for name, f in files.items():
        assert f.is_relative_to(venv.resolve()), f"{name} imported from {f}, not from the wheel in {venv}"
    installed_spaces = files["spaces"].parent

    images = write_class_folders(tmp_path / "images")
    # A space with only `data:` runs the shipped presets/auto.yaml: found in the installed package.
    dry = run("-m", "search.run", "--data", f"folder:{images}", "--dry-run")
    assert dry.returncode == 0, dry.stdout[-2000:] + dry.stderr[-4000:]
    assert "searched (10;" in dry.stdout and "backbone" in dry.stdout

    sweep = run("-m", "search.run", str(installed_spaces / "smoke.yaml"),
                "--set", f"data.root={images}", "--set", f"data.cache_dir={tmp_path / 'cache'}",
                "--set", "search.n_trials=2", "--out", str(tmp_path / "runs"), "--no-report", timeout=600)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-4000:]
    run_dir = tmp_path / "runs" / "smoke"
    assert (run_dir / "leaderboard.csv").is_file() and (run_dir / "ensemble" / "manifest.json").is_file()
    assert not (elsewhere / "runs").exists()  # --out was honoured; nothing written where it ran
