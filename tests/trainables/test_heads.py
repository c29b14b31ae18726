"""Heads: every registered head on feature maps and on tiny timm backbones, the attention doing what
the SE and CBAM papers describe, token backbones (ViT), local weights, and the errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trainables._errors import ConfigError
from trainables._heads import HEADS, Classifier, build_classifier, create_head

C, K = 64, 3
CONV_BACKBONES = ["test_resnet", "test_efficientnet"]


def feature_map(n: int = 2, c: int = C, size: int = 6, *, seed: int = 0) -> torch.Tensor:
    # Positive so that output / input recovers the attention factors.
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, size, size, generator=g) + 0.5


def images(n: int, in_chans: int, size: int = 32) -> torch.Tensor:
    return torch.randn(n, in_chans, size, size, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------------------ the registry


@pytest.mark.parametrize("name", sorted(HEADS))
def test_head_maps_feature_map_to_logits_with_gradients(name: str) -> None:
    head = create_head(name, in_features=C, num_classes=K, drop_rate=0.2)
    x = feature_map().requires_grad_(True)
    out = head(x)
    assert out.shape == (2, K)
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in head.parameters() if p.requires_grad)
    assert head.drop.p == 0.2


def test_linear_head_is_gap_then_linear_and_takes_pooled_features() -> None:
    head = create_head("linear", in_features=C, num_classes=K).eval()
    x = feature_map()
    expected = F.linear(x.mean((2, 3)), head.fc.weight, head.fc.bias)
    torch.testing.assert_close(head(x), expected)
    torch.testing.assert_close(head(x.mean((2, 3))), expected)


# ------------------------------------------------------------------------------------ SE (Hu et al. 2018)


def test_se_rescales_each_channel_by_a_factor_in_0_1_constant_over_space() -> None:
    head = create_head("se", in_features=C, num_classes=K).eval()
    x = feature_map()
    factor = head.attention(x) / x
    assert ((factor > 0) & (factor < 1)).all()
    torch.testing.assert_close(factor, factor[:, :, :1, :1].expand_as(factor))  # one factor per (sample, channel)
    # ... and it is the excitation of the squeezed descriptor: sigmoid(W2 relu(W1 gap(x))).
    att = head.attention
    squeezed = x.mean((2, 3))
    hidden = torch.relu(F.linear(squeezed, att.fc1.weight.flatten(1), att.fc1.bias))
    excitation = torch.sigmoid(F.linear(hidden, att.fc2.weight.flatten(1), att.fc2.bias))
    torch.testing.assert_close(factor[:, :, 0, 0], excitation)
    # The factors differ between channels and samples (attention, not a constant scale).
    assert excitation.std(1).min() > 0 and (excitation[0] - excitation[1]).abs().max() > 0


@pytest.mark.parametrize("reduction", [4, 16])
def test_se_bottleneck_has_c_over_r_units(reduction: int) -> None:
    head = create_head("se", in_features=C, num_classes=K, reduction=reduction)
    hidden = C // reduction
    assert sum(p.numel() for p in head.attention.parameters()) == 2 * C * hidden + hidden + C
    assert head.attention.fc1.out_channels == hidden


# ------------------------------------------------------------------------------------ CBAM (Woo et al. 2018)


def test_cbam_channel_attention_uses_avg_and_max_through_one_shared_mlp() -> None:
    head = create_head("cbam", in_features=C, num_classes=K, reduction=8).eval()
    channel = head.attention.channel
    x = feature_map()

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return F.linear(torch.relu(F.linear(v, channel.fc1.weight.flatten(1))), channel.fc2.weight.flatten(1))

    expected = torch.sigmoid(mlp(x.mean((2, 3))) + mlp(x.amax((2, 3))))
    torch.testing.assert_close(channel(x), x * expected[:, :, None, None])
    assert sum(p.numel() for p in channel.parameters()) == 2 * C * (C // 8)  # one MLP, shared


def test_cbam_spatial_attention_is_a_conv_over_channel_avg_and_max_maps() -> None:
    head = create_head("cbam", in_features=C, num_classes=K).eval()  # eval: the BN uses running stats
    spatial = head.attention.spatial
    with torch.no_grad():  # a 7x7 filter that is not near-zero, and not so large that the sigmoid saturates
        weight = spatial.conv.conv.weight
        weight.copy_(0.1 * torch.randn(weight.shape, generator=torch.Generator().manual_seed(3)))
    y = feature_map(size=8)
    attention = spatial(y) / y
    # One factor per position, shared by all channels, in (0, 1), varying over H and W.
    torch.testing.assert_close(attention, attention[:, :1].expand_as(attention))
    amap = attention[:, 0]
    assert ((amap > 0) & (amap < 1)).all() and amap.flatten(1).std(1).min() > 1e-3
    expected = torch.sigmoid(spatial.conv(torch.cat([y.mean(1, keepdim=True), y.amax(1, keepdim=True)], 1)))
    torch.testing.assert_close(amap, expected[:, 0])
    # Only the channel mean and max at each position matter: shuffling channels leaves the map as is.
    shuffled = y[:, torch.randperm(C, generator=torch.Generator().manual_seed(2))]
    torch.testing.assert_close(spatial(shuffled) / shuffled, attention[:, :1].expand_as(attention))


def test_cbam_applies_channel_then_spatial_attention_before_pooling() -> None:
    head = create_head("cbam", in_features=C, num_classes=K).eval()
    x = feature_map()
    attended = head.attention.spatial(head.attention.channel(x))
    torch.testing.assert_close(head(x), head.fc(attended.mean((2, 3))))


# ------------------------------------------------------------------------------------ on timm backbones


@pytest.mark.parametrize("in_chans", [1, 3])
@pytest.mark.parametrize("name", sorted(HEADS))
@pytest.mark.parametrize("backbone", CONV_BACKBONES)
def test_classifier_on_conv_backbone(backbone: str, name: str, in_chans: int) -> None:
    model = build_classifier(backbone, head=name, num_classes=K, in_chans=in_chans, drop_rate=0.1)
    assert isinstance(model, Classifier)
    x = images(2, in_chans)
    features = model.backbone(x)
    assert features.ndim == 4 and features.shape[1] == model.backbone.num_features  # the map, unpooled
    out = model(x)
    assert out.shape == (2, K)
    out.sum().backward()
    stem = next(p for p in model.backbone.parameters() if p.ndim == 4)  # the first conv
    assert stem.shape[1] == in_chans and stem.grad is not None and stem.grad.abs().sum() > 0
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_dropout_is_in_the_head_only() -> None:
    model = build_classifier("test_resnet", head="se", num_classes=K, in_chans=1, drop_rate=0.5).train()
    x = images(4, 1)
    assert model.head.drop.p == 0.5
    torch.testing.assert_close(model.backbone(x), model.backbone(x))  # no dropout on the map


def test_linear_head_on_vit_uses_the_backbones_own_pooling() -> None:
    model = build_classifier("test_vit", head="linear", num_classes=K, in_chans=3)
    x = images(2, 3)
    pooled = model.backbone(x)
    assert pooled.shape == (2, model.backbone.num_features)  # timm's pooling (+ fc_norm), not tokens
    out = model(x)
    assert out.shape == (2, K)
    out.sum().backward()
    assert model.backbone.patch_embed.proj.weight.grad.abs().sum() > 0


def test_pretrained_path_loads_local_weights(tmp_path) -> None:
    import timm

    source = timm.create_model("test_resnet", in_chans=3)  # a full model, as hub weights come
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = build_classifier("test_resnet", head="cbam", num_classes=K, in_chans=3, pretrained_path=str(path))
    loaded = model.backbone.state_dict()
    assert loaded and all(torch.equal(loaded[k], source.state_dict()[k]) for k in loaded)


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("sse", {}, "^head: Unknown head 'sse'; valid: cbam, linear, se; did you mean 'se'"),
        ("se", {"reduction": 0}, "reduction: must be an integer >= 1"),
        ("linear", {"num_classes": 0}, "num_classes: must be an integer >= 1"),
        ("cbam", {"drop_rate": 1.0}, r"drop_rate: must be a number in \[0, 1\)"),
    ],
)
def test_create_head_bad_config_raises_config_error(name: str, options: dict, match: str) -> None:
    options = {"in_features": C, "num_classes": K, **options}
    with pytest.raises(ConfigError, match=match):
        create_head(name, **options)


@pytest.mark.parametrize(
    ("backbone", "options", "match"),
    [
        ("test_resnet", {"head": "attn"}, "^head: Unknown head 'attn'; valid: cbam, linear, se"),
        ("test_vit", {"head": "se"}, "head 'se' needs a convolutional feature map.*'test_vit'.*use head 'linear'"),
        ("test_vit", {"head": "cbam", "in_chans": 1}, "head 'cbam' needs a convolutional feature map.*'test_vit'"),
        ("test_resnett", {"head": "linear"}, "unknown timm backbone 'test_resnett'"),
        ("test_resnet", {"head": "se", "pretrained_path": "/no/such.pth"}, "pretrained_path: weights file"),
    ],
)
def test_build_classifier_bad_config_raises_config_error(backbone: str, options: dict, match: str) -> None:
    options = {"num_classes": K, "in_chans": 3, **options}
    with pytest.raises(ConfigError, match=match):
        build_classifier(backbone, **options)


@pytest.mark.parametrize("name", ["se", "cbam"])
def test_attention_head_refuses_pooled_features(name: str) -> None:
    with pytest.raises(ValueError, match="needs a feature map"):
        create_head(name, in_features=C, num_classes=K)(torch.randn(2, C))
