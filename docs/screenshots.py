"""Take the docs' screenshots of the app in headless Chromium (1280x800; select & match 1560x1720).

    python docs/screenshots.py dumps/demo.h5      # after `rnnviz demo` made the dump

Writes
- docs/app.png: the demo's unit (the best for docstrings) with the in_string track;
- docs/heatmap.png: the best unit of eight features as a heatmap under the text (topped up
  to eight units from the in_string ranking where one unit is best for two), and the
  model's top-3 guesses under each line;
- docs/select-match.png: select & match on the short quoted string 'TextWrapper' (from the
  quote cell's layer and kind, either sign), after a click on the third match;
- docs/select-match-docstring.png: shlex.py's module docstring selected by the strings
  test's rule (the layer, kind and sign of the best unit for docstrings), after a click on
  the second match.

Every unit is read from the dump's ranking, so the shots follow the model. Needs chromium,
chromedriver and selenium, as the browser tests do.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import tokenize
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent / "benchmarks"))
from selectmatch_quality import best_point, first_literals, span_rule  # noqa: E402

from rnnviz.app.urlstate import SIGN_WORDS  # noqa: E402
from rnnviz.workflows import DEMO_FEATURE  # noqa: E402

HEAT_FEATURES = ("in_long_string", "in_short_string", "in_string", "in_comment", "line_pos", "indent", "depth", "in_word")
PAGE_READY = ("const d = window.Bokeh && Bokeh.documents[0]; const s = d && d.get_model_by_name('text_source'); "
              "return s && s.data.v.length")
MATCHES_READY = ("const d = Bokeh.documents[0]; const t = d.get_model_by_name('match_note').text; "
                 "return t.includes('run(s)') || t.includes('No other run')")
# A real click on the button, wherever Bokeh's shadow roots put it.
FIND = """
function walk(root, out) {
  for (const el of root.querySelectorAll('*')) { if (el.tagName === 'BUTTON') out.push(el); if (el.shadowRoot) walk(el.shadowRoot, out); }
  return out;
}
walk(document, []).filter(b => b.textContent.includes('fire together'))[0].click();
"""
CLICK_MATCH = ("const s = Bokeh.documents[0].get_model_by_name('snippet_chars'); "
               "s.selected.indices = [s.data.match.indexOf(arguments[0])]")


SMALL, TALL = (1280, 800), (1560, 1720)     # the select & match tab needs the height for its matches


def views(dump: str) -> dict[str, tuple[str, str, int | None, tuple[int, int]]]:
    """name -> (address query, script run on the page, match to click or None, window size)."""
    import rnnviz
    with rnnviz.open(dump) as d:
        text, sources, ranking = d.text, d.sources, d.ranking
    if ranking is None:
        raise SystemExit(f"{dump} has no analysis: run `rnnviz analyze {dump}` first")
    best = {f: best_point(ranking, f) for f in HEAT_FEATURES if f in set(ranking["feature"])}
    quote_unit, quote_point, _ = best["in_short_string"]
    demo_unit = best_point(ranking, DEMO_FEATURE)[0]      # the unit `rnnviz demo` opens on
    heat = list(dict.fromkeys(u for u, _, _ in best.values()))      # a unit best for two features once
    heat += [u for u in ranking.loc[ranking["feature"] == "in_string", "unit"] if u not in heat][:8 - len(heat)]
    heat = ", ".join(heat)
    word = {v: k for k, v in SIGN_WORDS.items()}
    quoted = text.index("'TextWrapper'")
    docstring = next((a, b) for name, a, b in first_literals(text, sources, tokenize.STRING) if name == "shlex.py")
    string_unit, string_point, string_sign = span_rule(ranking, text, docstring, "in_string")
    return {
        "app.png": (f"?unit={demo_unit}&feature=in_string&pos=3000", "", None, SMALL),
        "heatmap.png": (f"?unit={demo_unit}&pos=3000",
                        f"d.get_model_by_name('heat_units').value = '{heat}'; "
                        "d.get_model_by_name('strip_select').value = '3';", None, SMALL),
        "select-match.png": (f"?unit={quote_unit}&span={quoted}-{quoted + 13}&sign={word['both']}&from={quote_point}",
                             "", 2, TALL),
        "select-match-docstring.png": (f"?unit={string_unit}&span={docstring[0]}-{docstring[1]}"
                                       f"&sign={word[string_sign]}&from={string_point}", "", 1, TALL),
    }


def wait(driver, script: str, what: str) -> None:
    for _ in range(600):
        if driver.execute_script(script):
            return
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main(dump: str) -> None:
    from selenium import webdriver
    shots = views(dump)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "rnnviz", "serve", dump, "--no-browser", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except OSError:
                time.sleep(0.2)
        options = webdriver.ChromeOptions()
        options.binary_location = "/usr/bin/chromium"
        with tempfile.TemporaryDirectory() as profile:
            for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                        f"--user-data-dir={profile}"):
                options.add_argument(arg)
            driver = webdriver.Chrome(options=options,
                                      service=webdriver.ChromeService(executable_path="/usr/bin/chromedriver"))
            try:
                for name, (query, script, click, (width, height)) in shots.items():
                    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                           {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
                    driver.get(f"http://127.0.0.1:{port}/{query}")
                    wait(driver, PAGE_READY, "the page")
                    if script:
                        driver.execute_script("const d = Bokeh.documents[0]; " + script)
                    if click is not None:
                        time.sleep(1)
                        driver.execute_script(FIND)
                        wait(driver, MATCHES_READY, "the matches")
                        time.sleep(1)
                        driver.execute_script(CLICK_MATCH, click)
                    time.sleep(3)
                    driver.save_screenshot(str(HERE / name))
                    print(f"wrote {HERE / name}: {query}")
            finally:
                driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dumps/demo.h5")
