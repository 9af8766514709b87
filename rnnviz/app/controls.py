"""The widgets above the text: which dump and unit, how to colour, where in the text."""
from __future__ import annotations

from pathlib import Path

from bokeh.layouts import column, row
from bokeh.models import (Button, CheckboxGroup, Div, NumericInput, Select, Slider, Spinner, TextInput)

from ..names import kinds_in, parse_point
from ..render.colours import SCALES
from .panels import SIDE_W

WINDOWS = ("1000", "2000", "5000", "10000")
DEFAULT_WINDOW = "2000"
MAIN_W = 860                  # the text column: 100 cells of 8 px and the axes
STRIP_WORDS = {0: "none", 1: "top 1", 2: "top 2", 3: "top 3", 5: "top 5"}
_MUTED = {"color": "#555555"}
# A status line of fixed height: a message appearing or going never moves the page.
STATUS_STYLE = {"height": "20px", "overflow": "hidden", "white-space": "nowrap", "text-overflow": "ellipsis"}


class Controls:
    def __init__(self, view, paths: list[str], dump_index: int):
        n = view.n_chars
        self.title = Div(text=f"<b style='font-size:15px'>rnnviz</b> &nbsp; {_escape(view.describe())}",
                         name="title", width=470, styles={"font-size": "13px", "white-space": "nowrap",
                                                         "overflow": "hidden", "text-overflow": "ellipsis"})
        self.dump = Select(title="Dump", options=[(str(i), _short(p)) for i, p in enumerate(paths)],
                           value=str(dump_index), width=200, visible=len(paths) > 1, name="dump_select")
        layers = sorted({parse_point(p)[0] for p in view.points})
        self.layer = Select(title="Layer", options=[str(x) for x in layers], width=50, name="unit_layer")
        self.kind = Select(title="Kind", options=kinds_in(view.points), width=75, name="unit_kind")
        self.index = Spinner(title="Unit", low=0, high=view.hidden_size - 1, step=1, value=0,
                             width=65, name="unit_index")
        self.scale = Select(title="Colour scale", options=list(SCALES), value="auto", width=90,
                            name="scale_select")
        self.strip = Select(title="Guesses", options=[(str(k), STRIP_WORDS[k]) for k in STRIP_WORDS],
                            value="0", width=70, name="strip_select")
        self.window = Select(title="Chars per window", options=list(WINDOWS), value=DEFAULT_WINDOW, width=120,
                             name="window_select")
        self.prev_page = Button(label="◀ Page", width=70, name="prev_page")
        self.next_page = Button(label="Page ▶", width=70, name="next_page")
        self.position = NumericInput(title="Go to char", low=0, width=80, name="goto")
        sources = view.sources
        self.source = Select(title="Source file", width=SIDE_W - 240, name="source_select",
                             options=[(str(i), f"{Path(name).name} ({length:,} chars)") for i, (name, length)
                                      in enumerate(zip(sources["name"], sources["length"]))],
                             value="0")
        self.search = TextInput(placeholder="search: text or regex (Enter)", width=130, name="search")
        self.search_opts = CheckboxGroup(labels=["regex", "match case"], active=[1], inline=True,
                                         name="search_opts")
        self.prev_match = Button(label="◀", width=36, name="prev_match")
        self.next_match = Button(label="▶", width=36, name="next_match")
        self.match_info = Div(text="", width=SIDE_W // 2, styles={**_MUTED, "font-size": "12px"},
                              name="match_info")
        self.slider = Slider(title="Position in the whole text", start=0, end=max(1, n - 1), value=0, step=1,
                             width=SIDE_W - 20, name="position_slider", format="0,0")
        self.where = Div(text="", styles={**_MUTED, "font-size": "12px"}, name="where")
        self.status = Div(text="", width=MAIN_W - 470, name="status", styles=dict(STATUS_STYLE))
        self.unit_line = Div(text="", width=460, name="unit_line", styles={"height": "20px", "overflow": "hidden",
                                                                            "white-space": "nowrap"})
        self.legend = Div(text="", width=MAIN_W, name="colour_legend", styles=dict(STATUS_STYLE))

    def top(self, hint):
        """Above the text, in lines of fixed height: the title and ``hint``, the unit and the
        status, its colour legend."""
        return column(row(self.title, hint), row(self.unit_line, self.status), self.legend)

    def side(self):
        """Beside the text: which unit, how to colour it, where in the text."""
        unit_row = row(self.layer, self.kind, self.index, self.scale, self.strip)
        nav_row = row(column(Div(text="&nbsp;"), row(self.prev_page, self.next_page)), self.position, self.source)
        search_row = row(self.search, self.prev_match, self.next_match, self.search_opts)
        return column(self.dump, unit_row, nav_row, search_row, row(self.match_info, self.where), self.slider)


def _short(path: str, keep: int = 48) -> str:
    return path if len(path) <= keep else "…" + path[-keep + 1:]


def _escape(s: str) -> str:
    import html
    return html.escape(s, quote=False)
