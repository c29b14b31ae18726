"""Adaptive Sparse Training: train each batch only on its most significant samples.

Significance is a weighted sum of a sample's loss and its prediction entropy, measured in a
cheap no-grad pass. A PI controller moves the selection threshold so that the fraction of
samples selected tracks ``activation_rate``; a minimum share of every batch is always kept.
Unlike the reference code, which runs the full forward with gradients and masks the loss,
only the selected samples go through the gradient forward and backward, so compute falls
with the activation rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class ASTController:
    """Selects samples by significance and keeps the selected fraction near the target.

    Args:
        activation_rate: target fraction of samples trained on, in (0, 1].
        loss_weight: weight of the (normalised) loss in the significance; entropy gets the rest.
        min_share: the least fraction of a batch that is always selected.
        kp, ki: proportional and integral gains of the threshold controller.

    Example:
        >>> ctl = ASTController(activation_rate=0.25)
        >>> mask = ctl.select(losses, entropies)  # bool mask over the batch
    """

    activation_rate: float
    loss_weight: float = 0.7
    min_share: float = 0.05
    kp: float = 0.5
    ki: float = 0.05
    ema: float = 0.9
    threshold: float | None = None  # in units of the running mean significance; None until the first batch
    integral: float = 0.0
    selected: int = 0
    seen: int = 0
    _mean_loss: float | None = field(default=None, repr=False)
    _mean_entropy: float | None = field(default=None, repr=False)

    def significance(self, losses: torch.Tensor, entropies: torch.Tensor) -> torch.Tensor:
        """Loss and entropy, each divided by its running mean, mixed by ``loss_weight``."""
        ml, me = float(losses.mean()), float(entropies.mean())
        if self._mean_loss is None:
            self._mean_loss, self._mean_entropy = ml, me
        else:
            self._mean_loss = self.ema * self._mean_loss + (1 - self.ema) * ml
            self._mean_entropy = self.ema * self._mean_entropy + (1 - self.ema) * me
        eps = 1e-8
        return self.loss_weight * losses / (self._mean_loss + eps) + (1 - self.loss_weight) * entropies / (
            self._mean_entropy + eps
        )

    def select(self, losses: torch.Tensor, entropies: torch.Tensor) -> torch.Tensor:
        """Boolean mask of the samples to train on; updates the threshold."""
        sig = self.significance(losses.float(), entropies.float())
        if self.threshold is None:
            # Warm start at the target quantile of the first batch; the controller tracks drift from there.
            self.threshold = float(torch.quantile(sig, 1.0 - self.activation_rate))
        mask = sig > self.threshold
        n = len(sig)
        floor = max(1, math.ceil(self.min_share * n))
        if int(mask.sum()) < floor:
            mask = torch.zeros_like(mask)
            mask[torch.topk(sig, floor).indices] = True
        rate = float(mask.float().mean())
        # Too many selected -> raise the threshold; too few -> lower it.
        error = rate - self.activation_rate
        self.integral = max(-10.0, min(10.0, self.integral + error))
        self.threshold = max(0.0, self.threshold + self.kp * error + self.ki * self.integral)
        self.selected += int(mask.sum())
        self.seen += n
        return mask

    def reset_epoch(self) -> None:
        self.selected = 0
        self.seen = 0

    @property
    def achieved_rate(self) -> float:
        return self.selected / self.seen if self.seen else math.nan

    def state_dict(self) -> dict:
        return {
            "threshold": -1.0 if self.threshold is None else self.threshold,
            "integral": self.integral,
            "mean_loss": -1.0 if self._mean_loss is None else self._mean_loss,
            "mean_entropy": -1.0 if self._mean_entropy is None else self._mean_entropy,
        }

    def load_state_dict(self, state: dict) -> None:
        self.threshold = None if state["threshold"] < 0 else float(state["threshold"])
        self.integral = float(state["integral"])
        self._mean_loss = None if state["mean_loss"] < 0 else float(state["mean_loss"])
        self._mean_entropy = None if state["mean_entropy"] < 0 else float(state["mean_entropy"])


def prediction_entropy(logits: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """Per-sample entropy of the prediction: softmax entropy, or the sum of per-label Bernoulli entropies."""
    logits = logits.float()
    if multilabel:
        p = torch.sigmoid(logits)
        ent = -(p * torch.log(p.clamp_min(1e-8)) + (1 - p) * torch.log((1 - p).clamp_min(1e-8)))
        return ent.sum(1)
    logp = torch.log_softmax(logits, 1)
    return -(logp.exp() * logp).sum(1)


class EnergyMeter:
    """GPU energy in joules from NVML's total-energy counter, when there is one (Volta and later)."""

    def __init__(self, device: torch.device) -> None:
        self.handle = None
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            index = device.index if device.index is not None else torch.cuda.current_device()
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            self.handle, self._nvml = handle, pynvml
        except Exception:  # noqa: BLE001 - no NVML, or no energy counter: energy is simply not reported
            self.handle = None

    @property
    def available(self) -> bool:
        return self.handle is not None

    def read_joules(self) -> float:
        return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self.handle) / 1000.0 if self.handle else math.nan
