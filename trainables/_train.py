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

from ._cache import DataConfig, Dataset, load_dataset
from ._metrics import compute_metrics
from ._model import create_model
from ._params import TrainParams

STATE_FILE = "state.pt"
LAST_WEIGHTS = "model.safetensors"
BEST_WEIGHTS = "best.safetensors"


def _in_tune() -> bool:
    try:
        from ray.tune.trainable.trainable_fn_utils import _in_tune_session
    except ImportError:  # pragma: no cover - ray is a dependency, but keep standalone runs independent of it
        return False
    return bool(_in_tune_session())


def train(config: Mapping[str, Any]) -> dict[str, Any] | None:
    """Train one trial. Ray Tune calls this with a trial's config; it also runs standalone.

    ``config`` holds the training parameters (see ``TrainParams``) and ``data`` (the data
    section of a space file). Under Tune every epoch is reported with ``ray.tune.report``
    and a checkpoint; standalone, rows go to ``<_out_dir>/metrics.csv`` and the checkpoint to
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
    tune = _in_tune()
    if tune:
        import ray.tune

        out_dir = Path(ray.tune.get_context().get_trial_dir())
    else:
        out_dir = Path(config.get("_out_dir") or "runs/fit")
    out_dir.mkdir(parents=True, exist_ok=True)
    last = _Run(params, data, out_dir, tune=tune, resume=bool(config.get("_resume", False)), config=config).run()
    # Under Tune a returned dict counts as one more result (an extra iteration for ASHA): return nothing.
    return None if tune else last


class _Run:
    def __init__(self, params: TrainParams, data: DataConfig, out_dir: Path, *, tune: bool, resume: bool, config) -> None:
        import torch

        self.p = params
        self.out_dir = out_dir
        self.tune = tune
        self.resume = resume
        if not tune and not resume:  # a fresh standalone run must not append to an old run's rows
            for stale in ("metrics.csv", "predictions_val.parquet", "predictions_test.parquet"):
                (out_dir / stale).unlink(missing_ok=True)
        self.config = {k: v for k, v in config.items() if not k.startswith("_")}
        self.torch = torch
        self.threads = params.threads or _assigned_cpus(tune)
        torch.set_num_threads(self.threads)
        want_cuda = params.device == "cuda" or (params.device == "auto" and torch.cuda.is_available())
        self.device = torch.device("cuda" if want_cuda else "cpu")
        self.amp = bool(params.amp and self.device.type == "cuda")
        self.amp_dtype = torch.bfloat16 if self.amp and torch.cuda.is_bf16_supported() else torch.float16
        self.ds: Dataset = load_dataset(data, image_size=params.image_size, verbose=not tune)
        torch.manual_seed(params.seed)
        self.model = create_model(
            params.backbone,
            num_classes=self.ds.num_classes,
            in_chans=self.ds.channels,
            pretrained=params.pretrained,
            pretrained_path=params.pretrained_path,
            drop_rate=params.drop_rate,
        ).to(self.device)
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=params.lr, weight_decay=params.weight_decay)
        n_train = len(self.ds.splits["train"])
        self.steps_per_epoch = max(1, _n_batches(n_train, params.batch_size))
        self.sched = torch.optim.lr_scheduler.CosineAnnealingLR(self.opt, T_max=params.epochs * self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp and self.amp_dtype == torch.float16)
        mean = torch.tensor(self.ds.mean, device=self.device).view(1, -1, 1, 1)
        std = torch.tensor(self.ds.std, device=self.device).view(1, -1, 1, 1)
        # uint8 -> normalised float in one multiply-add: (x/255 - mean)/std.
        self.scale = 1.0 / (255.0 * std)
        self.shift = -mean / std
        self.start_epoch = 0
        self.best = -math.inf
        self.best_epoch = -1
        self.best_state: dict[str, Any] | None = None
        self.rng = np.random.default_rng(params.seed)

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

    def _batches(self, split: str, *, shuffle: bool, batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        sp = self.ds.splits[split]
        n = len(sp)
        order = self.rng.permutation(n) if shuffle else np.arange(n)
        for b in range(0, n, batch_size):
            idx = order[b : b + batch_size]
            if shuffle and len(idx) < 2:
                break  # batch norm cannot train on one sample
            idx = np.sort(idx)  # memmap reads in order
            yield sp.images[idx], sp.labels[idx]

    # ------------------------------------------------------------------ loss

    def _loss(self, logits, target):
        import torch.nn.functional as F

        if self.ds.multilabel:
            mask = (target >= 0).float()
            loss = F.binary_cross_entropy_with_logits(logits.float(), target.clamp(min=0), reduction="none")
            return (loss * mask).sum() / mask.sum().clamp(min=1.0)
        return F.cross_entropy(logits.float(), target)

    # ------------------------------------------------------------------ epochs

    def _train_epoch(self) -> dict[str, float]:
        torch = self.torch
        self.model.train()
        total, seen = 0.0, 0
        t0 = time.perf_counter()
        for images, labels in self._batches("train", shuffle=True, batch_size=self.p.batch_size):
            x, y = self._to_input(images), self._target(labels)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
                logits = self.model(x)
            loss = self._loss(logits, y)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.opt)
            self.scaler.update()
            self.sched.step()
            total += float(loss.detach()) * len(labels)
            seen += len(labels)
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        return {"train_loss": total / max(seen, 1), "train_images_per_s": seen / seconds, "train_seconds": seconds}

    def predict(self, split: str) -> tuple[np.ndarray, float]:
        """Probabilities and mean loss of ``split`` with the current weights."""
        torch = self.torch
        self.model.eval()
        probs, total = [], 0.0
        with torch.inference_mode(), torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp):
            for images, labels in self._batches(split, shuffle=False, batch_size=self.p.eval_batch_size):
                logits = self.model(self._to_input(images)).float()
                total += float(self._loss(logits, self._target(labels))) * len(labels)
                p = torch.sigmoid(logits) if self.ds.multilabel else torch.softmax(logits, 1)
                probs.append(p.cpu().numpy())
        n = len(self.ds.splits[split])
        return np.concatenate(probs) if probs else np.zeros((0, self.ds.num_classes)), total / max(n, 1)

    def run(self) -> dict[str, Any]:
        self._restore()
        row: dict[str, Any] = {}
        for epoch in range(self.start_epoch, self.p.epochs):
            t0 = time.perf_counter()
            row = {"epoch": epoch + 1, "lr": self.opt.param_groups[0]["lr"]}
            row.update(self._train_epoch())
            val_probs, val_loss = self.predict("val")
            row["val_loss"] = val_loss
            row.update(compute_metrics(val_probs, self.ds.splits["val"].labels, task=self.ds.task, class_names=self.ds.class_names))
            score = row.get(self.p.select_metric, math.nan)
            if not isinstance(score, float) or math.isnan(score):
                score = -val_loss  # e.g. a validation split with one class: fall back to the loss
            if score > self.best:
                self.best, self.best_epoch = score, epoch + 1
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}
                # Written at every improvement, so a trial that a scheduler stops early still leaves its predictions.
                self._write_predictions(val_probs)
            row["best_score"] = self.best
            row["best_epoch"] = self.best_epoch
            row["epoch_seconds"] = time.perf_counter() - t0
            self._report(row, epoch + 1)
        self._finish()
        return row

    # ------------------------------------------------------------------ outputs

    def _write_predictions(self, val_probs: np.ndarray) -> None:
        test_probs, _ = self.predict("test")
        for split, probs in (("val", val_probs), ("test", test_probs)):
            frame = predictions_frame(self.ds, split, probs)
            tmp = self.out_dir / f".predictions_{split}.parquet.tmp"
            frame.to_parquet(tmp, index=False)
            os.replace(tmp, self.out_dir / f"predictions_{split}.parquet")

    def _state(self) -> dict[str, Any]:
        return {
            "epoch": self.current_epoch,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "scaler": self.scaler.state_dict(),
            "best": self.best,
            "best_epoch": self.best_epoch,
            "rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.torch.get_rng_state(),
        }

    def _save_checkpoint(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        self.torch.save(self._state(), directory / STATE_FILE)
        save_file(_contiguous(self.model.state_dict()), directory / LAST_WEIGHTS)
        if self.best_state is not None:
            save_file(_contiguous(self.best_state), directory / BEST_WEIGHTS)
        (directory / "model.json").write_text(json.dumps(self._model_info(), indent=1))
        # The best epoch's predictions travel with the checkpoint: Tune persists checkpoints to
        # storage, while the trial directory may stay on a worker node.
        for split in ("val", "test"):
            src = self.out_dir / f"predictions_{split}.parquet"
            if src.is_file():
                shutil.copy2(src, directory / src.name)

    def _model_info(self) -> dict[str, Any]:
        return {
            "backbone": self.p.backbone,
            "num_classes": self.ds.num_classes,
            "in_chans": self.ds.channels,
            "image_size": self.ds.image_size,
            "task": self.ds.task,
            "class_names": self.ds.class_names,
            "mean": self.ds.mean,
            "std": self.ds.std,
            "params": asdict(self.p),
            "best_epoch": self.best_epoch,
            "best_score": self.best,
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
        elif self.resume and (self.out_dir / "checkpoint" / STATE_FILE).is_file():
            directory = self.out_dir / "checkpoint"
        if directory is None:
            return
        try:
            state = self.torch.load(directory / STATE_FILE, map_location=self.device, weights_only=True)
            self.model.load_state_dict(load_file(directory / LAST_WEIGHTS, device=str(self.device)))
            self.opt.load_state_dict(state["optimizer"])
            self.sched.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.best, self.best_epoch = float(state["best"]), int(state["best_epoch"])
            self.rng.bit_generator.state = json.loads(state["rng"])
            self.torch.set_rng_state(state["torch_rng"].cpu())
            if (directory / BEST_WEIGHTS).is_file():
                self.best_state = load_file(directory / BEST_WEIGHTS)
            for split in ("val", "test"):
                src = directory / f"predictions_{split}.parquet"
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
            import ray.tune

            with tempfile.TemporaryDirectory() as tmp:
                self._save_checkpoint(Path(tmp))
                ray.tune.report(row, checkpoint=ray.tune.Checkpoint.from_directory(tmp))
            return
        target = self.out_dir / "checkpoint"
        tmp = self.out_dir / ".checkpoint.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self._save_checkpoint(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
        _append_csv(self.out_dir / "metrics.csv", row)
        shown = " ".join(
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in row.items()
            if "/" not in k and k not in ("best_epoch",)
        )
        print(f"[medsweep] {shown}", flush=True)

    def _finish(self) -> None:
        from safetensors.torch import save_file

        if self.best_state is not None:
            save_file(_contiguous(self.best_state), self.out_dir / BEST_WEIGHTS)
        (self.out_dir / "model.json").write_text(json.dumps(self._model_info(), indent=1))
        if not (self.out_dir / "predictions_val.parquet").is_file() and self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            self._write_predictions(self.predict("val")[0])


def predictions_frame(ds: Dataset, split: str, probs: np.ndarray):
    """The ensemble step's input: ``sample_id``, ``label`` (or ``label_<class>``), ``prob_<class>``."""
    import pandas as pd

    sp = ds.splits[split]
    cols: dict[str, Any] = {"sample_id": list(sp.ids)}
    if ds.multilabel:
        for j, name in enumerate(ds.class_names):
            cols[f"label_{name}"] = sp.labels[:, j].astype(np.float32)
    else:
        cols["label"] = sp.labels.astype(np.int64)
    for j, name in enumerate(ds.class_names):
        cols[f"prob_{name}"] = probs[:, j].astype(np.float32)
    return pd.DataFrame(cols)


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
    new = not path.is_file()
    with open(path, "a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)
