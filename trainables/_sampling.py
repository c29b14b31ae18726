"""Data samplers by name: each epoch's order of training samples (``TrainParams.sampler``)."""

from __future__ import annotations

import numpy as np

from ._registry import Registry

__all__ = ["SAMPLER", "SAMPLERS", "register_sampler", "sample_weights", "train_order"]

# A sampler gets the training labels, how many draws to make and the run's generator from the trainer.
SAMPLER = Registry("sampler", field="sampler", context=("labels", "n_samples", "rng", "multilabel"))
SAMPLERS = SAMPLER
register_sampler = SAMPLER.register


def sample_weights(labels: np.ndarray, *, multilabel: bool) -> np.ndarray:
    """Per-sample draw weights that make classes about equally likely (inverse class frequency).

    Multi-label: the mean inverse frequency of a sample's positive labels (the negatives' share if none).
    """
    if not multilabel:
        counts = np.bincount(labels)
        return 1.0 / counts[labels]
    pos = labels == 1
    freq = np.maximum(pos.sum(0), 1)
    none = max(int((~pos.any(1)).sum()), 1)
    inv = np.where(pos, 1.0 / freq, 0.0).sum(1)
    n_pos = pos.sum(1)
    return np.where(n_pos > 0, inv / np.maximum(n_pos, 1), 1.0 / none)


@register_sampler("random", replacement=False)
def _random(*, labels: np.ndarray, n_samples: int, rng: np.random.Generator, **_: object) -> np.ndarray:
    """A permutation of the split; sub-epochs draw without replacement, longer ones chain permutations."""
    n = len(labels)
    if n_samples == n:
        return rng.permutation(n)
    reps = -(-n_samples // n)
    return np.concatenate([rng.permutation(n) for _ in range(reps)])[:n_samples]


@register_sampler("balanced", replacement=True)
def _balanced(
    *, labels: np.ndarray, n_samples: int, rng: np.random.Generator, multilabel: bool, **_: object
) -> np.ndarray:
    """Class-balanced draws with replacement (inverse-frequency weights, torch's ``WeightedRandomSampler``)."""
    import torch
    from torch.utils.data import WeightedRandomSampler

    weights = sample_weights(labels, multilabel=multilabel)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    sampler = WeightedRandomSampler(weights, num_samples=n_samples, replacement=True, generator=gen)
    return np.fromiter(sampler, dtype=np.int64, count=n_samples)


def train_order(name: str, labels: np.ndarray, *, n_samples: int, rng: np.random.Generator, multilabel: bool) -> np.ndarray:
    """This epoch's sample order from the sampler ``name``.

    Example:
        >>> train_order("random", np.array([0, 1, 1]), n_samples=3, rng=np.random.default_rng(0), multilabel=False)
        array([2, 0, 1])
    """
    return SAMPLER.create(name, labels=labels, n_samples=n_samples, rng=rng, multilabel=multilabel)
