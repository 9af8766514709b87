"""The n-gram module, the error breakdown and the long-range test (rnnviz errors)."""
import math
import re
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from rnnviz.checkpoint import save_checkpoint
from rnnviz.errors_breakdown import (CATEGORY_CODES, CORRECT, NOT_PREDICTED, ErrorOptions, categorize,
                                     closing_pairs, summarize, training_word_counts)
from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
from rnnviz.ngram import NGramModel

SOURCE = Path(textwrap.__file__).read_text()


def witten_bell_by_hand(train: str, order: int, alphabet: int, history: str, c: str) -> float:
    """The textbook recursion with Python counters: the reference for the numpy tables."""
    p = 1.0 / alphabet
    for k in range(order):
        if k > len(history):
            break
        h = history[len(history) - k:] if k else ""
        follow = Counter(train[i + k] for i in range(len(train) - k) if train[i:i + k] == h)
        total = sum(follow.values())
        if total:
            p = (follow[c] + len(follow) * p) / (total + len(follow))
    return p


def test_ngram_tables_equal_the_textbook_recursion():
    train, test = SOURCE[:6000], SOURCE[9000:9400]
    lm = NGramModel.fit(train, order=4)
    got = lm.truth_probs(test)
    for t in range(len(test)):
        for order in (1, 2, 4):
            want = witten_bell_by_hand(train, order, lm.alphabet, test[max(0, t - order + 1):t], test[t])
            assert got[order - 1, t] == pytest.approx(want, rel=1e-12)
    assert lm.bits_per_char(test) < lm.bits_per_char(test[::-1])   # it learned the direction of text


def test_ngram_contexts_do_not_cross_training_texts():
    lm = NGramModel.fit(["ab", "cd"], order=2)
    joined = NGramModel.fit("abcd", order=2)
    # "b" is followed by "c" only when the texts are joined
    assert lm.truth_probs("bc")[1, 1] < joined.truth_probs("bc")[1, 1]


# A constructed case where the test knows which category each error falls in. The training
# text makes "the " predictable and each of four nouns a quarter likely after it; "zebu"
# appears once (rare); the held-out text repeats an unseen string (dynamic memory).
TRAIN = "the cat sat. the dog sat. the mat sat. the sun sat. " * 40 + "the zebu sat. "
HELD = "the cat sat. the sun! qxvwk and qxvwk the zebu"


def test_each_category_lands_where_the_text_puts_it():
    lm = NGramModel.fit(TRAIN, order=5)
    p_model = np.full(len(HELD), 0.1)           # the model gets every character wrong ...
    p_model[0] = np.nan                          # ... except that it predicts nothing first
    p_model[HELD.index("cat") + 1] = 0.9         # ... and the 'a' of cat it gets right
    codes = categorize(HELD, p_model, lm.truth_probs(HELD), training_word_counts([TRAIN]), ErrorOptions())
    cat = {v: k for k, v in CATEGORY_CODES.items()}
    at = lambda i: cat.get(int(codes[i]), int(codes[i]))  # noqa: E731
    assert codes[0] == NOT_PREDICTED
    assert codes[HELD.index("cat") + 1] == CORRECT
    assert at(HELD.index("cat") + 2) == "ngram"                # 't' after "the ca": always so in training
    second = HELD.rindex("qxvwk")
    assert at(second + 4) == "dynamic_memory"                    # 4 chars of context, seen before
    assert at(HELD.index("qxvwk") + 4) != "dynamic_memory"      # the first time it is new
    assert at(HELD.index("zebu")) == "rare_word"                 # 'z' after "the ": 1 in 161, a once-seen word
    assert at(HELD.index("sun")) == "word_initial"               # 's' after "the ": a quarter likely
    assert at(HELD.index("!")) == "punctuation"                  # training always had '.' there
    assert at(HELD.index("! q") + 1) == "other"                  # a space after '!', never seen
    table = summarize(codes)
    assert table.set_index("category").loc["all errors", "errors"] == np.count_nonzero(codes > CORRECT)
    assert table["errors"].iloc[:-1].sum() == table["errors"].iloc[-1]


def test_closing_pairs_skip_strings_and_comments_and_measure_distance():
    text = "f(a, [1, 2], '(x') # (\ng(\n  {}\n)\ns = 'abc'\n"
    pairs = closing_pairs(text, [("x.py", len(text))])
    got = {(r.kind, text[r.open], r.distance) for r in pairs.itertuples()}
    assert ("]", "[", 5) in got and (")", "(", 16) in got and ("}", "{", 1) in got
    assert (")", "(", 7) in got                                  # g( ... ) across two lines
    quotes = pairs[pairs["kind"] == "quote"]
    assert list(text[i] for i in quotes["close"]) == ["'", "'"]
    assert sorted(quotes["distance"]) == [3, 4]
    assert len(pairs) == 6                                       # nothing from inside '(x' or the comment


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    folder = tmp_path_factory.mktemp("errors")
    vocab = Vocab.from_text(SOURCE)
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), num_layers=1, hidden_size=16, embedding_size=8))
    train = folder / "train"
    train.mkdir()
    (train / "a.py").write_text(SOURCE[:14000])
    held = folder / "held.py"
    held.write_text(SOURCE[14000:17000])
    save_checkpoint(folder / "m.pt", model, vocab,
                    meta={"corpus": [{"name": str(train / "a.py"), "sha256": __import__("hashlib").sha256(
                        (train / "a.py").read_bytes()).hexdigest()}]})
    return folder


def rnnviz(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "rnnviz", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


def test_cli_prints_the_table_and_writes_csv_long_range_and_an_offline_plot(tiny_ckpt):
    f = tiny_ckpt
    r = rnnviz("errors", f / "m.pt", f / "train", f / "held.py", "-o", f / "e.csv",
               "--long-range", f / "lr.csv", "--plot", f / "lr.html", "--order", "5")
    assert r.returncode == 0, r.stderr
    assert "dynamic_memory" in r.stdout and "all errors" in r.stdout and "long range" in r.stdout
    table = pd.read_csv(f / "e.csv")
    assert list(table["category"]) == [*CATEGORY_CODES, "all errors"]
    assert table["errors"].iloc[-1] == table["errors"].iloc[:-1].sum() > 0
    rows = pd.read_csv(f / "lr.csv")
    assert {"kind", "distance", "model_p", "ngram_p"} <= set(rows.columns) and len(rows) > 20
    assert rows["model_p"].between(0, 1).all() and rows["ngram_p"].between(0, 1).all()
    page = (f / "lr.html").read_text()
    assert "Bokeh" in page and "<script" in page
    assert not re.search(r"<(script|link)\b[^>]*\b(src|href)=[\"']?https?:", page)   # offline: nothing fetched
    again = rnnviz("errors", f / "m.pt", "@checkpoint", f / "held.py", "-o", f / "e.csv", "--order", "5")
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    same = rnnviz("errors", f / "m.pt", "@checkpoint", f / "held.py", "-o", f / "e2.csv", "--order", "5")
    assert same.returncode == 0, same.stderr
    assert pd.read_csv(f / "e2.csv").equals(table)              # the recorded corpus is the same text


@pytest.mark.parametrize("case, needle", [
    ("missing_ckpt", "no such file"), ("missing_held", "no such file"), ("threshold", "--threshold"),
    ("order", "--order"), ("changed_corpus", "differs from the file the checkpoint was trained on"),
    ("cuda", "--device cuda"),
])
def test_bad_input_is_one_line(tiny_ckpt, tmp_path, case, needle):
    f = tiny_ckpt
    args = [f / "m.pt", f / "train", f / "held.py"]
    extra = []
    if case == "missing_ckpt":
        args[0] = tmp_path / "nope.pt"
    elif case == "missing_held":
        args[2] = tmp_path / "nope.py"
    elif case == "threshold":
        extra = ["--threshold", "1.5"]
    elif case == "order":
        extra = ["--order", "0"]
    elif case == "changed_corpus":
        changed = tmp_path / "m.pt"
        vocab = Vocab.from_text("ab")
        model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), num_layers=1, hidden_size=4, embedding_size=2))
        (tmp_path / "a.py").write_text("changed")
        save_checkpoint(changed, model, vocab, meta={"corpus": [{"name": str(tmp_path / "a.py"), "sha256": "0"}]})
        args = [changed, "@checkpoint", f / "held.py"]
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
        extra = ["--device", "cuda"]
    r = rnnviz("errors", *args, *extra)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error:") and needle in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_long_range_on_the_shipped_model_beats_the_ngram_far_from_the_opening():
    """The shipped model on the held-out stdlib files, against a 9-gram on a slice of its
    training files (the full corpus is the experiment in docs/experiments.md)."""
    from rnnviz.checkpoint import load_checkpoint
    from rnnviz.errors_breakdown import error_breakdown, long_range_summary
    from rnnviz.presets import STDLIB_HELDOUT, stdlib_files
    from rnnviz.shipped import shipped_model_path
    try:
        train_files, held = stdlib_files()
    except Exception:
        pytest.skip("this Python has no standard-library sources")
    ckpt = load_checkpoint(shipped_model_path())
    train = [p.read_text() for p in train_files[::8]]
    sources = [(p.name, p.read_text()) for p in held if p.name in STDLIB_HELDOUT[:4]]
    result = error_breakdown(ckpt.model, ckpt.vocab, train, sources)
    far = result.long_range[(result.long_range["kind"] == ")") & (result.long_range["distance"] > 20)]
    assert len(far) >= 30
    assert far["model_p"].mean() > far["ngram_p"].mean() + 0.1
    assert set(long_range_summary(result.long_range)["kind"]) >= {")", "quote"}
    assert math.isclose(result.table["share_of_errors"].iloc[:-1].sum(), 1.0)


def test_into_stores_categories_in_the_matching_dump_only(tiny_ckpt, tmp_path):
    import h5py
    f = tiny_ckpt
    dump = tmp_path / "held.h5"
    assert rnnviz("dump", f / "m.pt", f / "held.py", "-o", dump, "--quiet").returncode == 0
    before = h5py.File(dump, "r")["states/layer0/c"][()]
    r = rnnviz("errors", f / "m.pt", f / "train", f / "held.py", "--into", dump, "--order", "5",
               "-o", tmp_path / "t.csv")
    assert r.returncode == 0, r.stderr
    with h5py.File(dump, "r") as h:
        g = h["errors"]
        codes, p_model = g["category"][()], g["p_model"][()]
        assert codes.shape == p_model.shape == (len((f / "held.py").read_text()),)
        assert codes[0] == NOT_PREDICTED and np.isnan(p_model[0])
        errors = (p_model < 0.5)
        assert np.array_equal(codes[1:] > CORRECT, errors[1:])         # every error has a category
        counts = pd.read_csv(tmp_path / "t.csv").set_index("category")["errors"]
        for name, code in CATEGORY_CODES.items():
            assert np.count_nonzero(codes == code) == counts[name]
        assert np.array_equal(h["states/layer0/c"][()], before)        # the recording is untouched
        # the model's probability of each character agrees with what dump recorded as its loss
        loss = h["predictions/loss"][()]
        assert np.allclose(-np.log(p_model[1:]), loss[:-1], atol=1e-3)
    info = rnnviz("info", dump).stdout                                  # rnnviz info names the group
    assert f"errors       {int(errors[1:].sum()):,} errors ({errors[1:].mean():.1%} of the predicted" in info
    other = tmp_path / "other.py"
    other.write_text(SOURCE[100:900])
    wrong_text = rnnviz("errors", f / "m.pt", f / "train", other, "--into", dump, "--order", "3")
    assert wrong_text.returncode == 1 and "holds another text than HELD_OUT" in wrong_text.stderr
    vocab = Vocab.from_text(SOURCE)
    torch.manual_seed(1)
    other_model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), num_layers=1, hidden_size=16, embedding_size=8))
    save_checkpoint(tmp_path / "other.pt", other_model, vocab, meta={})
    wrong_ckpt = rnnviz("errors", tmp_path / "other.pt", f / "train", f / "held.py", "--into", dump, "--order", "3")
    assert wrong_ckpt.returncode == 1 and "recorded from another checkpoint" in wrong_ckpt.stderr
    assert len(wrong_ckpt.stderr.strip().splitlines()) == 1
