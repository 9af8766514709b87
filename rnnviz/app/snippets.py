"""The Contexts tab: where the shown unit is highest, lowest and at its quantiles, as short
snippets of text coloured by the unit (its own scale, as the text is), the key character
centred and outlined, each labelled top N, bottom N or its quantile. A click jumps there."""
from __future__ import annotations

import numpy as np
from bokeh.core.properties import value
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, Div, HoverTool, Range1d, TapTool
from bokeh.plotting import figure

from ..render import colours
from ..render.layout import is_whitespace_mark, shown
from .panels import SIDE_W, _on_pick

SIDE = 17                       # chars each side of the key char
LABEL = 9                       # cells for the label
CELL_W, ROW_PX = 8, 16
_ROWS = {"which": [], "rank": [], "position": [], "value": [], "label": [], "y": [], "char": []}


def _label(which: str, rank: int, quantile: float) -> str:
    if which == "quantile":
        return f"q {quantile:.2f}".replace("0.", ".")
    return f"{'top' if which == 'top' else 'bottom'} {rank}"


class ContextsPanel:
    def __init__(self, on_jump):
        self.source = ColumnDataSource(dict(_ROWS), name="contexts_source")      # one row per context
        self.chars = ColumnDataSource({"x": [], "y": [], "ch": [], "fill": [], "tc": []}, name="contexts_chars")
        self.keys = ColumnDataSource({"x": [], "y": []})
        width = (LABEL + 2 * SIDE + 1) * CELL_W
        fig = figure(frame_width=width, frame_height=ROW_PX, x_range=Range1d(-LABEL - 0.5, 2 * SIDE + 0.5),
                     y_range=Range1d(-0.5, 0.5), tools=[], toolbar_location=None, min_border=2,
                     name="contexts_figure", outline_line_color="#d0d0d0")
        fig.axis.visible = False
        fig.grid.visible = False
        # A transparent band per row: a click anywhere on the row picks it.
        rows = fig.rect(x=SIDE - LABEL / 2, y="y", width=2 * SIDE + 1 + LABEL, height=1, source=self.source,
                        fill_alpha=0, line_color=None, hover_fill_color="#000000", hover_fill_alpha=0.06)
        rows.selection_glyph = rows.nonselection_glyph = rows.glyph.clone()
        fig.rect(x="x", y="y", width=1, height=0.92, source=self.chars, fill_color="fill", line_color=None)
        fig.text(x="x", y="y", text="ch", source=self.chars, text_color="tc", text_font=value("'DejaVu Sans Mono', monospace"),
                 text_font_size="12px", text_align="center", text_baseline="middle")
        fig.rect(x="x", y="y", width=1, height=0.92, source=self.keys, fill_color=None, line_color="#111111",
                 line_width=1.5)
        fig.text(x=-LABEL, y="y", text="label", source=self.source, text_font_size="11px", text_align="left",
                 text_baseline="middle", text_color="#333333")
        fig.add_tools(TapTool(renderers=[rows]), HoverTool(renderers=[rows], tooltips=[
            ("", "@label"), ("position", "@position{0,0}"), ("value", "@value{0.000}")]))
        self.figure = fig
        self.note = Div(text="", width=SIDE_W, styles={"color": "#555"}, name="contexts_note")
        _on_pick(self.source, on_jump, "position")
        self.shown = None                     # (unit, scale) of the contexts shown
        self.layout = column(self.note, fig)

    def show(self, view, unit: str, scale: colours.Scale) -> None:
        """``unit``'s stored contexts, coloured on ``scale`` (the text's)."""
        self.shown = (unit, scale)
        a = view.analysis
        c = view.unit_rows("contexts", unit) if a is not None and a.contexts is not None else None
        if c is None or not len(c):
            self.source.data, self.chars.data = dict(_ROWS), {k: [] for k in self.chars.data}
            self.keys.data = {"x": [], "y": []}
            self.note.text = ("No contexts: this dump has not been analysed yet." if c is None
                              else f"No contexts stored for {unit}.")
            return
        which = c["which"].astype(str).to_numpy()
        rank = c["rank"].to_numpy() if "rank" in c else np.zeros(len(c))
        quant = c["quantile"].to_numpy(np.float64) if "quantile" in c else np.full(len(c), np.nan)
        # Highest first, then the quantiles downwards, then the lowest (the lowest of all last).
        order_key = np.where(which == "top", rank, np.where(which == "quantile", 100 + (1 - np.nan_to_num(quant)),
                                                             300 - rank))
        c = c.iloc[np.argsort(order_key, kind="stable")]
        point, index = view.check_unit(unit)
        xs, ys, chs, fills, tcs, labels, centre = [], [], [], [], [], [], []
        for r, row in enumerate(c.itertuples(index=False)):
            p = int(row.position)
            lo, hi = max(0, p - SIDE), min(view.n_chars, p + SIDE + 1)
            text = view.text(lo, hi)
            values = view.values(point, index, lo, hi)
            fill = scale.colours(values)
            for i, ch in enumerate(text):
                xs.append(lo + i - p + SIDE)
                ys.append(-r)
                chs.append(shown(ch))
                fills.append(fill[i])
                tcs.append("#9a9a9a" if is_whitespace_mark(ch) else "#111111")
            centre.append(text[p - lo] if p - lo < len(text) else "")
            labels.append(_label(str(row.which), int(getattr(row, "rank", 0) or 0), float(getattr(row, "quantile", np.nan))))
        n = len(c)
        self.source.data = {"which": c["which"].astype(str).tolist(), "rank": c["rank"].to_numpy() if "rank" in c
                            else np.zeros(n), "position": c["position"].to_numpy(np.int64),
                            "value": c["value"].to_numpy(np.float64), "label": labels,
                            "y": -np.arange(n, dtype=np.float64), "char": centre}
        self.chars.data = {"x": np.asarray(xs, np.float32), "y": np.asarray(ys, np.float32), "ch": chs,
                           "fill": fills, "tc": tcs}
        self.keys.data = {"x": [SIDE] * n, "y": (-np.arange(n)).tolist()}
        self.figure.frame_height = n * ROW_PX
        self.figure.y_range.update(start=-n + 0.5, end=0.5)
        self.note.text = (f"Where {unit} is highest (top), at its quantiles (q) and lowest (bottom), coloured "
                          f"as the text; click one to jump there.")
