"""rnnviz serve, without a browser: build the app's document on a small dump, drive the
widgets as a user would, and check what the models would show."""
import hashlib
import os
import re
import socket
import subprocess
import sys
import types
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pandas as pd
import pytest
from bokeh.document import Document
from bokeh.document.events import ColumnDataChangedEvent, ModelChangedEvent
from bokeh.events import ButtonClick

import rnnviz
from dumpfactory import write_synthetic_dump
from rnnviz.app.document import make_doc
from rnnviz.app.server import make_server
from rnnviz.app.store import open_view
from rnnviz.errors import RnnvizError
from rnnviz.export import export_span, free_name
from rnnviz.render import colours
from rnnviz.render.layout import grid

H = 8
WORD = "self"          # layer0.h units 2 and 5 fire together on every char of every "self"
PLANTED = (2, 5)


def write_app_dump(path, text_file, analysis=True):
    """A 2-layer x 8-unit dump of a stdlib file in two sources, with planted units and an analysis."""
    text = text_file.read_text()[:8000]
    n = len(text)
    rng = np.random.default_rng(1)
    states = {f"layer{l}.{k}": rng.normal(0, 0.1, (n, H)).astype(np.float32)
              for l in range(2) for k in ("c", "h", "gate_i", "gate_f", "gate_g", "gate_o")}
    for k in ("gate_i", "gate_f", "gate_o"):
        for l in range(2):
            states[f"layer{l}.{k}"] = 1 / (1 + np.exp(-8 * states[f"layer{l}.{k}"]))
    in_word = np.zeros(n, bool)
    for m in re.finditer(WORD, text):
        in_word[m.start():m.end()] = True
    for u in PLANTED:
        states["layer0.h"][:, u] = np.where(in_word, 0.9, -0.5)
    column = np.array([i - text.rfind("\n", 0, i) - 1 for i in range(n)], np.float32)
    states["layer1.c"][:, 3] = column / 10                       # a line-position counter
    write_synthetic_dump(path, text, states, sources=[("first.py", 3000), ("second.py", n - 3000)])
    if analysis:
        add_analysis(path, states, {"in_self": in_word.astype(np.float32), "column": column})
    return text, states


def add_analysis(path, states, features):
    """Write /analysis the way docs/dump-format.md describes it."""
    rows, sat, ctx = [], [], []
    for point, values in states.items():
        layer, kind = int(point[5]), point.split(".")[1]
        for i in range(H):
            unit = f"{point}[{i}]"
            for name, feat in features.items():
                score = float(np.corrcoef(values[:, i], feat)[0, 1])
                rows.append(dict(feature=name, feature_kind="continuous", unit=unit, point=point,
                                 layer=layer, kind=kind, index=i, score=score))
            order = np.argsort(values[:, i])
            ctx += [dict(unit=unit, which="top", rank=r, position=int(p), value=float(values[p, i]))
                    for r, p in enumerate(order[::-1][:5])]
            ctx += [dict(unit=unit, which="bottom", rank=r, position=int(p), value=float(values[p, i]))
                    for r, p in enumerate(order[:5])]
            if kind in ("gate_i", "gate_f", "gate_o"):
                sat.append(dict(point=point, layer=layer, gate=kind, index=i,
                                frac_left=float((values[:, i] < 0.1).mean()),
                                frac_right=float((values[:, i] > 0.9).mean())))
    with rnnviz.open(path, "r+") as d:
        d.write_analysis(features=[(name, feat, "continuous", "") for name, feat in features.items()],
                         tables={"ranking": pd.DataFrame(rows), "saturation": pd.DataFrame(sat),
                                 "contexts": pd.DataFrame(ctx)}, options={})


@pytest.fixture
def dump(tmp_path, stdlib_text_file):
    path = tmp_path / "small.h5"
    text, states = write_app_dump(path, stdlib_text_file)
    return path, text, states


@pytest.fixture
def plain_dump(tmp_path, stdlib_text_file):
    path = tmp_path / "plain.h5"
    text, states = write_app_dump(path, stdlib_text_file, analysis=False)
    return path, text, states


def new_app(path, *more, unit=None):
    doc = Document()
    return doc, make_doc(doc, [str(path), *map(str, more)], initial_unit=unit)


def shown_values(app):
    return np.asarray(app.text.source.data["v"])


def window(app):
    return app.start, app.end


def test_switching_unit_sends_only_the_new_values(dump):
    path, text, states = dump
    doc, app = new_app(path)
    events = []
    doc.on_change(events.append)
    app.controls.layer.value = "1"
    app.controls.kind.value = "c"
    app.controls.index.value = 3
    start, end = window(app)
    assert app.unit == "layer1.c[3]"
    np.testing.assert_allclose(shown_values(app), states["layer1.c"][start:end, 3])
    # Text, positions and predictions were not sent again: only the value column changed.
    changed_cols = {c for e in events if isinstance(e, ColumnDataChangedEvent) and e.model is app.text.source
                    for c in e.cols}
    replaced = [e for e in events if isinstance(e, ModelChangedEvent) and e.model is app.text.source]
    assert changed_cols == {"v"} and not replaced
    assert "".join(ch if ch else " " for ch in app.text.source.data["raw"][:4]) != ""


def test_colour_map_follows_the_kind(dump):
    path, _, states = dump
    _, app = new_app(path, unit="layer0.gate_f[1]")
    assert app.text.mapper.palette == colours.SEQUENTIAL
    assert (app.text.mapper.low, app.text.mapper.high) == (0.0, 1.0)
    # h and c: the unit's 1st..99th percentile over the whole text (this analysis has no
    # /analysis/units: computed on opening), the same in every window. The planted word unit
    # is -0.5 / +0.9: a diverging map symmetric about zero.
    app.select_unit_name("layer0.h[2]")
    assert app.text.mapper.palette == colours.DIVERGING
    assert (app.text.mapper.low, app.text.mapper.high) == pytest.approx((-0.9, 0.9), abs=1e-6)
    assert "computed on opening" in app.controls.legend.text
    # The line-position counter is >= 0: one-signed, a sequential map from white at zero.
    app.select_unit_name("layer1.c[3]")
    column = states["layer1.c"][:, 3]
    first = (app.text.mapper.low, app.text.mapper.high)
    assert app.text.mapper.palette == colours.POSITIVE
    assert first == pytest.approx((0.0, np.percentile(column, 99)))
    app.load_window(app.end)                                      # the next page
    assert (app.text.mapper.low, app.text.mapper.high) == first
    app.controls.scale.value = "window"
    shown = column[app.start:app.end]
    assert app.text.mapper.high == pytest.approx(np.percentile(shown, 99))
    assert "changes with the window" in app.controls.legend.text
    app.controls.scale.value = "whole text"
    assert app.text.mapper.high == pytest.approx(column.max())
    app.controls.scale.value = "fixed"
    assert (app.text.mapper.low, app.text.mapper.high) == (-colours.C_FIXED, colours.C_FIXED)
    assert app.text.mapper.palette == colours.DIVERGING


def test_paging_jumping_and_sources(dump):
    path, text, states = dump
    _, app = new_app(path)
    first = window(app)
    assert first[0] == 0 and text[first[1] - 1] == "\n"          # windows end at a line end
    app.controls.next_page._trigger_event(ButtonClick(app.controls.next_page))
    assert app.start == first[1]
    assert "".join(app.text.source.data["raw"][:3]) == "".join(
        {"\n": "\\n (newline)", " ": "␣ (space)"}.get(c, c) for c in text[app.start:app.start + 3])
    app.controls.prev_page._trigger_event(ButtonClick(app.controls.prev_page))
    assert app.start == 0
    app.controls.position.value = 6500
    assert app.start <= 6500 < app.end
    assert list(app.text.marks.data["x"]) == [app.text.source.data["x"][6500 - app.start]]
    np.testing.assert_allclose(shown_values(app), states[app.point][app.start:app.end, app.index])
    app.controls.source.value = "0"
    assert app.start == 0 and app.controls.source.value == "0"
    app.controls.source.value = "1"
    assert app.start == 3000
    # The second source starts on a row of its own, under a rule with its name.
    assert list(app.text.seps.data["name"]) == ["second.py"]
    app.controls.window.value = "5000"
    assert len(shown_values(app)) == app.end - app.start > 4000


def test_position_beyond_the_text_is_a_visible_message(dump):
    path, *_ = dump
    _, app = new_app(path)
    before = window(app)
    app.controls.position.value = 10 ** 7
    assert "outside the text" in app.controls.status.text and "8,000 chars" in app.controls.status.text
    assert window(app) == before


def test_search_jumps_through_matches(dump):
    path, text, _ = dump
    _, app = new_app(path)
    app.controls.search.value = "def "
    assert len(app.nav.match_starts) == text.count("def ")
    first = int(app.nav.match_starts[0])
    assert app.start <= first < app.end and f"1 of {text.count('def ')}" in app.controls.match_info.text
    app.controls.next_match._trigger_event(ButtonClick(app.controls.next_match))
    assert "match 2 of" in app.controls.match_info.text
    app.controls.search_opts.active = [0, 1]                     # regex, case-sensitive
    app.controls.search.value = r"^class \w+"
    assert list(app.nav.match_starts) == [m.start() for m in re.finditer(r"^class \w+", text, re.M)]
    app.controls.search.value = "[unclosed"
    assert "does not compile" in app.controls.status.text


def test_ranking_features_contexts_and_saturation(dump):
    path, text, states = dump
    _, app = new_app(path)
    app.ranking.feature.value = "in_self"
    ranked = list(app.ranking.source.data["unit"])
    assert set(ranked[:2]) == {f"layer0.h[{u}]" for u in PLANTED}
    # The feature shows as a track under the characters, aligned with them.
    with h5py.File(path) as f:
        feat = f["analysis/features/in_self"][app.start:app.end]
    np.testing.assert_array_equal(np.asarray(app.text.source.data["f"]), feat)
    app.ranking.source.selected.indices = [1]                     # click the second row
    assert app.unit == ranked[1]
    app.tabs.active = 1                                           # open "Top contexts"
    top = app.contexts.source.data
    assert top["which"][0] == "top" and top["char"][0] in WORD
    app.contexts.source.selected.indices = [7]                    # a bottom context
    jumped = int(top["position"][7])
    assert app.start <= jumped < app.end and app.text.marks.data["x"]
    gate_f = app.saturation.sources["gate_f"]
    assert len(gate_f.data["unit"]) == 2 * H
    gate_f.selected.indices = [3]
    assert app.unit == gate_f.data["unit"][3] and len(app.saturation.current["gate_f"].data["x"]) == 1


def test_select_and_match_find_the_planted_units(dump):
    path, text, _ = dump
    _, app = new_app(path, unit="layer0.h[0]")
    at = text.index(WORD)
    app.set_span((at, at + len(WORD)))                 # the shown unit's layer and kind by default
    assert sorted(app.discover.units.data["unit"]) == [f"layer0.h[{u}]" for u in PLANTED]
    app.discover.find._trigger_event(ButtonClick(app.discover.find))
    found = list(app.discover.matches.data["start"])
    others = [m.start() for m in re.finditer(WORD, text)][1:]
    assert found and set(found) <= set(others) and len(found) == min(50, len(others))
    assert set(app.discover.matches.data["length"]) == {len(WORD)}
    # A box selection spans its first to its last character, and exactly those are outlined.
    app.text.source.selected.indices = [12, 10, 11]
    assert app.discover.span() == (app.start + 10, app.start + 13)
    assert app.text.source.selected.indices == [] and app.text.span.data["w"] == [3.0]
    assert not len(app.discover.matches.data["start"])       # the old matches went with the old span


def test_without_analysis_the_app_says_so_and_runs_it(plain_dump, monkeypatch):
    path, _, states = plain_dump
    doc, app = new_app(path)
    assert "no analysis yet" in app.banner.text and app.run_analysis.visible
    assert not app.ranking.source.data["unit"]
    calls = []

    def fake_analyze(p):       # stands in for rnnviz.analyze.analyze_dump
        calls.append(p)
        add_analysis(p, states, {"in_self": np.arange(8000, dtype=np.float32) % 7})
    monkeypatch.setitem(sys.modules, "rnnviz.analyze", types.SimpleNamespace(analyze_dump=fake_analyze))
    app.run_analysis._trigger_event(ButtonClick(app.run_analysis))
    assert calls == [str(path)]
    table = doc.select_one({"name": "ranking_source"})
    assert len(table.data["unit"]) > 0
    assert not doc.select_one({"name": "run_analysis"}).visible


def test_tabs_share_one_open_file_and_nothing_is_written(dump):
    path, *_ = dump
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _, a = new_app(path)
    _, b = new_app(path)
    assert a.view is b.view is open_view(path)
    a.select_unit_name("layer1.gate_o[7]")
    b.controls.search.value = "import"
    a.set_span((100, 104))
    a.discover.find._trigger_event(ButtonClick(a.discover.find))
    assert b.unit != a.unit
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest


def test_several_dumps_switch_in_the_app(dump, plain_dump):
    doc, app = new_app(dump[0], plain_dump[0], unit="layer1.c[3]")
    assert app.controls.dump.visible
    app.controls.dump.value = "1"
    title = doc.select_one({"name": "title"}).text
    assert "plain.h5" in title and "small.h5" not in title


def test_bad_dumps_and_units_are_refused_clearly(tmp_path, dump):
    path, *_ = dump
    notes = tmp_path / "notes.h5"
    notes.write_text("not a dump")
    with pytest.raises(RnnvizError, match="expected an rnnviz dump"):
        open_view(notes)
    broken = tmp_path / "broken.h5"
    broken.write_bytes(path.read_bytes())
    with h5py.File(broken, "a") as f:
        del f["predictions/topk_ids"]
    with pytest.raises(RnnvizError, match="missing /predictions/topk_ids"):
        open_view(broken)
    newer = tmp_path / "newer.h5"
    newer.write_bytes(path.read_bytes())
    with h5py.File(newer, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(RnnvizError, match="schema"):
        make_server([newer], port=0)
    for unit, message in [("layer7.c[0]", "recorded"), ("layer0.c[99]", "out of range"), ("c17", "expected")]:
        with pytest.raises(RnnvizError, match=message):
            make_server([path], port=0, initial_unit=unit)


def test_cli_reports_bad_input_and_busy_port_on_one_line(tmp_path, dump):
    path, *_ = dump
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    r = subprocess.run([sys.executable, "-m", "rnnviz", "serve", str(notes), "--no-browser"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr.strip().startswith("Error:") and len(r.stderr.strip().splitlines()) == 1
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "rnnviz", "serve", str(path), "--no-browser", "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and f"port {port}" in r.stderr and "already in use" in r.stderr
    assert "Traceback" not in r.stderr


def test_export_writes_svg_and_html_with_the_apps_colours(dump, tmp_path):
    path, text, states = dump
    svg = export_span(path, "layer0.h[2]", 0, 300, tmp_path / "span.svg")
    root = ET.parse(svg).getroot()
    fills = [r.get("fill") for r in root.iter("{http://www.w3.org/2000/svg}rect")][1:301]
    values = states["layer0.h"][:300, 2]
    whole = states["layer0.h"][:, 2]            # the unit's robust range over the whole text
    m = max(-np.percentile(whole, 1), np.percentile(whole, 99))
    assert fills == colours.to_hex(values, -m, m, colours.DIVERGING)
    glyphs = "".join(t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text"))
    assert "import" in glyphs and "layer0.h[2]" in glyphs
    page = export_span(path, "layer0.h[2]", 0, 300, tmp_path / "span.html").read_text()
    assert page.count("<span style=\"background:") == 300 and "<script" not in page
    with pytest.raises(RnnvizError, match="exists"):
        export_span(path, "layer0.h[2]", 0, 300, tmp_path / "span.svg")
    assert free_name(tmp_path / "span.h5", "layer0.h[2]", 0, 300, "svg").name == "span_layer0.h-2_0-300.svg"
    with pytest.raises(RnnvizError, match="start < end"):
        export_span(path, "layer0.h[2]", 7990, 9000, tmp_path / "late.svg")


def test_export_button_writes_beside_the_dump_without_overwriting(dump):
    path, *_ = dump
    _, app = new_app(path, unit="layer0.h[5]")
    for _ in range(2):
        app.export.button._trigger_event(ButtonClick(app.export.button))
    start, end = app.text.visible_span()
    written = {p.name for p in path.parent.glob("small_layer0.h-5_*.svg")}
    assert written == {f"small_layer0.h-5_{start}-{end}.svg", f"small_layer0.h-5_{start}-{end}-2.svg"}
    assert f"{start}-{end}-2.svg" in app.export.note.text
    import base64                                      # and the page can download what was written
    assert base64.b64decode(app.export.payload.text) == (path.parent / f"small_layer0.h-5_{start}-{end}-2.svg").read_bytes()
    assert app.export.download.tags == [f"small_layer0.h-5_{start}-{end}-2.svg"] and not app.export.download.disabled


def test_grid_keeps_lines_tabs_and_sources_apart():
    g = grid("ab\n\tc" + "x" * 12, wrap=8, tab=4, breaks=[6])
    assert list(g.row[:3]) == [0, 0, 0] and (g.row[3], g.col[3], g.width[3]) == (1, 0, 4)
    assert g.col[4] == 4                                            # after the tab stop
    assert g.row[6] == 2 and g.col[6] == 0                          # a source starts a new row
    assert g.rows == 4                                              # the long line wrapped at 8


def test_ranking_shows_auc_or_rho_z_p_and_beats_null(tmp_path, stdlib_text_file):
    path = tmp_path / "ranked.h5"
    write_app_dump(path, stdlib_text_file, analysis=False)
    from rnnviz.analyze import analyze_dump
    analyze_dump(path, max_chars=None, features=["in_string", "line_pos"], shifts=20)
    _, app = new_app(path)
    d = app.ranking.source.data
    assert {"stat", "z", "p", "beats"} <= set(d)
    rows = list(zip(d["feature"], d["stat"], d["z"], d["p"], d["beats"]))
    binary = [r for r in rows if r[0] == "in_string"]
    counted = [r for r in rows if r[0] == "line_pos"]
    assert re.fullmatch(r"0\.\d{3} \([+−]\)", binary[0][1]) and counted[0][1].startswith("ρ ")
    assert np.isfinite(rows[0][2]) and 0 < rows[0][3] <= 1
    # What each column means, as hover text on its name.
    note = app.ranking.note.text
    assert re.search(r'title="On/off features: the chance[^"]*"[^>]*>AUC</span>', note)
    assert re.search(r'title="The score against circular shifts[^"]*"[^>]*>z</span>', note)


def test_small_things_a_user_notices(dump, tmp_path):
    path, text, _ = dump
    _, app = new_app(path)
    app.controls.layer.value, app.controls.kind.value = "0", "h"
    app.controls.index.value = 300                        # past the last unit: the last one, said so
    assert app.unit == f"layer0.h[{H - 1}]" and app.controls.index.value == H - 1
    before = dict(app.controls.status.styles)
    app.error("a long message " * 20)
    assert app.controls.status.styles["height"] == before["height"] == "20px"   # the page does not move
    app.controls.position.value = 3100                     # in second.py, in a window that starts in first.py
    assert app.controls.source.value == "1"
    out = export_span(path, "layer0.h[2]", 0, 300, tmp_path / "shared.svg")
    umask = os.umask(0o022)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_value_plot_shows_the_rows_in_view_and_a_click_marks_a_char(dump):
    from bokeh.events import Tap
    path, *_ = dump
    _, app = new_app(path)
    xr = app.text.plot.x_range
    start, end = app.text.visible_span()
    assert (xr.start, xr.end) == (start - 0.5, end - 0.5)
    app.text.figure.y_range.update(start=-40.5, end=-8.5)           # the wheel scrolls 9 rows down
    start2, end2 = app.text.visible_span()
    assert start2 > start and (xr.start, xr.end) == (start2 - 0.5, end2 - 0.5)
    at = start2 + 5
    app.text.plot._trigger_event(Tap(app.text.plot, sx=0, sy=0, x=at + 0.3, y=0.0))
    assert app.text.marks.data["w"] == [1.0] and app.text.plot_marks.visible
    assert app.text.plot_marks.left == at - 0.5
    assert app.text.figure.y_range.end == -8.5                      # the view stays where it was
