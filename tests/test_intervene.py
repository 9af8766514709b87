"""Interventions: a clamped unit behaves as docs/interventions.md says, on every backend,
for a CharRNN and for the user's own modules; bad specs are one-line errors."""
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from rnnviz.checkpoint import load_checkpoint, save_checkpoint
from rnnviz.errors import RnnvizError
from rnnviz.intervene import Clamp, ClampTable, ablation, parse_clamp, resolve
from rnnviz.model import CharRNN, CharRNNConfig, Vocab
from rnnviz.recording import record, record_naive

TOL = 1e-5
SOURCE = Path(textwrap.__file__).read_text()


@pytest.fixture
def path(lstm_path):
    """The compiled kernel or pure PyTorch, for the LSTM tests."""
    return lstm_path


@torch.no_grad()
def hand_loop(lstm: nn.LSTM, x: torch.Tensor, clamp: Clamp) -> tuple[torch.Tensor, torch.Tensor]:
    """The top layer's output and the clamped point, batch-first, from PyTorch's equations
    one step at a time, with ``clamp`` written in by hand where the issue says."""
    if not lstm.batch_first:
        x = x.transpose(0, 1)
    B, T, _ = x.shape
    H, L = lstm.hidden_size, lstm.num_layers
    h = [x.new_zeros(B, H) for _ in range(L)]
    c = [x.new_zeros(B, H) for _ in range(L)]
    out, seen = x.new_empty(B, T, H), x.new_empty(B, T, H)
    lanes = slice(None) if clamp.lanes is None else list(clamp.lanes)
    for t in range(T):
        on = clamp.start <= t < (T if clamp.stop is None else clamp.stop)
        inp = x[:, t]
        for layer in range(L):
            w_ih, w_hh = getattr(lstm, f"weight_ih_l{layer}"), getattr(lstm, f"weight_hh_l{layer}")
            pre = inp @ w_ih.T + h[layer] @ w_hh.T
            if lstm.bias:
                pre = pre + getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")
            gates = dict(zip("ifgo", pre.chunk(4, dim=1)))
            gates = {k: torch.tanh(v) if k == "g" else torch.sigmoid(v) for k, v in gates.items()}
            mine = on and layer == clamp.layer
            if mine and clamp.kind.startswith("gate_"):
                gates[clamp.kind[-1]][lanes, clamp.unit] = clamp.value
            c[layer] = gates["f"] * c[layer] + gates["i"] * gates["g"]
            if mine and clamp.kind == "c":
                c[layer][lanes, clamp.unit] = clamp.value
            h[layer] = gates["o"] * torch.tanh(c[layer])
            if mine and clamp.kind == "h":
                h[layer][lanes, clamp.unit] = clamp.value
            if layer == clamp.layer:
                seen[:, t] = {"c": c[layer], "h": h[layer]}[clamp.kind] if clamp.kind in ("c", "h") \
                    else gates[clamp.kind[-1]]
            inp = h[layer]
        out[:, t] = inp
    return out, seen


CLAMPS = [  # (kind, value, start, stop, lanes) on the top layer's unit 3
    ("c", 2.5, 0, None, None),
    ("h", -0.7, 4, 19, None),
    ("gate_f", 0.05, 6, None, (1,)),
]


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind, value, start, stop, lanes", CLAMPS)
def test_a_clamped_user_lstm_matches_a_hand_written_loop(layers, batch_first, kind, value, start, stop,
                                                          lanes, path):
    torch.manual_seed(layers)
    lstm = nn.LSTM(6, 32 if layers != 2 else 16, layers, batch_first=batch_first)  # both kernel products
    x = torch.randn((3, 25, 6) if batch_first else (25, 3, 6))
    clamp = Clamp(layers - 1, kind, 3, value, start, stop, lanes)
    rec = record(lstm, x, clamps=[clamp], chunk=10)    # spans cross chunk boundaries
    assert rec.backend == path
    out, seen = hand_loop(lstm, x, clamp)
    got = rec.output if batch_first else rec.output.transpose(0, 1)
    assert float((got - out).abs().max()) <= TOL
    point = rec[clamp.point] if batch_first else rec[clamp.point].transpose(0, 1)
    assert float((point - seen).abs().max()) <= TOL
    lane_sel = slice(None) if lanes is None else list(lanes)
    assert torch.all(point[lane_sel, start:stop, 3] == value)
    with torch.no_grad():
        free, _ = lstm(x)
    assert float((rec.output - free).abs().max()) > 1e-3, "the clamp changed nothing"
    assert float((record_naive(lstm, x, clamps=[clamp]).output - rec.output).abs().max()) <= TOL


def char_model(cell: str = "lstm", layers: int = 2, hidden: int = 32) -> CharRNN:
    torch.manual_seed(5)
    return CharRNN(CharRNNConfig(vocab_size=20, num_layers=layers, hidden_size=hidden, embedding_size=6,
                                 cell=cell)).eval()


@pytest.mark.parametrize("kind", ["c", "h", "gate_i", "gate_o", "gate_g"])
def test_a_clamped_char_lstm_gives_logits_under_the_intervention(kind, path):
    model = char_model()
    ids = torch.randint(1, 20, (4, 40))
    clamps = [Clamp(0, kind, 7, 0.8, start=5), Clamp(1, "c", 1, -3.0, stop=30, lanes=(0, 2))]
    rec = record(model, ids, clamps=clamps, chunk=16)
    ref = record_naive(model, ids, clamps=clamps)
    assert rec.output.shape == (4, 40, 20)   # logits
    assert float((rec.output - ref.output).abs().max()) <= TOL
    assert max(float((rec[q] - ref[q]).abs().max()) for q in ref) <= TOL
    # The same as a hand-written loop over the embedded ids, through the output layer.
    out, _ = hand_loop(model.rnn, model.embed(ids), clamps[0])
    with torch.no_grad():
        want = model.head(out)
    assert float((record(model, ids, clamps=clamps[:1]).output - want).abs().max()) <= TOL


def test_each_lane_carries_its_own_clamps_as_if_run_alone(path):
    """The ablation layout: every lane ablates a different unit of a different point."""
    model = char_model(hidden=32, layers=3)
    ids = torch.randint(1, 20, (1, 30)).expand(12, 30).contiguous()
    kinds = ["c", "h", "gate_f", "gate_g"]
    clamps = [Clamp(lane % 3, kinds[lane % 4], lane, 0.0 if lane % 2 else 0.5, start=lane, lanes=(lane,))
              for lane in range(12)]
    together = record(model, ids, clamps=clamps, chunk=8)
    for lane, c in enumerate(clamps):
        alone = record(model, ids[lane], clamps=[Clamp(c.layer, c.kind, c.unit, c.value, c.start)])
        assert float((together.output[lane] - alone.output).abs().max()) <= TOL


@pytest.mark.parametrize("cell, kind", [("gru", "gate_r"), ("gru", "gate_z"), ("gru", "gate_n"), ("gru", "h"),
                                        ("rnn_tanh", "h"), ("rnn_relu", "h")])
def test_gru_and_rnn_layers_take_clamps_too(cell, kind):
    model = char_model(cell)
    ids = torch.randint(1, 20, (3, 30))
    clamps = [Clamp(0, kind, 4, 0.3, start=3, stop=20), Clamp(1, "h", 0, 0.9, lanes=(1,))]
    rec, ref = record(model, ids, clamps=clamps, chunk=7), record_naive(model, ids, clamps=clamps)
    assert float((rec.output - ref.output).abs().max()) <= TOL
    assert torch.all(rec[f"layer0.{kind}"][:, 3:20, 4] == torch.tensor(0.3))
    assert float((record(model, ids).output - rec.output).abs().max()) > 1e-3


def test_no_clamps_and_clamps_outside_the_chunk_keep_the_fast_path():
    model = char_model()
    ids = torch.randint(1, 20, (2, 20))
    from rnnviz.backends import make_backend
    from rnnviz.backends.pytorch import TorchRun
    backend = make_backend(model.rnn, kernel="off", embedding=model.embed.weight)
    later = [Clamp(0, "c", 1, 1.0, start=50)]
    assert isinstance(backend.layer(0, ids, clamps=later, t0=0), TorchRun)
    assert not isinstance(backend.layer(0, ids, clamps=later, t0=40), TorchRun)


def test_sampling_under_a_clamp_follows_the_recorded_logits():
    """Argmax sampling with a clamp that starts mid-sample: each drawn character is the
    argmax of the logits that record() gives for the text so far under the same clamp."""
    model = char_model()
    vocab = Vocab.from_text("abcdefghijklmnopqrs")
    clamps = [Clamp(1, "h", u, 25.0, start=8) for u in range(4)] + [Clamp(0, "c", 5, -4.0, start=3, stop=12)]
    prime = "abc"
    text = prime + model.sample(vocab, 25, prime, argmax=True, clamps=clamps)
    free = prime + model.sample(vocab, 25, prime, argmax=True)
    assert text != free
    logits = record(model, torch.as_tensor(vocab.encode(text)[0]), clamps=clamps).output
    drawn = [vocab.chars[int(i)] for i in logits[len(prime) - 1:-1].argmax(dim=-1)]
    assert "".join(drawn) == text[len(prime):]


# -- parsing, resolving, errors -----------------------------------------------------------

def test_specs_parse_with_values_means_and_spans():
    assert parse_clamp("layer2.c[76]=3.0") == parse_clamp("layer2.c[76]=3.0")
    s = parse_clamp("layer0.gate_f[12]=0.9@100:200")
    assert (s.layer, s.kind, s.unit, s.value, s.start, s.stop) == (0, "gate_f", 12, 0.9, 100, 200)
    assert parse_clamp("layer1.h[5]=mean").value == "mean"
    assert parse_clamp("layer1.h[5]=-1e-2@7:").stop is None
    assert ablation("layer1.c[5]").value == 0.0 and ablation("layer0.gate_g[1]").value == 0.0
    assert ablation("layer0.gate_f[1]").value == "mean" and ablation("layer0.gate_r[1]").value == "mean"


@pytest.mark.parametrize("spec, message", [
    ("layer0.q[3]=1", "expected LAYER.POINT[UNIT]=VALUE"),
    ("layer0.gate_x[3]=1", "unknown point 'gate_x'"),
    ("layer0.c[3]=abc", "'abc' is not a number or 'mean'"),
    ("layer0.c[3]=inf", "must be finite"),
    ("layer0.c[-1]=1", "0 or more"),
    ("layer0.c[3]=1@9:4", "is empty"),
    ("c[3]=1", "expected LAYER.POINT[UNIT]=VALUE"),
])
def test_malformed_specs_are_refused(spec, message):
    with pytest.raises(RnnvizError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_clamp(spec)


@pytest.mark.parametrize("spec, message", [
    ("layer2.c[3]=1", "layers 0..1"),
    ("layer0.c[32]=1", "units 0..31"),
    ("layer0.gate_r[3]=1", "an LSTM has no gate_r"),
    ("layer0.h[1]=mean", "'mean' needs a reference"),
])
def test_specs_the_model_cannot_take_are_refused(spec, message):
    with pytest.raises(RnnvizError, match=message):
        resolve([parse_clamp(spec)], char_model())


def test_a_gru_has_no_c_and_lanes_beyond_the_batch_are_refused():
    with pytest.raises(RnnvizError, match="a GRU has no c"):
        resolve([parse_clamp("layer0.c[1]=0")], char_model("gru"))
    with pytest.raises(RnnvizError, match="out of range for a batch of 2"):
        record(char_model(), torch.ones(2, 5, dtype=torch.long), clamps=[Clamp(0, "c", 1, 0.0, lanes=(2,))])


def test_a_prebuilt_table_is_checked_against_the_network_too():
    model = char_model()
    ids = torch.ones(2, 5, dtype=torch.long)
    with pytest.raises(RnnvizError, match="layer 4: the network has layers 0..1"):
        record(model, ids, clamps=ClampTable([Clamp(4, "c", 1, 0.0)]))
    with pytest.raises(RnnvizError, match="units 0..31"):
        record(model, ids, clamps=ClampTable([Clamp(1, "c", 40, 0.0)]))


def test_a_table_keeps_the_later_of_two_clamps_on_one_unit(path):
    model = char_model()
    ids = torch.randint(1, 20, (2, 10))
    rec = record(model, ids, clamps=[Clamp(0, "c", 1, 1.0), Clamp(0, "c", 1, 2.0, lanes=(1,))])
    assert torch.all(rec["layer0.c"][0, :, 1] == 1.0) and torch.all(rec["layer0.c"][1, :, 1] == 2.0)
    assert len(ClampTable([Clamp(0, "c", 1, 1.0, lanes=(0, 1))])) == 2


# -- the reference text of 'mean' and the command line -------------------------------------

@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("intervene")
    vocab = Vocab.from_text(SOURCE)
    torch.manual_seed(2)
    model = CharRNN(CharRNNConfig(vocab_size=len(vocab), num_layers=2, hidden_size=16, embedding_size=8))
    text = folder / "ref.py"
    text.write_text(SOURCE[:3000])
    from rnnviz.checkpoint import file_sha256
    meta = {"heldout": [{"name": str(text), "chars": 3000, "sha256": file_sha256(text)}]}
    save_checkpoint(folder / "m.pt", model, vocab, meta=meta)
    return folder / "m.pt"


def test_mean_is_the_units_mean_over_the_named_reference(ckpt, tmp_path):
    c = load_checkpoint(ckpt)
    ref = ckpt.parent / "ref.py"
    rec = record(c.model, torch.as_tensor(c.vocab.encode(ref.read_text())[0]), points=["layer1.gate_f"])
    want = float(rec["layer1.gate_f"][:, 4].double().mean())
    for reference in (str(ref), "heldout"):
        [clamp] = resolve([ablation("layer1.gate_f[4]")], c, reference)
        assert clamp.value == pytest.approx(want, abs=1e-6)
    # A dump of the same checkpoint: its stored (float32) states are averaged.
    dump = tmp_path / "ref.h5"
    r = subprocess.run([sys.executable, "-m", "rnnviz", "dump", "--quiet", str(ckpt), str(ref), "-o", str(dump),
                        "--dtype", "float32"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    [clamp] = resolve([parse_clamp("layer1.gate_f[4]=mean")], c, str(dump))
    assert clamp.value == pytest.approx(want, abs=1e-5)


def test_a_changed_heldout_file_or_a_dump_of_another_model_is_refused(ckpt, tmp_path):
    import shutil
    folder = tmp_path / "copy"
    shutil.copytree(ckpt.parent, folder, ignore=shutil.ignore_patterns("*.h5"))
    c = load_checkpoint(folder / "m.pt")
    (ckpt.parent / "ref.py").rename(ckpt.parent / "ref.bak")
    try:
        with pytest.raises(RnnvizError, match="is missing"):
            resolve([ablation("layer0.gate_i[1]")], load_checkpoint(ckpt), "heldout")
    finally:
        (ckpt.parent / "ref.bak").rename(ckpt.parent / "ref.py")
    (folder / "ref.py").write_text("changed")
    c.meta["heldout"][0]["name"] = str(folder / "ref.py")
    with pytest.raises(RnnvizError, match="changed since training"):
        resolve([ablation("layer0.gate_i[1]")], c, "heldout")


def rnnviz(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rnnviz", *map(str, args)], capture_output=True, text=True)


def test_sample_compare_prints_both_samples_from_one_seed(ckpt):
    r = rnnviz("sample", ckpt, "-n", "60", "--seed", "4", "--prime", "def ", "--clamp", "layer1.h[3]=1.0",
               "--ablate", "layer0.gate_f[2]", "--reference", "heldout", "--compare")
    assert r.returncode == 0, r.stderr
    head, rest = r.stdout.split("--- with ", 1)
    said, clamped = rest.split("\n", 1)
    assert head.startswith("--- without the intervention (seed 4) ---\ndef ")
    assert said.startswith("layer1.h[3]=1, layer0.gate_f[2]=0.")
    plain = rnnviz("sample", ckpt, "-n", "60", "--seed", "4", "--prime", "def ")
    assert head.split("\n", 1)[1].rstrip("\n") == plain.stdout.rstrip("\n")
    alone = rnnviz("sample", ckpt, "-n", "60", "--seed", "4", "--prime", "def ", "--clamp", "layer1.h[3]=1.0",
                   "--ablate", "layer0.gate_f[2]", "--reference", "heldout")
    assert clamped.rstrip("\n") == alone.stdout.rstrip("\n") != plain.stdout.rstrip("\n")


@pytest.mark.parametrize("args, message", [
    (["--clamp", "layer0.c[99]=1"], "units 0..15"),
    (["--clamp", "layer5.c[1]=1"], "layers 0..1"),
    (["--clamp", "layer0.c[1]=x"], "not a number"),
    (["--clamp", "layer0.gate_z[1]=1"], "an LSTM has no gate_z"),
    (["--ablate", "layer0.gate_o[1]"], "'mean' needs a reference"),
    (["--ablate", "layer0.gate_o[1]", "--reference", "nowhere.h5"], "no such file"),
    (["--compare"], "add --clamp or --ablate"),
])
def test_sample_refuses_bad_interventions_in_one_line(ckpt, args, message):
    r = rnnviz("sample", ckpt, "-n", "5", *args)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    assert message in lines[0] and r.stdout == ""
