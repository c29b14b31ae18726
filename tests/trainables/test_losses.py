"""Losses: the per-sample contract for every registered loss and task, the identities each loss must
satisfy (focal at gamma 0 is CE, ASL without focusing is BCE, ...), agreement with torch/timm/torchvision,
masking of unknown multi-label entries, and the errors."""

from __future__ import annotations

import inspect

import pytest
import torch
import torch.nn.functional as F

from trainables._errors import ConfigError
from trainables._losses import LOSSES, MULTI_LABEL, SINGLE_LABEL, create_loss

N, K = 6, 4
WEIGHTS = [0.5, 1.0, 2.0, 3.0]
VALID = [(name, task) for name, entry in sorted(LOSSES.items()) for task in entry.meta["tasks"]]
SINGLE_LOSSES = sorted(n for n, e in LOSSES.items() if set(SINGLE_LABEL) & set(e.meta["tasks"]))
MULTI_LOSSES = sorted(n for n, e in LOSSES.items() if "multi-label" in e.meta["tasks"])


def n_classes(task: str) -> int:
    return 2 if task == "binary" else K


def make(name: str, task: str, **options) -> torch.nn.Module:
    options.setdefault("class_weights", WEIGHTS[: n_classes(task)] if name == "weighted_ce" else None)
    return create_loss(name, task=task, num_classes=n_classes(task), **options)


def logits(k: int = K, *, seed: int = 0, scale: float = 2.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, k, generator=g) * scale).requires_grad_(True)


def index_target(k: int = K, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, k, (N,), generator=torch.Generator().manual_seed(seed))


def soft_target(k: int = K, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(N, k, generator=g) * 2, dim=1)


def multilabel_target(k: int = K, seed: int = 3) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (N, k), generator=g).float()
    y[0, 1] = -1.0  # one unknown label
    y[1, 0] = 0.7  # a soft one (e.g. after MixUp)
    y[2] = -1.0  # a sample with no known label
    return y


def targets_for(task: str) -> list[torch.Tensor]:
    k = n_classes(task)
    return [multilabel_target(k)] if task in MULTI_LABEL else [index_target(k), soft_target(k)]


# ------------------------------------------------------------------------------------ contract


def test_tasks_are_covered() -> None:
    # Names and option contracts are tests/test_registries.py's; here: every task has a loss.
    covered = {task for _, entry in LOSSES.items() for task in entry.meta["tasks"]}
    assert covered == set(SINGLE_LABEL) | set(MULTI_LABEL)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize(("name", "task"), VALID)
def test_per_sample_loss_shape_and_finite_gradient(name: str, task: str, label_smoothing: float) -> None:
    loss_fn = make(name, task, label_smoothing=label_smoothing)
    for target in targets_for(task):
        x = logits(n_classes(task))
        loss = loss_fn(x, target)
        assert loss.shape == (N,) and loss.dtype == torch.float32
        assert torch.isfinite(loss).all() and (loss >= 0).all()
        loss.mean().backward()
        assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "task"), VALID)
def test_extreme_and_low_precision_logits_stay_finite(name: str, task: str) -> None:
    # Saturated logits (p == 1 in float32) and bf16 logits under autocast must not give nan/inf.
    options = {"gamma": 0.5, "gamma_pos": 0.5, "gamma_neg": 0.5, "label_smoothing": 0.1}
    loss_fn = make(name, task, **{k: v for k, v in options.items() if k in LOSSES[name].options})
    for target in targets_for(task):
        x = (logits(n_classes(task), scale=60.0).detach().bfloat16()).requires_grad_(True)
        loss = loss_fn(x, target)
        assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
        loss.sum().backward()
        assert torch.isfinite(x.grad.float()).all()


@pytest.mark.parametrize("name", SINGLE_LOSSES)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.2])
def test_one_hot_soft_target_equals_index_target(name: str, label_smoothing: float) -> None:
    loss_fn = make(name, "multi-class", label_smoothing=label_smoothing)
    x, y = logits(), index_target()
    torch.testing.assert_close(loss_fn(x, F.one_hot(y, K).float()), loss_fn(x, y))


# ------------------------------------------------------------------------------------ identities


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_ce_and_weighted_ce_match_torch_cross_entropy(label_smoothing: float) -> None:
    x, y = logits(), index_target()
    ce = make("ce", "multi-class", label_smoothing=label_smoothing)
    weighted = make("weighted_ce", "multi-class", label_smoothing=label_smoothing)
    expected = F.cross_entropy(x, y, label_smoothing=label_smoothing, reduction="none")
    expected_w = F.cross_entropy(x, y, weight=torch.tensor(WEIGHTS), label_smoothing=label_smoothing, reduction="none")
    torch.testing.assert_close(ce(x, y), expected)
    torch.testing.assert_close(weighted(x, y), expected_w)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_focal_with_gamma_0_is_cross_entropy(label_smoothing: float) -> None:
    x = logits()
    focal = make("focal", "multi-class", gamma=0.0, label_smoothing=label_smoothing)
    ce = make("ce", "multi-class", label_smoothing=label_smoothing)
    for y in (index_target(), soft_target()):
        torch.testing.assert_close(focal(x, y), ce(x, y))
    # Weighted: focal's class_weights act like weighted_ce's.
    focal_w = make("focal", "multi-class", gamma=0.0, class_weights=WEIGHTS, label_smoothing=label_smoothing)
    weighted = make("weighted_ce", "multi-class", label_smoothing=label_smoothing)
    torch.testing.assert_close(focal_w(x, index_target()), weighted(x, index_target()))


def test_focal_down_weights_easy_samples() -> None:
    # Lin et al.: FL / CE = (1 - p_t)^gamma, small for well-classified samples, near 1 for hard ones.
    y = torch.tensor([0, 0])
    x = torch.tensor([[4.0, -4.0, -4.0, -4.0], [-2.0, 2.0, 0.0, 0.0]])
    focal = make("focal", "multi-class", gamma=2.0)(x, y)
    ce = make("ce", "multi-class")(x, y)
    p_t = torch.softmax(x, 1)[:, 0]
    torch.testing.assert_close(focal / ce, (1 - p_t) ** 2)
    assert (focal / ce)[0] < 1e-3 < 0.9 < (focal / ce)[1]


def test_binary_focal_alpha_weights_positive_class() -> None:
    x, y = logits(2), index_target(2)
    with_alpha = create_loss("focal", task="binary", num_classes=2, alpha=0.25)
    as_weights = create_loss("focal", task="binary", num_classes=2, class_weights=[0.75, 0.25])
    torch.testing.assert_close(with_alpha(x, y), as_weights(x, y))


def test_asl_without_focusing_or_clip_is_bce() -> None:
    x = logits()
    y = torch.randint(0, 2, (N, K), generator=torch.Generator().manual_seed(4)).float()
    asl = make("asl", "multi-label", gamma_pos=0.0, gamma_neg=0.0, clip=0.0, class_weights=WEIGHTS)
    bce = make("bce", "multi-label", class_weights=WEIGHTS)
    expected = F.binary_cross_entropy_with_logits(x, y, pos_weight=torch.tensor(WEIGHTS), reduction="none").mean(1)
    torch.testing.assert_close(bce(x, y), expected)
    torch.testing.assert_close(asl(x, y), expected)


def test_multilabel_focal_with_gamma_0_is_bce_and_label_smoothing_moves_targets_to_half() -> None:
    x = logits()
    y = torch.randint(0, 2, (N, K), generator=torch.Generator().manual_seed(5)).float()
    smoothed = y * 0.8 + 0.1
    expected = F.binary_cross_entropy_with_logits(x, smoothed, reduction="none").mean(1)
    torch.testing.assert_close(make("bce", "multi-label", label_smoothing=0.2)(x, y), expected)
    torch.testing.assert_close(make("focal", "multi-label", gamma=0.0, label_smoothing=0.2)(x, y), expected)


@pytest.mark.parametrize(
    ("gamma_pos", "gamma_neg", "clip"), [(0.0, 4.0, 0.05), (1.0, 4.0, 0.05), (0.0, 2.0, 0.0), (2.0, 2.0, 0.2)]
)
def test_asl_matches_timm(gamma_pos: float, gamma_neg: float, clip: float) -> None:
    from timm.loss import AsymmetricLossMultiLabel

    # timm: reduction "sum" (or, in older timm, always the sum) over batch and labels; keeps grads
    # through the focusing weights by default, as ours does.
    kwargs = {"reduction": "sum"} if "reduction" in inspect.signature(AsymmetricLossMultiLabel).parameters else {}
    reference = AsymmetricLossMultiLabel(gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip, **kwargs)
    y = torch.randint(0, 2, (N, K), generator=torch.Generator().manual_seed(6)).float()
    x_ours, x_timm = logits(), logits()
    ours = make("asl", "multi-label", gamma_pos=gamma_pos, gamma_neg=gamma_neg, clip=clip)(x_ours, y).sum() * K
    theirs = reference(x_timm, y)
    torch.testing.assert_close(ours, theirs)
    ours.backward()
    theirs.backward()
    torch.testing.assert_close(x_ours.grad, x_timm.grad)


def test_multilabel_focal_matches_torchvision() -> None:
    from torchvision.ops import sigmoid_focal_loss

    x = logits()
    y = torch.randint(0, 2, (N, K), generator=torch.Generator().manual_seed(7)).float()
    for alpha in (None, 0.25):
        ours = make("focal", "multi-label", gamma=2.0, alpha=alpha)(x, y)
        theirs = sigmoid_focal_loss(x, y, alpha=-1 if alpha is None else alpha, gamma=2.0, reduction="none").mean(1)
        torch.testing.assert_close(ours, theirs)


def test_asl_clip_discards_easy_negatives() -> None:
    # Probability shifting: a negative with p <= clip contributes exactly 0 loss and 0 gradient.
    x = torch.tensor([[-4.0, 3.0]], requires_grad=True)  # p = 0.018 (below clip), 0.95
    y = torch.zeros(1, 2)
    loss = create_loss("asl", task="multi-label", num_classes=2, gamma_neg=4.0, clip=0.05)(x, y)
    loss.sum().backward()
    assert x.grad[0, 0] == 0 and x.grad[0, 1] > 0
    assert loss.item() > 0


# ------------------------------------------------------------------------------------ masking


@pytest.mark.parametrize("name", MULTI_LOSSES)
def test_masked_labels_contribute_nothing(name: str) -> None:
    loss_fn = make(name, "multi-label", label_smoothing=0.1, class_weights=WEIGHTS)
    y = multilabel_target()
    x = logits()
    loss = loss_fn(x, y)
    loss.sum().backward()
    masked = y < 0
    assert (x.grad[masked] == 0).all() and (x.grad[~masked] != 0).any()

    # Changing (even to inf) the logit of an unknown label changes nothing.
    x2 = x.detach().clone()
    x2[masked] = torch.tensor([50.0, -50.0, float("inf"), 3.0, -7.0])[: int(masked.sum())]
    torch.testing.assert_close(loss_fn(x2, y), loss.detach())

    # Per sample: the mean over its known labels; 0 for a sample with none.
    assert loss[2] == 0
    known = ~masked[0]
    sub = create_loss(
        name, task="multi-label", num_classes=int(known.sum()), label_smoothing=0.1,
        class_weights=[w for w, k in zip(WEIGHTS, known) if k],
    )
    torch.testing.assert_close(loss[0], sub(x[0:1, known], y[0:1, known])[0])


# ------------------------------------------------------------------------------------ errors

ALL = "asl, bce, ce, focal, weighted_ce"


@pytest.mark.parametrize(
    ("name", "options", "match"),
    [
        ("focla", {"task": "multi-class"}, f"^loss: Unknown loss 'focla'; valid: {ALL}; did you mean 'focal'\\?$"),
        ("Focal-Loss", {"task": "binary"}, f"^loss: Unknown loss 'Focal-Loss'; valid: {ALL}"),
        ("ce", {"task": "multiclass"}, "^Unknown task 'multiclass'; valid: binary, multi-class, multi-label, ordinal"),
        ("ce", {"task": "multi-label"}, "^loss 'ce' does not fit task 'multi-label'; valid for multi-label: asl, bce, focal$"),
        ("weighted_ce", {"task": "multi-label"}, "valid for multi-label: asl, bce, focal$"),
        ("bce", {"task": "binary"}, "loss 'bce' does not fit task 'binary'; valid for binary: ce, focal, weighted_ce$"),
        ("asl", {"task": "ordinal"}, "valid for ordinal: ce, focal, weighted_ce$"),
        ("weighted_ce", {"task": "multi-class"}, "needs class_weights .*4 here.*use loss 'ce'"),
        ("weighted_ce", {"task": "multi-class", "class_weights": [1.0, 2.0]}, "class_weights: must be 4 finite"),
        ("bce", {"task": "multi-label", "class_weights": [1.0, -1.0, 1.0, 1.0]}, "class_weights: must be 4"),
        ("ce", {"task": "multi-class", "label_smoothing": 1.0}, r"label_smoothing: must be a number in \[0, 1\)"),
        ("focal", {"task": "multi-class", "gamma": -1.0}, "gamma: must be a number >= 0"),
        ("focal", {"task": "multi-label", "alpha": 1.5}, r"alpha: must be a number in \[0, 1\]"),
        ("focal", {"task": "multi-class", "alpha": 0.25}, "needs task 'binary' or 'multi-label'.*class_weights"),
        ("asl", {"task": "multi-label", "clip": 1.0}, r"clip: must be a number in \[0, 1\)"),
        ("asl", {"task": "multi-label", "gamma_neg": float("nan")}, "gamma_neg: must be a number >= 0"),
        ("ce", {"task": "binary", "num_classes": 3}, "task 'binary' has 2 classes"),
        ("ce", {"task": "multi-class", "gamma": 2.0}, r"^gamma: unknown option 'gamma' for loss 'ce'; valid: label_smoothing$"),
        ("ce", {"task": "multi-class", "num_classes": 1}, "num_classes: must be an integer >= 2"),
    ],
)
def test_bad_config_raises_config_error(name: str, options: dict, match: str) -> None:
    options.setdefault("num_classes", n_classes(options["task"]))
    with pytest.raises(ConfigError, match=match):
        create_loss(name, **options)


@pytest.mark.parametrize(
    ("name", "task", "target"),
    [
        ("ce", "multi-class", torch.zeros(N)),  # float class indices
        ("focal", "multi-class", torch.zeros(N, K + 1)),
        ("bce", "multi-label", torch.zeros(N)),
    ],
)
def test_wrong_target_shape_raises(name: str, task: str, target: torch.Tensor) -> None:
    with pytest.raises(ValueError, match="target"):
        make(name, task)(logits(), target)
