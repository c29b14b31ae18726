"""CONTRIBUTING.md's example loss, run as written: it registers, is created with its option checked, trains
one step, reaches ``TrainParams`` as ``poly1_epsilon``, and is gone again afterwards."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trainables import ConfigError, TrainParams, create_loss, list_losses
from trainables._losses import LOSS, loss_options

CONTRIBUTING = Path(__file__).resolve().parents[1] / "CONTRIBUTING.md"


def _example_code() -> str:
    text = CONTRIBUTING.read_text(encoding="utf-8")
    section = text.split("### Example: a loss with one option", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def poly1():
    assert "poly1" not in LOSS
    namespace: dict = {}
    exec(compile(_example_code(), str(CONTRIBUTING), "exec"), namespace)
    try:
        yield namespace
    finally:
        LOSS.unregister("poly1")


def test_the_documented_loss_registers_and_trains_one_step(poly1) -> None:
    assert "poly1" in list_losses("multi-class") and "poly1" not in list_losses("multi-label")
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    loss_fn = create_loss("poly1", task="multi-class", num_classes=3, epsilon=2.0)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    before = loss_fn(model(x), y)
    assert before.shape == (8,)
    before.mean().backward()
    opt.step()
    assert loss_fn(model(x), y).mean() < before.mean()
    # epsilon = 0 is the cross-entropy.
    logits = torch.randn(8, 3)
    zero = create_loss("poly1", task="multi-class", num_classes=3, epsilon=0.0)
    torch.testing.assert_close(zero(logits, y), F.cross_entropy(logits, y, reduction="none"))


def test_the_documented_option_is_checked_and_reaches_train_params(poly1) -> None:
    with pytest.raises(ConfigError, match=r"^epsilon: must be a number >= -1, got -2\.0$"):
        create_loss("poly1", task="binary", num_classes=2, epsilon=-2.0)
    params = TrainParams.from_config({"loss": "poly1", "poly1_epsilon": 0.5})
    assert loss_options("poly1", params) == {"epsilon": 0.5}
    with pytest.raises(ConfigError, match=r"fixed\.poly1_epsilon: must be a number >= -1, got -2\.0"):
        TrainParams.from_config({"poly1_epsilon": -2.0}, prefix="fixed.")


def test_it_is_gone_after_the_test() -> None:
    assert "poly1" not in LOSS
    with pytest.raises(ConfigError, match="Unknown loss 'poly1'"):
        create_loss("poly1", task="binary", num_classes=2)
