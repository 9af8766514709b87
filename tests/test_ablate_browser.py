"""The ablation toggle in a real browser: `rnnviz ablate --into` stores a unit's
per-character loss change, `rnnviz serve` serves the dump, headless Chromium clicks the
toggle and the text is recoloured by the stored change.

Set RNNVIZ_SCREENSHOT=path.png to keep the screenshot with the toggle on.
"""
import os
import time

import h5py
import numpy as np
import pytest

from test_ablate import ablated_dump, tiny  # noqa: F401  (the module fixture)
from test_browser import READY, VALUES, _text_pixels, _wait, browser, changed_fraction, serving  # noqa: F401

pytestmark = pytest.mark.browser
TOGGLE = "return Bokeh.documents[0].get_model_by_name('ablation_toggle')"


def test_the_toggle_recolours_the_text_by_the_stored_change(tiny, browser, tmp_path):  # noqa: F811
    dump = ablated_dump(tiny, tmp_path / "d.h5", "layer1.c[2]", "layer1.c[2]")
    with h5py.File(dump) as f:
        change = f["ablation/loss_change"][0]
    with serving(dump) as port:
        browser.get(f"http://localhost:{port}/?unit=layer1.c[2]")
        n = _wait(lambda: browser.execute_script(READY), what="the document")
        assert browser.execute_script(TOGGLE + ".disabled") is False
        time.sleep(1.0)
        before = _text_pixels(browser)
        browser.execute_script(TOGGLE + ".active = true")
        def shown():                  # NaN (no prediction) comes back from the page as null
            return np.array([np.nan if v is None else v for v in browser.execute_script(VALUES)], np.float64)
        _wait(lambda: np.allclose(shown()[:n], change[:n], atol=1e-6, equal_nan=True),
              what="the loss change in the page")
        time.sleep(1.0)
        assert changed_fraction(before, _text_pixels(browser)) > 0.05
        if os.environ.get("RNNVIZ_SCREENSHOT"):
            browser.save_screenshot(os.environ["RNNVIZ_SCREENSHOT"])
