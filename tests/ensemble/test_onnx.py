"""The ONNX export: one graph per bundle that onnxruntime runs to the bundle's own probabilities.

Three real bundles: binary (the package's smoke sweep), multi-class and multi-label (standalone trials
on generated 32 px images, one member with a logit bias); each exported, checked in a fresh process that
imports neither torch nor medsweep, and compared with ``Bundle.predict_proba``. The combiner graph alone
is checked against the numpy path for every combiner and task.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from ensemble import StackingEnsemble, build_ensemble, export_onnx, load, verify_bundle  # noqa: E402
from ensemble._onnx import combiner_module, generated_images  # noqa: E402
from ensemble._calibration import _apply_temperature  # noqa: E402
from ensemble._combiners import _combine, _normalise  # noqa: E402
from trainables import ConfigError  # noqa: E402

from .._images import write_class_folders  # noqa: E402
from .test_multilabel import make_run, write_multilabel  # noqa: E402

BASE = {"backbone": "test_resnet", "epochs": 1, "image_size": 32, "threads": 1, "batch_size": 8, "eval_batch_size": 64}

# Runs with only onnxruntime and numpy, and says which heavy or medsweep modules it ended up importing.
FRESH = """
import json, sys
import numpy as np
import onnxruntime as ort
model, inputs, out = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
names = [o.name for o in session.get_outputs()]
res = session.run(names, {"images": np.load(inputs)})
np.savez(out, **dict(zip(names, res)))
meta = session.get_modelmeta().custom_metadata_map
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "timm", "trainables", "ensemble", "search", "medsweep"))
print(json.dumps({"outputs": names, "imported": bad, "classes": json.loads(meta["medsweep.class_names"])}))
"""


def _with_bias(run: Path, trial: str, bias: list[float]) -> None:
    """Give one trial's member a logit bias, as a balanced-sampler run records it in its model.json."""
    for path in (run / f"trial_{trial}").rglob("model.json"):
        model = json.loads(path.read_text())
        model["logit_bias"] = bias
        path.write_text(json.dumps(model))


def _bundle(root: Path, data: dict, combiners: list[str], bias: list[float]) -> Path:
    run = make_run(root / "run", data, [{**BASE, "lr": 3e-3, "seed": 0}, {**BASE, "lr": 1e-2, "seed": 1}])
    _with_bias(run, "t1", bias)
    space = yaml.safe_load((run / "space.yaml").read_text())
    space["ensemble"]["combiners"] = combiners
    (run / "space.yaml").write_text(yaml.safe_dump(space))
    return build_ensemble(run, n_boot=20, echo=None).path


@pytest.fixture(scope="module")
def multiclass(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx-multiclass")
    images = write_class_folders(root / "images", n_per_class=20, classes=("a", "b", "c"), noise=120, signal=60)
    data = {"source": "folder", "root": str(images), "val_fraction": 0.3, "test_fraction": 0.25, "cache_dir": str(root / "cache")}
    return _bundle(root, data, ["mlp"], [0.8, -0.5, 0.1])


@pytest.fixture(scope="module")
def multilabel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("onnx-multilabel")
    return _bundle(root, write_multilabel(root), ["logistic"], [-1.2, 0.7])


def _check_fresh(model: Path, bundle_dir: Path, tmp_path: Path) -> dict:
    """Run the graph in a fresh interpreter (no torch, no medsweep) on generated and shifted images; compare here."""
    bundle = load(bundle_dir, device="cpu")
    size, ch = bundle.members[0]["image_size"], bundle.members[0]["channels"]
    images = np.concatenate([generated_images(7, size, ch, seed=5), np.roll(generated_images(6, size, ch, seed=9), 3, axis=1)])
    np.save(tmp_path / "in.npy", images)
    script = tmp_path / "fresh.py"
    script.write_text(FRESH)
    proc = subprocess.run([sys.executable, "-I", str(script), str(model), str(tmp_path / "in.npy"), str(tmp_path / "out.npz")],
                          capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert report["imported"] == [], report["imported"]
    assert report["classes"] == bundle.class_names
    out = np.load(tmp_path / "out.npz")
    want = bundle.predict_proba(images)
    assert out["probabilities"].dtype == np.float32 and out["probabilities"].shape == want.shape
    assert np.abs(out["probabilities"] - want).max() < 1e-4
    if bundle.task == "binary":
        assert report["outputs"] == ["probabilities", "decision"]
        assert np.array_equal(out["decision"], (want[:, 1] >= bundle.combiner.threshold_).astype(np.int64))
    else:
        assert report["outputs"] == ["probabilities"]
    return report


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_the_graph_matches_the_bundle_in_a_fresh_process(kind, request, tmp_path):
    bundle_dir = request.getfixturevalue(kind)
    manifest, _ = verify_bundle(bundle_dir)
    assert manifest["combiner"]["name"] == ("mlp" if kind == "multiclass" else "logistic")
    assert manifest["combiner"]["temperature"] != 1.0  # the temperature is in the graph too
    result = export_onnx(bundle_dir, tmp_path / "model.onnx", echo=None)
    assert result.max_abs_diff < 1e-4 and "test-split images from the sweep's data cache" in result.inputs
    _check_fresh(tmp_path / "model.onnx", bundle_dir, tmp_path)
    # The figure is stored in the manifest and the card, and the bundle still verifies.
    manifest, _ = verify_bundle(bundle_dir)
    assert manifest["onnx"]["max_abs_diff"] == pytest.approx(result.max_abs_diff)
    assert manifest["onnx"]["n_images"] == result.n_images and manifest["onnx"]["opset"] == 17
    assert f"largest difference {result.max_abs_diff:.2e}" in (bundle_dir / "MODEL_CARD.md").read_text()


def test_a_logit_bias_is_applied_by_the_bundle_and_the_graph(multiclass, tmp_path):
    import torch

    bundle = load(multiclass, device="cpu")
    spec = next(m for m in bundle.members if m["trial_id"] == "t1")
    assert spec["logit_bias"] == [0.8, -0.5, 0.1]
    i = bundle.members.index(spec)
    images = generated_images(6, 32, 1)
    with torch.inference_mode():
        logits = bundle.models[i](bundle.model_input(images, i)).float()
    member = bundle.member_proba(images)[i]
    assert np.allclose(member, torch.softmax(logits + torch.tensor(spec["logit_bias"]), 1).numpy(), atol=1e-6)
    assert np.abs(member - torch.softmax(logits, 1).numpy()).max() > 0.01  # the bias moves the probabilities
    result = export_onnx(multiclass, tmp_path / "m.onnx", update_manifest=False, echo=None)
    assert result.max_abs_diff < 1e-4


@pytest.mark.ray
def test_the_binary_sweep_bundle_exports_with_its_decision(bundle_copy, tmp_path, capsys):
    from ensemble.export import main

    rc = main([str(bundle_copy), "--onnx", str(tmp_path / "binary.onnx")])
    out = capsys.readouterr().out
    assert rc == 0 and "largest difference from Bundle.predict_proba" in out
    manifest, _ = verify_bundle(bundle_copy)
    assert manifest["onnx"]["max_abs_diff"] < 1e-4 and manifest["onnx"]["decisions_agree"] is True
    _check_fresh(tmp_path / "binary.onnx", bundle_copy, tmp_path)


# ---------------------------------------------------------------- refusals


def test_a_member_that_cannot_be_exported_is_named_and_nothing_is_written(multiclass, tmp_path, monkeypatch, capfd):
    import torch

    import ensemble._bundle as bundle_mod

    class NoOnnx(torch.nn.Module):
        """A member whose forward uses an op the exporter has no ONNX form for."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x) + torch.special.i1e(x.mean((1, 2, 3)))[:, None] * 0

    real = bundle_mod.load

    def load_broken(*args, **kwargs):
        b = real(*args, **kwargs)
        b.models[1] = NoOnnx(b.models[1])
        return b

    from ensemble.export import main

    monkeypatch.setattr(bundle_mod, "load", load_broken)
    capfd.readouterr()
    assert main([str(multiclass), "--onnx", str(tmp_path / "m.onnx")]) == 2
    out, err = capfd.readouterr()
    assert out == ""  # not even the exporter's dump of the failed graph
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "members that cannot be exported to ONNX" in lines[0], err[-2000:]
    second = load(multiclass).members[1]["trial_id"]
    assert f"{second} (test_resnet: UnsupportedOperatorError" in lines[0] and "special_i1e" in lines[0]
    assert "rebuild the ensemble without them" in lines[0]
    assert list(tmp_path.iterdir()) == []  # no half-written file, no temporary one


def test_a_graph_that_differs_from_the_bundle_is_not_written(multiclass, tmp_path):
    target = tmp_path / "m.onnx"
    with pytest.raises(ConfigError, match="differs from Bundle.predict_proba by .* nothing written"):
        export_onnx(multiclass, target, tolerance=1e-12, update_manifest=False, echo=None)
    assert list(tmp_path.iterdir()) == []


def test_preprocessed_members_are_refused_in_one_line(multiclass, tmp_path, capfd):
    import shutil

    copy = Path(shutil.copytree(multiclass, tmp_path / "bundle"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["members"][0]["preprocessing"]["clahe"] = True  # the manifest is not among its own hashed files
    (copy / "manifest.json").write_text(json.dumps(manifest))
    from ensemble.export import main

    capfd.readouterr()
    assert main([str(copy), "--onnx", str(tmp_path / "m.onnx")]) == 2
    text = capfd.readouterr().err.strip()
    assert len(text.splitlines()) == 1 and f"members {manifest['members'][0]['trial_id']} (clahe) cannot be exported" in text
    assert not (tmp_path / "m.onnx").exists()


# ---------------------------------------------------------------- the combiner graph alone


def _fitted(task: str, combiner: str, seed: int = 0):
    rng = np.random.default_rng(seed)
    m, n = 3, 120
    k = 2 if task == "binary" else 3
    if task == "multi-label":
        y = rng.integers(0, 2, size=(n, k))
        P = np.clip(y[None] * 0.5 + rng.uniform(0, 0.6, size=(m, n, k)), 0, 1)
        P[0, :5] = 1.0  # saturated members: where float32 features would drift first
        P[1, 5:10] = 0.0
    else:
        y = rng.integers(0, k, size=n)
        logits = rng.normal(size=(m, n, k)) + 1.5 * np.eye(k)[y][None]
        logits[0, :5] *= 40
        P = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    ens = StackingEnsemble(task=task, combiners=(combiner,), n_folds=3, mlp_hidden=16).fit(P, y)
    return ens, P


@pytest.mark.parametrize("task", ["binary", "multi-class", "multi-label"])
@pytest.mark.parametrize("combiner", ["mean", "greedy", "best", "logistic", "mlp"])
def test_the_combiner_graph_is_the_numpy_path(task, combiner, tmp_path):
    import onnxruntime as ort
    import torch

    ens, P = _fitted(task, "greedy" if combiner == "best" else combiner)
    state = ens.to_dict()
    if combiner == "best":  # the single best member: greedy's params, one-hot
        state["combiner"], state["params"] = "best", {"weights": [0.0, 1.0, 0.0]}
        want = _apply_temperature(_normalise(_combine("best", state["params"], P, task), task), state["temperature"], task,
                                  state["class_bias"])
        assert np.allclose(_combine("best", state["params"], P, task), P[1])
    else:
        want = ens.predict_proba(P)
    if ens.temperature_ == 1.0 or not any(state["class_bias"]):  # make sure the temperature and the offsets are checked
        state["temperature"] = 1.7
        state["class_bias"] = [0.0] + [0.3 * (j + 1) for j in range(len(state["class_bias"]) - 1)]
        want = _apply_temperature(_normalise(_combine(state["combiner"], state["params"], P, task), task), 1.7, task,
                                  state["class_bias"])
    module = combiner_module(state).eval()
    path = tmp_path / "c.onnx"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.from_numpy(P[:, :4]),), str(path), dynamo=False, opset_version=17,
                          input_names=["P"], output_names=["probs"], dynamic_axes={"P": {1: "n"}, "probs": {0: "n"}})
    got = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"P": P})[0]
    assert got.shape == want.shape
    assert np.abs(got - want).max() < 1e-9, np.abs(got - want).max()


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_every_bundle_carries_its_card_and_provenance(kind, request):
    bundle_dir = request.getfixturevalue(kind)
    manifest, _ = verify_bundle(bundle_dir)
    card = (bundle_dir / "MODEL_CARD.md").read_text()
    assert "MODEL_CARD.md" in manifest["files"] and "This is not a medical device" in card
    assert ("multi-label classification" if kind == "multilabel" else "multi-class classification") in card
    assert manifest["provenance"]["packages"]["timm"] and manifest["provenance"]["space_sha256"]
    assert all(f["sha256"] for f in manifest["data"]["files"]) and manifest["data"]["files"]
    if kind == "multilabel":  # the labels CSV hashed whole, the image folder by its listing
        kinds = {f["key"]: f["kind"] for f in manifest["data"]["files"]}
        assert kinds == {"labels_csv": "file", "img_dir": "listing"}
        assert "labels_csv" in card and "positive labels" in card
    biased = [m for m in manifest["members"] if m["logit_bias"] is not None]
    assert [m["trial_id"] for m in biased] == ["t1"] and "| yes |" in card


@pytest.mark.parametrize("args, match", [
    (["--opset", "99"], "--opset: must be an integer from 13 to"),
    (["--tolerance", "2"], "--tolerance: must be a number in (0, 1)"),
    (["--onnx-dir"], "does not exist; create it or write elsewhere"),
    (["--no-bundle"], "no such bundle folder"),
])
def test_bad_export_arguments_fail_with_one_line(multiclass, tmp_path, capfd, args, match):
    from ensemble.export import main

    bundle, target = str(multiclass), str(tmp_path / "m.onnx")
    if args == ["--onnx-dir"]:
        args, target = [], str(tmp_path / "missing" / "m.onnx")
    elif args == ["--no-bundle"]:
        args, bundle = [], str(tmp_path / "nothing")
    capfd.readouterr()
    assert main([bundle, "--onnx", target, *args]) == 2
    err = capfd.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and match in err, err
    assert not (tmp_path / "m.onnx").exists()
