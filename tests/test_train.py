"""Training, sampling, checkpoints and the train/sample/info commands."""
import math
import subprocess

import pytest
import sys
import torch
from click.testing import CliRunner

from rnnviz.checkpoint import load_checkpoint, save_checkpoint
from rnnviz.cli import cli
from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
from rnnviz.text import read_sources
from rnnviz.train import TrainConfig, train, unigram_entropy_bits

TINY = ["--layers", "2", "--hidden", "24", "--embedding", "8", "--seq-length", "20",
        "--batch-size", "8", "--eval-every", "20"]


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, stdlib_text_file):
    out = tmp_path_factory.mktemp("train") / "m.pt"
    r = run("train", stdlib_text_file, "-o", out, *TINY, "--max-steps", "60", "--sample-every", "30")
    assert r.exit_code == 0, r.output
    return out


def test_training_learns_below_unigram_entropy(tmp_path):
    text = ("def f(x):\n    return 'abc' + x\n\n" * 400)
    path = tmp_path / "rep.py"
    path.write_text(text)
    cfg = TrainConfig(seq_length=30, batch_size=8, max_steps=150, eval_every=50, val_fraction=0.1)
    result = train(read_sources([path]), cfg, tmp_path / "m.pt",
                   CharLSTMConfig(hidden_size=32, embedding_size=8), progress=False)
    assert result.best_val_loss / math.log(2) < 0.5 * unigram_entropy_bits(text)


def test_checkpoint_records_history_samples_and_corpus(trained, stdlib_text_file):
    ckpt = load_checkpoint(trained)
    meta = ckpt.meta
    assert meta["corpus"][0]["name"] == str(stdlib_text_file)
    assert len(meta["corpus"][0]["sha256"]) == 64
    assert [s["step"] for s in meta["samples"]] == [30, 60]
    assert meta["history"] and meta["best_val_loss"] == min(h["val_loss"] for h in meta["history"])
    assert meta["versions"]["torch"] == str(torch.__version__)
    info = run("info", trained).output
    assert "2 layers x 24 units" in info and "sample at step 30" in info and "bits/char" in info


def test_same_seed_same_checkpoint_and_sample(tmp_path, stdlib_text_file, trained):
    again = tmp_path / "again.pt"
    assert run("train", stdlib_text_file, "-o", again, *TINY, "--max-steps", "60",
               "--sample-every", "30").exit_code == 0
    a, b = load_checkpoint(trained), load_checkpoint(again)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    s1 = run("sample", trained, "-n", "80", "--seed", "3").output
    s2 = run("sample", again, "-n", "80", "--seed", "3").output
    assert s1 == s2 and len(s1) >= 80
    assert run("sample", trained, "-n", "80", "--seed", "4").output != s1


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    vocab = Vocab.from_text("abc def\n")
    model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), hidden_size=16, embedding_size=4)).eval()
    save_checkpoint(tmp_path / "m.pt", model, vocab, {"note": "x"})
    loaded = load_checkpoint(tmp_path / "m.pt")
    ids = torch.as_tensor(vocab.encode("abc def\nabc")[0]).unsqueeze(0)
    assert torch.equal(model(ids)[0], loaded.model(ids)[0])
    assert loaded.vocab.chars == vocab.chars and loaded.meta["note"] == "x"


def test_unknown_characters_map_to_reserved_id():
    vocab = Vocab.from_text("abc")
    ids, unknown = vocab.encode("abzc€")
    assert list(ids) == [1, 2, 0, 3, 0] and unknown == 2


def test_sample_prime_argmax_and_temperature(trained):
    out = run("sample", trained, "-n", "40", "--prime", "def ", "--argmax").output
    assert out.startswith("def ") and len(out.rstrip("\n")) >= 40
    cold = run("sample", trained, "-n", "40", "-t", "0.5").output
    assert cold


def test_resume_continues_and_force_overwrites(trained, tmp_path, stdlib_text_file):
    r = run("train", stdlib_text_file, "-o", trained, *TINY, "--max-steps", "80", "--resume")
    assert r.exit_code == 0, r.output
    assert load_checkpoint(trained).meta["history"][-1]["step"] == 80
    fresh = tmp_path / "f.pt"
    fresh.write_bytes(trained.read_bytes())
    assert run("train", stdlib_text_file, "-o", fresh, *TINY, "--max-steps", "5", "--force").exit_code == 0
    assert load_checkpoint(fresh).meta["history"][-1]["step"] == 5
    assert "optimizer" in load_checkpoint(fresh).meta["train_state"]


def test_checkpoint_without_optimizer_state_is_smaller_and_still_resumes(tmp_path, stdlib_text_file):
    full, slim = tmp_path / "full.pt", tmp_path / "slim.pt"
    assert run("train", stdlib_text_file, "-o", full, *TINY, "--max-steps", "5").exit_code == 0
    assert run("train", stdlib_text_file, "-o", slim, *TINY, "--max-steps", "5", "--no-keep-optimizer").exit_code == 0
    assert "optimizer" not in load_checkpoint(slim).meta["train_state"]
    assert slim.stat().st_size < 0.6 * full.stat().st_size
    a, b = load_checkpoint(full).model.state_dict(), load_checkpoint(slim).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert run("train", stdlib_text_file, "-o", slim, *TINY, "--max-steps", "7", "--resume").exit_code == 0
    assert load_checkpoint(slim).meta["history"][-1]["step"] == 7


@pytest.mark.parametrize("case", ["missing", "empty", "emptydir", "binary", "nonutf8", "exists"])
def test_train_bad_input_is_one_line_error(tmp_path, trained, case):
    target = tmp_path / "out.pt"
    if case == "missing":
        args = [tmp_path / "nope.txt"]
    elif case == "empty":
        (tmp_path / "e.txt").write_text("")
        args = [tmp_path / "e.txt"]
    elif case == "emptydir":
        (tmp_path / "d").mkdir()
        (tmp_path / "d" / "x.bin").write_bytes(b"\x00\x01")
        args = [tmp_path / "d"]
    elif case == "binary":
        (tmp_path / "b.txt").write_bytes(b"\x00\x01\x02" * 100)
        args = [tmp_path / "b.txt"]
    elif case == "nonutf8":
        (tmp_path / "l.txt").write_bytes("café\n".encode("latin-1") * 500)
        args = [tmp_path / "l.txt"]
    else:
        target = trained
        args = [trained.parent / "x.txt"]
        args[0].write_text("hello world\n" * 200)
    before = target.read_bytes() if target.exists() else None
    r = subprocess.run([sys.executable, "-m", "rnnviz", "train", *map(str, args), "-o", str(target), *TINY, "--max-steps", "2"],
                       capture_output=True, text=True)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:"), r.stderr
    assert "Traceback" not in r.stderr
    assert (target.read_bytes() if target.exists() else None) == before


def test_non_utf8_accepted_with_explicit_choice(tmp_path):
    (tmp_path / "l.txt").write_bytes("café au lait\n".encode("latin-1") * 300)
    r = run("train", tmp_path / "l.txt", "-o", tmp_path / "m.pt", *TINY, "--max-steps", "2",
            "--encoding", "latin-1")
    assert r.exit_code == 0
    assert "é" in load_checkpoint(tmp_path / "m.pt").vocab.chars


@pytest.mark.parametrize("args,needle", [
    (["-t", "0"], "temperature"), (["-t", "-1"], "temperature")])
def test_sample_bad_temperature(trained, args, needle):
    r = subprocess.run([sys.executable, "-m", "rnnviz", "sample", str(trained), *args], capture_output=True, text=True)
    assert r.returncode != 0 and needle in r.stderr and "Traceback" not in r.stderr


def test_sample_rejects_non_checkpoint(tmp_path, stdlib_text_file):
    bogus = tmp_path / "x.pt"
    torch.save({"weights": torch.zeros(3)}, bogus)
    for path in (stdlib_text_file, bogus, tmp_path / "missing.pt"):
        r = subprocess.run([sys.executable, "-m", "rnnviz", "sample", str(path)], capture_output=True, text=True)
        assert r.returncode != 0 and r.stderr.startswith("Error:") and "Traceback" not in r.stderr
