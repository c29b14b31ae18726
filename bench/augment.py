"""Augmentation throughput per level, one thread and a thread pool, against a training step's speed.

Random uint8 images at 28 px (1 channel, MedMNIST-like) and 224 px (3 channels, fundus- or
dermoscopy-like), run through ``augment_batch`` for every level. A figure, not a test.

    python bench/augment.py            # full: 2048 images at 28 px, 256 at 224 px, 3 rounds
    python bench/augment.py --quick    # CI: 256 / 32 images, 1 round

Prints images/s and writes them to bench/out/augment.json (``--out`` to change). Unless
``--no-train``, it also times resnet18 training steps at 28 px and prints how augmentation
compares: the share of a step it would take if done in the training thread.
"""

from __future__ import annotations

import os
import sys

# `python bench/augment.py` puts bench/ first on sys.path, where bench/ast.py would shadow the
# standard library's `ast` (numpy imports it): look in bench/ last.
_HERE = os.path.dirname(os.path.realpath(__file__))
sys.path[:] = [p for p in sys.path if os.path.realpath(p or ".") != _HERE]

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (size, channels): the two shapes the brief names, each with its usual channel count.
SHAPES = ((28, 1), (224, 3))


def time_augment(images: np.ndarray, level: str, *, threads: int, rounds: int) -> float:
    """Median images/s of ``augment_batch`` over ``rounds`` passes (``none``: the plain copy)."""
    from trainables import augment_batch, build_augment

    size = images.shape[1]
    aug = build_augment(level, image_size=size, seed=0)
    pool = ThreadPoolExecutor(threads) if threads > 1 else None
    try:
        augment_batch(images[: min(32, len(images))], aug, pool=pool)  # warm-up: imports, pool start
        rates = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            augment_batch(images, aug, pool=pool)
            rates.append(len(images) / (time.perf_counter() - t0))
    finally:
        if pool is not None:
            pool.shutdown()
    return statistics.median(rates)


def time_training(*, backbone: str, size: int, channels: int, batch_size: int, steps: int, threads: int) -> float:
    """Images/s (median step) of forward + backward + AdamW on a randomly initialised timm model, on CPU."""
    import timm
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = timm.create_model(backbone, pretrained=False, num_classes=2, in_chans=channels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, channels, size, size)
    y = torch.randint(0, 2, (batch_size,))
    model.train()

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):  # warm-up: oneDNN picks its kernels on the first steps
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    # The median step: on a shared CPU a neighbour's burst hits a few steps, not the figure.
    return batch_size / statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few images and one round, for CI")
    parser.add_argument("--rounds", type=int, default=None, help="passes per figure (median); default 3, quick 1")
    parser.add_argument("--pool-threads", type=int, default=2, help="threads of the pooled figure")
    parser.add_argument("--cv2-threads", type=int, default=1,
                        help="OpenCV's own threads (default 1, so '1 thread' means one core)")
    parser.add_argument("--no-train", action="store_true", help="skip the training-step comparison")
    parser.add_argument("--train-threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--reference-train-ips", type=float, default=400.0,
                        help="training images/s to compare with as well (resnet18 at 28 px on the 2-core CI CPU)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "augment.json"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (1 if args.quick else 3)
    counts = {28: 256, 224: 32} if args.quick else {28: 2048, 224: 256}

    import cv2

    from trainables import AUGMENT_LEVELS

    cv2.setNumThreads(args.cv2_threads)
    rng = np.random.default_rng(0)
    results = []
    print(f"augment throughput, images/s (median of {rounds}; cv2 threads {args.cv2_threads}; {os.cpu_count()} CPUs)")
    print(f"  {'size':>8} {'level':>9} {'1 thread':>10} {f'{args.pool_threads} threads':>10}")
    for size, channels in SHAPES:
        images = rng.integers(0, 256, size=(counts[size], size, size, channels), dtype=np.uint8)
        for level in AUGMENT_LEVELS:
            row = {"size": size, "channels": channels, "level": level, "images": len(images)}
            row["ips_1"] = round(time_augment(images, level, threads=1, rounds=rounds), 1)
            row[f"ips_{args.pool_threads}"] = round(time_augment(images, level, threads=args.pool_threads, rounds=rounds), 1)
            results.append(row)
            print(f"  {f'{size}px/{channels}c':>8} {level:>9} {row['ips_1']:>10.0f} {row[f'ips_{args.pool_threads}']:>10.0f}")

    out: dict = {
        "quick": args.quick,
        "rounds": rounds,
        "cpu_count": os.cpu_count(),
        "cv2_threads": args.cv2_threads,
        "pool_threads": args.pool_threads,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "results": results,
    }
    try:
        import albumentations

        out["albumentations"] = albumentations.__version__
    except ImportError:  # pragma: no cover
        pass

    train_rates = {"reference": args.reference_train_ips}
    if not args.no_train:
        train_ips = time_training(
            backbone="resnet18", size=28, channels=1, batch_size=64, steps=3 if args.quick else 10, threads=args.train_threads
        )
        out["train"] = {"backbone": "resnet18", "size": 28, "channels": 1, "batch_size": 64,
                        "threads": args.train_threads, "ips": round(train_ips, 1)}
        print(f"training resnet18 at 28 px, batch 64, {args.train_threads} threads: {train_ips:.0f} images/s (measured)")
        train_rates["measured"] = train_ips
    out["comparison_28px"] = []
    for which, train_ips in train_rates.items():
        print(f"28 px augmentation against {which} training speed {train_ips:.0f} images/s:")
        for row in results:
            if row["size"] != 28 or row["level"] == "none":
                continue
            aug_ips = row["ips_1"]
            # Augmenting in the training thread adds 1/aug_ips per image to 1/train_ips.
            share = (1 / aug_ips) / (1 / aug_ips + 1 / train_ips)
            out["comparison_28px"].append({
                "train": which, "train_ips": round(train_ips, 1), "level": row["level"], "augment_ips_1": aug_ips,
                "ratio": round(aug_ips / train_ips, 2), "share_of_step_in_line": round(share, 3),
            })
            print(f"  {row['level']:>9}: augment {aug_ips:.0f} img/s = {aug_ips / train_ips:.1f}x training; "
                  f"done in the training thread it would take {share:.1%} of each step")

    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
