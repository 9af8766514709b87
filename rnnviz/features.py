"""Text features: one value per character, computed from the text alone.

Each feature has a kind that decides how units are scored against it
(``binary``: ROC-AUC and point-biserial r; ``continuous`` and ``ordinal``: Pearson r
and Spearman rho). Values describe the text *after reading character t*, the moment
the LSTM state at t was recorded: an opening quote is inside its quotation, the
closing one is not.

    df = compute_features(open("x.py").read())     # one float32 column per feature

Everything is vectorised numpy over the code points, one feature at a time, plus
one C-speed regex scan per source for strings and comments, so a feature costs a
few O(N) temporaries and 1M characters take well under a second.
"""
from __future__ import annotations

import re
import string
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import Callable

import numpy as np
import pandas as pd

from .errors import RnnvizError
from .language import LANGUAGES, describe, language_of

FEATURE_KINDS = ("binary", "continuous", "ordinal")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

_STRING = (r"""[rRbBuUfF]{0,2}(?:'''(?:\\.|[^\\])*?'''|\"\"\"(?:\\.|[^\\])*?\"\"\"|"""
           r"""'(?:\\.|[^\\'\n])*'|"(?:\\.|[^\\"\n])*")""")
_TOKENS = {  # group "c" = comment, group "s" = string literal; the leftmost match wins
    "python": re.compile(rf"(?P<c>#[^\n]*)|(?P<s>{_STRING})", re.S),
    "c": re.compile(rf"(?P<c>//[^\n]*|/\*.*?\*/)|(?P<s>{_STRING})", re.S),
}
_BRACKETS = {"paren": "()", "bracket": "[]", "brace": "{}"}


@dataclass(frozen=True)
class Feature:
    """A named per-character feature: ``compute(TextIndex) -> (N,) array``."""
    name: str
    kind: str
    description: str
    compute: Callable[["TextIndex"], np.ndarray]


class TextIndex:
    """The text of one dump (all sources concatenated) with shared, lazily built helpers."""

    def __init__(self, text: str, sources=None, language: str = "auto", tab_size: int = 8):
        self.text = text
        self.codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,)
        self.n = len(text)
        names, lengths = _source_list(sources, self.n)
        self.starts = np.cumsum([0] + lengths[:-1]).astype(np.int64)
        self.ends = self.starts + np.asarray(lengths, dtype=np.int64)
        if language not in ("auto",) + LANGUAGES:
            raise RnnvizError(f"unknown language {language!r}: expected auto, python, c or text")
        if int(tab_size) < 1:
            raise RnnvizError(f"tab size must be at least 1, found {tab_size}")
        self.tab_size = int(tab_size)
        self.names = names
        self.languages = [language_of(nm, text[s:e], language)
                          for nm, s, e in zip(names, self.starts.tolist(), self.ends.tolist())]

    def forget(self) -> None:
        """Drop the per-character helpers built so far (they are built again when asked for):
        the analysis holds the features' compact columns instead while it reads the dump."""
        for name, attr in type(self).__dict__.items():
            if isinstance(attr, cached_property):
                self.__dict__.pop(name, None)

    def describe(self, feat: "Feature") -> str:
        """The feature's description for the languages of these sources."""
        return describe(feat.name, feat.description, self.languages)

    # ----- shared pieces
    @cached_property
    def source_id(self) -> np.ndarray:          # (N,) which source each char belongs to
        return np.repeat(np.arange(len(self.starts), dtype=np.int32), self.ends - self.starts)

    @cached_property
    def classes(self) -> dict[str, np.ndarray]:
        """Boolean (N,) arrays per character class, from a lookup table over the code points used."""
        ascii_ = self.codes < 128
        if ascii_.all():              # the common case: no sort over the text
            used, inverse = np.arange(128), self.codes
        else:
            used, inverse = np.unique(self.codes, return_inverse=True)
        table = {k: np.zeros(len(used), bool) for k in _CLASSIFIERS}
        for i, code in enumerate(used.tolist()):
            ch = chr(code)
            for k, test in _CLASSIFIERS.items():
                table[k][i] = test(ch)
        return {k: v[inverse] for k, v in table.items()}

    @cached_property
    def code(self) -> np.ndarray:       # (N,) True outside string literals and comments
        return ~(self.tokens["string"] | self.tokens["comment"])

    @cached_property
    def quotes(self) -> dict[str, np.ndarray]:
        return {"double": _quotes(self, '"', "\u201c", "\u201d"), "single": _quotes(self, "'", "\u2018", "\u2019")}

    @cached_property
    def line_start(self) -> np.ndarray:         # (N,) index of the first char of t's line
        starts = np.zeros(self.n, bool)
        starts[1:] = self.codes[:-1] == 10
        starts[self.starts[self.starts < self.n]] = True
        return np.maximum.accumulate(np.where(starts, np.arange(self.n, dtype=np.int32), 0))   # int32: half the memory

    @cached_property
    def column(self) -> np.ndarray:
        """(N,) column of each character in its line: a tab moves to the next multiple of tab_size."""
        raw = np.arange(self.n, dtype=np.int64) - self.line_start
        tabs = np.flatnonzero(self.codes == 9)
        if not len(tabs) or self.tab_size == 1:
            return raw
        line_starts = np.flatnonzero(np.r_[True, self.line_start[1:] != self.line_start[:-1]])
        extra = np.zeros(self.n + 1, np.int64)
        line, added = -1, 0
        for p in tabs.tolist():                 # tabs are few; each depends on the ones before it
            if self.line_start[p] != line:
                line, added = int(self.line_start[p]), 0
            width = self.tab_size - (int(raw[p]) + added) % self.tab_size
            extra[p + 1] += width - 1
            added += width - 1
            after = line_starts[np.searchsorted(line_starts, p, side="right"):][:1]
            end = int(after[0]) if len(after) else self.n
            extra[end] -= width - 1             # the next line starts at column 0 again
        return raw + np.cumsum(extra)[:self.n]

    @cached_property
    def tokens(self) -> dict[str, np.ndarray]:
        """Boolean masks from one regex scan per code source: ``string``, ``comment``, the
        strings delimited by ``"`` (``double``) and by ``'`` (``single``), and the strings that
        are triple-quoted (``long``, docstrings mostly) or not (``short``), as Python's grammar
        names them."""
        spans = {"string": [], "comment": [], "double": [], "single": [], "long": [], "short": []}
        for start, end, lang in zip(self.starts.tolist(), self.ends.tolist(), self.languages):
            if lang == "text":
                continue   # prose has no literals or comments
            for m in _TOKENS[lang].finditer(self.text, start, end):
                # Inside = from the opening quote (or #) up to, not including, the last closing char.
                if m.lastgroup == "s":
                    span = (m.start(), m.end() - 1)
                    spans["string"].append(span)
                    quote = m.start()
                    while self.text[quote] not in "'\"":      # skip a prefix such as rb or f
                        quote += 1
                    spans["double" if self.text[quote] == '"' else "single"].append(span)
                    spans["long" if self.text[quote] * 3 == self.text[quote:quote + 3] else "short"].append(span)
                else:
                    spans["comment"].append((m.start(), m.end() - self.text.startswith("/*", m.start())))
        return {k: _spans_mask(v, self.n) for k, v in spans.items()}

    @cached_property
    def prose(self) -> np.ndarray:      # (N,) True on characters of prose sources
        return np.repeat(np.array([lang == "text" for lang in self.languages]), self.ends - self.starts)

    @cached_property
    def paragraph_start(self) -> np.ndarray:
        """(N,) True where a paragraph (or source) begins: after a line holding only whitespace."""
        starts = np.zeros(self.n, bool)
        nl = np.flatnonzero(self.codes == 10)
        text_before = np.concatenate([[0], np.cumsum(~self.classes["space"])])   # non-space chars before t
        blank = text_before[nl[1:]] == text_before[nl[:-1] + 1]    # nothing but space between newlines
        after = nl[1:][blank] + 1
        starts[after[after < self.n]] = True
        starts[self.starts[self.starts < self.n]] = True
        return starts

    def per_source_cumsum(self, delta: np.ndarray, restart: np.ndarray | None = None) -> np.ndarray:
        """Cumulative sum of ``delta`` restarting at each source (and where ``restart`` is True)."""
        total = np.cumsum(delta, dtype=np.int64)
        if restart is None:
            before = np.concatenate([[0], total])[self.starts]
            return total - before[self.source_id]
        last = np.maximum.accumulate(np.where(restart, np.arange(self.n), 0))
        return total - np.concatenate([[0], total])[last]


_CLASSIFIERS: dict[str, Callable[[str], bool]] = {
    "alpha": str.isalpha,
    "upper": str.isupper,
    "digit": str.isdigit,
    "space": str.isspace,
    "word": lambda ch: ch.isalnum() or ch == "_",
    "punct": lambda ch: ch in string.punctuation or unicodedata.category(ch)[0] in "PS",
    # Accented Latin vowels count: the base letter after NFD decomposition decides.
    "vowel": lambda ch: ch.isalpha() and unicodedata.normalize("NFD", ch)[0] in "aeiouAEIOU",
}


def _source_list(sources, n: int) -> tuple[list[str], list[int]]:
    if sources is None:
        return [""], [n]
    if isinstance(sources, pd.DataFrame):
        sources = list(zip(sources["name"], sources["length"]))
    names = [str(nm) for nm, _ in sources]
    lengths = [int(length) for _, length in sources]
    if sum(lengths) != n or any(length < 0 for length in lengths):
        raise RnnvizError(f"sources cover {sum(lengths)} characters, expected {n}")
    return (names, lengths) if names else ([""], [n])


def _spans_mask(spans: list[tuple[int, int]], n: int) -> np.ndarray:
    diff = np.zeros(n + 1, np.int32)
    if spans:
        s = np.asarray(spans, dtype=np.int64)
        np.add.at(diff, s[:, 0], 1)
        np.add.at(diff, s[:, 1], -1)
    return np.cumsum(diff[:-1]) > 0


# ----- built-in features (each: TextIndex -> (N,) values)
def _quotes(ti: TextIndex, straight: str, curly_open: str, curly_close: str) -> np.ndarray:
    """Inside a quotation. Code: strings with this delimiter (from the tokenizer). Prose:
    straight quotes toggle, curly ones open and close, and every paragraph starts outside
    (a quotation running over paragraphs reopens at each one)."""
    code = ti.tokens["double" if straight == '"' else "single"]
    if not ti.prose.any():
        return code
    c = ti.codes
    toggle = c == ord(straight)
    closes = c == ord(curly_close)
    if straight == "'":  # a quote between two letters is an apostrophe (don't, it's)
        alpha = ti.classes["alpha"]
        between = np.zeros(ti.n, bool)
        between[1:-1] = alpha[:-2] & alpha[2:]
        toggle &= ~between
        closes &= ~between
    para = ti.paragraph_start
    inside = (ti.per_source_cumsum(toggle.astype(np.int8), para) & 1).astype(bool)
    # Curly quotes: the last one seen in the paragraph decides.
    event = np.where(c == ord(curly_open), 1, np.where(closes, 0, -1))
    event[para & (event < 0)] = 0
    at = np.maximum.accumulate(np.where(event >= 0, np.arange(ti.n), 0))
    inside |= event[at] == 1
    return np.where(ti.prose, inside, code)


def _clamped_depth(ti: TextIndex, delta: np.ndarray) -> np.ndarray:
    """Running depth that never goes below 0 (stray closers are ignored), per source."""
    s = ti.per_source_cumsum(delta)
    # Running min restarted per source: push each source below all earlier ones, then undo.
    shift = (np.abs(s).max(initial=0) * 2 + 2) * ti.source_id.astype(np.int64)
    low = np.minimum.accumulate(s - shift) + shift
    return s - np.minimum(low, 0)


def _depth(ti: TextIndex, pairs: str) -> np.ndarray:
    delta = np.zeros(ti.n, np.int8)
    for o, c in zip(pairs[0::2], pairs[1::2]):
        delta += ti.codes == ord(o)
        delta -= ti.codes == ord(c)
    delta *= ti.code
    return _clamped_depth(ti, delta)


def _line_pos(ti):
    return ti.column


def _to_newline(ti):
    """Chars until the next newline (0 on the newline itself); the source end counts as one."""
    nxt = np.where(ti.codes == 10, np.arange(ti.n), ti.n)
    nxt = np.minimum.accumulate(nxt[::-1])[::-1]
    return np.minimum(nxt, ti.ends[ti.source_id]) - np.arange(ti.n)


def _indent(ti):
    """Columns of leading spaces and tabs of the current line (the whole line gets its value)."""
    blank = (ti.codes == 32) | (ti.codes == 9)
    stop = np.where(blank, ti.n, np.arange(ti.n))
    first_text = np.minimum.accumulate(stop[::-1])[::-1]         # first non-blank at or after t
    ls = ti.line_start
    end = ti.ends[ti.source_id]
    line_end = np.minimum(first_text[ls], end)
    col = ti.column
    last = np.maximum(line_end - 1, 0)                           # a blank last line: its last blank
    width = np.where(ti.codes[last] == 9, ti.tab_size - col[last] % ti.tab_size, 1)
    return np.where(line_end < end, col[np.minimum(line_end, ti.n - 1)], np.where(line_end > ls, col[last] + width, 0))


def _word_pos(ti):
    """1-based position inside a run of word characters; 0 outside words."""
    word = ti.classes["word"]
    breaks = np.where(~word, np.arange(ti.n), -1)
    first = ti.starts[ti.starts < ti.n]
    breaks[first] = np.maximum(breaks[first], first - 1)   # a new source starts a new word
    last_break = np.maximum.accumulate(breaks)
    return np.where(word, np.arange(ti.n) - last_break, 0)


def _builtins() -> dict[str, Feature]:
    b, c, o = FEATURE_KINDS
    specs = [
        ("in_string", b, "inside a Python string literal ('..', \"..\", triple-quoted, escapes)",
         lambda ti: ti.tokens["string"]),
        ("in_short_string", b, "inside a one-line string literal ('..' or \"..\", not triple-quoted)",
         lambda ti: ti.tokens["short"]),
        ("in_long_string", b, "inside a triple-quoted string literal (docstrings, mostly)",
         lambda ti: ti.tokens["long"]),
        ("in_comment", b, "inside a comment (# for Python, // and /* */ for C-like files)",
         lambda ti: ti.tokens["comment"]),
        ("in_double_quote", b, "inside double quotes: \"..\" strings in code; in prose \"..\" or curly, "
         "across lines", lambda ti: ti.quotes["double"]),
        ("in_single_quote", b, "inside single quotes: '..' strings in code; in prose '..' or curly, "
         "apostrophes skipped", lambda ti: ti.quotes["single"]),
        ("in_quote", b, "inside any quotation (double or single)",
         lambda ti: ti.quotes["double"] | ti.quotes["single"]),
        ("line_pos", c, "column in the line (characters since the last newline, a tab to the next tab stop)",
         _line_pos),
        ("to_newline", c, "characters until the next newline", _to_newline),
        ("indent", o, "indentation of the current line in columns (leading spaces and tabs, tab stops "
         "every --tab-size)", _indent),
        ("depth", o, "bracket depth over (), [] and {} together, outside strings and comments",
         lambda ti: _depth(ti, "()[]{}")),
    ]
    specs += [(f"depth_{name}", o, f"depth of {pair[0]}{pair[1]} brackets outside strings and comments",
               lambda ti, p=pair: _depth(ti, p)) for name, pair in _BRACKETS.items()]
    specs += [
        ("in_word", b, "inside a word (letters, digits, underscore)", lambda ti: ti.classes["word"]),
        ("word_pos", o, "position inside the current word (1 = first char; 0 outside words)", _word_pos),
        ("whitespace", b, "whitespace character", lambda ti: ti.classes["space"]),
        ("uppercase", b, "uppercase letter", lambda ti: ti.classes["upper"]),
        ("digit", b, "digit", lambda ti: ti.classes["digit"]),
        ("punctuation", b, "punctuation or symbol", lambda ti: ti.classes["punct"]),
        ("vowel", b, "vowel (a e i o u, accents ignored)", lambda ti: ti.classes["vowel"]),
    ]
    return {name: Feature(name, kind, desc, fn) for name, kind, desc, fn in specs}


BUILTIN: dict[str, Feature] = _builtins()


# ----- user features
def _check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise RnnvizError(f"bad feature name {name!r}: expected letters, digits and _ (like in_call)")
    return name


def regex_feature(name: str, pattern: str, flags: int = 0) -> Feature:
    """Binary feature: 1 on every character inside a match of ``pattern``."""
    try:
        rx = re.compile(pattern, flags)
    except re.error as e:
        raise RnnvizError(f"bad regex for feature {name!r}: {e} in {pattern!r}") from None

    def compute(ti: TextIndex) -> np.ndarray:
        return _spans_mask([m.span() for m in rx.finditer(ti.text) if m.end() > m.start()], ti.n)
    return Feature(_check_name(name), "binary", f"inside a match of /{pattern}/", compute)


def parse_feature_option(option: str) -> Feature:
    """``NAME=REGEX`` from the command line."""
    name, sep, pattern = option.partition("=")
    if not sep or not pattern:
        raise RnnvizError(f"bad --feature {option!r}: expected NAME=REGEX, e.g. in_call='\\w+\\('")
    return regex_feature(name.strip(), pattern)


def custom_feature(name: str, fn: Callable[[str], object], kind: str = "continuous",
                   description: str = "") -> Feature:
    """A feature from a Python function ``fn(text) -> N values``."""
    if kind not in FEATURE_KINDS:
        raise RnnvizError(f"unknown feature kind {kind!r}: expected one of {', '.join(FEATURE_KINDS)}")

    def compute(ti: TextIndex) -> np.ndarray:
        values = np.asarray(fn(ti.text), dtype=np.float32)
        if values.shape != (ti.n,):
            raise RnnvizError(f"feature {name!r} returned shape {values.shape}, expected ({ti.n},)")
        return values
    return Feature(_check_name(name), kind, description or f"user function {getattr(fn, '__name__', '')}",
                   compute)


def select_features(names=None, extra=()) -> list[Feature]:
    """Built-ins (all, or the ``names`` given) followed by user features; names must be unique."""
    if isinstance(names, str):
        names = [s.strip() for s in names.split(",") if s.strip()]
    if names is None:
        chosen = list(BUILTIN.values())
    else:
        unknown = [nm for nm in names if nm not in BUILTIN]
        if unknown:
            raise RnnvizError(f"unknown feature {', '.join(map(repr, unknown))}: valid built-in features "
                              f"are {', '.join(BUILTIN)}")
        chosen = [BUILTIN[nm] for nm in dict.fromkeys(names)]
    seen = {f.name for f in chosen}
    for feat in extra:
        if feat.name in seen or feat.name in BUILTIN:
            raise RnnvizError(f"feature name {feat.name!r} is used twice (or by a built-in); pick another")
        seen.add(feat.name)
        chosen.append(feat)
    return chosen


def feature_values(ti: TextIndex, feat: Feature) -> np.ndarray:
    """(N,) float32 values of one feature."""
    return np.asarray(feat.compute(ti)).astype(np.float32, copy=False)


def compute_features(text: str, features=None, *, sources=None, language: str = "auto",
                     tab_size: int = 8) -> pd.DataFrame:
    """One float32 column per feature; ``df.attrs["kinds"]`` and ``["descriptions"]`` describe them.

    ``features``: None (all built-ins), names of built-ins, or a list mixing names and
    :class:`Feature` objects (from :func:`regex_feature`, :func:`custom_feature`).
    ``sources``: (name, length) pairs or a sources table; features restart at each one.
    ``language``: ``auto`` (per source: a code extension decides, else the content; see
    :mod:`rnnviz.language`), or ``python``, ``c``, ``text`` (prose: quotes, no comments) for
    every source. ``tab_size``: tab stops for ``line_pos`` and ``indent``.
    ``df.attrs["languages"]`` lists the language each source got.
    """
    if features is None:
        feats = select_features()
    else:
        features = [features] if isinstance(features, (str, Feature)) else list(features)
        feats = select_features([f for f in features if isinstance(f, str)],
                                [f for f in features if isinstance(f, Feature)])
    ti = TextIndex(text, sources, language, tab_size)
    df = pd.DataFrame({f.name: feature_values(ti, f) for f in feats}, index=pd.RangeIndex(ti.n, name="char"))
    df.attrs["kinds"] = {f.name: f.kind for f in feats}
    df.attrs["descriptions"] = {f.name: ti.describe(f) for f in feats}
    df.attrs["languages"] = list(zip(ti.names, ti.languages))
    return df
