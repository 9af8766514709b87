"""The Saturation tab: Karpathy et al.'s figure (2016, fig. 3), large, one gate kind at a time.

One dot per gate unit: the fraction of characters where it is right-saturated (> 0.9)
against left-saturated (< 0.1), coloured by layer. A click picks the dot nearest to it;
the hover names the nearest dot only (and how many more lie under the pointer).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from bokeh.events import Tap
from bokeh.layouts import column
from bokeh.models import ColumnDataSource, CustomJS, Div, HoverTool, Label, RadioButtonGroup, Range1d
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ..names import parse_point
from .panels import SIDE_W, _on_pick

WORDS = {"gate_i": "input", "gate_f": "forget", "gate_o": "output", "gate_r": "reset", "gate_z": "update"}
# The hover shows the nearest of the dots under the pointer, in one line.
_NEAREST = """
const idx = cb_data.index.indices;
if (!idx.length) { label.text = ''; return; }
const g = cb_data.geometry, d = src.data;
let best = idx[0], bd = Infinity;
for (const i of idx) { const dd = (d.x[i] - g.x) ** 2 + (d.y[i] - g.y) ** 2; if (dd < bd) { bd = dd; best = i; } }
label.text = d.unit[best] + ': right ' + d.x[best].toFixed(3) + ', left ' + d.y[best].toFixed(3)
  + (idx.length > 1 ? '  (+' + (idx.length - 1) + ' more here)' : '');
"""


class SaturationPanel:
    def __init__(self, on_unit, gates=("gate_i", "gate_f", "gate_o")):
        """``gates``: the dump's sigmoid gates, one view each (an LSTM's i, f, o; a GRU's r, z)."""
        self.on_unit = on_unit
        self.sources, self.current, self.figures = {}, {}, {}
        size = SIDE_W - 40
        for n, gate in enumerate(gates):
            src = ColumnDataSource({"x": [], "y": [], "unit": [], "color": [], "layer": []},
                                   name=f"saturation_{gate}")
            cur = ColumnDataSource({"x": [], "y": [], "unit": []})
            fig = figure(frame_width=size, frame_height=size, x_range=Range1d(-0.02, 1.02),
                         y_range=Range1d(-0.02, 1.02), tools=[], toolbar_location=None,
                         title=f"{gate} ({WORDS[gate]} gate): one dot per unit", name=f"saturation_fig_{gate}",
                         x_axis_label="fraction right-saturated (> 0.9)",
                         y_axis_label="fraction left-saturated (< 0.1)", visible=n == 0)
            fig.line([0, 1], [1, 0], line_color="#dddddd")
            dots = fig.scatter(x="x", y="y", color="color", source=src, size=6, alpha=0.6)
            fig.scatter(x="x", y="y", source=cur, size=14, fill_color=None, line_color="#000000", line_width=2)
            fig.text(x="x", y="y", text="unit", source=cur, x_offset=9, y_offset=-6, text_font_size="11px")
            label = Label(x=6, y=6, x_units="screen", y_units="screen", text="", text_font_size="11px",
                          background_fill_color="#ffffff", background_fill_alpha=0.85)
            fig.add_layout(label)
            fig.add_tools(HoverTool(renderers=[dots], tooltips=None,
                                    callback=CustomJS(args={"src": src, "label": label}, code=_NEAREST)))
            fig.on_event(Tap, lambda event, gate=gate: self.pick_nearest(gate, event.x, event.y))
            fig.title.text_font_size = "12px"
            _on_pick(src, on_unit, "unit")
            self.sources[gate], self.current[gate], self.figures[gate] = src, cur, fig
        self.choose = RadioButtonGroup(labels=[WORDS[g] for g in gates], active=0, name="saturation_gate")
        self.choose.on_change("active", lambda a, o, n: self._show_gate(n))
        self.note = Div(text="", width=SIDE_W, styles={"color": "#555"})
        self.layout = (column(self.choose, *self.figures.values(), self.note) if gates else column(self.note))

    def _show_gate(self, n: int) -> None:
        for i, fig in enumerate(self.figures.values()):
            fig.visible = i == n

    def pick_nearest(self, gate: str, x: float | None, y: float | None) -> None:
        """Show the unit whose dot is nearest to a click at (x, y)."""
        d = self.sources[gate].data
        if x is None or y is None or not len(d["unit"]):
            return
        dist = (np.asarray(d["x"]) - x) ** 2 + (np.asarray(d["y"]) - y) ** 2
        self.on_unit(d["unit"][int(np.argmin(dist))])

    def show(self, saturation: pd.DataFrame | None) -> None:
        if not self.sources:
            self.note.text = "This model's cell has no sigmoid gates (a vanilla RNN records h only)."
            return
        if saturation is None:
            self.note.text = "No gate saturation: this dump has not been analysed yet."
            return
        layers = [parse_point(p)[0] for p in saturation["point"]]
        kinds = [parse_point(p)[1] for p in saturation["point"]]
        df = saturation.assign(layer=layers, kind=kinds)
        for gate, src in self.sources.items():
            d = df[df["kind"] == gate]
            src.data = {"x": d["frac_right"].to_numpy(np.float64), "y": d["frac_left"].to_numpy(np.float64),
                        "unit": [f"{p}[{i}]" for p, i in zip(d["point"], d["index"])],
                        "color": [Category10_10[lay % 10] for lay in d["layer"]],
                        "layer": d["layer"].to_numpy()}
        legend = " ".join(f'<span style="color:{Category10_10[i % 10]}">● layer {i}</span>'
                          for i in sorted(set(layers)))
        self.note.text = (f"{legend}<br>Gate activation &lt; 0.1 is left-saturated, &gt; 0.9 right-saturated. "
                          f"Click near a dot to show that unit (the nearest one is picked).")

    def mark(self, unit: str) -> None:
        for gate, src in self.sources.items():
            hit = [i for i, u in enumerate(src.data["unit"]) if u == unit]
            x, y = np.asarray(src.data["x"]), np.asarray(src.data["y"])
            self.current[gate].data = {"x": x[hit], "y": y[hit], "unit": [unit] * len(hit)}
            if hit and gate in self.figures:
                self.choose.active = list(self.sources).index(gate)
