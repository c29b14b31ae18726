"""The contract between a trial and what reads it (the ensemble, the bundle, the report): the files a trial
leaves, the member spec in its ``model.json``, its predictions, and the image preparation that training
and serving share, so that a bundle sees exactly what its trials saw.

A trial folder (or a Tune checkpoint of it) holds::

    best.safetensors         the best validation epoch's weights (BEST_WEIGHTS)
    model.safetensors        the last epoch's weights, for resuming (LAST_WEIGHTS)
    state.pt                 optimizer, scheduler and RNG state, for resuming (STATE_FILE)
    model.json               the member spec and the run's parameters (MODEL_JSON)
    metrics.csv              one row per epoch, standalone runs (METRICS_CSV)
    predictions_val.parquet  the best epoch's probabilities (predictions_file("val"))
    predictions_test.parquet

Example:
    >>> from trainables.artifacts import MemberSpec, read_model_json, prepare_batch
    >>> spec = MemberSpec.from_model_json(read_model_json("runs/cxr/trial_1a2b/checkpoint_000004"))
    >>> prepare_batch([image], spec).shape      # uint8 (N, S, S, C), as the cache holds it
    (1, 224, 224, 1)
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import ConfigError
from ._tta import TTA_FLIPS

__all__ = [
    "BEST_WEIGHTS",
    "CHECKPOINT_DIR",
    "LEADERBOARD_COLUMNS",
    "LEADERBOARD_CSV",
    "LEADERBOARD_PARQUET",
    "SPACE_FILE",
    "STATUSES",
    "USABLE_STATUSES",
    "DIVERGED_FILE",
    "LAST_WEIGHTS",
    "MEMBER_FILES",
    "METRICS_CSV",
    "MODEL_JSON",
    "PREDICTION_SPLITS",
    "PREPROCESSING_STEPS",
    "RESUME_FILES",
    "STATE_FILE",
    "MemberSpec",
    "normalization",
    "predictions_file",
    "prepare_batch",
    "prepare_image",
    "read_leaderboard",
    "read_json_object",
    "read_model_json",
    "read_predictions",
    "write_model_json",
    "write_predictions",
]

STATE_FILE = "state.pt"
LAST_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"
MODEL_JSON = "model.json"
METRICS_CSV = "metrics.csv"
CHECKPOINT_DIR = "checkpoint"  # a standalone run's checkpoint folder (under Tune: Tune's checkpoint_NNNNNN)
# What only resuming needs: optimizer, scheduler and RNG state, and the latest epoch's weights (Adam's state
# alone is twice the weights). A finished or pruned trial keeps the rest: best weights, model.json, predictions.
RESUME_FILES = (STATE_FILE, LAST_WEIGHTS)
# Written into the trial folder when the loss diverges: Tune's retry (FailureConfig) would only diverge again.
DIVERGED_FILE = "diverged.txt"
PREDICTION_SPLITS = ("val", "test")
PREPROCESSING_STEPS = ("clahe", "border_crop")  # optional steps before resizing, at full resolution


def predictions_file(split: str) -> str:
    """The file name of a split's predictions: ``predictions_val.parquet``."""
    return f"predictions_{split}.parquet"


# What the ensemble needs of a trial: the weights, the spec and both splits' predictions, in one folder.
MEMBER_FILES = (BEST_WEIGHTS, MODEL_JSON, *(predictions_file(s) for s in PREDICTION_SPLITS))

_SPEC_KEYS = ("backbone", "num_classes", "in_chans", "image_size", "task", "class_names", "mean", "std")


@dataclass(frozen=True)
class MemberSpec:
    """What it takes to rebuild a trained model and feed it: architecture, classes and input.

    ``model.json`` and a bundle's manifest entry are two spellings of it (``from_model_json`` /
    ``to_model_json``, ``from_manifest`` / ``to_manifest``); their formats are unchanged.
    """

    backbone: str
    num_classes: int
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    head: str = "linear"
    # Each of PREPROCESSING_STEPS, on or off.
    preprocessing: Mapping[str, bool] = field(default_factory=lambda: {k: False for k in PREPROCESSING_STEPS}, hash=False)
    task: str | None = None  # binary, multi-class, multi-label (model.json; a manifest holds it once, at the top)
    class_names: tuple[str, ...] | None = None
    # Added to the logits before softmax/sigmoid wherever the weights are used (a balanced sampler's prior correction).
    logit_bias: tuple[float, ...] | None = None
    # A bag (the ensemble step's refit on k folds): ``folds`` models of this architecture whose logits are averaged.
    folds: int = 1
    # Test-time flips (``trainables.TTA_FLIPS``): the logits are the mean over the image and these mirrors of it,
    # the ones the trial trained with; empty: the image alone.
    tta: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # A mapping field of a frozen class: stored as a plain dict of exactly the known steps.
        object.__setattr__(self, "preprocessing", {k: bool((self.preprocessing or {}).get(k, False)) for k in PREPROCESSING_STEPS})
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std must hold {self.channels} numbers (one per channel), got {list(self.mean)} and {list(self.std)}")
        if self.logit_bias is not None and (len(self.logit_bias) != self.num_classes or not np.isfinite(self.logit_bias).all()):
            raise ValueError(f"logit_bias must hold {self.num_classes} finite numbers (one per class), got {list(self.logit_bias)}")
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 1:
            raise ValueError(f"folds must be an integer >= 1, got {self.folds!r}")
        object.__setattr__(self, "tta", tuple(str(f) for f in (self.tta or ())))
        if any(f not in TTA_FLIPS for f in self.tta) or len(set(self.tta)) != len(self.tta):
            raise ValueError(f"tta must list distinct flips of {', '.join(TTA_FLIPS)}, got {list(self.tta)}")

    @property
    def preprocess(self) -> dict[str, bool]:
        """The steps that are on, as ``prepare_image``'s ``preprocess`` takes them."""
        return {k: True for k, v in self.preprocessing.items() if v}

    @property
    def input_key(self) -> str:
        """Equal for members that take the same prepared input (size, channels, preprocessing)."""
        return json.dumps([self.image_size, self.channels, sorted(self.preprocessing.items())])

    # -------------------------------------------------------- model.json

    @classmethod
    def from_model_json(cls, info: Mapping[str, Any], *, origin: str | None = None) -> MemberSpec:
        """The spec in a trial's ``model.json`` (as ``read_model_json`` returns it)."""
        params = info.get("params") or {}
        try:
            return cls(
                backbone=str(info["backbone"]),
                head=str(info.get("head") or "linear"),
                num_classes=int(info["num_classes"]),
                channels=int(info["in_chans"]),
                image_size=int(info["image_size"]),
                mean=tuple(float(v) for v in info["mean"]),
                std=tuple(float(v) for v in info["std"]),
                preprocessing={k: bool(params.get(k, False)) for k in PREPROCESSING_STEPS},
                task=str(info["task"]) if info.get("task") is not None else None,
                class_names=tuple(str(c) for c in info["class_names"]) if info.get("class_names") is not None else None,
                logit_bias=_floats(info.get("logit_bias")),
                folds=int(info.get("folds") or 1),
                tta=_names(info.get("tta")),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"lacks or mistypes {exc}; rerun the trial", origin=origin) from None
        except ValueError as exc:
            raise ConfigError(f"{exc}; rerun the trial", origin=origin) from None

    def to_model_json(self) -> dict[str, Any]:
        """The spec's keys of ``model.json`` (the trainer adds ``params``, ``best_epoch`` and the rest)."""
        return {
            "backbone": self.backbone,
            "num_classes": self.num_classes,
            "in_chans": self.channels,
            "image_size": self.image_size,
            "task": self.task,
            "class_names": list(self.class_names) if self.class_names is not None else None,
            "mean": list(self.mean),
            "std": list(self.std),
            "head": self.head,
            "logit_bias": list(self.logit_bias) if self.logit_bias is not None else None,
            **({"folds": self.folds} if self.folds > 1 else {}),
            "tta": list(self.tta),
        }

    # -------------------------------------------------------- a bundle's manifest

    @classmethod
    def from_manifest(cls, entry: Mapping[str, Any], *, task: str | None = None, class_names: Sequence[str] | None = None) -> MemberSpec:
        """A member entry of a bundle's ``manifest.json``; raises ``KeyError``/``TypeError``/``ValueError`` on a bad one."""
        return cls(
            backbone=str(entry["backbone"]),
            head=str(entry.get("head") or "linear"),
            num_classes=int(entry["num_classes"]),
            channels=int(entry["channels"]),
            image_size=int(entry["image_size"]),
            mean=tuple(float(v) for v in entry["mean"]),
            std=tuple(float(v) for v in entry["std"]),
            preprocessing={k: bool(v) for k, v in (entry.get("preprocessing") or {}).items() if k in PREPROCESSING_STEPS},
            task=task,
            class_names=tuple(str(c) for c in class_names) if class_names is not None else None,
            logit_bias=_floats(entry.get("logit_bias")),
            folds=int(entry.get("folds") or 1),
            tta=_names(entry.get("tta")),
        )

    def to_manifest(self) -> dict[str, Any]:
        """The spec's keys of a manifest member entry (the bundle adds the trial id, weights and hashes)."""
        return {
            "backbone": self.backbone,
            "head": self.head,
            "num_classes": self.num_classes,
            "image_size": self.image_size,
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "preprocessing": dict(self.preprocessing),
            "logit_bias": list(self.logit_bias) if self.logit_bias is not None else None,
            **({"folds": self.folds} if self.folds > 1 else {}),
            "tta": list(self.tta),
        }


def _names(values: Any) -> tuple[str, ...]:
    # A list of flip names; older model.json and manifests have none (their members predict the image alone).
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise TypeError(f"'tta' must be a list of flip names, got {values!r}")
    return tuple(str(v) for v in values)


def _floats(values: Any) -> tuple[float, ...] | None:
    return None if values is None else tuple(float(v) for v in values)


def read_json_object(path: str | os.PathLike[str], *, fix: str) -> dict[str, Any]:
    """A JSON file that must hold an object (``model.json``, ``manifest.json``, ``metrics.json``).

    Raises:
        ConfigError: unreadable or not an object: one line naming the file and ``fix``.

    Example:
        >>> read_json_object("runs/cxr/ensemble/metrics.json", fix="rebuild it with python -m ensemble.build RUN_DIR")
    """
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"unreadable ({' '.join(str(exc).split())[:120]}); {fix}", origin=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"is not a JSON object; {fix}", origin=str(path))
    return data


def read_model_json(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """A trial's ``model.json`` (``folder`` is the trial or checkpoint folder), checked for the spec's keys.

    Raises:
        ConfigError: unreadable, or lacking a key of the spec.
    """
    path = Path(folder) / MODEL_JSON
    model = read_json_object(path, fix="the trial's checkpoint is damaged: rerun the trial or lower top_k")
    missing = [k for k in _SPEC_KEYS if k not in model]
    if missing:
        raise ConfigError(f"lacks {', '.join(missing)}; written by an older trainer? rerun the trial", origin=str(path))
    return model


def write_model_json(folder: str | os.PathLike[str], info: Mapping[str, Any]) -> Path:
    """Write ``model.json`` (a spec's ``to_model_json()`` plus whatever the trainer records) into ``folder``."""
    path = Path(folder) / MODEL_JSON
    path.write_text(json.dumps(dict(info), indent=1))
    return path


def write_predictions(frame: Any, folder: str | os.PathLike[str], split: str) -> Path:
    """Write a split's predictions frame (``sample_id``, labels, ``prob_<class>``) atomically into ``folder``."""
    path = Path(folder) / predictions_file(split)
    tmp = path.with_name(f".{path.name}.tmp")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_predictions(folder: str | os.PathLike[str], split: str) -> Any:
    """A split's predictions frame from a trial or checkpoint folder (a pandas DataFrame)."""
    import pandas as pd

    return pd.read_parquet(Path(folder) / predictions_file(split))


# ---------------------------------------------------------------- a sweep's run folder

# What ``python -m search.run`` leaves in ``runs/<name>/`` besides the trial folders; the ensemble reads it.
LEADERBOARD_PARQUET = "leaderboard.parquet"
LEADERBOARD_CSV = "leaderboard.csv"
SPACE_FILE = "space.yaml"  # the resolved space the sweep ran
# A trial's status on the leaderboard, in its sort order: ended (by its epochs, or pruned early), under way, failed.
STATUSES = ("finished", "pruned", "running", "pending", "diverged", "errored")
# Trials that left predictions of their best epoch: what the ensemble picks from.
USABLE_STATUSES = ("finished", "pruned")
# The columns every leaderboard has, in order; then ``last/<metric>`` per further objective and
# ``config/<key>`` per training parameter (the data section left out).
LEADERBOARD_COLUMNS = (
    "trial_id", "status", "epochs", "max_epochs", "metric", "best", "last", "best_epoch", "wall_s", "node_ip",
    "node_id", "error", "disk_mb", "path", "checkpoint", "predictions_val", "predictions_test",
)


def read_leaderboard(run_dir: str | os.PathLike[str]) -> Any:
    """A finished sweep's ``leaderboard.parquet`` (a pandas DataFrame), checked for its key columns.

    Raises:
        ConfigError: no leaderboard in ``run_dir``, or one without ``trial_id``/``status``.
    """
    import pandas as pd

    path = Path(run_dir) / LEADERBOARD_PARQUET
    if not path.is_file():
        raise ConfigError(f"no {LEADERBOARD_PARQUET}; run python -m search.run SPACE first, or pass its run folder", origin=str(run_dir))
    frame = pd.read_parquet(path)
    missing = [c for c in ("trial_id", "status") if c not in frame.columns] if len(frame.columns) else []
    if missing:
        raise ConfigError(f"lacks the column(s) {', '.join(missing)}; not a medsweep leaderboard", origin=str(path))
    return frame


# ---------------------------------------------------------------- the model's input


def prepare_image(img: np.ndarray, *, size: int, channels: int, preprocess: Mapping[str, Any] | None = None) -> np.ndarray:
    """One decoded image as the cache holds it and a bundle feeds it: uint8 ``(size, size, channels)``.

    16-bit images are windowed per image (min..max) to uint8, alpha is dropped, the ``preprocess`` steps
    run at full resolution, channels are converted (grey <-> RGB), then the image is resized (bilinear).
    """
    from PIL import Image

    from ._cache import _to_uint8

    img = _to_uint8(np.asarray(img))
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[:, :, :3]
    if preprocess:  # at full resolution, before resizing: border crop and CLAHE need the detail
        from ._augment import preprocess as apply_preprocess

        img = apply_preprocess(img, **preprocess)
    if channels == 1 and img.ndim == 3:
        img = np.asarray(Image.fromarray(img).convert("L"))
    elif channels == 3 and img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    if img.shape[0] != size or img.shape[1] != size:
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.Resampling.BILINEAR))
    return img.reshape(size, size, channels)


def prepare_batch(images: Sequence[np.ndarray], spec: MemberSpec) -> np.ndarray:
    """Decoded images prepared for the member ``spec``: uint8 ``(N, S, S, C)``."""
    size, channels = spec.image_size, spec.channels
    if not len(images):
        return np.zeros((0, size, size, channels), np.uint8)
    return np.stack([prepare_image(img, size=size, channels=channels, preprocess=spec.preprocess) for img in images])


def normalization(mean: Sequence[float], std: Sequence[float], *, device: Any = "cpu") -> tuple[Any, Any]:
    """``(scale, shift)`` tensors, shape ``(1, C, 1, 1)``, with ``x * scale + shift == (x / 255 - mean) / std``.

    Training and serving both turn uint8 into the model's input with this one multiply-add, so they agree
    to the last bit: ``x = batch.permute(0, 3, 1, 2).float() * scale + shift``.
    """
    import torch

    mean_t = torch.tensor(list(mean), device=device).view(1, -1, 1, 1)
    std_t = torch.tensor(list(std), device=device).view(1, -1, 1, 1)
    return 1.0 / (255.0 * std_t), -mean_t / std_t
