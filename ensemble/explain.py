"""Grad-CAM of an ensemble bundle: ``python -m ensemble.explain BUNDLE IMAGE --out cam.png [--class NAME] [--tta | --no-tta]``.

One map per member (Grad-CAM from the ``grad-cam`` package on the backbone's last convolution that
still has a spatial extent) and the combined map: the members' maps averaged with the combiner's
member weights when it has them (greedy selection), else equally. A member that predicts the mean of
its logits over the image and its mirrors (its ``tta`` flips, as the bundle predicts) is explained the
same way: its map is the mean of the maps of every view, each flipped back onto the image. One PNG: the
input as the members saw it, each member's overlay, the combined overlay.
"""

from __future__ import annotations

import argparse
import sys
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from trainables import ConfigError, did_you_mean
from trainables.cli import cli_errors

__all__ = ["Explanation", "explain", "last_conv_layer", "main", "save_figure"]

PANEL_PX = 256  # each panel's width and height in the PNG, in pixels
_LAYERS: "weakref.WeakKeyDictionary[Any, dict[tuple[int, ...], tuple[str, Any]]]" = weakref.WeakKeyDictionary()
TITLE_PX = 44  # room for the titles above the panels


@dataclass
class Explanation:
    """Grad-CAM maps in [0, 1] at the display size, the target class, and the weights that combined them."""

    image: np.ndarray  # (S, S, 3) uint8, the first member's input shown as RGB
    target: str
    class_index: int
    maps: list[np.ndarray]  # one (S, S) per member
    combined: np.ndarray  # (S, S)
    weights: list[float]
    layers: list[str]  # the target layer's name per member
    probs: np.ndarray  # (K,) ensemble probabilities of the image
    member_probs: np.ndarray  # (members, K)


def last_conv_layer(model: Any, example) -> tuple[str, Any]:
    """``(name, module)``: the backbone's last ``nn.Conv2d`` to run whose output is larger than 1x1.

    At the small inputs of MedMNIST-style data the final stage's map is 1x1, and a Grad-CAM there is
    one flat value; the last convolution that still sees space is the useful one. Falls back to the
    last convolution that ran, then to the last one defined.
    """
    import torch
    from torch import nn

    backbone = getattr(model, "backbone", model)
    convs = [(name, m) for name, m in backbone.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError(f"backbone {type(backbone).__name__} has no Conv2d layer for Grad-CAM to use")
    ran: list[tuple[str, Any, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda mod, _i, out, name=name: ran.append((name, mod, tuple(out.shape)))) for name, m in convs]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    spatial = [(name, mod) for name, mod, shape in ran if len(shape) == 4 and shape[2] * shape[3] > 1]
    if spatial:
        return spatial[-1]
    if ran:
        return ran[-1][0], ran[-1][1]
    return convs[-1]


def explain(bundle: Any, image: Any, *, target: str | None = None, tta: bool | None = None) -> Explanation:
    """Grad-CAM maps of every member of ``bundle`` (a ``Bundle`` or its folder) for one image.

    Args:
        bundle: a loaded ``Bundle`` or a bundle folder.
        image: an image file or an array ``(H, W[, C])``.
        target: the class to explain; default the ensemble's top class.
        tta: as in ``Bundle.member_proba``: ``None`` (default) explains each member over the flips it
            predicts with (the mean of the views' maps, each flipped back), ``False`` the image alone,
            ``True`` over the horizontal mirror too.

    Example:
        >>> exp = explain("runs/cxr/ensemble", "xray.png")
        >>> exp.combined.shape
        (28, 28)
    """
    import cv2
    import torch

    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        raise ConfigError("Grad-CAM comes from the grad-cam package, which is not installed: pip install grad-cam") from None

    from trainables import flip_views

    from ._bundle import load
    from ._report import member_weights

    if isinstance(bundle, (str, Path)):
        bundle = load(bundle)
    names = bundle.class_names
    member_probs = bundle.member_proba([image], tta=tta)[:, 0]
    probs = bundle.combiner.predict_proba(member_probs[:, None, :])[0]
    if target is None:
        j = int(np.argmax(probs))
    elif target in names:
        j = names.index(target)
    else:
        raise ConfigError(f"Unknown class {target!r}{did_you_mean(target, names)}; valid: {', '.join(names)}", field="--class")
    size = max(s["image_size"] for s in bundle.members)
    maps, layers = [], []
    for i, model in enumerate(bundle.models):
        x = bundle.model_input(bundle.prepare([image], member=i), i)
        # The layer depends on the model and the input's shape only: found once per member, not per image
        # (a whole forward pass each time, a third of a report's Grad-CAM time).
        found = _LAYERS.setdefault(model, {})
        if tuple(x.shape) not in found:
            found[tuple(x.shape)] = last_conv_layer(model, x)
        name, layer = found[tuple(x.shape)]
        views = flip_views(bundle.flips(i, tta))
        with GradCAM(model=model, target_layers=[layer]) as cam:
            # A flipped view's map lies on the flipped image: flip it back (NCHW dims 2, 3 are the map's
            # rows and columns) before the mean, so every view points at the same place.
            grey = np.mean([
                np.flip(cam(input_tensor=torch.flip(x, dims=list(dims)) if dims else x, targets=[ClassifierOutputTarget(j)])[0], tuple(d - 2 for d in dims))
                for dims in views
            ], axis=0)
        model.zero_grad(set_to_none=True)
        if grey.shape != (size, size):
            grey = cv2.resize(grey, (size, size), interpolation=cv2.INTER_LINEAR)
        maps.append(np.clip(np.nan_to_num(grey.astype(np.float64)), 0.0, 1.0))
        layers.append(name)
    weights = member_weights(bundle.combiner.combiner_, bundle.combiner.params_, len(maps)) or [1.0] * len(maps)
    total = float(sum(weights)) or 1.0
    combined = sum(w * m for w, m in zip(weights, maps)) / total
    shown = _display_image(bundle.prepare([image], member=0)[0], size)
    return Explanation(
        image=shown, target=names[j], class_index=j, maps=maps, combined=np.asarray(combined), weights=[w / total for w in weights],
        layers=layers, probs=probs, member_probs=member_probs,
    )


def _display_image(img: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if img.shape[0] != size:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(img)


def save_figure(exp: Explanation, out: str | Path, *, member_ids: Sequence[str], source: str = "") -> Path:
    """One PNG: the input, each member's overlay, the combined overlay; ``PANEL_PX`` square panels with
    ``TITLE_PX`` for the titles above, so the file is ``PANEL_PX * (members + 2)`` by ``PANEL_PX + TITLE_PX``."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from pytorch_grad_cam.utils.image import show_cam_on_image

    rgb = exp.image.astype(np.float32) / 255.0
    j = exp.class_index
    panels: list[tuple[str, np.ndarray]] = [(f"input\n{Path(source).name}" if source else "input", exp.image)]
    for tid, cam, p, layer in zip(member_ids, exp.maps, exp.member_probs, exp.layers):
        panels.append((f"{tid} p={p[j]:.3f}\n{layer}", show_cam_on_image(rgb, cam.astype(np.float32), use_rgb=True)))
    panels.append((f"combined p={exp.probs[j]:.3f}\nclass {exp.target}", show_cam_on_image(rgb, exp.combined.astype(np.float32), use_rgb=True)))
    n = len(panels)
    dpi = 100
    fig = plt.figure(figsize=(n * PANEL_PX / dpi, (PANEL_PX + TITLE_PX) / dpi), dpi=dpi)
    for i, (title, img) in enumerate(panels):
        ax = fig.add_axes((i / n, 0.0, 1.0 / n, PANEL_PX / (PANEL_PX + TITLE_PX)))
        ax.imshow(img, interpolation="bilinear")
        ax.set_axis_off()
        ax.set_title(title, fontsize=7)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi)
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (2 for bad input, with one line on stderr).

    Example:
        >>> main(["runs/cxr/ensemble", "xray.png", "--out", "cam.png"])
        0
    """
    parser = argparse.ArgumentParser(prog="python -m ensemble.explain", description=__doc__.splitlines()[0])
    parser.add_argument("bundle", help="an ensemble bundle folder, e.g. runs/cxr/ensemble")
    parser.add_argument("image", help="an image file")
    parser.add_argument("--out", default="cam.png", help="the PNG to write (default cam.png)")
    parser.add_argument("--class", dest="target", default=None, help="the class to explain (default: the ensemble's prediction)")
    parser.add_argument("--device", default="cpu", choices=("auto", "cpu", "cuda"), help="where the members run (default cpu)")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="explain over the horizontal mirror too (--tta) or the image alone (--no-tta); "
                             "default: each member's own test-time flips, as it predicts")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    with cli_errors(args.bundle, debug=args.debug) as cli:
        from ._bundle import load

        bundle = load(args.bundle, device=args.device)
        exp = explain(bundle, args.image, target=args.target, tta=args.tta)
        out = save_figure(exp, args.out, member_ids=[m["trial_id"] for m in bundle.members], source=args.image)
    if cli.status:
        return cli.status
    weights = ", ".join(f"{m['trial_id']} {w:.2f}" for m, w in zip(bundle.members, exp.weights))
    print(f"[medsweep] Grad-CAM for class {exp.target} (ensemble p={exp.probs[exp.class_index]:.3f}); "
          f"combined with weights {weights}; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
