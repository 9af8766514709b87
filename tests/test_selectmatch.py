"""Select & match (LSTMVis): the pure query on arrays, the app's document, and the real app
in headless Chromium on the demo dump (`rnnviz demo`: the shipped model on the held-out
standard-library files)."""
import csv
import io
import re
import sys
from pathlib import Path

import numpy as np
import pytest
from bokeh.document import Document
from bokeh.events import ButtonClick

from rnnviz.app import urlstate
from rnnviz.app.document import make_doc
from rnnviz.app.selectmatch import COVER, Matcher, Selection, candidate_runs, on_almost_everywhere, runs, select
from rnnviz.errors import RnnvizError

# The figure's rule and counting, shared with the browser-free benchmark of the same figure.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from selectmatch_quality import TOKENS, counted_runs, first_literals, span_rule  # noqa: E402
from selectmatch_quality import figures as offline_figures  # noqa: E402


# ----- the pure query
def test_select_keeps_units_on_over_the_whole_span_and_off_before_it():
    inside = np.array([[0.5, 0.5, 0.1, -0.6], [0.6, 0.4, 0.9, -0.7]])
    before = np.array([[0.1, 0.5, 0.0, 0.0]])
    assert list(select(inside, before, before[:0], 0.3, "positive").columns) == [0]   # 1 on before, 2 dips
    neg = select(inside, before, before[:0], 0.3, "negative")
    assert list(neg.columns) == [3] and list(neg.signs) == [-1]
    both = select(inside, before[:0], before[:0], 0.3, "both")
    assert list(both.columns) == [0, 1, 3] and list(both.signs) == [1, 1, -1]
    with pytest.raises(RnnvizError, match="threshold"):
        select(inside, before, before, 0.0, "negative")


def test_by_default_a_unit_may_be_off_at_a_tenth_of_the_span():
    """Like the demo's string cell: just short of the threshold on the opening quote, on after it."""
    cell = np.array([-0.28] + [-0.9] * 11 + [-0.1] * 3 + [-0.9] * 5)       # 20 chars: 2 may be off
    inside = np.column_stack([cell, np.full(20, -0.5), cell])
    inside[:, 2][[3, 7, 12]] = 0.0                                       # off at 4 chars: 3 too many
    before = np.zeros((1, 3))
    assert COVER == 0.9
    assert list(select(inside[:12], before, before[:0], 0.3, "negative").columns) == [0, 1]   # 11 of 12 on
    assert list(select(inside, before, before[:0], 0.3, "negative").columns) == [1]           # 16 of 20 on
    assert list(select(inside, before, before[:0], 0.3, "negative", cover=0.8).columns) == [0, 1]
    assert list(select(inside[:12], before, before[:0], 0.3, "negative", cover=1.0).columns) == [1]  # LSTMVis
    assert list(select(inside[1:10], before, before[:0], 0.3, "negative").columns) == [0, 1]
    assert list(select(inside[:9], before, before[:0], 0.3, "negative").columns) == [1]       # < 10 chars: all
    with pytest.raises(RnnvizError, match="share of the span"):
        select(inside, before, before, 0.3, "negative", cover=0)


@pytest.mark.parametrize("sign", ["positive", "negative", "both"])
def test_float16_states_fire_exactly_where_their_float32_values_do(sign):
    from rnnviz.app.selectmatch import firing
    v = np.random.default_rng(3).normal(0, 1, (500, 40)).astype(np.float16)
    v[0, :4] = [0.3, -0.3, np.nan, -np.inf]
    for t in (0.3, 0.29999, 1.0, 2.5):
        np.testing.assert_array_equal(firing(v, t, sign), firing(v.astype(np.float32), t, sign))


def test_runs_are_the_maximal_stretches_of_true():
    rng = np.random.default_rng(0)
    for n in (0, 1, 2, 7, 300):
        for _ in range(20):
            mask = rng.random(n) < 0.6
            s, e = runs(mask)
            assert mask[s].all() and (e - s > 0).all() and mask.sum() == (e - s).sum()
            assert not mask[s[s > 0] - 1].any() and not mask[e[e < n]].any()      # maximal


def test_runs_are_cut_where_a_source_starts():
    s, e = runs(np.array([1, 1, 1, 1, 0, 1], bool), breaks=[2, 5])
    assert list(zip(s, e)) == [(0, 2), (2, 4), (5, 6)]


def test_candidates_go_down_the_counts_without_repeating_a_place():
    counts = np.array([0, 2, 2, 2, 1, 1, 0, 2, 2, 0, 1, 1, 1, 0, 1])
    s, e, level = candidate_runs(counts, 2)
    # [1, 6) at level 1 holds the level-2 run [1, 4): the same place, left out; [14] is too short.
    assert list(zip(s, e, level)) == [(1, 4, 2), (7, 9, 2), (10, 13, 1)]
    s, e, _ = candidate_runs(counts, 2, exclude=(7, 9))
    assert (7, 9) not in list(zip(s, e))


def test_matches_rank_by_selected_on_then_fewest_others_then_length():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 0.05, (1000, 12)).astype(np.float32)
    x[100:110, [3, 5]] = 0.9                  # the query's place
    x[300:304, [3, 5]] = 0.9                  # both on, nothing else: best
    x[400:420, [3, 5, 7]] = 0.9               # both on, one other unit on throughout
    x[500:530, [3, 5, 7]] = 0.9               # same, longer: before the 20-char one
    x[600:660, 3] = 0.9                       # only one of the two
    x[700:705, [3, 5]] = -0.9                 # the wrong sign: not a match
    sel = Selection(np.array([3, 5]), np.array([1, 1], np.int8))
    whole, streamed = Matcher(sel, 0.5, "positive", 12), Matcher(sel, 0.5, "positive", 12)
    whole.feed(x[:, [3, 5]])
    for i in range(0, 1000, 64):             # blocks that cut runs in two give the same answer
        streamed.feed(x[i:i + 64, [3, 5]])

    def rows(a, b):
        return x[a:b]
    found = whole.result(rows, exclude=(100, 110))
    assert list(zip(found.start, found.length, found.selected_on, found.others_on)) == [
        (300, 4, 2, 0), (500, 30, 2, 1), (400, 20, 2, 1), (600, 60, 1, 0)]
    assert found.equals(streamed.result(rows, exclude=(100, 110), batch=7))   # runs read in pieces
    assert found.head(2).equals(whole.result(rows, top=2, exclude=(100, 110)))
    neg = Matcher(Selection(np.array([3, 5]), np.array([-1, -1], np.int8)), 0.5, "negative", 12)
    neg.feed(x[:, [3, 5]])
    assert list(neg.result(rows).start) == [700]


def test_a_unit_is_on_almost_everywhere_when_its_percentile_is_past_the_threshold():
    signs = np.array([1, 1, -1, -1, 1])
    p1 = np.array([0.35, 0.1, -40.0, -3.0, np.nan])
    p99 = np.array([0.9, 0.8, -12.0, 0.5, np.nan])
    assert list(on_almost_everywhere(signs, p1, p99, 0.3)) == [True, False, True, False, False]


def test_address_round_trip():
    state = {"unit": "layer2.c[76]", "pos": 1200, "feature": None, "span": (1180, 1199), "thr": 0.25,
             "sign": "negative", "from": ["layer2.c", "layer1.h"], "before": 1, "after": 0, "cover": 85}
    query = urlstate.encode(state)
    assert query == ("unit=layer2.c[76]&pos=1200&span=1180-1199&thr=0.25&sign=neg&from=layer2.c,layer1.h"
                     "&before=1&after=0&cover=85")
    back, bad = urlstate.parse(dict(p.split("=", 1) for p in query.split("&")))
    assert not bad and back == {k: v for k, v in state.items() if v is not None}
    _, bad = urlstate.parse({"span": "9-3", "thr": "x", "sign": "up", "cover": "0"})
    assert len(bad) == 4


# ----- the app's document on a small dump (no browser)
@pytest.fixture
def small(tmp_path, stdlib_text_file):
    from test_app import write_app_dump
    path = tmp_path / "small.h5"
    text, states = write_app_dump(path, stdlib_text_file)
    return path, text, states


def test_new_span_replaces_old_results_and_late_answers_are_dropped(small):
    path, text, _ = small
    doc = Document()
    app = make_doc(doc, [str(path)], initial_unit="layer0.h[0]")
    at = text.index("self")
    app.set_span((at, at + 4))
    gen, work = app.selectmatch.match_job()
    old = work(lambda f: None)
    app.set_span((at + 40, at + 44))                # a new question before the answer came
    assert app.discover.units.data["unit"] != ["layer0.h[2]", "layer0.h[5]"] or "self" == text[at + 40:at + 44]
    assert not app.selectmatch.show_matches(gen, old)
    assert not len(app.discover.matches.data["start"]) and app.discover.csv.text == ""
    assert not app.discover.snippets.chars.data["x"]
    app.set_span(None)
    assert app.discover.units.data["unit"] == [] and "Drag over the text" in app.span_hint.text


def test_matches_export_as_csv_and_a_click_marks_the_run(small):
    path, text, _ = small
    app = make_doc(Document(), [str(path)], initial_unit="layer0.h[0]")
    at = text.index("self")
    app.set_span((at, at + 4))
    app.discover.find._trigger_event(ButtonClick(app.discover.find))
    rows = list(csv.DictReader(io.StringIO(app.discover.csv.text)))
    m = app.discover.matches.data
    assert [int(r["start"]) for r in rows] == list(m["start"]) and all(r["text"] == "self" for r in rows)
    assert rows[0]["selected_total"] == "2"
    assert (rows[0]["threshold"], rows[0]["sign"], rows[0]["cover"]) == ("0.3", "positive", "90")
    third = app.discover.snippets.chars.data["match"].index(2)
    app.discover.snippets.chars.selected.indices = [third]           # click the third snippet
    marks = app.text.marks.data
    assert app.start <= m["start"][2] < app.end and marks["w"] == [4.0]
    assert "span=" in app.url.text and "sign=pos" in app.url.text and "thr=0.3" in app.url.text
    assert "cover=90" in app.url.text


def test_units_on_everywhere_are_listed_but_left_out_of_the_match(tmp_path, stdlib_text_file):
    """A span at the start of a file: no char before it, so "off before" cannot rule out a unit
    that is on everywhere. The analysis's percentiles show it; it is listed and not matched."""
    from dumpfactory import write_synthetic_dump
    from rnnviz.analyze import analyze_dump
    text = stdlib_text_file.read_text()[:6000]
    rng = np.random.default_rng(2)
    states = {f"layer0.{k}": rng.normal(0, 0.05, (len(text), 4)).astype(np.float32)
              for k in ("c", "h", "gate_i", "gate_f", "gate_g", "gate_o")}
    word = np.zeros(len(text), bool)
    for m in re.finditer(r"[A-Za-z]+", text):
        word[m.start():m.end()] = True
    states["layer0.h"][:, 1] = np.where(word, 0.8, -0.2)      # on in words
    states["layer0.h"][:, 2] = 0.6                            # on everywhere
    split = next(i for i in range(3000, len(text)) if text[i].isalpha() and not text[i - 1].isalpha())
    end = split + re.match(r"[A-Za-z]+", text[split:]).end()
    path = tmp_path / "everywhere.h5"
    write_synthetic_dump(path, text, states, sources=[("a.py", split), ("b.py", len(text) - split)])
    analyze_dump(path, shifts=9)
    app = make_doc(Document(), [str(path)], initial_unit="layer0.h[1]")
    app.set_span((split, end))                                # b.py's first word
    units = app.discover.units.data
    assert units["unit"] == ["layer0.h[1]", "layer0.h[2]"] and units["everywhere"] == ["", "yes: not matched"]
    assert "on at ≥ 99% of all the text" in app.discover.note.text and "starts a file" in app.discover.note.text
    app.discover.find._trigger_event(ButtonClick(app.discover.find))
    rows = list(csv.DictReader(io.StringIO(app.discover.csv.text)))
    assert rows and all(r["selected_total"] == "1" for r in rows)
    assert "the 1 selected unit(s) not on almost everywhere fire together" in app.discover.match_note.text
    assert all(word[int(r["start"]):int(r["end"])].all() for r in rows)          # runs of the word unit alone
    assert text[:3] == '"""'                                  # a.py starts with quotes: only the everywhere-unit
    app.set_span((0, 3))
    assert app.discover.units.data["unit"] == ["layer0.h[2]"]
    with pytest.raises(RnnvizError, match="on at ≥ 99% of the text"):
        app.selectmatch.match_job()


# ----- the real app in Chromium on the demo dump
CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
BUTTONS = """
function walk(root, out) {
  for (const el of root.querySelectorAll('*')) { if (el.tagName === 'BUTTON') out.push(el); if (el.shadowRoot) walk(el.shadowRoot, out); }
  return out;
}
const b = walk(document, []).filter(b => b.textContent.includes(arguments[0]))[0]; b.click(); return true;
"""
MODEL = "return Bokeh.documents[0].get_model_by_name(arguments[0])"
DATA = "const m = Bokeh.documents[0].get_model_by_name(arguments[0]); return m ? Object.fromEntries(Object.entries(m.data).map(([k, v]) => [k, Array.from(v)])) : null"
TEXT = "return Bokeh.documents[0].get_model_by_name(arguments[0]).text"
TOP_CHAR = ("const d = Bokeh.documents[0]; const s = d.get_model_by_name('text_source').data;"
            "const top = -Math.round(0.5 - d.get_model_by_name('text_figure').y_range.end);"
            "return s.pos[s.y.findIndex(v => v === top)]")
VALUE = "const m = Bokeh.documents[0].get_model_by_name(arguments[0]); return m[arguments[1]]"


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """`rnnviz demo --no-browser` serving the held-out files; (url, dump path)."""
    from pathlib import Path
    if not (Path(CHROMIUM).exists() and Path(DRIVER).exists()):
        pytest.skip(f"needs {CHROMIUM} and {DRIVER} (Debian: apt install chromium chromium-driver)")
    from test_demo import start_demo, stop
    cwd = tmp_path_factory.mktemp("demo")
    proc, url = start_demo(cwd)
    try:
        yield url, cwd / "dumps" / "demo.h5"
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def chrome(tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    downloads = tmp_path_factory.mktemp("downloads")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1560,1250",
                f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.downloads = downloads
    try:
        yield driver
    finally:
        driver.quit()


def _wait(*args, **kwargs):
    from test_browser import _wait as wait        # test_browser needs selenium, as these tests do
    return wait(*args, **kwargs)


def _open(driver, url):
    driver.get(url)
    _wait(lambda: driver.execute_script("const d = window.Bokeh && Bokeh.documents[0]; const s = d && "
                                        "d.get_model_by_name('text_source'); return s && s.data.v.length"),
          what="the page")


def _run_match(driver):
    note = driver.execute_script(TEXT, "match_note")
    driver.execute_script(BUTTONS, "fire together")
    _wait(lambda: "run(s)" in driver.execute_script(TEXT, "match_note") or "No other run" in
          driver.execute_script(TEXT, "match_note"), timeout=120, what="the matches")
    assert driver.execute_script(TEXT, "match_note") != note
    return driver.execute_script(DATA, "match_runs")


def _match_figures(chrome, demo, feature):
    """Per held-out module: the app's top-20 matches for its first literal, counted as the issue says."""
    import rnnviz
    url, dump = demo
    with rnnviz.open(dump) as d:
        text, sources, ranking, feats = d.text, d.sources, d.ranking, d.features
    on = feats[feature].to_numpy() > 0.5
    prose = (feats["in_string"].to_numpy() > 0.5) | (feats["in_comment"].to_numpy() > 0.5)
    # The rule: the best unit for the span's own kind of literal (a docstring: in_long_string) decides
    # the layer, the kind and the sign; the rest is the app's defaults (threshold 0.3, on at >= 90%
    # of the span, off 1 char before, 0 after).
    rows = []
    word = {v: k for k, v in urlstate.SIGN_WORDS.items()}      # the address's word for the sign
    for name, a, b in first_literals(text, sources, TOKENS[feature]):
        unit, point, sign = span_rule(ranking, text, (a, b), feature)
        _open(chrome, f"{url}?unit={unit}&span={a}-{b}&sign={word[sign]}&from={point}")
        units = chrome.execute_script(DATA, "selected_units")
        note = chrome.execute_script(TEXT, "select_note")
        matched = [u for u, e in zip(units["unit"], units["everywhere"]) if not e]
        found = _run_match(chrome) if matched else {"start": [], "end": []}
        counted = counted_runs(found["start"], found["end"], (a, b))
        inside = sum(bool(on[s:e].all()) for s, e in counted)
        in_prose = sum(bool(prose[s:e].all()) for s, e in counted)
        rows.append((name, a, b, len(units["unit"]), len(found["start"]), len(counted), inside,
                     len(units["unit"]) - len(matched), note, in_prose, f"{point} {sign} ({unit})"))
    # benchmarks/selectmatch_quality.py computes the same figure without a browser: it must agree.
    offline, _ = offline_figures(str(dump), feature)
    assert [(r.name, *r.span, f"{r.point} {r.sign} ({r.unit})", r.selected, r.counted, r.inside) for r in offline] == \
        [(r[0], r[1], r[2], r[10], r[3], r[5], r[6]) for r in rows]
    base = on.mean()
    print(f"\n{feature}: each span selected from the best unit's point and sign for its kind of literal, "
          f"threshold 0.3, on at >= 90% of the span; base rate: {base:.1%} of chars have {feature} = 1")
    for name, a, b, k, n, c, i, e, _, _, rule in rows:
        print(f"  {name:12} span {a}-{b} from {rule}: {k:3d} units selected ({e} on almost everywhere, not matched), "
              f"{n:2d} matches, {c:2d} counted, {i:2d} entirely inside ({i / c:.0%})" if c else
              f"  {name:12} span {a}-{b}: {k} units ({e} on almost everywhere), no runs")
    counted = sum(r[5] for r in rows)
    inside = sum(r[6] for r in rows)
    in_prose = sum(r[9] for r in rows)
    print(f"  pooled: {inside}/{counted} = {inside / max(counted, 1):.1%} entirely inside, base rate {base:.1%}; "
          f"{in_prose}/{counted} = {in_prose / max(counted, 1):.1%} entirely inside a string or a comment "
          f"(base rate {prose.mean():.1%})")
    return rows


@pytest.fixture(scope="module")
def string_figures(chrome, demo):
    return _match_figures(chrome, demo, "in_string")


@pytest.fixture(scope="module")
def comment_figures(chrome, demo):
    return _match_figures(chrome, demo, "in_comment")


# The issue asks for >= 80% of the counted runs entirely inside the feature. The shipped model
# (dropout 0.2) reaches it for strings: 159/160 (base rate 21%); the model before it reached
# 122/160. For comments it does not: 104/160 (65%; base rate 14%; the model before: 63/160).
# Figures, base rates and why: docs/select-match.md.
@pytest.mark.browser
@pytest.mark.slow
def test_strings_matches_lie_inside_string_literals(string_figures):
    assert len(string_figures) == 8
    for name, a, b, k, n, counted, inside, everywhere, note, _, _ in string_figures:
        assert counted == min(n, 20) and counted >= 10, name     # the runs never overlap the literal or each other
        # Every first literal is a module docstring at the start of its file, where the state has
        # just been reset: some units selected there are on almost everywhere; the note says so.
        assert everywhere > 0 and "99% of all the text" in note, name
    # and that "off before" had no char to check (csv.py opens with a blank line: one char in).
    assert [r[0] for r in string_figures if "starts a file" not in r[8]] == ["csv.py"]
    counted = sum(r[5] for r in string_figures)
    inside = sum(r[6] for r in string_figures)
    assert counted == 160 and inside >= 0.8 * counted            # measured: 159/160


@pytest.mark.browser
@pytest.mark.slow
def test_comments_matches_lie_inside_comments_as_measured(comment_figures):
    """Below the issue's 80%: this holds what the shipped model reaches, so that a change that
    makes it worse shows."""
    assert len(comment_figures) == 8
    for name, a, b, k, n, counted, inside, everywhere, note, _, _ in comment_figures:
        assert counted == min(n, 20) and counted >= 10, name
    counted = sum(r[5] for r in comment_figures)
    inside = sum(r[6] for r in comment_figures)
    assert inside >= 95 and counted == 160                       # measured: 104/160 (65%; base rate 14%)
    # What the comment units find is prose: almost every run lies inside a comment or a string
    # (docstrings), the model telling them apart no better than this.
    assert sum(r[9] for r in comment_figures) >= 150             # measured: 156/160 (base rate 36%)


@pytest.mark.browser
def test_box_selection_analyses_exactly_the_highlighted_characters(chrome, demo):
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    import rnnviz
    url, dump = demo
    _open(chrome, f"{url}?unit=layer2.c[76]")
    where = ("const fig = Bokeh.documents[0].get_model_by_name('text_figure'); const v = Bokeh.index.find_one(fig);"
             "const c = v.canvas_view.el.getBoundingClientRect();"
             "return [c.left + v.frame.x_scale.compute(arguments[0]), c.top + v.frame.y_scale.compute(arguments[1])]")
    x0, y0 = chrome.execute_script(where, 35.6, -2.6)      # columns 36-60 of rows 3-5
    x1, y1 = chrome.execute_script(where, 60.4, -5.4)
    drag = ActionBuilder(chrome)
    drag.pointer_action.move_to_location(int(x0), int(y0)).pointer_down()
    for f in (0.25, 0.5, 0.75, 1.0):
        drag.pointer_action.move_to_location(int(x0 + f * (x1 - x0)), int(y0 + f * (y1 - y0)))
    drag.pointer_action.pointer_up()
    drag.perform()
    _wait(lambda: chrome.execute_script(VALUE, "span_end", "value") is not None, what="the span")
    start, end = chrome.execute_script(VALUE, "span_start", "value"), chrome.execute_script(VALUE, "span_end", "value")
    cells = chrome.execute_script(DATA, "text_source")
    pos, x, y, w = (np.array(cells[k]) for k in ("pos", "x", "y", "w"))
    in_box = pos[(y <= -3) & (y >= -5) & (x + w / 2 > 35.6) & (x - w / 2 < 60.4)]
    assert (start, end) == (in_box.min(), in_box.max() + 1)        # first to last char in reading order
    # The outline covers exactly chars [start, end): no more, no fewer.
    _wait(lambda: chrome.execute_script(DATA, "span_marks")["x"], what="the outline")
    boxes = chrome.execute_script(DATA, "span_marks")
    outlined = set()
    for bx, by, bw in zip(boxes["x"], boxes["y"], boxes["w"]):
        outlined |= set(pos[(y == by) & (x >= bx - bw / 2) & (x <= bx + bw / 2)].tolist())
    assert outlined == set(range(start, end))
    # And exactly those chars were analysed: the app's units are those selected on the dump's arrays.
    with rnnviz.open(dump) as d:
        states = d["layer2.c"][start - 1:end].astype(np.float32)
    expected = select(states[1:], states[:1], states[:0], 0.3, "positive", COVER).columns
    _wait(lambda: "unit(s)" in chrome.execute_script(TEXT, "select_note"), what="the units")
    shown = chrome.execute_script(DATA, "selected_units")["unit"]
    assert sorted(shown) == sorted(f"layer2.c[{i}]" for i in expected)
    assert f"span={start}-{end}" in chrome.current_url
    # A click in the text outside the span clears it, and the hint says how.
    assert "Click outside it" in chrome.execute_script(TEXT, "span_hint")
    xo, yo = chrome.execute_script(where, 10, -20)
    click = ActionBuilder(chrome)
    click.pointer_action.move_to_location(int(xo), int(yo)).click()
    click.perform()
    _wait(lambda: not chrome.execute_script(DATA, "span_marks")["x"], what="the span to clear")
    assert chrome.execute_script(VALUE, "span_start", "value") is None
    assert chrome.execute_script(DATA, "selected_units")["unit"] == [] and "span=" not in chrome.current_url


@pytest.mark.browser
def test_new_span_clears_the_old_results_at_once(chrome, demo):
    url, _ = demo
    _open(chrome, f"{url}?unit=layer2.c[76]&span=120-126&sign=both&from=layer2.c")
    old_units = chrome.execute_script(DATA, "selected_units")["unit"]
    assert old_units and _run_match(chrome)["start"]
    assert chrome.execute_script(TEXT, "matches_csv")
    chrome.execute_script("Bokeh.documents[0].get_model_by_name('span_start').value = 200;"
                          "Bokeh.documents[0].get_model_by_name('span_end').value = 206")
    _wait(lambda: "200–206" in chrome.execute_script(TEXT, "select_note"), what="the new units")
    assert chrome.execute_script(DATA, "match_runs")["start"] == []
    assert chrome.execute_script(DATA, "snippet_chars")["x"] == []
    assert chrome.execute_script(TEXT, "matches_csv") == "" and chrome.execute_script(TEXT, "match_note") == ""
    assert "120–126" not in chrome.execute_script(TEXT, "select_note")


@pytest.mark.browser
def test_the_address_round_trips_a_view_and_the_csv_downloads(chrome, demo):
    url, _ = demo
    _open(chrome, url)
    doc = "const d = Bokeh.documents[0]; "
    chrome.execute_script(doc + "d.get_model_by_name('unit_layer').value = '2'; d.get_model_by_name('unit_kind').value = 'c';"
                          "d.get_model_by_name('unit_index').value = 76; d.get_model_by_name('goto').value = 40000")
    _wait(lambda: "layer2.c[76]" in chrome.current_url and "pos=" in chrome.current_url, what="the address")
    chrome.execute_script(doc + "d.get_model_by_name('span_start').value = 40032; d.get_model_by_name('span_end').value = 40040")
    chrome.execute_script(doc + "d.get_model_by_name('threshold').value = 0.2; d.get_model_by_name('select_sign').active = 2;"
                          "d.get_model_by_name('cover').value = 80")
    _wait(lambda: "sign=both" in chrome.current_url and "thr=0.2" in chrome.current_url and "cover=80" in chrome.current_url,
          what="the address")
    shared = chrome.current_url
    assert chrome.execute_script(DATA, "selected_units")["unit"]
    view = {k: chrome.execute_script(TEXT if k.endswith("line") else DATA, k)
            for k in ("unit_line", "selected_units")}
    top_char = chrome.execute_script(TOP_CHAR)
    rows = _run_match(chrome)
    chrome.execute_script(BUTTONS, "Download CSV")
    got = _wait(lambda: list(chrome.downloads.glob("*.csv")), what="the CSV download")
    table = list(csv.DictReader(io.StringIO(got[0].read_text())))
    assert [int(r["start"]) for r in table] == rows["start"] and len(table) == len(rows["start"])

    _open(chrome, shared)                                  # a fresh page on the shared address
    assert re.sub(r"&pos=\d+", "", chrome.current_url) == re.sub(r"&pos=\d+", "", shared)
    assert chrome.execute_script(TEXT, "unit_line") == view["unit_line"]
    assert chrome.execute_script(DATA, "selected_units") == view["selected_units"]
    assert (chrome.execute_script(VALUE, "span_start", "value"), chrome.execute_script(VALUE, "span_end", "value"),
            chrome.execute_script(VALUE, "threshold", "value"), chrome.execute_script(VALUE, "select_sign", "active"),
            chrome.execute_script(VALUE, "cover", "value")) == (40032, 40040, 0.2, 2, 80)
    assert chrome.execute_script(TOP_CHAR) == top_char          # the same rows are on screen


RANKING_ROWS = """
function roots(root, out) { out.push(root); for (const el of root.querySelectorAll('*')) if (el.shadowRoot) roots(el.shadowRoot, out); return out; }
for (const r of roots(document, [])) {
  const heads = Array.from(r.querySelectorAll('.slick-header-column')).map(h => h.textContent.trim());
  if (!heads.includes('AUC / ρ')) continue;
  const rows = Array.from(r.querySelectorAll('.slick-row')).sort((a, b) => parseFloat(a.style.top) - parseFloat(b.style.top));
  return [heads, rows.slice(0, 3).map(row => Array.from(row.querySelectorAll('.slick-cell')).map(c => c.textContent))];
}
return null;
"""


@pytest.mark.browser
def test_a_ranking_row_shows_auc_and_z(chrome, demo):
    url, _ = demo
    _open(chrome, f"{url}?feature=in_string")
    heads, rows = _wait(lambda: chrome.execute_script(RANKING_ROWS), what="the ranking table")
    assert heads[:5] == ["unit", "feature", "AUC / ρ", "z", "p"]
    unit, feature, auc, z, p, beats = rows[0]
    assert feature == "in_string" and re.fullmatch(r"0\.9\d\d \([+−]\)", auc), rows[0]
    assert abs(float(z)) > 3 and beats == "yes"


@pytest.mark.browser
def test_an_export_downloads_from_the_page(chrome, demo):
    url, dump = demo
    _open(chrome, f"{url}?unit=layer2.c[76]")
    chrome.execute_script(BUTTONS, "Export the visible text")
    _wait(lambda: chrome.execute_script(VALUE, "export_download", "tags"), timeout=120, what="the export")
    name = chrome.execute_script(VALUE, "export_download", "tags")[0]
    chrome.execute_script(BUTTONS, f"Download {name}")
    got = _wait(lambda: [p for p in chrome.downloads.glob(name) if p.stat().st_size], what="the download")
    assert got[0].read_bytes() == (dump.parent / name).read_bytes()
