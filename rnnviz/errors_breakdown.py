"""Where the model goes wrong, after Karpathy, Johnson & Fei-Fei (2015, section 4.3): each
character the model gives a probability below a threshold is an *error*, assigned to the
first category that explains it:

1. ``ngram``: an n-gram model of some order 1..N, trained on the same text, would have given
   the truth a probability at or above the threshold;
2. ``dynamic_memory``: the truth completes a substring, with at least ``memory_context``
   characters before it, that already occurred earlier in the same source;
3. ``rare_word``: the character lies inside a word seen fewer than ``rare_count`` times in
   training;
4. ``word_initial``: it is the first character of a word;
5. ``punctuation``;
6. ``other``.

And the long-range test: for each closing bracket and closing quote, the model's and the
n-gram's probability of the truth against the distance to the opening character.

    table, per_char = error_breakdown(ckpt, train_texts, sources)
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .features import TextIndex
from .ngram import NGramModel, extend_hash, symbols
from .options import ErrorOptions

CATEGORIES = ("ngram", "dynamic_memory", "rare_word", "word_initial", "punctuation", "other")
# Per-character codes stored in a dump: -1 no prediction (a source's first character),
# 0 predicted (p >= threshold), then 1 + the index in CATEGORIES.
NOT_PREDICTED, CORRECT = -1, 0
CATEGORY_CODES = {name: i + 1 for i, name in enumerate(CATEGORIES)}
_WORD = re.compile(r"\w+")
DISTANCE_BINS = (1, 6, 11, 21, 51, 101, 201, 10 ** 9)   # [1-5], [6-10], ... [201+]


def model_truth_probs(model, vocab, text: str, device=None, chunk: int = 8192) -> np.ndarray:
    """(T,) P(text[t] | text[:t]) under the model from a fresh state; NaN at t = 0.
    Runs in chunks that carry the state, so memory does not grow with the text."""
    import torch
    device = device or next(model.parameters()).device
    ids = torch.as_tensor(vocab.encode(text)[0], device=device)
    out = np.full(len(text), np.nan)
    state = None
    with torch.no_grad():
        for start in range(0, len(text) - 1, chunk):
            stop = min(start + chunk, len(text) - 1)
            logits, state = model(ids[start:stop].unsqueeze(0), state)
            logp = torch.log_softmax(logits[0].double(), dim=-1)
            truth = ids[start + 1:stop + 1]
            out[start + 1:stop + 1] = logp.gather(1, truth[:, None])[:, 0].exp().cpu().numpy()
    return out


def _repeated_substring(text: str, context: int) -> np.ndarray:
    """(T,) True where text[t-context:t+1] already occurred ending before t."""
    syms = symbols(text)
    n = len(syms)
    out = np.zeros(n, bool)
    if n <= context:
        return out
    keys = np.zeros(n - context, dtype=np.uint64)
    for j in range(context + 1):   # hash of syms[t-context .. t] for t >= context
        keys = extend_hash(keys, syms[j:n - context + j])
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    out[context:] = first[inverse] < np.arange(n - context)
    return out


def _word_masks(text: str, rare_words: set[str]) -> tuple[np.ndarray, np.ndarray]:
    """(T,) inside a rare word, (T,) first character of a word."""
    rare = np.zeros(len(text), bool)
    initial = np.zeros(len(text), bool)
    for m in _WORD.finditer(text):
        initial[m.start()] = True
        if m.group() in rare_words:
            rare[m.start():m.end()] = True
    return rare, initial


def categorize(text: str, p_model: np.ndarray, p_ngram: np.ndarray, word_counts: Counter,
               opts: ErrorOptions) -> np.ndarray:
    """(T,) int8 codes: NOT_PREDICTED, CORRECT or CATEGORY_CODES[...] per character.
    ``p_ngram`` is (orders, T) from ``NGramModel.truth_probs``."""
    codes = np.full(len(text), CORRECT, dtype=np.int8)
    error = p_model < opts.threshold            # NaN (no prediction) is not an error
    rare_words = {w for w in set(_WORD.findall(text)) if word_counts.get(w, 0) < opts.rare_count}
    rare, initial = _word_masks(text, rare_words)
    explained = np.zeros(len(text), bool)
    for name, mask in (("ngram", (p_ngram >= opts.threshold).any(axis=0)),
                       ("dynamic_memory", _repeated_substring(text, opts.memory_context)),
                       ("rare_word", rare), ("word_initial", initial),
                       ("punctuation", TextIndex(text).classes["punct"]),
                       ("other", np.ones(len(text), bool))):
        take = error & mask & ~explained
        codes[take] = CATEGORY_CODES[name]
        explained |= take
    codes[np.isnan(p_model)] = NOT_PREDICTED
    return codes


def summarize(codes: np.ndarray) -> pd.DataFrame:
    """One row per category: errors, share of all errors, share of predicted characters."""
    predicted = int(np.count_nonzero(codes != NOT_PREDICTED))
    errors = int(np.count_nonzero(codes > CORRECT))
    rows = [{"category": name, "errors": int(np.count_nonzero(codes == code))}
            for name, code in CATEGORY_CODES.items()]
    df = pd.DataFrame(rows)
    df["share_of_errors"] = df["errors"] / max(errors, 1)
    df["share_of_chars"] = df["errors"] / max(predicted, 1)
    total = pd.DataFrame([{"category": "all errors", "errors": errors,
                           "share_of_errors": 1.0 if errors else 0.0,
                           "share_of_chars": errors / max(predicted, 1)}])
    return pd.concat([df, total], ignore_index=True)


def closing_pairs(text: str, sources=None, language: str = "auto") -> pd.DataFrame:
    """Every closing bracket in code (outside strings and comments) with its opening one, and
    every closing quote of a string literal with its opening quote: columns ``kind``
    (``)``, ``]``, ``}`` or ``quote``), ``open``, ``close`` (positions) and ``distance``."""
    ti = TextIndex(text, sources, language)
    code = ti.code
    rows = []
    closer_of = {"(": ")", "[": "]", "{": "}"}
    for start, end in zip(ti.starts.tolist(), ti.ends.tolist()):
        stack: list[tuple[str, int]] = []
        for t in np.flatnonzero(code[start:end]).tolist():
            ch = text[start + t]
            if ch in closer_of:
                stack.append((closer_of[ch], start + t))
            elif ch in ")]}":
                if stack and stack[-1][0] == ch:
                    rows.append((ch, stack.pop()[1], start + t))
                else:
                    stack.clear()   # unbalanced: the pairing before this point is unreliable
    string = ti.tokens["string"]
    long_ = ti.tokens["long"]
    edges = np.flatnonzero(np.diff(np.concatenate([[0], string.astype(np.int8), [0]])))
    for s, e in zip(edges[::2].tolist(), edges[1::2].tolist()):
        q = s
        while q < e and text[q] not in "'\"":
            q += 1
        close = e - 2 if long_[s] else e      # the first character of the closing delimiter
        if q < e and close < len(text) and close > q:
            rows.append(("quote", q, close))
    df = pd.DataFrame(rows, columns=["kind", "open", "close"]).sort_values("close", ignore_index=True)
    df["distance"] = df["close"] - df["open"]
    return df


def long_range(pairs: pd.DataFrame, p_model: np.ndarray, p_ngram_full: np.ndarray) -> pd.DataFrame:
    """Per closing character: the model's and the n-gram's probability of the truth."""
    out = pairs.copy()
    out["model_p"] = p_model[out["close"].to_numpy()]
    out["ngram_p"] = p_ngram_full[out["close"].to_numpy()]
    return out


def long_range_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean probabilities per kind and distance bin (``1-5``, ``6-10``, ... ``201+``)."""
    bins = np.asarray(DISTANCE_BINS)
    labels = [f"{lo}-{hi - 1}" if hi < 10 ** 9 else f"{lo}+" for lo, hi in zip(bins[:-1], bins[1:])]
    b = np.clip(np.searchsorted(bins, rows["distance"].to_numpy(), side="right") - 1, 0, len(labels) - 1)
    df = rows.assign(bin=b, distance_bin=[labels[i] for i in b])
    g = df.groupby(["kind", "bin", "distance_bin"], sort=True)
    return g.agg(n=("close", "size"), model_p=("model_p", "mean"),
                 ngram_p=("ngram_p", "mean")).reset_index().drop(columns="bin")


def training_word_counts(texts: list[str]) -> Counter:
    counts: Counter = Counter()
    for t in texts:
        counts.update(_WORD.findall(t))
    return counts


@dataclass
class Breakdown:
    table: pd.DataFrame        # summarize() of every source together
    codes: np.ndarray          # (N,) int8 category code per character of the concatenated text
    p_model: np.ndarray        # (N,) P(truth) under the model, NaN at each source's start
    p_ngram: np.ndarray        # (N,) P(truth) under the full-order n-gram
    long_range: pd.DataFrame   # one row per closing character


def error_breakdown(model, vocab, train_texts: list[str], sources: list[tuple[str, str]],
                    opts: ErrorOptions = ErrorOptions(), device=None,
                    ngram: NGramModel | None = None) -> Breakdown:
    """``sources`` are (name, text) pairs read as separate texts (fresh state each)."""
    ngram = ngram or NGramModel.fit(train_texts, opts.order)
    counts = training_word_counts(train_texts)
    codes, pm, pn = [], [], []
    for _, text in sources:
        p_model = model_truth_probs(model, vocab, text, device)
        p_ngram = ngram.truth_probs(text)
        codes.append(categorize(text, p_model, p_ngram, counts, opts))
        pm.append(p_model)
        pn.append(p_ngram[-1])
    codes_all, pm_all, pn_all = np.concatenate(codes), np.concatenate(pm), np.concatenate(pn)
    text_all = "".join(t for _, t in sources)
    pairs = closing_pairs(text_all, [(name, len(t)) for name, t in sources])
    return Breakdown(summarize(codes_all), codes_all, pm_all, pn_all, long_range(pairs, pm_all, pn_all))


def long_range_figure(summary: pd.DataFrame, min_count: int = 5, width: int = 360, height: int = 260,
                      ncols: int = 2):
    """A Bokeh layout, one panel per kind: mean P(truth) of the model and the n-gram per
    distance bin (x = the bin's lower edge, log scale); bins of fewer than ``min_count``
    closings are left out. ``width`` and ``height`` are each panel's, ``ncols`` panels a row."""
    from bokeh.layouts import gridplot
    from bokeh.models import ColumnDataSource
    from bokeh.plotting import figure
    panels = []
    summary = summary[summary["n"] >= min_count]
    for kind in [k for k in (")", "]", "}", "quote") if k in set(summary["kind"])]:
        rows = summary[summary["kind"] == kind].copy()
        rows["x"] = [int(label.split("-")[0].rstrip("+")) for label in rows["distance_bin"]]
        src = ColumnDataSource(rows.to_dict("list"))
        title = "closing quote" if kind == "quote" else f"'{kind}'"
        fig = figure(title=f"{title} (bins of >= {min_count})", x_axis_type="log",
                     width=width, height=height, x_range=(0.8, 400), y_range=(0, 1),
                     x_axis_label="distance to the opening char",
                     y_axis_label="mean P(truth)", tools="hover,save",
                     tooltips=[("distance", "@distance_bin"), ("closings", "@n"),
                               ("model", "@model_p{0.000}"), ("n-gram", "@ngram_p{0.000}")])
        fig.line("x", "model_p", source=src, color="#0072B2", line_width=2, legend_label="model")
        fig.scatter("x", "model_p", source=src, color="#0072B2", size=6)
        fig.line("x", "ngram_p", source=src, color="#D55E00", line_width=2, line_dash="dashed",
                 legend_label="n-gram")
        fig.scatter("x", "ngram_p", source=src, color="#D55E00", size=6, marker="square")
        fig.legend.location = "top_right"
        panels.append(fig)
    return gridplot(panels, ncols=ncols, toolbar_location="right")


def save_figure_html(layout, path, title: str, force: bool = False) -> None:
    """A standalone HTML file with Bokeh's JavaScript inline (works offline), written atomically."""
    import os
    from pathlib import Path

    from bokeh.embed import file_html
    from bokeh.resources import INLINE
    from .errors import RnnvizError
    path = Path(path)
    if path.exists() and not force:
        raise RnnvizError(f"{path} exists; pass --force to overwrite it")
    tmp = path.with_name(path.name + ".partial")
    try:
        tmp.write_text(file_html(layout, INLINE, title), encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


FROM_CHECKPOINT = "@checkpoint"   # TRAIN_TEXTS: the files the checkpoint records it was trained on


def recorded_corpus(ckpt, encoding="utf-8", errors="strict") -> list[str]:
    """The checkpoint's training files, re-read from their recorded paths and checked
    against their recorded sha256."""
    from pathlib import Path

    from .errors import RnnvizError
    from .text import read_source
    corpus = ckpt.meta.get("corpus") or []
    if not corpus:
        raise RnnvizError(f"{ckpt.path}: the checkpoint records no training files; name them instead")
    texts = []
    for entry in corpus:
        path = Path(entry["name"])
        if not path.is_file():
            raise RnnvizError(f"{path}: a training file the checkpoint records is missing")
        src = read_source(path, encoding, errors)
        if src.sha256 != entry.get("sha256"):
            raise RnnvizError(f"{path}: differs from the file the checkpoint was trained on (sha256)")
        texts.append(src.text)
    return texts


def errors_command(checkpoint, train_paths, held_out_paths, opts: ErrorOptions, *, csv=None,
                   long_range_csv=None, plot=None, into=None, force=False, device="auto",
                   encoding="utf-8", errors="strict", echo=print) -> Breakdown:
    """``rnnviz errors``: read, fit the n-grams, run the model, print and write the results.
    A held-out file that also lies below TRAIN_TEXTS is left out of the n-gram's training;
    TRAIN_TEXTS ``@checkpoint`` means the files the checkpoint records it was trained on."""
    from pathlib import Path

    from .analyze import check_exports, export_ranking
    from .checkpoint import load_checkpoint
    from .device import resolve_device
    from .errors import RnnvizError
    from .text import expand_paths, read_sources
    if not 0.0 < opts.threshold <= 1.0:
        raise RnnvizError(f"--threshold must be in (0, 1], got {opts.threshold}")
    if opts.order < 1 or opts.memory_context < 1 or opts.rare_count < 1:
        raise RnnvizError("--order, --memory-context and --rare-count must be at least 1")
    check_exports(csv, None, force)
    check_exports(long_range_csv, None, force)
    if plot is not None and Path(plot).exists() and not force:
        raise RnnvizError(f"{plot} exists; pass --force to overwrite it")
    dev = resolve_device(device)
    ckpt = load_checkpoint(checkpoint, device=dev)
    held_out = read_sources(held_out_paths, encoding, errors)
    if into is not None:
        check_dump_matches(into, ckpt, "".join(s.text for s in held_out))
    if list(train_paths) == [FROM_CHECKPOINT]:
        train = recorded_corpus(ckpt, encoding, errors)
    else:
        held = {p.resolve() for p in expand_paths(held_out_paths)}
        train = [s.text for s in read_sources(train_paths, encoding, errors)
                 if Path(s.name).resolve() not in held]
    if not any(train):
        raise RnnvizError("TRAIN_TEXTS holds no text that is not also held out")
    echo(f"{len(train)} training file(s), {sum(map(len, train)):,} chars; "
         f"{len(held_out)} held-out file(s), {sum(len(s.text) for s in held_out):,} chars")
    result = error_breakdown(ckpt.model, ckpt.vocab, train, [(s.name, s.text) for s in held_out],
                             opts, dev)
    predicted = int(np.count_nonzero(result.codes != NOT_PREDICTED))
    bits = -np.log2(result.p_model[~np.isnan(result.p_model)]).mean()
    echo(f"model: {bits:.3f} bits/char; an error is P(truth) < {opts.threshold} "
         f"({int(result.table['errors'].iloc[-1]):,} of {predicted:,} predicted chars)")
    echo(result.table.to_string(index=False, formatters={
        "share_of_errors": "{:.1%}".format, "share_of_chars": "{:.1%}".format}))
    summary = long_range_summary(result.long_range)
    echo("\nlong range: mean P(truth) of closing characters by distance to the opening one")
    echo(summary.to_string(index=False, float_format="{:.3f}".format))
    for target in export_ranking(result.table, csv=csv, force=force):
        echo(f"wrote {target}")
    for target in export_ranking(result.long_range, csv=long_range_csv, force=force):
        echo(f"wrote {target}")
    if plot is not None:
        save_figure_html(long_range_figure(summary), plot, "rnnviz long-range test", force)
        echo(f"wrote {plot}")
    if into is not None:
        store_breakdown(into, result, opts)
        echo(f"stored /{GROUP} in {into}")
    return result


GROUP = "errors"   # the dump's result group (docs/dump-format.md)


def check_dump_matches(path, ckpt, text: str, texts: str = "HELD_OUT") -> None:
    """``--into``: the dump must be of this checkpoint and of exactly these texts (the
    command's argument ``texts``)."""
    from .dumpfile import open_dump
    from .errors import RnnvizError
    with open_dump(path) as d:
        if d.attrs.get("checkpoint_sha256") != ckpt.sha256:
            raise RnnvizError(f"{path}: recorded from another checkpoint (sha256 "
                              f"{str(d.attrs.get('checkpoint_sha256'))[:12]}, not {ckpt.sha256[:12]})")
        if d.n_chars != len(text) or d.text != text:
            raise RnnvizError(f"{path}: holds another text than {texts} ({d.n_chars:,} chars, "
                              f"{texts} has {len(text):,}); dump {texts} itself")


def store_breakdown(path, result: Breakdown, opts: ErrorOptions) -> None:
    """Replace the dump's /errors group: per-character category codes and probabilities,
    the breakdown and the long-range rows."""
    from dataclasses import asdict

    from .dumpfile import open_dump
    with open_dump(path, "r+") as d:
        d.write_group(GROUP, tables={"breakdown": result.table, "long_range": result.long_range},
                      arrays={"category": result.codes, "p_model": result.p_model.astype(np.float32),
                              "p_ngram": result.p_ngram.astype(np.float32)},
                      options={**asdict(opts), "categories": {"not_predicted": NOT_PREDICTED,
                                                              "correct": CORRECT, **CATEGORY_CODES}})
