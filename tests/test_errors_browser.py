"""The model's errors in the app: `rnnviz errors --into` stores a category per character,
`rnnviz serve` serves the dump, and headless Chromium colours the text by category (with a
legend) and shows the breakdown and the long-range plot in the Errors tab.

Set RNNVIZ_SCREENSHOT=path.png to keep the screenshot with the errors shown.
"""
import os
import time

import h5py
import numpy as np
import pytest
from bokeh.document import Document

from rnnviz.app.document import make_doc
from test_browser import READY, VALUES, _text_pixels, _wait, browser, changed_fraction, serving  # noqa: F401
from test_errors import rnnviz, tiny_ckpt  # noqa: F401  (the module fixture)

TOGGLE = "return Bokeh.documents[0].get_model_by_name('errors_toggle')"


@pytest.fixture(scope="module")
def errors_dump(tiny_ckpt, tmp_path_factory):  # noqa: F811
    f = tiny_ckpt
    dump = tmp_path_factory.mktemp("errors_app") / "held.h5"
    assert rnnviz("dump", f / "m.pt", f / "held.py", "-o", dump, "--quiet").returncode == 0
    plain = dump.with_name("plain.h5")
    plain.write_bytes(dump.read_bytes())
    r = rnnviz("errors", f / "m.pt", f / "train", f / "held.py", "--into", dump, "--order", "5")
    assert r.returncode == 0, r.stderr
    return dump, plain


def test_the_toggle_and_tab_exist_only_where_the_dump_holds_errors(errors_dump):
    dump, plain = errors_dump
    doc = Document()
    make_doc(doc, [str(plain)])
    toggle = doc.get_model_by_name("errors_toggle")
    assert toggle.visible is False
    assert "rnnviz errors CHECKPOINT @checkpoint TEXTS --into DUMP" in doc.get_model_by_name("errors_panel").children[0].text
    doc = Document()
    explorer = make_doc(doc, [str(dump)])
    assert doc.get_model_by_name("errors_toggle").visible is True
    table = doc.get_model_by_name("errors_breakdown").text
    with h5py.File(dump) as h:
        codes = h["errors/category"][()]
    for name, code in [("dynamic memory", 2), ("word initial", 4), ("punctuation", 5)]:
        assert name in table
    assert f"{int((codes > 0).sum()):,}" in table                  # the all-errors row
    # on: the window's values are the stored codes; the unit's scale is kept for contexts/exports
    unit_scale = explorer.colour
    doc.get_model_by_name("errors_toggle").active = True
    shown = np.asarray(doc.get_model_by_name("text_source").data["v"])
    assert np.array_equal(shown, codes[explorer.start:explorer.end].astype(np.float32))
    assert "punctuation" in doc.get_model_by_name("colour_legend").text
    assert doc.get_model_by_name("errors_toggle").label.startswith("Showing the model's errors")
    assert explorer.colour == unit_scale
    doc.get_model_by_name("errors_toggle").active = False
    shown = np.asarray(doc.get_model_by_name("text_source").data["v"])
    assert not np.array_equal(shown, codes[explorer.start:explorer.end].astype(np.float32))


@pytest.mark.browser
def test_the_text_is_coloured_by_error_category_in_the_browser(errors_dump, browser):  # noqa: F811
    dump, _ = errors_dump
    with h5py.File(dump) as h:
        codes = h["errors/category"][()]
    with serving(dump) as port:
        browser.get(f"http://localhost:{port}/")
        n = _wait(lambda: browser.execute_script(READY), what="the document")
        time.sleep(1.0)
        before = _text_pixels(browser)
        browser.execute_script(TOGGLE + ".active = true")
        _wait(lambda: np.array_equal(np.asarray(browser.execute_script(VALUES)[:n], np.float64), codes[:n]),
              what="the error categories in the page")
        legend = browser.execute_script("return Bokeh.documents[0].get_model_by_name('colour_legend').text")
        assert "dynamic memory" in legend and "word initial" in legend
        time.sleep(1.0)
        assert changed_fraction(before, _text_pixels(browser)) > 0.05
        # the Errors tab: the breakdown and one long-range panel per closing kind present
        browser.execute_script("const t = Bokeh.documents[0].get_model_by_name('side_tabs');"
                               "t.active = t.tabs.length - 1")
        figures = browser.execute_script(
            "return Bokeh.documents[0].get_model_by_name('errors_panel').children.length")
        assert figures == 3                                             # table, caption, plot
        if os.environ.get("RNNVIZ_SCREENSHOT"):
            time.sleep(1.0)
            browser.save_screenshot(os.environ["RNNVIZ_SCREENSHOT"])
