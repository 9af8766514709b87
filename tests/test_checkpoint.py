"""Checkpoints from anywhere: every field checked before anything is built from it, one
line naming the bad field, no torch warning, and no model built for weights that are not there."""
import os
import select
import subprocess
import sys
import time
import zipfile

import pytest
import torch
from click.testing import CliRunner

import rnnviz.checkpoint
from rnnviz.cli import cli
from rnnviz.checkpoint import load_checkpoint
from rnnviz.errors import RnnvizError
from test_dump import make_ckpt

RNNVIZ = [sys.executable, "-m", "rnnviz"]  # this checkout's rnnviz, not whichever is on PATH


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("model"))


def _edited(good, tmp_path, edit, name="bad.pt"):
    blob = torch.load(good, weights_only=True)
    edit(blob)
    out = tmp_path / name
    torch.save(blob, out)
    return out


def _set(path, value):
    def edit(blob):
        *parents, last = path
        d = blob
        for key in parents:
            d = d[key]
        d[last] = value
    return edit


CASES = [
    ("format_version", _set(["format_version"], "9")),
    ("config.hidden_size", _set(["config", "hidden_size"], "16")),
    ("config.num_layers", _set(["config", "num_layers"], 0)),
    ("config.dropout", _set(["config", "dropout"], 1.5)),
    ("vocab", lambda b: b.__setitem__("vocab", b["vocab"][:-5])),
    ("vocab[3]", lambda b: b["vocab"].__setitem__(3, "ab")),
    ("state_dict.head.weight", lambda b: b["state_dict"].__setitem__("head.weight", torch.zeros(3, 3))),
    ("state_dict.rnn.weight_hh_l1", lambda b: b["state_dict"].pop("rnn.weight_hh_l1")),
    ("meta", _set(["meta"], "a string")),
    ("meta.history[0].step", _set(["meta", "history"], [{}])),
    ("meta.samples", _set(["meta", "samples"], {"step": 1})),
]


@pytest.mark.parametrize("field, edit", CASES, ids=[c[0] for c in CASES])
def test_each_bad_field_is_one_line_naming_it(good, tmp_path, field, edit):
    bad = _edited(good, tmp_path, edit)
    text = tmp_path / "t.txt"
    text.write_text("hello world\n" * 20)
    for args in (["info", bad], ["sample", bad, "-n", "20"], ["dump", "--quiet", bad, text, "-o", tmp_path / "d.h5"]):
        r = CliRunner().invoke(cli, [str(a) for a in args])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:"), (args[0], r.output)
        assert f"field {field}:" in lines[0], lines[0]
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.partial").exists()


def test_a_huge_config_without_its_weights_builds_no_model(good, tmp_path, monkeypatch):
    bad = _edited(good, tmp_path, _set(["config", "hidden_size"], 40_000))
    built = []
    real = rnnviz.checkpoint.CharLSTM
    monkeypatch.setattr(rnnviz.checkpoint, "CharLSTM", lambda *a, **k: built.append(a) or real(*a, **k))
    with pytest.raises(RnnvizError, match=r"field state_dict\.embed\.weight|field state_dict\.head\.weight|"
                                          r"field state_dict\.lstm"):
        load_checkpoint(bad)
    assert built == []
    load_checkpoint(good)
    assert len(built) == 1          # the spy sees a model when one is built


def test_a_zip_with_a_garbage_pickle_is_one_line_without_torch_warnings(good, tmp_path):
    bad = tmp_path / "garbage.pt"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(bad, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            dst.writestr(item, b"\x80\x04\x95" if item.filename.endswith("data.pkl") else data)
    r = subprocess.run([*RNNVIZ, "info", str(bad)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("Error:") and "Warning" not in r.stderr


def test_sample_streams_its_output_and_bounds_the_length(good, tmp_path):
    proc = subprocess.Popen([*RNNVIZ, "sample", str(good), "-n", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first, deadline = b"", time.monotonic() + 120
    try:
        while len(first) < 200 and time.monotonic() < deadline:
            if select.select([proc.stdout], [], [], 1)[0]:
                first += os.read(proc.stdout.fileno(), 200)
        # it arrives while the million are still being drawn
        assert len(first) >= 200 and proc.poll() is None, proc.poll()
    finally:
        proc.kill()
        proc.communicate()
    r = subprocess.run([*RNNVIZ, "sample", str(good), "-n", "1000000000"], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1
    assert "--length must be 0..1,000,000" in r.stderr
