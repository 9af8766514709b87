"""The side panels: unit ranking and export (contexts: snippets.py, saturation: saturation.py,
select & match: discover.py).

Each panel owns its widgets and a ``show_*`` method; clicks call back into the
explorer (``on_unit(name)`` / ``on_jump(position)``), which owns the state.
"""
from __future__ import annotations

import html

import numpy as np
import pandas as pd
from bokeh.layouts import column, row
from bokeh.models import (Button, ColumnDataSource, CustomJS, DataTable, Div, InlineStyleSheet, NumberFormatter,
                          Select, TableColumn)

SIDE_W = 378
MAX_RANKED = 500
_MONO_CSS = (":host { --data-table-font-size: 11px; } "
             ".slick-cell { font-family: 'DejaVu Sans Mono', Menlo, monospace; }")
ALL = "(all)"
NONE = "(none)"


def _table(source, columns, name, height=300, autosize_mode="force_fit"):
    table = DataTable(source=source, columns=columns, width=SIDE_W, height=height, index_position=None,
                      sortable=True, name=name, selectable=True, autosize_mode=autosize_mode,
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
            TableColumn(field="unit", title="unit", width=128),
            TableColumn(field="feature", title="feature", width=56),
            TableColumn(field="stat", title="AUC / ρ", width=66),
            TableColumn(field="z", title="z", formatter=NumberFormatter(format="0.0", nan_format=""), width=46),
            TableColumn(field="p", title="p", formatter=NumberFormatter(format="0.000", nan_format=""), width=40),
            TableColumn(field="beats", title="> null", width=36)],
            "ranking_table", height=236, autosize_mode="none")   # the widths as given: the unit's name fits
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


class ExportPanel:
    def __init__(self):
        self.format = Select(title="Format", options=["svg", "html", "png"], value="svg", width=100,
                             name="export_format")
        self.button = Button(label="Export the visible text", button_type="primary", width=200,
                             name="export_button")
        self.note = Div(text="Writes the rows now visible, coloured by the shown unit, with its legend and "
                        "colour bar, the heatmap and the guesses when they are shown, next to the dump (never "
                        "over an existing file); then the page can download it.", width=SIDE_W,
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
