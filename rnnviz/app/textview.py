"""The main view: a window of text on a grid of cells coloured by one unit, and its value plot.

One ColumnDataSource holds a row per character of the window. Switching unit
replaces its numeric column ``v`` only (a binary float32 buffer); the text,
positions and predictions travel once per window. The colours are computed in
the browser by a LinearColorMapper over ``v``.
"""
from __future__ import annotations

import numpy as np
from bokeh.models import (BoxAnnotation, BoxSelectTool, ColumnDataSource, Dodge, HoverTool,
                          LinearAxis, LinearColorMapper, Range1d, Span, WheelPanTool)
from bokeh.core.properties import value
from bokeh.plotting import figure

from ..render import colours
from ..render.layout import WRAP, described, grid, is_whitespace_mark, predictions_text, shown
from .strip import STRIP_PX, Strip

CELL_W, ROW_PX = 8, 16        # pixels per character cell
TEXT_H = 550                  # the text's height in pixels; the wheel scrolls through the rest of the window
FONT = "'DejaVu Sans Mono', Menlo, Consolas, monospace"
_COLUMNS = ("pos", "x", "y", "w", "ch", "raw", "tc", "v", "f", "pred", "loss")


def window_data(view, start: int, end: int, values: np.ndarray, feature: np.ndarray | None):
    """Columns for chars [start, end) and the rows where sources begin: (data, rows, seps)."""
    text = view.text(start, end)
    src = view.sources
    firsts = src["start"].to_numpy()
    g = grid(text, WRAP, breaks=view.source_breaks(start, end))
    loss, ids, probs = view.predictions(start, end)
    n = len(text)
    data = {
        "pos": np.arange(start, end, dtype=np.int64),
        "x": (g.col + (g.width - 1) / 2).astype(np.float32),
        "y": (-g.row).astype(np.float32),
        "w": g.width.astype(np.float32),
        "ch": [shown(c) for c in text],
        "raw": [described(c) for c in text],
        "tc": ["#9a9a9a" if is_whitespace_mark(c) else "#111111" for c in text],
        "v": values.astype(np.float32),
        "f": feature.astype(np.float32) if feature is not None else np.full(n, np.nan, np.float32),
        "pred": predictions_text(ids, probs, view.vocab),
        "loss": loss.astype(np.float32),
    }
    # Rows where a new source starts get a rule and the source's name.
    first_rows = [(int(g.row[f - start]), name) for f, name in zip(firsts, src["name"]) if start <= f < end]
    seps = {"y": [0.5 - r for r, _ in first_rows], "name": [name for _, name in first_rows],
            "x": [WRAP - 0.5] * len(first_rows)}
    return data, g.rows, seps


class TextView:
    def __init__(self):
        self.source = ColumnDataSource({k: [] for k in _COLUMNS}, name="text_source")
        self.mapper = LinearColorMapper(palette=colours.DIVERGING, low=-1, high=1, nan_color=colours.NAN_COLOR)
        self.feature_mapper = LinearColorMapper(palette=colours.FEATURE, low=0, high=1,
                                                nan_color="rgba(0,0,0,0)")
        self.marks = ColumnDataSource({"x": [], "y": [], "w": []}, name="marks")         # a jump's target
        self.span = ColumnDataSource({"x": [], "y": [], "w": []}, name="span_marks")     # the selected span
        self.span_range: tuple[int, int] | None = None
        self.seps = ColumnDataSource({"x": [], "y": [], "name": []})
        self.rows = 0
        self.pitch = ROW_PX             # pixels per text row: the row and its prediction strip
        self.title = ""
        self.feature_name: str | None = None
        self.value_label = ("value", None)
        self.figure = self._text_figure()
        self.strip = Strip(self.figure, self.text_dodge)
        self.plot = self._value_plot()

    @property
    def rows_visible(self) -> float:
        """Text rows in the figure's height (fractional: the scale is exactly ``pitch`` px a row)."""
        return TEXT_H / self.pitch

    def _text_figure(self):
        y_range = Range1d(-TEXT_H / ROW_PX + 0.5, 0.5, bounds=(-TEXT_H / ROW_PX + 0.5, 0.5))
        fig = figure(frame_width=WRAP * CELL_W, frame_height=TEXT_H,
                     x_range=Range1d(-0.5, WRAP - 0.5), y_range=y_range, tools=[],
                     toolbar_location=None, name="text_figure", min_border=4,
                     outline_line_color="#d0d0d0", background_fill_color="#ffffff")
        fig.axis.visible = False
        fig.grid.visible = False
        # Each row is a band of height 1: the text on top, the prediction strip (when shown) under it.
        self.text_dodge = Dodge(value=0.0, range=y_range)
        self.track_dodge = Dodge(value=-0.41, range=y_range)
        text_y = {"field": "y", "transform": self.text_dodge}
        # The outline in the fill colour covers the hairline seams anti-aliasing leaves between cells.
        colour = {"field": "v", "transform": self.mapper}
        cells = fig.rect(x="x", y=text_y, width="w", height=1, source=self.source, fill_color=colour,
                         line_color=colour, line_width=1)
        # The feature track: a thin bar along the bottom of each cell, like LSTMVis' meta tracks.
        track = fig.rect(x="x", y={"field": "y", "transform": self.track_dodge}, width="w", height=0.18,
                         source=self.source, line_color=None, name="feature_track", visible=False,
                         fill_color={"field": "f", "transform": self.feature_mapper})
        fig.text(x="x", y=text_y, text="ch", source=self.source, text_color="tc", text_font=value(FONT),
                 text_font_size="12px", text_align="center", text_baseline="middle")
        # Marks are one outline per row of a run (a span, a match), not one box per character.
        span = fig.rect(x="x", y=text_y, width="w", height=1, source=self.span, fill_color="#ff7f0e",
                        fill_alpha=0.18, line_color="#e6550d", line_width=2, name="span_outline")
        marks = fig.rect(x="x", y=text_y, width="w", height=1, source=self.marks, fill_color=None,
                         line_color="#111111", line_width=1.5)
        self._text_glyphs = [cells.glyph, span.glyph, marks.glyph]
        self._track = track.glyph
        fig.hspan(y="y", source=self.seps, line_color="#888888", line_dash="dashed")
        fig.text(x="x", y="y", text="name", source=self.seps, text_color="#666666",
                 text_font_size="10px", text_align="left", text_baseline="top")
        # A drag selects the span from its first to its last character in reading order; that span is
        # drawn by `span_outline`, so the selection itself must not fade the other characters.
        cells.nonselection_glyph = cells.glyph.clone()
        cells.selection_glyph = cells.glyph.clone()
        self.hover = hover = HoverTool(renderers=[cells], tooltips=self._tooltips(None))
        select = BoxSelectTool(renderers=[cells], description="Select a span of text")
        wheel = WheelPanTool(dimension="height", description="Scroll through the window")
        fig.add_tools(select, wheel, hover)
        fig.toolbar.active_drag = select
        fig.toolbar.active_scroll = wheel
        return fig

    def show_value_as(self, label: str = "value", formatter=None) -> None:
        """What the hover calls the ``v`` column, and how it prints it (a CustomJSHover, e.g. a
        category's name; None: the number)."""
        self.value_label = (label, formatter)
        self.hover.formatters = {"@v": formatter} if formatter is not None else {}
        self.hover.tooltips = self._tooltips(self.feature_name)

    def _tooltips(self, feature: str | None) -> list[tuple[str, str]]:
        label, formatter = self.value_label
        shown = "@v{custom}" if formatter is not None else "@v{0.0000}"
        return ([("char", "@raw"), ("position", "@pos{0,0}"), (label, shown)]
                + ([(feature, "@f{0.00}")] if feature else [])
                + [("next char (model)", "@pred"), ("loss", "@loss{0.00} nats")])

    def _value_plot(self):
        # Locked to the rows in view (no pan or zoom of its own); a click marks that character.
        fig = figure(frame_width=WRAP * CELL_W, frame_height=56, x_range=Range1d(0, 1),
                     y_range=Range1d(-1, 1), tools=[], name="value_plot", min_border_top=2,
                     toolbar_location=None, min_border_left=4, y_axis_location="right")
        fig.axis.major_label_text_font_size = "9px"
        fig.add_layout(Span(location=0, dimension="width", line_color="#bbbbbb"))
        # The marked characters (a jump, a match, a click here), shaded at their positions.
        self.plot_marks = BoxAnnotation(fill_color="#111111", fill_alpha=0.15, line_color="#111111",
                                        line_alpha=0.8, visible=False)
        fig.add_layout(self.plot_marks)
        fig.line(x="pos", y="v", source=self.source, line_color="#333333", line_width=1)
        fig.extra_y_ranges = {"feature": Range1d(0, 1)}
        self.feature_axis = LinearAxis(y_range_name="feature", axis_label="feature",
                                       axis_label_text_color="#6a3d9a", visible=False)
        fig.add_layout(self.feature_axis, "right")
        self.feature_line = fig.step(x="pos", y="f", source=self.source, y_range_name="feature",
                                     line_color="#6a3d9a", line_alpha=0.8, mode="center", visible=False)
        fig.xaxis.formatter.use_scientific = False
        return fig

    # ----- updates
    def show_window(self, data: dict, rows: int, seps: dict) -> None:
        self.rows = rows
        self.source.data = data
        self.seps.data = seps
        self.marks.data = {"x": [], "y": [], "w": []}
        self._draw_span()
        self._set_rows(0)
        self.plot_marks.visible = False
        self.update_visible_box()

    def show_values(self, values: np.ndarray, scale: colours.Scale, title: str) -> None:
        """New unit: only the ``v`` column, the colour map and a few scalars change."""
        self.source.data["v"] = values.astype(np.float32)
        if self.mapper.palette != scale.palette:  # validating 256 colours costs ~8 ms: only when it changes
            self.mapper.palette = scale.palette
        low, high = scale.low, scale.high
        self.mapper.update(low=low, high=high)
        self.title = title
        pad = 0.05 * (high - low)
        self.plot.y_range.update(start=min(low, 0) - pad if scale.map != "gate" else low - pad,
                                 end=max(high, 0) + pad if scale.map != "gate" else high + pad)

    def show_feature(self, values: np.ndarray | None, name: str = "") -> None:
        n = len(self.source.data["pos"])
        shown_values = values if values is not None else np.full(n, np.nan, np.float32)
        self.source.data["f"] = shown_values.astype(np.float32)
        on = values is not None
        self.feature_name = name if on else None
        self.hover.tooltips = self._tooltips(self.feature_name)
        track = self.figure.select_one({"name": "feature_track"})
        track.visible = on
        self.feature_line.visible = on
        self.feature_axis.visible = on
        if on:
            finite = values[np.isfinite(values)]
            lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1
            self.feature_mapper.update(low=lo, high=hi)
            self.plot.extra_y_ranges["feature"].update(start=lo - 0.05 * (hi - lo), end=hi + 0.05 * (hi - lo))
            self.feature_axis.axis_label = name

    def _row_boxes(self, start: int, end: int) -> dict:
        """One box per text row covering chars [start, end) of the window (x, y, w in cells)."""
        d = self.source.data
        pos = d["pos"]
        if not len(pos) or end <= start:
            return {"x": [], "y": [], "w": []}
        i0, i1 = max(0, int(start - pos[0])), min(len(pos), int(end - pos[0]))
        if i1 <= i0:
            return {"x": [], "y": [], "w": []}
        x, y, w = (np.asarray(d[k])[i0:i1] for k in ("x", "y", "w"))
        left, right = x - w / 2, x + w / 2
        cut = np.flatnonzero(np.diff(y) != 0) + 1
        firsts, lasts = np.concatenate([[0], cut]), np.concatenate([cut - 1, [len(y) - 1]])
        return {"x": ((left[firsts] + right[lasts]) / 2).tolist(), "y": y[firsts].tolist(),
                "w": (right[lasts] - left[firsts]).tolist()}

    def mark(self, start: int, length: int, scroll: bool = True) -> None:
        """Outline chars [start, start+length) (in the text and the value plot); scroll them into view."""
        pos = self.source.data["pos"]
        if not len(pos):
            return
        boxes = self._row_boxes(start, start + max(1, length))
        self.marks.data = boxes
        self.plot_marks.update(left=start - 0.5, right=start + max(1, length) - 0.5, visible=bool(boxes["y"]))
        if boxes["y"] and scroll:
            self.scroll_to_row(-int(boxes["y"][0]))

    def set_span(self, span: tuple[int, int] | None) -> None:
        """Outline the selected span (None: no span)."""
        self.span_range = span
        self._draw_span()

    def _draw_span(self) -> None:
        self.span.data = self._row_boxes(*self.span_range) if self.span_range else {"x": [], "y": [], "w": []}

    def char_at(self, x: float, y: float) -> int | None:
        """The position of the character drawn at data point (x, y), or None."""
        d = self.source.data
        xs, ys, ws = (np.asarray(d[k]) for k in ("x", "y", "w"))
        hit = np.flatnonzero((np.abs(ys - y) <= 0.5) & (np.abs(xs - x) <= ws / 2))
        return int(d["pos"][hit[0]]) if len(hit) else None

    def anchor(self) -> int:
        """The first character of the row a third of the way down the visible rows: where a jump
        to it would scroll back to this view (``scroll_to_row``)."""
        pos, y = np.asarray(self.source.data["pos"]), np.asarray(self.source.data["y"])
        if not len(pos):
            return 0
        top = int(round(0.5 - self.figure.y_range.end))
        row = min(top + int(self.rows_visible) // 3, self.rows - 1)
        i = int(np.searchsorted(-y, row))            # rows grow downwards: -y is sorted
        return int(pos[min(i, len(pos) - 1)])

    def scroll_to_row(self, row: int) -> None:
        """Put ``row`` about a third of the way down the visible rows."""
        top = max(0, min(row - int(self.rows_visible) // 3, self.rows - int(self.rows_visible)))
        self._set_rows(top)

    def _set_rows(self, top: int) -> None:
        """Show rows from ``top`` down, at ``pitch`` pixels a row."""
        span = self.rows_visible
        self.figure.y_range.update(bounds=(min(0.5 - span, 0.5 - self.rows), 0.5), start=-top - span + 0.5,
                                   end=-top + 0.5)
        self.update_visible_box()

    @staticmethod
    def text_share(k: int) -> float:
        """The text's share of a row's band when ``k`` guesses are shown under it."""
        return ROW_PX / (ROW_PX + k * STRIP_PX)

    def top_row(self) -> int:
        return int(round(0.5 - self.figure.y_range.end))

    def set_strip(self, k: int, data: dict, top: int) -> None:
        """Show the top-``k`` predictions (``data``: strip_data) under each row (k = 0: none),
        keeping row ``top`` at the top."""
        if k != self.strip.k:
            self.pitch = ROW_PX + k * STRIP_PX
            th = self.text_share(k)
            self.text_dodge.value = 0.5 - th / 2
            self.track_dodge.value = 0.5 - th + 0.09 * th
            for g in self._text_glyphs:
                g.height = th
            self._track.height = 0.18 * th
            self.strip.show(k, th, data)
            self._set_rows(max(0, min(top, self.rows - int(self.rows_visible))))
        elif k:
            self.strip.source.data = data

    def visible_span(self) -> tuple[int, int]:
        """Chars [start, end) on the rows now visible in the text figure."""
        pos, y = np.asarray(self.source.data["pos"]), np.asarray(self.source.data["y"])
        yr = self.figure.y_range
        inside = np.flatnonzero((y <= yr.end) & (y >= yr.start - 0.5))
        if not len(inside):
            return (int(pos[0]), int(pos[0]) + 1) if len(pos) else (0, 0)
        return int(pos[inside[0]]), int(pos[inside[-1]]) + 1

    def update_visible_box(self) -> None:
        """Lock the value plot to the characters on the rows in view."""
        start, end = self.visible_span()
        self.plot.x_range.update(start=start - 0.5, end=end - 0.5)
