"""Static pictures of a span of text coloured by one unit, for papers: SVG, HTML or PNG.

    export_span("dumps/linux.h5", "layer1.c[42]", 1000, 2400, "figure.svg")

The SVG and HTML are written by hand (no matplotlib, no JavaScript, no network);
the PNG is the SVG drawn by headless Chromium, so it needs chromium, chromedriver
and selenium.
"""
from __future__ import annotations

import html
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .app import colours
from .app.layout import WRAP, grid, shown
from .app.store import open_view
from .errors import RnnvizError
from .names import parse_point

FORMATS = ("svg", "html", "png")
MAX_SPAN = 50_000
CELL_W, CELL_H, PAD = 9, 18, 16
FONT = "'DejaVu Sans Mono', Menlo, Consolas, monospace"
CHROMIUM = ("/usr/bin/chromium", "chromium", "chromium-browser", "google-chrome")


def export_span(dump_path, unit: str, start: int, end: int, out_path, *, scale: str = "auto",
                limits: tuple[float, float] | None = None, force: bool = False) -> Path:
    """Write chars [start, end) of the dump coloured by ``unit``; the format is ``out_path``'s suffix."""
    out = Path(out_path)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise RnnvizError(f"{out}: expected a .svg, .html or .png file name")
    if out.exists() and not force:
        raise RnnvizError(f"{out} exists; choose another name (or pass force=True)")
    view = open_view(dump_path)
    point, index = view.check_unit(unit)
    if not 0 <= start < end <= view.n_chars:
        raise RnnvizError(f"expected 0 <= start < end <= {view.n_chars:,}, got {start:,}..{end:,}")
    if end - start > MAX_SPAN:
        raise RnnvizError(f"export at most {MAX_SPAN:,} chars at a time (asked for {end - start:,})")
    kind = parse_point(point)[1]
    text = view.text(start, end)
    values = view.values(point, index, start, end)
    low, high = limits or colours.limits(kind, values, scale, view.unit_extent(unit))
    fills = colours.to_hex(values, low, high, colours.palette(kind))
    g = grid(text, WRAP, breaks=view.source_breaks(start, end))
    title = f"{unit} · chars {start:,}–{end:,} · {view.name}"
    bar = (colours.palette(kind), low, high)
    if fmt == "html":
        body = render_html(text, fills, values, start, title, bar)
        _write_new(out, body.encode(), force)
    else:
        svg = render_svg(text, fills, g, title, bar)
        if fmt == "svg":
            _write_new(out, svg.encode(), force)
        else:
            _write_new(out, svg_to_png(svg), force)
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


def _write_new(out: Path, data: bytes, force: bool) -> None:
    """Write through a temporary file, so a failure never leaves a truncated export."""
    try:
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial")
    except OSError as e:
        raise RnnvizError(f"cannot write beside {out}: {e.strerror}") from None
    try:
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


def _bar_ticks(low: float, high: float) -> list[float]:
    ticks = [low, high] + ([0.0] if low < 0 < high else [(low + high) / 2])
    return sorted(ticks)


def render_svg(text: str, fills: list[str], g, title: str, bar) -> str:
    """An SVG of the text on its grid: one rect and one glyph per character, a title and a colour bar."""
    palette, low, high = bar
    cols = int((g.col + g.width).max()) if len(text) else 1
    text_w, text_h = cols * CELL_W, g.rows * CELL_H
    top = PAD + 22
    bar_x, bar_h = PAD + text_w + 20, min(max(text_h, 120), 260)
    width, height = bar_x + 70, top + max(text_h, bar_h) + PAD
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}">',
           f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
           f'<text x="{PAD}" y="{PAD + 10}" font-family="Helvetica, Arial, sans-serif" font-size="13" '
           f'fill="#222222">{html.escape(title)}</text>',
           '<g shape-rendering="crispEdges">']
    for ch, fill, c, r, w in zip(text, fills, g.col, g.row, g.width):
        out.append(f'<rect x="{PAD + c * CELL_W}" y="{top + r * CELL_H}" width="{w * CELL_W}" '
                   f'height="{CELL_H}" fill="{fill}"/>')
    out.append(f'</g><g font-family="{html.escape(FONT)}" font-size="13" text-anchor="middle" '
               f'dominant-baseline="central" fill="#111111">')
    for ch, c, r, w in zip(text, g.col, g.row, g.width):
        glyph = shown(ch)
        if glyph:
            grey = ' fill="#9a9a9a"' if glyph != ch else ""
            out.append(f'<text x="{PAD + (c + w / 2) * CELL_W:.1f}" y="{top + (r + 0.5) * CELL_H:.1f}"'
                       f'{grey}>{html.escape(glyph)}</text>')
    out.append("</g>")
    # Colour bar: high at the top, as in the app.
    steps = 64
    for i in range(steps):
        out.append(f'<rect x="{bar_x}" y="{top + i * bar_h / steps:.2f}" width="14" '
                   f'height="{bar_h / steps + 0.5:.2f}" fill="{palette[int((steps - 1 - i) / steps * len(palette))]}"/>')
    out.append(f'<rect x="{bar_x}" y="{top}" width="14" height="{bar_h}" fill="none" stroke="#999999"/>')
    for t in _bar_ticks(low, high):
        y = top + (high - t) / (high - low) * bar_h
        out.append(f'<text x="{bar_x + 19}" y="{y:.1f}" font-family="Helvetica, Arial, sans-serif" '
                   f'font-size="11" dominant-baseline="central" fill="#333333">{t:.3g}</text>')
    out.append("</svg>")
    return "\n".join(out)


def render_html(text: str, fills: list[str], values: np.ndarray, start: int, title: str, bar) -> str:
    """A standalone page: a <pre> of spans with inline background colours, and a colour bar."""
    palette, low, high = bar
    spans = []
    for i, (ch, fill, v) in enumerate(zip(text, fills, values.tolist())):
        tip = f"char {start + i:,}: {v:.4f}"
        if ch == "\n":
            spans.append(f'<span style="background:{fill};color:#9a9a9a" title="{tip}">↵</span>\n')
        else:
            spans.append(f'<span style="background:{fill}" title="{tip}">{html.escape(ch)}</span>')
    stops = ", ".join(palette[int(i / 10 * (len(palette) - 1))] for i in range(11))
    ticks = "".join(f'<span style="position:absolute;left:{(t - low) / (high - low) * 100:.1f}%;'
                    f'transform:translateX(-50%)">{t:.3g}</span>' for t in _bar_ticks(low, high))
    return (f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>\n'
            f'<body style="font-family:Helvetica,Arial,sans-serif;margin:16px;color:#222">\n'
            f'<p style="font-size:13px">{html.escape(title)}</p>\n'
            f'<pre style="font:13px/18px {html.escape(FONT)};tab-size:4;white-space:pre-wrap;'
            f'max-width:{WRAP}ch;margin:0">' + "".join(spans) + '</pre>\n'
            f'<div style="margin-top:14px;width:260px;height:12px;border:1px solid #999;'
            f'background:linear-gradient(to right, {stops})"></div>\n'
            f'<div style="position:relative;width:260px;height:16px;font-size:11px">{ticks}</div>\n'
            f'</body></html>\n')


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
