"""Test-time augmentation by flips: a model predicts the mean of its logits over the image and its mirrors.

A trial that trains with flips (every augmentation level but ``none`` flips horizontally) has learned
that a mirrored image is the same case; averaging its logits over the flips it trained with is a cheap
ensemble of one model (on full BloodMNIST, one resnet10t: test AUROC 0.9973 -> 0.9980, argmax accuracy
0.9620 -> 0.9655; bench/RESULTS.md). The trial writes its validation and test predictions this way and
records its flips as the member's ``tta`` (``model.json``), so the ensemble stacks on what the bundle and
its ONNX graph then predict.

Logits, not probabilities, are averaged: the mean is then linear in the model's output, so a bag's fold
models (``FoldAverage``, which averages logits too) give the same result whichever is averaged first, and
a member's ``logit_bias`` is added once, after the mean.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TTA_FLIPS", "flip_average", "flip_views", "trained_flips"]

# Each flip and the NCHW dimension it reverses.
TTA_FLIPS = {"hflip": 3, "vflip": 2}


def trained_flips(augment: Any) -> tuple[str, ...]:
    """The flips an ``Augment`` (``build_augment``'s result, or ``None``) applies, in ``TTA_FLIPS`` order."""
    names = set(getattr(augment, "names", ()) or ())
    return tuple(f for f in TTA_FLIPS if f in names)


def flip_views(flips: Sequence[str]) -> list[tuple[int, ...]]:
    """The dimensions each view reverses: the image itself first, then every combination of ``flips``.

    Example:
        >>> flip_views(()), flip_views(("hflip",)), flip_views(("hflip", "vflip"))
        ([()], [(), (3,)], [(), (3,), (2,), (3, 2)])
    """
    views: list[tuple[int, ...]] = [()]
    for flip in flips:
        if flip not in TTA_FLIPS:
            raise ValueError(f"unknown flip {flip!r}; valid: {', '.join(TTA_FLIPS)}")
        views += [v + (TTA_FLIPS[flip],) for v in views]
    return views


def flip_average(model: Any, x: Any, flips: Sequence[str] = ()) -> Any:
    """``model``'s logits of the NCHW batch ``x``, averaged over ``x`` and its ``flips`` (every combination).

    Example:
        >>> logits = flip_average(model, x, ("hflip",))   # (model(x) + model(x.flip(3))) / 2
    """
    import torch

    views = flip_views(flips)
    total = model(x)
    for dims in views[1:]:
        total = total + model(torch.flip(x, dims=list(dims)))
    return total / len(views) if len(views) > 1 else total
