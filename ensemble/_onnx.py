"""A bundle as one ONNX graph: uint8 images in, the ensemble's probabilities (and a binary decision) out.

The graph holds the training's input arithmetic, every member with its logit bias, the combiner, the
temperature and the threshold: what ``Bundle.predict_proba`` computes, as one torch module traced by the
TorchScript-based exporter. Members run in float32 (half-precision weights are cast up); the combiner
runs in float64 as the numpy path does, so the graph matches the bundle to about 1e-7. Before the file is
renamed into place it is run in onnxruntime and compared with the bundle; a graph that differs by more
than the tolerance is not written.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import math
import os
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from trainables import ConfigError
from trainables.artifacts import normalization

__all__ = ["OPSET", "TOLERANCE", "OnnxExport", "combiner_module", "export_onnx"]

# The opset the export writes by default: onnxruntime 1.17+ runs it, and every op the graph needs is in it.
OPSET = 17
TOLERANCE = 1e-4
INPUT = "images"
OUTPUTS = ("probabilities", "decision")

# The numpy path's constants (ensemble._stacking), repeated as graph constants.
_FEATURE_EPS = 1e-7
_TINY = float(np.finfo(float).tiny)
_BELOW_ONE = float(np.nextafter(1.0, 0.0))


@dataclass
class OnnxExport:
    """What ``export_onnx`` wrote and measured."""

    path: Path
    max_abs_diff: float  # largest |onnxruntime - Bundle.predict_proba| over the checked images
    n_images: int
    inputs: str  # which images were checked
    decisions_agree: bool | None  # binary: the graph's decisions equal the bundle's (None otherwise)
    opset: int
    seconds: float

    def as_manifest(self, tolerance: float) -> dict[str, Any]:
        import onnx
        import onnxruntime

        from ._card import file_sha256

        return {
            "file": self.path.name,
            "sha256": file_sha256(self.path),
            "bytes": self.path.stat().st_size,
            "opset": self.opset,
            "inputs": self.inputs,
            "n_images": self.n_images,
            "max_abs_diff": float(self.max_abs_diff),
            "tolerance": float(tolerance),
            "decisions_agree": self.decisions_agree,
            "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__,
            "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }


# ---------------------------------------------------------------- the graph


def _logit(torch: Any, p: Any) -> Any:
    p = torch.clamp(p, _FEATURE_EPS, 1.0 - _FEATURE_EPS)
    return torch.log(p) - torch.log(1.0 - p)


def combiner_module(state: dict[str, Any]) -> Any:
    """The fitted combiner of ``StackingEnsemble.to_dict()`` as a torch module: ``(M, N, K)`` member
    probabilities (float64) -> ``(N, K)`` ensemble probabilities (float64), the numpy path's arithmetic."""
    import torch

    class Combiner(torch.nn.Module):
        def __init__(self, state: dict[str, Any]) -> None:
            super().__init__()
            self.task = str(state["task"])
            self.name = str(state["combiner"])
            self.params = state["params"]
            self.temperature = float(state["temperature"])
            bias = [float(b) for b in (state.get("class_bias") or [0.0] * int(state["n_classes"]))]
            self.has_bias = any(b != 0.0 for b in bias)
            self.register_buffer("class_bias", torch.tensor(bias, dtype=torch.float64).view(1, -1))
            self.n_members = int(state["n_members"])
            self.n_classes = int(state["n_classes"])
            d = torch.float64
            self.mode = "mean"
            if isinstance(self.params, dict) and "weights" in self.params and self.name not in ("logistic", "mlp"):
                # greedy, best (one-hot) and any combiner fitted as member weights
                w = torch.tensor(self.params["weights"], dtype=d)
                if w.shape != (self.n_members,):
                    raise ConfigError(f"combiner {self.name!r}: {len(w)} weights for {self.n_members} members", field="combiner.state")
                self.mode = "weights"
                self.register_buffer("w", w / w.sum())
            elif self.name in ("logistic", "mlp"):
                self.mode = "heads"
                self.heads: list[Any] = []
                heads = self.params["labels"] if self.task == "multi-label" else [self.params]
                for j, head in enumerate(heads):
                    self.heads.append(None if head is None else self._head(head, f"h{j}"))
                if self.task != "multi-label":
                    classes = [int(c) for c in self.params["classes"]]
                    # columns in ``classes`` order -> the K classes (absent ones stay 0): a 0/1 matrix, exact
                    scatter = torch.zeros(len(classes), self.n_classes, dtype=d)
                    for i, c in enumerate(classes):
                        scatter[i, c] = 1.0
                    self.register_buffer("scatter", scatter)
            elif self.name != "mean":
                raise ConfigError(f"unknown combiner {self.name!r}; the graph knows mean, weighted means, logistic and mlp", field="combiner")

        def _head(self, head: dict[str, Any], key: str) -> dict[str, Any]:
            d = torch.float64
            self.register_buffer(f"{key}_mean", torch.tensor(head["mean"], dtype=d))
            self.register_buffer(f"{key}_scale", torch.tensor(head["scale"], dtype=d))
            layers = []
            if "coef" in head:
                self.register_buffer(f"{key}_w0", torch.tensor(head["coef"], dtype=d).T.contiguous())
                self.register_buffer(f"{key}_b0", torch.tensor(head["intercept"], dtype=d))
                layers.append((f"{key}_w0", f"{key}_b0"))
            else:
                for i, (w, b) in enumerate(zip(head["coefs"], head["intercepts"])):
                    self.register_buffer(f"{key}_w{i}", torch.tensor(w, dtype=d))
                    self.register_buffer(f"{key}_b{i}", torch.tensor(b, dtype=d))
                    layers.append((f"{key}_w{i}", f"{key}_b{i}"))
            return {"key": key, "layers": layers, "positive": list(head["classes"]).index(1) if 1 in list(head["classes"]) else None}

        def _head_proba(self, head: dict[str, Any], X: Any) -> Any:
            k = head["key"]
            h = (X - getattr(self, f"{k}_mean")) / getattr(self, f"{k}_scale")
            for i, (w, b) in enumerate(head["layers"]):
                h = h @ getattr(self, w) + getattr(self, b)
                if i < len(head["layers"]) - 1:
                    h = torch.relu(h)
            if h.shape[1] == 1:  # binary: one logistic output for the second class
                p = torch.sigmoid(h)
                return torch.cat([1.0 - p, p], dim=1)
            return torch.softmax(h, dim=1)

        def forward(self, P: Any) -> Any:
            P = torch.clamp(P, 0.0, 1.0)
            if self.mode == "mean":
                out = P.mean(0)
            elif self.mode == "weights":
                out = (P * self.w.view(-1, 1, 1)).sum(0)
            elif self.task == "multi-label":
                cols = []
                for j, head in enumerate(self.heads):
                    if head is None:
                        cols.append(P[:, :, j].mean(0))
                    else:
                        cols.append(self._head_proba(head, _logit(torch, P[:, :, j]).T)[:, head["positive"]])
                out = torch.stack(cols, dim=1)
            else:
                if self.task == "binary":
                    X = _logit(torch, P[:, :, 1]).T
                else:
                    X = torch.log(torch.clamp(P, _FEATURE_EPS, 1.0)).permute(1, 0, 2).reshape(P.shape[1], -1)
                out = self._head_proba(self.heads[0], X) @ self.scatter
            # normalise, then the temperature, as StackingEnsemble.predict_proba
            if self.task == "multi-label":
                out = torch.clamp(out, 0.0, 1.0)
            else:
                out = out / out.sum(1, keepdim=True)
            if self.temperature != 1.0 or self.has_bias:  # softmax(z / T + class_bias), sigmoid per label
                if self.task == "multi-label":
                    p = torch.clamp(out, _TINY, _BELOW_ONE)
                    out = torch.sigmoid((torch.log(p) - torch.log(1.0 - p)) / self.temperature + self.class_bias)
                else:
                    out = torch.softmax(torch.log(torch.clamp(out, min=_TINY)) / self.temperature + self.class_bias, dim=1)
            return out

    return Combiner(state)


def _graph_module(bundle: Any) -> Any:
    """The whole ensemble as one module: uint8 ``(N, H, W, C)`` -> probabilities (float32) [, decision (int64)]."""
    import torch

    from trainables import flip_average

    class Ensemble(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            # Copies in float32 on the CPU: the bundle's own models stay as they are (half-precision weights cast up).
            self.members = torch.nn.ModuleList(copy.deepcopy(m).float().cpu().eval() for m in bundle.models)
            self.multilabel = bundle.multilabel
            self.has_bias = []
            # Each member's test-time flips (its spec's tta), unrolled into the graph as Bundle.member_proba runs them.
            self.flips = [tuple(spec.get("tta") or ()) for spec in bundle.members]
            for i, spec in enumerate(bundle.members):
                # Bundle.model_input's arithmetic, float32 constants computed the same way
                scale, shift = normalization(spec["mean"], spec["std"])
                self.register_buffer(f"scale{i}", scale)
                self.register_buffer(f"shift{i}", shift)
                bias = spec.get("logit_bias")
                self.has_bias.append(bias is not None)
                if bias is not None:
                    self.register_buffer(f"bias{i}", torch.tensor(bias, dtype=torch.float32).view(1, -1))
            self.combiner = combiner_module(bundle.manifest["combiner"]["state"])
            self.threshold = None if bundle.task != "binary" else float(bundle.combiner.threshold_)

        def forward(self, images: Any) -> Any:
            x = images.permute(0, 3, 1, 2).float()
            probs = []
            for i, model in enumerate(self.members):
                logits = flip_average(model, x * getattr(self, f"scale{i}") + getattr(self, f"shift{i}"), self.flips[i]).float()
                if self.has_bias[i]:
                    logits = logits + getattr(self, f"bias{i}")
                p = torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 1)
                probs.append(p.double())
            out = self.combiner(torch.stack(probs))
            if self.threshold is None:
                return out.float()
            return out.float(), (out[:, 1] >= self.threshold).long()

    return Ensemble().eval()


def _max_opset() -> int:
    try:
        from torch.onnx._constants import ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET

        return int(ONNX_TORCHSCRIPT_EXPORTER_MAX_OPSET)
    except ImportError:
        return 17


# ---------------------------------------------------------------- checks before export


def _check_exportable(bundle: Any) -> tuple[int, int]:
    """The one input all members share, (size, channels); ConfigError naming the members that break it."""
    origin = str(bundle.path / "manifest.json")
    pre = [i for i, s in enumerate(bundle.members) if any(s["preprocessing"].values())]
    if pre:
        names = ", ".join(f"{bundle.members[i]['trial_id']} ({'+'.join(k for k, v in bundle.members[i]['preprocessing'].items() if v)})" for i in pre)
        raise ConfigError(
            f"members {names} cannot be exported: their preprocessing runs before resizing, at full resolution, which a "
            "graph of resized uint8 inputs cannot reproduce; rebuild the ensemble without them (python -m ensemble.build "
            "RUN_DIR --top-k ...) or sweep with clahe/border_crop off",
            origin=origin,
        )
    inputs = {(s["image_size"], s["channels"]) for s in bundle.members}
    if len(inputs) > 1:
        names = ", ".join(f"{s['trial_id']} ({s['image_size']} px, {s['channels']} ch)" for s in bundle.members)
        raise ConfigError(
            f"members cannot be exported as one graph: they take different inputs ({names}) and the graph takes one; "
            "rebuild the ensemble from members of one image_size and channel count",
            origin=origin,
        )
    return next(iter(inputs))


@contextlib.contextmanager
def _quiet() -> Any:
    """No exporter chatter: its warnings, and the TorchScript IR it prints (from C++, to fd 1) when a graph fails."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            # The TorchScript exporter announces its deprecation and warns on every traced shape read; neither is actionable.
            warnings.simplefilter("ignore")
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _export(module: Any, dummy: Any, target: Any, *, opset: int, outputs: Sequence[str]) -> None:
    import torch

    axes = {INPUT: {0: "batch"}, **{name: {0: "batch"} for name in outputs}}
    with _quiet():
        try:
            torch.onnx.export(
                module, (dummy,), target, dynamo=False, opset_version=opset, input_names=[INPUT],
                output_names=list(outputs), dynamic_axes=axes, do_constant_folding=True,
            )
        except TypeError as exc:
            if "dynamo" in str(exc):
                raise ConfigError(
                    f"torch {torch.__version__} has no TorchScript-based ONNX exporter (torch.onnx.export(dynamo=False)); "
                    "install a torch from 2.1 to 2.14 for the export", field="torch",
                ) from None
            raise


def _unexportable_members(bundle: Any, size: int, channels: int, opset: int) -> list[str]:
    """Which members fail on their own (when the whole graph did): each one exported alone to memory."""
    import torch

    bad = []
    dummy = torch.zeros(2, channels, size, size)
    for spec, model in zip(bundle.members, bundle.models):
        try:
            with _quiet():
                torch.onnx.export(copy.deepcopy(model).float().cpu().eval(), (dummy,), io.BytesIO(), dynamo=False,
                                  opset_version=opset, input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}})
        except Exception as exc:  # noqa: BLE001 - any exporter failure names the member
            bad.append(f"{spec['trial_id']} ({spec['backbone']}: {type(exc).__name__}: {' '.join(str(exc).split())[:100]})")
    return bad


# ---------------------------------------------------------------- verification inputs


def generated_images(n: int, size: int, channels: int, *, seed: int = 0) -> np.ndarray:
    """Deterministic uint8 test images ``(n, size, size, channels)``: black, white, noise, gradients, bright quadrants.

    The extremes drive members to saturated probabilities, where a float32 graph would drift first.
    """
    rng = np.random.default_rng(seed)
    out = np.zeros((n, size, size, channels), np.uint8)
    ramp = np.linspace(0, 255, size)
    for i in range(n):
        kind = i % 6
        if kind == 0:
            img = np.full((size, size), 0 if (i // 6) % 2 == 0 else 255, float)
        elif kind == 1:
            img = rng.integers(0, 256, (size, size)).astype(float)
        elif kind == 2:
            img = np.add.outer(ramp, ramp) / 2 if (i // 6) % 2 == 0 else np.add.outer(ramp, ramp[::-1]) / 2
        else:
            img = rng.integers(0, 90, (size, size)).astype(float)
            r, c = divmod(kind - 3 + i // 6, 2)
            h = size // 2
            img[(r % 2) * h : (r % 2 + 1) * h, (c % 2) * h : (c % 2 + 1) * h] += 150
        img = np.clip(img, 0, 255)
        for c in range(channels):
            shift = 0 if channels == 1 else int(rng.integers(-20, 21))
            out[i, :, :, c] = np.clip(img + shift, 0, 255).astype(np.uint8)
    return out


def _test_sample(bundle: Any, size: int, n: int) -> tuple[np.ndarray, str] | None:
    """Up to ``n`` evenly spaced test-split images from the sweep's data cache, when this machine has it."""
    import yaml

    from trainables import DataConfig, open_cached

    run_dir = Path(str((bundle.manifest.get("sweep") or {}).get("run_dir") or ""))
    space_file = run_dir / "space.yaml"
    if not space_file.is_file() or n < 1:
        return None
    try:
        space = yaml.safe_load(space_file.read_text()) or {}
        ds = open_cached(DataConfig.from_dict(space.get("data") or {}, origin=str(space_file)), image_size=size,
                         preprocess=bundle.members[0]["preprocessing"])
    except Exception:  # noqa: BLE001 - no data here: the generated images still check the graph
        return None
    if ds is None or "test" not in ds.splits or len(ds.splits["test"]) == 0 or ds.channels != bundle.members[0]["channels"]:
        return None
    test = ds.splits["test"]
    idx = np.unique(np.linspace(0, len(test) - 1, num=min(n, len(test))).astype(int))
    return np.ascontiguousarray(test.images[idx]), f"{len(idx)} of {len(test)} test-split images from the sweep's data cache"


# ---------------------------------------------------------------- export


def export_onnx(
    bundle_path: str | Path,
    out_path: str | Path,
    *,
    opset: int = OPSET,
    images: Sequence[Any] | None = None,
    n_test: int = 64,
    n_generated: int = 12,
    tolerance: float = TOLERANCE,
    update_manifest: bool = True,
    echo: Callable[[str], None] | None = print,
) -> OnnxExport:
    """Write the bundle as one ONNX graph, checked against ``Bundle.predict_proba`` in onnxruntime first.

    The graph's input ``images`` is uint8 ``(N, H, W, C)`` at the bundle's size and channels (any N);
    its outputs are ``probabilities`` (float32 ``(N, K)``) and, for binary bundles, ``decision`` (int64
    ``(N,)``: 1 where the positive class's probability reaches the bundle's threshold).

    Args:
        bundle_path: the bundle folder.
        out_path: the ``.onnx`` file to write.
        opset: the ONNX opset (default ``OPSET``).
        images: images to check on (arrays or files; prepared like the bundle's input); default up to
            ``n_test`` test-split images from the sweep's data cache when this machine has it.
        n_test: test-split images to check on.
        n_generated: generated images (black, white, noise, gradients) checked as well.
        tolerance: the largest difference in probability allowed; a larger one writes nothing.
        update_manifest: store the figure in the bundle's ``manifest.json`` (and its model card).
        echo: where the figure is printed; None for silence.

    Raises:
        ConfigError: a member that cannot be exported (named), a graph that differs from the bundle, or
            onnx / onnxruntime missing. Nothing is left at ``out_path`` then.

    Example:
        >>> export_onnx("runs/cxr/ensemble", "cxr.onnx").max_abs_diff < 1e-4
        True
    """
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise ConfigError('the ONNX export needs onnx and onnxruntime: pip install -e ".[export]"', field="--onnx") from None
    import torch

    from ._bundle import load

    say = echo or (lambda _: None)
    t0 = time.perf_counter()
    top = min(_max_opset(), onnx.defs.onnx_opset_version())
    if isinstance(opset, bool) or not isinstance(opset, int) or not 13 <= opset <= top:
        raise ConfigError(f"must be an integer from 13 to {top} (what torch's TorchScript exporter writes), got {opset!r}", field="--opset")
    if not (isinstance(tolerance, (int, float)) and 0 < tolerance < 1):
        raise ConfigError(f"must be a number in (0, 1), got {tolerance!r}", field="--tolerance")
    out = Path(out_path).expanduser().resolve()
    if out.is_dir():
        raise ConfigError("is a folder; name the .onnx file to write, e.g. model.onnx", field="--onnx", origin=str(out))
    if not out.parent.is_dir():
        raise ConfigError(f"the folder {out.parent} does not exist; create it or write elsewhere", field="--onnx", origin=str(out))
    bundle = load(bundle_path, device="cpu")
    size, channels = _check_exportable(bundle)
    binary = bundle.task == "binary"
    outputs = OUTPUTS if binary else OUTPUTS[:1]

    # Check inputs: given images, or the sweep's test split when cached here; generated ones always.
    parts, what = [], []
    if images is not None:
        given = bundle.prepare(images)
        parts.append(given)
        what.append(f"{len(given)} given images")
    else:
        sample = _test_sample(bundle, size, n_test)
        if sample is not None:
            parts.append(sample[0])
            what.append(sample[1])
    if n_generated > 0 or not parts:
        gen = generated_images(max(n_generated, 6), size, channels)
        parts.append(gen)
        what.append(f"{len(gen)} generated images")
    check = np.concatenate(parts)

    module = _graph_module(bundle)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        try:
            _export(module, torch.zeros(2, size, size, channels, dtype=torch.uint8), str(tmp), opset=opset, outputs=outputs)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - name the members that cause it
            bad = _unexportable_members(bundle, size, channels, opset)
            if bad:
                raise ConfigError(f"members that cannot be exported to ONNX (opset {opset}): {'; '.join(bad)}; rebuild the "
                                  "ensemble without them (python -m ensemble.build RUN_DIR --top-k ...)", origin=str(bundle.path)) from None
            raise ConfigError(f"the ensemble graph cannot be exported to ONNX (opset {opset}): {type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:200]}", origin=str(bundle.path)) from None
        model = onnx.load(str(tmp))
        onnx.checker.check_model(model)
        meta = {
            "medsweep.task": bundle.task,
            "medsweep.class_names": json.dumps(bundle.class_names),
            "medsweep.threshold": json.dumps(None if not binary else float(bundle.combiner.threshold_)),
            "medsweep.input": f"uint8 (N, {size}, {size}, {channels}) images prepared as the bundle's manifest says (windowed to uint8, resized)",
            "medsweep.members": json.dumps([m["trial_id"] for m in bundle.members]),
            "medsweep.combiner": str(bundle.combiner.combiner_),
        }
        for key, value in meta.items():
            entry = model.metadata_props.add()
            entry.key, entry.value = key, value
        model.producer_name = "medsweep"
        model.doc_string = f"medsweep ensemble of {len(bundle.members)} members ({bundle.combiner.combiner_}), task {bundle.task}"
        onnx.save(model, str(tmp))
        del model

        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        expected = bundle.predict_proba(check)
        got, decisions = [], []
        # In two batch sizes: the graph's batch axis is dynamic
        for b0, b1 in ((0, min(3, len(check))), (min(3, len(check)), len(check))):
            if b1 > b0:
                res = session.run(list(outputs), {INPUT: check[b0:b1]})
                got.append(res[0])
                if binary:
                    decisions.append(res[1])
        got_all = np.concatenate(got).astype(np.float64)
        diff = float(np.abs(got_all - expected).max()) if got_all.size else 0.0
        agree = None
        if binary:
            want = (expected[:, 1] >= bundle.combiner.threshold_).astype(np.int64)
            dec = np.concatenate(decisions)
            near = np.abs(expected[:, 1] - bundle.combiner.threshold_) <= tolerance
            agree = bool(np.array_equal(dec, want))
            wrong = int((dec[~near] != want[~near]).sum())  # decisions that differ away from the threshold: the graph is wrong
            if wrong:
                raise ConfigError(
                    f"the ONNX graph's decision differs from the bundle's on {wrong} of {len(check)} images whose probability "
                    f"is not at the threshold {bundle.combiner.threshold_:.6g}; nothing written: report this with the bundle's manifest.json",
                    origin=str(bundle.path),
                )
        if not math.isfinite(diff) or diff > tolerance:
            raise ConfigError(
                f"the ONNX graph differs from Bundle.predict_proba by {diff:.3g} (limit {tolerance:g}) on {len(check)} images; "
                "nothing written: report this with the bundle's manifest.json",
                origin=str(bundle.path),
            )
        os.replace(tmp, out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    result = OnnxExport(path=out, max_abs_diff=diff, n_images=len(check), inputs=" + ".join(what), decisions_agree=agree,
                        opset=opset, seconds=time.perf_counter() - t0)
    say(f"onnx: {out} ({out.stat().st_size / 1e6:.1f} MB, opset {opset}): largest difference from Bundle.predict_proba "
        f"{diff:.2e} on {result.n_images} images ({result.inputs}); limit {tolerance:g}")
    if update_manifest:
        try:
            record_export(bundle.path, result.as_manifest(tolerance))
        except OSError as exc:  # a read-only bundle: the graph is written and checked all the same
            say(f"onnx: note: the figure is not stored in {bundle.path / 'manifest.json'} ({exc.strerror or exc}); "
                "pass --no-manifest to skip this step")
    return result


def record_export(bundle_path: Path, entry: dict[str, Any]) -> None:
    """Store an export's figure in ``manifest.json`` (``onnx``) and write the model card again with it.

    The manifest is not among its own hashed files; the card is, so its sha256 is updated with it. Both are
    written to temporary files and renamed.
    """
    from ._bundle import MANIFEST, METRICS, MODEL_CARD, _dump, _sha256_file, verify_bundle
    from ._card import model_card

    manifest, _ = verify_bundle(bundle_path)
    manifest["onnx"] = entry
    metrics_file = bundle_path / METRICS
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    card_tmp = bundle_path / f".{MODEL_CARD}.tmp-{os.getpid()}"
    man_tmp = bundle_path / f".{MANIFEST}.tmp-{os.getpid()}"
    try:
        card_tmp.write_text(model_card(manifest, metrics))
        manifest["files"][MODEL_CARD] = _sha256_file(card_tmp)
        man_tmp.write_text(_dump(manifest))
        os.replace(card_tmp, bundle_path / MODEL_CARD)
        os.replace(man_tmp, bundle_path / MANIFEST)
    finally:
        for p in (card_tmp, man_tmp):
            if p.exists():
                p.unlink()
