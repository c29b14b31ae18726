"""The speed probe that sizes `epochs: auto`: real steps of a tiny model, and a slowed step not counted."""

from __future__ import annotations

import time

from trainables import measure_speed
from trainables._probe import _timed


def test_a_step_that_another_process_slowed_does_not_set_the_speed():
    calls = []

    def step():
        calls.append(None)
        # Calls 2-4 (the first is the warm-up) stand for steps slowed by a Ray starting beside the sweep.
        time.sleep(0.2 if 2 <= len(calls) <= 4 else 0.01)

    seconds = _timed(step, 5, "cpu")
    assert len(calls) == 6
    assert seconds < 0.1  # the median of these five would be 0.2


def test_the_probe_times_real_training_and_evaluation_steps():
    small = measure_speed("test_resnet", image_size=32, channels=1, num_classes=2, batch_size=16, threads=1)
    large = measure_speed("test_resnet", image_size=96, channels=1, num_classes=2, batch_size=16, threads=1)
    assert small.train_s > small.eval_s > 0
    assert large.train_s > small.train_s  # nine times the pixels is slower per image
