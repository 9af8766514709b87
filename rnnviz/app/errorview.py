"""The model's errors in the app, where ``rnnviz errors ... --into DUMP`` stored them (the
dump's /errors group): a toggle colours the text by each character's error category, with a
legend, and the "Errors" tab shows the breakdown and the long-range plot. Read-only: the app
never runs the model or the n-gram.
"""
from __future__ import annotations

import html

import numpy as np
from bokeh.layouts import column
from bokeh.models import CustomJSHover, Div, Toggle

from ..errors_breakdown import CATEGORIES, long_range_figure, long_range_summary
from ..render import colours
from .panels import SIDE_W

GROUP = "errors"
OFF_LABEL = "Colour by the model's errors"
ON_LABEL = "Showing the model's errors by category (click for the unit's values)"
# Codes as stored: -1 not predicted (a source's first char), 0 predicted, 1.. CATEGORIES in order.
LABELS = ("not predicted", "no error") + CATEGORIES
PALETTE = colours.ERROR_CATEGORIES    # no error stays white
SCALE = colours.Scale(-1.5, len(PALETTE) - 1.5, "errors", "the error category of each character")
NO_ERRORS = ("<p style='color:#555'>This dump holds no error breakdown. To add one:<br>"
             "<code>rnnviz errors CHECKPOINT @checkpoint TEXTS --into DUMP</code><br>"
             "(the same checkpoint and texts as the dump; <code>rnnviz errors --help</code>).</p>")


def _swatch(colour: str, px: int) -> str:
    return (f"<span style='display:inline-block;width:{px}px;height:{px}px;border:1px solid #999;"
            f"vertical-align:middle;background:{colour}'></span>")


def legend_html(table=None) -> str:
    """Swatches with the categories' names and, from the stored breakdown, each one's share of
    the errors."""
    shares = {}
    if table is not None:
        shares = dict(zip(table["category"].astype(str), table["share_of_errors"]))
    parts = []
    for name, colour in zip(LABELS, PALETTE):
        share = f" {100 * shares[name]:.0f}%" if name in shares and name in CATEGORIES else ""
        parts.append(f"<span style='white-space:nowrap'>{_swatch(colour, 11)}"
                     f"&nbsp;{html.escape(name.replace('_', ' '))}{share}</span>")
    return "<span style='font-size:12px;color:#333'>errors (share): " + " ".join(parts) + "</span>"


def breakdown_html(table, options: dict) -> str:
    rows = "".join(
        f"<tr><td>{_swatch(_colour(c), 10)} {html.escape(str(c).replace('_', ' '))}</td>"
        f"<td style='text-align:right'>{int(e):,}</td><td style='text-align:right'>{100 * s:.1f}%</td>"
        f"<td style='text-align:right'>{100 * sc:.1f}%</td></tr>"
        for c, e, s, sc in zip(table["category"], table["errors"], table["share_of_errors"],
                               table["share_of_chars"]))
    opts = ", ".join(f"{k} {v}" for k, v in options.items() if k in ("threshold", "order", "rare_count",
                                                                       "memory_context"))
    return (f"<div style='font-size:12px'><b>Why the model errs</b> (Karpathy et al. 2015; "
            f"{html.escape(opts)})<table style='border-collapse:collapse;width:100%'>"
            f"<tr style='color:#555'><th style='text-align:left'>category</th><th>errors</th>"
            f"<th>of errors</th><th>of chars</th></tr>{rows}</table></div>")


def _colour(category) -> str:
    name = str(category)
    return PALETTE[LABELS.index(name)] if name in LABELS else "#ffffff"


class ErrorsView:
    """The toggle over the text and the Errors tab; both know whether the dump has /errors."""

    def __init__(self, view):
        self.view = view
        self.table = view.group_table(GROUP, "breakdown")
        self.held = self.table is not None
        self.toggle = Toggle(label=OFF_LABEL, active=False, width=420, name="errors_toggle", visible=self.held)
        self.legend = legend_html(self.table)       # the same for every unit and window
        self.toggle.on_change("active", lambda attr, old, new: self.toggle.update(label=ON_LABEL if new else OFF_LABEL))
        self.layout = self._panel()
        self.layout.name = "errors_panel"
        # The hover's "value" reads as the category while the toggle is on.
        self.hover_format = CustomJSHover(args={"names": list(LABELS)}, code="""
            const i = Math.round(value) + 1;
            return (i >= 0 && i < names.length) ? names[i] : String(value);""")

    def _panel(self):
        if not self.held:
            return column(Div(text=NO_ERRORS, width=SIDE_W))
        options = self.view.group_options(GROUP)
        parts = [Div(text=breakdown_html(self.table, options), width=SIDE_W, name="errors_breakdown")]
        rows = self.view.group_table(GROUP, "long_range")
        if rows is not None and len(rows):
            parts.append(Div(text="<div style='font-size:12px'><b>Closing a bracket or quote</b>: the mean "
                                  "probability of the closing char against its distance to the opener "
                                  "(the save tool exports a PNG; <code>rnnviz errors --long-range CSV "
                                  "--plot HTML</code> writes the rows and this page)</div>", width=SIDE_W))
            parts.append(long_range_figure(long_range_summary(rows), width=SIDE_W - 12, height=190, ncols=1))
        return column(*parts)

    def values(self, start: int, end: int) -> np.ndarray | None:
        """The category codes of chars [start, end) while the toggle is on, else None."""
        if not (self.held and self.toggle.active):
            return None
        return self.view.group_slice(GROUP, "category", start, end).astype(np.float32)
