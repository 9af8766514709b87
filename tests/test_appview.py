"""The app's view in headless Chromium on the demo dump (`rnnviz demo`: the shipped model
on the held-out stdlib files): colours from the stored percentiles, the multi-unit heatmap,
the prediction strip and a layout that fits 1280x800."""
import io
import re
import time

import numpy as np
import pytest

import rnnviz
from rnnviz.render import colours
from test_selectmatch import CHROMIUM, DRIVER, _open, _wait, demo  # noqa: F401 (the demo fixture)

pytestmark = pytest.mark.browser
W, H = 1280, 800
DOC = "const d = Bokeh.documents[0]; "
HEAT_UNITS = ["layer2.c[76]", "layer0.c[169]", "layer0.c[145]", "layer1.c[96]", "layer1.c[29]", "layer1.c[142]",
              "layer2.h[76]", "layer1.gate_f[20]"]
# Where things are on the page: the rectangles of every element, walking Bokeh's shadow roots.
CHAR_PIXEL = DOC + """
const fig = d.get_model_by_name('text_figure'), v = Bokeh.index.get_one(fig), s = d.get_model_by_name('text_source').data;
const i = s.pos.indexOf(arguments[0]);
const cells = fig.renderers[0].glyph, dy = cells.y.transform.value, th = cells.height.value;
const box = v.canvas_view.el.getBoundingClientRect();
return [box.left + v.frame.x_scale.compute(s.x[i] - s.w[i] / 2) + 2, box.top + v.frame.y_scale.compute(s.y[i] + dy + th / 2) + 2, s.v[i]];
"""
SCROLL_TO = DOC + """
const s = d.get_model_by_name('text_source').data, r = d.get_model_by_name('text_figure').y_range;
const y = s.y[s.pos.indexOf(arguments[0])], span = r.end - r.start;
r.setv({end: y + 3.5, start: y + 3.5 - span});
"""
BOX = """
function walk(root, out) { for (const el of root.querySelectorAll('*')) { out.push(el); if (el.shadowRoot) walk(el.shadowRoot, out); } return out; }
const v = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name(arguments[0]));
const r = v.el.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom];
"""
TABLE_ROWS = """
function walk(root, out) { for (const el of root.querySelectorAll('*')) { out.push(el); if (el.shadowRoot) walk(el.shadowRoot, out); } return out; }
const v = Bokeh.index.get_one(Bokeh.documents[0].get_model_by_name(arguments[0]));
return walk(v.shadow_el || v.el, []).filter(e => String(e.className).includes('slick-row'))
  .map(e => { const r = e.getBoundingClientRect(); return [r.top, r.bottom, e.textContent]; });
"""


@pytest.fixture(scope="module")
def small_chrome(tmp_path_factory):
    """Headless Chromium whose page is exactly 1280x800 CSS pixels."""
    webdriver = pytest.importorskip("selenium.webdriver")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                f"--user-data-dir={tmp_path_factory.mktemp('profile')}"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                           {"width": W, "height": H, "deviceScaleFactor": 1, "mobile": False})
    try:
        yield driver
    finally:
        driver.quit()


def _pixel(driver, x: float, y: float) -> str:
    from PIL import Image
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    return "#%02x%02x%02x" % shot.getpixel((int(x), int(y)))


def _close(a: str, b: str, tol: int = 3) -> bool:
    return all(abs(int(a[i:i + 2], 16) - int(b[i:i + 2], 16)) <= tol for i in (1, 3, 5))


def _window(driver) -> tuple[int, int]:
    pos = driver.execute_script(DOC + "const p = d.get_model_by_name('text_source').data.pos; return [p[0], p[p.length - 1] + 1]")
    return int(pos[0]), int(pos[1])


def _stats(dump, unit):
    with rnnviz.open(dump) as d:
        units = d.analysis.table("units")
    return units[units["unit"] == unit].iloc[0]


def test_a_unit_has_the_same_colour_in_windows_of_different_ranges(demo, small_chrome):
    """layer2.c[76] at a char between its p1 and p99, seen in two windows whose own ranges differ by
    >= 2x: the same colour on screen in both, the one the stored percentiles give."""
    url, dump = demo
    row = _stats(dump, "layer2.c[76]")
    with rnnviz.open(dump) as d:
        column = d["layer2.c"][:, 76].astype(np.float32)
    scale = colours.unit_scale("c", None, "auto", {"p1": row["p1"], "p99": row["p99"], "min": row["min"],
                                                   "max": row["max"], "n": int(row["analysed_chars"])})
    local = lambda a, b: max(abs(np.percentile(column[a:b], 1)), abs(np.percentile(column[a:b], 99)))  # noqa: E731
    # A char well inside the range, whose window starting just before it and window ending just after it
    # (the app loads 2,000 chars from a line start ~500 before a jump's target) differ in range.
    best = None
    for t in range(2500, len(column) - 2500, 31):
        v = column[t]
        if not (row["p1"] < v < row["p99"]) or abs(v) < 0.2 * scale.high:
            continue
        ratio = local(t - 100, t + 1900) / local(t - 1800, t + 200)
        ratio = max(ratio, 1 / ratio)
        if best is None or ratio > best[0]:
            best = (ratio, t)
    assert best and best[0] > 2.2
    t = best[1]
    seen = []
    for pos in (t + 400, t - 1300):                                     # two jumps, two windows holding t
        _open(small_chrome, f"{url}?unit=layer2.c[76]&pos={pos}")
        a, b = _window(small_chrome)
        assert a <= t < b
        small_chrome.execute_script(SCROLL_TO, t)                       # t's row near the top, as the wheel would
        time.sleep(1.0)
        x, y, v = small_chrome.execute_script(CHAR_PIXEL, t)
        mapper = small_chrome.execute_script(DOC + "const m = d.get_model_by_name('text_figure').renderers[0]"
                                             ".glyph.fill_color.transform; return [m.low, m.high]")
        seen.append((local(a, b), _pixel(small_chrome, x, y), mapper, v))
    (r1, c1, m1, v1), (r2, c2, m2, v2) = seen
    assert max(r1, r2) >= 2 * min(r1, r2)                               # the windows' own ranges differ
    assert v1 == v2 == pytest.approx(column[t])
    assert m1 == m2 == pytest.approx([scale.low, scale.high])
    expected = scale.colours(np.array([column[t]]))[0]
    assert expected not in (colours.NAN_COLOR, scale.palette[0], scale.palette[-1])   # not clipped, not white
    assert _close(c1, expected) and _close(c2, expected), (c1, c2, expected)


def test_heatmap_rows_hold_the_dumps_values_of_the_chosen_units(demo, small_chrome):
    url, dump = demo
    _open(small_chrome, f"{url}?unit=layer2.c[76]&pos=20000")
    small_chrome.execute_script(DOC + f"d.get_model_by_name('heat_units').value = {', '.join(HEAT_UNITS)!r}")
    _wait(lambda: small_chrome.execute_script(DOC + "return d.get_model_by_name('heat_7').data.image.length"),
          what="eight heatmap rows")
    a, b = _window(small_chrome)
    with rnnviz.open(dump) as d:
        for i, unit in enumerate(HEAT_UNITS):
            got = small_chrome.execute_script(DOC + f"const s = d.get_model_by_name('heat_{i}').data; "
                                              "return [s.unit[0], s.x[0], Array.from(s.image[0])]")
            assert got[0] == unit and got[1] == a - 0.5
            assert np.array_equal(np.asarray(got[2], np.float32), d.unit(unit)[a:b].astype(np.float32))


def test_at_1280x800_text_ranking_plot_heatmap_and_strip_are_in_view_together(demo, small_chrome):
    url, _ = demo
    _open(small_chrome, f"{url}?unit=layer2.c[76]&pos=3000")
    small_chrome.execute_script(DOC + f"d.get_model_by_name('heat_units').value = {', '.join(HEAT_UNITS)!r}; "
                                "d.get_model_by_name('strip_select').value = '1'")
    _wait(lambda: small_chrome.execute_script(DOC + "return d.get_model_by_name('strip_source').data.x.length"),
          what="the prediction strip")
    time.sleep(1.5)
    width = small_chrome.execute_script("return document.documentElement.scrollWidth")
    assert width <= W                                                   # nothing scrolls sideways

    def inside(name):
        left, top, right, bottom = small_chrome.execute_script(BOX, name)
        assert 0 <= left and right <= W and 0 <= top and bottom <= H, (name, left, top, right, bottom)
        return top, bottom
    for name in ("text_figure", "heatmap", "value_plot", "ranking_table"):
        inside(name)
    yr = small_chrome.execute_script(DOC + "const r = d.get_model_by_name('text_figure').y_range; return [r.start, r.end]")
    assert yr[1] - yr[0] >= 20                                          # 20 rows of text and their strips
    assert small_chrome.execute_script(DOC + "return d.get_model_by_name('heatmap').y_range.start") <= -7.5
    top, bottom = inside("ranking_table")
    rows = [r for r in small_chrome.execute_script(TABLE_ROWS, "ranking_table") if top <= r[0] and r[1] <= bottom]
    assert len(rows) >= 8
    assert small_chrome.execute_script(DOC + "return d.get_model_by_name('side_tabs').tabs.map(t => t.title)") == \
        ["Export", "Contexts", "Saturation", "Select & match", "Errors"]
    small_chrome.save_screenshot("/tmp/appview-1280.png")


def test_saturation_is_large_picks_the_nearest_dot_and_names_one_under_the_pointer(demo, small_chrome):
    from selenium.webdriver.common.action_chains import ActionChains
    url, dump = demo
    small_chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                 {"width": W, "height": 1400, "deviceScaleFactor": 1, "mobile": False})
    try:
        _open(small_chrome, f"{url}?unit=layer2.c[76]")
        small_chrome.execute_script(DOC + "d.get_model_by_name('side_tabs').active = 2; "
                                    "d.get_model_by_name('saturation_gate').active = 1")     # forget gates
        time.sleep(1.5)
        left, top, right, bottom = small_chrome.execute_script(BOX, "saturation_fig_gate_f")
        assert right - left >= 300 and bottom - top >= 300                                # was 115 x 99 px
        # The densest corner: forget gates right-saturated almost always (Karpathy et al.).
        where = DOC + """
        const v = Bokeh.index.get_one(d.get_model_by_name('saturation_fig_gate_f')), s = d.get_model_by_name('saturation_gate_f').data;
        let best = 0; for (let i = 0; i < s.x.length; i++) if (s.x[i] - s.y[i] > s.x[best] - s.y[best]) best = i;
        const box = v.canvas_view.el.getBoundingClientRect();
        return [box.left + v.frame.x_scale.compute(s.x[best]) + 3, box.top + v.frame.y_scale.compute(s.y[best]) + 3];"""
        x, y = small_chrome.execute_script(where)
        ActionChains(small_chrome).move_by_offset(int(x), int(y)).perform()
        label = _wait(lambda: small_chrome.execute_script(
            DOC + "return d.get_model_by_name('saturation_fig_gate_f').center.find(a => a.text !== undefined && a.text).text"),
            what="the hover's line")
        assert label.startswith("layer") and "right " in label and "\n" not in label and len(label) < 90
        ActionChains(small_chrome).click().perform()                    # a click: the nearest dot's unit
        inverse = DOC + """
        const v = Bokeh.index.get_one(d.get_model_by_name('saturation_fig_gate_f')), box = v.canvas_view.el.getBoundingClientRect();
        return [v.frame.x_scale.invert(arguments[0] - box.left), v.frame.y_scale.invert(arguments[1] - box.top)];"""
        dx, dy = small_chrome.execute_script(inverse, int(x), int(y))
        with rnnviz.open(dump) as d:
            sat = d.analysis.table("saturation")
        sat = sat[sat["gate"] == "gate_f"]
        dist = np.hypot(sat["frac_right"] - dx, sat["frac_left"] - dy).to_numpy()
        names = [f"{p}[{i}]" for p, i in zip(sat["point"], sat["index"])]
        time.sleep(2)
        shown = small_chrome.execute_script(DOC + "return d.get_model_by_name('unit_line').text")
        picked = re.search(r"<b[^>]*>([^<]+)</b>", shown).group(1)
        # The corner is dense: dots within a pixel of the nearest (about 0.004 here) tie with it
        # once the click is rounded to whole pixels.
        assert picked in names and dist[names.index(picked)] <= dist.min() + 0.004, \
            (shown, dx, dy, names[int(np.argmin(dist))], dist.min())
        ActionChains(small_chrome).move_by_offset(-int(x), -int(y)).perform()
    finally:
        small_chrome.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                     {"width": W, "height": H, "deviceScaleFactor": 1, "mobile": False})
