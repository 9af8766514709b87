"""Static pictures of a span of text coloured by one unit, for papers: SVG, HTML or PNG.

    export_span("dumps/linux.h5", "layer1.c[42]", 1000, 2400, "figure.svg")

The SVG and HTML are written by hand (no matplotlib, no JavaScript, no network);
the PNG is the SVG drawn by headless Chromium, so it needs chromium, chromedriver
and selenium.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from .dumpfile import open_dump
from .errors import RnnvizError
from .render.figure import Span, render_svg

FORMATS = ("svg", "html", "png")
MAX_SPAN = 50_000
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def export_span(dump_path, unit: str, start: int, end: int, out_path, *, scale: str = "auto",
                colour=None, heat_units=(), heat_scales=None, guesses: int = 0, force: bool = False) -> Path:
    """Write chars [start, end) of the dump coloured by ``unit``; the format is ``out_path``'s suffix.
    ``colour``: a :class:`rnnviz.render.colours.Scale` to use instead of ``scale``'s;
    ``heat_units``: a heatmap of these units under the text (``heat_scales``: their scales);
    ``guesses``: the model's top-N guesses under each line (0: none)."""
    out = Path(out_path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise RnnvizError(f"{out}: expected a .svg, .html or .png file name")
    if out.exists() and not force:
        raise RnnvizError(f"{out} exists; choose another name (or pass force=True)")
    with open_dump(dump_path) as d:
        span = Span.from_dump(d, unit, start, end, scale, colour, max_chars=MAX_SPAN, heat_units=heat_units,
                              heat_scales=heat_scales, guesses=guesses)
    if fmt == "html":
        data = span.page().encode()
    elif fmt == "svg":
        data = render_svg(span).encode()
    else:
        data = svg_to_png(render_svg(span))
    _write_new(out, data, force)
    return out


def free_name(dump_path: Path, unit: str, start: int, end: int, fmt: str) -> Path:
    """A file name beside the dump that does not exist yet: dump_layer1.c-42_1000-2400.svg, then -2, -3..."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", unit).strip("-")
    stem = f"{dump_path.stem}_{safe}_{start}-{end}"
    for n in range(1, 10_000):
        out = dump_path.with_name(f"{stem}{'' if n == 1 else f'-{n}'}.{fmt}")
        if not out.exists():
            return out
    raise RnnvizError(f"too many exports named {stem}.* beside {dump_path}")


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_new(out: Path, data: bytes, force: bool) -> None:
    """Write through a temporary file, so a failure never leaves a truncated export."""
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    except OSError as e:
        raise RnnvizError(f"cannot write beside {out}: {e.strerror}") from None
    try:
        os.fchmod(fd, 0o666 & ~_umask())      # mkstemp makes 0600; an export is for sharing
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if force:
            os.replace(tmp, out)
        else:
            os.link(tmp, out)       # fails instead of overwriting a file that appeared meanwhile
            os.unlink(tmp)
    except FileExistsError:
        os.unlink(tmp)
        raise RnnvizError(f"{out} exists; choose another name") from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def find_browser() -> tuple[str, str] | None:
    """(chromium, chromedriver) paths, or None when either is missing."""
    browser = next((b for b in (shutil.which(c) for c in CHROMIUM) if b), None)
    driver = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
    return (browser, driver) if browser and driver else None


def svg_to_png(svg: str) -> bytes:
    """Draw the SVG in headless Chromium at twice the pixel density and return the PNG bytes."""
    found = find_browser()
    try:
        from selenium import webdriver
        from selenium.webdriver.common.by import By
    except ImportError:
        found = None
    if found is None:
        raise RnnvizError("PNG export needs Chromium, chromedriver and the selenium package, which are "
                          "not all installed; export SVG or HTML instead")
    browser, driver_path = found
    size = re.search(r'width="(\d+)" height="(\d+)"', svg)
    with tempfile.TemporaryDirectory(prefix="rnnviz-png-") as tmp:
        page = Path(tmp) / "figure.html"
        page.write_text(f'<!doctype html><html><body style="margin:0">{svg}</body></html>', encoding="utf-8")
        options = webdriver.ChromeOptions()
        options.binary_location = browser
        for arg in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run",
                    "--force-device-scale-factor=2", f"--user-data-dir={tmp}/profile",
                    f"--window-size={int(size.group(1)) + 40},{int(size.group(2)) + 140}"):
            options.add_argument(arg)
        service = webdriver.ChromeService(executable_path=driver_path)
        drv = webdriver.Chrome(options=options, service=service)
        try:
            drv.get(page.as_uri())
            return drv.find_element(By.TAG_NAME, "svg").screenshot_as_png
        finally:
            drv.quit()
