"""Classifier heads by name, and ``build_classifier``: a timm backbone without its classifier plus a head.

A head takes the backbone's feature map ``(N, C, H, W)`` and returns logits ``(N, num_classes)``.
``linear`` also takes already pooled features ``(N, C)``: that is what a token backbone (ViT)
gives when it keeps its own pooling. ``se`` and ``cbam`` attend over a convolutional map and
refuse token backbones.
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any, Callable, Sequence

import torch
from torch import nn

from ._errors import ConfigError
from ._registry import Interval, Registry, check_option

__all__ = [
    "HEAD", "HEADS", "AttentionHead", "Classifier", "FoldAverage", "LinearHead", "build_classifier", "build_member",
    "create_head", "list_heads", "register_head",
]


class LinearHead(nn.Module):
    """Global average pool -> dropout -> linear; ``(N, C)`` input is taken as already pooled."""

    def __init__(self, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.in_features = in_features
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_features, num_classes)

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4 and x.shape[1] == self.in_features:
            return x.mean(dim=(2, 3))
        if x.ndim == 2 and x.shape[1] == self.in_features:
            return x
        raise ValueError(
            f"{type(self).__name__} takes a feature map (N, {self.in_features}, H, W) or pooled features "
            f"(N, {self.in_features}), got {tuple(x.shape)}; for a token backbone keep its own pooling"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(self.pool(x)))


class AttentionHead(LinearHead):
    """An attention module over the feature map, then global average pool -> dropout -> linear."""

    needs_feature_map = True

    def __init__(self, attention: nn.Module, in_features: int, num_classes: int, drop_rate: float = 0.0) -> None:
        super().__init__(in_features, num_classes, drop_rate)
        self.attention = attention

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_features:
            raise ValueError(
                f"{type(self.attention).__name__} head needs a feature map (N, {self.in_features}, H, W), "
                f"got {tuple(x.shape)}"
            )
        return super().forward(self.attention(x))


HeadFactory = Callable[..., nn.Module]
# Every head gets the backbone's channels and the class count from the model; its own options from the caller.
HEAD = Registry("head", field="head", context=("in_features", "num_classes"))
HEADS = HEAD  # the names, as before: ``"se" in HEADS``, ``sorted(HEADS)``
_DROP = {"drop_rate": [Interval(Real, 0, 1, closed="left")]}
_REDUCTION = {"reduction": [Interval(Integral, 1, None, closed="left")]}


def register_head(name: str, *, needs_feature_map: bool, options: dict | None = None) -> Callable[[HeadFactory], HeadFactory]:
    """Register a head factory; ``needs_feature_map``: it cannot take pooled ``(N, C)`` input."""
    return HEAD.register(name, options={**_DROP, **(options or {})}, needs_feature_map=needs_feature_map)


def list_heads() -> list[str]:
    """The registered heads, sorted."""
    return sorted(HEAD)


def _reduced(in_features: int, reduction: int) -> int:
    # The papers' C / r, at least one unit (timm would round to a multiple of 8 by default).
    return max(1, in_features // reduction)


@register_head("linear", needs_feature_map=False)
def _linear(*, in_features: int, num_classes: int, drop_rate: float = 0.0, **_: object) -> nn.Module:
    return LinearHead(in_features, num_classes, drop_rate)


@register_head("se", needs_feature_map=True, options=_REDUCTION)
def _se(*, in_features: int, num_classes: int, drop_rate: float = 0.0, reduction: int = 16, **_: object) -> nn.Module:
    from timm.layers import SEModule

    # timm's SEModule is Hu et al.'s block: GAP -> FC(C, C/r) -> ReLU -> FC(C/r, C) -> sigmoid -> x * s,
    # with the FCs as 1x1 convs with bias. rd_channels is set so C/r is not rounded to a multiple of 8.
    hidden = _reduced(in_features, reduction)
    attention = SEModule(in_features, rd_channels=hidden, act_layer=nn.ReLU, gate_layer="sigmoid")
    return AttentionHead(attention, in_features, num_classes, drop_rate)


@register_head("cbam", needs_feature_map=True, options=_REDUCTION)
def _cbam(*, in_features: int, num_classes: int, drop_rate: float = 0.0, reduction: int = 16, **_: object) -> nn.Module:
    from timm.layers.cbam import CbamModule

    # timm's CbamModule follows Woo et al.'s reference code: channel attention = sigmoid(MLP(avgpool) +
    # MLP(maxpool)) with one shared MLP (no bias), then spatial attention = sigmoid(BN(conv7x7([mean_c, max_c]))),
    # applied in that order. The BN after the 7x7 conv is in the reference code, not in the paper's formula.
    attention = CbamModule(in_features, rd_channels=_reduced(in_features, reduction), spatial_kernel_size=7)
    return AttentionHead(attention, in_features, num_classes, drop_rate)


def _positive_int(field: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"must be an integer >= 1, got {value!r}", field=field)
    return value


def _drop_rate(value: object) -> float:
    return float(check_option("drop_rate", value, _DROP["drop_rate"]))


def create_head(name: str, *, in_features: int, num_classes: int, **options: Any) -> nn.Module:
    """Create the head ``name``: backbone features ``(N, in_features, H, W)`` -> logits ``(N, num_classes)``.

    Args:
        name: a registered head (``list_heads()``): ``linear``, ``se`` (Squeeze-and-Excitation) or ``cbam``.
        in_features: channels of the backbone's feature map (timm's ``num_features``).
        num_classes: logits per sample.
        **options: the head's declared options (``HEAD[name].options``): ``drop_rate`` (dropout before
            the final linear layer, in [0, 1), every head) and ``reduction`` (channel reduction ``r``
            of the SE / CBAM bottleneck, ``C / r`` hidden units).

    Returns:
        The head module.

    Raises:
        ConfigError: unknown head or a bad option.

    Example:
        >>> head = create_head("se", in_features=64, num_classes=3)
        >>> head(torch.randn(2, 64, 7, 7)).shape
        torch.Size([2, 3])
    """
    HEAD.get(name)
    return HEAD.create(
        name,
        in_features=_positive_int("in_features", in_features),
        num_classes=_positive_int("num_classes", num_classes),
        **options,
    )


class Classifier(nn.Module):
    """A timm backbone without classifier (``backbone``) followed by a head (``head``)."""

    def __init__(self, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


class FoldAverage(nn.Module):
    """One configuration refitted on k folds (a bag): the mean of its ``folds`` models' logits.

    The mean of the logits is what the ensemble step stacked (the fold models' probabilities averaged
    in log space), and it keeps one logit output, so the bundle, ONNX and Grad-CAM treat a bag as one model.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        self.folds = nn.ModuleList(models)

    @property
    def backbone(self) -> nn.Module:
        # Grad-CAM's layer search looks in ``backbone``: the first fold model's stands for the bag.
        return self.folds[0].backbone

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.folds]).mean(0)


def build_member(spec: Any) -> nn.Module:
    """The untrained model a ``MemberSpec`` describes: a ``Classifier``, or a ``FoldAverage`` of ``spec.folds`` of them.

    Example:
        >>> model = build_member(MemberSpec.from_model_json(read_model_json("runs/cxr/trial/checkpoint")))
        >>> model.load_state_dict(load_file("runs/cxr/trial/checkpoint/best.safetensors"))
    """

    def one() -> Classifier:
        return build_classifier(spec.backbone, head=spec.head, num_classes=spec.num_classes, in_chans=spec.channels, pretrained=False)

    return one() if spec.folds <= 1 else FoldAverage([one() for _ in range(spec.folds)])


def _feature_shape(backbone: str, in_chans: int) -> tuple[int, tuple[int, ...], str]:
    """``(num_features, output shape, output format)`` of ``backbone`` built with ``global_pool=''``.

    The model is built and run on the meta device, which propagates shapes without allocating or
    computing anything; a model that cannot run there is probed on the CPU instead.
    """
    import timm

    def probe(device: str) -> tuple[int, tuple[int, ...], str]:
        with torch.device(device):
            model = timm.create_model(backbone, pretrained=False, num_classes=0, global_pool="", in_chans=in_chans)
            _, height, width = model.pretrained_cfg.get("input_size", (in_chans, 224, 224))
            model.eval()
            with torch.no_grad():
                out = model(torch.zeros(1, in_chans, height, width))
        return model.num_features, tuple(out.shape), str(getattr(model, "output_fmt", None) or "NCHW")

    try:
        return probe("meta")
    except Exception:  # noqa: BLE001 - any failure on meta: fall back to a real (small, batch 1) run
        return probe("cpu")


def build_classifier(
    backbone: str,
    *,
    head: str,
    num_classes: int,
    in_chans: int,
    pretrained: bool = False,
    pretrained_path: str | None = None,
    drop_rate: float = 0.0,
) -> Classifier:
    """Create a timm backbone without its classifier and put the head ``head`` on it.

    A convolutional backbone is built with ``num_classes=0, global_pool=''`` so it returns its feature
    map and the head pools. A token backbone (ViT and kin) keeps its own pooling and returns ``(N, C)``;
    only ``linear`` fits it. ``drop_rate`` goes to the head only (timm would drop the map a second time).

    Args:
        backbone: a timm model name (``timm.list_models()``).
        head: a key of ``HEADS``.
        num_classes: logits per sample.
        in_chans: input image channels (timm adapts pretrained stems).
        pretrained: load timm's pretrained weights.
        pretrained_path: a local weights file (.safetensors or .pth) loaded through timm; implies pretrained.
        drop_rate: dropout before the head's linear layer.

    Returns:
        A ``Classifier`` with ``backbone`` and ``head``.

    Raises:
        ConfigError: unknown backbone or head, a missing weights file, or an attention head on a token backbone.

    Example:
        >>> model = build_classifier("resnet18", head="cbam", num_classes=2, in_chans=1)
        >>> model(torch.randn(2, 1, 64, 64)).shape
        torch.Size([2, 2])
    """
    import timm

    from ._model import check_backbone, local_weights

    check_backbone(backbone)
    entry = HEAD.get(head)
    _positive_int("num_classes", num_classes)
    _positive_int("in_chans", in_chans)
    drop_rate = _drop_rate(drop_rate)
    kwargs: dict[str, object] = local_weights(pretrained_path)
    pretrained = pretrained or bool(kwargs)

    num_features, shape, fmt = _feature_shape(backbone, in_chans)
    is_map = len(shape) == 4 and shape[1] == num_features and fmt == "NCHW"
    if not is_map:
        if entry.meta.get("needs_feature_map", False):
            raise ConfigError(
                f"head {head!r} needs a convolutional feature map (N, C, H, W), but backbone {backbone!r} gives "
                f"features of shape {shape} ({fmt if len(shape) == 4 else 'tokens'}); "
                "use head 'linear' or a convolutional backbone",
                field="head",
            )
    else:
        kwargs["global_pool"] = ""  # the head pools (and attends over) the map itself
    model = timm.create_model(backbone, pretrained=pretrained, num_classes=0, in_chans=in_chans, **kwargs)
    classifier_head = create_head(head, in_features=model.num_features, num_classes=num_classes, drop_rate=drop_rate)
    return Classifier(model, classifier_head)
