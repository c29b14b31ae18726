"""The trainable: one function that trains any timm backbone on any data source, under Tune or alone."""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ._cache import DataConfig, Dataset, fold_dataset, load_dataset
from ._errors import ConfigError
from ._groups import pooled_metrics
from ._metrics import compute_metrics
from ._params import DEADLINE_KEY, TUNE_KEY, TrainParams
from ._tta import flip_average, trained_flips
from ._sampling import SAMPLER, sample_weights, train_order  # noqa: F401 - sample_weights: its old home

# The files a trial leaves are the artifact contract's (trainables.artifacts).
from .artifacts import (
    BEST_WEIGHTS,
    CHECKPOINT_DIR,
    DIVERGED_FILE,
    LAST_WEIGHTS,
    METRICS_CSV,
    PREDICTION_SPLITS,
    RESUME_FILES,
    STATE_FILE,
    MemberSpec,
    normalization,
    predictions_file,
    write_model_json,
    write_predictions,
)


def train(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Train one trial. Ray Tune calls this with a trial's config; it also runs standalone.

    ``config`` holds the training parameters (see ``TrainParams``) and ``data`` (the data
    section of a space file). Under Tune (the config holds ``"_tune": True``, ``TUNE_KEY``,
    which a sweep sets; a Tuner of your own sets it in ``param_space``) every epoch is reported
    with ``ray.tune.report`` and a checkpoint; standalone, rows go to ``<_out_dir>/metrics.csv`` and the checkpoint to
    ``<_out_dir>/checkpoint/``. Both leave ``predictions_val.parquet`` and
    ``predictions_test.parquet`` of the best validation epoch in the trial directory (and in
    every checkpoint). Standalone it returns the last epoch's metrics row.

    Example:
        >>> train({"backbone": "resnet18", "epochs": 2,
        ...        "data": {"source": "medmnist", "dataset": "pneumoniamnist"}, "_out_dir": "runs/one"})
    """
    origin = str(config.get("_origin", "config"))
    params = TrainParams.from_config(config, origin=origin)
    data = DataConfig.from_dict(config.get("data") or {}, origin=origin)
    tune = bool(config.get(TUNE_KEY, False))
    if tune:
        import ray.tune

        out_dir = Path(ray.tune.get_context().get_trial_dir())
        marker = out_dir / DIVERGED_FILE
        if marker.is_file():
            raise TrainingDiverged(f"{marker.read_text().strip()} (in an earlier attempt; not retried)")
    else:
        out_dir = Path(config.get("_out_dir") or "runs/fit")
    run = _Run(params, data, out_dir, tune=tune, resume=bool(config.get("_resume", False)), config=config)
    try:
        last = run.run()
    except TrainingDiverged as exc:
        if tune:
            (out_dir / DIVERGED_FILE).write_text(str(exc))
        raise
    # Under Tune a returned dict counts as one more result (an extra iteration for ASHA): return nothing.
    return None if tune else last


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the trial stops at once instead of wasting epochs."""


class _Run:
    def __init__(self, params: TrainParams, data: DataConfig, out_dir: Path, *, tune: bool, resume: bool, config) -> None:
        import torch

        from ._ast import ASTController, EnergyMeter
        from ._augment import build_augment
        from ._heads import build_classifier
        from ._losses import create_loss, loss_options
        from ._optim import Stager, create_optimizer, create_scheduler

        p = self.p = params
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.tune = tune
        self.resume = resume
        if not tune and not resume:  # a fresh standalone run must not append to an old run's rows
            for stale in (METRICS_CSV, *(predictions_file(split) for split in PREDICTION_SPLITS)):
                (out_dir / stale).unlink(missing_ok=True)
        self.config = {k: v for k, v in config.items() if not k.startswith("_")}
        self.deadline_file = Path(config[DEADLINE_KEY]) if tune and config.get(DEADLINE_KEY) else None
        self.torch = torch
        self.threads = p.threads or _assigned_cpus(tune)
        torch.set_num_threads(self.threads)
        want_cuda = p.device == "cuda" or (p.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.amp = bool(p.amp and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        preprocess = {"clahe": p.clahe, "border_crop": p.border_crop}
        self.ds: Dataset = load_dataset(data, image_size=p.image_size, preprocess=preprocess, verbose=not tune)
        if p.cv_folds:
            self.ds = fold_dataset(self.ds, n_folds=p.cv_folds, fold=p.cv_fold)
        torch.manual_seed(p.seed)
        self.model = build_classifier(
            p.backbone,
            head=p.head,
            num_classes=self.ds.num_classes,
            in_chans=self.ds.channels,
            pretrained=p.pretrained,
            pretrained_path=p.pretrained_path,
            drop_rate=p.drop_rate,
        ).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.stager = Stager(self.model, freeze_epochs=p.frozen_epochs, unfreeze=p.unfreeze, unfreeze_step=p.unfreeze_step)
        self.opt = create_optimizer(
            self.model, name=p.optimizer, lr=p.lr, weight_decay=p.weight_decay,
            backbone_lr_mult=p.backbone_lr_mult, momentum=p.momentum, nesterov=p.nesterov,
        )
        n_train = len(self.ds.splits["train"])
        # An "epoch" is one report: a pass over the training split, or `epoch_samples` draws from it.
        self.epoch_samples = int(p.epoch_samples) if p.epoch_samples else n_train
        self.steps_per_epoch = max(1, _n_batches(self.epoch_samples, p.batch_size))
        self.sched = create_scheduler(
            self.opt, name=p.scheduler, epochs=p.epochs, steps_per_epoch=self.steps_per_epoch, lr=p.lr,
            warmup_epochs=p.warmup_epochs, min_lr=p.min_lr, step_epochs=p.step_epochs, decay_rate=p.decay_rate,
            plateau_patience=p.plateau_patience,
        )
        loss = p.loss if p.loss != "auto" else ("bce" if self.ds.multilabel else "ce")
        class_weights = self.ds.class_weights if loss in ("weighted_ce",) else None
        self.logit_bias = self._prior_bias(class_weights)
        self.loss_fn = create_loss(
            loss, task=self.ds.task, num_classes=self.ds.num_classes,
            class_weights=class_weights, **loss_options(loss, p),
        ).to(self.device)
        self.augment = build_augment(
            p.augment, image_size=self.ds.image_size, hflip=p.hflip, vflip=p.vflip, rotate=p.rotate, affine=p.affine,
            brightness_contrast=p.brightness_contrast, distortion=p.distortion, noise=p.noise, blur=p.blur,
            coarse_dropout=p.coarse_dropout, seed=p.seed,
        )
        # The flips it trains with are the ones it is asked to be blind to: validation and test average over them.
        self.tta = trained_flips(self.augment) if p.tta else ()
        self.ast = (
            ASTController(activation_rate=p.activation_rate, loss_weight=p.ast_loss_weight, min_share=p.ast_min_share,
                          kp=p.ast_kp, ki=p.ast_ki)
            if p.activation_rate < 1.0 else None
        )
        self.ema = None
        if p.ema:
            from timm.utils import ModelEmaV3

            # Warm-up: the average follows the weights closely at first, so runs of a few hundred steps gain too.
            self.ema = ModelEmaV3(self.model, decay=p.ema_decay, use_warmup=True, device=self.device)
        self.energy = EnergyMeter(self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        # uint8 -> normalised float in one multiply-add: (x/255 - mean)/std, as a bundle does it.
        self.scale, self.shift = normalization(self.ds.mean, self.ds.std, device=self.device)
        self.mix_gen = torch.Generator().manual_seed(p.seed + 1)
        self.start_epoch = 0
        self.current_epoch = 0
        self.best = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, Any] | None = None
        self.dense_seconds: list[float] = []
        self.dense_joules: list[float] = []
        self.rng = np.random.default_rng(p.seed)
        self.updates = 0

    def _prior_bias(self, class_weights):
        """The logit offset that gives probabilities for the real class mix (see ``_prior``), or None."""
        from ._prior import prior_logit_bias

        p = self.p
        bias = prior_logit_bias(
            self.ds.splits["train"].labels, num_classes=self.ds.num_classes, multilabel=self.ds.multilabel,
            sampler=p.sampler, class_weights=np.asarray(class_weights) if class_weights is not None else None,
            target=p.prior_correction, target_labels=self.ds.splits["val"].labels,
        )
        if bias is None:
            return None
        return self.torch.tensor(bias, dtype=self.torch.float32, device=self.device).view(1, -1)

    @property
    def eval_model(self):
        """What validation, predictions and the best checkpoint use: the weight average when ``ema`` is on."""
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------ data

    def _to_input(self, images: np.ndarray):
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).float()
        x = x * self.scale + self.shift
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _target(self, labels: np.ndarray):
        torch = self.torch
        t = torch.from_numpy(np.asarray(labels)).to(self.device)
        return t.float() if self.ds.multilabel else t.long()

    def _train_order(self) -> np.ndarray:
        """This epoch's sample order: a permutation, or class-balanced draws with replacement."""
        labels = self.ds.splits["train"].labels
        return train_order(self.p.sampler, labels, n_samples=self.epoch_samples, rng=self.rng, multilabel=self.ds.multilabel)

    def _batches(self, split: str, *, shuffle: bool, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sp = self.ds.splits[split]
        order = self._train_order() if shuffle else np.arange(len(sp))
        n = len(order)
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            if shuffle and len(idx) < 2:
                break  # batch norm cannot train on one sample
            if not shuffle or (not SAMPLER[self.p.sampler].meta["replacement"] and self.epoch_samples <= len(sp)):
                idx = np.sort(idx)  # memmap reads in order (balanced draws repeat indices: keep them)
            yield sp.images[idx], sp.labels[idx]

    def _train_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Training batches, augmented in a background thread so the next batch is ready when the step ends."""
        batches = self._batches("train", shuffle=True, batch_size=self.p.batch_size)
        if self.augment is None:
            yield from batches
            return
        from ._augment import augment_batch

        pool = None
        if (self.p.aug_threads or 1) > 1:
            from concurrent.futures import ThreadPoolExecutor

            pool = ThreadPoolExecutor(max_workers=self.p.aug_threads)
        try:
            yield from _prefetch(((augment_batch(x, self.augment, pool=pool), y) for x, y in batches), depth=2)
        finally:
            if pool is not None:
                pool.shutdown()

    # ------------------------------------------------------------------ loss

    def _loss(self, logits, target):
        return self.loss_fn(logits.float(), target)

    def _eval_loss(self, logits, target):
        """Plain cross-entropy (or masked BCE): comparable across trials whatever loss they train with."""
        import torch.nn.functional as F

        if self.ds.multilabel:
            mask = (target >= 0).float()
            loss = F.binary_cross_entropy_with_logits(logits.float(), target.clamp(min=0), reduction="none")
            return (loss * mask).sum() / mask.sum().clamp(min=1.0)
        return F.cross_entropy(logits.float(), target)

    # ------------------------------------------------------------------ epochs

    def _step(self, x, y, state: dict) -> None:
        """Forward and backward on (x, y); steps the optimizer every ``accum_steps`` micro-batches."""
        torch = self.torch
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            logits = self.model(x)
        loss = self._loss(logits, y).mean()
        if not torch.isfinite(loss):
            raise TrainingDiverged(
                f"loss is {float(loss.detach())} at epoch {self.current_epoch + 1}: training diverged; lower `lr` or set `clip_grad_norm`"
            )
        self.scaler.scale(loss / self.p.accum_steps).backward()
        state["micro"] += 1
        state["loss"] += float(loss.detach()) * len(y)
        state["backprop"] += len(y)
        if state["micro"] % self.p.accum_steps == 0:
            self._optimizer_step()

    def _optimizer_step(self) -> None:
        if self.p.clip_grad_norm:
            self.scaler.unscale_(self.opt)
            torch = self.torch
            torch.nn.utils.clip_grad_norm_([q for q in self.model.parameters() if q.grad is not None], self.p.clip_grad_norm)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model, step=self.updates)

    def _train_epoch(self, epoch: int = 0) -> dict[str, float]:
        torch = self.torch
        from ._ast import prediction_entropy
        from ._augment import mix_batch
        from ._optim import set_stage_lr

        p = self.p
        n_trainable = self.stager.apply(epoch)
        if p.finetune_lr is not None and self.stager.n_open > 0:
            set_stage_lr(self.opt, p.finetune_lr / p.lr)
        self.stager.set_train_mode()
        sparse = self.ast is not None and epoch >= p.ast_start_epoch
        if self.ast is not None:
            self.ast.reset_epoch()
        mixing = p.cutmix > 0 or p.mixup > 0
        state = {"micro": 0, "loss": 0.0, "backprop": 0}
        seen = 0
        step_seconds = 0.0
        buf_x, buf_y, buffered = [], [], 0
        joules0 = self.energy.read_joules()
        self.opt.zero_grad(set_to_none=True)
        t0 = time.perf_counter()
        for images, labels in self._train_batches():
            x, y = self._to_input(images), self._target(labels)
            if mixing:
                x, y = mix_batch(x, y, num_classes=self.ds.num_classes, multilabel=self.ds.multilabel,
                                 cutmix=p.cutmix, mixup=p.mixup, alpha=p.mix_alpha, generator=self.mix_gen)
            seen += len(y)
            if sparse:
                # Cheap no-grad pass (eval mode: no batch-norm statistics updated) to pick the samples worth a backward.
                self.model.eval()
                with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                    logits = self.model(x).float()
                    keep = self.ast.select(self._loss(logits, y), prediction_entropy(logits, multilabel=self.ds.multilabel))
                self.stager.set_train_mode()
                buf_x.append(x[keep])
                buf_y.append(y[keep])
                buffered += int(keep.sum())
                # Selected samples are pooled into full batches: small batches waste the speed-up.
                while buffered >= p.batch_size:
                    bx, by = torch.cat(buf_x), torch.cat(buf_y)
                    s0 = time.perf_counter()
                    self._step(bx[: p.batch_size], by[: p.batch_size], state)
                    step_seconds += time.perf_counter() - s0
                    buf_x, buf_y, buffered = [bx[p.batch_size :]], [by[p.batch_size :]], buffered - p.batch_size
            else:
                self._step(x, y, state)
            self.updates += 1
            self.sched.step_update(num_updates=self.updates)
        if sparse and buffered >= 2:
            s0 = time.perf_counter()
            self._step(torch.cat(buf_x), torch.cat(buf_y), state)
            step_seconds += time.perf_counter() - s0
        if state["micro"] % p.accum_steps:
            self._optimizer_step()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        joules = self.energy.read_joules() - joules0
        row = {
            "train_loss": state["loss"] / max(state["backprop"], 1),
            "train_images_per_s": seen / seconds,
            "train_seconds": seconds,
            "trainable_params": n_trainable,
        }
        if self.ast is not None:
            row["ast_activation_rate"] = state["backprop"] / max(seen, 1) if sparse else 1.0
            row["ast_samples_backprop"] = state["backprop"]
            row["ast_threshold"] = self.ast.threshold if self.ast.threshold is not None else math.nan
            if sparse:
                if self.dense_seconds:
                    dense = float(np.mean(self.dense_seconds))
                else:  # no dense epoch yet: a dense epoch's cost from this epoch's own per-sample step time
                    dense = step_seconds / max(state["backprop"], 1) * seen
                row["compute_savings"] = 1.0 - seconds / dense if dense > 0 else math.nan
                if self.energy.available and self.dense_joules:
                    row["energy_joules"] = joules
                    row["energy_savings"] = 1.0 - joules / float(np.mean(self.dense_joules))
            else:
                self.dense_seconds.append(seconds)
                if self.energy.available:
                    self.dense_joules.append(joules)
                    row["energy_joules"] = joules
        return row

    def predict(self, split: str) -> tuple[np.ndarray, float]:
        """Probabilities and mean loss of ``split`` with the current weights (logits averaged over ``self.tta``'s flips)."""
        torch = self.torch
        model = self.eval_model
        model.eval()
        probs, total = [], 0.0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            for images, labels in self._batches(split, shuffle=False, batch_size=self.p.eval_batch_size):
                logits = flip_average(model, self._to_input(images), self.tta).float()
                if self.logit_bias is not None:
                    logits = logits + self.logit_bias
                total += float(self._eval_loss(logits, self._target(labels))) * len(labels)
                p = torch.sigmoid(logits) if self.ds.multilabel else torch.softmax(logits, 1)
                probs.append(p.cpu().numpy())
        n = len(self.ds.splits[split])
        return np.concatenate(probs) if probs else np.zeros((0, self.ds.num_classes)), total / max(n, 1)

    def run(self) -> dict[str, Any]:
        from ._optim import current_lr

        self._restore()
        row: dict[str, Any] = {}
        since_best = 0
        took: list[float] = []
        for epoch in range(self.start_epoch, self.p.epochs):
            if self._past_deadline(took):
                break
            t0 = time.perf_counter()
            self.current_epoch = epoch
            row = {"epoch": epoch + 1, "lr": current_lr(self.opt, "head"), "backbone_lr": current_lr(self.opt, "backbone")}
            row.update(self._train_epoch(epoch))
            val_probs, val_loss = self.predict("val")
            row["val_loss"] = val_loss
            row.update(compute_metrics(val_probs, self.ds.splits["val"].labels, task=self.ds.task, class_names=self.ds.class_names))
            row.update(pooled_metrics(self.ds, "val", val_probs))  # val_volume_*: one prediction per volume, if asked
            score = row.get(self.p.select_metric, math.nan)
            if not isinstance(score, float) or math.isnan(score):
                score = -val_loss  # e.g. a validation split with one class: fall back to the loss
            self.sched.step(epoch + 1, score)
            # A refit on folds keeps its last epoch: choosing one on the held-out fold would flatter the
            # out-of-fold predictions the ensemble stacks on.
            if (score > self.best) if not self.p.cv_folds else (epoch + 1 == self.p.epochs):
                self.best, self.best_epoch = score, epoch + 1
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.eval_model.state_dict().items()}
                # Written at every improvement, so a trial that a scheduler stops early still leaves its predictions.
                self._write_predictions(val_probs)
                since_best = 0
            else:
                since_best += 1
            # (A refit on folds has no best until its last epoch: it reports the epoch's own score.)
            row["best_score"] = self.best if math.isfinite(self.best) else score
            row["best_epoch"] = self.best_epoch
            row["epoch_seconds"] = time.perf_counter() - t0
            took.append(row["epoch_seconds"])
            self._report(row, epoch + 1)
            if not self.tune and self.p.early_stop_patience and since_best >= self.p.early_stop_patience:
                print(f"[medsweep] early stop: no improvement of {self.p.select_metric} in {since_best} epochs")
                break
        self._finish()
        return row

    def _past_deadline(self, took: list[float]) -> bool:
        """Whether the next epoch would end after the sweep's deadline (judged by this run's last epochs).

        Tune ends a budget by stopping the trials that still run, and a trial stops only at its next
        report: on a large data set that is most of an epoch past the budget. A trial that sees the end
        coming stops at its last report instead, its best predictions written.
        """
        if self.deadline_file is None or not took:
            return False
        try:
            deadline = float(self.deadline_file.read_text().strip())
        except (OSError, ValueError):
            return False  # no deadline (a cluster without a shared run folder): Tune's budget alone ends it
        recent = took[-3:]
        return time.time() + 1.1 * sum(recent) / len(recent) > deadline

    # ------------------------------------------------------------------ outputs

    def _write_predictions(self, val_probs: np.ndarray) -> None:
        test_probs, _ = self.predict("test")
        for split, probs in (("val", val_probs), ("test", test_probs)):
            write_predictions(predictions_frame(self.ds, split, probs), self.out_dir, split)

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.current_epoch,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "updates": self.updates,
            "dense_seconds": list(self.dense_seconds),
            "dense_joules": list(self.dense_joules),
            "ast": self.ast.state_dict() if self.ast is not None else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else {},
            "rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.torch.get_rng_state(),
        }

    def _save_checkpoint(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        # Under Tune an epoch that is the best so far is saved once: its weights are the best weights (restore
        # reads them). Standalone, checkpoint/ keeps the last epoch's weights under their own name.
        # (Not with EMA: the best weights are then the average's, and training resumes from the raw ones.)
        last_is_best = self.tune and self.ema is None and self.best_state is not None and self.best_epoch == self.current_epoch
        self.torch.save({**self._state(), "last_is_best": last_is_best}, directory / STATE_FILE)
        if not last_is_best:
            save_file(_contiguous(self.model.state_dict()), directory / LAST_WEIGHTS)
        if self.best_state is not None:
            save_file(_contiguous(self.best_state), directory / BEST_WEIGHTS)
        write_model_json(directory, self._model_info())
        # The best epoch's predictions travel with the checkpoint: Tune persists checkpoints to
        # storage, while the trial directory may stay on a worker node.
        for split in ("val", "test"):
            src = self.out_dir / predictions_file(split)
            if src.is_file():
                shutil.copy2(src, directory / src.name)

    def _model_info(self) -> dict[str, Any]:
        spec = MemberSpec(
            backbone=self.p.backbone,
            head=self.p.head,
            num_classes=self.ds.num_classes,
            channels=self.ds.channels,
            image_size=self.ds.image_size,
            mean=tuple(self.ds.mean),
            std=tuple(self.ds.std),
            preprocessing={"clahe": self.p.clahe, "border_crop": self.p.border_crop},
            task=self.ds.task,
            class_names=tuple(self.ds.class_names),
            # Added to the logits before softmax/sigmoid wherever the weights are used (the bundle too).
            logit_bias=tuple(self.logit_bias.view(-1).tolist()) if self.logit_bias is not None else None,
            tta=self.tta,
        )
        return {
            **spec.to_model_json(),
            "params": asdict(self.p),
            "best_epoch": self.best_epoch,
            "best_score": self.best,
            "data": self.ds.split_report(),
        }

    def _restore(self) -> None:
        from safetensors.torch import load_file

        directory: Path | None = None
        tmp_ctx = None
        if self.tune:
            import ray.tune

            ckpt = ray.tune.get_checkpoint()
            if ckpt is not None:
                tmp_ctx = ckpt.as_directory()
                directory = Path(tmp_ctx.__enter__())
        elif self.resume and (self.out_dir / CHECKPOINT_DIR / STATE_FILE).is_file():
            directory = self.out_dir / CHECKPOINT_DIR
        if directory is None:
            return
        if not (directory / STATE_FILE).is_file():
            # A trial that had ended and dropped its resume state (search.keep), restarted because the driver
            # died before Tune saved that it ended: train it again from the start rather than fail.
            if tmp_ctx is not None:
                tmp_ctx.__exit__(None, None, None)
            print(f"[medsweep] {directory} holds no resume state (the trial had ended); training from epoch 0")
            return
        try:
            state = _load_state(self.torch, directory / STATE_FILE, device=self.device)
            last = directory / (BEST_WEIGHTS if state.get("last_is_best") else LAST_WEIGHTS)
            self.model.load_state_dict(load_file(last, device=str(self.device)))
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
            self.updates = int(state["updates"])
            self.dense_seconds = [float(v) for v in state["dense_seconds"]]
            self.dense_joules = [float(v) for v in state["dense_joules"]]
            if self.ast is not None and state["ast"]:
                self.ast.load_state_dict(state["ast"])
            if self.ema is not None and state.get("ema"):
                self.ema.module.load_state_dict(state["ema"])
            self.rng.bit_generator.state = json.loads(state["rng"])
            self.torch.set_rng_state(state["torch_rng"].cpu())
            if (directory / BEST_WEIGHTS).is_file():
                self.best_state = load_file(directory / BEST_WEIGHTS)
            for split in ("val", "test"):
                src = directory / predictions_file(split)
                if src.is_file() and src.parent != self.out_dir:
                    shutil.copy2(src, self.out_dir / src.name)
            self.start_epoch = int(state["epoch"])
        finally:
            if tmp_ctx is not None:
                tmp_ctx.__exit__(None, None, None)
        print(f"[medsweep] resumed from epoch {self.start_epoch} ({directory})")

    def _report(self, row: dict[str, Any], epoch: int) -> None:
        self.current_epoch = epoch
        if self.tune:
            import ray
            import ray.tune

            # Which Ray node ran the epoch: node IPs are equal on a one-machine cluster, node ids are not.
            row = {**row, "node_id": ray.get_runtime_context().get_node_id()}
            with tempfile.TemporaryDirectory() as tmp:
                self._save_checkpoint(Path(tmp))
                ray.tune.report(row, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
            return
        target = self.out_dir / CHECKPOINT_DIR
        tmp = self.out_dir / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_checkpoint(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        _append_csv(self.out_dir / METRICS_CSV, row)
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if "/" not in k and k not in ("best_epoch",)
        )
        print(f"[medsweep] {shown}", flush=True)

    def _finish(self) -> None:
        from safetensors.torch import save_file

        # Under Tune the best weights are in the trial's checkpoint already (the ensemble reads them there);
        # a second copy in the trial folder would double the disk a sweep leaves.
        if self.best_state is not None and not self.tune:
            save_file(_contiguous(self.best_state), self.out_dir / BEST_WEIGHTS)
        write_model_json(self.out_dir, self._model_info())
        if not (self.out_dir / predictions_file("val")).is_file() and self.best_state is not None:
            self.eval_model.load_state_dict(self.best_state)
            self._write_predictions(self.predict("val")[0])


class Trainer(_Run):
    """One standalone run driven step by step: what benchmarks time and notebooks poke at (``train`` runs
    the whole loop, with checkpoints, early stopping and the trial's files).

    Args:
        params: the training parameters.
        data: the data section.
        out_dir: where the run may write (the data cache lives in ``data.cache_dir``).

    Attributes:
        ds: the prepared ``Dataset``; model, augment: the model and augmentation in use.

    Example:
        >>> t = Trainer(TrainParams(backbone="resnet18", epochs=2), DataConfig.from_dict({"source": "medmnist",
        ...             "dataset": "pneumoniamnist"}), "runs/bench")
        >>> t.train_epoch(0)["train_images_per_s"]       # doctest: +SKIP
        1523.4
        >>> probs, loss = t.predict("val")
    """

    def __init__(self, params: TrainParams, data: DataConfig, out_dir: str | os.PathLike[str]) -> None:
        super().__init__(params, data, Path(out_dir), tune=False, resume=False, config={})

    def train_epoch(self, epoch: int = 0) -> dict[str, float]:
        """Train one epoch; the row of its training metrics (loss, seconds, images per second)."""
        return self._train_epoch(epoch)

    def train_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One epoch's training batches as the sampler draws and augments them: uint8 images, labels."""
        return self._train_batches()

    def to_input(self, images: np.ndarray) -> Any:
        """uint8 ``(N, S, S, C)`` images to the model's normalised float input on the run's device."""
        return self._to_input(images)

    def target(self, labels: np.ndarray) -> Any:
        """Labels to the loss's target tensor on the run's device."""
        return self._target(labels)


def drop_resume_state(checkpoint: str | os.PathLike[str]) -> int:
    """Delete what only resuming a checkpoint needs (optimizer, scheduler, RNG state, the latest weights),
    keeping the best weights, ``model.json`` and the predictions; returns the bytes freed.

    For trials that ended (finished or pruned): nothing resumes them, and the resume state is most of
    their disk.

    Example:
        >>> drop_resume_state("runs/cxr/trial_1a2b3c4d/checkpoint_000005")   # doctest: +SKIP
        254000000
    """
    folder = Path(checkpoint)
    freed = 0
    if (folder / BEST_WEIGHTS).is_file():  # a checkpoint without best weights keeps its last ones (nothing else to use)
        for name in RESUME_FILES:
            path = folder / name
            try:
                freed += path.stat().st_size
                path.unlink()
            except FileNotFoundError:
                continue
    return freed


def predictions_frame(ds: Dataset, split: str, probs: np.ndarray):
    """The ensemble step's input: ``sample_id``, ``label`` (or ``label_<class>``), ``prob_<class>``;
    ``group`` (the patient) when the data know it, so the stacking CV folds by patient."""
    import pandas as pd

    sp = ds.splits[split]
    cols: dict[str, Any] = {"sample_id": list(sp.ids)}
    if sp.groups is not None:
        cols["group"] = [str(g) for g in sp.groups]
    if ds.multilabel:
        for j, name in enumerate(ds.class_names):
            cols[f"label_{name}"] = sp.labels[:, j].astype(np.float32)
    else:
        cols["label"] = sp.labels.astype(np.int64)
    for j, name in enumerate(ds.class_names):
        cols[f"prob_{name}"] = probs[:, j].astype(np.float32)
    return pd.DataFrame(cols)


def _prefetch(iterator, *, depth: int = 2):
    """Run ``iterator`` in a background thread, ``depth`` items ahead (augmentation overlaps the step)."""
    import queue
    import threading

    q: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def worker():
        try:
            for item in iterator:
                if stop.is_set():
                    return
                q.put(item)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            q.put(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


def _load_state(torch: Any, path: Path, *, device: Any) -> dict[str, Any]:
    """A checkpoint's ``state.pt``, weights-only: a file that needs real unpickling (code) is refused, not run."""
    import pickle

    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        reason = " ".join(str(exc).split())[:160]
        raise ConfigError(
            f"not a weights-only checkpoint state ({type(exc).__name__}: {reason}); delete the checkpoint "
            "folder and start the run again",
            origin=str(path),
            field="checkpoint",
        ) from None


def _contiguous(state: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v.contiguous() for k, v in state.items()}


def _n_batches(n: int, batch_size: int) -> int:
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 else 0)


def _assigned_cpus(tune: bool) -> int:
    if tune:
        try:
            import ray

            cpus = ray.get_runtime_context().get_assigned_resources().get("CPU")
            if cpus:
                return max(1, int(cpus))
        except Exception:  # noqa: BLE001 - fall back to the machine's count
            pass
    return os.cpu_count() or 1


def _append_csv(path: Path, row: Mapping[str, Any]) -> None:
    """Append a row; when it brings new columns (e.g. AST's after dense epochs), rewrite with the union."""
    rows: list[dict[str, Any]] = []
    fields: list[str] = []
    if path.is_file():
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            fields = list(reader.fieldnames or [])
            if set(row) - set(fields):
                rows = list(reader)
    if path.is_file() and not set(row) - set(fields):
        with open(path, "a", newline="") as fh:
            csv.DictWriter(fh, fieldnames=fields).writerow(row)
        return
    fields += [k for k in row if k not in fields]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows + [dict(row)])
    os.replace(tmp, path)
