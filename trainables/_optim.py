"""Staged fine-tuning, optimizers and learning-rate schedules.

Parameters are split into a head group and backbone stage groups (timm's own coarse
``group_matcher``, the grouping timm uses for layer-wise decay). Each optimizer group
carries an ``lr_scale`` that timm's schedulers apply on top of the scheduled rate: that is
how ``backbone_lr_mult`` and a different fine-tuning rate after unfreezing reach the
optimizer without a second schedule.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import torch
from torch import nn

from ._registry import Interval, Registry

# An optimizer gets the parameter groups, the rate and the weight decay from the trainer; its own options
# (SGD's momentum) are declared. A scheduler gets the optimizer, the run's length and the peak rate.
OPTIMIZER = Registry("optimizer", field="optimizer", context=("params", "lr", "weight_decay"))
SCHEDULER = Registry("scheduler", field="scheduler", context=("optimizer", "epochs", "steps_per_epoch", "lr"))
OPTIMIZERS = OPTIMIZER  # the names, as before
SCHEDULERS = SCHEDULER
register_optimizer = OPTIMIZER.register
register_scheduler = SCHEDULER.register
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)


def backbone_stages(backbone: nn.Module) -> list[list[str]]:
    """Parameter names of the backbone's stages, bottom (stem) first."""
    from timm.models import group_parameters

    named = list(backbone.named_parameters())
    try:
        matcher = backbone.group_matcher(coarse=True)
        groups = group_parameters(backbone, matcher, return_values=False, reverse=False)
        stages = [list(groups[k]) for k in sorted(groups)]
        stages = [s for s in stages if s]
    except (AttributeError, NotImplementedError, TypeError):
        stages = []
    if len(stages) < 2:  # no grouping: treat the whole backbone as one stage
        stages = [[name for name, _ in named]]
    return stages


class Stager:
    """Freezes and unfreezes the backbone by epoch.

    ``unfreeze="all"``: the whole backbone is frozen for ``freeze_epochs`` epochs, then trained.
    ``unfreeze="progressive"``: after ``freeze_epochs`` head-only epochs (default ``unfreeze_step``),
    one more stage is unfrozen from the top down every ``unfreeze_step`` epochs.
    Frozen parts also keep their normalisation statistics (their norm layers stay in eval mode).
    """

    def __init__(self, model: nn.Module, *, freeze_epochs: int = 0, unfreeze: str = "all", unfreeze_step: int = 1) -> None:
        self.model = model
        self.backbone = model.backbone
        self.freeze_epochs = freeze_epochs
        self.unfreeze = unfreeze
        self.step = max(1, unfreeze_step)
        self.stages = backbone_stages(self.backbone)
        self.params = dict(self.backbone.named_parameters())
        self.n_open = len(self.stages)

    def open_stages(self, epoch: int) -> int:
        """How many backbone stages (counted from the top) train in ``epoch`` (0-based)."""
        n = len(self.stages)
        if self.unfreeze == "progressive":
            head_only = self.freeze_epochs if self.freeze_epochs > 0 else self.step
            return 0 if epoch < head_only else min(n, 1 + (epoch - head_only) // self.step)
        return 0 if epoch < self.freeze_epochs else n

    def apply(self, epoch: int) -> int:
        """Set ``requires_grad`` for ``epoch``; returns the number of trainable parameters."""
        self.n_open = self.open_stages(epoch)
        open_names = {name for stage in self.stages[len(self.stages) - self.n_open :] for name in stage}
        for name, p in self.params.items():
            p.requires_grad_(name in open_names)
        return sum(p.numel() for p in self.model.parameters() if p.requires_grad)

    @property
    def fully_open(self) -> bool:
        return self.n_open == len(self.stages)

    def set_train_mode(self) -> None:
        """``model.train()``, with norm layers whose parameters are all frozen kept in eval mode."""
        self.model.train()
        for module in self.backbone.modules():
            if isinstance(module, _NORMS):
                ps = list(module.parameters(recurse=False))
                if ps and not any(p.requires_grad for p in ps):
                    module.eval()


def create_optimizer(
    model: nn.Module,
    *,
    name: str,
    lr: float,
    weight_decay: float,
    backbone_lr_mult: float = 1.0,
    momentum: float = 0.9,
    nesterov: bool = True,
) -> torch.optim.Optimizer:
    """An optimizer with two groups: ``head`` (scale 1) and ``backbone`` (scale ``backbone_lr_mult``).

    Example:
        >>> opt = create_optimizer(model, name="adamw", lr=1e-4, weight_decay=1e-4, backbone_lr_mult=0.1)
    """
    entry = OPTIMIZER.get(name)
    from timm.optim import param_groups_weight_decay

    # Every group schedules from the same base (``initial_lr``, which timm's schedulers keep if set);
    # ``lr_scale`` then gives the backbone its multiple of the head's rate at every step, warm-up included.
    # Each part is split by timm's ``param_groups_weight_decay``: norm weights and biases (1-d tensors)
    # take no weight decay, as in timm's own training recipes.
    groups = []
    for part, scale in (("head", 1.0), ("backbone", backbone_lr_mult)):
        for group in param_groups_weight_decay(getattr(model, part), weight_decay=weight_decay):
            if group["params"]:
                group.update(lr=lr * scale, initial_lr=lr, lr_scale=scale, name=part, base_scale=scale)
                groups.append(group)
    given = {"momentum": momentum, "nesterov": nesterov}
    return OPTIMIZER.create(
        name, params=groups, lr=lr, weight_decay=weight_decay, **{k: v for k, v in given.items() if k in entry.options}
    )


@register_optimizer("adamw")
def _adamw(*, params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


@register_optimizer("adam")
def _adam(*, params: list, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)


@register_optimizer("sgd", options={"momentum": [Interval(Real, 0, 1, closed="left")], "nesterov": [bool]})
def _sgd(*, params: list, lr: float, weight_decay: float, momentum: float = 0.9, nesterov: bool = True) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov and momentum > 0)


def set_stage_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Scale every group's rate by ``factor`` against its base (e.g. ``finetune_lr / lr`` after unfreezing).

    The current rate changes at once (what a plateau schedule keeps stepping from); timm's step
    schedules apply the new ``lr_scale`` from their next update on.
    """
    for group in optimizer.param_groups:
        new = group["base_scale"] * factor
        if new != group["lr_scale"]:
            group["lr"] *= new / group["lr_scale"]
            group["lr_scale"] = new


def create_scheduler(
    optimizer: torch.optim.Optimizer,
    *,
    name: str,
    epochs: int,
    steps_per_epoch: int,
    lr: float,
    warmup_epochs: float = 0.0,
    min_lr: float = 0.0,
    step_epochs: int = 10,
    decay_rate: float = 0.1,
    plateau_patience: int = 2,
):
    """A timm scheduler; call ``step_update(update)`` every step and ``step(epoch, metric)`` every epoch.

    ``onecycle`` is timm's cosine schedule with a 30 % warm-up from ``lr/25`` down to ``lr/25e4``,
    the shape of ``torch.optim.lr_scheduler.OneCycleLR``, kept in timm so that group scales apply.
    """
    entry = SCHEDULER.get(name)
    given = {
        "warmup_epochs": warmup_epochs, "min_lr": min_lr, "step_epochs": step_epochs, "decay_rate": decay_rate,
        "plateau_patience": plateau_patience,
    }
    return SCHEDULER.create(
        name, optimizer=optimizer, epochs=epochs, steps_per_epoch=steps_per_epoch, lr=lr,
        **{k: v for k, v in given.items() if k in entry.options},
    )


_WARMUP = {"warmup_epochs": [Interval(Real, 0, None, closed="left")]}
_MIN_LR = {"min_lr": [Interval(Real, 0, None, closed="left")]}
_DECAY = {"decay_rate": [Interval(Real, 0, 1, closed="right")]}


@register_scheduler("cosine", options={**_WARMUP, **_MIN_LR})
def _cosine(optimizer, *, epochs: int, steps_per_epoch: int, lr: float, warmup_epochs: float = 0.0, min_lr: float = 0.0):
    from timm.scheduler import CosineLRScheduler

    total = max(1, epochs * steps_per_epoch)
    warm = int(round(warmup_epochs * steps_per_epoch))
    return CosineLRScheduler(
        optimizer, t_initial=max(1, total - warm), lr_min=min_lr, warmup_t=warm,
        warmup_lr_init=lr * 0.01, warmup_prefix=True, t_in_epochs=False,
    )


@register_scheduler("onecycle")
def _onecycle(optimizer, *, epochs: int, steps_per_epoch: int, lr: float):
    from timm.scheduler import CosineLRScheduler

    total = max(1, epochs * steps_per_epoch)
    warm = int(0.3 * total)
    return CosineLRScheduler(
        optimizer, t_initial=max(1, total - warm), lr_min=lr / 25e4, warmup_t=warm,
        warmup_lr_init=lr / 25, warmup_prefix=True, t_in_epochs=False,
    )


@register_scheduler("plateau", options={**_DECAY, **_MIN_LR, "plateau_patience": [Interval(Integral, 0, None, closed="left")]})
def _plateau(optimizer, *, epochs: int, steps_per_epoch: int, lr: float, decay_rate: float = 0.1, min_lr: float = 0.0, plateau_patience: int = 2):
    from timm.scheduler import PlateauLRScheduler

    return PlateauLRScheduler(optimizer, decay_rate=decay_rate, patience_t=plateau_patience, mode="max", lr_min=min_lr)


@register_scheduler("step", options={**_WARMUP, **_DECAY, "step_epochs": [Interval(Integral, 1, None, closed="left")]})
def _step(optimizer, *, epochs: int, steps_per_epoch: int, lr: float, warmup_epochs: float = 0.0, step_epochs: int = 10, decay_rate: float = 0.1):
    from timm.scheduler import StepLRScheduler

    return StepLRScheduler(optimizer, decay_t=step_epochs, decay_rate=decay_rate, warmup_t=int(warmup_epochs), warmup_lr_init=lr * 0.01)


@register_scheduler("none")
def _none(optimizer, *, epochs: int, steps_per_epoch: int, lr: float):
    return _Constant(optimizer)


class _Constant:
    """No schedule: the rate stays at ``lr`` (times each group's scale)."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.optimizer = optimizer
        self.base = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]

    def step_update(self, num_updates: int, metric: Any = None) -> None:
        for g, b in zip(self.optimizer.param_groups, self.base):
            g["lr"] = b * g.get("lr_scale", 1.0)

    def step(self, epoch: int, metric: Any = None) -> None:
        self.step_update(0)

    def state_dict(self) -> dict:
        return {"base": self.base}

    def load_state_dict(self, state: dict) -> None:
        self.base = list(state["base"])


def current_lr(optimizer: torch.optim.Optimizer, group: str = "head") -> float:
    for g in optimizer.param_groups:
        if g.get("name") == group:
            return float(g["lr"])
    return float(optimizer.param_groups[0]["lr"])

