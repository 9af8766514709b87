"""Take the README's screenshots of the app in headless Chromium at 1280x800.

    python docs/screenshots.py dumps/demo.h5      # after `rnnviz demo` made the dump

Writes docs/app.png (the demo's first view) and docs/heatmap.png (eight units as a heatmap
under the text and the model's top-3 guesses under each line). Needs chromium,
chromedriver and selenium, as the browser tests do.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).parent
UNITS = "layer2.c[76], layer0.c[169], layer0.c[145], layer1.c[96], layer1.c[29], layer1.c[142], layer2.h[76], layer1.gate_f[20]"
VIEWS = {
    "app.png": ("?unit=layer2.c[76]&feature=in_string&pos=3000", ""),
    "heatmap.png": ("?unit=layer2.c[76]&pos=3000",
                    f"d.get_model_by_name('heat_units').value = '{UNITS}'; d.get_model_by_name('strip_select').value = '3';"),
}


def main(dump: str) -> None:
    from selenium import webdriver
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
            driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                   {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
            try:
                for name, (query, script) in VIEWS.items():
                    driver.get(f"http://127.0.0.1:{port}/{query}")
                    for _ in range(300):
                        if driver.execute_script("const d = window.Bokeh && Bokeh.documents[0]; const s = d && "
                                                 "d.get_model_by_name('text_source'); return s && s.data.v.length"):
                            break
                        time.sleep(0.2)
                    if script:
                        driver.execute_script("const d = Bokeh.documents[0]; " + script)
                    time.sleep(3)
                    driver.save_screenshot(str(HERE / name))
                    print(f"wrote {HERE / name}")
            finally:
                driver.quit()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dumps/demo.h5")
