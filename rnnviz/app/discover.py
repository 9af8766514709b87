"""The "Select & match" tab: LSTMVis's select and match tools on a dump.

:class:`DiscoverPanel` owns the widgets and draws the results; :class:`SelectMatch`
reads the dump for a span and runs the pure query in :mod:`.selectmatch`. Each new
span or setting replaces the old results at once, and a match query that finishes
after the question changed is dropped (``generation``).
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import (Button, CheckboxButtonGroup, ColumnDataSource, CustomJS, Div, LinearColorMapper,
                          NumberFormatter, NumericInput, Range1d, RadioButtonGroup, Spinner, TableColumn, TapTool,
                          WheelPanTool)
from bokeh.plotting import figure

from ..errors import RnnvizError
from ..names import kinds_in, parse_point, unit_name
from ..render import colours
from ..render.layout import shown
from .panels import SIDE_W, _on_pick, _table
from .selectmatch import COVER, SIGNS, Matcher, firing, matches_csv, needed, on_almost_everywhere, select

MAX_SPAN = 20_000          # chars a span may have
AROUND = 10                # chars each side for the "mean around" column
TOP = 50                   # matches listed
SNIP_BEFORE, SNIP_W = 8, 46     # snippet: chars shown before a run, chars in all
HEAT_ROWS = 12             # selected units drawn under each snippet, at most
READ_ROWS = 1 << 14        # chars per read: short reads keep the file free for a unit switch meanwhile
SIGN_LABELS = ("on at ≥ +t", "on at ≤ −t", "either")
BLOCK = 0.8 + 1.0 + 1.2 + 0.4      # a snippet's label, text, heatmap and gap, in text rows
_HEAT = colours._ramp(("#ffffff", "#fde0c5", "#f59e4c", "#c4530a", "#6b2a00"))
_EMPTY_UNITS = {"unit": [], "sign": [], "on_inside": [], "mean_inside": [], "mean_around": [], "everywhere": []}
_EMPTY_MATCHES = {"rank": [], "start": [], "end": [], "length": [], "selected_on": [], "others_on": [],
                  "text": []}


class DiscoverPanel:
    """Widgets of the tab; the explorer wires them to :class:`SelectMatch`."""

    def __init__(self, layers: list[int], kinds: list[str], on_unit, on_match):
        self.start = NumericInput(title="Span start", value=None, width=100, name="span_start")
        self.end = NumericInput(title="Span end (excl.)", value=None, width=100, name="span_end")
        self.threshold = Spinner(title="Threshold t", value=0.3, step=0.05, low=0.01, width=90, name="threshold")
        self.before = Spinner(title="Off before", value=1, low=0, high=50, step=1, width=75, name="before")
        self.after = Spinner(title="Off after", value=0, low=0, high=50, step=1, width=75, name="after")
        # A unit tracking a region turns on a char or two into it: on at this share of the span is enough.
        self.cover = Spinner(title="On in span ≥ %", value=round(COVER * 100), low=1, high=100, step=5, width=100,
                             name="cover")
        self.sign = RadioButtonGroup(labels=list(SIGN_LABELS), active=0, name="select_sign")
        self.layers = CheckboxButtonGroup(labels=[f"layer{i}" for i in layers], active=[], name="select_layers")
        self.kinds = CheckboxButtonGroup(labels=list(kinds), active=[], name="select_kinds")
        self.layer_ids = list(layers)
        self.note = Div(text="", width=SIDE_W, name="select_note", styles={"color": "#555", "min-height": "36px"})
        self.units = ColumnDataSource(dict(_EMPTY_UNITS), name="selected_units")
        fmt = NumberFormatter(format="0.000")
        self.units_table = _table(self.units, [
            TableColumn(field="unit", title="unit", width=124), TableColumn(field="sign", title="on at", width=32),
            TableColumn(field="on_inside", title="% span", formatter=NumberFormatter(format="0%"), width=40),
            TableColumn(field="mean_inside", title="mean in", formatter=fmt, width=50),
            TableColumn(field="mean_around", title=f"mean ±{AROUND}", formatter=fmt, width=52),
            TableColumn(field="everywhere", title="on ≥ 99% of text", width=88)],
            "units_table", height=130)
        self.find = Button(label="Find where they fire together", button_type="primary", width=230,
                           name="find_matches")
        self.csv = Div(text="", visible=False, name="matches_csv")
        self.export = Button(label="Download CSV", width=120, name="export_matches", disabled=True)
        self.matches = ColumnDataSource(dict(_EMPTY_MATCHES), name="match_runs")   # in the page via `runs`
        self.export.js_on_click(CustomJS(args={"csv": self.csv, "runs": self.matches}, code="""
            const blob = new Blob([csv.text], {type: 'text/csv'});
            const a = document.createElement('a');
            a.href = URL.createObjectURL(blob); a.download = 'rnnviz-matches.csv';
            document.body.appendChild(a); a.click(); a.remove();"""))
        self.match_note = Div(text="", width=SIDE_W, name="match_note", styles={"color": "#555", "min-height": "20px"})
        self.snippets = _SnippetView(on_match)
        _on_pick(self.units, on_unit, "unit")
        self.layout = column(
            row(self.start, self.end, self.threshold), row(self.before, self.after, self.cover),
            row(Div(text="select from", width=75, styles={"color": "#555"}), self.layers),
            row(Div(text="kinds", width=75, styles={"color": "#555"}), self.kinds),
            self.sign, self.note, self.units_table, row(self.find, self.export), self.match_note,
            self.snippets.figure, self.csv)

    # ----- what the widgets say
    def span(self) -> tuple[int, int] | None:
        if self.start.value is None or self.end.value is None:
            return None
        return int(self.start.value), int(self.end.value)

    def cover_percent(self) -> int:
        """The share of the span a selected unit must be on at, in percent (1-100)."""
        return int(round(self.cover.value if self.cover.value is not None else COVER * 100))

    def sign_name(self) -> str:
        return SIGNS[self.sign.active or 0]

    def points(self, recorded: list[str]) -> list[str]:
        layers = [self.layer_ids[i] for i in sorted(self.layers.active)]
        kinds = [self.kinds.labels[i] for i in sorted(self.kinds.active)]
        return [p for p in (f"layer{lay}.{k}" for lay in layers for k in kinds) if p in recorded]

    def set_points(self, points: list[str]) -> None:
        parsed = [parse_point(p) for p in points]
        self.layers.active = sorted({self.layer_ids.index(lay) for lay, _ in parsed if lay in self.layer_ids})
        self.kinds.active = sorted({self.kinds.labels.index(k) for _, k in parsed if k in self.kinds.labels})

    # ----- results
    def clear_units(self, note: str) -> None:
        self.units.data = dict(_EMPTY_UNITS)
        self.note.text = note

    def clear_matches(self, note: str = "") -> None:
        self.matches.data = dict(_EMPTY_MATCHES)
        self.snippets.clear()
        self.csv.text = ""
        self.export.disabled = True
        self.match_note.text = note


class _SnippetView:
    """Each match as an aligned line of text with a small heatmap of the selected units under it."""

    ROWS_SHOWN = 6.0        # matches visible at once; the wheel scrolls through the rest

    def __init__(self, on_match):
        self.chars = ColumnDataSource({"x": [], "y": [], "ch": [], "fill": [], "match": []}, name="snippet_chars")
        self.heat = ColumnDataSource({"x": [], "y": [], "h": [], "v": []}, name="snippet_heat")
        self.labels = ColumnDataSource({"x": [], "y": [], "text": []})
        self.mapper = LinearColorMapper(palette=_HEAT, low=0, high=2)
        fig = figure(frame_width=min(SNIP_W * 9, SIDE_W - 12), frame_height=int(self.ROWS_SHOWN * BLOCK * 17), tools=[],
                     x_range=Range1d(-0.5, SNIP_W - 0.5), y_range=Range1d(-self.ROWS_SHOWN * BLOCK, 0.3),
                     toolbar_location=None, name="match_snippets", min_border=2, outline_line_color="#d0d0d0")
        fig.axis.visible = False
        fig.grid.visible = False
        cells = fig.rect(x="x", y="y", width=1, height=1, source=self.chars, fill_color="fill", line_color=None)
        fig.text(x="x", y="y", text="ch", source=self.chars, text_font_size="12px", text_align="center",
                 text_baseline="middle", text_font={"value": "'DejaVu Sans Mono', Menlo, monospace"})
        fig.rect(x="x", y="y", width=1, height="h", source=self.heat, line_color=None,
                 fill_color={"field": "v", "transform": self.mapper})
        fig.text(x="x", y="y", text="text", source=self.labels, text_font_size="10px", text_color="#666666",
                 text_baseline="bottom")
        wheel = WheelPanTool(dimension="height")
        fig.add_tools(TapTool(renderers=[cells]), wheel)
        fig.toolbar.active_scroll = wheel
        self.figure = fig
        _on_pick(self.chars, on_match, "match")

    def clear(self) -> None:
        self.chars.data = {"x": [], "y": [], "ch": [], "fill": [], "match": []}
        self.heat.data = {"x": [], "y": [], "h": [], "v": []}
        self.labels.data = {"x": [], "y": [], "text": []}

    def show(self, found: pd.DataFrame, texts: list[str], heat: list[np.ndarray], n_selected: int) -> None:
        """``texts[i]``: SNIP_W chars from SNIP_BEFORE before match i; ``heat[i]``: (rows, SNIP_W) value/t."""
        rows = heat[0].shape[0] if heat else 0
        block = BLOCK
        hr = 1.2 / max(rows, 1)
        cx, cy, ch, fill, mid = [], [], [], [], []
        hx, hy, hh, hv = [], [], [], []
        lx, ly, lt = [], [], []
        for i, (r, text, h) in enumerate(zip(found.itertuples(index=False), texts, heat)):
            top = -i * block - 0.8                        # under the match's label
            lead = min(SNIP_BEFORE, r.start - r.shown_from)
            for j, c in enumerate(text):
                cx.append(j)
                cy.append(top - 0.5)
                ch.append(shown(c))
                fill.append("#fff3b0" if lead <= j < lead + r.length else "#f4f4f4")
                mid.append(i)
            for u in range(rows):
                y = top - 1.0 - (u + 0.5) * hr
                hx.extend(range(h.shape[1]))
                hy.extend([y] * h.shape[1])
                hh.extend([hr * 0.9] * h.shape[1])
                hv.extend(np.nan_to_num(h[u], nan=0.0).tolist())
            lx.append(0)
            ly.append(top + 0.05)
            lt.append(f"#{i + 1}  char {r.start:,}, {r.length} long: {r.selected_on}/{n_selected} on, "
                      f"{r.others_on} other(s)")
        self.chars.data = {"x": cx, "y": cy, "ch": ch, "fill": fill, "match": mid}
        self.heat.data = {"x": hx, "y": hy, "h": hh, "v": hv}
        self.labels.data = {"x": lx, "y": ly, "text": lt}
        bottom = min(-len(found) * block, -self.ROWS_SHOWN * block) + 0.3
        self.figure.y_range.update(start=-self.ROWS_SHOWN * block + 0.3, end=0.3, bounds=(bottom - 0.3, 0.6))


class SelectMatch:
    """The queries behind the tab, on ``view`` (a :class:`~rnnviz.app.store.DumpView`)."""

    def __init__(self, view, panel: DiscoverPanel):
        self.view, self.panel = view, panel
        self.selected: list[tuple[str, int, int]] = []     # (point, index, sign): the units matched
        self.query = None            # what they were found for: (span, points, threshold, sign, selection, cover)
        self.generation = 0          # bumped whenever the question changes; late answers are dropped

    def _source_of(self, pos: int) -> tuple[int, int]:
        firsts = self.view.sources["start"].to_numpy()
        i = int(np.searchsorted(firsts, pos, side="right") - 1)
        return int(firsts[i]), int(firsts[i] + self.view.sources["length"].iloc[i])

    def _rows(self, points: list[str], start: int, end: int) -> np.ndarray:
        """(T, U) float32 states of every unit of ``points``, side by side, for chars [start, end)."""
        if end <= start:
            return np.zeros((0, len(points) * self.view.hidden_size), np.float32)
        return np.hstack([self.view.block(p, start, end).astype(np.float32) for p in points])

    def refresh(self) -> None:
        """Select the units for the span and settings now shown; old units and matches go first."""
        p = self.panel
        self.generation += 1
        self.selected, self.query = [], None
        p.clear_matches()
        span = p.span()
        if span is None:
            p.clear_units("Drag over the text (or type a span) to find the units that are on inside it "
                          "and off just before it.")
            return
        start, end = span
        points = p.points(self.view.points)
        if not 0 <= start < end <= self.view.n_chars:
            raise RnnvizError(f"expected a span with 0 <= start < end <= {self.view.n_chars:,}, got {start:,}..{end:,}")
        if end - start > MAX_SPAN:
            raise RnnvizError(f"select a span of at most {MAX_SPAN:,} chars (got {end - start:,})")
        if not points:
            raise RnnvizError("choose at least one layer and one kind to select units from")
        thr, sign = float(p.threshold.value), p.sign_name()
        before, after = int(p.before.value or 0), int(p.after.value or 0)
        cover = p.cover_percent() / 100
        first, last = self._source_of(start)          # "just before/after" never reaches into another file
        lo, hi = max(first, start - max(before, AROUND)), min(last, end + max(after, AROUND))
        rows = self._rows(points, lo, hi)
        inside = rows[start - lo:end - lo]
        sel = select(inside, rows[max(0, start - lo - before):start - lo], rows[end - lo:end - lo + after],
                     thr, sign, cover)
        h = self.view.hidden_size
        units = [(points[c // h], int(c % h), int(s)) for c, s in zip(sel.columns, sel.signs)]
        everywhere = self._on_almost_everywhere(units, thr)
        around = np.concatenate([rows[:start - lo], rows[end - lo:]])
        mean_in = inside[:, sel.columns].mean(axis=0)
        on_in = np.array([firing(inside[:, [c]], thr, "positive" if s > 0 else "negative").mean()
                          for c, s in zip(sel.columns, sel.signs)])
        mean_out = around[:, sel.columns].mean(axis=0) if len(around) else np.full(len(sel), np.nan)
        order = np.lexsort((-np.abs(mean_in), everywhere))      # the units that are on everywhere last
        # Units on almost everywhere are listed but not matched: they are on wherever a run could be.
        self.selected = [units[i] for i in order if not everywhere[i]]
        self.query = ((start, end), points, thr, sign, sel.keep(~everywhere), cover)
        p.units.data = {"unit": [unit_name(*units[i][:2]) for i in order],
                        "sign": ["≥ +t" if units[i][2] > 0 else "≤ −t" for i in order],
                        "on_inside": on_in[order].astype(np.float64),
                        "mean_inside": mean_in[order].astype(np.float64),
                        "mean_around": mean_out[order].astype(np.float64),
                        "everywhere": ["yes: not matched" if everywhere[i] else "" for i in order]}
        where = ", ".join(points) if len(points) <= 4 else f"{len(points)} layer/kind pairs"
        rule = {"positive": f"≥ {thr:g}", "negative": f"≤ −{thr:g}", "both": f"≥ {thr:g} or ≤ −{thr:g}"}[sign]
        off = f", below it on the {before} char(s) before" if before else ""
        off += f" and {after} after" if after else ""
        n, need = end - start, needed(end - start, cover)
        share = "every one" if need == n else f"at least {need} ({p.cover_percent()}%)"
        note = (f"<b>{len(sel)}</b> unit(s) of {html.escape(where)} are {rule} on {share} of chars "
                f"{start:,}–{end:,} ({n} chars){off}. ")
        n_every = int(everywhere.sum())
        if n_every:
            note += (f"<b>{n_every}</b> of them {'is' if n_every == 1 else 'are'} on at ≥ 99% of all the text "
                     f"(the analysis's 1st/99th percentile is past the threshold) and {'is' if n_every == 1 else 'are'} "
                     f"left out of the match. ")
        if before and start == first:
            note += ("The span starts a file, where the model starts from a zero state: there is no char "
                     "before it to be off. ")
        note += ("Click one to show it." if self.selected else
                 "Try a lower threshold, the other sign, or chars that must be off after the span." if n_every else
                 "Try a lower threshold, the other sign, or fewer chars before/after.")
        p.note.text = note

    def _on_almost_everywhere(self, units: list[tuple[str, int, int]], thr: float) -> np.ndarray:
        """(k,) bool, from /analysis/units' percentiles (all False without an analysis)."""
        a = self.view.analysis
        table = None if a is None else a.units
        if table is None or not len(units) or not {"unit", "p1", "p99"} <= set(table.columns):
            return np.zeros(len(units), bool)
        stats = table.set_index("unit").reindex([unit_name(pt, i) for pt, i, _ in units])
        return on_almost_everywhere(np.array([s for _, _, s in units]), stats["p1"].to_numpy(float),
                                    stats["p99"].to_numpy(float), thr)

    def match_job(self):
        """(generation, work) for a background thread: work(progress) -> the ranked runs and their views."""
        if self.query is None:
            raise RnnvizError("no units selected: select a span where some units are on first")
        if not self.selected:
            raise RnnvizError("no unit to match: " + ("every selected unit is on at ≥ 99% of the text, so it "
                              "fires everywhere; try chars that must be off after the span, or another "
                              "threshold" if len(self.panel.units.data["unit"]) else
                              "select a span where some units are on first"))
        span, points, thr, sign, sel, _ = self.query
        gen, view = self.generation, self.view
        breaks = view.sources["start"].to_numpy()

        h = view.hidden_size
        # Pass 1 reads only the chunk columns that hold selected units, point by point.
        parts = []
        for n, p in enumerate(points):
            cols = sel.columns[(sel.columns >= n * h) & (sel.columns < (n + 1) * h)] - n * h
            if len(cols):
                parts.append((p, slice(int(cols.min()), int(cols.max()) + 1), cols - cols.min()))

        def read_rows(a, b):
            return np.hstack([view.read(p, a, b) for p in points]) if len(points) > 1 else view.read(points[0], a, b)

        def work(progress):
            matcher = Matcher(sel, thr, sign, len(points) * h)
            iters = [view.iter_point(p, READ_ROWS, span_cols) for p, span_cols, _ in parts]
            for pieces in zip(*iters):
                matcher.feed(np.hstack([b[:, take] for (_, b), (_, _, take) in zip(pieces, parts)]))
                progress(min(1.0, (pieces[0][0] + len(pieces[0][1])) / view.n_chars))
            found = matcher.result(read_rows, top=TOP, exclude=span, breaks=breaks)
            # A snippet starts SNIP_BEFORE chars before its run, never in the file before.
            first = breaks[np.searchsorted(breaks, found["start"].to_numpy(), side="right") - 1]
            found["shown_from"] = np.maximum(first, found["start"].to_numpy() - SNIP_BEFORE)
            return found, self._views_of(found)
        return gen, work

    def _views_of(self, found: pd.DataFrame):
        """Snippet texts, heat rows (selected units' value x sign / t) and run texts of each match."""
        shown_units = self.selected[:HEAT_ROWS]
        thr = self.query[2]
        texts, heats, runs = [], [], []
        for s, n, a in zip(found["start"].tolist(), found["length"].tolist(), found["shown_from"].tolist()):
            b = min(self.view.n_chars, a + SNIP_W)
            texts.append(self.view.text(a, b))
            runs.append(self.view.text(s, s + n))
            heat = np.full((len(shown_units), SNIP_W), np.nan, np.float32)
            blocks = {pt: self.view.block(pt, a, b) for pt in {pt for pt, _, _ in shown_units}}
            for u, (pt, i, sg) in enumerate(shown_units):
                heat[u, :b - a] = blocks[pt][:, i].astype(np.float32) * sg / thr
            heats.append(heat)
        return texts, heats, runs

    def show_matches(self, gen: int, result) -> bool:
        """Show a finished query's runs; False if the question changed meanwhile (nothing shown)."""
        if gen != self.generation:
            return False
        found, (texts, heats, runs) = result
        p = self.panel
        k = len(self.selected)
        p.matches.data = {"rank": np.arange(1, len(found) + 1), "start": found["start"].to_numpy(np.int64),
                          "end": found["end"].to_numpy(np.int64), "length": found["length"].to_numpy(np.int64),
                          "selected_on": found["selected_on"].to_numpy(np.int64),
                          "others_on": found["others_on"].to_numpy(np.int64), "text": runs}
        p.snippets.show(found, texts, heats, k)
        names = [unit_name(pt, i) for pt, i, _ in self.selected]
        _, _, thr, sign, _, cover = self.query
        p.csv.text = matches_csv(found, runs, names, thr, sign, cover)
        p.export.disabled = not len(found)
        more = f"; the heatmaps show the first {HEAT_ROWS} of the {k} units" if k > HEAT_ROWS else ""
        left = len(p.units.data["unit"]) - k
        which = f"{k} selected unit(s) not on almost everywhere" if left else f"{k} selected unit(s)"
        p.match_note.text = (f"{len(found)} run(s) where the {which} fire together, most of them on "
                             f"first, then fewest other units on, then longest{more}. Click a run to jump there."
                             if len(found) else "No other run of 2+ chars where these units are on together.")
        return True
