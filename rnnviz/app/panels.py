"""The side panels: unit ranking, top contexts, gate saturation, export (select & match: discover.py).

Each panel owns its widgets and a ``show_*`` method; clicks call back into the
explorer (``on_unit(name)`` / ``on_jump(position)``), which owns the state.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import (Button, ColumnDataSource, CustomJS, DataTable, Div, InlineStyleSheet, NumberFormatter,
                          Range1d, Select, StringFormatter, TableColumn, TapTool)
from bokeh.palettes import Category10_10
from bokeh.plotting import figure

from ..names import parse_point
from ..render.layout import snippet

SIDE_W = 378
MAX_RANKED = 500
_MONO_CSS = ".slick-cell { font-family: 'DejaVu Sans Mono', Menlo, monospace; font-size: 11px !important; }"
ALL = "(all)"
NONE = "(none)"


def _table(source, columns, name, height=300):
    table = DataTable(source=source, columns=columns, width=SIDE_W, height=height, index_position=None,
                      sortable=True, name=name, selectable=True,
                      stylesheets=[InlineStyleSheet(css=_MONO_CSS)])   # a model belongs to one document
    # BokehJS redraws a table's cells only when its row count changes: new rows of the same
    # count (the next unit's ten contexts) would keep showing the old ones. Redraw on every change.
    source.js_on_change("data", CustomJS(args={"table": table}, code="table.change.emit()"))
    return table


def _on_pick(source, callback, key):
    """Call ``callback(source.data[key][i])`` when row/dot ``i`` is clicked, then clear the selection."""
    def picked(attr, old, new):
        if new:
            value = source.data[key][new[0]]
            source.selected.indices = []
            callback(value.item() if hasattr(value, "item") else value)
    source.selected.on_change("indices", picked)


_RANK_COLUMNS = ("unit", "feature", "stat", "z", "p", "beats")


class RankingPanel:
    def __init__(self, on_unit, on_feature, on_units=None):
        """``on_unit(name)``: a row was clicked; ``on_units(names)``: several rows were
        selected (ctrl/shift-click), for the heatmap."""
        self.feature = Select(options=[NONE], value=NONE, width=200, name="feature_select")
        self.kind = Select(options=[ALL], value=ALL, width=90, name="rank_kind_select")
        self.source = ColumnDataSource({k: [] for k in _RANK_COLUMNS}, name="ranking_source")
        self.table = _table(self.source, [
            TableColumn(field="unit", title="unit", width=126),
            TableColumn(field="feature", title="feature", width=66),
            TableColumn(field="stat", title="AUC / ρ", width=70),
            TableColumn(field="z", title="z", formatter=NumberFormatter(format="0.0", nan_format=""), width=42),
            TableColumn(field="p", title="p", formatter=NumberFormatter(format="0.000", nan_format=""), width=42),
            TableColumn(field="beats", title="> null", width=38)],
            "ranking_table", height=236)
        self.note = Div(text="", width=SIDE_W, styles={"color": "#555", "font-size": "11px"}, name="ranking_note")
        self.ranking: pd.DataFrame | None = None
        self.options: dict = {}
        self.source.selected.on_change("indices", lambda a, o, n: self._picked(n, on_unit, on_units))
        self.feature.on_change("value", lambda a, o, n: on_feature(None if n == NONE else n))
        self.kind.on_change("value", lambda a, o, n: self.refresh())
        self.layout = column(row(Div(text="<b>Ranking</b>", width=60), self.feature, self.kind), self.table,
                             self.note)

    def _picked(self, rows, on_unit, on_units) -> None:
        units = [self.source.data["unit"][i] for i in rows]
        if len(units) == 1:
            on_unit(units[0])
        elif len(units) > 1 and on_units is not None:
            on_units(list(dict.fromkeys(units)))

    def shown(self, unit: str) -> None:
        """Another unit is shown: forget a selected row of another unit, so that a click on it works again."""
        rows = self.source.selected.indices
        if len(rows) == 1 and self.source.data["unit"][rows[0]] != unit:
            self.source.selected.indices = []

    def top_units(self, n: int) -> list[str]:
        """The first ``n`` distinct units of the table as filtered now."""
        units = list(dict.fromkeys(self.source.data["unit"]))[:n]
        if not units:
            from ..errors import RnnvizError
            raise RnnvizError("the ranking is empty: this dump has not been analysed yet")
        return units

    def set_ranking(self, ranking: pd.DataFrame | None, features: list[str], options: dict | None = None) -> None:
        self.ranking, self.options = ranking, options or {}
        self.feature.options = [NONE] + list(features)
        if ranking is not None and "kind" in ranking:
            self.kind.options = [ALL] + sorted(set(ranking["kind"].astype(str)))
        self.refresh()

    def refresh(self) -> None:
        r = self.ranking
        if r is None:
            self.source.data = {k: [] for k in _RANK_COLUMNS}
            self.note.text = "No ranking: this dump has not been analysed yet."
            return
        if self.feature.value != NONE:
            r = r[r["feature"] == self.feature.value]
        if self.kind.value != ALL and "kind" in r:
            r = r[r["kind"].astype(str) == self.kind.value]
        top = r.head(MAX_RANKED)
        n = len(top)
        self.source.data = {"unit": top["unit"].tolist(), "feature": top["feature"].tolist(),
                            "stat": [_stat(row) for row in top.itertuples(index=False)],
                            "z": _column(top, "null_z", n), "p": _column(top, "null_p", n),
                            "beats": ["yes" if b else "" for b in (top["beats_null"] if "beats_null" in top
                                                                   else [False] * n)]}
        o = self.options
        sampled = (f" <b>Sampled</b>: analysed on {o['analysed_chars']:,} of {o['n_chars']:,} chars."
                   if o.get("analysed_chars") and o.get("n_chars") and o["analysed_chars"] < o["n_chars"] else "")
        bound = f"|z| ≥ {o['z_bound']:.2f}" if o.get("z_bound") else "|z| above a Bonferroni bound"
        help_ = {
            "AUC": "On/off features: the chance that a char with the feature has a higher value than one without, "
                   "as max(AUC, 1−AUC); its sign in brackets (−: lower on the feature).",
            "ρ": "Counts (position in the line, depth...): Spearman's rank correlation.",
            "z": "The score against circular shifts of the feature: (score − their mean) / their s.d. "
                 "(each feature's top units).",
            "p": "(1 + shifts at least as strong) / (shifts + 1).",
            "> null": f"yes when {bound} and stronger than every shift."}
        tips = " ".join(f"<span title=\"{html.escape(t)}\" style='border-bottom:1px dotted #777;cursor:help'>"
                        f"{html.escape(k)}</span>" for k, t in help_.items())
        self.note.text = (f"{n} of {len(r):,} (unit, feature) pairs, strongest first. Click a row to show the unit; "
                          f"ctrl/shift-click several for the heatmap.{sampled}<br>What the columns mean (hover): {tips}")


def _stat(row) -> str:
    kind = getattr(row, "feature_kind", "")
    auc, rho, score = (getattr(row, k, np.nan) for k in ("auc", "rho", "score"))
    if kind == "binary" and np.isfinite(auc):
        return f"{auc:.3f} ({'−' if score < 0 else '+'})"
    if np.isfinite(rho):
        return f"ρ {rho:+.3f}"
    return f"{score:+.3f}"


def _column(df: pd.DataFrame, name: str, n: int) -> np.ndarray:
    return df[name].to_numpy(np.float64) if name in df else np.full(n, np.nan)


class ContextsPanel:
    def __init__(self, on_jump):
        cols = {"which": [], "rank": [], "position": [], "value": [], "left": [], "char": [], "right": []}
        self.source = ColumnDataSource(cols, name="contexts_source")
        self.table = _table(self.source, [
            TableColumn(field="which", title="", width=55),
            TableColumn(field="value", title="value", formatter=NumberFormatter(format="0.000"), width=60),
            TableColumn(field="left", title="before", formatter=StringFormatter(text_align="right"), width=150),
            TableColumn(field="char", title="", formatter=StringFormatter(font_style="bold"), width=22),
            TableColumn(field="right", title="after", width=110),
            TableColumn(field="position", title="position", width=70)], "contexts_table", height=460)
        self.note = Div(text="", width=SIDE_W, styles={"color": "#555"})
        _on_pick(self.source, on_jump, "position")
        self.unit: str | None = None          # whose contexts the table holds
        self.layout = column(self.note, self.table)

    def show(self, view, unit: str) -> None:
        self.unit = unit
        a = view.analysis
        if a is None or a.contexts is None:
            self.source.data = {k: [] for k in self.source.data}
            self.note.text = "No contexts: this dump has not been analysed yet."
            return
        c = view.unit_rows("contexts", unit)
        if "rank" in c:
            c = c.sort_values(["which", "rank"], ascending=[False, True], kind="stable")
        parts = [snippet(view.text(p - 18, p + 16), min(p, 18), 18, 15) for p in c["position"].tolist()]
        self.source.data = {"which": c["which"].astype(str).tolist(),
                            "rank": c["rank"].to_numpy() if "rank" in c else np.zeros(len(c)),
                            "position": c["position"].to_numpy(np.int64),
                            "value": c["value"].to_numpy(np.float64),
                            "left": [p[0] for p in parts], "char": [p[1] for p in parts],
                            "right": [p[2] for p in parts]}
        self.note.text = (f"Where {unit} is highest (top), lowest (bottom) and at quantiles; "
                          f"click a row to jump there." if len(c) else f"No contexts stored for {unit}.")


class SaturationPanel:
    """Karpathy et al. 2016, fig. 3: fraction of time right- vs left-saturated, per gate unit."""

    WORDS = {"gate_i": "input", "gate_f": "forget", "gate_o": "output", "gate_r": "reset", "gate_z": "update"}

    def __init__(self, on_unit, gates=("gate_i", "gate_f", "gate_o")):
        """``gates``: the dump's sigmoid gates, one panel each (an LSTM's i, f, o; a GRU's r, z)."""
        self.sources, self.current, figs = {}, {}, []
        for gate in gates:
            src = ColumnDataSource({"x": [], "y": [], "unit": [], "color": [], "layer": []},
                                   name=f"saturation_{gate}")
            cur = ColumnDataSource({"x": [], "y": []})
            fig = figure(width=SIDE_W // 3, height=SIDE_W // 3 + 20, x_range=Range1d(-0.03, 1.03),
                         y_range=Range1d(-0.03, 1.03), tools="hover", toolbar_location=None,
                         title=f"{gate} ({self.WORDS[gate]})",
                         tooltips=[("unit", "@unit"), ("right-sat.", "@x{0.00}"), ("left-sat.", "@y{0.00}")],
                         min_border=2, name=f"saturation_fig_{gate}")
            fig.line([0, 1], [1, 0], line_color="#dddddd")
            dots = fig.scatter(x="x", y="y", color="color", source=src, size=5, alpha=0.7)
            fig.scatter(x="x", y="y", source=cur, size=12, fill_color=None, line_color="#000000", line_width=2)
            fig.add_tools(TapTool(renderers=[dots]))
            fig.xaxis.axis_label = "right-saturated" if gate in ("gate_f", "gate_z") else ""
            fig.yaxis.axis_label = "left-saturated" if gate == gates[0] else ""
            fig.title.text_font_size = "11px"
            _on_pick(src, on_unit, "unit")
            self.sources[gate], self.current[gate] = src, cur
            figs.append(fig)
        self.note = Div(text="", width=SIDE_W, styles={"color": "#555"})
        self.layout = column(row(*figs), self.note) if figs else column(self.note)

    def show(self, saturation: pd.DataFrame | None) -> None:
        if not self.sources:
            self.note.text = "This model's cell has no sigmoid gates (a vanilla RNN records h only)."
            return
        if saturation is None:
            self.note.text = "No gate saturation: this dump has not been analysed yet."
            return
        layers = [parse_point(p)[0] for p in saturation["point"]]
        kinds = [parse_point(p)[1] for p in saturation["point"]]
        df = saturation.assign(layer=layers, kind=kinds)
        for gate, src in self.sources.items():
            d = df[df["kind"] == gate]
            src.data = {"x": d["frac_right"].to_numpy(np.float64), "y": d["frac_left"].to_numpy(np.float64),
                        "unit": [f"{p}[{i}]" for p, i in zip(d["point"], d["index"])],
                        "color": [Category10_10[lay % 10] for lay in d["layer"]],
                        "layer": d["layer"].to_numpy()}
        legend = " ".join(f'<span style="color:{Category10_10[i % 10]}">● layer {i}</span>'
                          for i in sorted(set(layers)))
        self.note.text = (f"{legend}<br>Gate activation &lt; 0.1 is left-saturated, &gt; 0.9 right-saturated. "
                          f"Click a dot to show that unit.")

    def mark(self, unit: str) -> None:
        for gate, src in self.sources.items():
            units = src.data["unit"]
            hit = [i for i, u in enumerate(units) if u == unit]
            x, y = np.asarray(src.data["x"]), np.asarray(src.data["y"])
            self.current[gate].data = {"x": x[hit], "y": y[hit]}


class ExportPanel:
    def __init__(self):
        self.format = Select(title="Format", options=["svg", "html", "png"], value="svg", width=100,
                             name="export_format")
        self.button = Button(label="Export the visible text", button_type="primary", width=200,
                             name="export_button")
        self.note = Div(text="Writes the rows now visible, coloured by the shown unit, with a colour bar, "
                        "next to the dump (never over an existing file); then the page can download it.", width=SIDE_W,
                        styles={"color": "#555"}, name="export_note")
        # The written file, base64 in the page, saved by the browser on a click (no server route needed).
        self.payload = Div(text="", visible=False, name="export_payload")
        self.download = Button(label="Download it", width=200, disabled=True, name="export_download")
        self.download.js_on_click(CustomJS(args={"payload": self.payload, "button": self.download}, code="""
            const bytes = Uint8Array.from(atob(payload.text), c => c.charCodeAt(0));
            const name = button.tags[0];
            const type = {svg: 'image/svg+xml', html: 'text/html', png: 'image/png'}[name.split('.').pop()];
            const a = document.createElement('a');
            a.href = URL.createObjectURL(new Blob([bytes], {type}));
            a.download = name;
            document.body.appendChild(a); a.click(); a.remove();"""))
        self.layout = column(row(self.format, self.button), self.note, self.download, self.payload)

    def offer(self, path) -> None:
        """Let the page download the file just written."""
        import base64
        from pathlib import Path
        path = Path(path)
        self.payload.text = base64.b64encode(path.read_bytes()).decode()
        self.download.update(tags=[path.name], label=f"Download {path.name}", disabled=False)
