"""Image augmentation for training, medical preprocessing for the cache, and CutMix/MixUp.

Augmentations are albumentations pipelines built from a level (``none`` ... ``advanced``)
plus per-transform switches a sweep can search one by one. Preprocessing is a pure function
of one image, run once when the cache is built. ``mix_batch`` mixes a tensor batch and its
targets with timm's CutMix box helpers.
"""

from __future__ import annotations

import copy
import os
import random
import threading
from concurrent.futures import Executor
from numbers import Real
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ._errors import ConfigError
from ._registry import Interval, Registry

if TYPE_CHECKING:  # torch is only needed by mix_batch; keep `import trainables._augment` light
    import torch

__all__ = [
    "AUGMENT",
    "AUGMENT_LEVELS",
    "AUGMENT_SWITCHES",
    "PREPROCESS",
    "Augment",
    "augment_batch",
    "build_augment",
    "mix_batch",
    "preprocess",
]

PREPROCESS = ("clahe", "border_crop")

# Default rotation limit (degrees) when the level or `rotate=True` turns rotation on.
_ROTATE_DEGREES = 15.0
# Images per chunk in augment_batch: each chunk gets its own seed, so a batch comes out the
# same with or without a thread pool, and whatever the pool's size.
_CHUNK = 16


# --- transform factories: one per switch, in the order they are applied -----------------
# Geometry first, then intensity, then dropout last (so holes stay sharp-edged and black).
# Each factory gets the image size (kernel sizes and elastic smoothness scale with it) and
# the switch value (only `rotate` carries a number: the limit in degrees).


def _hflip(A: Any, size: int, value: Any) -> Any:
    return A.HorizontalFlip(p=0.5)


def _vflip(A: Any, size: int, value: Any) -> Any:
    # Off at every level: chest X-rays and most radiographs have a fixed up/down.
    return A.VerticalFlip(p=0.5)


def _rotate(A: Any, size: int, value: Any) -> Any:
    import cv2

    limit = float(value)
    return A.Rotate(limit=(-limit, limit), border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5)


def _affine(A: Any, size: int, value: Any) -> Any:
    import cv2

    # Scale and translate only: rotation has its own switch.
    return A.Affine(
        scale=(0.9, 1.1), translate_percent=(-0.0625, 0.0625), rotate=0.0, shear=0.0,
        border_mode=cv2.BORDER_CONSTANT, fill=0, p=0.5,
    )


def _distortion(A: Any, size: int, value: Any) -> Any:
    import cv2

    # Each moves pixels by about 1.5-2.5 % of the side on average (measured at 28 and 224 px).
    # Elastic: smoothness follows the image (sigma ~ size) and displacement ~ alpha / sigma,
    # so alpha ~ size * sigma keeps it a fixed fraction of the side.
    sigma = 0.06 * size
    return A.OneOf(
        [
            A.ElasticTransform(alpha=0.3 * size * sigma, sigma=sigma, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
            A.GridDistortion(num_steps=5, distort_limit=0.2, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
            A.OpticalDistortion(distort_limit=0.3, border_mode=cv2.BORDER_CONSTANT, fill=0, p=1.0),
        ],
        p=0.3,
    )


def _brightness_contrast(A: Any, size: int, value: Any) -> Any:
    return A.RandomBrightnessContrast(brightness_limit=0.2, contrast_limit=0.2, p=0.5)


def _blur(A: Any, size: int, value: Any) -> Any:
    # blur_limit=0: kernel size follows sigma; sigma up to ~0.6 px at 28 px, 1.5 px at 224 px.
    return A.GaussianBlur(blur_limit=0, sigma_limit=(0.1, 0.5 + size / 224.0), p=0.2)


def _noise(A: Any, size: int, value: Any) -> Any:
    # std as a fraction of 255: about 5..20 grey levels.
    return A.GaussNoise(std_range=(0.02, 0.08), p=0.3)


def _coarse_dropout(A: Any, size: int, value: Any) -> Any:
    return A.CoarseDropout(
        num_holes_range=(1, 4), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), fill=0, p=0.3
    )


_TRANSFORMS: dict[str, Callable[[Any, int, Any], Any]] = {
    "hflip": _hflip,
    "vflip": _vflip,
    "rotate": _rotate,
    "affine": _affine,
    "distortion": _distortion,
    "brightness_contrast": _brightness_contrast,
    "blur": _blur,
    "noise": _noise,
    "coarse_dropout": _coarse_dropout,
}
AUGMENT_SWITCHES = tuple(_TRANSFORMS)

_SIMPLE = {"hflip": True}
_ENHANCED = {**_SIMPLE, "rotate": _ROTATE_DEGREES, "affine": True, "brightness_contrast": True}
_ADVANCED = {**_ENHANCED, "distortion": True, "noise": True, "blur": True, "coarse_dropout": True}

# A level is a preset of switches; every switch is an option of every level (None: follow the level).
# The trainer passes the image size and the seed.
AUGMENT = Registry("augment level", field="augment", context=("image_size", "seed"))
AUGMENT_LEVELS = AUGMENT  # the names, in order of strength: none, simple, enhanced, advanced
_SWITCH_OPTIONS: dict[str, list[Any]] = {name: [bool, None] for name in _TRANSFORMS}
_SWITCH_OPTIONS["rotate"] = [Interval(Real, 0, 180, closed="both"), bool, None]


def register_augment(name: str, switches: dict[str, Any]) -> None:
    """Register the level ``name``: the transforms ``switches`` turns on (a rotation limit for ``rotate``)."""

    def factory(*, image_size: int, seed: int | None = None, **given: Any) -> Any:
        return build_augment(name, image_size=image_size, seed=seed, **given)

    AUGMENT.add(name, factory, options=_SWITCH_OPTIONS, defaults=dict.fromkeys(_TRANSFORMS), switches=dict(switches))


for _name, _switches in (("none", {}), ("simple", _SIMPLE), ("enhanced", _ENHANCED), ("advanced", _ADVANCED)):
    register_augment(_name, _switches)


def _import_albumentations() -> Any:
    # albumentations asks PyPI for a newer version on import; trials run offline and in parallel.
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations as A

    return A


class Augment:
    """A seeded albumentations pipeline over one uint8 image ``(H, W, C)``, C in {1, 3}.

    Calling it returns a new image of the same shape and dtype. ``augment_batch`` runs it
    over a batch, optionally on a thread pool, with results that do not depend on the pool.

    Attributes:
        level: the level it was built from.
        names: the switches that are on, in the order they are applied.
        seed: the seed it was built with (``None``: fresh entropy).
        compose: the ``albumentations.Compose`` behind it.
    """

    def __init__(self, compose: Any, *, level: str, names: tuple[str, ...], seed: int | None) -> None:
        self.compose = compose
        self.level = level
        self.names = names
        self.seed = seed
        _share_random_state(compose, seed)
        # Chunk seeds for augment_batch come from their own stream, so single-image calls
        # and batch calls do not shift each other.
        self._seeder = np.random.default_rng(None if seed is None else [seed, 1])
        self._seeder_lock = threading.Lock()
        self._local = threading.local()

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return _apply(self.compose, image)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for worker processes; locks and per-thread copies are rebuilt there.
        # A copy continues the same random streams: reseed it (a new build_augment) per worker.
        state = self.__dict__.copy()
        del state["_seeder_lock"], state["_local"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._seeder_lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Augment(level={self.level!r}, names={list(self.names)}, seed={self.seed})"

    def _chunk_seeds(self, n_chunks: int) -> list[int]:
        with self._seeder_lock:
            return [int(s) for s in self._seeder.integers(0, 2**63 - 1, size=n_chunks)]

    def _run_chunk(self, images: np.ndarray, out: np.ndarray, start: int, stop: int, seed: int) -> None:
        # One pipeline copy per thread: albumentations keeps per-call state on the transforms.
        compose = getattr(self._local, "compose", None)
        if compose is None:
            compose = self._local.compose = copy.deepcopy(self.compose)
        _share_random_state(compose, seed)
        for i in range(start, stop):
            out[i] = _apply(compose, images[i])


def _share_random_state(compose: Any, seed: int | None) -> None:
    # `A.Compose(seed=s)` seeds every transform with the same s, so their draws move in
    # lockstep (two p=0.5 flips fire together every time). One shared stream avoids that.
    compose.set_random_state(np.random.default_rng(seed), random.Random(seed))


def _apply(compose: Any, image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f"augment expects a uint8 image (H, W, C) with C in {{1, 3}}, got {img.dtype} {img.shape}")
    out = compose(image=img)["image"]
    # OpenCV drops a trailing channel of 1 in some transforms: put it back.
    return np.ascontiguousarray(out, dtype=np.uint8).reshape(img.shape)


def build_augment(
    level: str,
    *,
    image_size: int,
    hflip: bool | None = None,
    vflip: bool | None = None,
    rotate: float | None = None,
    affine: bool | None = None,
    brightness_contrast: bool | None = None,
    distortion: bool | None = None,
    noise: bool | None = None,
    blur: bool | None = None,
    coarse_dropout: bool | None = None,
    seed: int | None = None,
) -> Callable[[np.ndarray], np.ndarray] | None:
    """The training augmentation for a level, with individual transforms switched on or off.

    Levels: ``none`` (nothing), ``simple`` (horizontal flip), ``enhanced`` (simple + rotation
    up to 15 degrees, scale/translate affine, brightness/contrast), ``advanced`` (enhanced +
    one of elastic/grid/optical distortion, Gaussian noise, Gaussian blur, coarse dropout).
    A switch left at ``None`` follows the level; ``True``/``False`` turns its transform on or
    off whatever the level. ``rotate`` is the limit in degrees (0 or ``False``: off, ``True``:
    15). Vertical flip is off at every level.

    Args:
        level: one of ``AUGMENT_LEVELS``.
        image_size: side length of the images it will see (scales blur and elastic smoothness).
        seed: makes the sequence of augmentations reproducible.

    Returns:
        An ``Augment`` taking one uint8 ``(H, W, C)`` image (C = 1 or 3) to a new one of the
        same shape, or ``None`` when no transform is on.

    Raises:
        ConfigError: unknown level, or a bad switch value.

    Example:
        >>> aug = build_augment("enhanced", image_size=28, vflip=True, seed=0)
        >>> aug(np.zeros((28, 28, 1), np.uint8)).shape
        (28, 28, 1)
    """
    entry = AUGMENT.get(level)
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"must be a positive integer, got {image_size!r}", field="image_size")
    switches = {
        "hflip": hflip, "vflip": vflip, "rotate": rotate, "affine": affine,
        "brightness_contrast": brightness_contrast, "distortion": distortion,
        "noise": noise, "blur": blur, "coarse_dropout": coarse_dropout,
    }
    chosen = dict(entry.meta["switches"])
    for name, value in switches.items():
        if value is None:
            continue
        if name == "rotate":
            if value is True:
                value = _ROTATE_DEGREES
            elif isinstance(value, (int, float, np.number)) and not isinstance(value, bool) and 0 <= value <= 180:
                value = float(value)
            elif value is not False:
                raise ConfigError(f"must be a limit in degrees in [0, 180] or true/false, got {value!r}", field="rotate")
            if not value:
                value = False
        elif not isinstance(value, (bool, np.bool_)):
            raise ConfigError(f"must be true, false or null (follow the level), got {value!r}", field=name)
        if value:
            chosen[name] = value
        else:
            chosen.pop(name, None)
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ConfigError(f"must be a non-negative integer or null, got {seed!r}", field="seed")
    names = tuple(n for n in _TRANSFORMS if n in chosen)
    if not names:
        return None
    A = _import_albumentations()
    compose = A.Compose([_TRANSFORMS[n](A, int(image_size), chosen[n]) for n in names], seed=seed)
    return Augment(compose, level=level, names=names, seed=seed)


def augment_batch(
    images: np.ndarray,
    augment: Callable[[np.ndarray], np.ndarray] | None,
    *,
    pool: Executor | None = None,
) -> np.ndarray:
    """Apply ``augment`` to every image of a uint8 batch ``(B, H, W, C)``; returns a new array.

    With an ``Augment`` the batch is cut into fixed chunks, each with its own seed drawn from
    the augment's seed, so the result is the same with or without ``pool``. OpenCV releases
    the GIL, so a ``ThreadPoolExecutor`` speeds up large images (224 px: about 1.4-1.75x with
    2 threads on 2 cores); at 28 px the work is mostly albumentations' Python and a pool gains
    nothing (``bench/augment.py``). Any other callable is mapped as is.

    Args:
        images: ``(B, H, W, C)`` uint8, e.g. a slice of a memory-mapped cache split.
        augment: what ``build_augment`` returned (``None``: a plain copy).
        pool: an executor to spread chunks over (``concurrent.futures``).

    Example:
        >>> from concurrent.futures import ThreadPoolExecutor
        >>> aug = build_augment("simple", image_size=28, seed=0)
        >>> with ThreadPoolExecutor(2) as pool:
        ...     out = augment_batch(np.zeros((64, 28, 28, 1), np.uint8), aug, pool=pool)
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] not in (1, 3):
        raise ValueError(f"augment_batch expects uint8 (B, H, W, C) with C in {{1, 3}}, got {images.dtype} {images.shape}")
    out = np.empty(images.shape, dtype=np.uint8)
    if augment is None:
        out[...] = images
        return out
    n = len(images)
    starts = list(range(0, n, _CHUNK))
    if isinstance(augment, Augment):
        seeds = augment._chunk_seeds(len(starts))
        work = [(lambda s=s, seed=seed: augment._run_chunk(images, out, s, min(s + _CHUNK, n), seed)) for s, seed in zip(starts, seeds)]
    else:
        def run(s: int) -> None:
            for i in range(s, min(s + _CHUNK, n)):
                out[i] = np.asarray(augment(images[i])).reshape(images.shape[1:])

        work = [(lambda s=s: run(s)) for s in starts]
    if pool is None:
        for w in work:
            w()
    else:
        for future in [pool.submit(w) for w in work]:
            future.result()  # re-raises a worker's error here
    return out


# --- preprocessing, applied once when the cache is built -----------------------------------


def preprocess(
    img: np.ndarray,
    *,
    clahe: bool = False,
    clahe_clip: float = 2.0,
    clahe_grid: int = 8,
    border_crop: bool = False,
    border_threshold: int = 10,
) -> np.ndarray:
    """Deterministic medical preprocessing of one uint8 image, before it is resized.

    ``border_crop`` first (the black frame of a fundus photograph would otherwise take part
    in CLAHE's histograms): crop to the bounding box of pixels brighter than
    ``border_threshold`` in the grey image, or keep the image when none is. Then ``clahe``:
    contrast-limited adaptive histogram equalisation, on the L channel of LAB for colour.

    Args:
        img: uint8 ``(H, W)``, ``(H, W, 1)`` or ``(H, W, 3)`` (RGB).
        clahe: apply CLAHE.
        clahe_clip: CLAHE clip limit (OpenCV's ``clipLimit``).
        clahe_grid: tiles per side (OpenCV's ``tileGridSize``).
        border_crop: crop away a dark border.
        border_threshold: grey level (0..255) a pixel must exceed to count as image.

    Returns:
        A new uint8 image with the same channel layout (smaller when cropped).

    Example:
        >>> fundus = np.zeros((100, 120, 3), np.uint8)
        >>> fundus[10:90, 20:100] = 128
        >>> preprocess(fundus, border_crop=True, clahe=True).shape
        (80, 80, 3)
    """
    import cv2

    img = np.asarray(img)
    if img.dtype != np.uint8 or not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (1, 3))):
        raise ValueError(f"preprocess expects a uint8 (H, W) or (H, W, 3) image, got {img.dtype} {img.shape}")
    if not (isinstance(clahe_clip, (int, float)) and clahe_clip > 0):
        raise ConfigError(f"must be > 0, got {clahe_clip!r}", field="clahe_clip")
    if isinstance(clahe_grid, bool) or not isinstance(clahe_grid, (int, np.integer)) or clahe_grid < 1:
        raise ConfigError(f"must be a positive integer, got {clahe_grid!r}", field="clahe_grid")
    if isinstance(border_threshold, bool) or not isinstance(border_threshold, (int, np.integer)) or not 0 <= border_threshold < 255:
        raise ConfigError(f"must be an integer in [0, 254], got {border_threshold!r}", field="border_threshold")
    out = img
    if border_crop:
        grey = cv2.cvtColor(out, cv2.COLOR_RGB2GRAY) if out.ndim == 3 and out.shape[2] == 3 else out.reshape(out.shape[:2])
        mask = grey > border_threshold
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        if rows.size:
            out = out[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    if clahe:
        op = cv2.createCLAHE(clipLimit=float(clahe_clip), tileGridSize=(int(clahe_grid), int(clahe_grid)))
        if out.ndim == 3 and out.shape[2] == 3:
            lab = cv2.cvtColor(np.ascontiguousarray(out), cv2.COLOR_RGB2LAB)
            lab[:, :, 0] = op.apply(np.ascontiguousarray(lab[:, :, 0]))
            out = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
        else:
            out = op.apply(np.ascontiguousarray(out.reshape(out.shape[:2]))).reshape(out.shape)
    if np.shares_memory(out, img):  # nothing changed, or a crop view: never hand back the caller's buffer
        out = out.copy()
    return np.ascontiguousarray(out)


# --- CutMix / MixUp -------------------------------------------------------------------------

_NP_GLOBAL_LOCK = threading.Lock()


def mix_batch(
    x: torch.Tensor,
    target: torch.Tensor,
    *,
    num_classes: int,
    multilabel: bool,
    cutmix: float = 0.0,
    mixup: float = 0.0,
    alpha: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """CutMix or MixUp a batch ``(N, C, H, W)`` with a random partner per sample, mixing targets alike.

    ``cutmix`` and ``mixup`` are the probabilities that each fires for this batch; when both
    do, one of them is picked with equal odds. lambda ~ Beta(alpha, alpha). CutMix pastes a
    box of the partner (timm's ``cutmix_bbox_and_lam``) and weighs the partner's target by the
    pasted area after clipping the box to the image; MixUp blends
    ``lam * x + (1 - lam) * x[perm]``.

    Args:
        x: the image batch ``(N, C, H, W)``; floating point for MixUp.
        target: single-label ``(N,)`` int64 class indices, or multi-label ``(N, K)`` float
            in {0, 1} with -1 for unknown (masked) entries.
        num_classes: K.
        multilabel: which kind ``target`` is.
        cutmix: probability of CutMix, in [0, 1].
        mixup: probability of MixUp, in [0, 1].
        alpha: Beta distribution parameter, > 0.
        generator: a ``torch.Generator`` for reproducible mixing (default: torch's global RNG).

    Returns:
        ``(x, target)``: the mixed batch (``x`` itself when nothing fired) and float32
        ``(N, K)`` targets: soft (one-hot when nothing fired) for single-label; for
        multi-label the mixed values, with -1 wherever either sample with a non-zero weight
        is masked.

    Example:
        >>> import torch
        >>> x, y = torch.rand(8, 3, 28, 28), torch.randint(0, 2, (8,))
        >>> xb, yb = mix_batch(x, y, num_classes=2, multilabel=False, cutmix=0.5, mixup=0.5)
        >>> yb.shape
        torch.Size([8, 2])
    """
    import torch
    from timm.data.mixup import cutmix_bbox_and_lam, one_hot

    for name, p in (("cutmix", cutmix), ("mixup", mixup)):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ConfigError(f"must be a probability in [0, 1], got {p!r}", field=name)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        raise ConfigError(f"must be > 0, got {alpha!r}", field="mix_alpha")
    n = x.shape[0]
    if x.ndim != 4:
        raise ValueError(f"mix_batch expects x shaped (N, C, H, W), got {tuple(x.shape)}")
    if multilabel:
        if target.ndim != 2 or tuple(target.shape) != (n, num_classes):
            raise ValueError(f"multi-label target must be ({n}, {num_classes}), got {tuple(target.shape)}")
        y = target.to(torch.float32)
    else:
        if target.ndim != 1 or target.shape[0] != n or target.is_floating_point():
            raise ValueError(f"single-label target must be ({n},) integer class indices, got {target.dtype} {tuple(target.shape)}")
        y = one_hot(target, num_classes).to(torch.float32)
    if n < 2 or (cutmix == 0 and mixup == 0):
        return x, y

    device = generator.device if generator is not None else torch.device("cpu")
    u = torch.rand(3, generator=generator, device=device).tolist()
    fire_cutmix, fire_mixup = u[0] < cutmix, u[1] < mixup
    if fire_cutmix and fire_mixup:
        fire_cutmix, fire_mixup = (True, False) if u[2] < 0.5 else (False, True)
    if not (fire_cutmix or fire_mixup):
        return x, y
    perm = torch.randperm(n, generator=generator, device=device).to(x.device)
    # timm draws its box from numpy's global RNG: derive a numpy stream from torch's so one
    # seed (the generator, or torch.manual_seed) fixes everything.
    rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=generator, device=device)))
    lam = float(rng.beta(alpha, alpha))
    if fire_cutmix:
        with _NP_GLOBAL_LOCK:
            state = np.random.get_state()
            np.random.seed(int(rng.integers(0, 2**32)))
            try:
                (yl, yh, xl, xh), lam = cutmix_bbox_and_lam(tuple(x.shape), lam, correct_lam=True)
            finally:
                np.random.set_state(state)  # leave everybody else's numpy stream where it was
        lam = float(lam)
        yl, yh, xl, xh = int(yl), int(yh), int(xl), int(xh)
        mixed = x.clone()
        mixed[:, :, yl:yh, xl:xh] = x[perm, :, yl:yh, xl:xh]
    else:
        if not x.is_floating_point():
            raise ValueError(f"MixUp needs a floating-point batch, got {x.dtype}")
        mixed = x.mul(lam).add_(x[perm], alpha=1.0 - lam)
    perm_y = perm.to(y.device)
    y_mixed = y * lam + y[perm_y] * (1.0 - lam)
    if multilabel:
        # Unknown stays unknown: a label missing in a sample that contributes is missing in the mix.
        masked = ((y < 0) & (lam > 0)) | ((y[perm_y] < 0) & (lam < 1))
        y_mixed = y_mixed.masked_fill(masked, -1.0)
    return mixed, y_mixed
