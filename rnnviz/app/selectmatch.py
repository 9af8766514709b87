"""LSTMVis's select and match (Strobelt et al. 2017) over arrays: no I/O, no widgets.

*Select*: the units that are on at every character of a span (at ``cover`` of them:
by default 90%, see below) and off on the ``before`` characters just before it and the
``after`` just after. "On" means
>= threshold; with the negative sign, <= -threshold (cell states, hidden states and
the cell candidate have a sign that matters); with "both", either, each unit
keeping the sign it has in the span. LSTMVis asks for every character (``cover=1``);
rnnviz's default lets a unit be off at up to 10% of them, because a unit that tracks a
region turns on a character or two after the region's first one (an opening quote is
read before the state knows it is inside a string): in the model the demo shipped before
its preset gained dropout, the string cell was at -0.28 on the first quote of a module
docstring, just short of t = 0.3, so asking for every character never selected it there.

*Match* (as LSTMVis's data handler does it): per character, count the selected
units that are on. Candidates are runs of >= ``min_length`` characters where all of
them are on, then runs where one fewer is on, and so on; a run never crosses into
another source, and a run that overlaps one already found at a higher count is left
out (it is the same place, seen less strictly). Each run is ranked by how many
selected units are on over the whole run, then by how few *other* units (of the
same layers and kinds) are on over the whole run, then by length, longest first.
Blocks of states stream through :class:`Matcher`, so a dump of millions of
characters is never held in memory: only a count per character and one bit per selected
unit for the characters where one is on; all units are read only where a run can make
the top.

    matcher = Matcher(selection, threshold=0.3, sign="positive", n_units=256)
    for block in blocks: matcher.feed(block[:, selection.columns])   # in order
    runs = matcher.result(lambda a, b: states[a:b], top=50, exclude=(start, end), breaks=source_starts)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..errors import RnnvizError

SIGNS = ("positive", "negative", "both")
MIN_LENGTH = 2                   # LSTMVis's shortest run
COVER = 0.9                      # share of the span's chars a selected unit must be on at (LSTMVis: 1)
MAX_CANDIDATES = 10_000          # stop going down the counts once this many runs are found
GAP = 256                        # runs at most this far apart are read together (fewer, larger reads)
RESULT_COLUMNS = ("start", "end", "length", "selected_on", "others_on", "level")


@dataclass
class Selection:
    """Units (columns of the blocks) chosen by :func:`select`, each with its sign (+1 or -1)."""
    columns: np.ndarray          # (k,) int64
    signs: np.ndarray            # (k,) int8

    def __len__(self) -> int:
        return len(self.columns)

    def keep(self, mask: np.ndarray) -> "Selection":
        return Selection(self.columns[mask], self.signs[mask])


def check_query(threshold: float, sign: str, cover: float = 1.0) -> None:
    if not 0 < cover <= 1:
        raise RnnvizError(f"the share of the span a unit must be on at must be in (0, 1] (in the app: "
                          f"1-100%); got {cover}")
    if sign not in SIGNS:
        raise RnnvizError(f"sign must be one of {', '.join(SIGNS)}, got {sign!r}")
    if not np.isfinite(threshold) or threshold <= 0:
        raise RnnvizError(f"the threshold must be a number > 0 (units are on at >= threshold, or "
                          f"<= -threshold with the negative sign); got {threshold}")


def firing(values: np.ndarray, threshold: float, sign: str) -> np.ndarray:
    """(T, U) bool: where ``values`` (T, U) count as on for ``sign`` (NaN never does).

    float16 (as dumps store states) is compared bit-wise, without converting: its bits
    order like the numbers within each sign, and converting costs more than the query.
    """
    v = np.asarray(values)
    if v.dtype == np.float16:
        bits = v.view(np.uint16)
        mag = bits & 0x7FFF
        on = (mag >= _f16_bits_at_least(threshold)) & (mag <= 0x7C00)       # 0x7C00 is inf; above: NaN
        if sign == "positive":
            on &= bits < 0x8000
        elif sign == "negative":
            on &= bits >= 0x8000
        return on
    v = v.astype(np.float32, copy=False)
    if sign == "positive":
        return v >= threshold
    if sign == "negative":
        return v <= -threshold
    return np.abs(v) >= threshold


def _f16_bits_at_least(t: float) -> int:
    """Bits of the smallest float16 >= t (t > 0): v >= t exactly when v >= that float16."""
    h = np.float16(t)
    if float(h) < t:
        h = np.nextafter(h, np.float16(np.inf))
    return int(np.array(h, np.float16).view(np.uint16))


def needed(n: int, cover: float) -> int:
    """Chars of an n-char span a unit must be on at: ceil(cover * n) (all of a span under 1/(1 - cover))."""
    return int(np.ceil(round(cover * n, 9)))


def select(inside: np.ndarray, before: np.ndarray, after: np.ndarray, threshold: float,
           sign: str = "positive", cover: float = COVER) -> Selection:
    """Units on at >= ``cover`` of the rows of ``inside`` (T, U) and off at every row of
    ``before`` and ``after``."""
    check_query(threshold, sign, cover)
    if not len(inside):
        raise RnnvizError("the span is empty: select at least one character")
    need = needed(len(inside), cover)
    around = np.concatenate([before, after]).astype(np.float32)
    picked, signs = [], []
    for s, name in ((1, "positive"), (-1, "negative")):
        if sign not in (name, "both"):
            continue
        ok = firing(inside, threshold, name).sum(axis=0) >= need
        if len(around):
            ok &= ~firing(around, threshold, name).any(axis=0)
        picked.append(np.flatnonzero(ok))
        signs.append(np.full(int(ok.sum()), s, np.int8))
    columns = np.concatenate(picked).astype(np.int64)
    order = np.argsort(columns, kind="stable")
    return Selection(columns[order], np.concatenate(signs)[order])


def on_almost_everywhere(signs: np.ndarray, p1: np.ndarray, p99: np.ndarray, threshold: float) -> np.ndarray:
    """(k,) bool: units already on at their 1st percentile (99th for the negative sign) over the
    whole text, so on at >= 99% of its characters. Such a unit is on wherever a run could be,
    and "off before" cannot rule it out when the span starts a source (the state starts from
    zero there, and many c units drift away from it and never come back). NaN: not known."""
    signs = np.asarray(signs)
    with np.errstate(invalid="ignore"):
        return np.where(signs > 0, np.asarray(p1, float) >= threshold, np.asarray(p99, float) <= -threshold)


def runs(mask: np.ndarray, breaks=()) -> tuple[np.ndarray, np.ndarray]:
    """Starts and ends (exclusive) of the runs of True in ``mask``, cut at each offset in ``breaks``."""
    mask = np.asarray(mask, bool)
    rising = mask.copy()                  # bool shifts, not an int diff: this runs once per count level
    rising[1:] &= ~mask[:-1]
    falling = mask.copy()
    falling[:-1] &= ~mask[1:]
    starts, ends = np.flatnonzero(rising), np.flatnonzero(falling) + 1
    b = np.asarray(breaks, np.int64)
    b = b[(b > 0) & (b < len(mask))]
    cut = b[mask[b] & mask[b - 1]]          # a break inside a run splits it
    if len(cut):
        starts, ends = np.sort(np.concatenate([starts, cut])), np.sort(np.concatenate([ends, cut]))
    return starts, ends


def _overlaps(starts, ends, taken_starts, taken_ends) -> np.ndarray:
    """(R,) bool: run i overlaps one of the sorted, disjoint ``taken`` runs."""
    if not len(taken_starts):
        return np.zeros(len(starts), bool)
    i = np.searchsorted(taken_ends, starts, side="right")      # first taken run ending after the start
    hit = i < len(taken_starts)
    hit[hit] = taken_starts[i[hit]] < ends[hit]
    return hit


def candidate_runs(counts: np.ndarray, k: int, min_length: int = MIN_LENGTH, exclude=None, breaks=(),
                   max_candidates: int = MAX_CANDIDATES):
    """Runs where >= m of the ``k`` selected units are on, for m = k, k-1, ... (see the module doc).

    Returns sorted starts, ends and the level m of each run.
    """
    taken_s = taken_e = np.zeros(0, np.int64)
    levels = np.zeros(0, np.int64)
    for m in range(k, 0, -1):
        s, e = runs(counts >= m, breaks)
        keep = (e - s) >= min_length
        if exclude is not None:
            keep &= (e <= exclude[0]) | (s >= exclude[1])
        s, e = s[keep], e[keep]
        new = ~_overlaps(s, e, taken_s, taken_e)
        s, e = s[new], e[new]
        starts, ends = np.concatenate([taken_s, s]), np.concatenate([taken_e, e])
        levels = np.concatenate([levels, np.full(len(s), m)])
        order = np.argsort(starts, kind="stable")
        taken_s, taken_e, levels = starts[order], ends[order], levels[order]
        if len(taken_s) >= max_candidates:
            break
    return taken_s, taken_e, levels


def _and_over_runs(bits: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """(R, B) bitwise AND of the rows of ``bits`` over each run [start, end) (sorted, disjoint)."""
    if not len(starts):
        return np.zeros((0, bits.shape[1]), bits.dtype)
    padded = np.concatenate([bits, np.zeros((1, bits.shape[1]), bits.dtype)])   # an end may be len(bits)
    bounds = np.column_stack([starts, ends]).ravel()
    return np.bitwise_and.reduceat(padded, bounds, axis=0)[::2]


_POPCOUNT = np.array([bin(i).count("1") for i in range(256)], np.int64)


class Matcher:
    """Stream the selected units' states through the match query; :meth:`result` ranks the runs.

    Two reads: every character's selected units (``feed``, in order), then every unit
    only on the runs that can reach the top (``read_rows``): most candidates are ranked
    below the top by their count of selected units alone.
    """

    def __init__(self, selection: Selection, threshold: float, sign: str, n_units: int):
        check_query(threshold, sign)
        if not len(selection):
            raise RnnvizError("no units selected: select a span where some units are on first")
        self.sel, self.threshold, self.sign, self.n_units = selection, float(threshold), sign, n_units
        self.n = 0
        self._counts: list[np.ndarray] = []      # (T,) selected units on, per char
        self._sel_bits: list[np.ndarray] = []    # packed (T', k) bits: which selected units are on
        # Only chars with a selected unit on are kept (T' rows): no run can contain the others.

    def feed(self, selected: np.ndarray) -> None:
        """The next (T, k) states of the selected units, in the selection's order."""
        selected = np.asarray(selected)
        if selected.ndim != 2 or selected.shape[1] != len(self.sel):
            raise ValueError(f"expected a (T, {len(self.sel)}) block, got {selected.shape}")
        on = np.empty(selected.shape, bool)                                         # (T, k)
        up = self.sel.signs > 0
        on[:, up] = firing(selected[:, up], self.threshold, "positive")
        on[:, ~up] = firing(selected[:, ~up], self.threshold, "negative")
        counts = on.sum(axis=1, dtype=np.int32)
        self._counts.append(counts)
        self._sel_bits.append(np.packbits(on[counts > 0], axis=1))
        self.n += len(selected)

    def result(self, read_rows, top: int = 50, exclude=None, breaks=(), min_length: int = MIN_LENGTH,
               batch: int = 1 << 16) -> pd.DataFrame:
        """The ``top`` runs, best first: start, end (exclusive), length, selected_on, others_on, level.

        ``read_rows(start, end)``: (T, U) states of every unit for chars [start, end).
        """
        k = len(self.sel)
        counts = np.concatenate(self._counts) if self._counts else np.zeros(0, np.int32)
        starts, ends, level = candidate_runs(counts, k, min_length, exclude, breaks)
        # Row of each char among the kept ones; a run's chars are all kept, and consecutive there.
        kept_row = np.cumsum(counts > 0) - 1
        sel_bits = np.concatenate(self._sel_bits) if self._sel_bits else np.zeros((0, 1), np.uint8)
        selected_on = _POPCOUNT[_and_over_runs(sel_bits, kept_row[starts], kept_row[starts] + ends - starts)].sum(1)
        # Only runs with as many selected units on as the top-th best need the other units.
        if len(starts) > top:
            need = selected_on >= np.sort(selected_on)[::-1][top - 1]
            starts, ends, level, selected_on = starts[need], ends[need], level[need], selected_on[need]
        others_on = self._others_on(starts, ends, read_rows, batch)
        length = ends - starts
        best = np.lexsort((starts, -length, others_on, -selected_on))[:top]
        return pd.DataFrame({"start": starts[best], "end": ends[best], "length": length[best],
                             "selected_on": selected_on[best], "others_on": others_on[best],
                             "level": level[best]})

    def _others_on(self, starts, ends, read_rows, batch: int) -> np.ndarray:
        """(R,) non-selected units on over each whole run; runs close together are read at once."""
        out = np.zeros(len(starts), np.int64)
        mask = np.ones(self.n_units, bool)
        mask[self.sel.columns] = False
        i = 0
        while i < len(starts):
            j = i + 1              # runs i..j-1, close together, are read as one span of <= `batch` chars
            while j < len(starts) and ends[j] - starts[i] <= batch and starts[j] - ends[j - 1] <= GAP:
                j += 1
            lo, hi = int(starts[i]), int(ends[j - 1])
            if hi - lo <= batch:
                bits = np.packbits(firing(read_rows(lo, hi), self.threshold, self.sign), axis=1)
                together = _and_over_runs(bits, starts[i:j] - lo, ends[i:j] - lo)
            else:                  # one long run: AND its pieces
                together = None
                for a in range(lo, hi, batch):
                    piece = np.packbits(firing(read_rows(a, min(hi, a + batch)), self.threshold, self.sign), axis=1)
                    piece = np.bitwise_and.reduce(piece, axis=0, keepdims=True)
                    together = piece if together is None else together & piece
            on = np.unpackbits(together, axis=1, count=self.n_units).astype(bool)
            out[i:j] = (on & mask).sum(axis=1)
            i = j
        return out


def matches_csv(found: pd.DataFrame, texts: list[str], units: list[str], threshold: float, sign: str,
                cover: float) -> str:
    """The matches as CSV (rank, positions, counts, the query's settings, the run's text), for the
    export button. ``cover`` (0-1] is written in percent, as the address has it."""
    import csv
    import io
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["rank", "start", "end", "length", "selected_on", "selected_total", "others_on", "threshold",
                "sign", "cover", "text"])
    for rank, (row, text) in enumerate(zip(found.itertuples(index=False), texts), 1):
        w.writerow([rank, row.start, row.end, row.length, row.selected_on, len(units), row.others_on,
                    f"{threshold:g}", sign, f"{cover * 100:g}", text])
    return out.getvalue()
