"""The model's top-k next-character guesses in a strip under each row of text.

As in Karpathy et al.'s prediction figure: under each character, its k most likely next
characters, most likely first, each on a background shaded by its probability (white 0
.. dark 1, ColorBrewer Purples). The guess that is the character actually coming next
is drawn dark, the others grey. The strip is sent only while it is shown (one row per character and guess).
"""
from __future__ import annotations

import numpy as np
from bokeh.models import CategoricalColorMapper, ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.core.properties import value

from ..render.colours import _ramp
from ..render.layout import shown

STRIP_PX = 10                   # pixels per guess row
MAX_K = 5
PROB = _ramp(("#fcfbfd", "#dadaeb", "#bcbddc", "#9e9ac8", "#807dba"))
_COLUMNS = ("x", "y", "w", "ch", "p", "rank", "pos", "hit")


def empty_strip() -> dict:
    return {c: [] for c in _COLUMNS}


def strip_data(text: str, next_chars: str, x: np.ndarray, y: np.ndarray, w: np.ndarray, start: int,
               ids: np.ndarray, probs: np.ndarray, vocab: list[str], k: int, th: float) -> dict:
    """Rows of the strip for k guesses: per char and guess its cell (row band offsets by ``th``,
    the text's share of a row), glyph, probability and whether it is the next char."""
    n = len(text)
    if k == 0 or n == 0:
        return empty_strip()
    sh = (1 - th) / k
    ids, probs = ids[:, :k], probs[:, :k]
    names = np.array([shown(c) or "␣" for c in vocab] + ["?"], dtype=object)
    chars = np.array(vocab + ["\0"], dtype=object)
    safe = np.where((ids >= 0) & (ids < len(vocab)), ids, len(vocab))
    truth = np.array(list(next_chars), dtype=object)[:, None] if n else np.zeros((0, 1), object)
    rank = np.tile(np.arange(k), n)
    return {"x": np.repeat(x, k), "y": (np.repeat(y, k) + 0.5 - th - (rank + 0.5) * sh).astype(np.float32),
            "w": np.repeat(w, k), "ch": names[safe].ravel().tolist(),
            "p": probs.astype(np.float32).ravel(), "rank": (rank + 1).astype(np.int8),
            "pos": np.repeat(np.arange(start, start + n, dtype=np.int64), k),
            "hit": np.where((chars[safe] == truth).ravel(), "1", "0").tolist()}


class Strip:
    def __init__(self, fig, text_dodge):
        self.k = 0
        self.source = ColumnDataSource(empty_strip(), name="strip_source")
        self.mapper = LinearColorMapper(palette=PROB, low=0, high=1)
        self.cells = fig.rect(x="x", y="y", width="w", height=1 / 3, source=self.source, name="strip",
                              fill_color={"field": "p", "transform": self.mapper}, line_color=None)
        fig.text(x="x", y="y", text="ch", source=self.source, text_font=value("'DejaVu Sans Mono', monospace"),
                 text_font_size=f"{STRIP_PX}px", text_align="center", text_baseline="middle",
                 text_color={"field": "hit", "transform": CategoricalColorMapper(
                     factors=["0", "1"], palette=["#8a8a8a", "#000000"])})
        fig.add_tools(HoverTool(renderers=[self.cells], tooltips=[
            ("guess", "@rank: @ch"), ("probability", "@p{0.0%}"), ("after char", "@pos{0,0}")]))

    def show(self, k: int, th: float, data: dict) -> None:
        self.k = k
        h = (1 - th) / k if k else 0
        self.cells.glyph.height = h
        self.source.data = data
