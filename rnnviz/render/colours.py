"""Colour maps and scales for one unit's values, shared by the app and the static export.

The default scale of a unit is global and robust: its 1st and 99th percentiles over the
whole text (what ``rnnviz analyze`` stores in /analysis/units, or computed from the
states when there is no analysis: :mod:`rnnviz.render.scales`), so a colour means the
same value in every window. Sigmoid gates stay on [0, 1] and tanh gates on [-1, 1].

Maps (ColorBrewer's colour-blind-safe RdBu and its halves, and Greens): a unit whose
robust range crosses zero gets the diverging map, symmetric about zero (white is 0); a
one-signed unit a sequential map from white (near zero) to red (positive) or blue
(negative), so it does not waste half the range; gates the sequential green map. Every
map's lightness grows towards white monotonically, so it reads without hue too. The ends
are kept light enough that black text stays readable.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..names import KIND_RANGE, kind_range

# ColorBrewer RdBu (9 classes) without its two darkest ends, and Greens (7 classes, lightest five).
_NEG = ("#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7")
_POS = ("#f7f7f7", "#fddbc7", "#f4a582", "#d6604d")
_GREENS = ("#f7fcf5", "#e5f5e0", "#c7e9c0", "#a1d99b", "#74c476", "#41ab5d")
_FEATURE = ("#f2eef7", "#6a3d9a")
NAN_COLOR = "#ffffff"
SCALES = ("auto", "fixed", "whole text", "window")
# A fixed scale for the unbounded cell state: tanh(3) = 0.995, so past this the unit is saturated anyway.
C_FIXED = 3.0
# A unit is one-signed when its robust range reaches past zero by less than this share of its span.
ONE_SIGNED = 0.1


def _ramp(anchors, n: int = 256) -> list[str]:
    rgb = np.array([[int(a[i:i + 2], 16) for i in (1, 3, 5)] for a in anchors], dtype=float)
    at = np.linspace(0, len(anchors) - 1, n)
    out = np.stack([np.interp(at, np.arange(len(anchors)), rgb[:, c]) for c in range(3)], axis=1)
    return ["#%02x%02x%02x" % tuple(int(round(v)) for v in row) for row in out]


DIVERGING = _ramp(_NEG + _POS[1:])
POSITIVE = _ramp(_POS)              # white (low) .. red (high)
NEGATIVE = _ramp(_NEG)              # blue (low, most negative) .. white (high)
SEQUENTIAL = _ramp(_GREENS)         # gates: white (0) .. green (1)
FEATURE = _ramp(_FEATURE)
PROB = _ramp(("#fcfbfd", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba"))   # probabilities 0..1 (Purples)
# One colour per code of /errors/category (-1 not predicted, 0 no error, then the categories of
# rnnviz errors in order): Okabe & Ito's colour-blind-safe set, light enough under black text.
ERROR_CATEGORIES = ["#d9d9d9", "#ffffff", "#f3b94d", "#8ccbef", "#5cc4a0", "#f0e442", "#e3a2c7", "#f08a4b"]
PALETTES = {"diverging": DIVERGING, "positive": POSITIVE, "negative": NEGATIVE, "gate": SEQUENTIAL}
CATEGORICAL = {"errors": ERROR_CATEGORIES}      # one colour per integer code, not a ramp


@dataclass(frozen=True)
class Scale:
    """How one unit is coloured: values ``low``..``high`` onto ``map`` (a key of PALETTES)."""
    low: float
    high: float
    map: str
    rule: str           # the legend's words: where the range comes from

    @property
    def palette(self) -> list[str]:
        return PALETTES[self.map] if self.map in PALETTES else CATEGORICAL[self.map]

    def colours(self, values: np.ndarray) -> list[str]:
        return to_hex(values, self.low, self.high, self.palette)

    def legend(self) -> str:
        words = {"diverging": "blue < 0 < red, white = 0", "positive": "one-signed: white … red",
                 "negative": "one-signed: blue … white", "gate": "white … green",
                 "errors": "one colour per category"}[self.map]
        return f"{_num(self.low)} … {_num(self.high)} ({words}): {self.rule}; values outside are clipped"


def _num(x: float) -> str:
    return f"{x:+.3g}" if x else "0"


def is_diverging(kind: str) -> bool:
    return KIND_RANGE[kind] != "unit"


def palette(kind: str) -> list[str]:
    """The map of a kind on its fixed scale."""
    return DIVERGING if is_diverging(kind) else SEQUENTIAL


def is_gate(kind: str) -> bool:
    return kind.startswith("gate_")


def unit_scale(kind: str, values: np.ndarray | None = None, scale: str = "auto", stats: dict | None = None,
               cell: str = "lstm") -> Scale:
    """The colour scale of a unit of ``kind``.

    ``stats``: the unit's distribution over the whole text (keys p1, p99, min, max, n and
    optionally ``sampled`` (n of how many), ``computed``); ``values``: the window shown.
    ``auto``: gates on their fixed range, c and h on their 1st..99th percentiles over the
    whole text (the window's when ``stats`` is None); ``fixed``: the kind's natural range
    (the unbounded cell state: +-C_FIXED); ``whole text``: the unit's min..max over the
    text; ``window``: the 1st..99th percentiles of ``values``.
    """
    if scale not in SCALES:
        raise ValueError(scale)
    bound = kind_range(kind, cell)
    if scale == "auto":
        scale = "fixed" if is_gate(kind) else ("stats" if stats is not None else "window")
    if scale == "fixed":
        if bound == "unit":
            return Scale(0.0, 1.0, "gate", "the range of a sigmoid gate")
        if bound == "signed":
            return Scale(-1.0, 1.0, "diverging", "the range of tanh")
        return Scale(-C_FIXED, C_FIXED, "diverging", f"fixed ±{C_FIXED:g} (tanh({C_FIXED:g}) = 0.995)")
    if scale == "whole text" and stats is not None:
        lo, hi, rule = stats["min"], stats["max"], f"min … max {_over(stats)}"
    elif scale == "stats":
        lo, hi, rule = stats["p1"], stats["p99"], f"1st … 99th percentile {_over(stats)}"
    else:
        finite = values[np.isfinite(values)] if values is not None else np.zeros(0)
        lo, hi = (float(np.percentile(finite, 1)), float(np.percentile(finite, 99))) if len(finite) else (0.0, 1.0)
        rule = "1st … 99th percentile of this window (changes with the window)"
    return _fit(kind, float(lo), float(hi), rule)


def _over(stats: dict) -> str:
    n = int(stats.get("n", 0))
    of = stats.get("of")
    where = f"{n:,} sampled of {int(of):,} chars" if of and of > n else f"all {n:,} chars"
    return f"over {where}" + (" (computed on opening: no analysis)" if stats.get("computed") else " (analysis)")


def _fit(kind: str, lo: float, hi: float, rule: str) -> Scale:
    """A map for the range [lo, hi]: gates keep theirs; one-signed ranges get a sequential map."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if KIND_RANGE[kind] == "unit":
        return Scale(lo, hi if hi > lo else lo + 1e-6, "gate", rule)
    span = max(hi - lo, 1e-6)
    if lo >= -ONE_SIGNED * span and hi > 0:         # (almost) all >= 0: white at zero, or above it
        low = 0.0 if lo <= ONE_SIGNED * span else lo
        return Scale(low, hi if hi > low else low + 1e-6, "positive", rule)
    if hi <= ONE_SIGNED * span and lo < 0:          # (almost) all <= 0
        high = 0.0 if hi >= -ONE_SIGNED * span else hi
        return Scale(lo if lo < high else high - 1e-6, high, "negative", rule)
    m = max(abs(lo), abs(hi), 1e-6)
    return Scale(-m, m, "diverging", rule)


def limits(kind: str, values: np.ndarray, scale: str = "auto", stats: dict | None = None,
           cell: str = "lstm") -> tuple[float, float]:
    """(low, high) of :func:`unit_scale`."""
    s = unit_scale(kind, values, scale, stats, cell)
    return s.low, s.high


def to_hex(values: np.ndarray, low: float, high: float, colours: list[str]) -> list[str]:
    """Map values onto ``colours`` like Bokeh's LinearColorMapper (clipped at the ends, NaN white)."""
    values = np.asarray(values, dtype=np.float64)
    frac = (values - low) / (high - low) if high > low else np.zeros_like(values)
    idx = np.clip(np.floor(frac * len(colours)), 0, len(colours) - 1)
    return [NAN_COLOR if not np.isfinite(v) else colours[int(i)] for v, i in zip(values, np.nan_to_num(idx))]


def lightness(colour: str) -> float:
    """CIE L* (0 black .. 100 white) of a #rrggbb colour."""
    rgb = np.array([int(colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    y = float(lin @ [0.2126, 0.7152, 0.0722])
    return 116 * (y ** (1 / 3) if y > 216 / 24389 else (24389 / 27 * y + 16) / 116) - 16
