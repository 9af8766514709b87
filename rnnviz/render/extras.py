"""What a static figure shows besides the text: the model's guesses under each line and a
heatmap of several units, as the app shows them (rnnviz/app/strip.py, heatmap.py).

SVG fragments for :func:`rnnviz.render.figure.render_svg`; plain markup, nothing fetched.
"""
from __future__ import annotations

import html
from dataclasses import dataclass

import numpy as np

from . import colours
from .layout import shown

GUESS_H, HEAT_H = 11, 10          # pixels per guess row, per heatmap row
SANS = "Helvetica, Arial, sans-serif"


@dataclass
class Guesses:
    """The top-k guesses after each char: glyphs (T, k), probabilities (T, k), came true (T, k)."""
    glyphs: np.ndarray
    probs: np.ndarray
    hits: np.ndarray

    @classmethod
    def from_dump(cls, d, start: int, stop: int, k: int) -> "Guesses":
        after = next_chars(d.text_slice, d.source_breaks, start, stop, d.n_chars)
        return guesses(d.topk_ids[start:stop], d.topk_probs[start:stop], list(d.vocab), after, k)

    @property
    def k(self) -> int:
        return self.glyphs.shape[1]


def next_chars(read_text, source_breaks, start: int, stop: int, n_chars: int) -> str:
    """The character after each of chars [start, stop): ``read_text(a, b)``, ``source_breaks(a, b)``
    as a dump has them; '\\0' after the last char of a source (nothing comes next)."""
    stop1 = min(stop + 1, n_chars)
    after = list(read_text(start + 1, stop1).ljust(stop - start, "\0"))
    for b in source_breaks(start + 1, stop1):
        after[b - 1] = "\0"
    return "".join(after)


def guesses(ids: np.ndarray, probs: np.ndarray, vocab: list[str], after: str, k: int) -> Guesses:
    """The top ``k`` of (T, K) guesses: their glyphs, probabilities, and which one is ``after``'s char."""
    ids, probs = ids[:, :k], probs[:, :k]
    names = np.array([shown(c) or "␣" for c in vocab] + ["?"], dtype=object)
    chars = np.array(list(vocab) + ["\0"], dtype=object)
    safe = np.where((ids >= 0) & (ids < len(vocab)), ids, len(vocab))
    truth = np.array(list(after), dtype=object).reshape(-1, 1)
    return Guesses(names[safe], probs.astype(np.float32), chars[safe] == truth)


@dataclass
class HeatRow:
    unit: str
    values: np.ndarray              # (T,)
    scale: colours.Scale


def guess_svg(g: Guesses, x0: float, y_of_row, cols, rows, widths, cell_w: float, cell_h: float) -> list[str]:
    """Rects shaded by probability and glyphs (black: the guess that came true) under each char."""
    out = ['<g shape-rendering="crispEdges">']
    fills = [colours.to_hex(g.probs[:, j], 0.0, 1.0, colours.PROB) for j in range(g.k)]
    for i, (c, r, w) in enumerate(zip(cols, rows, widths)):
        for j in range(g.k):
            out.append(f'<rect x="{x0 + c * cell_w}" y="{y_of_row(r) + cell_h + j * GUESS_H}" '
                       f'width="{w * cell_w}" height="{GUESS_H}" fill="{fills[j][i]}"/>')
    out.append(f'</g><g font-family="DejaVu Sans Mono, monospace" font-size="9" text-anchor="middle" '
               f'dominant-baseline="central">')
    for i, (c, r, w) in enumerate(zip(cols, rows, widths)):
        for j in range(g.k):
            colour = "#000000" if g.hits[i, j] else "#8a8a8a"
            out.append(f'<text x="{x0 + (c + w / 2) * cell_w:.1f}" y="{y_of_row(r) + cell_h + (j + 0.5) * GUESS_H:.1f}"'
                       f' fill="{colour}">{html.escape(g.glyphs[i, j])}</text>')
    out.append("</g>")
    return out


def heat_svg(rows: list[HeatRow], x0: float, y0: float, width: float) -> list[str]:
    """One band per unit over the chars in order (runs of one colour merged), its name and range at the right."""
    out = ['<g shape-rendering="crispEdges">']
    for u, row in enumerate(rows):
        fills = row.scale.colours(row.values)
        n = len(fills)
        step = width / max(n, 1)
        i = 0
        while i < n:
            j = i
            while j + 1 < n and fills[j + 1] == fills[i]:
                j += 1
            out.append(f'<rect x="{x0 + i * step:.2f}" y="{y0 + u * HEAT_H}" width="{(j + 1 - i) * step + 0.3:.2f}" '
                       f'height="{HEAT_H}" fill="{fills[i]}"/>')
            i = j + 1
    out.append(f'</g><rect x="{x0}" y="{y0}" width="{width}" height="{len(rows) * HEAT_H}" fill="none" '
               f'stroke="#999999"/>')
    for u, row in enumerate(rows):
        s = row.scale
        out.append(f'<text x="{x0 + width + 6}" y="{y0 + (u + 0.5) * HEAT_H:.1f}" font-family="{SANS}" font-size="9" '
                   f'dominant-baseline="central" fill="#333333">{html.escape(row.unit)} '
                   f'({s.low:.3g} … {s.high:.3g}, {s.map})</text>')
    return out
