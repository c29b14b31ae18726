"""Overheads, measured side by side in one run.

    trainable  the trainable's epoch against a bare hand-written PyTorch loop, interleaved
               (bare, trainable, bare, ...) so machine drift hits both. Target: ratio >= 0.90.
    epoch      end to end: a whole trial epoch under Ray Tune (training, validation and its metrics,
               the best epoch's predictions, the checkpoint, Tune's report: Tune's ``time_this_iter_s``)
               against a bare loop that trains and evaluates (validation AUROC) each epoch. Target >= 0.90.
    pipeline   the data pipeline alone (cache read, augmentation at each level, uint8 -> float) against
               training speed: at 28 px the loader must never be the bottleneck (ratio > 1 at every level).
    ray        a small sweep through ``python -m search.run``: its wall time against the sum of the
               trials' own times divided by the concurrency. Target: at most 1.15.
    bundle     that sweep's exported ensemble: images/s of ``Bundle.predict_proba`` against the sum of its
               members run alone (the time of running each member by itself, added up).
    onnx       the same bundle exported as one ONNX graph (python -m ensemble.export): images/s in onnxruntime
               against ``Bundle.predict_proba`` on the same uint8 test images, side by side (needs ".[export]").
    gpu        only where CUDA is available: resnet50 at 224 px with AMP, the trainable against the raw
               model's forward+backward, and the total images/s of 1, 2 and 4 trials sharing the GPU.

    python bench/throughput.py                      # full: PneumoniaMNIST, every part
    python bench/throughput.py --quick              # CI: a few hundred images, every part small
    python bench/throughput.py --parts trainable    # one part

Prints the figures and writes them to bench/out/throughput.json (``--out`` to change).
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
import subprocess
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



PARTS = ("trainable", "epoch", "pipeline", "ray", "bundle", "onnx", "gpu")
LEVELS = ("none", "simple", "enhanced", "advanced")


def part_trainable(args, tmp: Path, rounds: int) -> dict:
    import torch

    from trainables import DataConfig, Trainer, TrainParams, create_model

    data = DataConfig.from_dict(data_dict(args, tmp))
    # Quick: the trainable's epoch is 768 draws (epoch_samples), as the bare loop's, not the whole split's 3,882.
    params = TrainParams(backbone=args.backbone, batch_size=args.batch_size, threads=args.threads, epochs=rounds, image_size=28,
                         epoch_samples=768 if args.quick else None)
    run = Trainer(params, data, tmp / "trial")
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
    run.train_epoch()
    bare, ours = [], []
    for _ in range(rounds):
        bare.append(bare_epoch(bare_model, bare_opt, x_all, y_all, args.batch_size, rng))
        ours.append(run.train_epoch()["train_images_per_s"])
    res = {
        "backbone": args.backbone, "batch_size": args.batch_size, "threads": args.threads,
        "images_per_epoch": int(len(y_all)), "rounds": rounds,
        "bare_images_per_s": [round(v, 1) for v in bare], "trainable_images_per_s": [round(v, 1) for v in ours],
        "bare_median": round(statistics.median(bare), 1), "trainable_median": round(statistics.median(ours), 1),
        "ratio": round(statistics.median(ours) / statistics.median(bare), 3), "target_ratio": 0.90,
    }
    print(f"trainable: bare {res['bare_median']} img/s, trainable {res['trainable_median']} img/s, "
          f"ratio {res['ratio']} (target >= 0.90)", flush=True)
    return res


def bare_eval(model, x_val, y_val, batch_size: int) -> float:
    """The bare loop's evaluation: validation probabilities and their AUROC, nothing kept."""
    import torch
    from sklearn.metrics import roc_auc_score

    model.eval()
    with torch.inference_mode():
        probs = torch.cat([torch.softmax(model(x_val[b : b + batch_size]), 1) for b in range(0, len(x_val), batch_size)])
    return float(roc_auc_score(y_val.numpy(), probs[:, 1].numpy()))


def part_epoch(args, tmp: Path, rounds: int) -> dict:
    """A whole trial epoch under Tune against a bare train-and-evaluate epoch, same model, data and threads."""
    import ray
    import torch
    from ray import tune

    from trainables import TUNE_KEY, DataConfig, create_model, load_dataset, train

    data = data_dict(args, tmp)
    if args.quick:  # a tenth of PneumoniaMNIST: the same split sizes for both loops
        data = {**data, "root": str(_subsampled(Path(data["root"]), tmp / "epoch-data")), "cache_dir": str(tmp / "epoch-cache")}
    epochs = rounds + 1  # the first epoch (start-up, first checkpoint) is not counted
    config = {"backbone": args.backbone, "batch_size": args.batch_size, "threads": args.threads, "epochs": epochs,
              "image_size": 28, "seed": 0, "data": data, TUNE_KEY: True}
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=args.threads, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        tuner = tune.Tuner(
            tune.with_resources(train, {"cpu": args.threads}),
            param_space=config,
            run_config=tune.RunConfig(storage_path=str(tmp / "epoch-runs"), name="epoch", verbose=0,
                                      checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
        )
        result = tuner.fit()[0]
    finally:
        if started:
            ray.shutdown()
    if result.error is not None:
        raise SystemExit(f"bench/throughput.py: epoch part: the trial failed: {result.error}")
    iters = [float(v) for v in result.metrics_dataframe["time_this_iter_s"]][1:]

    ds = load_dataset(DataConfig.from_dict(data), image_size=28, verbose=False)
    mean = torch.tensor(ds.mean).view(1, -1, 1, 1)
    std = torch.tensor(ds.std).view(1, -1, 1, 1)

    def tensors(split):
        sp = ds.splits[split]
        x = torch.from_numpy(np.asarray(sp.images)).permute(0, 3, 1, 2).float()
        return ((x / 255.0 - mean) / std).contiguous(), torch.from_numpy(np.asarray(sp.labels)).long()

    (x_all, y_all), (x_val, y_val) = tensors("train"), tensors("val")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = create_model(args.backbone, num_classes=ds.num_classes, in_chans=ds.channels)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    rng = np.random.default_rng(0)
    bare = []
    for e in range(epochs):
        t0 = time.perf_counter()
        bare_epoch(model, opt, x_all, y_all, args.batch_size, rng)
        bare_eval(model, x_val, y_val, 256)
        if e:
            bare.append(time.perf_counter() - t0)
    t_bare, t_trial = statistics.median(bare), statistics.median(iters)
    res = {"backbone": args.backbone, "batch_size": args.batch_size, "threads": args.threads,
           "train_images": len(y_all), "val_images": len(y_val), "epochs_counted": len(iters),
           "bare_epoch_s": [round(v, 2) for v in bare], "trial_epoch_s": [round(v, 2) for v in iters],
           "bare_median_s": round(t_bare, 2), "trial_median_s": round(t_trial, 2),
           "ratio": round(t_bare / t_trial, 3), "target_ratio": 0.90}
    print(f"epoch: whole trial epoch under Tune {t_trial:.2f} s vs bare train+evaluate {t_bare:.2f} s: "
          f"ratio {res['ratio']} (target >= 0.90)", flush=True)
    return res


def _subsampled(root: Path, dst: Path) -> Path:
    import importlib.util

    # Loaded by path: bench/ on sys.path would shadow the stdlib's ``ast``.
    spec = importlib.util.spec_from_file_location("medsweep_bench_quality", ROOT / "bench" / "quality.py")
    quality = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(quality)
    if not (dst / "pneumoniamnist.npz").is_file():
        quality.subsample(root / "pneumoniamnist.npz", dst / "pneumoniamnist.npz", 0.1)
    return dst


def part_pipeline(args, tmp: Path, rounds: int, train_speed: float | None) -> dict:
    """Everything the trainer does to a batch before the model sees it, with no model, at each level."""
    import torch

    from trainables import DataConfig, Trainer, TrainParams, build_augment

    data = DataConfig.from_dict(data_dict(args, tmp))
    params = TrainParams(backbone=args.backbone, batch_size=args.batch_size, threads=args.threads, epochs=1, image_size=28)
    run = Trainer(params, data, tmp / "pipeline")
    if args.quick:
        sp = run.ds.splits["train"]
        sp.images, sp.labels, sp.ids = sp.images[:768], sp.labels[:768], sp.ids[:768]
    n = len(run.ds.splits["train"])
    rows = {}
    for level in LEVELS:
        run.augment = build_augment(level, image_size=run.ds.image_size, seed=0)
        speeds = []
        for _ in range(rounds):
            t0 = time.perf_counter()
            seen = 0
            for x, y in run.train_batches():
                run.to_input(x), run.target(y)
                seen += len(y)
            speeds.append(seen / (time.perf_counter() - t0))
        med = statistics.median(speeds)
        rows[level] = {"images_per_s": round(med, 1),
                       "vs_training": round(med / train_speed, 1) if train_speed else None}
        print(f"pipeline: {level:<9} {med:>10.0f} img/s"
              + (f" = {med / train_speed:.1f}x training ({train_speed:.0f} img/s)" if train_speed else ""), flush=True)
    return {"images": n, "threads": torch.get_num_threads(), "training_images_per_s": train_speed, "levels": rows}


def part_ray(args, tmp: Path) -> dict:
    """A sweep of equal trials (random sampler, FIFO, no time budget): wall against the trials' own time."""
    import re

    import pandas as pd

    root = Path(data_dict(args, tmp)["root"])
    if args.quick:
        import importlib.util

        # Loaded by path: bench/ on sys.path would shadow the stdlib's ``ast``.
        spec = importlib.util.spec_from_file_location("medsweep_bench_quality", ROOT / "bench" / "quality.py")
        quality = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(quality)
        subsample = quality.subsample

        subsample(root / "pneumoniamnist.npz", tmp / "ray-data" / "pneumoniamnist.npz", 0.1)
        root = tmp / "ray-data"
    n_trials, epochs = (4, 1) if args.quick else (6, 2)
    sets = [f"data.root={root}", f"search.n_trials={n_trials}", f"epochs={epochs}", "backbone=resnet18",
            "search.sampler.type=random", "search.scheduler=fifo", "search.time_budget_s=null", "ensemble.top_k=3",
            "ensemble.selection=top_k",  # a speed measurement: the bundle keeps its 3 members whatever they score
            "activation_rate=1.0", "unfreeze_epoch=0"]
    cmd = [sys.executable, "-m", "search.run", "spaces/cxr.yaml", "--out", str(tmp / "ray-runs")] + (["--no-report"] if args.quick else [])
    for s in sets:
        cmd += ["--set", s]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    process_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench/throughput.py: ray part: search.run exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    m = re.search(r"sweep \S+ done in (\d+(?:\.\d+)?)s", proc.stdout)
    sweep_wall = float(m.group(1))
    run_dir = tmp / "ray-runs" / "cxr"
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    concurrency = 2
    trial_sum = float(board["wall_s"].sum())
    ideal = trial_sum / concurrency
    res = {"n_trials": n_trials, "epochs": epochs, "concurrency": concurrency, "sweep_wall_s": sweep_wall,
           "process_wall_s": round(process_wall, 1), "sum_trial_s": round(trial_sum, 1), "ideal_s": round(ideal, 1),
           "ratio": round(sweep_wall / ideal, 3), "ratio_with_startup_and_ensemble": round(process_wall / ideal, 3),
           "target_ratio": 1.15, "command": "python " + " ".join(cmd[1:]), "run_dir": str(run_dir)}
    print(f"ray: sweep {sweep_wall:.0f} s vs sum of trials / {concurrency} = {ideal:.1f} s: ratio {res['ratio']} "
          f"(target <= 1.15); whole command incl. Ray start-up and the ensemble step: {process_wall:.0f} s", flush=True)
    return res


def part_bundle(args, bundle_dir: Path, tmp: Path, rounds: int) -> dict:
    """The exported ensemble against the sum of its members run alone, on the test images."""
    import torch

    from ensemble import load
    from trainables.artifacts import prepare_batch

    bundle = load(bundle_dir, device="cpu")
    with np.load(Path(data_dict(args, tmp)["root"]) / "pneumoniamnist.npz") as z:
        images = list(z["test_images"][: (256 if args.quick else None)])
    n, bs = len(images), 64

    def member_alone(i: int) -> float:
        spec, model = bundle.specs[i], bundle.models[i]
        t0 = time.perf_counter()
        for b in range(0, n, bs):
            batch = prepare_batch([np.asarray(img) for img in images[b : b + bs]], spec)
            with torch.inference_mode():
                torch.softmax(model(bundle.model_input(batch, i)).float(), 1)
        return time.perf_counter() - t0

    bundle.predict_proba(images[:bs])  # warm-up
    for i in range(len(bundle.models)):
        member_alone(i)
    ens, alone = [], []
    for _ in range(rounds):
        t0 = time.perf_counter()
        bundle.predict_proba(images, batch_size=bs)
        ens.append(time.perf_counter() - t0)
        alone.append(sum(member_alone(i) for i in range(len(bundle.models))))
    t_ens, t_alone = statistics.median(ens), statistics.median(alone)
    res = {"members": [m["backbone"] for m in bundle.members], "combiner": bundle.combiner.combiner_, "images": n,
           "bundle_images_per_s": round(n / t_ens, 1), "members_alone_images_per_s": round(n / t_alone, 1),
           "ratio": round(t_alone / t_ens, 3)}
    print(f"bundle: {len(bundle.models)} members ({', '.join(res['members'])}), {res['combiner']}: "
          f"{res['bundle_images_per_s']} img/s vs members alone, added up, {res['members_alone_images_per_s']} img/s: "
          f"ratio {res['ratio']}", flush=True)
    return res


def part_onnx(args, bundle_dir: Path, tmp: Path, rounds: int) -> dict:
    """The bundle as one ONNX graph in onnxruntime against ``Bundle.predict_proba``, on the same prepared test images."""
    try:
        import onnxruntime as ort
    except ImportError:
        print('onnx: skipped (onnxruntime is not installed: pip install -e ".[export]")', flush=True)
        return {"skipped": "onnxruntime is not installed"}
    from ensemble import export_onnx, load

    path = tmp / "ensemble.onnx"
    t0 = time.perf_counter()
    exported = export_onnx(bundle_dir, path, update_manifest=False, echo=None)
    export_s = time.perf_counter() - t0
    bundle = load(bundle_dir, device="cpu")
    with np.load(Path(data_dict(args, tmp)["root"]) / "pneumoniamnist.npz") as z:
        raw = z["test_images"][: (256 if args.quick else None)]
    images = bundle.prepare(list(raw))  # uint8 (N, S, S, C): the graph's input, and the bundle's too
    n, bs = len(images), 64
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run_onnx() -> np.ndarray:
        return np.concatenate([session.run(["probabilities"], {"images": images[b : b + bs]})[0] for b in range(0, n, bs)])

    run_onnx(), bundle.predict_proba(images[:bs])  # warm-up
    t_onnx, t_bundle = [], []
    for _ in range(rounds):  # interleaved, so machine drift hits both
        t0 = time.perf_counter()
        got = run_onnx()
        t_onnx.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        want = bundle.predict_proba(images, batch_size=bs)
        t_bundle.append(time.perf_counter() - t0)
    diff = float(np.abs(got.astype(np.float64) - want).max())
    res = {"members": [m["backbone"] for m in bundle.members], "combiner": bundle.combiner.combiner_, "images": n, "batch_size": bs,
           "onnx_images_per_s": round(n / statistics.median(t_onnx), 1),
           "bundle_images_per_s": round(n / statistics.median(t_bundle), 1),
           "ratio": round(statistics.median(t_bundle) / statistics.median(t_onnx), 3),
           "max_abs_diff": diff, "export_check_max_abs_diff": exported.max_abs_diff, "export_s": round(export_s, 1),
           "onnx_mb": round(path.stat().st_size / 1e6, 1), "onnxruntime": ort.__version__}
    print(f"onnx: {len(bundle.models)} members ({', '.join(res['members'])}), {res['combiner']}: onnxruntime "
          f"{res['onnx_images_per_s']} img/s vs Bundle.predict_proba {res['bundle_images_per_s']} img/s on the same {n} images: "
          f"ratio {res['ratio']}; largest difference {diff:.1e}; export {res['export_s']} s, {res['onnx_mb']} MB", flush=True)
    return res


def part_gpu(args, *, device: str, image_size: int, backbone: str, batch_size: int, rounds: int, tmp: Path) -> dict:
    """AMP training at ``image_size`` on ``device``: trainable vs raw forward+backward, then 1/2/4 trials at once."""
    import torch

    from trainables import DataConfig, Trainer, TrainParams, create_model

    n = batch_size * (4 if args.quick else 24)
    rng = np.random.default_rng(0)
    (tmp / "gpu").mkdir(exist_ok=True)
    arrays = {}
    for split, m in (("train", n), ("val", batch_size), ("test", batch_size)):
        arrays[f"{split}_labels"] = rng.integers(0, 2, size=(m, 1))
        arrays[f"{split}_images"] = rng.integers(0, 255, size=(m, image_size, image_size), dtype=np.uint8)
    np.savez(tmp / "gpu" / "pneumoniamnist.npz", **arrays)
    data_raw = {"source": "medmnist", "dataset": "pneumoniamnist", "root": str(tmp / "gpu"), "size": 28,
                "cache_dir": str(tmp / "gpu-cache"), "download": False}
    params = TrainParams(backbone=backbone, batch_size=batch_size, epochs=rounds + 1, image_size=image_size, amp=True,
                         threads=args.threads)
    run = Trainer(params, DataConfig.from_dict(data_raw), tmp / "gpu-trial")

    model = create_model(backbone, num_classes=2, in_chans=1).to(device)
    if device == "cuda":
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch_size, 1, image_size, image_size, device=device)
    y = torch.randint(0, 2, (batch_size,), device=device)
    scaler = torch.amp.GradScaler(device, enabled=device == "cuda")

    def raw_epoch() -> float:
        t0 = time.perf_counter()
        for _ in range(n // batch_size):
            with torch.autocast(device_type=device, dtype=torch.float16 if device == "cuda" else torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        if device == "cuda":
            torch.cuda.synchronize()
        return n / (time.perf_counter() - t0)

    raw_epoch(), run.train_epoch()
    raw, ours = [], []
    for _ in range(rounds):
        raw.append(raw_epoch())
        ours.append(run.train_epoch()["train_images_per_s"])
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else device, "backbone": backbone,
           "image_size": image_size, "batch_size": batch_size, "amp": True,
           "raw_images_per_s": round(statistics.median(raw), 1), "trainable_images_per_s": round(statistics.median(ours), 1)}
    res["ratio"] = round(res["trainable_images_per_s"] / res["raw_images_per_s"], 3)
    print(f"gpu: {res['device']}, {backbone} {image_size} px AMP: raw {res['raw_images_per_s']} img/s, "
          f"trainable {res['trainable_images_per_s']} img/s, ratio {res['ratio']}", flush=True)
    del run
    model = opt = None  # frees the device memory before the sharing runs (a `del` would unbind raw_epoch's cells)

    # Several trials on one device: separate processes, as Tune runs them with fractional GPUs.
    sharing = {}
    for k in ((1, 2) if args.quick else (1, 2, 4)):
        code = (
            "import sys, json; sys.path.insert(0, %r); from pathlib import Path; "
            "from trainables import DataConfig, Trainer, TrainParams; "
            "r = Trainer(TrainParams(**json.loads(sys.argv[1])), DataConfig.from_dict(json.loads(sys.argv[2])), "
            "Path(sys.argv[3])); r.train_epoch(); "
            "print('IPS', max(r.train_epoch()['train_images_per_s'] for _ in range(%d)))"
        ) % (str(ROOT), rounds)
        p_json = json.dumps({"backbone": backbone, "batch_size": batch_size, "epochs": rounds + 1,
                             "image_size": image_size, "amp": True, "threads": max(1, args.threads // k)})
        procs = [subprocess.Popen([sys.executable, "-c", code, p_json, json.dumps(data_raw), str(tmp / f"share{k}-{j}")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for j in range(k)]
        speeds = []
        for pr in procs:
            out, err = pr.communicate()
            if pr.returncode != 0:
                raise SystemExit(f"bench/throughput.py: gpu sharing ({k} trials) failed:\n{err[-2000:]}")
            speeds.append(float(out.rsplit("IPS", 1)[1]))
        sharing[str(k)] = {"per_trial": [round(v, 1) for v in speeds], "total": round(sum(speeds), 1)}
        print(f"gpu: {k} trial(s) sharing the device: {sharing[str(k)]['total']} img/s in total", flush=True)
    res["sharing"] = sharing
    return res


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small subset, for CI")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated: {', '.join(PARTS)}")
    parser.add_argument("--synthetic", action="store_true", help="use generated data even when the real file is there")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--bundle", default=None, help="bundle for the bundle and onnx parts (default: the ray part's)")
    parser.add_argument("--gpu-smoke", action="store_true", help="run the gpu part on the CPU at 32 px (tests its code)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "out" / "throughput.json"))
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 3)
    parts = [p for p in args.parts.split(",") if p]
    for p in parts:
        if p not in PARTS:
            parser.error(f"--parts: unknown part {p!r}; choose from {', '.join(PARTS)}")

    import torch

    torch.set_num_threads(args.threads)
    result = {"benchmark": "throughput", "mode": "quick" if args.quick else "full",
              "machine": f"{platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}",
              "date": time.strftime("%Y-%m-%d"),
              "command": "python bench/throughput.py" + (" --quick" if args.quick else "")
                         + (f" --parts {args.parts}" if args.parts != ",".join(PARTS) else "")}
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        if "trainable" in parts:
            result["trainable"] = part_trainable(args, tmp, rounds)
            result.update({k: result["trainable"][k] for k in ("bare_median", "trainable_median", "ratio")})
        if "epoch" in parts:
            result["epoch"] = part_epoch(args, tmp, rounds)
        if "pipeline" in parts:
            speed = result.get("trainable", {}).get("trainable_median")
            result["pipeline"] = part_pipeline(args, tmp, rounds, speed)
        if "ray" in parts:
            result["ray"] = part_ray(args, tmp)
        if "bundle" in parts:
            bundle = Path(args.bundle) if args.bundle else (Path(result["ray"]["run_dir"]) / "ensemble" if "ray" in result else None)
            if bundle is None:
                parser.error("--parts bundle needs the ray part or --bundle PATH")
            result["bundle"] = part_bundle(args, bundle, tmp, rounds)
        if "onnx" in parts:
            bundle = Path(args.bundle) if args.bundle else (Path(result["ray"]["run_dir"]) / "ensemble" if "ray" in result else None)
            if bundle is None:
                parser.error("--parts onnx needs the ray part or --bundle PATH")
            result["onnx"] = part_onnx(args, bundle, tmp, rounds)
        if "gpu" in parts:
            if torch.cuda.is_available():
                result["gpu"] = part_gpu(args, device="cuda", image_size=224, backbone="resnet50",
                                         batch_size=64, rounds=rounds, tmp=tmp)
            elif args.gpu_smoke:
                result["gpu"] = part_gpu(args, device="cpu", image_size=32, backbone="resnet18",
                                         batch_size=16, rounds=1, tmp=tmp)
            else:
                result["gpu"] = {"skipped": "no CUDA device on this machine"}
                print("gpu: skipped (no CUDA device on this machine)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
