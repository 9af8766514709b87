"""Several units at once: a heatmap of units (rows) over the characters in view (columns).

It sits under the text and shares the value plot's x range (character positions), so it
always shows the rows of text in view, as LSTMVis's cell view and Karpathy et al.'s
figures do. Each unit is one row, one Bokeh image glyph in its own source (``heat_0``,
``heat_1``, ...), coloured by its own scale (:func:`rnnviz.render.colours.unit_scale`,
the same rule as the text), so adding or removing a unit sends that row only.
"""
from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column, row
from bokeh.models import Button, ColumnDataSource, Div, FixedTicker, HoverTool, LinearColorMapper, Range1d, TextInput
from bokeh.plotting import figure

from ..errors import RnnvizError
from ..names import parse_point
from ..render import colours

MAX_UNITS = 12
ROW_PX = 8          # pixels per unit row
_EMPTY = {"image": [], "x": [], "y": [], "dw": [], "dh": [], "unit": [], "scale": []}


def legend_html(scale: colours.Scale, width: int = 150) -> str:
    """A colour bar of ``scale`` with its ends, and the rule in words."""
    stops = ", ".join(scale.palette[int(i / 10 * (len(scale.palette) - 1))] for i in range(11))
    return (f"<span style='display:inline-block;width:{width}px;height:10px;border:1px solid #999;"
            f"vertical-align:middle;background:linear-gradient(to right, {stops})'></span> "
            f"<span style='font-size:12px;color:#333'>{html.escape(scale.legend())}</span>")


def _label(unit: str) -> str:
    """layer1.gate_f[20] -> L1 gate_f[20] (the row labels' room is narrow; the hover has the name)."""
    return unit.replace("layer", "L", 1).replace(".", " ", 1)


def parse_units(text: str, check) -> list[str]:
    """'layer2.c[76], layer0.c[169]' -> unit names, each checked with ``check`` (duplicates dropped)."""
    names = []
    for part in text.replace(";", ",").replace(" ", ",").split(","):
        if part.strip():
            point, index = check(part.strip())
            name = f"{point}[{index}]"
            if name not in names:
                names.append(name)
    if len(names) > MAX_UNITS:
        raise RnnvizError(f"the heatmap shows at most {MAX_UNITS} units ({len(names)} given)")
    return names


class Heatmap:
    def __init__(self, x_range: Range1d, frame_width: int, min_border_left: int, width: int):
        self.input = TextInput(placeholder="heatmap units, e.g. layer2.c[76], layer0.c[169]", width=width - 10,
                               name="heat_units")
        self.add = Button(label="+ shown unit", width=95, name="heat_add")
        self.top = Button(label="top 8 ranked", width=95, name="heat_ranking")
        self.matched = Button(label="select & match", width=110, name="heat_match")
        self.clear = Button(label="clear", width=60, name="heat_clear")
        self.note = Div(text="Heatmap under the text: type units, add the shown one, take the ranking's top 8 "
                        "(ctrl/shift-click rows picks several) or select & match's units.", width=width - 10,
                        styles={"color": "#555", "font-size": "11px", "height": "28px", "overflow": "hidden"},
                        name="heat_note")
        self.controls = column(self.input, row(self.add, self.top, self.matched, self.clear), self.note)
        self.units: list[str] = []
        self.scales: list = [None] * MAX_UNITS      # each row's colours.Scale
        self._keys: list = [None] * MAX_UNITS       # what each row holds: (unit, start, end, scale)
        self.sources = [ColumnDataSource(dict(_EMPTY), name=f"heat_{i}") for i in range(MAX_UNITS)]
        self.mappers = [LinearColorMapper(palette=colours.DIVERGING, low=-1, high=1, nan_color=colours.NAN_COLOR)
                        for _ in range(MAX_UNITS)]
        fig = figure(frame_width=frame_width, frame_height=ROW_PX, x_range=x_range,
                     y_range=Range1d(-0.5, 0.5), tools=[], toolbar_location=None, name="heatmap",
                     min_border_left=min_border_left, min_border_top=2, min_border_bottom=2,
                     y_axis_location="right", visible=False, outline_line_color="#d0d0d0")
        renderers = [fig.image(image="image", x="x", y="y", dw="dw", dh="dh", source=src, color_mapper=m)
                     for src, m in zip(self.sources, self.mappers)]
        fig.add_tools(HoverTool(renderers=renderers, tooltips=[("unit", "@unit"), ("char", "$x{0,0}"),
                                                                ("value", "@image{0.000}"), ("colour", "@scale")]))
        fig.xaxis.visible = False
        fig.grid.visible = False
        self.ticker = FixedTicker(ticks=[])
        fig.yaxis.ticker = self.ticker
        fig.yaxis.major_label_text_font_size = "9px"
        fig.yaxis.major_tick_line_color = None
        fig.yaxis.axis_line_color = None
        self.figure = fig

    def set_units(self, units: list[str]) -> None:
        self.units = list(units)[:MAX_UNITS]
        self.input.update(value=", ".join(self.units))
        n = len(self.units)
        fig = self.figure
        fig.visible = n > 0
        fig.frame_height = max(n, 1) * ROW_PX
        fig.y_range.update(start=-n + 0.5 if n else -0.5, end=0.5)
        self.ticker.ticks = [-i for i in range(n)]        # (a new ticker model would cost a document walk)
        fig.yaxis.major_label_overrides = {-i: _label(u) for i, u in enumerate(self.units)}

    def show(self, view, start: int, end: int, scale: str) -> None:
        """Fill the rows with the units' values over chars [start, end) (the window); rows whose
        unit, window and scale did not change are not sent again."""
        for i, src in enumerate(self.sources):
            if i >= len(self.units):
                if len(src.data["image"]):
                    src.data = dict(_EMPTY)
                    self._keys[i] = None
                continue
            unit = self.units[i]
            key = (unit, start, end, scale)
            if self._keys[i] == key:
                continue
            point, index = view.check_unit(unit)
            kind = parse_point(point)[1]
            values = view.values(point, index, start, end)
            stats = None if scale in ("fixed", "window") or colours.is_gate(kind) else view.unit_stats(unit)
            s = colours.unit_scale(kind, values, scale, stats, view.cell)
            self.scales[i] = s
            if self.mappers[i].palette != s.palette:
                self.mappers[i].palette = s.palette
            self.mappers[i].update(low=s.low, high=s.high)
            src.data = {"image": [values.reshape(1, -1)], "x": [start - 0.5], "y": [-i - 0.5],
                        "dw": [end - start], "dh": [1], "unit": [unit], "scale": [s.legend()]}
            self._keys[i] = key

    def legend(self) -> str:
        """One line per unit: its range and rule."""
        return "<br>".join(f"<b>{html.escape(u)}</b> {html.escape(s.legend())}"
                           for u, s in zip(self.units, self.scales))
