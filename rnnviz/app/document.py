"""One browser tab's document: ``make_doc(doc, paths, initial_unit)`` builds it.

The :class:`Explorer` owns the state of a tab (dump, unit, window, feature) and
wires the widgets to it. All reading goes through the process-wide
:class:`~rnnviz.app.store.DumpView`, so tabs share open files.
"""
from __future__ import annotations

import functools
import html
import logging
import threading
import traceback
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import numpy as np
from bokeh.document import Document
from bokeh.layouts import column, row
from bokeh.events import Tap
from bokeh.models import Button, CustomJS, DataTable, Div, TabPanel, Tabs

from ..contexts import SATURATING
from ..errors import RnnvizError
from ..names import kinds_in, parse_point, unit_name
from ..render import colours
from . import urlstate
from .ablation import AblationToggle
from . import errorview
from .errorview import ErrorsView
from .controls import MAIN_W, STATUS_STYLE, Controls
from .discover import DiscoverPanel, SelectMatch
from .navigation import Navigator
from .spans import NO_SPAN_HINT, SpanSelector
from .panels import SIDE_W, ExportPanel, RankingPanel
from .saturation import SaturationPanel
from .snippets import ContextsPanel
from .store import open_view
from .heatmap import MAX_UNITS, Heatmap, legend_html, parse_units
from .strip import empty_strip, strip_data
from ..render.extras import guesses, next_chars
from .textview import CELL_W, TextView, window_data
from ..render.layout import WRAP

log = logging.getLogger(__name__)
CONTEXTS_TAB, DISCOVER_TAB = 1, 3
_KIND_WORDS = {"c": "cell state", "h": "hidden state", "gate_i": "input gate", "gate_f": "forget gate",
               "gate_g": "cell candidate", "gate_o": "output gate", "gate_r": "reset gate (GRU)",
               "gate_z": "update gate (GRU)", "gate_n": "candidate (GRU, tanh)"}


def make_doc(doc: Document, paths, initial_unit: str | None = None, dump_index: int = 0,
             initial_feature: str | None = None) -> "Explorer":
    """Fill ``doc`` with the app for ``paths`` (first shown: ``paths[dump_index]``).

    The address may choose the view (unit, position, span, threshold, sign: see urlstate.py),
    e.g. ``?unit=layer1.c[3]&feature=in_string&pos=1200&span=1180-1199&thr=0.3&sign=neg``.
    """
    state, bad = urlstate.parse(_url_args(doc))
    state.setdefault("unit", initial_unit)
    state.setdefault("feature", initial_feature)
    explorer = Explorer(doc, list(paths), dump_index, state, bad)
    doc.title = f"rnnviz — {explorer.view.name}"
    doc.add_root(explorer.layout)
    # The address a view was opened with may lack parts (defaults): show the whole view there at once.
    doc.js_on_event("document_ready", CustomJS(args={"url": explorer.url}, code="""
        window.history.replaceState(null, '', window.location.pathname + (url.text ? '?' + url.text : ''));"""))
    return explorer


def _url_args(doc: Document) -> dict[str, str]:
    ctx = doc.session_context
    request = getattr(ctx, "request", None) if ctx is not None else None
    raw = getattr(request, "arguments", None) or {}
    return {k: (v[0].decode() if isinstance(v[0], bytes) else str(v[0])) for k, v in raw.items() if v}


class Explorer:
    """A tab: the dump and unit shown, and the widgets. It holds the parts that move the
    window (``nav``, rnnviz.app.navigation) and select a span (``spans``, rnnviz.app.spans)."""

    def __init__(self, doc: Document, paths: list[str], dump_index: int = 0, state: dict | None = None,
                 bad_address: list[str] = ()):
        self.doc, self.paths, self.dump_index = doc, paths, dump_index
        self.view = open_view(paths[dump_index])
        state = state or {}
        feature, position = state.get("feature"), state.get("pos")
        unit_error = "; ".join(bad_address) or None
        try:
            self.point, self.index = self._first_unit(state.get("unit"))
        except RnnvizError as e:        # a bad ?unit= in the address: show the default unit and say why
            self.point, self.index = self._first_unit(None)
            unit_error = str(e)
        self.feature: str | None = None
        self._quiet_depth = 0
        self._restoring = True          # no address updates until the address's view is restored
        self.text = TextView()
        self.controls = Controls(self.view, paths, dump_index)
        self.nav = Navigator(self.view, self.text, self.controls, show=self._show_window, quiet=self._quiet,
                             info=self.info)
        self.ranking = RankingPanel(self._guard(self.select_unit_name), self._guard(self.set_feature),
                                    self._guard(self.set_heat_units))
        self.contexts = ContextsPanel(self._guard(self.jump))
        self.saturation = SaturationPanel(self._guard(self.select_unit_name),
                                          [k for k in kinds_in(self.view.points) if k in SATURATING])
        self.discover = DiscoverPanel(sorted({parse_point(p)[0] for p in self.view.points}),
                                      kinds_in(self.view.points), self._guard(self.select_unit_name),
                                      self._guard(lambda i: self.spans.jump_to_match(i)))
        self.selectmatch = SelectMatch(self.view, self.discover)
        self.span_hint = Div(text=NO_SPAN_HINT, name="span_hint", width=MAIN_W - 490,
                             styles={"color": "#555", "height": "20px", "overflow": "hidden", "font-size": "12px",
                                     "white-space": "nowrap", "text-overflow": "ellipsis"})
        self.spans = SpanSelector(self.view, self.text, self.discover, self.selectmatch, self.span_hint,
                                  point=lambda: self.point, jump=self.jump, opened=self._open_discover,
                                  changed=self._sync_url, quiet=self._quiet, guard=self._guard,
                                  background=self._background, info=self.info)
        # The address bar follows the view (history.replaceState), so that a view can be shared.
        self.url = Div(text="", visible=False, name="url_state")
        self.url.js_on_change("text", CustomJS(code="""
            const q = cb_obj.text;
            window.history.replaceState(null, '', window.location.pathname + (q ? '?' + q : ''));"""))
        self.export = ExportPanel()
        self.ablation = AblationToggle(self.view)
        self.errors = ErrorsView(self.view)
        self.heatmap = Heatmap(self.text.plot.x_range, WRAP * CELL_W, 4, SIDE_W)
        self._strip_key = None          # (start, end, k) the guesses under the text were drawn for
        self.banner = Div(text="", width=SIDE_W, name="analysis_banner")
        self.run_analysis = Button(label="Run the analysis now", button_type="warning", width=200,
                                   name="run_analysis")
        self._wire()
        self.layout = self._layout()
        self._show_analysis()
        self.nav.load_window(0)
        self.select_unit(self.point, self.index)
        if feature and feature in self.ranking.feature.options:
            self.ranking.feature.value = feature         # its callback shows the track and filters the table
        elif feature:
            unit_error = unit_error or f"no feature {feature!r} in this dump's analysis"
        self.spans.restore(state)
        if position is not None:
            self._guard(self.jump)(position, mark=False)
        self._restoring = False
        self._sync_url()
        if unit_error:
            self.error(unit_error)

    # The window and the span, as the tab's (tests and scripts drive a tab through these).
    start = property(lambda self: self.nav.start)
    end = property(lambda self: self.nav.end)

    def load_window(self, start: int) -> None:
        self.nav.load_window(start)

    def jump(self, pos: int, length: int = 1, mark: bool = True) -> None:
        self.nav.jump(pos, length, mark)

    def set_span(self, span: tuple[int, int] | None) -> None:
        self.spans.set_span(span)

    # ----- plumbing
    def _guard(self, fn):
        """Run a callback; a user error or a bug becomes a visible status line, never a dead tab."""
        @functools.wraps(fn)   # Bokeh checks a callback's signature
        def guarded(*args, **kwargs):
            if self._quiet_depth:
                return None
            try:
                return fn(*args, **kwargs)
            except RnnvizError as e:
                self.error(str(e))
            except Exception as e:   # keep the session alive; the log has the traceback
                log.error("rnnviz app callback failed:\n%s", traceback.format_exc())
                self.error(f"internal error in {getattr(fn, '__name__', 'callback')}: {e!r}")
        return guarded

    @contextmanager
    def _quiet(self):
        """Set widget values from Python without running their callbacks."""
        self._quiet_depth += 1
        try:
            yield
        finally:
            self._quiet_depth -= 1

    def info(self, message: str) -> None:
        self.controls.status.update(text=html.escape(message), styles={**STATUS_STYLE, "color": "#1d5e1d"})

    def error(self, message: str) -> None:
        self.controls.status.update(text="⚠ " + html.escape(message),
                                    styles={**STATUS_STYLE, "color": "#b00020", "font-weight": "bold"})

    def _background(self, label: str, work, done) -> None:
        """Run ``work(progress)`` off the server's event loop, then ``done(result)`` on it."""
        if self.doc.session_context is None:        # no server loop (tests, scripts): run inline
            return self._guard(lambda: done(work(lambda frac: None)))()
        self.info(f"{label}…")

        def later(fn, *args):
            self.doc.add_next_tick_callback(partial(self._guard(fn), *args))

        def run():
            try:
                result = work(lambda frac: later(self.info, f"{label}: {frac:.0%}"))
            except RnnvizError as e:
                later(self.error, str(e))
            except Exception as e:
                log.error("rnnviz background job failed:\n%s", traceback.format_exc())
                later(self.error, f"{label} failed: {e!r}")
            else:
                later(done, result)
        threading.Thread(target=run, name=f"rnnviz-{label}", daemon=True).start()

    def _wire(self) -> None:
        c, g, nav, spans = self.controls, self._guard, self.nav, self.spans
        for w in (c.layer, c.kind, c.index):
            w.on_change("value", g(lambda a, o, n: self._unit_from_widgets()))
        c.scale.on_change("value", g(lambda a, o, n: self.paint()))
        c.strip.on_change("value", g(lambda a, o, n: self._show_extras()))
        h = self.heatmap
        h.input.on_change("value", g(lambda a, o, n: self.set_heat_units(parse_units(n, self.view.check_unit))))
        h.add.on_click(g(lambda: self.set_heat_units(
            [u for u in self.heatmap.units if u != self.unit][:MAX_UNITS - 1] + [self.unit])))
        h.top.on_click(g(lambda: self.set_heat_units(self.ranking.top_units(8))))
        h.matched.on_click(g(self.heat_from_selection))
        h.clear.on_click(g(lambda: self.set_heat_units([])))
        c.window.on_change("value", g(lambda a, o, n: nav.load_window(nav.start)))
        c.prev_page.on_click(g(nav.prev_page))
        c.next_page.on_click(g(nav.next_page))
        c.position.on_change("value", g(lambda a, o, n: n is not None and nav.jump(int(n))))
        c.source.on_change("value", g(lambda a, o, n: nav.jump_to_source(int(n))))
        c.slider.on_change("value_throttled", g(lambda a, o, n: nav.jump(int(n), mark=False)))
        c.search.on_change("value", g(lambda a, o, n: nav.search(n)))
        c.search_opts.on_change("active", g(lambda a, o, n: c.search.value and nav.search(c.search.value)))
        c.next_match.on_click(g(lambda: nav.step_match(+1)))
        c.prev_match.on_click(g(lambda: nav.step_match(-1)))
        c.dump.on_change("value", g(lambda a, o, n: self.switch_dump(int(n))))
        self.text.source.selected.on_change("indices", g(spans.from_selection))
        self.text.figure.on_event(Tap, g(spans.tap))
        # A click in the value plot marks the character there (it shows only the rows in view).
        self.text.plot.on_event(Tap, g(lambda event: nav.mark_at(int(round(event.x)))))
        self.text.figure.y_range.on_change("end", g(lambda a, o, n: self._scrolled()))
        d = self.discover
        for w in (d.start, d.end):
            w.on_change("value", g(lambda a, o, n: spans.typed()))
        for w in (d.threshold, d.before, d.after, d.cover):
            w.on_change("value", g(lambda a, o, n: spans.refresh()))
        for w in (d.sign, d.layers, d.kinds):
            w.on_change("active", g(lambda a, o, n: spans.refresh()))
        d.find.on_click(g(spans.find_matches))
        self.export.button.on_click(g(self.export_visible))
        self.run_analysis.on_click(g(self.start_analysis))
        # The text shows one thing at a time: turning one colouring on turns the other off.
        self.ablation.toggle.on_change("active", g(lambda a, o, n: self._colour_by(self.ablation, n)))
        self.errors.toggle.on_change("active", g(lambda a, o, n: self._colour_by(self.errors, n)))

    def _colour_by(self, chosen, active: bool) -> None:
        if active:
            with self._quiet():
                for other in (self.ablation, self.errors):
                    if other is not chosen and other.toggle.active:
                        other.toggle.active = False
        self.paint()

    def _layout(self):
        # The ranking is always in view; the other panels share the tabs under it (tab indices:
        # CONTEXTS_TAB here, spans.DISCOVER_TAB).
        tabs = Tabs(tabs=[TabPanel(child=self.export.layout, title="Export"),
                          TabPanel(child=self.contexts.layout, title="Contexts"),
                          TabPanel(child=self.saturation.layout, title="Saturation"),
                          TabPanel(child=self.discover.layout, title="Select & match"),
                          TabPanel(child=self.errors.layout, title="Errors")], width=SIDE_W,
                    name="side_tabs")
        self.tabs = tabs
        tabs.on_change("active", self._guard(lambda a, o, n: self._show_contexts()))
        # Tables filled while their tab was hidden are drawn at zero size: redraw them on show.
        tabs.js_on_change("active", CustomJS(args={"tables": list(tabs.select({"type": DataTable}))},
                                             code="for (const t of tables) { t.change.emit() }"))
        # Nested columns: a plain column would align the frames of the figures and squeeze them.
        main = column(self.controls.top(self.span_hint), row(self.ablation.toggle, self.errors.toggle),
                      column(self.text.figure), column(self.heatmap.figure),
                      column(self.text.plot), self.url)
        side = column(self.banner, self.run_analysis, self.controls.side(), self.heatmap.controls,
                      self.ranking.layout, tabs)
        return row(main, side)

    # ----- several units, predictions
    def set_heat_units(self, units: list[str]) -> None:
        """Show ``units`` (at most MAX_UNITS) as heatmap rows under the text."""
        if len(units) > MAX_UNITS:
            raise RnnvizError(f"the heatmap shows at most {MAX_UNITS} units ({len(units)} given)")
        with self._quiet():
            self.heatmap.set_units(units)
        self._show_extras()

    def heat_from_selection(self) -> None:
        units = [unit_name(p, i) for p, i, _ in self.selectmatch.selected]
        if not units:
            raise RnnvizError("select & match has no selected units: drag over a span of text first")
        self.set_heat_units(units[:MAX_UNITS])
        if len(units) > MAX_UNITS:
            self.info(f"the heatmap shows the first {MAX_UNITS} of the {len(units)} selected units")

    def _show_extras(self) -> None:
        """The heatmap rows and the prediction strip for the window; only what changed is sent."""
        self.heatmap.show(self.view, self.start, self.end, self.controls.scale.value)
        k = int(self.controls.strip.value)
        if (self.start, self.end, k) == self._strip_key:
            return
        self._strip_key = (self.start, self.end, k)
        data = empty_strip()
        if k:
            d, v = self.text.source.data, self.view
            _, ids, probs = v.predictions(self.start, self.end)
            after = next_chars(v.text, v.source_breaks, self.start, self.end, v.n_chars)
            data = strip_data(np.asarray(d["x"]), np.asarray(d["y"]), guesses(ids, probs, v.vocab, after, k),
                              self.text.text_share(k))
        self.text.set_strip(k, data, self.text.top_row())

    def _open_discover(self) -> None:
        self.tabs.active = DISCOVER_TAB

    def _scrolled(self) -> None:
        self.text.update_visible_box()
        self.nav.show_where()
        self._sync_url()

    def _sync_url(self) -> None:
        if self._restoring:
            return
        d = self.discover
        self.url.text = urlstate.encode({
            "unit": self.unit, "pos": self.text.anchor(), "feature": self.feature, "span": d.span(),
            "thr": float(d.threshold.value), "sign": d.sign_name(), "from": d.points(self.view.points),
            "before": int(d.before.value or 0), "after": int(d.after.value or 0), "cover": d.cover_percent()})

    # ----- units
    def _first_unit(self, unit: str | None) -> tuple[str, int]:
        if unit:
            return self.view.check_unit(unit)
        a = self.view.analysis
        if a is not None and a.ranking is not None and "kind" in a.ranking:
            # The strongest cell or hidden unit: the ones Karpathy et al. read text with.
            states = a.ranking[a.ranking["kind"].isin(["c", "h"]) & a.ranking["point"].isin(self.view.points)]
            if len(states):
                return str(states["point"].iloc[0]), int(states["index"].iloc[0])
        ordered = sorted(self.view.points, key=lambda p: (p.split(".")[1] != "c", -parse_point(p)[0]))
        return ordered[0], 0

    @property
    def unit(self) -> str:
        return unit_name(self.point, self.index)

    def _unit_from_widgets(self) -> None:
        c = self.controls
        point = f"layer{c.layer.value}.{c.kind.value}"
        if point not in self.view.points:
            raise RnnvizError(f"{point} was not recorded in this dump; it has {', '.join(self.view.points)}")
        index = min(max(int(c.index.value or 0), 0), self.view.hidden_size - 1)    # a typed 300 shows [255]
        self.select_unit(point, index)

    def select_unit_name(self, unit: str) -> None:
        self.select_unit(*self.view.check_unit(unit))

    def select_unit(self, point: str, index: int) -> None:
        self.point, self.index = point, index
        layer, kind = parse_point(point)
        with self._quiet():
            self.controls.layer.value, self.controls.kind.value = str(layer), kind
            self.controls.index.value = index
        self.paint()
        self._show_contexts()
        self.saturation.mark(self.unit)
        self.ranking.shown(self.unit)
        self.controls.status.text = ""
        self._sync_url()

    def _show_contexts(self) -> None:
        """Fill the contexts table, only while its tab is open (it reads ~20 snippets of text)."""
        if self.tabs.active == CONTEXTS_TAB and self.contexts.shown != (self.unit, self.colour):
            self.contexts.show(self.view, self.unit, self.colour)

    def _show_window(self, start: int, end: int) -> None:
        """Draw chars [start, end) (the navigator's window), coloured by the unit, with the feature track."""
        values = self.view.values(self.point, self.index, start, end)
        feature = self.view.feature(self.feature, start, end) if self.feature else None
        self.text.source.selected.indices = []
        self.text.show_window(*window_data(self.view, start, end, values, feature))
        if feature is not None:
            self.text.show_feature(feature, self.feature)
        self.paint()

    def paint(self) -> None:
        """Colour the window by the current unit: sends the ``v`` column and the scale only."""
        kind = parse_point(self.point)[1]
        with self._quiet():             # switching the toggle off for a unit without data repaints nothing
            self.ablation.show_for(self.unit)
        change = self.ablation.values(self.unit, self.start, self.end)
        codes = self.errors.values(self.start, self.end)
        if codes is not None:           # the unit's scale stays self.colour (contexts and exports use it)
            self.text.show_values(codes, errorview.SCALE, "error category")
            self.text.show_value_as("error", self.errors.hover_format)
            self.text.plot.visible = False      # a line through category codes would mean nothing
            self.controls.unit_line.text = "<b style='font-size:15px'>the model's errors</b> &nbsp;by category"
            self.controls.legend.text = self.errors.legend
            self._show_extras()
            return
        self.text.show_value_as("value")
        self.text.plot.visible = True
        if change is not None:          # red: the model predicts the character worse without the unit
            self.colour = colours.Scale(-change[1], change[1], "diverging",
                                        "bits; red = predicted worse without the unit")
            self.text.show_values(change[0], self.colour, f"{self.unit} ablated")
            self.controls.unit_line.text = f"<b style='font-size:15px'>{self.unit}</b> &nbsp;ablated: loss change"
            self.controls.legend.text = legend_html(self.colour)
            self._show_extras()
            return
        values = self.view.values(self.point, self.index, self.start, self.end)
        scale = self.controls.scale.value
        stats = None if scale in ("fixed", "window") or colours.is_gate(kind) else self.view.unit_stats(self.unit)
        self.colour = colours.unit_scale(kind, values, scale, stats, self.view.cell)
        self.text.show_values(values, self.colour, self.unit)
        self.controls.unit_line.text = (f"<b style='font-size:15px'>{self.unit}</b> &nbsp;{_KIND_WORDS[kind]}"
                                        f"{self._top_features()}")
        self.controls.legend.text = legend_html(self.colour)
        self._show_extras()                 # a new window or scale: the heatmap and strip follow

    def _top_features(self) -> str:
        r = self.view.unit_rows("ranking", self.unit).head(3)
        if not len(r):
            return ""
        return " &nbsp;· strongest features: " + ", ".join(
            f"{html.escape(str(f))} {s:+.2f}" for f, s in zip(r["feature"], r["score"]))

    def set_feature(self, name: str | None) -> None:
        self.feature = name
        self.ranking.refresh()
        values = self.view.feature(name, self.start, self.end) if name else None
        self.text.show_feature(values, name or "")
        self._sync_url()

    def switch_dump(self, index: int) -> None:
        doc = self.doc
        doc.clear()
        make_doc(doc, self.paths, None, index)

    # ----- analysis and export
    def _show_analysis(self) -> None:
        a = self.view.analysis
        self.run_analysis.visible = a is None
        if a is None:
            self.banner.text = ("<b>This dump has no analysis yet.</b> The ranking of units against text "
                                "features, their top contexts and the gate saturation come from "
                                "<code>rnnviz analyze</code>.")
        else:
            self.banner.text = ""
        self.ranking.set_ranking(None if a is None else a.ranking, [] if a is None else sorted(a.features),
                                 None if a is None else a.options)
        self.saturation.show(None if a is None else a.saturation)

    def start_analysis(self) -> None:
        self.run_analysis.disabled = True

        def done(_):
            self.info("analysis finished")
            self.switch_dump(self.dump_index)
        self._background("Analysing the dump (this writes /analysis into it)",
                         lambda progress: self.view.run_analysis(), done)

    def export_visible(self) -> None:
        from ..export import export_span, free_name
        start, end = self.text.visible_span()
        fmt = self.export.format.value
        out = free_name(Path(self.view.path), self.unit, start, end, fmt)
        # The colours on screen, exactly: the window's scale would otherwise be recomputed on the span.
        unit, colour = self.unit, self.colour
        # What is shown goes into the picture too: the heatmap's rows on their scales, the guesses.
        heat = list(self.heatmap.units)
        extras = dict(heat_units=heat, heat_scales=self.heatmap.scales[:len(heat)],
                      guesses=int(self.controls.strip.value))

        def done(path):
            self.export.note.text = f"Wrote <code>{html.escape(str(path))}</code> (chars {start:,}–{end:,}, {unit})"
            self.export.offer(path)
            self.info(f"wrote {path}")
        self._background(f"Exporting {fmt.upper()}",
                         lambda progress: export_span(self.view.path, unit, start, end, out, colour=colour, **extras), done)
