"""The widgets above the text: which dump and unit, how to colour, where in the text."""
from __future__ import annotations

from pathlib import Path

from bokeh.layouts import column, row
from bokeh.models import (Button, CheckboxGroup, Div, NumericInput, Select, Slider, Spinner, TextInput)

from ..names import kinds_in, parse_point
from ..render.colours import SCALES

WINDOWS = ("1000", "2000", "5000", "10000")
DEFAULT_WINDOW = "2000"
_MUTED = {"color": "#555555"}
# A status line of fixed height: a message appearing or going never moves the page.
STATUS_STYLE = {"height": "20px", "overflow": "hidden", "white-space": "nowrap", "text-overflow": "ellipsis"}


class Controls:
    def __init__(self, view, paths: list[str], dump_index: int):
        n = view.n_chars
        self.title = Div(text=f"<b style='font-size:16px'>rnnviz</b> &nbsp; {_escape(view.describe())}"
                              f"<span style='color:#777;font-size:12px'> &nbsp;—&nbsp; hover a character for its "
                              f"value, the model's next-character guesses and its loss; scroll to move through "
                              f"the window; drag to select a span</span>",
                         name="title", styles={"font-size": "14px"})
        self.dump = Select(title="Dump", options=[(str(i), _short(p)) for i, p in enumerate(paths)],
                           value=str(dump_index), width=200, visible=len(paths) > 1, name="dump_select")
        layers = sorted({parse_point(p)[0] for p in view.points})
        self.layer = Select(title="Layer", options=[str(x) for x in layers], width=70, name="unit_layer")
        self.kind = Select(title="Kind", options=kinds_in(view.points), width=90, name="unit_kind")
        self.index = Spinner(title="Unit index", low=0, high=view.hidden_size - 1, step=1, value=0,
                             width=100, name="unit_index")
        self.scale = Select(title="Colour scale", options=list(SCALES), value="auto", width=110,
                            name="scale_select")
        self.window = Select(title="Chars per window", options=list(WINDOWS), value=DEFAULT_WINDOW, width=120,
                             name="window_select")
        self.prev_page = Button(label="◀ Page", width=80, name="prev_page")
        self.next_page = Button(label="Page ▶", width=80, name="next_page")
        self.position = NumericInput(title="Go to char", low=0, width=110, name="goto")
        sources = view.sources
        self.source = Select(title="Source file", width=260, name="source_select",
                             options=[(str(i), f"{Path(name).name} ({length:,} chars)") for i, (name, length)
                                      in enumerate(zip(sources["name"], sources["length"]))],
                             value="0")
        self.search = TextInput(title="Search (Enter)", placeholder="text or regex", width=190, name="search")
        self.search_opts = CheckboxGroup(labels=["regex", "match case"], active=[1], inline=True,
                                         name="search_opts")
        self.prev_match = Button(label="◀", width=36, name="prev_match")
        self.next_match = Button(label="▶", width=36, name="next_match")
        self.match_info = Div(text="", width=150, styles=_MUTED, name="match_info")
        self.slider = Slider(title="Position in the whole text", start=0, end=max(1, n - 1), value=0, step=1,
                             width=980, name="position_slider", format="0,0")
        self.where = Div(text="", styles=_MUTED, name="where")
        self.status = Div(text="", width=1400, name="status", styles=dict(STATUS_STYLE))
        self.unit_line = Div(text="", width=980, name="unit_line")

    def layout(self):
        unit_row = row(self.dump, self.layer, self.kind, self.index, self.scale, self.window)
        nav_row = row(column(Div(text="&nbsp;"), row(self.prev_page, self.next_page)), self.position,
                      self.source, self.search,
                      column(Div(text="&nbsp;"), row(self.search_opts, self.prev_match, self.next_match)),
                      column(Div(text="&nbsp;"), self.match_info))
        return column(self.title, unit_row, nav_row, row(self.slider, self.where), self.status)


def _short(path: str, keep: int = 48) -> str:
    return path if len(path) <= keep else "…" + path[-keep + 1:]


def _escape(s: str) -> str:
    import html
    return html.escape(s, quote=False)
