"""The model's top-k next-character guesses in a strip under each row of text.

As in Karpathy et al.'s prediction figure: under each character, its k most likely next
characters, most likely first, each on a background shaded by its probability (white 0
.. dark 1, ColorBrewer Purples). The guess that is the character actually coming next
is drawn dark, the others grey. The strip is sent only while it is shown (one row per character and guess).
"""
from __future__ import annotations

import numpy as np
from bokeh.models import ColumnDataSource, HoverTool, LinearColorMapper
from bokeh.core.properties import value

from ..render.colours import PROB
from ..render.extras import Guesses

STRIP_PX = 10                   # pixels per guess row
MAX_K = 5
_COLUMNS = ("x", "y", "ch", "p", "rank", "hit")


def empty_strip() -> dict:
    return {c: [] for c in _COLUMNS}


def strip_data(x: np.ndarray, y: np.ndarray, g: Guesses, th: float) -> dict:
    """Rows of the strip for the guesses ``g`` of the chars at (x, y): per char and guess its
    cell (under the text, whose share of a row is ``th``), glyph, probability and whether
    it came true."""
    n, k = g.glyphs.shape
    if k == 0 or n == 0:
        return empty_strip()
    sh = (1 - th) / k
    rank = np.tile(np.arange(k), n)
    # Columns as small as they go: a window of 10,000 chars with 5 guesses is 50,000 rows.
    return {"x": np.repeat(x, k).astype(np.float32),
            "y": (np.repeat(y, k) + 0.5 - th - (rank + 0.5) * sh).astype(np.float32),
            "ch": g.glyphs.ravel().tolist(), "p": g.probs.ravel(), "rank": (rank + 1).astype(np.int8),
            "hit": g.hits.ravel().astype(np.int8)}


class Strip:
    def __init__(self, fig, text_dodge):
        self.k = 0
        self.source = ColumnDataSource(empty_strip(), name="strip_source")
        self.mapper = LinearColorMapper(palette=PROB, low=0, high=1)
        self.cells = fig.rect(x="x", y="y", width=1, height=1 / 3, source=self.source, name="strip",
                              fill_color={"field": "p", "transform": self.mapper}, line_color=None)
        fig.text(x="x", y="y", text="ch", source=self.source, text_font=value("'DejaVu Sans Mono', monospace"),
                 text_font_size=f"{STRIP_PX}px", text_align="center", text_baseline="middle",
                 text_color={"field": "hit", "transform": LinearColorMapper(
                     palette=["#8a8a8a", "#000000"], low=0, high=1)})
        fig.add_tools(HoverTool(renderers=[self.cells], tooltips=[
            ("guess", "@rank: @ch"), ("probability", "@p{0.0%}")]))

    def show(self, k: int, th: float, data: dict) -> None:
        self.k = k
        h = (1 - th) / k if k else 0
        self.cells.glyph.height = h
        self.source.data = data
