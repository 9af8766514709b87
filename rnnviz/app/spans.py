"""Selecting a span of text for select & match.

A drag over the text selects the characters from the first to the last one it covers
(reading order), exactly those are outlined and analysed, and a click elsewhere in the
text clears it. :class:`SpanSelector` owns the span; the
:class:`~rnnviz.app.document.Explorer` holds one and keeps the address up to date.
"""
from __future__ import annotations

import numpy as np

from .selectmatch import SIGNS

NO_SPAN_HINT = "Drag over the text to select a span: the <i>Select &amp; match</i> tab lists the units on in it."


class SpanSelector:
    """The span in ``text``, the select & match queries on it (``discover``, ``selectmatch``)
    and its line in ``hint``. ``point()`` is the point shown (a first span's layer and kind);
    ``jump(pos, length)`` shows a match; ``opened()`` brings the select & match tab forward;
    ``changed()`` follows any change (the address). ``quiet``, ``guard``, ``background`` and
    ``info`` are the tab's (rnnviz.app.document.Explorer)."""

    def __init__(self, view, text, discover, selectmatch, hint, *, point, jump, opened, changed,
                 quiet, guard, background, info):
        self.view, self.text, self.discover, self.selectmatch, self.hint = view, text, discover, selectmatch, hint
        self._point, self._jump, self._opened, self._changed = point, jump, opened, changed
        self._quiet, self._guard, self._background, self._info = quiet, guard, background, info

    def from_selection(self, attr, old, new) -> None:
        """A drag selects the characters from the first to the last one it covers, in reading order."""
        if not new:
            return
        pos = np.asarray(self.text.source.data["pos"])[new]
        with self._quiet():
            self.text.source.selected.indices = []     # the span's outline shows it, not the selection
        self.set_span((int(pos.min()), int(pos.max()) + 1))
        self._opened()

    def tap(self, event) -> None:
        """A click in the text outside the span clears it."""
        span = self.text.span_range
        if span is not None:
            at = self.text.char_at(event.x, event.y)
            if at is None or not span[0] <= at < span[1]:
                self.set_span(None)

    def typed(self) -> None:
        d = self.discover
        if d.start.value is not None and d.end.value is not None:
            self.set_span((int(d.start.value), int(d.end.value)))

    def set_span(self, span: tuple[int, int] | None) -> None:
        """Select chars [start, end) (None: no span); the units on in it replace any old results."""
        d = self.discover
        with self._quiet():
            d.start.value, d.end.value = span if span else (None, None)
            if span and not d.points(self.view.points):      # first span: the shown unit's layer and kind
                d.set_points([self._point()])
        self.text.set_span(span)
        self.text.marks.data = {"x": [], "y": [], "w": []}
        if span:
            self.hint.text = (f"<b style='color:#e6550d'>Span</b>: chars {span[0]:,}–{span[1]:,} "
                              f"({span[1] - span[0]:,} chars, outlined). Click outside it in the text "
                              f"to clear it.")
        else:
            self.hint.text = NO_SPAN_HINT
        self.refresh()

    def refresh(self) -> None:
        try:
            self.selectmatch.refresh()
        finally:
            self._changed()

    def find_matches(self) -> None:
        gen, work = self.selectmatch.match_job()
        self.discover.clear_matches("Matching…")

        def done(result):
            if self.selectmatch.show_matches(gen, result):
                self._info(f"{len(result[0])} run(s) found; click one to jump there")
        self._background("Matching", work, done)

    def jump_to_match(self, i: int) -> None:
        m = self.discover.matches.data
        self._jump(int(m["start"][i]), int(m["length"][i]))

    def restore(self, state: dict) -> None:
        """The select & match settings and span of an address (rnnviz.app.urlstate)."""
        d = self.discover
        with self._quiet():
            if "thr" in state:
                d.threshold.value = state["thr"]
            if "sign" in state:
                d.sign.active = SIGNS.index(state["sign"])
            for key, widget in (("before", d.before), ("after", d.after), ("cover", d.cover)):
                if key in state:
                    widget.value = state[key]
            if state.get("from"):
                d.set_points([p for p in state["from"] if p in self.view.points])
        if "span" in state:
            self._guard(self.set_span)(state["span"])
            self._opened()
