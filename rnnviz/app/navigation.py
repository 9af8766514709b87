"""Moving through a dump's text: windows, pages, jumps, sources and search.

:class:`Navigator` decides which window of characters the tab shows; the
:class:`~rnnviz.app.document.Explorer` holds one and says how a window is drawn.
"""
from __future__ import annotations

import numpy as np

from ..errors import RnnvizError
from ..render.layout import WRAP, line_start, trim_to_line_end
from .search import compile_query, find_all


class Navigator:
    """The window [start, end) of ``view``'s text shown in ``text``, and how the user moves it
    with ``controls``. ``show(start, end)`` draws a window; ``quiet()`` sets widgets without
    running their callbacks; ``info(message)`` writes the status line."""

    def __init__(self, view, text, controls, *, show, quiet, info):
        self.view, self.text, self.controls = view, text, controls
        self._show, self._quiet, self.info = show, quiet, info
        self.start = self.end = 0
        self.match_starts = self.match_lengths = np.zeros(0, np.int64)
        self.match_i = -1
        self._cut = False

    def _line_start(self, pos: int) -> int:
        """Start of the line holding ``pos`` (or of its source, if that is nearer)."""
        before = self.view.text(max(0, pos - WRAP), pos)
        start = pos - line_start(before, WRAP)
        firsts = self.view.sources["start"].to_numpy()
        inside = firsts[(firsts > start) & (firsts <= pos)]
        return int(inside.max()) if len(inside) else start

    def load_window(self, start: int) -> None:
        n = self.view.n_chars
        start = max(0, min(start, n - 1))
        end = min(n, start + int(self.controls.window.value))
        if end < n:   # end the window at a line end so the next page starts at a line start
            end = start + trim_to_line_end(self.view.text(start, end), WRAP)
        self.start, self.end = start, end
        self._show(start, end)
        self.show_where()

    def show_where(self) -> None:
        """The slider, the source (of the rows in view, not of the window's start) and the range."""
        c, firsts = self.controls, self.view.sources["start"].to_numpy()
        src = int(np.searchsorted(firsts, self.text.anchor(), side="right") - 1)
        with self._quiet():
            c.slider.value = self.start
            c.source.value = str(max(src, 0))
        c.where.text = f"chars {self.start:,}–{self.end:,} of {self.view.n_chars:,}"

    def next_page(self) -> None:
        if self.end >= self.view.n_chars:
            raise RnnvizError("this is the end of the text")
        self.load_window(self.end)

    def prev_page(self) -> None:
        if self.start == 0:
            raise RnnvizError("this is the start of the text")
        self.load_window(self._line_start(max(0, self.start - int(self.controls.window.value))))
        self.text.scroll_to_row(self.text.rows)

    def jump(self, pos: int, length: int = 1, mark: bool = True) -> None:
        pos = self.view.check_position(pos)
        if not self.start <= pos < self.end or pos + length > self.end:
            back = int(self.controls.window.value) // 4
            self.load_window(self._line_start(max(0, pos - back)) if pos - back > 0 else 0)
        if mark:
            self.text.mark(pos, length)
        else:
            self.text.scroll_to_row(-int(self.text.source.data["y"][pos - self.start]))
        self.controls.status.text = ""

    def jump_to_source(self, i: int) -> None:
        first = int(self.view.sources["start"].iloc[i])
        self.load_window(first)
        self.info(f"{self.view.sources['name'].iloc[i]} starts at char {first:,}")

    def search(self, query: str) -> None:
        c = self.controls
        if not query:
            self.match_starts = self.match_lengths = np.zeros(0, np.int64)
            c.match_info.text = ""
            return
        pattern = compile_query(query, regex=0 in c.search_opts.active, case=1 in c.search_opts.active)
        self.match_starts, self.match_lengths, cut = find_all(self.view, pattern)
        if not len(self.match_starts):
            c.match_info.text = "no matches"
            raise RnnvizError(f"{query!r} does not occur in the text")
        # Start from the first match at or after the window start.
        self.match_i = int(np.searchsorted(self.match_starts, self.start)) % len(self.match_starts) - 1
        self._cut = cut
        self.step_match(+1)

    def step_match(self, step: int) -> None:
        if not len(self.match_starts):
            raise RnnvizError("no search results: type a search first")
        self.match_i = (self.match_i + step) % len(self.match_starts)
        at = int(self.match_starts[self.match_i])
        self.jump(at, int(self.match_lengths[self.match_i]))
        more = "+" if self._cut else ""
        self.controls.match_info.text = f"match {self.match_i + 1:,} of {len(self.match_starts):,}{more} (char {at:,})"

    def mark_at(self, pos: int) -> None:
        """Mark the character at ``pos`` where it is in the window (a click in the value plot)."""
        if self.start <= pos < self.end:
            self.text.mark(pos, 1, scroll=False)
