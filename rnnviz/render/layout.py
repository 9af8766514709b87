"""Lay a window of text out on a monospace grid, as it looks in an editor.

Pure functions shared by the app (Bokeh rect + text glyphs) and the static export
(SVG / HTML): real line breaks, tab stops, long lines wrapped, and a new line at
each source's first character (sources are independent sequences).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WRAP = 100      # columns before a long line wraps
TAB = 4         # tab stop

# What a cell shows for characters that have no visible glyph of their own.
_SHOW = {"\n": "↵", "\t": "→", "\r": "␍", " ": ""}
# What the hover shows for the character itself.
_NAME = {"\n": "\\n (newline)", "\t": "\\t (tab)", "\r": "\\r", " ": "␣ (space)"}


@dataclass
class Grid:
    """Cell of each character: column, row and width in columns (tabs are wider). All (T,)."""
    col: np.ndarray
    row: np.ndarray
    width: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.row[-1]) + 1 if len(self.row) else 0


def grid(text: str, wrap: int = WRAP, tab: int = TAB, breaks=()) -> Grid:
    """Place each character of ``text``; ``breaks`` are offsets that start a new row."""
    n = len(text)
    col, row, width = np.zeros(n, np.int32), np.zeros(n, np.int32), np.ones(n, np.int32)
    breaks = set(breaks)
    c = r = 0
    for i, ch in enumerate(text):
        if i in breaks and c > 0:
            r, c = r + 1, 0
        w = (tab - c % tab) if ch == "\t" else 1
        if c + w > wrap and c > 0:
            r, c = r + 1, 0
        col[i], row[i], width[i] = c, r, w
        c += w
        if ch == "\n":
            r, c = r + 1, 0
    return Grid(col, row, width)


def shown(ch: str) -> str:
    """The glyph drawn in a character's cell."""
    if ch in _SHOW:
        return _SHOW[ch]
    return "·" if (ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0) else ch


def is_whitespace_mark(ch: str) -> bool:
    """Cells whose glyph is a marker for an invisible character (drawn grey)."""
    return ch in _SHOW or ord(ch) < 32


def described(ch: str) -> str:
    """The character as the hover names it."""
    if ch in _NAME:
        return _NAME[ch]
    return f"U+{ord(ch):04X}" if (ord(ch) < 32 or 0x7f <= ord(ch) < 0xa0) else ch


def line_start(text_before: str, limit: int) -> int:
    """How many chars at the end of ``text_before`` belong to the line the next char is on."""
    cut = text_before.rfind("\n")
    return min(len(text_before) - cut - 1, limit) if cut >= 0 else min(len(text_before), limit)


def trim_to_line_end(text: str, slack: int) -> int:
    """Length of ``text`` cut back to just after its last newline, if one is within ``slack`` of the end."""
    cut = text.rfind("\n", max(0, len(text) - slack))
    return cut + 1 if cut >= 0 else len(text)


def predictions_text(ids: np.ndarray, probs: np.ndarray, vocab: list[str]) -> list[str]:
    """One short line per char: the model's top-k next characters with their probabilities."""
    names = [repr(ch)[1:-1] if ch not in (" ",) else "␣" for ch in vocab]
    names = [n if n else "?" for n in names]
    out = []
    for row_ids, row_p in zip(ids.tolist(), (probs * 100).round().astype(int).tolist()):
        out.append("  ".join(f"{names[i] if 0 <= i < len(names) else '?'} {p}%" for i, p in zip(row_ids, row_p)))
    return out
