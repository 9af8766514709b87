"""rnnviz dump: the documented layout, exact values, safe writes, resume and bad input."""
import hashlib
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rnnviz.checkpoint import save_checkpoint
from rnnviz.cli import cli
from rnnviz.dump import DumpOptions, describe_dump, dump, open_dump, plan
from rnnviz.errors import RnnvizError
from rnnviz.dumpfile.tables import json_attr, read_table
from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
from rnnviz.names import all_points, h5_path
from rnnviz.recording import record_naive

from dumpfactory import write_synthetic_dump

SOURCE = Path(textwrap.__file__).read_text()


def make_ckpt(folder: Path, hidden: int = 16) -> Path:
    """A tiny random 2-layer model whose vocabulary lacks 'é' and '~'."""
    vocab = Vocab.from_text(SOURCE.replace("~", ""))
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), num_layers=2, hidden_size=hidden, embedding_size=8))
    save_checkpoint(folder / f"model{hidden}.pt", model, vocab, meta={})
    return folder / f"model{hidden}.pt"


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("model"))


@pytest.fixture
def texts(tmp_path):
    """Three files of different lengths (so batches shrink as short ones end)."""
    pieces = {"a.py": SOURCE[:700], "b.py": SOURCE[3000:3300] + "é~", "c.py": SOURCE[5000:5050]}
    for name, text in pieces.items():
        (tmp_path / name).write_text(text)
    return [tmp_path / name for name in pieces]


def run_cli(*args):
    return CliRunner().invoke(cli, ["dump", "--quiet", *map(str, args)])


def test_dump_follows_the_documented_layout(ckpt, texts, tmp_path):
    out = tmp_path / "d.h5"
    result = run_cli(ckpt, *texts, "-o", out)
    assert result.exit_code == 0, result.output
    assert "2 characters not in the model's vocabulary" in result.stderr
    assert "chars/s with the compiled kernel (" in result.stderr or "chars/s with pure PyTorch" in result.stderr
    full = "".join(p.read_text() for p in texts)
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert (a["format"], a["schema_version"], a["complete"]) == ("rnnviz-dump", 1, 1)
        assert (a["n_chars"], a["num_layers"], a["hidden_size"], a["topk"]) == (len(full), 2, 16, 5)
        assert (a["dtype"], a["compression"], a["unknown_chars"]) == ("float16", "none", 2)
        assert json_attr(f, "recorded") == all_points(2)
        assert json_attr(f, "model_config")["hidden_size"] == 16
        assert a["checkpoint_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
        assert {"rnnviz", "torch", "python"} <= set(json_attr(f, "versions"))
        assert a["created"] and a["command"].startswith("rnnviz dump")
        assert "progress" not in f and "resume_key" not in a  # bookkeeping of .partial only
        assert "".join(map(chr, f["text/codes"][:])) == full
        vocab = json_attr(f, "vocab")
        ids = f["text/ids"][:]
        assert "".join(vocab[i] for i in ids) == full.replace("é", vocab[0]).replace("~", vocab[0])
        sources = read_table(f["sources"])
        assert list(sources["name"]) == [str(p) for p in texts]
        assert list(sources["length"]) == [len(p.read_text()) for p in texts]
        assert list(sources["start"]) == [0, 700, 1002]
        assert list(sources["sha256"]) == [hashlib.sha256(p.read_bytes()).hexdigest() for p in texts]
        for point in all_points(2):
            ds = f[h5_path(point)]
            assert (ds.shape, ds.dtype, ds.chunks is not None) == ((len(full), 16), np.float16, True)
            assert (ds.dims[0].label, ds.dims[1].label) == ("char", "unit")
        loss = f["predictions/loss"][:]
        ends = np.cumsum(sources["length"]) - 1
        assert np.isnan(loss[ends]).all() and np.isfinite(np.delete(loss, ends)).all()
        probs = f["predictions/topk_probs"][:]
        assert f["predictions/topk_ids"].shape == (len(full), 5)
        assert f["predictions/topk_ids"].dims[1].label == "rank"
        assert (np.diff(probs, axis=1) <= 0).all() and (probs.sum(axis=1) <= 1 + 1e-5).all()
    assert "1,052" in describe_dump(out) and "12 points" in describe_dump(out)


def each_source_with_reference(ckpt, out):
    """(sources row, open dump, the step-by-step reference over that source, its ids, the net)."""
    model = torch.load(ckpt, weights_only=True)
    net = CharLSTM(CharLSTMConfig(**model["config"]))
    net.load_state_dict(model["state_dict"])
    with h5py.File(out, "r") as f, torch.no_grad():
        for row in read_table(f["sources"]).itertuples():
            ids = torch.from_numpy(f["text/ids"][row.start:row.start + row.length].astype(np.int64))
            yield row, f, record_naive(net.lstm, net.embed(ids[None])), ids, net


# Hidden 32 takes the kernel's own AVX-512 product where it was built for AVX-512, 16
# its oneDNN or ATen one (tests/test_recording.py checks which); "pytorch" is the
# pure-PyTorch backend.
@pytest.mark.parametrize("hidden, path", [(16, "kernel"), (32, "kernel"), (32, "pytorch")])
def test_dump_values_equal_the_step_by_step_reference(texts, tmp_path, monkeypatch, hidden, path,
                                                       recording_kernel):
    """float32 dump, several files batched in small chunks: every array <= 1e-5 from the reference."""
    if path == "kernel" and recording_kernel is None:
        pytest.skip("the recording kernel could not be built here")
    lib = recording_kernel if path == "kernel" else None
    monkeypatch.setattr("rnnviz.kernel.kernel_for", lambda mode: lib)
    ckpt = make_ckpt(tmp_path, hidden)
    out = tmp_path / "d.h5"
    result = dump(ckpt, texts, out, DumpOptions(dtype="float32", batch_size=2, chunk_chars=256, progress=False))
    assert result.backend == path
    for row, f, ref, ids, net in each_source_with_reference(ckpt, out):
        for point in all_points(2):
            got = f[h5_path(point)][row.start:row.start + row.length]
            assert got.shape == (row.length, hidden)
            assert np.abs(got - ref[point][0].numpy()).max() <= 1e-5, (row.name, point)
        logp = torch.log_softmax(net.head(ref.output[0]), dim=-1)
        loss = f["predictions/loss"][row.start:row.start + row.length]
        want = -logp[torch.arange(row.length - 1), ids[1:]].numpy()
        assert np.abs(loss[:-1] - want).max() <= 1e-5
        top = f["predictions/topk_probs"][row.start:row.start + row.length]
        assert np.abs(top - logp.exp().topk(5, dim=-1).values.numpy()).max() <= 1e-5


def test_float16_dump_in_whole_chunks_equals_the_reference(texts, tmp_path, recording_kernel):
    """The default: float16 converted inside the kernel, and whole HDF5 chunks written
    directly (hidden 64 tiles the 64-unit chunks; a.py's 700 chars hold two whole ones):
    every value is the reference's, rounded to float16."""
    ckpt = make_ckpt(tmp_path, 64)
    out = tmp_path / "d.h5"
    result = dump(ckpt, texts, out, DumpOptions(progress=False, kernel="on"))
    assert result.backend == ("pytorch" if recording_kernel is None else "kernel")
    for row, f, ref, _, _ in each_source_with_reference(ckpt, out):
        for point in all_points(2):
            got = f[h5_path(point)][row.start:row.start + row.length]
            want = ref[point][0].numpy()
            assert got.dtype == np.float16
            # float16 keeps 11 significant bits: half an ulp of rounding, plus 1e-5.
            assert (np.abs(got.astype(np.float32) - want) <= 1e-5 + np.abs(want) * 2.0 ** -11).all(), \
                (row.name, point)


def test_record_layers_dtype_and_max_chars(ckpt, texts, tmp_path):
    out = tmp_path / "d.h5"
    result = run_cli(ckpt, *texts, "-o", out, "--record", "c,gate_f", "--layers", "1",
                     "--max-chars", "900", "--topk", "3", "--compression", "lzf")
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert json_attr(f, "recorded") == ["layer1.c", "layer1.gate_f"]
        assert sorted(f["states"]) == ["layer1"] and sorted(f["states/layer1"]) == ["c", "gate_f"]
        assert f["states/layer1/c"].compression == "lzf"
        assert f.attrs["n_chars"] == 900 and f["predictions/topk_ids"].shape == (900, 3)
        # --max-chars bounds the reading: the third file is never opened, so it is not a source
        assert list(read_table(f["sources"])["length"]) == [700, 200]


def test_default_output_goes_to_dumps_folder(ckpt, texts, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(ckpt, texts[2])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dumps" / "c.h5").exists()


def _one_line_error(result, expected: str):
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and expected in lines[0], result.output


@pytest.mark.parametrize("case, expected", [
    ("text-as-checkpoint", "expected an rnnviz checkpoint"),
    ("foreign-pt", "expected an rnnviz checkpoint, found a torch file of another kind"),
    ("missing-folder", "does not exist; create it first"),
    ("empty-text", "no text to read"),
    ("not-utf8", "not valid utf-8 at byte 0"),
    ("unknown-point", "unknown recording point 'layer0.zz'"),
    ("layer-out-of-range", "layer 5 does not exist"),
])
def test_bad_input_is_one_line_and_writes_nothing(ckpt, texts, tmp_path, case, expected):
    model, files, out, extra = ckpt, texts, tmp_path / "out.h5", []
    if case == "text-as-checkpoint":
        model = texts[0]
    elif case == "foreign-pt":
        model = tmp_path / "other.pt"
        torch.save({"weights": torch.zeros(3)}, model)
    elif case == "missing-folder":
        out = tmp_path / "nowhere" / "out.h5"
    elif case == "empty-text":
        files = [tmp_path / "empty.txt"]
        files[0].write_text("")
    elif case == "not-utf8":
        files = [tmp_path / "latin.txt"]
        files[0].write_bytes("été".encode("latin-1"))
    elif case == "unknown-point":
        extra = ["--record", "layer0.zz"]
    elif case == "layer-out-of-range":
        extra = ["--layers", "5"]
    _one_line_error(run_cli(model, *files, "-o", out, *extra), expected)
    assert not out.exists() and not Path(str(out) + ".partial").exists()
    assert all(p.exists() for p in texts)


def test_existing_target_is_kept_without_force(ckpt, texts, tmp_path):
    out = tmp_path / "d.h5"
    out.write_bytes(b"precious")
    _one_line_error(run_cli(ckpt, texts[0], "-o", out), "exists; pass --force")
    assert out.read_bytes() == b"precious"
    assert run_cli(ckpt, texts[0], "-o", out, "--force").exit_code == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["n_chars"] == 700


def units_done(partial: Path) -> int:
    """Progress saved in a .partial, read while another process may be writing it."""
    try:
        with h5py.File(partial, "r", locking=False) as f:
            return int(f["progress/units_done"][()])
    except (OSError, KeyError):  # not there yet, or caught between two writes
        return 0


def test_killed_dump_leaves_no_complete_file_and_resume_finishes_it(ckpt, tmp_path):
    text = tmp_path / "long.py"
    # ~240k chars in the smallest chunks: recording takes a few seconds even with the
    # compiled kernel (at 512-char chunks it took 0.8 s, and the dump could end between
    # two looks at its progress).
    copies, chunk = 12, 128
    text.write_text(SOURCE * copies)
    out = tmp_path / "d.h5"
    partial = Path(str(out) + ".partial")
    args = [str(ckpt), str(text), "-o", str(out), "--chunk-chars", str(chunk), "--quiet"]
    proc = subprocess.Popen([sys.executable, "-c", "from rnnviz.cli import main; main()", "dump", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while units_done(partial) < 1:  # kill it once some progress is saved
        assert proc.poll() is None, proc.communicate()[1].decode()
        assert time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and partial.exists()
    # Killed midway: --resume has work done and work left.
    assert 1 <= units_done(partial) < len(plan([len(SOURCE) * copies], 16, chunk))
    with pytest.raises(RnnvizError, match="unfinished"):
        open_dump(partial)
    # A partial made from other options is not continued.
    _one_line_error(run_cli(*args[:-1], "--resume", "--topk", "3"), "different checkpoint, text or options")
    _one_line_error(run_cli(*args[:-1]), "pass --resume to continue it")
    result = run_cli(*args[:-1], "--resume")
    assert result.exit_code == 0, result.output
    assert not partial.exists()
    whole = tmp_path / "whole.h5"
    dump(ckpt, [text], whole, DumpOptions(chunk_chars=chunk, progress=False))
    with h5py.File(out, "r") as a, h5py.File(whole, "r") as b:
        names = []
        a.visit(names.append)
        for name in names:
            if isinstance(a[name], h5py.Dataset):
                x, y = a[name][()], b[name][()]
                assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), name


def test_plan_groups_similar_lengths_and_covers_every_character():
    lengths = [1000, 10, 0, 700, 300]
    units = plan(lengths, batch_size=2, chunk_chars=512)
    covered = np.zeros(len(lengths), int)
    for unit in units:
        for s in unit.lanes:
            covered[s] += min(unit.t1, lengths[s]) - unit.t0
    assert list(covered) == lengths
    assert units[0].lanes == [0, 3]  # the two longest side by side
    assert all(len(u.lanes) <= 2 for u in units)


def _fake_dump(path, **attrs):
    write_synthetic_dump(path, "abc\n", {"layer0.c": np.zeros((4, 2), np.float32)}, attrs=attrs,
                         complete=attrs.pop("complete", 1) == 1)
    return path


def test_open_dump_accepts_a_finished_dump(tmp_path):
    with open_dump(_fake_dump(tmp_path / "ok.h5")) as d:
        assert d.attrs["format"] == "rnnviz-dump" and d.text == "abc\n"


@pytest.mark.parametrize("attrs, message", [
    ({"format": "something-else"}, "format='something-else'"),
    ({"schema_version": 2}, "schema 2"),
    ({"complete": 0}, "unfinished"),
])
def test_open_dump_refuses_other_files(tmp_path, attrs, message):
    path = _fake_dump(tmp_path / "x.h5", **attrs)
    with pytest.raises(RnnvizError, match="expected an rnnviz dump.*" + message):
        open_dump(path)


def test_open_dump_refuses_non_hdf5(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("hello")
    with pytest.raises(RnnvizError, match="expected an rnnviz dump, found a file that is not HDF5"):
        open_dump(path)
