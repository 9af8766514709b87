"""rnnviz export --lstmvis: the folder read the way LSTMVis's loader reads it."""
import hashlib
import os

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from rnnviz.analyze import analyze_dump
from rnnviz.cli import cli
from rnnviz.lstmvis import STAND_INS
from test_dumpfile import planted


@pytest.fixture
def analysed(tmp_path):
    path = tmp_path / "d.h5"
    text, c, h = planted(path)
    analyze_dump(path, features=["in_string", "in_comment", "depth"], max_chars=None)
    return path, text, c, h


def export(*args):
    return CliRunner().invoke(cli, ["export", *map(str, args)])


def load_like_lstmvis(folder):
    """What LSTMVis's data handler does with the folder: the YAML, every .h5/.hdf5 entry of
    `files` opened as HDF5 relative to the folder, every .dict/.txt entry split into `token id`."""
    config = yaml.safe_load((folder / "lstm.yml").read_text())
    files, dicts = {}, {}
    for alias, name in config["files"].items():
        full = os.path.join(folder, name)
        assert os.path.isfile(full), name
        if name.endswith((".h5", ".hdf5")):
            files[alias] = h5py.File(full, "r")
        elif name.endswith((".dict", ".txt")):
            pairs = [line.split() for line in open(full, encoding="utf-8")]
            assert all(len(p) == 2 for p in pairs), name         # exactly `token id` on every line
            dicts[alias] = {int(i): tok for tok, i in pairs}
        else:
            pytest.fail(f"{alias}: {name} is neither HDF5 nor a dict for LSTMVis")
    return config, files, dicts


def test_export_is_a_folder_lstmvis_loads(analysed, tmp_path):
    path, text, c, h = analysed
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = tmp_path / "lv" / "demo"
    (tmp_path / "lv").mkdir()
    result = export("--lstmvis", out, path, "--negate", "layer0.c[1],layer1.h[2]")
    assert result.exit_code == 0, result.output
    assert "lstm_server.py -dir" in result.output
    config, files, dicts = load_like_lstmvis(out)
    n = len(text)
    try:
        ws = config["word_sequence"]
        ids = files[ws["file"]][ws["path"]]
        assert ids.shape == (n,)
        vocab = dicts[ws["dict_file"]]
        assert sorted(vocab) == list(range(len(vocab))) and len(set(vocab.values())) == len(vocab)
        assert not any(ch.isspace() for tok in vocab.values() for ch in tok)
        assert "".join(vocab[i] for i in ids[:40]) == "".join(STAND_INS.get(ch, ch) for ch in text[:40])
        default = config["states"]["file"]
        layers = {}
        for entry in config["states"]["types"]:
            ds = files[entry.get("file", default)][entry["path"]]
            assert ds.ndim == 2 and ds.shape[0] == n
            layers[entry["type"]] = (entry["layer"], entry.get("transform", "tanh"), entry.get("unsigned", False))
        assert layers["c"] == (1, "tanh", False) and layers["h"] == (2, "none", False)
        # The negated copies are minus the dump's columns, under the same cell numbers.
        side = files["side"]
        np.testing.assert_array_equal(side["negated/layer0/c"][:, 1], -c[:, 1])
        np.testing.assert_array_equal(side["negated/layer1/h"][:, 2], -h[:, 2])
        assert not side["negated/layer0/c"][:, [0, 2, 3]].any()
        for name, m in config["meta"].items():
            ds = files[m["file"]][m["path"]]
            assert ds.shape[0] == n, name
            if "weights_path" in m:
                assert files[m["file"]][m["weights_path"]].shape == ds.shape == (n, 3)
            if "dict" in m:
                assert m["dict"] in dicts
        assert {"in_string", "in_comment", "source", "top_predictions"} <= set(config["meta"])
        assert "depth" not in config["meta"]                          # only binary features as tracks
        # The source index changes exactly where each file starts.
        source = files["side"][config["meta"]["source"]["path"]][()]
        assert list(np.flatnonzero(np.diff(source)) + 1) == [1000]
        assert [dicts["sources"][i] for i in np.unique(source)] == ["a.py", "b.py"]
    finally:
        for f in files.values():
            f.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before    # the dump is never written


def test_negate_signed_copies_every_signed_unit(analysed, tmp_path):
    path, text, c, h = analysed
    assert export("--lstmvis", tmp_path / "lv", path, "--negate-signed", "--points", "layer0.c").exit_code == 0
    config, files, _ = load_like_lstmvis(tmp_path / "lv")
    with files["side"] as side, files["dump"]:
        np.testing.assert_array_equal(side["negated/layer0/c"][()], -c)
        assert "negated/layer1" not in side and [t["type"] for t in config["states"]["types"]][0] == "c"


@pytest.mark.parametrize("args, message", [
    (["--points", "layer0.gate_i"], "layer0.gate_i not recorded in this dump"),
    (["--negate", "layer0.c[9]"], "index out of range"),
    (["--points", "layer0.c", "--negate", "layer1.h[0]"], "not among the exported points"),
    (["--negate", "layer0.c[1]", "--negate-signed"], "contradict"),
])
def test_bad_input_is_one_line(analysed, tmp_path, args, message):
    path, *_ = analysed
    result = export("--lstmvis", tmp_path / "lv", path, *args)
    assert result.exit_code == 1 and result.output.startswith("Error: ")
    assert len(result.output.strip().splitlines()) == 1 and message in result.output, result.output
    assert not (tmp_path / "lv" / "lstm.yml").exists()


def test_an_existing_folder_needs_force(analysed, tmp_path):
    path, *_ = analysed
    out = tmp_path / "lv"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = export("--lstmvis", out, path)
    assert result.exit_code == 1 and "exists; pass --force" in result.output
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]
    assert export("--lstmvis", out, path, "--force").exit_code == 0
    assert (out / "notes.txt").read_text() == "mine" and (out / "lstm.yml").exists()


def test_gates_are_unsigned_and_never_negated(tmp_path):
    from dumpfactory import write_synthetic_dump
    path = tmp_path / "g.h5"
    rng = np.random.default_rng(0)
    write_synthetic_dump(path, "abc def\n" * 50, {"layer0.gate_f": rng.random((400, 4)).astype(np.float32),
                                                  "layer0.gate_g": rng.uniform(-1, 1, (400, 4)).astype(np.float32)})
    result = export("--lstmvis", tmp_path / "lv", path, "--negate", "layer0.gate_f[1]")
    assert result.exit_code == 1 and "a sigmoid gate is never negative" in result.output
    assert export("--lstmvis", tmp_path / "lv", path).exit_code == 0
    config, files, _ = load_like_lstmvis(tmp_path / "lv")
    for f in files.values():
        f.close()
    types = {t["type"]: t for t in config["states"]["types"]}
    assert types["gate_f"]["unsigned"] is True and types["gate_g"]["transform"] == "none"
    assert "unsigned" not in types["gate_g"] and "meta" in config and "source" in config["meta"]
