"""Intensity windows: how 16-bit pixels and Hounsfield units become the uint8 a network sees.

``minmax`` stretches each image's own range; ``percentile`` clips at e.g. the 0.5 and 99.5
percentiles first, so a bright marker does not darken the whole radiograph; ``file`` uses a DICOM
file's VOI LUT or window centre/width; a name (``lung``, ``bone``...) or ``{center, width}`` is a
fixed window in the image's units (HU for CT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ._errors import ConfigError, did_you_mean

# Common CT windows (centre, width) in HU.
NAMED_WINDOWS: dict[str, tuple[float, float]] = {
    "lung": (-600.0, 1500.0),
    "mediastinum": (40.0, 400.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
    "subdural": (75.0, 215.0),
    "stroke": (40.0, 40.0),
    "abdomen": (40.0, 400.0),
    "soft_tissue": (50.0, 350.0),
    "liver": (60.0, 160.0),
}
KINDS = ("minmax", "percentile", "file")


@dataclass(frozen=True)
class Window:
    """One validated window. ``kind``: minmax, percentile, file or fixed (``center``/``width``)."""

    kind: str
    center: float = 0.0
    width: float = 1.0
    low: float = 0.5  # percentile kind
    high: float = 99.5

    def describe(self) -> str:
        if self.kind == "fixed":
            return f"{self.center:g}/{self.width:g}"
        if self.kind == "percentile":
            return f"percentile {self.low:g}-{self.high:g}"
        return self.kind


def _bad(value: Any, origin: str, field: str, allow_file: bool) -> ConfigError:
    names = [*KINDS[: 3 if allow_file else 2], *NAMED_WINDOWS]
    return ConfigError(
        f"unknown window {value!r}{did_you_mean(str(value), names)}; valid: {', '.join(names)}, "
        "{center: C, width: W} or {percentile: [0.5, 99.5]}",
        origin=origin,
        field=field,
    )


def parse_window(value: Any, *, origin: str, field: str, allow_file: bool = False) -> Window:
    """A ``Window`` from a space file's value: a kind, a named window, ``{center, width}`` or ``{percentile: [lo, hi]}``."""
    if isinstance(value, str):
        if value in ("minmax", "percentile") or (value == "file" and allow_file):
            return Window(kind=value)
        if value in NAMED_WINDOWS:
            c, w = NAMED_WINDOWS[value]
            return Window(kind="fixed", center=c, width=w)
        raise _bad(value, origin, field, allow_file)
    if isinstance(value, Mapping):
        if set(value) == {"center", "width"}:
            c, w = value["center"], value["width"]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (c, w)) or w <= 0:
                raise ConfigError(f"center and width must be numbers, width > 0, got {dict(value)!r}", origin=origin, field=field)
            return Window(kind="fixed", center=float(c), width=float(w))
        if set(value) == {"percentile"}:
            p = value["percentile"]
            ok = isinstance(p, (list, tuple)) and len(p) == 2 and all(isinstance(v, (int, float)) for v in p)
            if not ok or not 0 <= p[0] < p[1] <= 100:
                raise ConfigError(f"percentile must be [low, high] with 0 <= low < high <= 100, got {p!r}", origin=origin, field=field)
            return Window(kind="percentile", low=float(p[0]), high=float(p[1]))
    raise _bad(value, origin, field, allow_file)


def parse_windows(value: Any, *, origin: str, field: str, allow_file: bool = False) -> tuple[Window, ...]:
    """One window, or a list of them (one channel each)."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ConfigError("the window list is empty; name at least one window", origin=origin, field=field)
    return tuple(parse_window(v, origin=origin, field=f"{field}[{i}]" if len(values) > 1 else field, allow_file=allow_file)
                 for i, v in enumerate(values))


def to_uint8(values: np.ndarray, window: Window, *, dicom: Any = None) -> np.ndarray:
    """``values`` (any numeric array, e.g. HU) windowed to uint8.

    ``dicom``: the dataset for ``file`` windows (its VOI LUT, else its first window centre/width,
    else min-max).
    """
    x = np.asarray(values, dtype=np.float64)
    kind = window.kind
    if kind == "file":
        x, lo, hi = _file_window(x, dicom)
    elif kind == "fixed":
        lo, hi = window.center - window.width / 2.0, window.center + window.width / 2.0
    elif kind == "percentile":
        lo, hi = (np.percentile(x, [window.low, window.high]) if x.size else (0.0, 0.0))
    else:
        lo, hi = (float(x.min()), float(x.max())) if x.size else (0.0, 0.0)
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    return np.round(np.clip((x - lo) / (hi - lo), 0.0, 1.0) * 255.0).astype(np.uint8)


def _file_window(x: np.ndarray, ds: Any):
    if ds is not None and "VOILUTSequence" in ds:
        from pydicom.pixels import apply_voi_lut

        # A LUT maps the modality values itself; its output range is what the display stretches.
        item = ds.VOILUTSequence[0]
        mapped = apply_voi_lut(x, ds).astype(np.float64)
        return mapped, 0.0, float(2 ** int(item.LUTDescriptor[2]) - 1)
    if ds is not None and "WindowCenter" in ds and "WindowWidth" in ds:
        c = ds.WindowCenter
        w = ds.WindowWidth
        c = float(c[0] if hasattr(c, "__len__") and not isinstance(c, str) else c)
        w = float(w[0] if hasattr(w, "__len__") and not isinstance(w, str) else w)
        if w > 0:
            return x, c - w / 2.0, c + w / 2.0
    return (x, float(x.min()), float(x.max())) if x.size else (x, 0.0, 0.0)
