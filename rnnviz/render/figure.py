"""A span of text coloured by one unit, drawn as the app draws it: SVG and HTML for papers,
and the inline picture ``Dump.show`` gives in Jupyter.

Plain markup with inline styles: no JavaScript, nothing fetched, so it works offline
and in a saved notebook. The colours are :mod:`rnnviz.render.colours`', the app's own.
"""
from __future__ import annotations

import html
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from ..errors import RnnvizError
from ..names import parse_point
from . import colours
from .extras import GUESS_H, HEAT_H, Guesses, HeatRow, guess_svg, heat_svg
from .layout import WRAP, Grid, grid, shown

CELL_W, CELL_H, PAD = 9, 18, 16
FONT = "'DejaVu Sans Mono', Menlo, Consolas, monospace"


@dataclass
class Span:
    """Chars [start, start + len(text)) of a dump, one unit's values and their colours."""
    text: str
    values: np.ndarray          # (T,) float32
    start: int
    title: str
    colour: colours.Scale       # how values become colours (range, map and the rule, for the legend)
    breaks: tuple = ()          # offsets where a source other than the first begins
    heat: tuple = ()            # HeatRow per unit of a heatmap under the text
    guesses: Guesses | None = None   # the model's top-k guesses under each line

    @classmethod
    def from_dump(cls, d, unit: str, start: int, stop: int, scale: str = "auto",
                  colour: colours.Scale | None = None, max_chars: int = 50_000, heat_units=(),
                  heat_scales=None, guesses: int = 0) -> Span:
        """``d``: an open :class:`rnnviz.dumpfile.Dump`. ``scale`` as in the app
        (:func:`rnnviz.render.colours.unit_scale`); ``colour`` fixes the scale instead.
        ``heat_units``: units for a heatmap under the text (``heat_scales``: their scales, else
        by ``scale``); ``guesses``: how many of the model's guesses to show under each line (0-5)."""
        point, index = d.check_unit(unit)
        if not 0 <= start < stop <= d.n_chars:
            raise RnnvizError(f"expected 0 <= start < end <= {d.n_chars:,}, got {start:,}..{stop:,}")
        if stop - start > max_chars:
            raise RnnvizError(f"at most {max_chars:,} chars at a time (asked for {stop - start:,})")
        if scale not in colours.SCALES:
            raise RnnvizError(f"scale: expected one of {', '.join(colours.SCALES)}, found {scale!r}")
        kind = parse_point(point)[1]
        values = d[point][start:stop, index].astype(np.float32)
        if colour is None:
            stats = None if scale in ("fixed", "window") else d.unit_stats(unit)
            colour = colours.unit_scale(kind, values, scale, stats, d.cell)
        heat = []
        for i, name in enumerate(heat_units):
            p, j = d.check_unit(name)
            v = d[p][start:stop, j].astype(np.float32)
            s = heat_scales[i] if heat_scales else colours.unit_scale(
                parse_point(p)[1], v, scale, None if scale in ("fixed", "window") else d.unit_stats(name), d.cell)
            heat.append(HeatRow(name, v, s))
        if not 0 <= guesses <= d.topk:
            raise RnnvizError(f"guesses: expected 0..{d.topk} (the dump keeps {d.topk}), found {guesses}")
        return cls(d.text_slice(start, stop), values, start, f"{unit} · chars {start:,}–{stop:,} · {d.path.name}",
                   colour, tuple(d.source_breaks(start, stop)), tuple(heat),
                   Guesses.from_dump(d, start, stop, guesses) if guesses else None)

    @property
    def palette(self) -> list[str]:
        return self.colour.palette

    @property
    def low(self) -> float:
        return self.colour.low

    @property
    def high(self) -> float:
        return self.colour.high

    @cached_property
    def fills(self) -> list[str]:
        """Each character's background, as the app's colour mapper gives it."""
        return self.colour.colours(self.values)

    @cached_property
    def grid(self) -> Grid:
        return grid(self.text, WRAP, breaks=self.breaks)

    def fragment(self) -> str:
        """The title, a <pre> of spans with inline background colours, a colour bar and the legend
        (the range and where it comes from)."""
        spans = []
        for i, (ch, fill, v) in enumerate(zip(self.text, self.fills, self.values.tolist())):
            tip = f"char {self.start + i:,}: {v:.4f}"
            if ch == "\n":
                spans.append(f'<span style="background:{fill};color:#9a9a9a" title="{tip}">↵</span>\n')
            else:
                spans.append(f'<span style="background:{fill}" title="{tip}">{html.escape(ch)}</span>')
        low, high = self.low, self.high
        stops = ", ".join(self.palette[int(i / 10 * (len(self.palette) - 1))] for i in range(11))
        ticks = "".join(f'<span style="position:absolute;left:{(t - low) / (high - low) * 100:.1f}%;'
                        f'transform:translateX(-50%)">{t:.3g}</span>' for t in _bar_ticks(low, high))
        return (f'<div class="rnnviz-span" style="font-family:Helvetica,Arial,sans-serif;color:#222">\n'
                f'<p style="font-size:13px">{html.escape(self.title)}</p>\n'
                f'<pre style="font:13px/18px {html.escape(FONT)};tab-size:4;white-space:pre-wrap;'
                f'max-width:{WRAP}ch;margin:0;color:#111;background:#fff">' + "".join(spans) + '</pre>\n'
                f'<div style="margin:14px 24px 0;width:260px;height:12px;border:1px solid #999;'
                f'background:linear-gradient(to right, {stops})"></div>\n'
                f'<div style="position:relative;margin:0 24px;width:260px;height:16px;font-size:11px">{ticks}</div>\n'
                f'<p style="font-size:12px;color:#333">colour: {html.escape(self.colour.legend())}</p>\n'
                f'</div>\n')

    def page(self) -> str:
        """A standalone HTML page: :meth:`fragment`, or, with a heatmap or the guesses, the SVG
        picture that holds them."""
        body = render_svg(self) if self.heat or self.guesses is not None else self.fragment()
        return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(self.title)}</title>'
                f'</head>\n<body style="margin:16px">\n{body}</body></html>\n')

    def _repr_html_(self) -> str:   # Jupyter shows this inline
        return self.fragment()

    def __repr__(self) -> str:
        return f"<rnnviz span {self.title}: values {self.values.min():.3g}..{self.values.max():.3g}>"


def _bar_ticks(low: float, high: float) -> list[float]:
    ticks = [low, high] + ([0.0] if low < 0 < high else [(low + high) / 2])
    return sorted(ticks)


def render_svg(span: Span) -> str:
    """An SVG of the text on its grid (one rect and one glyph per character), the guesses under
    each line and the heatmap under the text when the span has them, a title, the legend and a
    colour bar."""
    text, fills, g, title = span.text, span.fills, span.grid, span.title
    palette, low, high = span.palette, span.low, span.high
    k = span.guesses.k if span.guesses is not None else 0
    pitch = CELL_H + k * GUESS_H
    cols = int((g.col + g.width).max()) if len(text) else 1
    text_w, text_h = cols * CELL_W, g.rows * pitch
    top = PAD + 40
    bar_x, bar_h = PAD + text_w + 20, min(max(text_h, 120), 260)
    heat_y, heat_h = top + max(text_h, bar_h + 16) + 14, len(span.heat) * HEAT_H   # below the bar's labels
    width = max(bar_x + 70, PAD + text_w + 250 if span.heat else 0)
    height = max(top + max(text_h, bar_h), heat_y + heat_h if span.heat else 0) + PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{PAD}" y="{PAD + 10}" font-family="Helvetica, Arial, sans-serif" font-size="13" '
           f'fill="#222222">{html.escape(title)}</text>',
           f'<text x="{PAD}" y="{PAD + 28}" font-family="Helvetica, Arial, sans-serif" font-size="11" '
           f'fill="#333333">colour: {html.escape(span.colour.legend())}</text>',
           '<g shape-rendering="crispEdges">']
    for ch, fill, c, r, w in zip(text, fills, g.col, g.row, g.width):
        out.append(f'<rect x="{PAD + c * CELL_W}" y="{top + r * pitch}" width="{w * CELL_W}" '
                   f'height="{CELL_H}" fill="{fill}"/>')
    out.append(f'</g><g font-family="{html.escape(FONT)}" font-size="13" text-anchor="middle" '
               f'dominant-baseline="central" fill="#111111">')
    for ch, c, r, w in zip(text, g.col, g.row, g.width):
        glyph = shown(ch)
        if glyph:
            grey = ' fill="#9a9a9a"' if glyph != ch else ""
            out.append(f'<text x="{PAD + (c + w / 2) * CELL_W:.1f}" y="{top + r * pitch + 0.5 * CELL_H:.1f}"'
                       f'{grey}>{html.escape(glyph)}</text>')
    out.append("</g>")
    if k:
        out += guess_svg(span.guesses, PAD, lambda r: top + r * pitch, g.col, g.row, g.width, CELL_W, CELL_H)
    if span.heat:
        out += heat_svg(list(span.heat), PAD, heat_y, text_w)
    # Colour bar: high at the top, as in the app.
    steps = 64
    for i in range(steps):
        out.append(f'<rect x="{bar_x}" y="{top + i * bar_h / steps:.2f}" width="14" '
                   f'height="{bar_h / steps + 0.5:.2f}" fill="{palette[int((steps - 1 - i) / steps * len(palette))]}"/>')
    out.append(f'<rect x="{bar_x}" y="{top}" width="14" height="{bar_h}" fill="none" stroke="#999999"/>')
    for t in _bar_ticks(low, high):
        y = top + (high - t) / (high - low) * bar_h
        out.append(f'<text x="{bar_x + 19}" y="{y:.1f}" font-family="Helvetica, Arial, sans-serif" '
                   f'font-size="11" dominant-baseline="central" fill="#333333">{t:.3g}</text>')
    out.append("</svg>")
    return "\n".join(out)
