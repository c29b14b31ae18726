"""Typed training parameters: the one place Tune's flat ``config`` dict becomes a checked object."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ._errors import ConfigError, did_you_mean

# Set (True) in the config of a trial that Ray Tune runs: the trainable then reports to Tune and writes into
# the trial's folder. Standalone runs leave it out. Explicit, because Ray's own test for a session is private.
TUNE_KEY = "_tune"
# A file holding the sweep's deadline for its trials (seconds since the epoch, as ``time.time()``): a trial
# ends before an epoch it cannot finish by then, so the budget does not end it halfway through one. A file,
# not a value in the config: a resumed sweep writes its own deadline there, while Tune keeps the old config.
DEADLINE_KEY = "_deadline_file"
# Keys of Tune's config that are not training parameters.
META_KEYS = ("data", "_origin", "_out_dir", "_resume", TUNE_KEY, DEADLINE_KEY)


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
        epoch_samples: training samples per epoch (one report, one validation pass, one ASHA step);
            default one pass over the training split. Large data sets get sub-epochs this way, so a
            trial reports often enough for a scheduler to prune it and for a budget to end it cleanly.
        prior_correction: what class mix the written probabilities answer for when a balanced sampler
            or class weights changed the one trained on: ``train`` (the training split's), ``val``
            (the validation split's) or ``none`` (as trained).
        ema: evaluate and keep an exponential moving average of the weights (timm's ``ModelEmaV3``).
        ema_decay: the average's decay per optimizer step (with timm's warm-up for short runs).
        tta: predict validation and test as the mean logits over the image and the flips the training
            augmentation applies (every level but ``none`` flips horizontally; ``vflip`` adds the vertical
            flip); the member keeps its flips (``tta`` in ``model.json``), so the bundle and its ONNX graph
            predict the same way. ``false``: the image alone.
        cv_folds: ``0`` trains on the train split and validates on val; ``k >= 2`` merges the two, cuts
            them into ``k`` folds (grouped by patient, stratified, the same folds for every config) and
            holds fold ``cv_fold`` out. The held-out fold's predictions are then the last epoch's (no
            epoch is chosen on them), so the folds' predictions together are out-of-fold predictions
            of train+val (the ensemble step's bagging).
        cv_fold: the fold held out, ``0 <= cv_fold < cv_folds``.
        options: options that registered losses declare beyond these fields, as ``<loss>_<option>``
            (CONTRIBUTING.md's ``poly1_epsilon``); a space file gives them as top-level keys.
    """

    backbone: str = "resnet18"
    pretrained: bool = False
    pretrained_path: str | None = None
    head: str = "linear"
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
    epoch_samples: int | None = None
    prior_correction: str = "train"
    ema: bool = False
    ema_decay: float = 0.999
    tta: bool = True
    cv_folds: int = 0
    cv_fold: int = 0
    # losses
    loss: str = "auto"
    label_smoothing: float = 0.0
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    asl_gamma_pos: float = 0.0
    asl_gamma_neg: float = 4.0
    asl_clip: float = 0.05
    sampler: str = "random"
    # optimisation
    optimizer: str = "adamw"
    momentum: float = 0.9
    nesterov: bool = True
    scheduler: str = "cosine"
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    step_epochs: int = 10
    decay_rate: float = 0.1
    plateau_patience: int = 2
    accum_steps: int = 1
    clip_grad_norm: float | None = None
    early_stop_patience: int | None = None
    # staged fine-tuning
    freeze_epochs: int = 0
    unfreeze_epoch: int | None = None
    unfreeze: str = "all"
    unfreeze_step: int = 1
    backbone_lr_mult: float = 1.0
    finetune_lr: float | None = None
    # adaptive sparse training
    activation_rate: float = 1.0
    ast_start_epoch: int = 0
    ast_loss_weight: float = 0.7
    ast_min_share: float = 0.05
    ast_kp: float = 0.5
    ast_ki: float = 0.05
    # augmentation and preprocessing
    augment: str = "none"
    hflip: bool | None = None
    vflip: bool | None = None
    rotate: float | None = None
    affine: bool | None = None
    brightness_contrast: bool | None = None
    distortion: bool | None = None
    noise: bool | None = None
    blur: bool | None = None
    coarse_dropout: bool | None = None
    cutmix: float = 0.0
    mixup: float = 0.0
    mix_alpha: float = 1.0
    clahe: bool = False
    border_crop: bool = False
    aug_threads: int | None = None
    # Options that registered entries declare beyond the fields above (a loss added in one file:
    # ``poly1_epsilon``); checked by their declared constraints.
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict, hash=False)

    @property
    def frozen_epochs(self) -> int:
        """``freeze_epochs``, or its alias ``unfreeze_epoch`` (the epoch at which the backbone opens)."""
        return self.unfreeze_epoch if self.unfreeze_epoch is not None else self.freeze_epochs

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, origin: str | None = None, prefix: str = "") -> "TrainParams":
        """Check a flat config (Tune's, or a space file's ``fixed`` + ``space`` defaults)."""
        origin = origin or str(config.get("_origin", "config"))
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in config.items():
            if key in META_KEYS:
                continue
            if key not in fields:
                declared = _declared_fields()
                if key in declared:  # an option of a registered loss without a field of its own
                    extra[key] = value
                    continue
                raise ConfigError(
                    f"unknown training parameter {key!r}{did_you_mean(key, dict.fromkeys([*fields, *declared]))}",
                    origin=origin,
                    field=prefix + key,
                )
            values[key] = _coerce(value, fields[key], origin=origin, field=prefix + key)
        if extra:
            values["options"] = {**values.get("options", {}), **extra}
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
        bound("threads", self.threads is None or self.threads >= 1, "an integer >= 1")
        bound("eval_batch_size", self.eval_batch_size >= 1, "an integer >= 1")
        bound("epoch_samples", self.epoch_samples is None or self.epoch_samples >= 2, "an integer >= 2 or null (one pass)")
        bound("ema_decay", 0 < self.ema_decay < 1, "in (0, 1), e.g. 0.999")
        bound("cv_folds", self.cv_folds == 0 or self.cv_folds >= 2, "0 (the train/val split) or an integer >= 2")
        bound("cv_fold", 0 <= self.cv_fold < max(1, self.cv_folds), f"in [0, cv_folds) = [0, {max(1, self.cv_folds)})")
        bound("device", self.device in ("auto", "cpu", "cuda"), "auto, cpu or cuda")
        bound("accum_steps", self.accum_steps >= 1, "an integer >= 1")
        bound("clip_grad_norm", self.clip_grad_norm is None or self.clip_grad_norm > 0, "> 0 or null")
        bound("early_stop_patience", self.early_stop_patience is None or self.early_stop_patience >= 1, "an integer >= 1 or null")
        bound("freeze_epochs", self.freeze_epochs >= 0, "an integer >= 0")
        bound("unfreeze_epoch", self.unfreeze_epoch is None or self.unfreeze_epoch >= 0, "an integer >= 0 or null")
        bound("unfreeze", self.unfreeze in ("all", "progressive"), "all or progressive")
        bound("unfreeze_step", self.unfreeze_step >= 1, "an integer >= 1")
        bound("backbone_lr_mult", self.backbone_lr_mult > 0, "> 0 (e.g. 0.1 for a backbone 10x slower than the head)")
        bound("finetune_lr", self.finetune_lr is None or self.finetune_lr > 0, "> 0 or null")
        bound("activation_rate", 0 < self.activation_rate <= 1, "in (0, 1]")
        bound("ast_start_epoch", self.ast_start_epoch >= 0, "an integer >= 0")
        bound("ast_loss_weight", 0 <= self.ast_loss_weight <= 1, "in [0, 1]")
        bound("ast_min_share", 0 < self.ast_min_share <= 1, "in (0, 1]")
        bound("cutmix", 0 <= self.cutmix <= 1, "a probability in [0, 1]")
        bound("mixup", 0 <= self.mixup <= 1, "a probability in [0, 1]")
        bound("mix_alpha", self.mix_alpha > 0, "> 0")
        bound("aug_threads", self.aug_threads is None or self.aug_threads >= 1, "an integer >= 1 or null")
        from ._augment import AUGMENT
        from ._heads import HEAD
        from ._losses import LOSS, loss_fields
        from ._optim import OPTIMIZER, SCHEDULER
        from ._prior import PRIOR_CORRECTIONS
        from ._registry import check_option
        from ._sampling import SAMPLER

        # Each named choice is checked by its registry, with the one unknown-name message.
        for name, registry, also in (
            ("head", HEAD, ()),
            ("loss", LOSS, ("auto",)),
            ("optimizer", OPTIMIZER, ()),
            ("scheduler", SCHEDULER, ()),
            ("augment", AUGMENT, ()),
            ("sampler", SAMPLER, ()),
        ):
            value = getattr(self, name)
            if value not in also and value not in registry:
                raise registry.unknown(value, origin=origin, field=prefix + name, also=also)
        if not isinstance(self.options, Mapping):
            raise ConfigError(f"must be a mapping of loss options, got {self.options!r}", origin=origin, field=prefix + "options")
        # Options of the other registries that are fields here (drop_rate, momentum, warmup_epochs, ...),
        # by the constraints their entries declare: whichever entry is chosen, as a space may search several.
        fields = type(self).__dataclass_fields__
        for registry in (HEAD, OPTIMIZER, SCHEDULER):
            for _, entry in registry.items():
                for key, constraints in entry.options.items():
                    if key in fields:
                        check_option(key, getattr(self, key), constraints, origin=origin, field=prefix + key)
        # Every loss's options, whichever loss is chosen (a space searches several), by their declared constraints.
        for key, (loss, option) in loss_fields().items():
            value = getattr(self, key) if key in type(self).__dataclass_fields__ else self.options.get(key)
            if key in type(self).__dataclass_fields__ or key in self.options:
                check_option(key, value, LOSS[loss].options[option], origin=origin, field=prefix + key)
        for key in self.options:
            if key not in loss_fields():
                raise ConfigError(
                    f"unknown loss option {key!r}{did_you_mean(key, loss_fields())}", origin=origin, field=prefix + "options"
                )
        valid = list(PRIOR_CORRECTIONS)
        if self.prior_correction not in valid:
            raise ConfigError(
                f"unknown prior_correction {self.prior_correction!r}{did_you_mean(self.prior_correction, valid)}; "
                f"valid: {', '.join(valid)}",
                origin=origin, field=prefix + "prior_correction",
            )
        if self.unfreeze_epoch is not None and self.freeze_epochs and self.unfreeze_epoch != self.freeze_epochs:
            raise ConfigError(
                "`freeze_epochs` and `unfreeze_epoch` are the same setting and disagree; give only one",
                origin=origin, field=prefix + "unfreeze_epoch",
            )


def _declared_fields() -> dict[str, tuple[str, str]]:
    from ._losses import loss_fields

    return loss_fields()


def _coerce(value: Any, f: dataclasses.Field, *, origin: str, field: str) -> Any:
    kind = str(f.type)
    if value is None:
        if "None" in kind:
            return None
        raise ConfigError("needs a value, got null", origin=origin, field=field)
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
