"""Typed training parameters: the one place Tune's flat ``config`` dict becomes a checked object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ._errors import ConfigError, did_you_mean

# Keys of Tune's config that are not training parameters.
META_KEYS = ("data", "_origin", "_out_dir", "_resume")


@dataclass(frozen=True)
class TrainParams:
    """Every parameter a trial takes; the names are the same in YAML, ``--set`` and Tune's config.

    Attributes:
        backbone: any ``timm`` model name.
        pretrained: load timm's pretrained weights (hub download).
        pretrained_path: a local weights file (``.safetensors``, ``.pth``) loaded through timm.
        epochs: training epochs.
        lr: peak learning rate (AdamW, cosine decay per step).
        batch_size: training batch size.
        weight_decay: AdamW's decoupled weight decay.
        image_size: side length in pixels; default the data's native size.
        drop_rate: dropout before the classifier.
        seed: seeds weights, batch order and sampling.
        threads: torch CPU threads; default the CPUs Tune gave the trial, or all CPUs.
        eval_batch_size: batch size for validation and test passes.
        amp: mixed precision on CUDA (ignored on CPU).
        device: ``auto``, ``cpu`` or ``cuda``.
        select_metric: the validation metric that picks the best epoch (higher is better).
    """

    backbone: str = "resnet18"
    pretrained: bool = False
    pretrained_path: str | None = None
    epochs: int = 10
    lr: float = 1e-3
    batch_size: int = 64
    weight_decay: float = 1e-4
    image_size: int | None = None
    drop_rate: float = 0.0
    seed: int = 0
    threads: int | None = None
    eval_batch_size: int = 256
    amp: bool = True
    device: str = "auto"
    select_metric: str = "val_auroc"

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, origin: str | None = None, prefix: str = "") -> "TrainParams":
        """Check a flat config (Tune's, or a space file's ``fixed`` + ``space`` defaults)."""
        origin = origin or str(config.get("_origin", "config"))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in config.items():
            if key in META_KEYS:
                continue
            if key not in fields:
                raise ConfigError(
                    f"unknown training parameter {key!r}{did_you_mean(key, fields)}",
                    origin=origin,
                    field=prefix + key,
                )
            values[key] = _coerce(value, fields[key], origin=origin, field=prefix + key)
        params = cls(**values)
        params._check(origin=origin, prefix=prefix)
        return params

    def _check(self, *, origin: str, prefix: str) -> None:
        def bound(name: str, ok: bool, allowed: str) -> None:
            if not ok:
                raise ConfigError(
                    f"`{name}` must be {allowed}, got {getattr(self, name)!r}", origin=origin, field=prefix + name
                )

        bound("epochs", self.epochs >= 1, "an integer >= 1")
        bound("lr", self.lr > 0, "> 0 (e.g. 1e-3)")
        bound("batch_size", self.batch_size >= 2, "an integer >= 2 (batch norm needs two samples)")
        bound("weight_decay", self.weight_decay >= 0, ">= 0")
        bound("image_size", self.image_size is None or self.image_size >= 8, "an integer >= 8")
        bound("drop_rate", 0 <= self.drop_rate < 1, "in [0, 1)")
        bound("threads", self.threads is None or self.threads >= 1, "an integer >= 1")
        bound("eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        bound("device", self.device in ("auto", "cpu", "cuda"), "auto, cpu or cuda")


def _coerce(value: Any, f: dataclasses.Field, *, origin: str, field: str) -> Any:
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError(f"needs a value, got null", origin=origin, field=field)
    try:
        if kind.startswith("bool"):
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
            if isinstance(value, bool):
                return value
            raise TypeError
        if kind.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise TypeError
            return int(value)
        if kind.startswith("float"):
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if kind.startswith("str"):
            if not isinstance(value, str):
                raise TypeError
            return value
    except (TypeError, ValueError):
        want = kind.split(" |")[0].split("|")[0].strip()
        raise ConfigError(
            f"must be {'an' if want == 'int' else 'a'} {want}, got {value!r} ({type(value).__name__})",
            origin=origin,
            field=field,
        ) from None
    return value
