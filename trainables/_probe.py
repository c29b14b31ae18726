"""How fast this machine trains and evaluates a backbone: the input that sizes ``epochs: auto``.

A few real optimizer steps on random images of the data's shape, timed after a warm-up; the sweep turns
the figures into epochs (or sub-epochs) per trial that fit the budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["Speed", "measure_speed"]


@dataclass(frozen=True)
class Speed:
    """Seconds per image of one training step (forward, backward, update) and of one evaluation pass."""

    train_s: float
    eval_s: float


def measure_speed(
    backbone: str,
    *,
    image_size: int,
    channels: int,
    num_classes: int,
    batch_size: int,
    threads: int,
    head: str = "linear",
    device: str = "cpu",
    steps: int = 5,
) -> Speed:
    """Time ``steps`` training steps and as many evaluation batches of ``backbone`` (after one warm-up each),
    keeping the fastest of each.

    Args:
        backbone: a timm model name (random weights: the speed does not depend on them).
        image_size: input side in pixels.
        channels: input channels.
        num_classes: classifier outputs.
        batch_size: the training batch size (evaluation uses twice that).
        threads: torch threads, as a trial gets them.
        head: the classifier head.
        device: ``cpu`` or ``cuda``.
        steps: timed steps.

    Example:
        >>> s = measure_speed("test_resnet", image_size=32, channels=1, num_classes=2, batch_size=16, threads=1)
        >>> s.train_s > s.eval_s > 0
        True
    """
    import torch

    from ._heads import build_classifier

    before = torch.get_num_threads()
    torch.set_num_threads(max(1, int(threads)))
    try:
        model = build_classifier(backbone, head=head, num_classes=num_classes, in_chans=channels).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(batch_size, channels, image_size, image_size, generator=gen).to(device)
        y = torch.randint(0, num_classes, (batch_size,), generator=gen).to(device)
        loss_fn = torch.nn.CrossEntropyLoss()

        def train_step() -> None:
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()

        model.train()
        train_s = _timed(train_step, steps, device) / batch_size
        xe = torch.randn(2 * batch_size, channels, image_size, image_size, generator=gen).to(device)
        model.eval()

        def eval_step() -> None:
            with torch.inference_mode():
                model(xe)

        eval_s = _timed(eval_step, steps, device) / (2 * batch_size)
    finally:
        torch.set_num_threads(before)
    return Speed(train_s=train_s, eval_s=eval_s)


def _timed(fn, steps: int, device: str) -> float:
    """Seconds of the fastest call, after a warm-up call (allocator, kernels, caches).

    The fastest, not the median: a step that another process slowed (a Ray starting beside the sweep, a
    data read) says nothing of the trials' speed. Beside a starting Ray the median of three measured 36
    training images/s for the default backbones, against 115 on the idle machine, and sized every trial
    of that sweep at a third of its length. The trials' own slowdowns are in the sizing's overhead factor,
    and the sweep's deadline stops a trial that still runs late.
    """
    import torch

    fn()
    times = []
    for _ in range(max(1, steps)):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return min(times)
