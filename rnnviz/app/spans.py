"""Selecting a span of text for select & match, and keeping the view in the address bar.

The half of :class:`~rnnviz.app.document.Explorer` that owns the span: a drag over the
text selects the characters from the first to the last one it covers (reading order),
exactly those are outlined and analysed, and a click elsewhere in the text clears it.
"""
from __future__ import annotations

import numpy as np

from . import urlstate
from .selectmatch import SIGNS

DISCOVER_TAB = 3
NO_SPAN_HINT = "Drag over the text to select a span: the <i>Select &amp; match</i> tab lists the units on in it."


class Spans:
    """Mixin: the span, the select & match queries on it, and the address."""

    def _span_from_selection(self, attr, old, new) -> None:
        """A drag selects the characters from the first to the last one it covers, in reading order."""
        if not new:
            return
        pos = np.asarray(self.text.source.data["pos"])[new]
        with self._quiet():
            self.text.source.selected.indices = []     # the span's outline shows it, not the selection
        self.set_span((int(pos.min()), int(pos.max()) + 1))
        self.tabs.active = DISCOVER_TAB

    def _tap(self, event) -> None:
        """A click in the text outside the span clears it."""
        span = self.text.span_range
        if span is not None:
            at = self.text.char_at(event.x, event.y)
            if at is None or not span[0] <= at < span[1]:
                self.set_span(None)

    def _plot_tap(self, event) -> None:
        """A click in the value plot marks the character there (it shows only the rows in view)."""
        pos = int(round(event.x))
        if self.start <= pos < self.end:
            self.text.mark(pos, 1, scroll=False)

    def _span_typed(self) -> None:
        d = self.discover
        if d.start.value is not None and d.end.value is not None:
            self.set_span((int(d.start.value), int(d.end.value)))

    def set_span(self, span: tuple[int, int] | None) -> None:
        """Select chars [start, end) (None: no span); the units on in it replace any old results."""
        d = self.discover
        with self._quiet():
            d.start.value, d.end.value = span if span else (None, None)
            if span and not d.points(self.view.points):      # first span: the shown unit's layer and kind
                d.set_points([self.point])
        self.text.set_span(span)
        self.text.marks.data = {"x": [], "y": [], "w": []}
        if span:
            self.span_hint.text = (f"<b style='color:#e6550d'>Span</b>: chars {span[0]:,}–{span[1]:,} "
                                   f"({span[1] - span[0]:,} chars, outlined). Click outside it in the text "
                                   f"to clear it.")
        else:
            self.span_hint.text = NO_SPAN_HINT
        self.refresh_selection()

    def refresh_selection(self) -> None:
        try:
            self.selectmatch.refresh()
        finally:
            self._sync_url()

    def find_matches(self) -> None:
        gen, work = self.selectmatch.match_job()
        self.discover.clear_matches("Matching…")

        def done(result):
            if self.selectmatch.show_matches(gen, result):
                self.info(f"{len(result[0])} run(s) found; click one to jump there")
        self._background("Matching", work, done)

    def jump_to_match(self, i: int) -> None:
        m = self.discover.matches.data
        self.jump(int(m["start"][i]), int(m["length"][i]))

    def _restore_selection(self, state: dict) -> None:
        d = self.discover
        with self._quiet():
            if "thr" in state:
                d.threshold.value = state["thr"]
            if "sign" in state:
                d.sign.active = SIGNS.index(state["sign"])
            for key, widget in (("before", d.before), ("after", d.after)):
                if key in state:
                    widget.value = state[key]
            if state.get("from"):
                d.set_points([p for p in state["from"] if p in self.view.points])
        if "span" in state:
            self._guard(self.set_span)(state["span"])
            self.tabs.active = DISCOVER_TAB

    def _scrolled(self) -> None:
        self.text.update_visible_box()
        self._show_where()
        self._sync_url()

    def _sync_url(self) -> None:
        if self._restoring:
            return
        d = self.discover
        span = d.span()
        self.url.text = urlstate.encode({
            "unit": self.unit, "pos": self.text.anchor(), "feature": self.feature, "span": span,
            "thr": float(d.threshold.value), "sign": d.sign_name(), "from": d.points(self.view.points),
            "before": int(d.before.value or 0), "after": int(d.after.value or 0)})
