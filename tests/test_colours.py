"""Colour scales from each unit's distribution over the whole text, the heatmap of several
units and the prediction strip, in the app's document (no browser: see test_appview.py)."""
import numpy as np
import pytest

import rnnviz
from rnnviz.analyze import analyze_dump
from rnnviz.app.store import DumpView
from rnnviz.render import colours
from test_app import H, new_app, write_app_dump
from dumpfactory import write_synthetic_dump


def test_maps_are_readable_without_hue():
    """Colour-blind-safe and readable under black text: lightness rises monotonically towards white
    (from each end of the diverging map to its middle), and no colour is darker than L* 55."""
    for name, palette in colours.PALETTES.items():
        light = np.array([colours.lightness(c) for c in palette])
        if name == "diverging":
            mid = len(light) // 2
            assert np.all(np.diff(light[:mid]) >= -0.5) and np.all(np.diff(light[mid:]) <= 0.5)
        elif name == "negative":
            assert np.all(np.diff(light) >= -0.5)
        else:
            assert np.all(np.diff(light) <= 0.5)
        assert light.min() > 55 and light.max() > 95
    for name, palette in colours.CATEGORICAL.items():      # categories: distinct, readable under black text
        assert len(set(palette)) == len(palette)
        assert min(colours.lightness(c) for c in palette) > 55, name


def test_one_signed_units_get_a_sequential_map_and_gates_keep_their_range():
    stats = lambda lo, hi: {"p1": lo, "p99": hi, "min": lo, "max": hi, "n": 100}  # noqa: E731
    s = colours.unit_scale("c", None, "auto", stats(-35.7, -0.4))                 # the line-position cell
    assert (s.map, s.low, s.high) == ("negative", -35.7, 0.0) and s.palette[0] == colours.NEGATIVE[0]
    s = colours.unit_scale("h", None, "auto", stats(0.02, 0.8))
    assert (s.map, s.low, s.high) == ("positive", 0.0, 0.8)
    s = colours.unit_scale("c", None, "auto", stats(-1.5, 3.0))                   # crosses zero: diverging
    assert (s.map, s.low, s.high) == ("diverging", -3.0, 3.0)
    assert "1st … 99th percentile over all 100 chars" in s.legend()
    sampled = colours.unit_scale("c", None, "auto", {**stats(-1.5, 3.0), "of": 1000})
    assert "100 sampled of 1,000 chars" in sampled.legend()
    assert colours.unit_scale("gate_f", None, "auto", stats(0.2, 0.3)).map == "gate"
    assert (colours.unit_scale("gate_f", None, "auto", stats(0.2, 0.3)).low,
            colours.unit_scale("gate_f", None, "auto", stats(0.2, 0.3)).high) == (0.0, 1.0)
    tanh_gate = colours.unit_scale("gate_g", None, "auto", stats(0.2, 0.3))
    assert (tanh_gate.low, tanh_gate.high, tanh_gate.map) == (-1.0, 1.0, "diverging")


def test_percentiles_computed_without_an_analysis_equal_the_stored_ones(tmp_path):
    """The app colours a dump that has no analysis exactly as after `rnnviz analyze`."""
    rng = np.random.default_rng(3)
    text = "def f(x):\n    return 'a' + x  # c\n" * 120
    n = len(text)
    states = {"layer0.c": (rng.standard_normal((n, 6)) * [0.1, 1, 3, 10, 0.5, 2]).astype(np.float32),
              "layer0.h": np.tanh(rng.standard_normal((n, 6))).astype(np.float32)}
    states["layer0.c"][::7, 1] = np.inf                      # non-finite values are left out alike
    path = tmp_path / "f16.h5"
    write_synthetic_dump(path, text, states, dtype="float16")
    plain = DumpView(path)
    computed = {f"layer0.{k}[{i}]": plain.unit_stats(f"layer0.{k}[{i}]") for k in ("c", "h") for i in range(6)}
    assert all(s.get("computed") for s in computed.values())
    with rnnviz.open(path) as d:                             # the export's reader computes the same
        assert d.unit_stats("layer0.c[1]") == computed["layer0.c[1]"]
    plain.close()
    with rnnviz.open(path) as d:
        assert d.analysis is None                            # the view wrote nothing
    analyze_dump(path, contexts=2, shifts=9)
    analysed = DumpView(path)
    for unit, c in computed.items():
        s = analysed.unit_stats(unit)
        assert not s.get("computed")
        for key in ("p1", "p50", "p99", "min", "max", "n"):
            assert s[key] == pytest.approx(c[key], rel=1e-12, abs=1e-12), (unit, key)
    column = states["layer0.c"][:, 3].astype(np.float16).astype(np.float64)
    assert computed["layer0.c[3]"]["p99"] == pytest.approx(np.percentile(column, 99))


def test_heatmap_rows_come_from_names_the_ranking_and_select_and_match(tmp_path, stdlib_text_file):
    path = tmp_path / "app.h5"
    text, states = write_app_dump(path, stdlib_text_file)
    _, app = new_app(path, unit="layer0.h[2]")
    app.heatmap.input.value = "layer1.c[3], layer0.h[2] layer0.gate_f[1]"
    assert app.heatmap.units == ["layer1.c[3]", "layer0.h[2]", "layer0.gate_f[1]"]
    assert app.heatmap.figure.visible and app.heatmap.figure.frame_height == 3 * 8
    for i, unit in enumerate(app.heatmap.units):
        src = app.heatmap.sources[i].data
        point, index = unit.split("[")[0], int(unit[:-1].split("[")[1])
        np.testing.assert_array_equal(src["image"][0][0], states[point][app.start:app.end, index])
        assert src["x"] == [app.start - 0.5] and src["dw"] == [app.end - app.start]
    assert (app.heatmap.mappers[2].low, app.heatmap.mappers[2].high) == (0.0, 1.0)       # a gate's row
    # A page turn refills the rows with the new window.
    app.load_window(app.end)                                      # the next page
    np.testing.assert_array_equal(app.heatmap.sources[0].data["image"][0][0], states["layer1.c"][app.start:app.end, 3])
    # A bad name: one error line, the rows stay.
    app.heatmap.input.value = "layer9.c[1]"
    assert "layer9.c" in app.controls.status.text and len(app.heatmap.units) == 3
    # Several rows picked in the ranking (ctrl/shift-click), or its top 8.
    picked = app.ranking.source.data["unit"][:2]
    app.ranking.source.selected.indices = [0, 1]
    assert app.heatmap.units == list(dict.fromkeys(picked))
    app.heatmap.top._trigger_event(__import__("bokeh.events", fromlist=["ButtonClick"]).ButtonClick(app.heatmap.top))
    assert len(app.heatmap.units) == 8
    # Select & match's selected units.
    app.set_span((text.index("self"), text.index("self") + 4))
    assert app.selectmatch.selected
    app.heat_from_selection()
    assert app.heatmap.units[0] == f"{app.selectmatch.selected[0][0]}[{app.selectmatch.selected[0][1]}]"
    app.heatmap.clear._trigger_event(__import__("bokeh.events", fromlist=["ButtonClick"]).ButtonClick(app.heatmap.clear))
    assert app.heatmap.units == [] and not app.heatmap.figure.visible
    assert all(len(s.data["image"]) == 0 for s in app.heatmap.sources)


def test_prediction_strip_shows_the_top_guesses_under_each_row(tmp_path, stdlib_text_file):
    path = tmp_path / "app.h5"
    text, _ = write_app_dump(path, stdlib_text_file)
    _, app = new_app(path, unit="layer0.h[2]")
    assert len(app.text.strip.source.data["x"]) == 0               # off: nothing sent
    rows_before = app.text.rows_visible
    app.controls.strip.value = "3"
    d, n = app.text.strip.source.data, app.end - app.start
    assert len(d["ch"]) == 3 * n
    with rnnviz.open(path) as dump:
        ids, probs, vocab = dump.topk_ids[app.start:app.end], dump.topk_probs[app.start:app.end], dump.vocab
    i = 10                                                          # the 11th char's guesses, most likely first
    assert list(d["rank"][3 * i:3 * i + 3]) == [1, 2, 3]
    np.testing.assert_allclose(d["p"][3 * i:3 * i + 3], probs[i, :3])
    assert [c for c in d["ch"][3 * i:3 * i + 3]] == [vocab[j] if vocab[j].strip() else d["ch"][3 * i + r]
                                                      for r, j in enumerate(ids[i, :3])]
    truth = text[app.start + i + 1]
    assert [h == 1 for h in d["hit"][3 * i:3 * i + 3]] == [vocab[j] == truth for j in ids[i, :3]]
    # Under its row: each guess below the text, inside the row's band; fewer rows fit.
    y_text = app.text.source.data["y"][i]
    assert all(y_text - 0.5 < y < y_text + 0.5 - app.text.text_share(3) for y in d["y"][3 * i:3 * i + 3])
    assert app.text.rows_visible < rows_before
    app.controls.strip.value = "0"
    assert len(app.text.strip.source.data["x"]) == 0 and app.text.rows_visible == rows_before


def test_contexts_are_coloured_snippets_with_the_key_char_centred(tmp_path, stdlib_text_file):
    from rnnviz.app.snippets import SIDE
    path = tmp_path / "app.h5"
    text, states = write_app_dump(path, stdlib_text_file)
    _, app = new_app(path, unit="layer0.h[2]")
    app.tabs.active = 1                                               # the Contexts tab
    rows, chars = app.contexts.source.data, app.contexts.chars.data
    assert rows["label"][:2] == ["top 0", "top 1"] and rows["label"][-1].startswith("bottom")
    values = states["layer0.h"][:, 2]
    for r, p in enumerate(rows["position"]):
        on_row = np.asarray(chars["y"]) == -r
        xs = np.asarray(chars["x"])[on_row]
        key = int(np.flatnonzero(on_row)[np.flatnonzero(xs == SIDE)[0]])
        assert rows["char"][r] == text[p] and app.contexts.keys.data["x"][r] == SIDE
        assert chars["fill"][key] == app.colour.colours(values[p:p + 1])[0]      # the text's colours
        assert len(xs) == min(p, SIDE) + 1 + min(len(text) - p - 1, SIDE)
    app.contexts.source.selected.indices = [len(rows["position"]) - 1]          # click: jump there
    assert app.start <= rows["position"][-1] < app.end


def test_a_click_in_the_saturation_view_picks_the_nearest_dot(tmp_path, stdlib_text_file):
    path = tmp_path / "app.h5"
    write_app_dump(path, stdlib_text_file)
    _, app = new_app(path, unit="layer0.h[2]")
    d = app.saturation.sources["gate_o"].data
    x, y = np.asarray(d["x"]), np.asarray(d["y"])
    target = int(np.argmax(x))
    app.saturation.pick_nearest("gate_o", float(x[target]) + 0.01, float(y[target]) - 0.01)
    assert app.unit == d["unit"][target]
    assert app.saturation.choose.active == 2 and app.saturation.figures["gate_o"].visible
    assert app.saturation.current["gate_o"].data["unit"] == [app.unit]
    assert not app.saturation.figures["gate_i"].visible


def test_exports_hold_the_heatmap_the_guesses_and_the_legend(tmp_path, stdlib_text_file):
    import xml.etree.ElementTree as ET
    from bokeh.events import ButtonClick
    path = tmp_path / "app.h5"
    text, states = write_app_dump(path, stdlib_text_file)
    _, app = new_app(path, unit="layer1.c[3]")
    app.heatmap.input.value = "layer0.h[2], layer0.gate_f[1]"
    app.controls.strip.value = "2"
    app.export.button._trigger_event(ButtonClick(app.export.button))
    svg = sorted(tmp_path.glob("app_layer1.c-3_*.svg"))[0]
    start, end = (int(x) for x in svg.stem.rsplit("_", 1)[1].split("-"))
    root = ET.parse(svg).getroot()
    texts = [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]
    assert any(t.startswith("colour: ") and "1st … 99th percentile" in t for t in texts)
    assert any(t.startswith("layer0.h[2] (") for t in texts) and any(t.startswith("layer0.gate_f[1] (0 … 1") for t in texts)
    n = end - start
    with rnnviz.open(path) as d:
        ids = d.topk_ids[start:end, :2]
        vocab = d.vocab
    guess_fills = [t.get("fill") for t in root.iter("{http://www.w3.org/2000/svg}text") if t.get("fill") in
                   ("#000000", "#8a8a8a")]
    assert len(guess_fills) == 2 * n                                   # two guesses under every char
    hits = sum(vocab[j] == text[start + i + 1] for i in range(n - 1) for j in ids[i])
    assert guess_fills.count("#000000") == hits
    # The heatmap row of layer0.h[2] starts with its first char's colour on the row's scale.
    rects = [r for r in root.iter("{http://www.w3.org/2000/svg}rect") if r.get("height") == "10"]
    first = app.heatmap.scales[0].colours(states["layer0.h"][start:start + 1, 2])[0]
    assert rects[0].get("fill") == first
    page = export_span_html(path, start, end, tmp_path)
    assert "<svg" in page and "layer0.gate_f[1]" in page and "<script" not in page


def export_span_html(path, start, end, tmp_path):
    from rnnviz.export import export_span
    return export_span(path, "layer1.c[3]", start, end, tmp_path / "x.html", heat_units=["layer0.h[2]", "layer0.gate_f[1]"],
                       guesses=2).read_text()
