"""Finding places in a dump: text search, and LSTMVis-style select and match over units.

Both stream over the dump in chunks, so they work on millions of characters
without holding the text or the states in memory.

LSTMVis (Strobelt et al. 2017): a unit is *selected* for a span when it is
>= threshold on every character of the span and below it on the ``before``
characters just before and the ``after`` characters just after. A *match* is
another run of characters where the set of units that are on overlaps the
selected set (Jaccard index >= ``min_overlap``), ranked by overlap and by how
close its length is to the span's.
"""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..errors import RnnvizError

MAX_MATCHES = 100_000
_LEAD = 64            # chars of context before a chunk, so ^ and lookbehinds see the real text
_OVERLAP = 4096       # a match may run this far past its chunk's end


def compile_query(query: str, regex: bool, case: bool = True) -> re.Pattern:
    if not query:
        raise RnnvizError("type something to search for")
    flags = re.MULTILINE | (0 if case else re.IGNORECASE)
    try:
        return re.compile(query if regex else re.escape(query), flags)
    except re.error as e:
        raise RnnvizError(f"the regular expression {query!r} does not compile: {e}") from None


def find_all(view, pattern: re.Pattern, limit: int = MAX_MATCHES, chunk: int = 1 << 20):
    """Starts (int64) and lengths (int32) of the non-empty matches, in order; True if cut at ``limit``."""
    starts: list[int] = []
    lengths: list[int] = []
    for pos in range(0, view.n_chars, chunk):
        lead = min(pos, _LEAD)
        text = view.text(pos - lead, pos + chunk + _OVERLAP)
        # Only matches starting inside this chunk count; the next chunk re-reads the overlap.
        for m in pattern.finditer(text, lead):
            if m.start() - lead >= chunk:
                break
            if m.end() > m.start():
                starts.append(pos - lead + m.start())
                lengths.append(m.end() - m.start())
                if len(starts) >= limit:
                    return np.array(starts, np.int64), np.array(lengths, np.int32), True
    return np.array(starts, np.int64), np.array(lengths, np.int32), False


def units_on(inside: np.ndarray, around: np.ndarray, threshold: float) -> np.ndarray:
    """Units >= threshold on every row of ``inside`` (T, H) and < it on every row of ``around`` (A, H)."""
    on = (inside >= threshold).all(axis=0)
    if len(around):
        on &= (around < threshold).all(axis=0)
    return np.flatnonzero(on)


def select_units(view, point: str, start: int, end: int, threshold: float,
                 before: int = 1, after: int = 0) -> pd.DataFrame:
    """The units of ``point`` that are on inside chars [start, end) and off just around them."""
    if not 0 <= start < end <= view.n_chars:
        raise RnnvizError(f"expected a span with 0 <= start < end <= {view.n_chars:,}, got {start:,}..{end:,}")
    if end - start > 20_000:
        raise RnnvizError(f"select a span of at most 20,000 chars (got {end - start:,})")
    if before < 0 or after < 0:
        raise RnnvizError("before and after must be >= 0")
    lo, hi = max(0, start - before), min(view.n_chars, end + after)
    block = view.block(point, lo, hi).astype(np.float32)           # (T, H)
    inside = block[start - lo:end - lo]
    around = np.concatenate([block[:start - lo], block[end - lo:]])
    idx = units_on(inside, around, threshold)
    mean_in = inside[:, idx].mean(axis=0) if len(idx) else np.zeros(0)
    mean_out = around[:, idx].mean(axis=0) if len(idx) and len(around) else np.full(len(idx), np.nan)
    order = np.argsort(-mean_in, kind="stable")
    return pd.DataFrame({"unit": [f"{point}[{i}]" for i in idx[order]], "index": idx[order],
                         "mean_inside": mean_in[order], "mean_around": mean_out[order]})


def overlap(block: np.ndarray, units: np.ndarray, threshold: float) -> np.ndarray:
    """(T,) Jaccard index between ``units`` and the units of ``block`` (T, H) that are on."""
    on = block >= threshold
    inter = on[:, units].sum(axis=1)
    union = len(units) + on.sum(axis=1) - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0).astype(np.float32)


def runs(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the runs of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)


def find_matches(view, point: str, units, threshold: float, span: tuple[int, int],
                 min_overlap: float = 0.5, top: int = 50, progress=None) -> pd.DataFrame:
    """Other runs of chars where ``units`` of ``point`` fire together; best first."""
    units = np.asarray(units, dtype=np.int64)
    if not len(units):
        raise RnnvizError("no units selected: first find the units that are on in a span")
    scores = np.empty(view.n_chars, np.float32)                    # (N,) overlap per char
    for pos, block in view.iter_point(point):
        scores[pos:pos + len(block)] = overlap(block, units, threshold)
        if progress:
            progress((pos + len(block)) / view.n_chars)
    starts, ends = runs(scores >= min_overlap)
    keep = (ends <= span[0]) | (starts >= span[1])                 # not the query span itself
    starts, ends = starts[keep], ends[keep]
    if not len(starts):
        return pd.DataFrame({"position": [], "length": [], "overlap": [], "score": []})
    sums = np.concatenate([[0.0], np.cumsum(scores, dtype=np.float64)])
    mean = (sums[ends] - sums[starts]) / (ends - starts)
    qlen = span[1] - span[0]
    length_fit = np.minimum(ends - starts, qlen) / np.maximum(ends - starts, qlen)
    score = mean * length_fit
    best = np.argsort(-score, kind="stable")[:top]
    return pd.DataFrame({"position": starts[best], "length": (ends - starts)[best],
                         "overlap": mean[best], "score": score[best]})
