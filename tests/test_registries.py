"""The contract every registry keeps (heads, losses, optimizers, schedulers, augment levels, data samplers,
data sources, combiners, Optuna samplers, Tune schedulers): snake_case names, one unknown-name message,
declared options whose defaults pass their own constraints, ``create`` with the defaults, and one-line
errors for a bad or unknown option. No test here, or anywhere, pins what a registry holds."""

from __future__ import annotations

import importlib.util
from numbers import Integral
from typing import Any, Callable

import numpy as np
import pytest
import torch

import ensemble  # noqa: F401 - its registries join on import
import search._samplers  # noqa: F401 - imported lazily by the sweep
from trainables import ConfigError, Interval, Registry, registries
from trainables._registry import check_option

REGISTRIES = {r.kind: r for r in registries()}
ENTRIES = [(kind, name) for kind, r in REGISTRIES.items() for name in r.names()]


def test_every_named_choice_has_a_registry() -> None:
    kinds = set(REGISTRIES)
    assert {"head", "loss", "optimizer", "scheduler", "augment level", "sampler", "data source", "combiner",
            "Optuna sampler", "Tune scheduler"} <= kinds
    assert all(len(r) >= 1 for r in REGISTRIES.values())


# ------------------------------------------------------------------------------------ names


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_names_are_snake_case(kind: str) -> None:
    for name in REGISTRIES[kind]:
        assert name.isidentifier() and name == name.lower(), name


@pytest.mark.parametrize("kind", sorted(REGISTRIES))
def test_unknown_name_is_one_line_with_the_valid_names_and_a_did_you_mean(kind: str) -> None:
    registry = REGISTRIES[kind]
    name = max(registry.names(), key=len)
    typo = name[:-1] + ("x" if name[-1] != "x" else "y")
    with pytest.raises(ConfigError) as info:
        registry.get(typo)
    text = str(info.value)
    assert "\n" not in text
    assert f"Unknown {kind} {typo!r}; valid: {', '.join(sorted(registry))}" in text
    assert "did you mean" in text and repr(name) in text.split("did you mean", 1)[1]
    assert typo not in registry and name in registry
    with pytest.raises(ConfigError, match=f"Unknown {kind} 'zzzzzzzz'; valid: [^;]*$"):
        registry.create("zzzzzzzz")


# ------------------------------------------------------------------------------------ options


def _constraints_ok(constraints: list[Any]) -> bool:
    return bool(constraints) and all(c is None or isinstance(c, type) or hasattr(c, "is_satisfied_by") for c in constraints)


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_declared_defaults_pass_their_own_constraints(kind: str, name: str) -> None:
    entry = REGISTRIES[kind][name]
    assert set(entry.defaults) <= set(entry.options)
    for option, constraints in entry.options.items():
        assert option.isidentifier() and option == option.lower(), option
        assert _constraints_ok(list(constraints)), (option, constraints)
        if option in entry.defaults:
            check_option(option, entry.defaults[option], constraints)
    # An option without a default is required; only data sources have them (a file, a data set name).
    assert kind == "data source" or set(entry.defaults) == set(entry.options)


class _Unlike:
    """A value no declared constraint accepts (except an unconstrained ``object``)."""

    def __repr__(self) -> str:
        return "<unlike>"


def _out_of_range(constraints: list[Any]) -> list[Any]:
    """Numbers just outside each interval, that no other constraint of the option accepts."""
    out = []
    for c in constraints:
        if isinstance(c, Interval):
            step = 1 if c.type is Integral else 0.5
            for bound, sign in ((c.left, -1), (c.right, 1)):
                if bound is not None:
                    value = bound + sign * step
                    out.append(int(value) if c.type is Integral else float(value))
    return [v for v in out if not any(check_passes(c, v) for c in constraints)]


def check_passes(constraint: Any, value: Any) -> bool:
    try:
        check_option("x", value, [constraint])
        return True
    except ConfigError:
        return False


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_a_bad_or_unknown_option_is_a_one_line_error_naming_it(kind: str, name: str) -> None:
    registry = REGISTRIES[kind]
    entry = registry[name]
    context = CONTEXT[kind](name) if kind in CONTEXT else {}
    for option, constraints in entry.options.items():
        bad = [] if object in constraints else [_Unlike(), *_out_of_range(list(constraints))]
        for value in bad:
            with pytest.raises(ConfigError) as info:
                registry.create(name, **{**context, **EXAMPLES.get((kind, name), {}), option: value})
            text = str(info.value)
            assert "\n" not in text and info.value.field == option and f"got {value!r}" in text, text
    with pytest.raises(ConfigError, match=f"^no_such_option: unknown option 'no_such_option' for {kind} {name!r}"):
        registry.create(name, **context, no_such_option=1)


# ------------------------------------------------------------------------------------ create with the defaults


def _loss_context(name: str) -> dict[str, Any]:
    from trainables._losses import LOSS

    task = LOSS[name].meta["tasks"][0]
    k = 2 if task == "binary" else 3
    return {"task": task, "num_classes": k, "class_weights": [1.0] * k}


def _optimizer_context(name: str) -> dict[str, Any]:
    return {"params": [torch.nn.Parameter(torch.ones(3))], "lr": 0.1, "weight_decay": 0.0}


def _scheduler_context(name: str) -> dict[str, Any]:
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([{"params": [p], "initial_lr": 0.1, "lr_scale": 1.0}], lr=0.1)
    return {"optimizer": opt, "epochs": 2, "steps_per_epoch": 3, "lr": 0.1}


CONTEXT: dict[str, Callable[[str], dict[str, Any]]] = {
    "loss": _loss_context,
    "head": lambda name: {"in_features": 8, "num_classes": 3},
    "optimizer": _optimizer_context,
    "scheduler": _scheduler_context,
    "augment level": lambda name: {"image_size": 28, "seed": 0},
    "sampler": lambda name: {"labels": np.array([0, 0, 0, 1, 1, 2]), "n_samples": 6,
                             "rng": np.random.default_rng(0), "multilabel": False},
    "Optuna sampler": lambda name: {"n_trials": 8},
}
# Required options of entries built here (a data source needs its data).
EXAMPLES: dict[tuple[str, str], dict[str, Any]] = {("data source", "medmnist"): {"dataset": "pneumoniamnist"}}
# Sources over files or folders are built from real files in tests/trainables; here their declarations only.
NOT_BUILT_HERE = {("data source", n) for n in ("folder", "csv", "dicom", "nifti")}


def _use(kind: str, name: str, made: Any, context: dict[str, Any]) -> None:
    """Run what ``create`` made once, on a tiny input."""
    if kind == "loss":
        k = context["num_classes"]
        logits = torch.randn(4, k, requires_grad=True)
        target = torch.randint(0, 2, (4, k)).float() if context["task"] == "multi-label" else torch.tensor([0, 1, 1, 0])
        loss = made(logits, target)
        assert loss.shape == (4,) and torch.isfinite(loss).all()
        loss.mean().backward()
    elif kind == "head":
        assert made(torch.randn(2, 8, 4, 4)).shape == (2, 3)
    elif kind == "optimizer":
        context["params"][0].grad = torch.ones(3)
        made.step()
        assert not torch.equal(context["params"][0].detach(), torch.ones(3))
    elif kind == "scheduler":
        made.step_update(1)
        made.step(1, 0.5)
        assert context["optimizer"].param_groups[0]["lr"] > 0
    elif kind == "augment level":
        image = np.zeros((28, 28, 1), np.uint8)
        assert made is None or made(image).shape == image.shape
    elif kind == "sampler":
        assert made.shape == (6,) and set(made.tolist()) <= set(range(6))
    elif kind == "combiner":
        rng = np.random.default_rng(0)
        y = np.array([0, 1] * 10)
        P = np.clip(np.stack([np.eye(2)[y] * 0.6 + rng.random((20, 2)) * 0.4 for _ in range(3)]), 1e-3, None)
        P = P / P.sum(-1, keepdims=True)
        grid = made.grid()
        assert grid and all(isinstance(s, dict) for s in grid)
        params = made.fit(grid[0], P, y, task="binary", metric="auroc", seed=0)
        out = made.combine(params, P, task="binary")
        assert out.shape == (20, 2) and np.isfinite(out).all()
    elif kind == "data source":
        assert made.name == name
    else:
        assert made is not None


@pytest.mark.parametrize(("kind", "name"), ENTRIES)
def test_create_with_the_defaults_works(kind: str, name: str) -> None:
    if (kind, name) in NOT_BUILT_HERE:
        pytest.skip("built from files in tests/trainables/test_sources.py and test_medical.py")
    registry = REGISTRIES[kind]
    needs = registry[name].meta.get("needs")
    if needs and importlib.util.find_spec(needs) is None:
        pytest.skip(f"needs the optional package {needs}")
    context = CONTEXT[kind](name) if kind in CONTEXT else {}
    made = registry.create(name, **context, **EXAMPLES.get((kind, name), {}))
    _use(kind, name, made, context)


# ------------------------------------------------------------------------------------ the Registry itself


def test_registering_checks_the_name_and_a_twin() -> None:
    registry = Registry("widget")
    try:
        registry.register("ok_name")(lambda: 1)
        with pytest.raises(ValueError, match="snake_case"):
            registry.register("Bad-Name")(lambda: 1)
        with pytest.raises(ValueError, match="already registered"):
            registry.register("ok_name")(lambda: 2)
        assert registry.create("ok_name") == 1 and registry.names() == ("ok_name",)
        registry.unregister("ok_name")
        assert "ok_name" not in registry
    finally:
        from trainables import _registry

        _registry._REGISTRIES.remove(registry)
