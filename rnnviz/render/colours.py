"""Colour maps and scales for one unit's values, shared by the app and the static export.

Cell states and hidden states have a sign that matters (diverging map, zero is
white); sigmoid gates live in (0, 1) (sequential map). ``names.KIND_RANGE`` says
which is which. The ends are kept light enough that black text stays readable.
"""
from __future__ import annotations

import numpy as np

from ..names import KIND_RANGE, kind_range

# Anchors interpolated to 256 steps: blue (negative) .. white .. red (positive), and white .. green.
_DIVERGING = ("#3f7fc1", "#9cc3e4", "#f7f7f7", "#f2a98f", "#d6533f")
_SEQUENTIAL = ("#ffffff", "#e3f2d9", "#a8d8a0", "#5db36c", "#2a8a4a")
_FEATURE = ("#f2eef7", "#6a3d9a")
NAN_COLOR = "#ffffff"
SCALES = ("auto", "fixed", "whole text", "window")
# A fixed scale for the unbounded cell state: tanh(3) = 0.995, so past this the unit is saturated anyway.
C_FIXED = 3.0


def _ramp(anchors, n: int = 256) -> list[str]:
    rgb = np.array([[int(a[i:i + 2], 16) for i in (1, 3, 5)] for a in anchors], dtype=float)
    at = np.linspace(0, len(anchors) - 1, n)
    out = np.stack([np.interp(at, np.arange(len(anchors)), rgb[:, c]) for c in range(3)], axis=1)
    return ["#%02x%02x%02x" % tuple(int(round(v)) for v in row) for row in out]


DIVERGING = _ramp(_DIVERGING)
SEQUENTIAL = _ramp(_SEQUENTIAL)
FEATURE = _ramp(_FEATURE)


def is_diverging(kind: str) -> bool:
    return KIND_RANGE[kind] != "unit"


def palette(kind: str) -> list[str]:
    return DIVERGING if is_diverging(kind) else SEQUENTIAL


def limits(kind: str, values: np.ndarray, scale: str = "auto",
           extent: tuple[float, float] | None = None, cell: str = "lstm") -> tuple[float, float]:
    """(low, high) of the colour map for a unit of ``kind``.

    ``fixed``: the kind's natural range (the cell state: +-C_FIXED);
    ``whole text``: the unit's own range over the dump (``extent``, from the analysis;
    the window's range when there is none); ``window``: the robust range (1st..99th
    percentile) of ``values``, the window shown; ``auto``: fixed for bounded kinds,
    the window's range for the unbounded cell state (whose extremes can be 20x its
    typical values) and for h of a ReLU RNN (``cell``). Diverging scales stay symmetric
    about zero so white means 0.
    """
    if scale not in SCALES:
        raise ValueError(scale)
    bound = kind_range(kind, cell)
    if scale == "auto":
        scale = "window" if bound == "unbounded" else "fixed"
    if scale == "fixed":
        return {"unit": (0.0, 1.0), "signed": (-1.0, 1.0)}.get(bound, (-C_FIXED, C_FIXED))
    if scale == "window" or extent is None:
        finite = values[np.isfinite(values)]
        extent = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if len(finite) else (0.0, 1.0)
    lo, hi = extent
    if is_diverging(kind):
        m = max(abs(lo), abs(hi), 1e-6)
        return -m, m
    return (lo, hi) if hi > lo else (lo, lo + 1e-6)


def describe_scale(kind: str, scale: str, extent_known: bool, cell: str = "lstm") -> str:
    """Words for the scale ``limits`` used, for the app's unit line."""
    if scale == "auto":
        scale = "window" if kind_range(kind, cell) == "unbounded" else "fixed"
    if scale == "whole text" and not extent_known:
        scale = "window"
    return {"fixed": "the kind's range", "whole text": "the unit's range over the whole text",
            "window": "the unit's range in this window"}[scale]


def to_hex(values: np.ndarray, low: float, high: float, colours: list[str]) -> list[str]:
    """Map values onto ``colours`` like Bokeh's LinearColorMapper (clipped at the ends, NaN white)."""
    values = np.asarray(values, dtype=np.float64)
    frac = (values - low) / (high - low) if high > low else np.zeros_like(values)
    idx = np.clip(np.floor(frac * len(colours)), 0, len(colours) - 1)
    return [NAN_COLOR if not np.isfinite(v) else colours[int(i)] for v, i in zip(values, np.nan_to_num(idx))]
