"""Grad-CAM of a bundle: one PNG with the input, each member's overlay and the combined map."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from ensemble import load
from ensemble.explain import PANEL_PX, TITLE_PX, explain, last_conv_layer

from .conftest import run_cli

pytestmark = pytest.mark.ray  # the shared sweep starts a local Ray


def test_explain_writes_a_png_of_the_expected_size(sweep, tmp_path):
    from ensemble.explain import main

    image = sorted(sweep.images.rglob("*.png"))[0]
    out = tmp_path / "cam.png"
    rc, stdout, err = run_cli(main, [str(sweep.bundle), str(image), "--out", str(out)])
    assert rc == 0, err
    n_members = len(load(sweep.bundle).members)
    with Image.open(out) as png:
        assert png.size == (PANEL_PX * (n_members + 2), PANEL_PX + TITLE_PX)
        assert np.asarray(png.convert("L")).std() > 0  # not a blank canvas
    assert "Grad-CAM for class" in stdout and str(out) in stdout


def test_the_combined_map_is_the_weighted_mean_of_the_members(sweep):
    bundle = load(sweep.bundle)
    image = sorted(sweep.images.rglob("*.png"))[-1]
    exp = explain(bundle, str(image), target="pneumonia")
    assert exp.target == "pneumonia" and len(exp.maps) == len(bundle.members)
    assert all(m.shape == (32, 32) and m.min() >= 0 and m.max() <= 1 for m in exp.maps)
    expected = sum(w * m for w, m in zip(exp.weights, exp.maps))
    assert np.allclose(exp.combined, expected) and sum(exp.weights) == pytest.approx(1.0)
    # The smoke sweep's combiner varies from run to run; greedy and best (a one-hot) carry member weights.
    if bundle.combiner.combiner_ in ("greedy", "best"):
        assert exp.weights == pytest.approx(bundle.combiner.params_["weights"])
    else:
        assert exp.weights == pytest.approx([1 / len(exp.maps)] * len(exp.maps))


def test_the_target_layer_is_the_last_convolution_that_still_sees_space(sweep):
    bundle = load(sweep.bundle)
    x = bundle.model_input(bundle.prepare([np.zeros((32, 32), np.uint8)]), 0)
    name, layer = last_conv_layer(bundle.models[0], x)
    assert isinstance(layer, __import__("torch").nn.Conv2d)
    assert name.startswith("layer3")  # test_resnet's layer4 is 1x1 at 32 px


def test_explain_an_unknown_class_fails_with_one_line(sweep, tmp_path):
    from ensemble.explain import main

    image = sorted(sweep.images.rglob("*.png"))[0]
    rc, _, err = run_cli(main, [str(sweep.bundle), str(image), "--out", str(tmp_path / "c.png"), "--class", "pneumonie"])
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "did you mean 'pneumonia'" in err


def test_a_member_that_predicts_over_flips_is_explained_over_them(sweep):
    bundle = load(sweep.bundle)
    assert all(spec.tta == ("hflip",) for spec in bundle.specs)  # smoke.yaml trains with horizontal flips
    image = np.asarray(Image.open(sorted(sweep.images.rglob("*.png"))[-1]))
    mirrored = np.ascontiguousarray(image[:, ::-1])
    own, flipped = explain(bundle, image, target="pneumonia"), explain(bundle, mirrored, target="pneumonia")
    # Each map is the mean over the image and its mirror, each flipped back: the mirror's map is the mirrored map.
    for m, f in zip(own.maps, flipped.maps):
        assert np.allclose(f, m[:, ::-1], atol=1e-5)
    assert np.allclose(flipped.probs, own.probs, atol=1e-6)
    # The image alone has no such symmetry (a trained convolution is not mirror-symmetric).
    alone, alone_flipped = explain(bundle, image, target="pneumonia", tta=False), explain(bundle, mirrored, target="pneumonia", tta=False)
    assert not all(np.allclose(f, m[:, ::-1], atol=1e-3) for m, f in zip(alone.maps, alone_flipped.maps))
    assert np.allclose(alone.member_probs, bundle.member_proba([image], tta=False)[:, 0], atol=1e-6)
