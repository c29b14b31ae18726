"""Test-time flips, paired: each kept trial of a finished sweep scored on the image alone and averaged over flips.

The same weights predict the validation and test splits three ways: the image alone, the mean logits over
the image and its horizontal mirror (what a trial trained with the shipped augmentation writes, TrainParams.tta),
and over all four horizontal/vertical flips. The difference is paired (same model, same images), so its
bootstrap interval resamples the test images once for both figures.

    python bench/tta.py runs/bloodmnist                      # every trial folder with weights in the run
    python bench/tta.py /tmp/q/pneumoniamnist-500/pneumoniamnist-500 --out bench/out/tta_p500.json

Run a sweep with ``--set search.keep=weights`` to keep every trial's weights, not only the ensemble's.
Prints a table and writes bench/out/tta.json (``--out`` to change).
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
VIEWS = {"image": (), "hflip": ("hflip",), "hvflip": ("hflip", "vflip")}


def trial_folders(run_dir: Path) -> list[Path]:
    """Folders under ``run_dir`` with a trial's best weights and model.json (the newest checkpoint of each trial)."""
    from trainables.artifacts import BEST_WEIGHTS, MODEL_JSON

    newest: dict[Path, Path] = {}
    for weights in sorted(run_dir.rglob(BEST_WEIGHTS)):
        folder = weights.parent
        if not (folder / MODEL_JSON).is_file() or "ensemble" in folder.parts:
            continue
        trial = folder.parent if folder.name.startswith("checkpoint") else folder
        if trial not in newest or folder.name > newest[trial].name:
            newest[trial] = folder
    return [newest[t] for t in sorted(newest)]


def predict(model, spec, images: np.ndarray, flips: tuple[str, ...], *, batch_size: int = 512) -> np.ndarray:
    import torch

    from trainables import flip_average
    from trainables.artifacts import normalization

    scale, shift = normalization(spec.mean, spec.std)
    bias = torch.tensor(spec.logit_bias, dtype=torch.float32) if spec.logit_bias is not None else None
    out = []
    with torch.inference_mode():
        for b in range(0, len(images), batch_size):
            x = torch.from_numpy(np.array(images[b : b + batch_size])).permute(0, 3, 1, 2).float() * scale + shift
            logits = flip_average(model, x, flips).float()
            if bias is not None:
                logits = logits + bias
            out.append(torch.softmax(logits, 1).numpy())
    return np.concatenate(out)


def paired_ci(a: np.ndarray, b: np.ndarray, y: np.ndarray, *, task: str, metric: str, n_boot: int = 1000, seed: int = 0):
    """95 % percentile-bootstrap interval of ``metric(b) - metric(a)``, both scored on the same resampled rows."""
    from ensemble import score

    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        d = score(b[idx], y[idx], task=task, metric=metric) - score(a[idx], y[idx], task=task, metric=metric)
        if np.isfinite(d):
            diffs.append(d)
    return (float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))) if diffs else (float("nan"), float("nan"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a sweep's run folder (runs/<name>)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "tta.json"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import torch
    from safetensors.torch import load_file

    from ensemble import score
    from search import load_space
    from trainables import build_member, load_dataset
    from trainables.artifacts import BEST_WEIGHTS, MemberSpec, read_model_json

    torch.set_num_threads(max(1, torch.get_num_threads()))
    run_dir = Path(args.run_dir)
    space = load_space(run_dir / "space.yaml")
    rows, data = [], {}
    for folder in trial_folders(run_dir):
        info = read_model_json(folder)
        spec = MemberSpec.from_model_json(info)
        if spec.image_size not in data:
            ds = load_dataset(space.data, image_size=spec.image_size, verbose=False)
            data[spec.image_size] = ds
        ds = data[spec.image_size]
        task = "multi-class" if ds.task == "multi-class" else ds.task
        model = build_member(spec)
        model.load_state_dict(load_file(folder / BEST_WEIGHTS))
        model.eval()
        row = {"trial": folder.parent.name if folder.name.startswith("checkpoint") else folder.name,
               "backbone": spec.backbone, "trained_flips": list(spec.tta), "best_epoch": info.get("best_epoch")}
        probs = {}
        for split in ("val", "test"):
            sp = ds.splits[split]
            y = np.asarray(sp.labels)
            for name, flips in VIEWS.items():
                p = predict(model, spec, sp.images, flips)
                probs[(split, name)] = p
                for metric in ("auroc", "accuracy"):
                    row[f"{split}.{name}.{metric}"] = score(p, y, task=task, metric=metric)
        y = np.asarray(ds.splits["test"].labels)
        for metric in ("auroc", "accuracy"):
            row[f"test.hflip-image.{metric}.ci95"] = paired_ci(probs[("test", "image")], probs[("test", "hflip")], y,
                                                                task=task, metric=metric)
        rows.append(row)
        print(f"{row['trial'][:24]:24s} {spec.backbone:10s} epoch {row['best_epoch']!s:>3s}  test AUROC "
              f"{row['test.image.auroc']:.4f} -> hflip {row['test.hflip.auroc']:.4f} (+{row['test.hflip.auroc'] - row['test.image.auroc']:.4f} "
              f"[{row['test.hflip-image.auroc.ci95'][0]:+.4f}, {row['test.hflip-image.auroc.ci95'][1]:+.4f}]) -> h+v {row['test.hvflip.auroc']:.4f}; "
              f"acc {row['test.image.accuracy']:.4f} -> {row['test.hflip.accuracy']:.4f} -> {row['test.hvflip.accuracy']:.4f}", flush=True)
    if not rows:
        print(f"no trial folder with {BEST_WEIGHTS} under {run_dir}: run the sweep with --set search.keep=weights")
        return 2
    summary = {}
    for split in ("val", "test"):
        for metric in ("auroc", "accuracy"):
            d = np.array([r[f"{split}.hflip.{metric}"] - r[f"{split}.image.{metric}"] for r in rows])
            d4 = np.array([r[f"{split}.hvflip.{metric}"] - r[f"{split}.image.{metric}"] for r in rows])
            summary[f"{split}.{metric}"] = {"hflip_minus_image_mean": float(d.mean()), "hflip_better_share": float((d > 0).mean()),
                                            "hvflip_minus_image_mean": float(d4.mean())}
    print(f"{len(rows)} trials; mean change with hflip (share of trials it helped), and with all four flips:")
    for key, s in summary.items():
        print(f"  {key:14s} hflip {s['hflip_minus_image_mean']:+.4f} ({s['hflip_better_share']:.0%})   "
              f"h+v {s['hvflip_minus_image_mean']:+.4f}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"run_dir": str(run_dir), "trials": rows, "summary": summary}, indent=1))
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
