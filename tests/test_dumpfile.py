"""rnnviz.dumpfile owns the file: nothing else imports h5py; rnnviz.open for Python users."""
import ast
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import rnnviz
from dumpfactory import write_synthetic_dump
from rnnviz.analyze import analyze_dump
from rnnviz.errors import RnnvizError
from rnnviz.render import colours

ROOT = Path(rnnviz.__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_only_dumpfile_imports_h5py():
    files = sorted((ROOT / "rnnviz").rglob("*.py")) + sorted((ROOT / "benchmarks").rglob("*.py"))
    assert len(files) > 30
    owner = ROOT / "rnnviz" / "dumpfile"
    users = [str(p.relative_to(ROOT)) for p in files if "h5py" in _imports(p) and owner not in p.parents]
    assert users == []
    assert "h5py" in _imports(owner / "schema.py")       # the check sees imports at all


def _modules_after(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys; print(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_layering():
    light = _modules_after("import rnnviz, rnnviz.dumpfile, rnnviz.render.figure; rnnviz.open")
    assert "rnnviz.dumpfile" in light
    assert not {m for m in light if m.split(".")[0] in ("torch", "bokeh")}
    heavy = _modules_after("import rnnviz.analyze, rnnviz.dump, rnnviz.export")
    assert "torch" in heavy and "rnnviz.dump" in heavy
    assert not {m for m in heavy if m.startswith("rnnviz.app")}


def planted(path, n=3000):
    """Two sources; layer0.c[1] is +2 inside quotes and -2 elsewhere, layer1.h[0] is i / n."""
    rng = np.random.default_rng(1)
    line = 'name = "value"  # comment\n'
    text = (line * (n // len(line) + 1))[:n]
    inside = np.zeros(n, np.float32)
    on = False
    for i, ch in enumerate(text):
        if ch == '"':
            on = not on
        inside[i] = on
    c = rng.normal(0, 0.3, (n, 4)).astype(np.float32)
    c[:, 1] = np.where(inside > 0, 2.0, -2.0)
    h = np.tanh(rng.normal(0, 1, (n, 4))).astype(np.float32)
    h[:, 0] = np.arange(n) / n
    write_synthetic_dump(path, text, {"layer0.c": c, "layer1.h": h}, sources=[("a.py", 1000), ("b.py", n - 1000)])
    return text, c, h


def test_open_reads_text_sources_states_and_units(tmp_path):
    path = tmp_path / "d.h5"
    text, c, h = planted(path)
    with rnnviz.open(path) as d:
        assert d.text == text
        assert list(d.sources["name"]) == ["a.py", "b.py"] and isinstance(d.sources["name"][0], str)
        assert list(d) == ["layer0.c", "layer1.h"] and "layer1.c" not in d
        col = d["layer0.c"][100:200, 1]                       # an h5py dataset, sliced like one
        np.testing.assert_array_equal(col, c[100:200, 1])
        np.testing.assert_array_equal(d.unit("layer1.h[0]"), h[:, 0])
        assert d.unit("layer0.c[1]").dtype == np.float32
        with pytest.raises(RnnvizError, match="recorded layer0.c, layer1.h, not layer1.c"):
            d.unit("layer1.c[0]")
        with pytest.raises(RnnvizError, match="out of range"):
            d.unit("layer0.c[9]")
        with pytest.raises(KeyError, match="layer0.h"):
            d["layer0.h"]
        with pytest.raises(RnnvizError, match="not analysed yet; run `rnnviz analyze"):
            d.ranking
        with pytest.raises(RnnvizError, match="read-only"):
            d.write_analysis(features=[], tables={}, options={})
    analyze_dump(path, features=["in_string", "in_comment"], max_chars=None)
    with rnnviz.open(path) as d:
        best = d.ranking[d.ranking["feature"] == "in_string"].iloc[0]
        assert best["unit"] == "layer0.c[1]" and best["score"] > 0.9
        assert list(d.features.columns) == ["in_string", "in_comment"] and len(d.features) == len(text)
        assert d.feature_kinds == {"in_string": "binary", "in_comment": "binary"}
        np.testing.assert_array_equal(d.features["in_comment"].to_numpy() > 0,
                                      [ch != "\n" and line_has_comment_before(text, i) for i, ch in enumerate(text)])


def line_has_comment_before(text: str, i: int) -> bool:
    start = text.rfind("\n", 0, i) + 1
    return "#" in text[start:i + 1]


def test_record_returns_the_same_kind_of_mapping(tmp_path):
    lstm = torch.nn.LSTM(3, 5, num_layers=2)
    rec = rnnviz.record(lstm, torch.randn(7, 3), kernel="off")
    path = tmp_path / "d.h5"
    planted(path)
    with rnnviz.open(path) as d:
        for mapping in (rec, d):
            assert set(mapping.keys()) == set(iter(mapping)) and len(mapping) == len(list(mapping))
            point = next(iter(mapping))
            assert mapping.unit(f"{point}[2]").shape[0] == mapping[point].shape[0]
    assert len(rec) == 12 and "layer1.gate_f" in rec
    torch.testing.assert_close(rec.unit("layer1.c[3]"), rec["layer1.c"][:, 3])


def test_show_colours_each_character_as_the_app_does(tmp_path):
    path = tmp_path / "d.h5"
    text, c, _ = planted(path)
    with rnnviz.open(path) as d:
        span = d.show("layer0.c[1]", start=990, stop=1060)
        page = span._repr_html_()
    assert "<script" not in page and "http" not in page
    # The window's scale for the unbounded cell state: symmetric about zero.
    low, high = colours.limits("c", c[990:1060, 1], "auto")
    expected = colours.to_hex(c[990:1060, 1], low, high, colours.palette("c"))
    got = [part.split(";")[0].split('"')[0] for part in page.split('<span style="background:')[1:]][:70]
    assert got == expected and len(set(got)) == 2                 # inside and outside the quotes
    assert span.breaks == (10,)                                   # b.py starts a new line
    with rnnviz.open(path) as d, pytest.raises(RnnvizError, match="start < end"):
        d.show("layer0.c[1]", start=2990, stop=4000)


def test_open_works_while_serve_holds_the_file_and_analyze_says_who_holds_it(tmp_path):
    path = tmp_path / "d.h5"
    planted(path)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from rnnviz.app.store import open_view; "
         "open_view(sys.argv[1]).values('layer0.c', 1, 0, 100); print('open', flush=True); time.sleep(60)",
         str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        with rnnviz.open(path) as d:
            assert d.unit("layer0.c[1]")[0] == -2.0
        started = time.monotonic()
        with pytest.raises(RnnvizError, match="open in another program.*--no-store"):
            analyze_dump(path, features=["in_string"])
        assert time.monotonic() - started < 30
        with pytest.raises(RnnvizError, match="open in another program"):
            rnnviz.open(path, "r+")
    finally:
        holder.kill()
        holder.wait()


def _chunked(path, n=1000, h=100, dtype="float16", chunks=(256, 64)):
    """A dump whose arrays end inside a chunk both ways (1000 rows of 256, 100 units of 64)."""
    from rnnviz.dumpfile.writer import write_dump
    import pandas as pd
    rng = np.random.default_rng(3)
    text = ("ab(c) 'd'\n" * (n // 10 + 1))[:n]
    states = {"layer0.c": rng.normal(0, 2, (n, h)).astype(dtype), "layer0.h": rng.random((n, h)).astype(dtype)}
    write_dump(path, text, states, vocab=["\ufffd"] + sorted(set(text)), ids=np.zeros(n, np.int32),
               sources=pd.DataFrame({"name": ["a.py"], "start": [0], "length": [n], "size_bytes": [n],
                                     "sha256": ["0" * 64]}),
               loss=np.ones(n, np.float32), topk_ids=np.zeros((n, 2), np.int32),
               topk_probs=np.full((n, 2), 0.5, np.float32), dtype=dtype, chunks=chunks,
               header={"num_layers": 1, "hidden_size": h, "unknown_chars": 0, "checkpoint": "synthetic",
                       "model_config": {"num_layers": 1, "hidden_size": h}, "versions": {"rnnviz": "test"}})
    return states


@pytest.mark.parametrize("dtype", ["float16", "float32"])
def test_the_analysis_reads_chunks_directly_and_gets_what_h5py_reads(tmp_path, dtype):
    from rnnviz.dumpfile.direct import ChunkReader
    from rnnviz.exact import rank_kernel
    if rank_kernel() is None:
        pytest.skip("no analysis kernel on this machine: h5py reads")
    path = tmp_path / "d.h5"
    states = _chunked(path, dtype=dtype)
    with rnnviz.open(path) as d:
        for point, full in states.items():
            assert ChunkReader.open(d[point], path) is not None       # the direct path is what is tested
            blocks = [(3, 400), (511, 489)]                            # across chunk rows, to the last row
            laid = np.concatenate([full[3:403], full[511:1000]])
            read = d.reader(point, blocks)
            assert read.direct
            for lo, hi in [(0, len(laid)), (0, 1), (255, 700), (888, 889)]:
                assert np.array_equal(read(lo, hi).view(np.uint8), laid[lo:hi].view(np.uint8))
                for cols in ([0], [5, 63, 64, 99], [64, 65, 70], list(range(100))):
                    got = read(lo, hi, np.array(cols))
                    assert np.array_equal(got.view(np.uint8), np.ascontiguousarray(laid[lo:hi][:, cols]).view(np.uint8))
            for lo, hi in [(0, 400), (3, 403), (400, 889), (10, 17)]:     # unit by unit, as the kernel takes them
                got = read(lo, hi, by_unit=True)
                assert got.flags.f_contiguous and np.array_equal(got, laid[lo:hi])
                again = read(lo, hi, out=got, by_unit=True)           # into the same buffer
                assert again is got and np.array_equal(again, laid[lo:hi])
                assert np.array_equal(read(lo, hi, np.array([1, 64, 99]), by_unit=True), laid[lo:hi][:, [1, 64, 99]])
                padded = np.full((hi - lo + 11, 40), 7, full.dtype, order="F")   # units further apart
                into = read(lo, hi, np.arange(60, 100), out=padded[:hi - lo], by_unit=True)
                assert np.shares_memory(into, padded) and np.array_equal(into, laid[lo:hi, 60:])
                assert (padded[hi - lo:] == 7).all()                          # the gaps untouched


def test_compressed_arrays_and_cut_files_are_read_through_h5py(tmp_path):
    import h5py
    from rnnviz.dumpfile.direct import ChunkReader
    from rnnviz.exact import rank_kernel
    if rank_kernel() is None:
        pytest.skip("no analysis kernel on this machine: h5py reads")
    path = tmp_path / "d.h5"
    states = _chunked(path)
    packed = tmp_path / "packed.h5"
    with h5py.File(path) as src, h5py.File(packed, "w") as dst:
        for key, value in src.attrs.items():
            dst.attrs[key] = value
        for name in src:
            src.copy(name, dst)
        del dst["states/layer0/c"]
        dst.create_dataset("states/layer0/c", data=states["layer0.c"], chunks=(256, 64), compression="gzip")
    with rnnviz.open(packed) as d:
        assert ChunkReader.open(d["layer0.c"], packed) is None
        assert not d.reader("layer0.c", [(0, 1000)]).direct
        assert np.array_equal(d.reader("layer0.c", [(0, 1000)])(0, 1000), states["layer0.c"])
    with rnnviz.open(path) as d:
        reader = ChunkReader.open(d["layer0.h"], path)
        assert reader is not None
        with open(path, "r+b") as f:               # cut after the chunks were listed
            f.truncate(int(reader._offsets.numpy().min()) + 10)
        with pytest.raises(RnnvizError, match="truncated or damaged"):
            reader.read(0, 1000)
        assert ChunkReader.open(d["layer0.h"], path) is None       # listed again: past the end, so h5py
