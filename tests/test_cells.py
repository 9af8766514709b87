"""GRU and vanilla RNN cells end to end (training, checkpoints, recording, dump) and --device."""
import subprocess
import sys
import textwrap
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

import rnnviz
from rnnviz.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from rnnviz.cli import cli
from rnnviz.device import resolve_device
from rnnviz.dump import DumpOptions, dump
from rnnviz.dumpfile import DumpWriter
from rnnviz.errors import RnnvizError
from rnnviz.model import CharRNN, CharRNNConfig, Vocab
from rnnviz.recording import record, record_naive

TOL = 1e-5
SOURCE = Path(textwrap.__file__).read_text()
TINY = ["--layers", "2", "--hidden", "16", "--embedding", "8", "--seq-length", "20",
        "--batch-size", "8", "--eval-every", "10", "--max-steps", "10"]
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the behaviour without a GPU")


def one_line_error(args):
    r = subprocess.run([sys.executable, "-m", "rnnviz", *map(str, args)], capture_output=True, text=True)
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    return lines[0]


def tiny_checkpoint(folder: Path, cell: str, hidden: int = 12) -> Path:
    vocab = Vocab.from_text(SOURCE)
    torch.manual_seed(1)
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), num_layers=2, hidden_size=hidden,
                                  embedding_size=8, cell=cell))
    path = folder / f"{cell}.pt"
    save_checkpoint(path, model, vocab, meta={})
    return path


# -- recording the user's own modules ------------------------------------------------------

def module(kind: str, layers: int, bias: bool, batch_first: bool) -> nn.Module:
    torch.manual_seed(layers * 10 + bias * 2 + batch_first)
    if kind == "gru":
        return nn.GRU(5, 12, layers, bias=bias, batch_first=batch_first)
    return nn.RNN(5, 12, layers, bias=bias, batch_first=batch_first, nonlinearity=kind[4:])


def step_by_step(m: nn.Module, x: torch.Tensor) -> dict:
    """Points of ``m`` over batch-first ``x`` with torch.nn.GRUCell / RNNCell, one step at a
    time; the gates written out from PyTorch's documented equations."""
    B, T, _ = x.shape
    H, L = m.hidden_size, m.num_layers
    h = [torch.zeros(B, H) for _ in range(L)]
    out = {}
    for layer in range(L):
        cls = nn.GRUCell if isinstance(m, nn.GRU) else nn.RNNCell
        kwargs = {} if isinstance(m, nn.GRU) else {"nonlinearity": m.nonlinearity}
        cell = cls(m.input_size if layer == 0 else H, H, bias=m.bias, **kwargs)
        for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if m.bias else ()):
            setattr(cell, name, getattr(m, f"{name}_l{layer}"))
        inputs = x if layer == 0 else out[f"layer{layer - 1}.h"]
        hs, gates = [], {"gate_r": [], "gate_z": [], "gate_n": []}
        for t in range(T):
            prev = h[layer]
            if isinstance(m, nn.GRU):
                gi = inputs[:, t] @ cell.weight_ih.T + (cell.bias_ih if m.bias else 0)
                gh = prev @ cell.weight_hh.T + (cell.bias_hh if m.bias else 0)
                r = torch.sigmoid(gi[:, :H] + gh[:, :H])
                z = torch.sigmoid(gi[:, H:2 * H] + gh[:, H:2 * H])
                n = torch.tanh(gi[:, 2 * H:] + r * gh[:, 2 * H:])
                for k, v in zip(gates, (r, z, n)):
                    gates[k].append(v)
            h[layer] = cell(inputs[:, t], prev)
            hs.append(h[layer])
        out[f"layer{layer}.h"] = torch.stack(hs, 1)
        if isinstance(m, nn.GRU):
            out.update({f"layer{layer}.{k}": torch.stack(v, 1) for k, v in gates.items()})
    return out


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", ["gru", "rnn_tanh", "rnn_relu"])
@torch.no_grad()
def test_gru_and_rnn_recording_equals_the_step_by_step_loop(kind, batch_first, layers, bias):
    m = module(kind, layers, bias, batch_first)
    x = torch.randn(3, 150, 5)
    rec = rnnviz.record(m, x if batch_first else x.transpose(0, 1), chunk=64)  # chunks carry the state
    ref = step_by_step(m, x)
    assert rec.backend == "pytorch"
    assert sorted(rec) == sorted(ref)  # GRU: h, gate_r, gate_z, gate_n per layer; RNN: h
    for name, want in ref.items():
        got = rec[name] if batch_first else rec[name].transpose(0, 1)
        assert float((got - want).abs().max()) <= TOL, name
    out, h_n = m(x if batch_first else x.transpose(0, 1))
    assert float((rec.output - out).abs().max()) <= TOL and float((rec.state - h_n).abs().max()) <= TOL
    naive = record_naive(m, x if batch_first else x.transpose(0, 1))
    assert all(float((naive[q] - rec[q]).abs().max()) <= TOL for q in rec)


@torch.no_grad()
def test_gru_initial_state_unbatched_input_and_chosen_points():
    m = module("gru", 2, True, False)
    x, h0 = torch.randn(40, 5), torch.randn(2, 12)  # (T, In), (L, H): no batch axis
    rec = rnnviz.record(m, x, state=h0, points=["layer1.gate_n", "layer0.h"])
    assert sorted(rec) == ["layer0.h", "layer1.gate_n"] and rec["layer1.gate_n"].shape == (40, 12)
    ref = step_by_step(m, x[None])  # from zeros: must differ from the run from h0
    naive = record_naive(m, x, h0)
    assert float((rec["layer1.gate_n"] - naive["layer1.gate_n"]).abs().max()) <= TOL
    assert float((rec["layer0.h"] - ref["layer0.h"][0]).abs().max()) > 1e-3
    assert float((rec.state - m(x, h0)[1]).abs().max()) <= TOL
    assert float(rec["layer1.gate_n"].min()) < 0  # tanh: signed


@pytest.mark.parametrize("m, point, message", [
    (nn.GRU(3, 8, 1), "layer0.c", "a GRU has no c"),
    (nn.GRU(3, 8, 1), "layer0.gate_f", "a GRU has no gate_f"),
    (nn.RNN(3, 8, 1), "layer0.gate_r", "a vanilla RNN has no gate_r"),
    (nn.LSTM(3, 8, 1), "layer0.gate_z", "an LSTM has no gate_z"),
])
def test_a_point_the_cell_does_not_have_is_refused(m, point, message):
    with pytest.raises(RnnvizError, match=message):
        record(m, torch.randn(5, 3), points=[point])


# -- the model, training and checkpoints ---------------------------------------------------

@pytest.mark.parametrize("cell, module_type", [("gru", nn.GRU), ("rnn", nn.RNN), ("rnn_relu", nn.RNN)])
def test_train_cell_is_recorded_in_the_checkpoint(tmp_path, stdlib_text_file, cell, module_type):
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(cli, ["train", str(stdlib_text_file), "-o", str(out), "--cell", cell, *TINY])
    assert r.exit_code == 0, r.output
    ckpt = load_checkpoint(out)
    assert ckpt.config.cell == {"rnn": "rnn_tanh"}.get(cell, cell)
    assert type(ckpt.model.rnn) is module_type and ckpt.meta["history"]
    if cell == "rnn_relu":
        assert ckpt.model.rnn.nonlinearity == "relu"
    info = CliRunner().invoke(cli, ["info", str(out)]).output
    assert f"{ckpt.config.cell.upper()}, 2 layers x 16 units" in info
    assert len(CliRunner().invoke(cli, ["sample", str(out), "-n", "30"]).output) >= 30


def test_old_checkpoints_without_the_cell_load_as_lstms(tmp_path):
    """Checkpoints written before the cell existed: no 'cell' in the config and the
    recurrent module's weights under 'lstm.'."""
    vocab = Vocab.from_text("abc def\n")
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), hidden_size=8, embedding_size=4)).eval()
    config = {k: v for k, v in model.config.to_dict().items() if k != "cell"}
    state = {k.replace("rnn.", "lstm.", 1): v for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "format_version": 1, "config": config, "vocab": vocab.chars,
                "state_dict": state, "meta": {}}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.config.cell == "lstm" and isinstance(old.model.lstm, nn.LSTM)
    ids = torch.as_tensor(vocab.encode("abc def")[0])[None]
    assert torch.equal(old.model(ids)[0], model(ids)[0])


def test_a_checkpoint_naming_an_unknown_cell_is_refused(tmp_path):
    path = tiny_checkpoint(tmp_path, "gru")
    blob = torch.load(path, weights_only=True)
    blob["config"]["cell"] = "transformer"
    torch.save(blob, path)
    line = one_line_error(["info", path])
    assert "checkpoint field config.cell" in line and "found 'transformer'" in line and "gru" in line


def test_unknown_cell_is_a_one_line_error(tmp_path, stdlib_text_file):
    line = one_line_error(["train", stdlib_text_file, "-o", tmp_path / "m.pt", "--cell", "lsmt", *TINY])
    assert "unknown cell 'lsmt'" in line and "gru" in line
    assert not (tmp_path / "m.pt").exists()


# -- dump ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gru_ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("gru"), "gru")


@pytest.mark.parametrize("cell", ["gru", "rnn_relu"])
def test_dump_of_a_gru_or_rnn_equals_recording_its_module(tmp_path, cell):
    ckpt_path = tiny_checkpoint(tmp_path, cell)
    texts = [tmp_path / "a.py", tmp_path / "b.py"]
    texts[0].write_text(SOURCE[:900])
    texts[1].write_text(SOURCE[2000:2300])
    out = tmp_path / "d.h5"
    r = CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt_path), *map(str, texts), "-o", str(out),
                                 "--dtype", "float32", "--chunk-chars", "256"])
    assert r.exit_code == 0, r.output
    assert "pure PyTorch (the compiled kernel steps LSTMs only)" in r.output
    ckpt = load_checkpoint(ckpt_path)
    with rnnviz.open(out) as d, torch.no_grad():
        assert sorted(d) == sorted(rnnviz.names.all_points(2, cell))
        assert d.attrs["model_config"]["cell"] == cell
        ids = torch.as_tensor(ckpt.vocab.encode(SOURCE[:900])[0])
        rec = record(ckpt.model.rnn, ckpt.model.embed(ids)[None])
        for point in d:
            assert np.abs(d[point][:900] - rec[point][0].numpy()).max() <= TOL, point
        with pytest.raises(RnnvizError, match="not layer0.c"):
            d.unit("layer0.c[1]")


def test_gru_dump_resumes_after_an_interruption(gru_ckpt, tmp_path, monkeypatch):
    text = tmp_path / "long.py"
    text.write_text(SOURCE * 2)
    out, whole = tmp_path / "d.h5", tmp_path / "whole.h5"
    opts = dict(chunk_chars=512, batch_size=1, progress=False)
    dump(gru_ckpt, [text], whole, DumpOptions(**opts))
    monkeypatch.setattr("rnnviz.dump.FLUSH_SECONDS", 0.0)
    write, calls = DumpWriter.write, []

    def failing_write(self, *args):
        calls.append(1)
        if len(calls) == 60:
            raise KeyboardInterrupt
        return write(self, *args)
    monkeypatch.setattr(DumpWriter, "write", failing_write)
    with pytest.raises(KeyboardInterrupt):
        dump(gru_ckpt, [text], out, DumpOptions(**opts))
    monkeypatch.setattr(DumpWriter, "write", write)
    assert not out.exists() and Path(str(out) + ".partial").exists()
    dump(gru_ckpt, [text], out, DumpOptions(resume=True, **opts))
    with h5py.File(out, "r") as a, h5py.File(whole, "r") as b:
        for point in ("layer0/h", "layer1/gate_z", "layer1/gate_n"):
            assert np.array_equal(a["states"][point][()], b["states"][point][()]), point


@pytest.mark.parametrize("record_spec, needle", [
    ("layer0.c", "layer0.c: a GRU has no c; its points per layer are h, gate_r, gate_z, gate_n"),
    ("gate_f", "a GRU has no gate_f"),
])
def test_dump_refuses_points_the_cell_does_not_have(gru_ckpt, tmp_path, record_spec, needle):
    (tmp_path / "a.py").write_text(SOURCE[:300])
    line = one_line_error(["dump", gru_ckpt, tmp_path / "a.py", "-o", tmp_path / "d.h5", "--record", record_spec])
    assert needle in line
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.partial").exists()


# -- devices -------------------------------------------------------------------------------

@NO_CUDA
def test_auto_device_without_cuda_is_the_cpu(tmp_path, stdlib_text_file):
    assert resolve_device("auto") == torch.device("cpu")
    out = tmp_path / "m.pt"
    r = CliRunner().invoke(cli, ["train", str(stdlib_text_file), "-o", str(out), "--cell", "gru",
                                 "--device", "auto", *TINY])
    assert r.exit_code == 0, r.output
    assert load_checkpoint(out).meta["train_options"]["device"] == "auto"
    r = CliRunner().invoke(cli, ["dump", "--quiet", str(out), str(stdlib_text_file), "-o", str(tmp_path / "d.h5"),
                                 "--max-chars", "500", "--device", "auto"])
    assert r.exit_code == 0, r.output


@NO_CUDA
@pytest.mark.parametrize("command", ["train", "sample", "dump"])
def test_cuda_without_a_gpu_is_a_one_line_error(gru_ckpt, tmp_path, stdlib_text_file, command):
    args = {"train": ["train", stdlib_text_file, "-o", tmp_path / "m.pt", *TINY],
            "sample": ["sample", gru_ckpt],
            "dump": ["dump", gru_ckpt, stdlib_text_file, "-o", tmp_path / "d.h5"]}[command]
    line = one_line_error([*args, "--device", "cuda"])
    assert "--device cuda: this torch sees no CUDA GPU (use --device cpu)" in line
    assert not any(tmp_path.iterdir())


def test_unknown_device_is_a_one_line_error(gru_ckpt):
    assert "unknown device 'gpu'" in one_line_error(["sample", gru_ckpt, "--device", "gpu"])


def test_h_of_a_relu_rnn_is_coloured_over_its_own_range(tmp_path):
    """h of a ReLU RNN is >= 0 and unbounded: the app and the export scale it to the values
    shown, not to the [-1, 1] of tanh, so units above 1 are not all one colour."""
    from rnnviz.render.colours import unit_scale
    values = np.linspace(0.0, 6.0, 200, dtype=np.float32)
    assert (unit_scale("h", values, "fixed", cell="lstm").low, unit_scale("h", values, "fixed").high) == (-1.0, 1.0)
    s = unit_scale("h", values, "auto", cell="rnn_relu")       # no stats: the window's range
    assert s.high > 5.5 and s.low == 0 and s.map == "positive" and "this window" in s.rule
    path = tiny_checkpoint(tmp_path, "rnn_relu")
    (tmp_path / "a.py").write_text(SOURCE[:2000])
    dump(path, [tmp_path / "a.py"], tmp_path / "d.h5", DumpOptions(progress=False))
    with rnnviz.open(tmp_path / "d.h5") as d:
        column = d["layer1.h"][:, 3].astype(np.float32)
        span = d.show("layer1.h[3]", 0, 2000)
        assert float(column.min()) >= 0
        assert span.high == pytest.approx(np.percentile(column, 99), rel=1e-3) and span.colour.map == "positive"
    import yaml
    from rnnviz.lstmvis import export_lstmvis
    export_lstmvis(tmp_path / "d.h5", tmp_path / "lv")
    types = yaml.safe_load((tmp_path / "lv" / "lstm.yml").read_text())["states"]["types"]
    assert [t["transform"] for t in types] == ["tanh", "tanh"]  # LSTMVis squashes it into [0, 1)
