"""rnnviz serve in a real browser: the CLI serves a dump, headless Chromium loads the page
(as localhost and as 127.0.0.1), the text is drawn, and choosing another unit recolours it.

Set RNNVIZ_SCREENSHOT=path.png to keep the final screenshot.
"""
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from test_app import write_app_dump

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(DRIVER).exists()),
                       reason=f"needs {CHROMIUM} and {DRIVER} (Debian: apt install chromium chromium-driver)"),
]

READY = ("const d = window.Bokeh && Bokeh.documents[0];"
         "const s = d && d.get_model_by_name('text_source');"
         "return s ? s.data.v.length : 0")
VALUES = "return Array.from(Bokeh.documents[0].get_model_by_name('text_source').data.v)"
MODEL_TEXT = "return Bokeh.documents[0].get_model_by_name(arguments[0]).text"
# Bokeh draws inside shadow DOM: walk the shadow roots to find the canvases and where they are.
CANVASES = """
function walk(root, out) {
  for (const el of root.querySelectorAll('*')) {
    if (el.tagName === 'CANVAS') out.push(el);
    if (el.shadowRoot) walk(el.shadowRoot, out);
  }
  return out;
}
return walk(document, []).map(c => { const r = c.getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; });
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(fn, timeout=60.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def serving(path):
    """``rnnviz serve path`` on a free port until its page answers; yields the port."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rnnviz", "serve", str(path), "--no-browser", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def up():
        if proc.poll() is not None:
            raise AssertionError(f"rnnviz serve exited: {proc.stdout.read()}")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
        except OSError:
            return False
    try:
        _wait(up, what="the server")
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def served(tmp_path_factory, stdlib_text_file):
    path = tmp_path_factory.mktemp("serve") / "browser.h5"
    text, _ = write_app_dump(path, stdlib_text_file)
    with serving(path) as port:
        yield path, port, text


@pytest.fixture(scope="module")
def browser():
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="rnnviz-chromium-")
    for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run",
                f"--user-data-dir={profile}", "--window-size=1560,1250"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _text_pixels(driver) -> np.ndarray:
    """The pixels of the largest canvas (the text view) in a screenshot, as an (h, w, 3) array."""
    from PIL import Image
    left, top, width, height = max(driver.execute_script(CANVASES), key=lambda r: r[2] * r[3])
    shot = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    return np.asarray(shot.crop((int(left), int(top), int(left + width), int(top + height))))



def changed_fraction(before: np.ndarray, after: np.ndarray) -> float:
    """The fraction of the text view's pixels whose colour changed between two screenshots."""
    h, w = min(after.shape[0], before.shape[0]), min(after.shape[1], before.shape[1])
    return float((np.abs(after[:h, :w].astype(int) - before[:h, :w].astype(int)).sum(axis=2) > 30).mean())

@pytest.mark.parametrize("host", ["localhost", "127.0.0.1"])
def test_page_shows_the_text_and_recolours_it_for_another_unit(served, browser, host, tmp_path):
    path, port, text = served
    # Start inside the code, on a unit that is mostly noise; then switch to the line-position cell.
    browser.get(f"http://{host}:{port}/?unit=layer1.c[1]&pos={text.index('def ')}")
    n = _wait(lambda: browser.execute_script(READY), what="the document over the websocket")
    assert n > 1000
    assert path.name in browser.execute_script(MODEL_TEXT, "title")
    assert "layer1.c[1]" in browser.execute_script(MODEL_TEXT, "unit_line")
    assert len(browser.execute_script(CANVASES)) >= 3
    time.sleep(1.0)                                 # let the canvas finish drawing
    before_values, before = browser.execute_script(VALUES), _text_pixels(browser)

    # Choose another unit in the page, as a user would with the index spinner.
    browser.execute_script("Bokeh.documents[0].get_model_by_name('unit_index').value = 3")
    _wait(lambda: browser.execute_script(VALUES) != before_values, timeout=20, what="new unit values")
    _wait(lambda: "layer1.c[3]" in browser.execute_script(MODEL_TEXT, "unit_line"), timeout=20,
          what="the unit line")
    time.sleep(1.0)
    changed = changed_fraction(before, _text_pixels(browser))
    assert changed > 0.05, f"only {changed:.1%} of the text view changed colour"

    severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
    assert not severe, severe
    shot = tmp_path / f"serve-{host}.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("RNNVIZ_SCREENSHOT"):
        browser.save_screenshot(os.environ["RNNVIZ_SCREENSHOT"])


def test_page_loads_bokehjs_from_the_server_not_a_cdn(served):
    _, port, _ = served
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10).read().decode()
    assert "/static/js/bokeh" in page and "cdn.bokeh.org" not in page


def test_png_export_draws_the_svg(tmp_path, stdlib_text_file):
    from rnnviz.export import export_span
    path = tmp_path / "png.h5"
    write_app_dump(path, stdlib_text_file, analysis=False)
    out = export_span(path, "layer0.h[2]", 0, 400, tmp_path / "span.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image
    image = Image.open(out)
    assert image.width > 800 and image.height > 100


def test_demo_opens_on_a_string_unit_with_the_text_coloured(tmp_path, browser):
    """The README's main job: `rnnviz demo` on the held-out stdlib files, seen in Chromium."""
    from test_demo import start_demo, stop
    began = time.monotonic()
    proc, url = start_demo(tmp_path)
    try:
        browser.get(url)
        assert _wait(lambda: browser.execute_script(READY), what="the demo document") > 1000
        seconds = time.monotonic() - began
        feature = browser.execute_script("return Bokeh.documents[0].get_model_by_name('feature_select').value")
        assert feature == "in_long_string"
        unit_line = browser.execute_script(MODEL_TEXT, "unit_line")
        time.sleep(1.0)
        pixels = _text_pixels(browser).reshape(-1, 3).astype(int)
        tinted = (np.ptp(pixels, axis=1) > 25).mean()         # coloured backgrounds, not grey text
        assert tinted > 0.05, f"only {tinted:.1%} of the text view is coloured"
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        if os.environ.get("RNNVIZ_DEMO_SCREENSHOT"):
            browser.save_screenshot(os.environ["RNNVIZ_DEMO_SCREENSHOT"])
    finally:
        log = stop(proc)
    assert "the unit that best tracks 'in_long_string'" in log
    unit = log.split("opening the app on ")[1].split(",")[0]
    assert unit in unit_line
    print(f"rnnviz demo: command to coloured page in {seconds:.1f} s")
