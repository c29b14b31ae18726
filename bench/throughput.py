"""Training throughput of the trainable's epoch against a bare hand-written PyTorch loop.

Same model, data, batch size and thread count, measured side by side and interleaved
(bare, trainable, bare, trainable, ...) so that machine drift hits both equally.

    python bench/throughput.py            # full: PneumoniaMNIST train split, 3 rounds
    python bench/throughput.py --quick    # CI: 768 images, 2 rounds

Prints the figures and writes them to bench/out/throughput.json (``--out`` to change).
Target: ratio (trainable / bare) >= 0.90.
"""

from __future__ import annotations

import sys

# bench/ast.py would shadow the standard library's `ast` for scripts run from this folder.
if sys.path and sys.path[0] == __import__("os").path.dirname(__import__("os").path.abspath(__file__)):
    sys.path.pop(0)

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def data_dict(args, tmp: Path) -> dict:
    shared = Path(os.environ.get("MEDSWEEP_DATA_DIR", ROOT.parent / "shared" / "datasets"))
    if (shared / "pneumoniamnist.npz").is_file() and not args.synthetic:
        return {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(shared), "cache_dir": str(tmp / "cache")}
    # No real data here: a synthetic npz of the same shape keeps the comparison meaningful.
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 3882), ("val", 524), ("test", 624)):
        arrays[f"{split}_labels"] = rng.integers(0, 2, size=(n, 1))
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(n, 28, 28), dtype=np.uint8)
    (tmp / "syn").mkdir()
    np.savez(tmp / "syn" / "pneumoniamnist.npz", **arrays)
    return {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(tmp / "syn"), "cache_dir": str(tmp / "cache"), "download": False}


def bare_epoch(model, opt, x_all, y_all, batch_size: int, rng) -> float:
    """The loop people write by hand: tensors already normalised in memory, no metrics, no checkpoints."""
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.from_numpy(rng.permutation(len(x_all)))
    t0 = time.perf_counter()
    seen = 0
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        if len(idx) < 2:
            break
        loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += len(idx)
    return seen / (time.perf_counter() - t0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subset, for CI")
    parser.add_argument("--synthetic", action="store_true", help="use generated data even when the real file is there")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "throughput.json"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)

    import torch

    from trainables._cache import DataConfig
    from trainables._model import create_model
    from trainables._params import TrainParams
    from trainables._train import _Run

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        data = DataConfig.from_dict(data_dict(args, tmp))
        params = TrainParams(backbone=args.backbone, batch_size=args.batch_size, threads=args.threads, epochs=rounds, image_size=28)
        run = _Run(params, data, tmp / "trial", tune=False, resume=False, config={})
        if args.quick:  # trim the split in place: both loops see the same 768 images
            sp = run.ds.splits["train"]
            sp.images, sp.labels, sp.ids = sp.images[:768], sp.labels[:768], sp.ids[:768]
        sp = run.ds.splits["train"]
        x_all = (torch.from_numpy(np.asarray(sp.images)).permute(0, 3, 1, 2).float() * run.scale + run.shift).contiguous()
        y_all = torch.from_numpy(sp.labels).long()
        torch.manual_seed(0)
        bare_model = create_model(args.backbone, num_classes=run.ds.num_classes, in_chans=run.ds.channels)
        bare_opt = torch.optim.AdamW(bare_model.parameters(), lr=1e-3, weight_decay=1e-4)
        rng = np.random.default_rng(0)
        # One warm-up epoch each (allocator, oneDNN kernel selection) that is not counted.
        bare_epoch(bare_model, bare_opt, x_all, y_all, args.batch_size, rng)
        run._train_epoch()
        bare, ours = [], []
        for _ in range(rounds):
            bare.append(bare_epoch(bare_model, bare_opt, x_all, y_all, args.batch_size, rng))
            ours.append(run._train_epoch()["train_images_per_s"])
    result = {
        "benchmark": "throughput",
        "mode": "quick" if args.quick else "full",
        "backbone": args.backbone,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "images_per_epoch": int(len(y_all)),
        "rounds": rounds,
        "bare_images_per_s": [round(v, 1) for v in bare],
        "trainable_images_per_s": [round(v, 1) for v in ours],
        "bare_median": round(statistics.median(bare), 1),
        "trainable_median": round(statistics.median(ours), 1),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3),
        "target_ratio": 0.90,
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/throughput.py" + (" --quick" if args.quick else ""),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(
        f"throughput ({result['mode']}, {args.backbone}, batch {args.batch_size}, {args.threads} threads, "
        f"{result['images_per_epoch']} images/epoch): bare {result['bare_median']} img/s, "
        f"trainable {result['trainable_median']} img/s, ratio {result['ratio']} (target >= 0.90)"
    )
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
