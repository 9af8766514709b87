"""A GRU and a vanilla RNN trained through the CLI go through dump, analyze, the app (in
process and in headless Chromium), the export and rnnviz.open."""
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from bokeh.document import Document
from click.testing import CliRunner

import rnnviz
from rnnviz.app.document import make_doc
from rnnviz.cli import cli
from rnnviz.dumpfile.tables import read_table
from rnnviz.export import export_span

from test_browser import browser  # noqa: F401  (the headless Chromium fixture)
from test_browser import MODEL_TEXT, READY, VALUES, _text_pixels, _wait, changed_fraction, serving

TINY = ["--layers", "2", "--hidden", "16", "--embedding", "8", "--seq-length", "25",
        "--batch-size", "16", "--eval-every", "40", "--max-steps", "40"]
H = 16


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r.output


def trained_dump(folder, text_file, cell: str):
    """train --cell, dump and analyze through the CLI: the dump of 8,000 chars."""
    ckpt, out = folder / f"{cell}.pt", folder / f"{cell}.h5"
    invoke("train", text_file, "-o", ckpt, "--cell", cell, *TINY)
    invoke("dump", "--quiet", ckpt, text_file, "-o", out, "--max-chars", "8000")
    invoke("analyze", out)
    return out


@pytest.fixture(scope="module")
def gru_dump(tmp_path_factory, stdlib_text_file):
    return trained_dump(tmp_path_factory.mktemp("gru"), stdlib_text_file, "gru")


@pytest.fixture(scope="module")
def rnn_dump(tmp_path_factory, stdlib_text_file):
    return trained_dump(tmp_path_factory.mktemp("rnn"), stdlib_text_file, "rnn")


def new_app(path, unit=None):
    return make_doc(Document(), [str(path)], initial_unit=unit)


def test_gru_dump_is_analysed_with_saturation_of_r_and_z(gru_dump):
    with rnnviz.open(gru_dump) as d:
        assert d.cell == "gru" and sorted(d) == sorted(f"layer{l}.{k}" for l in range(2)
                                                        for k in ("h", "gate_r", "gate_z", "gate_n"))
        assert float(np.min(d["layer0.gate_n"][:])) < 0 < float(np.max(d["layer0.gate_n"][:]))
        sat = read_table(d._f["analysis/saturation"])
        ranking = read_table(d._f["analysis/ranking"])
    assert sorted(set(sat["gate"])) == ["gate_r", "gate_z"] and len(sat) == 2 * 2 * H
    assert set(ranking["kind"]) == {"h", "gate_r", "gate_z", "gate_n"}


def test_the_app_shows_a_gru_dump(gru_dump):
    app = new_app(gru_dump)
    assert "GRU, 2 layer(s)" in app.controls.title.text
    assert app.controls.kind.options == ["h", "gate_r", "gate_z", "gate_n"]
    assert app.discover.kinds.labels == ["h", "gate_r", "gate_z", "gate_n"]
    assert sorted(app.saturation.sources) == ["gate_r", "gate_z"]
    assert all(len(s.data["unit"]) == 2 * H for s in app.saturation.sources.values())
    app.saturation.sources["gate_z"].selected.indices = [5]      # a click on a dot shows that unit
    assert app.unit == app.saturation.sources["gate_z"].data["unit"][5]
    app.controls.kind.value, app.controls.index.value = "gate_n", 2
    assert app.unit == "layer" + app.controls.layer.value + ".gate_n[2]"
    assert "candidate (GRU, tanh)" in app.controls.unit_line.text
    assert "-1 … +1" in app.controls.legend.text and "range of tanh" in app.controls.legend.text


def test_the_app_and_export_show_a_vanilla_rnn_dump(rnn_dump, tmp_path):
    with rnnviz.open(rnn_dump) as d:
        assert d.cell == "rnn_tanh" and sorted(d) == ["layer0.h", "layer1.h"]
        assert len(read_table(d._f["analysis/saturation"])) == 0  # no sigmoid gates
    app = new_app(rnn_dump, "layer1.h[3]")
    assert app.controls.kind.options == ["h"] and not app.saturation.sources
    assert "no sigmoid gates" in app.saturation.note.text
    svg = export_span(rnn_dump, "layer1.h[3]", 0, 400, tmp_path / "h3.svg").read_text()
    assert svg.startswith("<svg") or "<svg" in svg[:200]


def test_a_point_the_cell_does_not_have_is_refused_in_one_line(gru_dump):
    for args in (["serve", gru_dump, "--no-browser", "--unit", "layer0.c[1]"],
                 ["analyze", gru_dump, "--points", "layer0.gate_f"]):
        r = subprocess.run([sys.executable, "-m", "rnnviz", *map(str, args)], capture_output=True, text=True, timeout=120)
        lines = r.stderr.strip().splitlines()
        assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
        assert "layer0.c" in lines[0] or "a GRU has no gate_f" in lines[0]


# -- in a real browser ---------------------------------------------------------------------

@pytest.mark.browser
def test_a_gru_dump_in_headless_chromium(gru_dump, browser):
    with serving(gru_dump) as port:
        browser.get(f"http://127.0.0.1:{port}/?unit=layer0.gate_r[1]")
        assert _wait(lambda: browser.execute_script(READY), what="the document") > 1000
        assert "reset gate (GRU)" in browser.execute_script(MODEL_TEXT, "unit_line")
        options = browser.execute_script("return Bokeh.documents[0].get_model_by_name('unit_kind').options")
        assert options == ["h", "gate_r", "gate_z", "gate_n"]
        dots = browser.execute_script(
            "return Bokeh.documents[0].get_model_by_name('saturation_gate_z').data.x.length")
        assert dots == 2 * H
        time.sleep(1.0)
        before_values, before = browser.execute_script(VALUES), _text_pixels(browser)
        # The tanh candidate: a signed kind, drawn with the diverging map.
        browser.execute_script("Bokeh.documents[0].get_model_by_name('unit_kind').value = 'gate_n'")
        _wait(lambda: "layer0.gate_n[1]" in browser.execute_script(MODEL_TEXT, "unit_line"), timeout=20,
              what="the gate_n unit")
        assert browser.execute_script(VALUES) != before_values
        assert min(browser.execute_script(VALUES)) < 0
        time.sleep(1.0)
        changed = changed_fraction(before, _text_pixels(browser))
        assert changed > 0.05, f"only {changed:.1%} of the text view changed colour"
        severe = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not severe, severe
        if os.environ.get("RNNVIZ_SCREENSHOT"):
            browser.save_screenshot(os.environ["RNNVIZ_SCREENSHOT"])


def test_lstmvis_export_of_a_gru_dump_marks_r_and_z_unsigned_and_n_signed(gru_dump, tmp_path):
    import yaml
    from rnnviz.lstmvis import export_lstmvis
    export_lstmvis(gru_dump, tmp_path / "lv")
    types = yaml.safe_load((tmp_path / "lv" / "lstm.yml").read_text())["states"]["types"]
    by_path = {t["path"]: t for t in types}
    assert set(by_path) == {f"/states/layer{l}/{k}" for l in range(2) for k in ("h", "gate_r", "gate_z", "gate_n")}
    assert by_path["/states/layer0/gate_z"].get("unsigned") and not by_path["/states/layer0/gate_n"].get("unsigned")
    assert by_path["/states/layer1/gate_n"]["transform"] == "none"
