"""How fast `rnnviz serve` answers on a big dump, and how much it sends.

    python benchmarks/serve_speed.py [--quick] [--chars N] [--dir DIR]

Writes synthetic dumps (stdlib text, 2 layers x 256 units, every recording point,
random float16 states, chunked like `rnnviz dump` writes them, plus an /analysis),
then measures, in this process unless said otherwise:

* server start -> first document: make_server() until GET / returns (the page
  request builds the session's document), and the same for the `rnnviz serve` CLI
  started cold (Python imports included);
* a unit switch on a 10k-char window: server-side time of the callback, and the
  bytes of the PATCH-DOC message it produces (JSON + binary buffers), against a
  baseline in the same run: reloading the whole window;
* the same with an 8-unit heatmap and the top-5 guesses under the text: what turning each
  on sends, a change of one heatmap unit, unit switches with both shown, and a page turn
  with both against one without them;
* server RSS after the first page and a few switches, for the big dump and a
  100k-char one (each in a fresh process).

* select & match on the big dump: the match query's server-side time (reading the
  point's states, the query, the snippets of the top 50 runs), against a baseline in
  the same run: only reading the same states; and unit switches made while the query
  runs in its background thread, as in the app.

Targets: first document < 2 s, switch < 50 ms, switch message < 200 KB (also with the heatmap
and the guesses shown), RSS with the
big dump not meaningfully above the small one, match query <= 2 s, a switch during a
query < 200 ms. Last line: one JSON object (``--match-only``: the match figures alone).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

import rnnviz
from rnnviz.dumpfile import DumpWriter
from rnnviz.names import KINDS, point_name

from analyze_speed import cpu
from common import proc_status_bytes, stdlib_text

H, LAYERS, TOPK = 256, 2, 5
ROWS, UNITS = 1024, 64           # HDF5 chunks of the states the README's figures were measured with
FEATURES = 8


def write_dump(path: Path, n: int) -> None:
    text, sources = stdlib_text(n)
    rng = np.random.default_rng(0)
    points = [point_name(layer, kind) for layer in range(LAYERS) for kind in KINDS]
    vocab = ["\ufffd"] + sorted(set(text) - {"\ufffd"})
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    starts = np.cumsum([0] + [length for _, length in sources[:-1]])
    lengths = np.array([length for _, length in sources], np.int64)
    w = DumpWriter.create(path, {"num_layers": LAYERS, "vocab": vocab, "unknown_chars": 0,
                                 "command": "benchmarks/serve_speed.py"},
                          codes, (codes % len(vocab)).astype(np.int32), pd.DataFrame({
                              "name": [s for s, _ in sources], "start": starts.astype(np.int64), "length": lengths,
                              "size_bytes": lengths, "sha256": ["0" * 64] * len(sources)}),
                          points, hidden_size=H, topk=TOPK, chunks=(ROWS, UNITS))
    # One random slab per point, written at shifting offsets: the file holds real bytes everywhere.
    slab_rows = 1 << 16
    for point in points:
        slab = rng.standard_normal((slab_rows, H), dtype=np.float32).astype(np.float16)
        for i, at in enumerate(range(0, n, slab_rows)):
            w.put(point, np.roll(slab, i, axis=0)[:min(slab_rows, n - at)], at)
    w.put("loss", rng.exponential(1, n).astype(np.float32))
    w.put("topk_ids", rng.integers(0, len(vocab), (n, TOPK), dtype=np.int32))
    w.put("topk_probs", np.sort(rng.random((n, TOPK), np.float32), axis=1)[:, ::-1])
    w.finish()
    with rnnviz.open(path, "r+") as d:
        write_analysis(d, points, n, rng)


def write_analysis(d, points: list[str], n: int, rng) -> None:
    """An /analysis of the size a real one has: every unit x every feature ranked, 20 contexts each."""
    names = [f"feature{i}" for i in range(FEATURES)]
    units = [(p, i) for p in points for i in range(H)]
    gates = [(p, i) for p, i in units if p.split(".")[1] in ("gate_i", "gate_f", "gate_o")]
    per = 20
    d.write_analysis(
        features=[(name, (rng.random(n) < 0.2).astype(np.float32), "binary", "") for name in names],
        tables={"ranking": pd.DataFrame({
            "feature": np.repeat(names, len(units)), "feature_kind": "binary",
            "unit": [f"{p}[{i}]" for p, i in units] * FEATURES, "point": [p for p, _ in units] * FEATURES,
            "layer": [int(p[5]) for p, _ in units] * FEATURES, "kind": [p.split(".")[1] for p, _ in units] * FEATURES,
            "index": [i for _, i in units] * FEATURES, "score": rng.uniform(-0.5, 0.5, len(units) * FEATURES)}),
            "saturation": pd.DataFrame({
                "point": [p for p, _ in gates], "layer": [int(p[5]) for p, _ in gates],
                "gate": [p.split(".")[1] for p, _ in gates], "index": [i for _, i in gates],
                "frac_left": rng.random(len(gates)), "frac_right": rng.random(len(gates))}),
            "contexts": pd.DataFrame({
                "unit": np.repeat([f"{p}[{i}]" for p, i in units], per),
                "which": np.tile(["top"] * 10 + ["bottom"] * 10, len(units)),
                "rank": np.tile(np.arange(per) % 10, len(units)), "position": rng.integers(0, n, len(units) * per),
                "value": rng.normal(0, 2, len(units) * per)}),
            # Each unit's distribution, as analyze stores it (the colour scales; the states are N(0, 1)).
            "units": pd.DataFrame({
                "unit": [f"{p}[{i}]" for p, i in units], "point": [p for p, _ in units],
                "layer": [int(p[5]) for p, _ in units], "kind": [p.split(".")[1] for p, _ in units],
                "index": [i for _, i in units], "analysed_chars": n, "nonfinite": 0, "mean": 0.0, "sd": 1.0,
                "min": -4.5, "max": 4.5, "p1": -2.33, "p50": 0.0, "p99": 2.33})},
        options={})


def get(url: str) -> int:
    with urllib.request.urlopen(url, timeout=120) as r:
        r.read()
        return r.status


def start_server_thread(path: Path) -> tuple[float, object]:
    """Start the app's server in a thread with its own event loop; seconds until GET / answers."""
    import asyncio
    from rnnviz.app import make_server
    box, ready = {}, threading.Event()

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        box["server"] = make_server([path], port=0)
        box["server"].start()
        ready.set()
        box["server"].io_loop.start()
    t0 = time.perf_counter()
    threading.Thread(target=run, daemon=True).start()
    ready.wait()
    assert get(f"http://127.0.0.1:{box['server'].port}/") == 200
    return time.perf_counter() - t0, box["server"]


def patch_bytes(events) -> int:
    """Size of the PATCH-DOC message Bokeh would send for these document events."""
    from bokeh.protocol import Protocol
    msg = Protocol().create("PATCH-DOC", events)
    return (len(msg.header_json) + len(msg.metadata_json) + len(msg.content_json)
            + sum(len(b.to_bytes()) for b in msg.buffers))


def switch_figures(path: Path, switches: int) -> dict:
    """Time unit switches on a 10k-char window and size their messages; baseline: a window reload."""
    from bokeh.document import Document
    from rnnviz.app.document import make_doc
    doc = Document()
    app = make_doc(doc, [str(path)])
    app.controls.window.value = "10000"
    app.jump(app.view.n_chars // 2, mark=False)
    rng = np.random.default_rng(1)
    points = app.view.points
    times, sizes = [], []
    for k in range(switches):
        point = points[rng.integers(len(points))] if k % 2 else app.point   # alternate: same point / another
        index = int(rng.integers(H))
        events = []
        doc.on_change(events.append)
        t0 = time.perf_counter()
        app.select_unit(point, index)
        times.append(time.perf_counter() - t0)
        doc.remove_on_change(events.append)
        sizes.append(patch_bytes(events))
    events = []
    doc.on_change(events.append)
    t0 = time.perf_counter()
    app.load_window(app.end)                 # baseline: what a page turn costs
    reload_s = time.perf_counter() - t0
    doc.remove_on_change(events.append)
    return {"window_chars": app.end - app.start, "switch_ms_median": 1e3 * float(np.median(times)),
            "switch_ms_max": 1e3 * max(times), "switch_bytes_max": max(sizes),
            "window_reload_ms": 1e3 * reload_s, "window_reload_bytes": patch_bytes(events)}


def extras_figures(path: Path, switches: int, window: str = "10000") -> dict:
    """The same switches with an 8-unit heatmap and the top-5 guesses shown; what enabling each
    sends, and a page turn with them (baseline: a page turn without them, in the same run)."""
    from bokeh.document import Document
    from rnnviz.app.document import make_doc
    doc = Document()
    app = make_doc(doc, [str(path)])
    app.controls.window.value = window
    app.jump(app.view.n_chars // 2, mark=False)

    def measured(action):
        events = []
        doc.on_change(events.append)
        t0 = time.perf_counter()
        action()
        seconds = time.perf_counter() - t0
        doc.remove_on_change(events.append)
        return seconds, patch_bytes(events)
    plain_turn = measured(lambda: app.load_window(app.end))
    units = [f"{app.view.points[i % len(app.view.points)]}[{7 * i}]" for i in range(8)]
    heat = measured(lambda: app.set_heat_units(units))
    heat_one = measured(lambda: app.set_heat_units(units[:7] + [f"{app.view.points[0]}[200]"]))
    strip = measured(lambda: setattr(app.controls.strip, "value", "5"))
    rng = np.random.default_rng(3)
    times, sizes = [], []
    for k in range(switches):
        t, b = measured(lambda: app.select_unit(app.view.points[int(rng.integers(len(app.view.points)))],
                                                int(rng.integers(H))))
        times.append(t)
        sizes.append(b)
    turn = measured(lambda: app.load_window(app.end))
    return {"extras_window_chars": app.end - app.start,
            "heat8_on_ms": 1e3 * heat[0], "heat8_on_bytes": heat[1],
            "heat_change_one_ms": 1e3 * heat_one[0], "heat_change_one_bytes": heat_one[1],
            "strip5_on_ms": 1e3 * strip[0], "strip5_on_bytes": strip[1],
            "switch_with_extras_ms_median": 1e3 * float(np.median(times)), "switch_with_extras_ms_max": 1e3 * max(times),
            "switch_with_extras_bytes_max": max(sizes),
            "page_turn_with_extras_ms": 1e3 * turn[0], "page_turn_with_extras_bytes": turn[1],
            "page_turn_plain_ms": 1e3 * plain_turn[0], "page_turn_plain_bytes": plain_turn[1]}


def match_figures(path: Path) -> dict:
    """Time a select & match query on the whole dump, and unit switches while it runs."""
    from bokeh.document import Document
    from rnnviz.app.document import make_doc
    doc = Document()
    app = make_doc(doc, [str(path)])
    app.discover.sign.active = 2                   # either sign: random states leave a few units on
    at = app.view.n_chars // 3
    app.set_span((at, at + 3))
    k = len(app.selectmatch.selected)
    t0 = time.perf_counter()
    for _ in app.view.iter_point(app.point):       # baseline: reading the states the query reads
        pass
    read_s = time.perf_counter() - t0
    gen, work = app.selectmatch.match_job()
    t0 = time.perf_counter()
    result = work(lambda frac: None)
    app.selectmatch.show_matches(gen, result)
    query_s = time.perf_counter() - t0
    # The same query again in a background thread while this thread switches units.
    box = {}
    gen, work = app.selectmatch.match_job()
    worker = threading.Thread(target=lambda: box.setdefault("r", work(lambda frac: None)))
    rng = np.random.default_rng(2)
    times = []
    worker.start()
    while worker.is_alive():
        t1 = time.perf_counter()
        app.select_unit(app.view.points[int(rng.integers(len(app.view.points)))], int(rng.integers(H)))
        times.append(time.perf_counter() - t1)
        time.sleep(0.02)
    worker.join()
    return {"match_selected_units": k, "match_runs": int(len(result[0])), "match_query_s": query_s,
            "match_read_only_s": read_s, "switch_during_query_ms_median": 1e3 * float(np.median(times)),
            "switch_during_query_ms_max": 1e3 * max(times), "switches_during_query": len(times)}


def print_match(m: dict, n: int) -> None:
    print(f"select & match on {n:,} chars ({m['match_selected_units']} units selected, {m['match_runs']} runs "
          f"listed): {m['match_query_s']:.2f} s server side; baseline, reading the same states: "
          f"{m['match_read_only_s']:.2f} s (ratio {m['match_query_s'] / m['match_read_only_s']:.2f})", flush=True)
    print(f"unit switch while the query runs: median {m['switch_during_query_ms_median']:.1f} ms, max "
          f"{m['switch_during_query_ms_max']:.1f} ms over {m['switches_during_query']} switches", flush=True)


def rss_child(path: str) -> None:
    """(Run in a fresh process.) Serve, load the page, switch a few units, print VmRSS in MB."""
    seconds, server = start_server_thread(Path(path))
    switch_figures(Path(path), 6)
    rss = proc_status_bytes("VmRSS") / 2**20
    print(json.dumps({"rss_mb": rss, "first_doc_s": seconds}))


def rss_of(path: Path) -> dict:
    out = subprocess.run([sys.executable, __file__, "--rss-child", str(path)], capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def cli_first_page(path: Path) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    proc = subprocess.Popen(["rnnviz", "serve", str(path), "--no-browser", "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                get(f"http://127.0.0.1:{port}/")
                return time.perf_counter() - t0
            except OSError:
                if proc.poll() is not None:
                    raise RuntimeError("rnnviz serve exited early")
                time.sleep(0.05)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200k chars instead of 2M (under a minute)")
    ap.add_argument("--chars", type=int, help="size of the big dump")
    ap.add_argument("--dir", help="keep the dumps here (reused when present) instead of a temp dir")
    ap.add_argument("--match-only", action="store_true", help="measure select & match only")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        return rss_child(args.rss_child)
    machine = cpu()
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; has {', '.join(machine['flags']) or 'none of'} "
          f"(no {', '.join(machine['no']) or '-'})", flush=True)
    big_n = args.chars or (200_000 if args.quick else 2_000_000)
    small_n = 100_000
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="rnnviz-serve-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        dumps = {}
        for label, n in (("big", big_n),) + ((("small", small_n),) if not args.match_only else ()):
            path = work / f"serve_{n}.h5"
            if not path.exists():
                t0 = time.perf_counter()
                write_dump(path, n)
                print(f"wrote {path} ({n:,} chars, {path.stat().st_size / 2**30:.2f} GiB) "
                      f"in {time.perf_counter() - t0:.1f} s", flush=True)
            dumps[label] = path
        match = match_figures(dumps["big"])
        print_match(match, big_n)
        match_met = {"match_query": match["match_query_s"] <= 2,
                     "switch_during_query": match["switch_during_query_ms_max"] < 200}
        if args.match_only:
            print(json.dumps({"big_chars": big_n, **{k: round(v, 3) for k, v in match.items()},
                              "targets_met": match_met}))
            return
        first_s, _ = start_server_thread(dumps["big"])
        print(f"server start -> first document ({big_n:,} chars, in-process): {first_s:.2f} s", flush=True)
        cli_s = cli_first_page(dumps["big"])
        print(f"`rnnviz serve` cold start -> first page (imports included): {cli_s:.2f} s", flush=True)
        sw = switch_figures(dumps["big"], 10 if args.quick else 30)
        print(f"unit switch on a {sw['window_chars']:,}-char window: median {sw['switch_ms_median']:.1f} ms, "
              f"max {sw['switch_ms_max']:.1f} ms; message <= {sw['switch_bytes_max'] / 1e3:.1f} KB", flush=True)
        print(f"baseline, reloading the window: {sw['window_reload_ms']:.1f} ms, "
              f"{sw['window_reload_bytes'] / 1e3:.1f} KB -> the switch sends "
              f"{sw['window_reload_bytes'] / sw['switch_bytes_max']:.1f}x less", flush=True)
        ex = extras_figures(dumps["big"], 10 if args.quick else 30)
        print(f"with an 8-unit heatmap and the top-5 guesses ({ex['extras_window_chars']:,}-char window): unit switch "
              f"median {ex['switch_with_extras_ms_median']:.1f} ms, max {ex['switch_with_extras_ms_max']:.1f} ms, "
              f"message <= {ex['switch_with_extras_bytes_max'] / 1e3:.1f} KB", flush=True)
        print(f"  turning the heatmap on: {ex['heat8_on_ms']:.1f} ms, {ex['heat8_on_bytes'] / 1e3:.1f} KB; changing one "
              f"of its units: {ex['heat_change_one_ms']:.1f} ms, {ex['heat_change_one_bytes'] / 1e3:.1f} KB; the guesses "
              f"on: {ex['strip5_on_ms']:.1f} ms, {ex['strip5_on_bytes'] / 1e3:.1f} KB", flush=True)
        print(f"  page turn with both: {ex['page_turn_with_extras_ms']:.1f} ms, {ex['page_turn_with_extras_bytes'] / 1e3:.1f} KB; "
              f"baseline without: {ex['page_turn_plain_ms']:.1f} ms, {ex['page_turn_plain_bytes'] / 1e3:.1f} KB", flush=True)
        rss_big, rss_small = rss_of(dumps["big"]), rss_of(dumps["small"])
        print(f"server RSS: {rss_big['rss_mb']:.0f} MB with {big_n:,} chars, {rss_small['rss_mb']:.0f} MB with "
              f"{small_n:,} (ratio {rss_big['rss_mb'] / rss_small['rss_mb']:.2f})", flush=True)
        result = {"big_chars": big_n, "small_chars": small_n, "first_doc_s": round(first_s, 3),
                  "cli_first_page_s": round(cli_s, 3),
                  **{k: round(v, 3) if isinstance(v, float) else v for k, v in sw.items()},
                  "switch_vs_reload_bytes": round(sw["window_reload_bytes"] / sw["switch_bytes_max"], 2),
                  "rss_big_mb": round(rss_big["rss_mb"], 1), "rss_small_mb": round(rss_small["rss_mb"], 1),
                  "rss_ratio": round(rss_big["rss_mb"] / rss_small["rss_mb"], 3),
                  **{k: round(v, 3) for k, v in match.items()},
                  **{k: round(v, 3) if isinstance(v, float) else v for k, v in ex.items()},
                  "targets_met": {**match_met, "first_doc": first_s < 2, "switch": sw["switch_ms_max"] < 50,
                                  "bytes": sw["switch_bytes_max"] < 200_000,
                                  "switch_with_extras": ex["switch_with_extras_ms_max"] < 50,
                                  "bytes_with_extras": ex["switch_with_extras_bytes_max"] < 200_000,
                                  "rss": rss_big["rss_mb"] < 1.15 * rss_small["rss_mb"]}}
        print(json.dumps(result))
    finally:
        if not args.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("BOKEH_LOG_LEVEL", "warn")
    main()
