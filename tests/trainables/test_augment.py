"""Augmentation levels and switches, medical preprocessing, CutMix/MixUp targets: each test checks an effect."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from trainables._augment import (
    AUGMENT_LEVELS,
    AUGMENT_SWITCHES,
    augment_batch,
    build_augment,
    mix_batch,
    preprocess,
)
from trainables._errors import ConfigError

SIZE = 32


def _blob(channels: int = 1, size: int = SIZE) -> np.ndarray:
    """A smooth off-centre bright disc: every geometric or intensity change shows."""
    yy, xx = np.mgrid[:size, :size]
    img = np.clip(255 - ((yy - 12) ** 2 + (xx - 10) ** 2) * 1.5, 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], channels, axis=2)


def _left_bright(channels: int = 1) -> np.ndarray:
    img = np.zeros((SIZE, SIZE, channels), np.uint8)
    img[:, : SIZE // 2] = 200
    return img


# --- build_augment ----------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("level", [lv for lv in AUGMENT_LEVELS if lv != "none"])
def test_every_level_keeps_shape_and_dtype(level, channels):
    aug = build_augment(level, image_size=SIZE, seed=0)
    img = _blob(channels)
    for _ in range(8):
        out = aug(img)
        assert out.shape == (SIZE, SIZE, channels) and out.dtype == np.uint8
    assert np.array_equal(img, _blob(channels))  # the input is never modified


def test_none_level_is_none_unless_a_switch_turns_something_on():
    assert build_augment("none", image_size=SIZE) is None
    assert build_augment("simple", image_size=SIZE, hflip=False) is None
    assert build_augment("none", image_size=SIZE, noise=True).names == ("noise",)


def test_simple_flip_moves_the_bright_half_when_it_fires():
    aug = build_augment("simple", image_size=SIZE, seed=0)
    img = _left_bright()
    flipped = 0
    for _ in range(40):
        out = aug(img)
        if np.array_equal(out, img):
            continue
        assert np.array_equal(out, img[:, ::-1])  # nothing but a horizontal flip happens
        assert out[:, SIZE // 2 :].min() == 200 and out[:, : SIZE // 2].max() == 0
        flipped += 1
    assert 10 <= flipped <= 30  # p = 0.5


def test_same_seed_same_augmentations_other_seed_differs():
    img = _blob(3)
    a, b, c = (build_augment("advanced", image_size=SIZE, seed=s) for s in (7, 7, 8))
    outs_a = [a(img) for _ in range(6)]
    assert all(np.array_equal(x, b(img)) for x in outs_a)
    assert not all(np.array_equal(x, c(img)) for x in outs_a)


def test_seeded_transforms_fire_independently():
    # albumentations' Compose(seed=s) gives every transform the same seed: both flips would fire together.
    aug = build_augment("none", image_size=SIZE, hflip=True, vflip=True, seed=0)
    img = np.zeros((SIZE, SIZE, 1), np.uint8)
    img[0, 0] = 255
    seen = set()
    for _ in range(40):
        out = aug(img)
        seen.add((bool(out[0, -1, 0] or out[-1, -1, 0]), bool(out[-1, 0, 0] or out[-1, -1, 0])))
    assert seen == {(False, False), (True, False), (False, True), (True, True)}


def test_advanced_changes_images_more_than_simple():
    img = _blob()  # off-centre: a flip alone changes it a lot

    def change(level: str) -> tuple[float, float]:
        aug = build_augment(level, image_size=SIZE, seed=0)
        outs = [aug(img).astype(int) for _ in range(128)]
        plain = np.mean([np.abs(o - img).mean() for o in outs])
        # what is left once a flip is forgiven: 0 for `simple`
        beyond_flip = np.mean([min(np.abs(o - img).mean(), np.abs(o - img[:, ::-1]).mean()) for o in outs])
        return float(plain), float(beyond_flip)

    simple, advanced = change("simple"), change("advanced")
    assert advanced[0] > 1.1 * simple[0]
    assert simple[1] == 0 and advanced[1] > 5


@pytest.mark.parametrize("switch", AUGMENT_SWITCHES)
def test_each_switch_turns_its_transform_on_and_off(switch):
    on = build_augment("none", image_size=SIZE, seed=0, **{switch: True})
    assert on.names == (switch,)
    img = _blob()
    assert any(not np.array_equal(on(img), img) for _ in range(30)), f"{switch} never changed the image"
    off = build_augment("advanced", image_size=SIZE, **{switch: False})
    assert set(off.names) == set(AUGMENT_SWITCHES) - {switch, "vflip"}  # vflip is off at every level


def test_switches_leave_only_what_is_asked():
    aug = build_augment("enhanced", image_size=SIZE, rotate=0, affine=False, brightness_contrast=False)
    assert aug.names == ("hflip",)
    aug = build_augment("simple", image_size=SIZE, rotate=30)
    assert aug.names == ("hflip", "rotate")
    assert aug.compose.transforms[1].limit == (-30.0, 30.0)


def test_augment_batch_same_with_and_without_pool_and_new_array():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, SIZE, SIZE, 1), dtype=np.uint8)
    before = images.copy()
    serial = augment_batch(images, build_augment("advanced", image_size=SIZE, seed=5))
    with ThreadPoolExecutor(2) as pool:
        pooled = augment_batch(images, build_augment("advanced", image_size=SIZE, seed=5), pool=pool)
    assert np.array_equal(serial, pooled)
    assert serial.shape == images.shape and serial.dtype == np.uint8
    assert np.array_equal(images, before) and not np.array_equal(serial, images)
    copied = augment_batch(images, None)
    assert np.array_equal(copied, images) and not np.shares_memory(copied, images)


# --- preprocess ---------------------------------------------------------------------------


def _tile_std(img: np.ndarray, tile: int = 8) -> float:
    """Mean over tile x tile blocks of the per-block standard deviation: local contrast."""
    g = img.astype(np.float64).reshape(img.shape[0] // tile, tile, img.shape[1] // tile, tile, -1)
    return float(g.std(axis=(1, 3)).mean())


@pytest.mark.parametrize("channels", [1, 3])
def test_clahe_raises_local_contrast(channels):
    import cv2

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (64, 64)), (0, 0), 3)
    low = np.clip(110 + texture * 40, 0, 255).astype(np.uint8)  # values within ~25 grey levels
    img = low if channels == 1 else np.stack([low, low // 2 + 40, low], axis=2)
    out = preprocess(img, clahe=True)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert _tile_std(out) > 2 * _tile_std(img)
    assert np.array_equal(preprocess(img, clahe=True), out)  # deterministic


@pytest.mark.parametrize("channels", [1, 3])
def test_border_crop_removes_a_black_border(channels):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 6, size=(100, 120, channels), dtype=np.uint8)  # dark, noisy frame
    img[20:80, 30:100] = rng.integers(40, 220, size=(60, 70, channels), dtype=np.uint8)
    img = img[:, :, 0] if channels == 1 else img
    out = preprocess(img, border_crop=True)
    assert out.shape[:2] == (60, 70) and out.ndim == img.ndim
    assert np.array_equal(out, img[20:80, 30:100])


def test_border_crop_keeps_an_all_dark_image_and_never_touches_the_input():
    for value in (3, 100):  # nothing above the threshold; everything above it (the crop is the whole image)
        img = np.full((20, 20), value, np.uint8)
        out = preprocess(img, border_crop=True)
        assert np.array_equal(out, img) and not np.shares_memory(out, img)


# --- mix_batch ----------------------------------------------------------------------------


def test_cutmix_target_weight_equals_pasted_area_exactly():
    n, h, w = 8, 12, 20  # not square, and boxes often cross the border: clipping matters
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 2, h, w).contiguous()
    y = torch.arange(n)
    for seed in range(12):
        g = torch.Generator().manual_seed(seed)
        xm, ym = mix_batch(x, y, num_classes=n, multilabel=False, cutmix=1.0, generator=g)
        assert ym.shape == (n, n) and ym.dtype == torch.float32
        assert torch.allclose(ym.sum(1), torch.ones(n))
        for i in range(n):
            values, counts = torch.unique(xm[i, 0], return_counts=True)
            fractions = dict(zip(values.long().tolist(), (counts.double() / (h * w)).tolist()))
            expected = {j: ym[i, j].item() for j in range(n) if ym[i, j] > 0}
            assert fractions.keys() == expected.keys()
            for j, frac in fractions.items():
                assert expected[j] == pytest.approx(frac, abs=1e-6)


def test_mixup_target_matches_the_pixel_coefficient():
    n = 6
    # sample i is the indicator of i over n channels: after mixing, channel j holds sample j's weight
    x = torch.eye(n).view(n, n, 1, 1).expand(n, n, 4, 4).contiguous()
    y = torch.arange(n)
    g = torch.Generator().manual_seed(0)
    xm, ym = mix_batch(x, y, num_classes=n, multilabel=False, mixup=1.0, alpha=0.4, generator=g)
    weights = xm.mean(dim=(2, 3))
    assert torch.allclose(weights, ym, atol=1e-6)
    assert not torch.equal(ym, torch.eye(n))  # it did mix


@pytest.mark.parametrize("kind", ["cutmix", "mixup"])
def test_multilabel_masks_propagate(kind):
    n, k = 8, 3
    x = torch.eye(n).view(n, n, 1, 1).expand(n, n, 16, 16).contiguous()
    y = torch.tensor([[1, 0, -1], [0, 1, 0], [-1, -1, 1], [1, 1, 0], [0, -1, 0], [1, 0, 1], [0, 0, 0], [-1, 1, 1]], dtype=torch.float32)
    from_partner = False
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        xm, ym = mix_batch(x, y, num_classes=k, multilabel=True, generator=g, **{kind: 1.0})
        weights = xm.mean(dim=(2, 3)).double()  # weights[i, j]: share of sample j in mixed sample i
        masked = (weights > 0).double() @ (y < 0).double() > 0
        expected = (weights @ y.clamp(min=0).double()).float().masked_fill(masked, -1.0)
        assert torch.allclose(ym, expected, atol=1e-6)
        assert (ym[masked] == -1).all() and (ym[~masked] >= 0).all()
        from_partner |= bool((masked & (y >= 0)).any())
    assert from_partner  # some label known in a sample became unknown through its partner


def test_nothing_fires_gives_one_hot_and_the_same_batch():
    x = torch.rand(4, 1, 8, 8)
    xm, ym = mix_batch(x, torch.tensor([0, 2, 1, 2]), num_classes=3, multilabel=False)
    assert xm is x
    assert torch.equal(ym, torch.eye(3)[[0, 2, 1, 2]])


def test_mix_probability_and_reproducibility():
    x = torch.rand(4, 1, 8, 8)
    y = torch.tensor([0, 1, 0, 1])
    g = torch.Generator().manual_seed(0)
    fired = sum(not torch.equal(mix_batch(x, y, num_classes=2, multilabel=False, cutmix=0.5, generator=g)[0], x) for _ in range(40))
    assert 8 <= fired <= 32
    state = np.random.get_state()[1].copy()
    a = mix_batch(x, y, num_classes=2, multilabel=False, cutmix=0.5, mixup=0.5, generator=torch.Generator().manual_seed(3))
    b = mix_batch(x, y, num_classes=2, multilabel=False, cutmix=0.5, mixup=0.5, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert np.array_equal(np.random.get_state()[1], state)  # numpy's global stream is left alone


# --- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: build_augment("advnced", image_size=28), r"^augment: Unknown augment level 'advnced'; valid: advanced, enhanced, none, simple; did you mean 'advanced' or 'enhanced'\?$"),
        (lambda: build_augment("heavy", image_size=28), r"^augment: Unknown augment level 'heavy'; valid: advanced, enhanced, none, simple$"),
        (lambda: build_augment("simple", image_size=0), r"^image_size: must be a positive integer, got 0$"),
        (lambda: build_augment("simple", image_size=28, hflip="yes"), r"^hflip: must be true, false or null"),
        (lambda: build_augment("simple", image_size=28, rotate=-5), r"^rotate: must be a limit in degrees in \[0, 180\]"),
        (lambda: build_augment("simple", image_size=28, seed=-1), r"^seed: must be a non-negative integer or null, got -1$"),
        (lambda: preprocess(np.zeros((8, 8), np.uint8), clahe=True, clahe_clip=0), r"^clahe_clip: must be > 0"),
        (lambda: preprocess(np.zeros((8, 8), np.uint8), border_threshold=300), r"^border_threshold: must be an integer in \[0, 254\]"),
        (lambda: mix_batch(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), num_classes=2, multilabel=False, cutmix=1.5), r"^cutmix: must be a probability in \[0, 1\], got 1\.5$"),
        (lambda: mix_batch(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.long), num_classes=2, multilabel=False, mixup=1.0, alpha=0), r"^mix_alpha: must be > 0, got 0$"),
    ],
    ids=["typo", "unknown", "image_size", "switch", "rotate", "seed", "clahe_clip", "threshold", "cutmix", "alpha"],
)
def test_bad_input_raises_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()
