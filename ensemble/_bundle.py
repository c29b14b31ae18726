"""The ensemble bundle: a folder with everything needed to predict and nothing that runs code when loaded.

``manifest.json`` describes the members, their preprocessing and the fitted combiner, and holds a
sha256 for every other file, the provenance (package versions, the space file's and the data files'
hashes, the seeds) and, per member, its ``logit_bias``; member weights are ``.safetensors``;
``MODEL_CARD.md`` is the page for people. Loading reads JSON and
safetensors only, checks every hash first, and refuses paths that leave the folder. The export
writes into a temporary folder next to the target and renames it into place.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

import numpy as np

from trainables import ConfigError
from trainables.artifacts import MODEL_JSON, MemberSpec, normalization, prepare_batch

from ._report import Summary, member_weights, summarise, write_report
from ._select import Selection
from ._stacking import _jsonable

__all__ = ["FORMAT", "FORMAT_VERSION", "Bundle", "export_bundle", "load", "verify_bundle"]

FORMAT = "medsweep-ensemble"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
METRICS = "metrics.json"
MODEL_CARD = "MODEL_CARD.md"
REPORT = "report"
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]")
_CHUNK = 1 << 20


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _dump(obj: Any) -> str:
    # NaN/inf become null and numpy types plain ones (the estimator's own sanitiser); anything else,
    # e.g. a Path, is written as its string.
    return json.dumps(_jsonable(obj), indent=1, allow_nan=False, default=str) + "\n"


# ---------------------------------------------------------------- export


def _logit_bias(model: dict[str, Any], *, origin: str) -> list[float] | None:
    """A member's ``logit_bias`` (one float per class or label, added to its logits), or None when it has none."""
    bias = model.get("logit_bias")
    if bias is None:
        return None
    k = int(model["num_classes"])
    try:
        values = [float(v) for v in bias]
    except (TypeError, ValueError):
        values = []
    if len(values) != k or not all(np.isfinite(values)):
        raise ConfigError(f"must be a list of {k} finite numbers (one per class), got {bias!r}; rerun the trial", origin=origin, field="logit_bias")
    return values


def _member_input(model: dict[str, Any]) -> dict[str, Any]:
    """How a member's input is made, from its ``model.json``: size, channels, normalisation, preprocessing, and the
    test-time flips its logits are averaged over (``tta``)."""
    entry = MemberSpec.from_model_json(model).to_manifest()
    return {k: entry[k] for k in ("image_size", "channels", "mean", "std", "preprocessing", "tta")}


def _read_space(run_dir: Path) -> tuple[dict[str, Any], str | None]:
    """The run's resolved ``space.yaml`` as a dict and as text (None when the run folder has none)."""
    import yaml

    path = run_dir / "space.yaml"
    if not path.is_file():
        return {}, None
    text = path.read_text()
    try:
        space = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        space = {}
    return (space if isinstance(space, dict) else {}), text


def write_model_card(folder: Path, manifest: dict[str, Any], metrics: dict[str, Any]) -> Path:
    """``MODEL_CARD.md`` of a bundle, from its manifest and metrics (written again when an ONNX export adds its figure)."""
    from ._card import model_card

    path = folder / MODEL_CARD
    path.write_text(model_card(manifest, metrics))
    return path


def _common(values: list[Any]) -> Any:
    return values[0] if all(v == values[0] for v in values) else None


def build_manifest(selection: Selection, ensemble: Any, summary: Summary, weight_files: dict[str, str]) -> dict[str, Any]:
    """The manifest without ``files`` (the hashes are added once every file is written)."""
    from ._card import data_description, provenance, split_report, sweep_description

    space, space_text = _read_space(selection.run_dir)
    members = []
    inputs = []
    for m in selection.members:
        spec = _member_input(m.model)
        inputs.append(spec)
        members.append(
            {
                "trial_id": m.trial_id,
                "backbone": m.backbone,
                "head": m.head,
                "num_classes": int(m.model["num_classes"]),
                **spec,
                "config": m.config,
                "val_metric": {"name": selection.metric, "value": m.val_score},
                "best_epoch": m.model.get("best_epoch"),
                # added to the member's logits before softmax/sigmoid (a balanced sampler's prior correction); null: none
                "logit_bias": _logit_bias(m.model, origin=str(m.folder / MODEL_JSON)),
                **({"folds": int(m.model["folds"])} if int(m.model.get("folds") or 1) > 1 else {}),
                "weights": weight_files[m.trial_id],
                "sha256": None,  # filled in with the files' hashes
            }
        )
    pre = [s["preprocessing"] for s in inputs]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "task": selection.task,
        "class_names": list(selection.class_names),
        # Shared by every member when they agree (null otherwise: each member's own entry holds its input).
        "image_size": _common([s["image_size"] for s in inputs]),
        "channels": _common([s["channels"] for s in inputs]),
        "normalization": {
            "formula": "x = (uint8 / 255 - mean) / std, per channel",
            "mean": _common([s["mean"] for s in inputs]),
            "std": _common([s["std"] for s in inputs]),
        },
        "preprocessing": {
            "clahe": _common([p["clahe"] for p in pre]),
            "border_crop": _common([p["border_crop"] for p in pre]),
            "steps": [
                "decode (16-bit kept), window to uint8 per image (min..max)",
                "drop alpha; border_crop then CLAHE when flagged, at full resolution",
                "convert to the member's channels (grey <-> RGB)",
                "resize to image_size (bilinear)",
            ],
        },
        "sweep": {
            "run_dir": str(selection.run_dir),
            "metric": selection.metric,
            "mode": selection.mode,
            "top_k": len(selection.members),
            "available": selection.n_available,
            **sweep_description(space),
        },
        # The data's source and file hashes, and how it was split and grouped with each split's balance.
        "data": {**data_description(space, origin=str(selection.run_dir / "space.yaml")), "split_report": split_report(selection, summary)},
        "provenance": provenance(selection, space_text),
        "model_card": MODEL_CARD,
        "members": members,
        "best_single": summary.best_single,
        "combiner": {
            "name": ensemble.combiner_,
            "settings": ensemble.settings_,
            "temperature": ensemble.temperature_,
            "cv_metric": ensemble.metric,
            "member_weights": member_weights(ensemble.combiner_, ensemble.params_, len(members)),
            "state": ensemble.to_dict(),
        },
        "metrics": METRICS,
        "files": {},
    }


def export_bundle(
    selection: Selection,
    ensemble: Any,
    *,
    out: str | Path | None = None,
    summary: Summary | None = None,
    n_boot: int = 1000,
) -> Path:
    """Write the bundle of a fitted ensemble; returns its folder.

    Args:
        selection: the members (``select_members``).
        ensemble: a fitted ``StackingEnsemble`` on ``selection.P_val``.
        out: the bundle folder; default ``<run_dir>/ensemble``.
        summary: metrics and tables (``summarise``); computed when not given.
        n_boot: bootstrap resamples for the confidence intervals when ``summary`` is computed here.

    The bundle is written into ``.<name>.tmp-<pid>`` next to ``out`` and renamed into place; an
    error (or an interrupt) before the rename leaves the previous bundle as it was.

    Example:
        >>> sel = select_members("runs/cxr")
        >>> ens = StackingEnsemble(task=sel.task).fit(sel.P_val, sel.y_val)
        >>> export_bundle(sel, ens)
        PosixPath('runs/cxr/ensemble')
    """
    out = Path(out).expanduser().resolve() if out is not None else selection.run_dir / "ensemble"
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a folder; pass --out <new folder>", field="--out")
    # Only a bundle (or an empty folder) is replaced: --out RUN_DIR must not move a sweep aside and delete it.
    if out.is_dir() and not (out / MANIFEST).is_file() and any(out.iterdir()):
        raise ConfigError(
            f"{out} holds files but no {MANIFEST}, so it is not a bundle this step may replace; "
            "pass --out <new or empty folder>",
            field="--out",
        )
    if selection.run_dir == out or selection.run_dir.is_relative_to(out):
        raise ConfigError(f"{out} holds the sweep itself; pass --out <new folder> (default RUN_DIR/ensemble)", field="--out")
    if summary is None:
        summary = summarise(selection, ensemble, n_boot=n_boot)
    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_stale(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        _write_bundle(tmp, selection, ensemble, summary)
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _write_bundle(tmp: Path, selection: Selection, ensemble: Any, summary: Summary) -> None:
    weight_files: dict[str, str] = {}
    (tmp / "members").mkdir()
    for m in selection.members:
        rel = f"members/{_SAFE_NAME.sub('_', m.trial_id)}.safetensors"
        if rel in weight_files.values():
            raise ConfigError(f"two members map to the file {rel}; trial ids must differ in more than punctuation")
        _copy_weights(m.weights, tmp / rel, dtype=selection.settings.weights_dtype)
        weight_files[m.trial_id] = rel
    (tmp / METRICS).write_text(_dump({**summary.metrics, **_split_metrics(selection.members[0].model.get("data"))}))
    write_report(tmp / REPORT, selection, summary)
    manifest = build_manifest(selection, ensemble, summary, weight_files)
    write_model_card(tmp, manifest, summary.metrics)
    files = {}
    for path in sorted(p for p in tmp.rglob("*") if p.is_file()):
        rel = path.relative_to(tmp).as_posix()
        if rel != MANIFEST:
            files[rel] = _sha256_file(path)
    for entry in manifest["members"]:
        entry["sha256"] = files[entry["weights"]]
    manifest["files"] = files
    (tmp / MANIFEST).write_text(_dump(manifest))


def _split_metrics(report: dict[str, Any] | None) -> dict[str, Any]:
    """The split report as flat numbers: ``data.<split>.images``, ``.patients``, ``.prevalence.<class>``."""
    out: dict[str, Any] = {}
    for split, part in ((report or {}).get("splits") or {}).items():
        out[f"data.{split}.images"] = part["images"]
        if part.get("patients") is not None:
            out[f"data.{split}.patients"] = part["patients"]
        for name, value in (part.get("prevalence") or {}).items():
            if value is not None:
                out[f"data.{split}.prevalence.{name}"] = value
    return out


def _copy_weights(src: Path, dst: Path, *, dtype: str) -> None:
    """A member's weights into the bundle: as they are, or with floating-point tensors in half precision
    (``ensemble.weights_dtype: float16``; loading casts them back into the float32 model).

    As they are, the file is a hard link to the trial's where both lie on one file system: the bytes are the
    same and nothing rewrites a finished trial's weights, so the run folder does not hold them twice (the
    manifest's sha256 still guards the bundle's copy); elsewhere (another disk, --out) it is copied.
    """
    if dtype == "float32":
        try:
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
        return
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(src)
    save_file({k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}, dst)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` to ``out``; an existing bundle is moved aside first and removed after."""
    if not out.exists():
        os.replace(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous bundle back
        raise
    shutil.rmtree(old, ignore_errors=True)


def _clean_stale(out: Path) -> None:
    """Remove temporary folders of exports whose process is gone (killed before it could clean up)."""
    for path in out.parent.glob(f".{glob.escape(out.name)}.*-*"):
        kind, _, pid = path.name.rpartition("-")
        if not (kind.endswith(".tmp") or kind.endswith(".old")) or not pid.isdigit():
            continue
        if int(pid) != os.getpid() and not _alive(int(pid)):
            if kind.endswith(".old") and not out.exists():
                os.replace(path, out)  # a swap interrupted between its two renames: the old bundle is the bundle
            else:
                shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------- verify


def _fix(root: Path) -> str:
    return f"copy the whole bundle folder again, or rebuild it with python -m ensemble.build RUN_DIR --out {root}"


def _inside(root: Path, rel: Any, *, where: str) -> Path:
    """``root / rel`` for a relative POSIX path that stays inside ``root``, links resolved; else ConfigError."""
    bad = None
    if not isinstance(rel, str) or not rel:
        bad = "is not a relative file path"
    else:
        pure = PurePosixPath(rel)
        if pure.is_absolute() or rel.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", rel):
            bad = "is absolute"
        elif ".." in pure.parts or "\\" in rel:
            bad = "climbs out with '..'" if ".." in pure.parts else "uses backslashes"
    if bad is None:
        path = root / rel
        try:
            resolved = path.resolve()
        except (OSError, RuntimeError):
            resolved = None
        if resolved is None or not resolved.is_relative_to(root.resolve()):
            bad = "leads outside the bundle folder (a link)"
    if bad is not None:
        raise ConfigError(
            f"{where}: the path {rel!r} {bad}; a bundle only names files inside its folder: this manifest is not "
            f"one medsweep wrote, {_fix(root)}",
            origin=str(root / MANIFEST),
        )
    return root / rel


def _read_manifest(root: Path) -> dict[str, Any]:
    if not root.is_dir():
        raise ConfigError("no such bundle folder; build one with python -m ensemble.build RUN_DIR", origin=str(root))
    path = root / MANIFEST
    if path.is_symlink() or not path.is_file():
        raise ConfigError(f"{MANIFEST} is missing (not an ensemble bundle?); {_fix(root)}", origin=str(root))
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"not valid JSON ({exc}); {_fix(root)}", origin=str(path)) from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ConfigError(f"not a {FORMAT} manifest; {_fix(root)}", origin=str(path))
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ConfigError(
            f"format_version {manifest.get('format_version')!r}; this medsweep reads version {FORMAT_VERSION}: "
            "rebuild the bundle with this version (python -m ensemble.build RUN_DIR)",
            origin=str(path),
        )
    for key in ("task", "class_names", "members", "combiner", "files"):
        if key not in manifest:
            raise ConfigError(f"lacks {key!r}; {_fix(root)}", origin=str(path))
    if not isinstance(manifest["files"], dict) or not isinstance(manifest["members"], list) or not manifest["members"]:
        raise ConfigError(f"'files' must map paths to sha256 and 'members' list at least one member; {_fix(root)}", origin=str(path))
    return manifest


def verify_bundle(path: str | Path, *, keep_weights: bool = False) -> tuple[dict[str, Any], dict[str, bytes]]:
    """Check a bundle: the manifest, every path inside the folder, every file present with its sha256.

    Returns the manifest and, with ``keep_weights``, the bytes of the member weights files (read once:
    what was hashed is what gets loaded). Raises ConfigError, one line naming the file and the fix, on
    the first problem.

    Example:
        >>> manifest, _ = verify_bundle("runs/cxr/ensemble")
        >>> sorted(manifest["files"])[:2]
        ['members/10ac3062.safetensors', 'members/26c67c0a.safetensors']
    """
    root = Path(path).expanduser().resolve()
    manifest = _read_manifest(root)
    files: dict[str, Any] = manifest["files"]
    for i, member in enumerate(manifest["members"]):
        rel = member.get("weights") if isinstance(member, dict) else None
        _inside(root, rel, where=f"members[{i}].weights")
        if rel not in files:
            raise ConfigError(f"members[{i}].weights {rel!r} has no sha256 in 'files'; {_fix(root)}", origin=str(root / MANIFEST))
    keep = {m["weights"] for m in manifest["members"]} if keep_weights else set()
    kept: dict[str, bytes] = {}
    for rel, digest in files.items():
        file = _inside(root, rel, where="files")
        if not file.is_file():
            raise ConfigError(f"{rel} is missing; the bundle is incomplete: {_fix(root)}", origin=str(root))
        if rel in keep:
            data = file.read_bytes()
            actual = hashlib.sha256(data).hexdigest()
            kept[rel] = data
        else:
            actual = _sha256_file(file)
        if actual != digest:
            raise ConfigError(f"{rel} does not match its sha256 in {MANIFEST} (altered or damaged); {_fix(root)}", origin=str(root))
    return manifest, kept


# ---------------------------------------------------------------- load and predict


def load(path: str | Path, *, device: str = "auto") -> "Bundle":
    """Load an ensemble bundle to predict with: verified, members built, combiner restored.

    Args:
        path: the bundle folder (``runs/<name>/ensemble``).
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.

    Raises:
        ConfigError: a missing or altered file, a path outside the folder, or a manifest this version cannot read.

    Example:
        >>> bundle = load("runs/cxr/ensemble")
        >>> bundle.predict_proba(["xray1.png", "xray2.png"]).shape
        (2, 2)
    """
    return Bundle(path, device=device)


class Bundle:
    """A loaded ensemble: ``predict_proba(images)`` for lists of arrays or image files.

    Attributes:
        path: the bundle folder.
        manifest: ``manifest.json`` as read.
        task, class_names: what it predicts.
        models: the members' torch modules, in manifest order (eval mode).
        combiner: the ``StackingEnsemble`` rebuilt from the manifest.
        device: the torch device the members run on.
    """

    def __init__(self, path: str | Path, *, device: str = "auto") -> None:
        import torch
        from safetensors.torch import load as load_safetensors

        from trainables import build_member

        from ._stacking import StackingEnsemble

        self.path = Path(path).expanduser().resolve()
        self.manifest, blobs = verify_bundle(self.path, keep_weights=True)
        origin = str(self.path / MANIFEST)
        self.task = str(self.manifest["task"])
        self.class_names = [str(c) for c in self.manifest["class_names"]]
        if device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"must be auto, cpu or cuda, got {device!r}", field="device")
        if device == "cuda" and not torch.cuda.is_available():
            raise ConfigError("CUDA is not available on this machine; use device cpu (or auto)", field="device")
        self.device = torch.device("cuda" if device == "cuda" or (device == "auto" and torch.cuda.is_available()) else "cpu")
        _warn_timm_version(self.manifest, self.path)
        self.members: list[dict[str, Any]] = []
        self.specs: list[MemberSpec] = []
        self.models: list[Any] = []
        for i, entry in enumerate(self.manifest["members"]):
            try:
                member = MemberSpec.from_manifest(entry, task=self.task, class_names=self.class_names)
                trial_id = str(entry["trial_id"])
            except (KeyError, TypeError) as exc:
                raise ConfigError(f"members[{i}] lacks or mistypes {exc}; {_fix(self.path)}", origin=origin) from None
            except ValueError as exc:  # the spec's own checks: mean/std per channel, a finite logit_bias per class
                raise ConfigError(f"members[{i}]: {exc}; {_fix(self.path)}", origin=origin) from None
            if member.num_classes != len(self.class_names):
                raise ConfigError(f"members[{i}]: num_classes does not fit class_names; {_fix(self.path)}", origin=origin)
            # The members as plain dicts (what ``members`` has always held), the specs beside them.
            spec = {"trial_id": trial_id, **member.to_manifest()}
            model = build_member(member)
            try:
                state = load_safetensors(blobs[entry["weights"]])
                model.load_state_dict(state, strict=True)
            except Exception as exc:  # noqa: BLE001 - a weights file that does not fit its manifest entry
                raise ConfigError(
                    f"{entry['weights']} does not fit {spec['backbone']} with head {spec['head']} "
                    f"({' '.join(str(exc).split())[:160]}); {_fix(self.path)}",
                    origin=origin,
                ) from None
            model.eval().to(self.device)
            self.members.append(spec)
            self.specs.append(member)
            self.models.append(model)
        del blobs
        try:
            self.combiner = StackingEnsemble.from_dict(self.manifest["combiner"]["state"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"combiner: cannot be restored ({' '.join(str(exc).split())[:200]}); {_fix(self.path)}", origin=origin) from None
        if self.combiner.n_members_ != len(self.models):
            raise ConfigError(f"combiner: fitted on {self.combiner.n_members_} members, the manifest lists {len(self.models)}; {_fix(self.path)}", origin=origin)

    def __repr__(self) -> str:
        return (f"Bundle({str(self.path)!r}, task={self.task!r}, members={[m['trial_id'] for m in self.members]}, "
                f"combiner={self.combiner.combiner_!r}, device={self.device.type!r})")

    @property
    def multilabel(self) -> bool:
        return self.task == "multi-label"

    # -------------------------------------------------------- input

    def prepare(self, images: Sequence[Any], member: int = 0) -> np.ndarray:
        """The uint8 ``(N, S, S, C)`` model input of member ``member``, as the sweep's cache made it."""
        return prepare_batch([_decode(img) for img in _as_list(images)], self.specs[member])

    def model_input(self, batch: np.ndarray, member: int):
        """uint8 (N, S, S, C) -> normalised float (N, C, S, S); the trainer's own arithmetic, for equal results."""
        import torch

        spec = self.specs[member]
        scale, shift = normalization(spec.mean, spec.std, device=self.device)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device).permute(0, 3, 1, 2).float()
        return x * scale + shift

    # -------------------------------------------------------- predict

    def member_proba(self, images: Sequence[Any], *, tta: bool | None = None, batch_size: int = 64) -> np.ndarray:
        """Each member's probabilities, ``(n_members, N, K)``.

        Args:
            images: as ``predict_proba`` takes them.
            tta: ``None`` (default): each member's logits averaged over the image and the flips it trained
                with (its ``tta``), as its trial predicted the splits the ensemble was fitted on; ``False``:
                the image alone; ``True``: the horizontal mirror too, for members that do not already have it.
            batch_size: images per forward pass.
        """
        import torch

        from trainables import flip_average

        items = _as_list(images)
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"must be an integer >= 1, got {batch_size!r}", field="batch_size")
        if tta is not None and not isinstance(tta, (bool, np.bool_)):
            raise ConfigError(f"must be true, false or None (each member's own flips), got {tta!r}", field="tta")
        k = len(self.class_names)
        out = np.zeros((len(self.models), len(items), k), dtype=np.float64)
        groups: dict[str, list[int]] = {}
        for i, spec in enumerate(self.specs):
            groups.setdefault(spec.input_key, []).append(i)
        # Member by member over a chunk of batches, not batch by batch over the members: alternating
        # between models evicts each one's weights from the CPU caches (2.5x slower with resnet18s).
        chunk = max(batch_size, 1024)
        for c0 in range(0, len(items), chunk):
            decoded = [_decode(img) for img in items[c0 : c0 + chunk]]
            for idx in groups.values():
                prepared = prepare_batch(decoded, self.specs[idx[0]])
                for i in idx:
                    flips = self.flips(i, tta)
                    for b0 in range(0, len(decoded), batch_size):
                        x = self.model_input(prepared[b0 : b0 + batch_size], i)
                        with torch.inference_mode():
                            p = self._probs(flip_average(self.models[i], x, flips), i)
                        out[i, c0 + b0 : c0 + b0 + len(x)] = p.double().cpu().numpy()
        return out

    def flips(self, member: int, tta: bool | None = None) -> tuple[str, ...]:
        """The flips member ``member``'s logits are averaged over for ``tta`` (see ``member_proba``)."""
        own = self.specs[member].tta
        if tta is None:
            return own
        if not tta:
            return ()
        return own if "hflip" in own else ("hflip", *own)

    def _probs(self, logits, member: int):
        """Member ``member``'s probabilities from its logits: its ``logit_bias`` added first, when it has one."""
        import torch

        logits = logits.float()
        bias = self.members[member].get("logit_bias")
        if bias is not None:
            logits = logits + torch.tensor(bias, dtype=torch.float32, device=logits.device)
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, 1)

    def predict_proba(self, images: Sequence[Any], *, tta: bool | None = None, batch_size: int = 64) -> np.ndarray:
        """Ensemble probabilities ``(N, K)`` of a list of images.

        Args:
            images: arrays ``(H, W)`` or ``(H, W, C)`` (uint8 or uint16; 16-bit is windowed per image as
                in training) or image file paths; a 4-D array counts as a list of images.
            tta: ``None`` (default): each member averages over the flips it trained with, as the ensemble was
                fitted; ``False``: the image alone; ``True``: the horizontal mirror too (see ``member_proba``).
            batch_size: images per forward pass.
        """
        items = _as_list(images)
        if not items:
            return np.zeros((0, len(self.class_names)))
        return self.combiner.predict_proba(self.member_proba(items, tta=tta, batch_size=batch_size))

    def predict(self, images: Sequence[Any], *, tta: bool | None = None, batch_size: int = 64) -> list[str]:
        """The predicted class name per image (binary: at the bundle's threshold); multi-label: the labels above 0.5 joined with ``;``."""
        return self.labels_of(self.predict_proba(images, tta=tta, batch_size=batch_size))

    def labels_of(self, probs: np.ndarray) -> list[str]:
        """Class names from probabilities; a binary bundle decides at its validation-chosen threshold."""
        from ._stacking import decide

        if self.multilabel:
            return [";".join(c for c, p in zip(self.class_names, row) if p > 0.5) for row in probs]
        return [self.class_names[j] for j in decide(np.asarray(probs), self.task, self.combiner.threshold_)]


_TIMM_WARNED: set[tuple[str, str]] = set()


def _warn_timm_version(manifest: dict[str, Any], path: Path) -> None:
    """Warn once per (bundle timm, installed timm) pair when the major versions differ: members are rebuilt by the installed one."""
    import warnings

    import timm

    built = ((manifest.get("provenance") or {}).get("packages") or {}).get("timm")
    if not isinstance(built, str) or not built:
        return
    here = str(timm.__version__)
    if built.split(".")[0] == here.split(".")[0] or (built, here) in _TIMM_WARNED:
        return
    _TIMM_WARNED.add((built, here))
    warnings.warn(
        f"{path}: the bundle was built with timm {built} and this is timm {here}; its members are rebuilt by this "
        f"version and may predict differently: install timm=={built} (pip install 'timm=={built}') or rebuild the bundle",
        stacklevel=3,
    )


def _as_list(images: Any) -> list[Any]:
    if isinstance(images, np.ndarray):
        if images.ndim == 4:
            return list(images)
        raise ConfigError(
            f"images must be a list of (H, W[, C]) arrays or file paths (or one (N, H, W, C) array); got an array of "
            f"shape {images.shape}: wrap a single image in a list"
        )
    if isinstance(images, (str, os.PathLike)):
        return [images]
    return list(images)


def _decode(img: Any) -> np.ndarray:
    from trainables import read_image_file

    if isinstance(img, (str, os.PathLike)):
        try:
            return read_image_file(img)
        except FileNotFoundError:
            raise ConfigError("no such image file", origin=str(img)) from None
        except Exception as exc:  # noqa: BLE001 - PIL raises many kinds for a bad file
            raise ConfigError(
                f"not a readable image ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}); remove or replace it",
                origin=str(img),
            ) from None
    arr = np.asarray(img)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3, 4))) or arr.size == 0:
        raise ConfigError(f"an image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {arr.shape}")
    if arr.dtype == bool or not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise ConfigError(f"an image must hold numbers (uint8 or uint16); got dtype {arr.dtype}")
    return arr
