"""Losses by name: ``create_loss("focal", task=..., num_classes=...)`` returns a per-sample loss module.

Every loss maps ``(logits, target)`` to a ``(N,)`` tensor: the trainer averages it, and Adaptive
Sparse Training ranks samples by it. Single-label tasks (binary, multi-class, ordinal) use a
softmax over ``num_classes`` logits and take class indices ``(N,)`` or soft targets ``(N, K)``
(CutMix/MixUp); multi-label uses a sigmoid per label, with ``-1`` marking an unknown label.

Which loss fits which task, and the options each declares (``create_loss`` checks them and refuses
another loss's option; in ``TrainParams`` and YAML an option is ``<loss>_<option>``, e.g. ``focal_gamma``,
except the shared ``label_smoothing``):

============  ===============================  ==================================================
loss          tasks                            options
============  ===============================  ==================================================
ce            binary, multi-class, ordinal     label_smoothing
weighted_ce   binary, multi-class, ordinal     class_weights (required), label_smoothing
focal         all                              gamma, alpha, class_weights, label_smoothing
asl           multi-label                      gamma_pos, gamma_neg, clip, class_weights, label_smoothing
bce           multi-label                      class_weights, label_smoothing
============  ===============================  ==================================================

For multi-label losses ``class_weights`` is a per-label weight on the positive term (``pos_weight``,
e.g. negatives/positives as ``_cache._class_weights`` computes it); for single-label ones it is a
weight per class.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ._errors import ConfigError, did_you_mean
from ._registry import Interval, Registry

__all__ = [
    "LOSS",
    "LOSSES",
    "MULTI_LABEL",
    "SINGLE_LABEL",
    "AsymmetricLoss",
    "BinaryCrossEntropy",
    "SoftmaxCrossEntropy",
    "SoftmaxFocalLoss",
    "create_loss",
    "list_losses",
    "loss_fields",
    "loss_options",
    "register_loss",
]

SINGLE_LABEL = ("binary", "multi-class", "ordinal")
MULTI_LABEL = ("multi-label",)
TASKS = tuple(sorted(SINGLE_LABEL + MULTI_LABEL))

# Keeps the base of a fractional focusing power away from 0, where its gradient is infinite (0 * inf = nan).
_TINY = 1e-12


# ---------------------------------------------------------------------------------------- single-label


class _SingleLabelLoss(nn.Module):
    """Softmax losses: ``target`` is ``(N,)`` class indices or ``(N, K)`` soft targets."""

    def __init__(self, num_classes: int, weight: torch.Tensor | None, label_smoothing: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.register_buffer("weight", weight)

    def _check(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes:
            raise ValueError(f"logits must be (N, {self.num_classes}), got {tuple(logits.shape)}")
        if target.ndim == 1 and not target.is_floating_point() and len(target) == len(logits):
            return
        if target.ndim == 2 and target.shape == logits.shape:
            return
        raise ValueError(
            f"target must be (N,) int class indices or (N, {self.num_classes}) soft targets "
            f"for logits {tuple(logits.shape)}, got {tuple(target.shape)} {target.dtype}"
        )

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, label_smoothing={self.label_smoothing}"


class SoftmaxCrossEntropy(_SingleLabelLoss):
    """Per-sample cross-entropy; ``weight`` per class (``weighted_ce``), optional label smoothing.

    ``F.cross_entropy`` does all of it for index and soft targets alike: per sample it is
    ``-sum_k w_k q_k log p_k`` with ``q`` the (smoothed) target distribution.
    """

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        target = target.float() if target.is_floating_point() else target
        return F.cross_entropy(
            logits.float(), target, weight=self.weight, label_smoothing=self.label_smoothing, reduction="none"
        )


class SoftmaxFocalLoss(_SingleLabelLoss):
    """Softmax focal loss (Lin et al. 2017) per sample: ``-sum_k w_k q_k (1 - p_k)^gamma log p_k``.

    With ``gamma=0`` and no weights it is the cross-entropy; ``q`` is the one-hot or soft target,
    smoothed like ``F.cross_entropy`` smooths it.
    """

    def __init__(self, num_classes: int, weight: torch.Tensor | None, label_smoothing: float, gamma: float) -> None:
        super().__init__(num_classes, weight, label_smoothing)
        self.gamma = gamma

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        self._check(logits, target)
        log_p = F.log_softmax(logits.float(), dim=1)
        if target.is_floating_point():
            q = target.float()
        else:
            q = F.one_hot(target, self.num_classes).to(log_p.dtype)
        if self.label_smoothing:
            q = q * (1.0 - self.label_smoothing) + self.label_smoothing / self.num_classes
        term = q * log_p
        if self.gamma:
            # 1 - p_k computed as -expm1(log p_k): exact where p_k is close to 1.
            term = term * (-torch.expm1(log_p)).clamp(min=_TINY).pow(self.gamma)
        if self.weight is not None:
            term = term * self.weight
        return -term.sum(dim=1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, gamma={self.gamma}"


# ---------------------------------------------------------------------------------------- multi-label


class _MultiLabelLoss(nn.Module):
    """Sigmoid losses over ``(N, K)`` targets in [0, 1]; negative entries are unknown and masked.

    Subclasses give the element-wise loss; this class smooths the known targets towards 0.5 and
    returns each sample's mean over its known labels (0 for a sample with none).
    """

    def __init__(self, num_classes: int, pos_weight: torch.Tensor | None, label_smoothing: float) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing
        self.register_buffer("pos_weight", pos_weight)

    def elementwise(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if logits.ndim != 2 or logits.shape[1] != self.num_classes or target.shape != logits.shape:
            raise ValueError(
                f"multi-label logits and target must both be (N, {self.num_classes}), "
                f"got {tuple(logits.shape)} and {tuple(target.shape)}"
            )
        target = target.float()
        known = target >= 0
        y = torch.where(known, target, torch.zeros_like(target))
        if self.label_smoothing:
            y = y * (1.0 - self.label_smoothing) + 0.5 * self.label_smoothing
        loss = self.elementwise(logits.float(), y)
        # where(), not multiply: a masked entry must not pass on even a nan/inf from its logit.
        loss = torch.where(known, loss, torch.zeros_like(loss))
        return loss.sum(dim=1) / known.sum(dim=1).clamp(min=1)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, label_smoothing={self.label_smoothing}"


class BinaryCrossEntropy(_MultiLabelLoss):
    """Masked per-label binary cross-entropy; ``pos_weight`` scales the positive term per label."""

    def elementwise(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, target, pos_weight=self.pos_weight, reduction="none")


class AsymmetricLoss(_MultiLabelLoss):
    """Asymmetric loss (Ridnik et al. 2021, https://arxiv.org/abs/2009.14119), masked, per sample.

    Per label, with ``p = sigmoid(x)`` and the shifted probability ``p_m = max(p - clip, 0)``::

        L+ = (1 - p)^gamma_pos * log(p)          L- = p_m^gamma_neg * log(1 - p_m)
        loss = -(y * pos_weight * L+ + (1 - y) * L-)

    For a hard target this is exactly ``timm.loss.AsymmetricLossMultiLabel`` (element-wise); for
    a soft or smoothed target it is the ``y``-weighted mixture of the positive and negative losses,
    while timm mixes the focusing weights instead. With ``gamma_pos == gamma_neg == gamma`` and
    ``clip=0`` it is the sigmoid focal loss; ``alpha`` then weights positives by ``alpha`` and
    negatives by ``1 - alpha`` as in Lin et al.
    """

    def __init__(
        self,
        num_classes: int,
        pos_weight: torch.Tensor | None,
        label_smoothing: float,
        *,
        gamma_pos: float,
        gamma_neg: float,
        clip: float,
        alpha: float | None = None,
    ) -> None:
        super().__init__(num_classes, pos_weight, label_smoothing)
        self.gamma_pos = gamma_pos
        self.gamma_neg = gamma_neg
        self.clip = clip
        self.alpha = alpha

    def elementwise(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # log-sigmoid rather than log(clamp(p, eps)) as timm does: exact for large |logits|.
        log_pos = F.logsigmoid(logits)
        if self.clip > 0:
            p_m = (torch.sigmoid(logits) - self.clip).clamp(min=0)
            log_neg = torch.log1p(-p_m)
        else:
            p_m = torch.sigmoid(logits)
            log_neg = F.logsigmoid(-logits)
        if self.gamma_pos:
            log_pos = log_pos * torch.sigmoid(-logits).clamp(min=_TINY).pow(self.gamma_pos)
        if self.gamma_neg:
            log_neg = log_neg * p_m.clamp(min=_TINY).pow(self.gamma_neg)
        if self.pos_weight is not None:
            log_pos = log_pos * self.pos_weight
        if self.alpha is not None:
            log_pos = log_pos * self.alpha
            log_neg = log_neg * (1.0 - self.alpha)
        return -(target * log_pos + (1.0 - target) * log_neg)

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, gamma_pos={self.gamma_pos}, gamma_neg={self.gamma_neg}, "
            f"clip={self.clip}, alpha={self.alpha}"
        )


# ---------------------------------------------------------------------------------------- factories

# Every loss gets the task, the class count and the class weights from the data; its own options
# (declared at registration, checked by ``create_loss``) from the caller.
LOSS = Registry("loss", field="loss", context=("task", "num_classes", "class_weights"))
LOSSES = LOSS  # the names, as before: ``"focal" in LOSSES``, ``sorted(LOSSES)``
register_loss = LOSS.register

_SMOOTHING = {"label_smoothing": [Interval(Real, 0, 1, closed="left")]}
_GAMMA = [Interval(Real, 0, None, closed="left")]


def list_losses(task: str | None = None) -> list[str]:
    """The registered losses (those that fit ``task`` when given), sorted."""
    return sorted(n for n, e in LOSS.items() if task is None or task in e.meta.get("tasks", TASKS))


# Options every loss shares keep their own name in ``TrainParams``; any other is ``<loss>_<option>``.
SHARED_OPTIONS = ("label_smoothing",)


def loss_fields() -> dict[str, tuple[str, str]]:
    """Every loss option's ``TrainParams`` / YAML key -> ``(loss, option)``: ``focal_gamma`` -> ``("focal", "gamma")``."""
    out: dict[str, tuple[str, str]] = {}
    for name, entry in LOSS.items():
        for option in entry.options:
            out[option if option in SHARED_OPTIONS else f"{name}_{option}"] = (name, option)
    return out


def loss_options(name: str, params: Any) -> dict[str, Any]:
    """The options of loss ``name`` read off ``TrainParams``: its field, or its ``options`` entry, or the default."""
    entry = LOSS.get(name)
    out = {}
    for option in entry.options:
        key = option if option in SHARED_OPTIONS else f"{name}_{option}"
        if hasattr(params, key):
            out[option] = getattr(params, key)
        elif key in getattr(params, "options", {}):
            out[option] = params.options[key]
    return out


def _weights(class_weights: Sequence[float] | None) -> torch.Tensor | None:
    return None if class_weights is None else torch.tensor([float(w) for w in class_weights], dtype=torch.float32)


@register_loss("ce", options=_SMOOTHING, tasks=SINGLE_LABEL)
def _ce(*, num_classes: int, label_smoothing: float = 0.0, **_: object) -> nn.Module:
    return SoftmaxCrossEntropy(num_classes, None, label_smoothing)


@register_loss("weighted_ce", options=_SMOOTHING, tasks=SINGLE_LABEL)
def _weighted_ce(
    *, num_classes: int, class_weights: Sequence[float] | None, label_smoothing: float = 0.0, **_: object
) -> nn.Module:
    if class_weights is None:
        raise ConfigError(
            f"loss 'weighted_ce' needs class_weights (one weight per class, {num_classes} here); "
            "give class_weights or use loss 'ce'",
            field="class_weights",
        )
    return SoftmaxCrossEntropy(num_classes, _weights(class_weights), label_smoothing)


@register_loss(
    "focal",
    options={**_SMOOTHING, "gamma": _GAMMA, "alpha": [Interval(Real, 0, 1, closed="both"), None]},
    tasks=SINGLE_LABEL + MULTI_LABEL,
)
def _focal(
    *,
    task: str,
    num_classes: int,
    class_weights: Sequence[float] | None,
    label_smoothing: float = 0.0,
    gamma: float = 2.0,
    alpha: float | None = None,
    **_: object,
) -> nn.Module:
    if task in MULTI_LABEL:
        # Sigmoid focal loss = ASL with one gamma and no clip (checked against torchvision in the tests).
        pos_weight = _weights(class_weights)
        return AsymmetricLoss(
            num_classes, pos_weight, label_smoothing, gamma_pos=gamma, gamma_neg=gamma, clip=0.0, alpha=alpha
        )
    weight = _weights(class_weights)
    if alpha is not None:
        if task != "binary":
            raise ConfigError(
                f"focal alpha weights the positive class, so it needs task 'binary' or 'multi-label', got '{task}'; "
                "give class_weights for per-class weights instead",
                field="alpha",
            )
        # Lin et al.: alpha for the positive class (index 1), 1 - alpha for the negative one.
        alpha_w = torch.tensor([1.0 - alpha, alpha])
        weight = alpha_w if weight is None else weight * alpha_w
    return SoftmaxFocalLoss(num_classes, weight, label_smoothing, gamma)


@register_loss(
    "asl",
    options={**_SMOOTHING, "gamma_pos": _GAMMA, "gamma_neg": _GAMMA, "clip": [Interval(Real, 0, 1, closed="left")]},
    tasks=MULTI_LABEL,
)
def _asl(
    *,
    num_classes: int,
    class_weights: Sequence[float] | None,
    label_smoothing: float = 0.0,
    gamma_pos: float = 0.0,
    gamma_neg: float = 4.0,
    clip: float = 0.05,
    **_: object,
) -> nn.Module:
    return AsymmetricLoss(
        num_classes, _weights(class_weights), label_smoothing, gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip
    )


@register_loss("bce", options=_SMOOTHING, tasks=MULTI_LABEL)
def _bce(
    *, num_classes: int, class_weights: Sequence[float] | None, label_smoothing: float = 0.0, **_: object
) -> nn.Module:
    return BinaryCrossEntropy(num_classes, _weights(class_weights), label_smoothing)


def create_loss(
    name: str,
    *,
    task: str,
    num_classes: int,
    class_weights: Sequence[float] | None = None,
    **options: Any,
) -> nn.Module:
    """Create the loss ``name`` for ``task``; it maps ``(logits, target)`` to a ``(N,)`` per-sample loss.

    Args:
        name: a registered loss (``list_losses()``): ``ce``, ``weighted_ce``, ``focal``, ``asl`` or ``bce``.
        task: ``binary``, ``multi-class``, ``ordinal`` (softmax over ``num_classes`` logits) or
            ``multi-label`` (a sigmoid per label; target entries ``-1`` are unknown and masked).
        num_classes: logits per sample (labels, for multi-label).
        class_weights: one weight per class (single-label) or per-label positive weight (multi-label);
            required by ``weighted_ce``, ignored by ``ce``.
        **options: the loss's own options, as it declares them (``LOSS[name].options``), e.g.
            ``label_smoothing`` (all), ``gamma`` and ``alpha`` (focal), ``gamma_pos``, ``gamma_neg``
            and ``clip`` (asl); an option another loss declares is an error.

    Returns:
        A module whose ``forward(logits, target)`` returns the per-sample loss, shape ``(N,)``.

    Raises:
        ConfigError: unknown loss or task, a loss that does not fit the task, or a bad or unknown option.

    Example:
        >>> loss_fn = create_loss("focal", task="multi-class", num_classes=3, gamma=2.0)
        >>> loss_fn(torch.randn(4, 3), torch.tensor([0, 2, 1, 0])).shape
        torch.Size([4])
    """
    entry = LOSS.get(name)
    if task not in TASKS:
        raise ConfigError(f"Unknown task {task!r}; valid: {', '.join(TASKS)}{did_you_mean(task, TASKS)}")
    if task not in entry.meta.get("tasks", TASKS):
        raise ConfigError(f"loss {name!r} does not fit task {task!r}; valid for {task}: {', '.join(list_losses(task))}")
    min_classes = 1 if task in MULTI_LABEL else 2
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < min_classes:
        raise ConfigError(
            f"must be an integer >= {min_classes} for task {task!r}, got {num_classes!r}", field="num_classes"
        )
    if task == "binary" and num_classes != 2:
        raise ConfigError(f"task 'binary' has 2 classes (two softmax logits), got {num_classes}", field="num_classes")
    if class_weights is not None:
        try:
            weights = [float(w) for w in class_weights]
        except (TypeError, ValueError):
            weights = []
        if len(weights) != num_classes or not all(math.isfinite(w) and w >= 0 for w in weights):
            raise ConfigError(
                f"must be {num_classes} finite numbers >= 0 (one per class), got {class_weights!r}",
                field="class_weights",
            )
        class_weights = weights
    return LOSS.create(name, task=task, num_classes=num_classes, class_weights=class_weights, **options)
