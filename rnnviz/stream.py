"""One recording point over every analysed character: the passes of :mod:`rnnviz.exact`,
plus what the same passes give for free (contexts, gate saturation, the fit part's own scores), and the
circular-shift null of a few units over all characters.

A *reader* is ``read(lo, hi, cols=None) -> (hi - lo, H or len(cols)) array`` over the
analysed characters (0..n), in the dump's dtype; this module never opens a file.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import torch

from .contexts import LEFT, QUANTILES, RIGHT
from .exact import (BINS, KEY_FINITE, KEY_VALUE, PERCENTILES, Counts, FeatureColumns, Scores, Sums, UnitStats,
                    column_scores, f16_keys, finish, midranks_1d, rank_kernel, unit_stats)
from .grouped import GroupSums
from .rank import shift_rows
from .rankkernel import as_bits, threads

COUNT_ROWS = 1 << 16      # characters per block in the counting pass (32 MB of float16 for 256 units)
SUM_ROWS = 1 << 16        # in the pass of sums: each unit's 256 KiB rank table serves this many in a row
# Reading chunks directly, the passes take a group of units (a whole chunk or a few, 32 units
# for each thread) over 4x or 2x as many characters in the same memory: each unit's 256 KiB
# table of counts or ranks is fetched once for that many values instead of for every 65,536.
GROUP_VALUES = (COUNT_ROWS * 256, SUM_ROWS * 128)     # values per block: counting, sums
NUMPY_ROWS = 1 << 13      # the same without the kernel (its float64 copies are 8x the block)
COLUMN_BYTES = 64 << 20   # whole columns held at once (float32 dumps, inf/NaN units, the null)
# A group of units (one 64-unit chunk here) over every character, read once for both passes,
# up to this size (2M characters at 64 units); longer texts are read twice, in blocks.
ONCE_BYTES = 256 << 20
SPREAD = 32               # at most one top and one bottom context per 32 analysed characters


@dataclass
class PointResult:
    point: str
    scores: Scores                      # (H, K)
    stats: dict                         # per unit (H,) arrays: n, nonfinite, mean, sd, p1, p50, p99, min, max
    below: np.ndarray                   # (H,) values < 0.1
    above: np.ndarray                   # (H,) values > 0.9
    top: np.ndarray                     # (H, k) analysed-character indices, strongest first (-1: none)
    bottom: np.ndarray
    quantile_at: np.ndarray             # (H, Q)
    values: dict                        # "top", "bottom", "quantile": (H, k) values at those characters
    luts: dict = field(default_factory=dict)   # unit index -> (65536,) int32 doubled midranks (float16 only)
    fit_scores: Scores | None = None    # the same scores on the first fit.n characters alone (``fit``)


class Extremes:
    """Running top-k and bottom-k characters per unit, at most one per SPREAD consecutive ones."""

    def __init__(self, h: int, k: int):
        self.k = k
        self.key = {s: np.full((0, h), -1, np.int64) for s in ("top", "bottom")}
        self.pos = {s: np.zeros((0, h), np.int64) for s in ("top", "bottom")}
        self.best = None        # the kernel's running state, when it keeps it (:meth:`in_kernel`)

    def in_kernel(self, h: int) -> np.ndarray:
        """The (H, 2, k, 2) running (score, position) lists the analysis kernel keeps: side 0
        the top (score: the key), side 1 the bottom (65535 - key), -1 in empty slots."""
        self.best = np.full((h, 2, self.k, 2), -1, np.int64)
        return self.best

    def add(self, keys: np.ndarray, offset: int, bad: np.ndarray | None = None) -> None:
        """(c, H) uint16 keys of analysed characters offset..offset+c (c a multiple of
        SPREAD except at the end); ``bad``: units whose inf/NaN keys are skipped."""
        c, h = keys.shape
        if self.k == 0 or c == 0:
            return
        blocks = _spread_blocks(keys)
        self.add_blocks(blocks.max(axis=1), blocks.min(axis=1), lambda rows, cols: keys[rows, cols], c, offset, bad)

    def add_blocks(self, most: np.ndarray, least: np.ndarray, keys_at, c: int, offset: int,
                   bad: np.ndarray | None = None) -> None:
        """The same from the (nb, H) largest and smallest key of every SPREAD characters;
        ``keys_at(rows, cols)``: the keys there (broadcast index arrays)."""
        nb, h = most.shape
        if self.k == 0 or c == 0:
            return
        cols = np.arange(h)[None, :]
        bad_idx = np.flatnonzero(bad) if bad is not None else np.zeros(0, int)
        if len(bad_idx):
            sub = _spread_blocks(keys_at(np.arange(c)[:, None], bad_idx[None, :])).astype(np.int64)
            finite = KEY_FINITE[sub]
        for side in ("top", "bottom"):
            # Scores: keys (top) or reversed keys (bottom); inf and NaN of the ``bad`` units score -1.
            best = (most if side == "top" else BINS - 1 - least.astype(np.int64)).astype(np.int64)
            if len(bad_idx):
                score = np.where(finite, sub if side == "top" else BINS - 1 - sub, -1)
                best[:, bad_idx] = score.max(axis=1)
            kk = min(self.k, nb)
            pick = _top_rows(best, kk)
            rows = np.minimum(pick[:, :, None] * SPREAD + np.arange(SPREAD), c - 1)    # (kk, H, SPREAD)
            found = keys_at(rows, cols[:, :, None])
            inside = found.astype(np.int64) if side == "top" else BINS - 1 - found.astype(np.int64)
            if len(bad_idx):
                inside[:, bad_idx] = np.where(KEY_FINITE[found[:, bad_idx]], inside[:, bad_idx], -1)
            pos = offset + pick * SPREAD + inside.argmax(axis=2)
            allk = np.concatenate([self.key[side], best[pick, cols]])
            allp = np.concatenate([self.pos[side], pos])
            keep = np.argsort(-allk, axis=0, kind="stable")[:self.k]
            self.key[side], self.pos[side] = allk[keep, cols], allp[keep, cols]

    def result(self, side: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(H, k) positions (-1 = none) and the values there."""
        if self.best is not None:      # as the numpy path leaves them: k rows at most, one per SPREAD characters
            kept = self.best[:, 0 if side == "top" else 1, :min(self.k, -(-n // SPREAD))]
            self.key[side], self.pos[side] = kept[:, :, 0].T, kept[:, :, 1].T
        ok = self.key[side] >= 0
        pos = np.where(ok, np.minimum(self.pos[side], n - 1), -1)
        key = np.clip(self.key[side] if side == "top" else BINS - 1 - self.key[side], 0, BINS - 1)
        return pos.T, np.where(ok, KEY_VALUE[key], np.nan).T


def _top_rows(score: np.ndarray, k: int) -> np.ndarray:
    """(k, H) rows of the k largest scores (>= -1) of each column of (nb, H) ``score``, largest
    first; ties go to the earlier row, so the contexts do not depend on the block size."""
    nb = len(score)
    tagged = ((score + 1) * nb + (nb - 1 - np.arange(nb))[:, None]).T.copy()   # distinct, in the same order
    tagged *= -1
    pick = np.argpartition(tagged, k - 1, axis=1)[:, :k] if k < nb else np.tile(np.arange(nb), (len(tagged), 1))
    order = np.argsort(np.take_along_axis(tagged, pick, 1), axis=1)
    return np.take_along_axis(pick, order, 1).T


def _spread_blocks(keys: np.ndarray) -> np.ndarray:
    """(c, H) keys -> (nb, SPREAD, H), the last block padded with its last row."""
    c, h = keys.shape
    nb = -(-c // SPREAD)
    if nb * SPREAD != c:
        keys = np.concatenate([keys, np.repeat(keys[-1:], nb * SPREAD - c, axis=0)])
    return keys.reshape(nb, SPREAD, h)


def scan_point(point: str, read, n: int, h: int, dtype, fc: FeatureColumns, *, contexts: int = 8,
               fit: FeatureColumns | None = None, buffers: dict | None = None) -> PointResult:
    """Score the H units of one point against ``fc`` on all n analysed characters; with
    ``fit`` (the features of the first fit.n characters), also on those alone (``fit_scores``:
    the counting pass is shared, its counts of those characters merged with the rest's).
    ``buffers``: a dict the caller keeps from one point to the next, for the large buffers
    the scan can use again (fresh ones cost a page fault per 4 KiB)."""
    if np.dtype(dtype) == np.float16:
        return _scan_float16(point, read, n, h, fc, contexts, fit, {} if buffers is None else buffers)
    res = _scan_columns(point, read, n, h, fc, contexts)
    if fit is not None:
        res.fit_scores = _column_group_scores(read, fit.n, h, fit)
    return res


def _empty_sums(h: int, fc: FeatureColumns, lib):
    return GroupSums.empty(h, fc.grouping) if lib is not None else Sums.empty(h, len(fc.names))


def _scan_float16(point, read, n, h, fc, contexts, fit, buffers: dict) -> PointResult:
    lib = rank_kernel()
    cut = fit.n if fit is not None else 0
    groups = _unit_groups(read, h, lib)
    ext = Extremes(h, contexts)
    best = ext.in_kernel(h) if lib is not None and contexts else None
    qat = np.full((h, len(QUANTILES)), -1, np.int64)
    sums = _empty_sums(h, fc, lib)
    fit_sums = _empty_sums(h, fit, lib) if fit is not None else None
    once = _read_once(read, n, groups, lib)
    if once:        # each group's column read once, for both passes
        st = UnitStats.empty(h, len(QUANTILES))
        fit_st = UnitStats.empty(h, len(QUANTILES)) if fit is not None else None
    else:
        counts, fit_counts = _count(read, n, h, lib, groups, cut)
        fit_st = unit_stats(fit_counts, QUANTILES, lib) if fit is not None else None
        del fit_counts
        st = unit_stats(counts, QUANTILES, lib)
        del counts

    def block_sums(lo: int, bits: np.ndarray, units: slice) -> None:
        bits = bits.view(np.uint16)
        hi = lo + len(bits)
        if lib is not None:          # the kernel also keeps the extremes and finds the quantile characters
            sums.of(units).add(bits, st.lut2[units], fc, lo, lib, best=None if best is None else best[units],
                               targets=st.quantile_keys[units].astype(np.int32), found=qat[units])
        else:                        # (whole rows)
            sums.add(bits, st.lut2, *fc.weights(lo, hi))
            keys = f16_keys(bits)
            ext.add(keys, lo, st.nonfinite > 0)
            _find_quantiles(keys, st.quantile_keys, qat, lo)
        if lo < cut:                 # the fit part's characters again, with its own midranks
            m = min(hi, cut)
            if lib is not None:
                fit_sums.of(units).add(bits[:m - lo], fit_st.lut2[units], fit, lo, lib)
            else:
                fit_sums.add(bits[:m - lo], fit_st.lut2, *fit.weights(lo, m))
    rows = _group_rows(groups, SUM_ROWS, GROUP_VALUES[1]) if lib is not None else NUMPY_ROWS
    if once:
        width = groups[0].stop - groups[0].start
        # each unit's n values, the next unit's starting on a 16-byte boundary (see gather)
        column = _buffer(buffers, "column", (-(-n // 8) * 8, width), np.float16, "F")[:n]
        hists = [_buffer(buffers, f"counts{i}", (width, BINS), np.int32) for i in range(2 if cut else 1)]
        for units in groups:
            w = units.stop - units.start
            bits = _read_into(read, 0, n, np.arange(units.start, units.stop), column[:, :w]).view(np.uint16)
            counts, first = _count_column(bits, cut, lib, [hist[:w] for hist in hists])
            if first is not None:
                fit_st.put(units, unit_stats(first, QUANTILES, lib, fit_st.lut2[units]))
            st.put(units, unit_stats(counts, QUANTILES, lib, st.lut2[units]))
            for lo in range(0, n, rows):
                block_sums(lo, bits[lo:lo + rows], units)
        del column, hists
    else:
        _blocks(read, n, rows, block_sums, _ahead(read, lib), groups)
    bad = st.nonfinite > 0
    scores = finish(sums.sums(fc.grouping) if lib is not None else sums, st.n, st.rank_ss, st.ss, fc)
    fit_scores = None
    if fit is not None:
        fit_scores = finish(fit_sums.sums(fit.grouping) if lib is not None else fit_sums, fit_st.n,
                            fit_st.rank_ss, fit_st.ss, fit)
    stats = {"n": st.n, "nonfinite": st.nonfinite, "mean": st.mean,
             "sd": np.sqrt(st.ss / np.maximum(st.n, 1)), "min": st.minimum, "max": st.maximum}
    stats.update({f"p{int(q)}": st.percentiles[:, j] for j, q in enumerate(PERCENTILES)})
    if bad.any():                      # units with inf/NaN: scored from their whole columns
        idx = np.flatnonzero(bad)
        _rescore(scores, read, n, idx, fc)
        if fit is not None:
            _rescore(fit_scores, read, cut, idx, fit)
    luts = {u: st.lut2[u] for u in range(h)}   # trimmed by the caller to the units it keeps
    (top, top_v), (bottom, bottom_v) = ext.result("top", n), ext.result("bottom", n)
    qv = np.where(qat >= 0, KEY_VALUE[st.quantile_keys], np.nan)
    return PointResult(point, scores, stats, st.below, st.above, top, bottom, qat,
                       {"top": top_v, "bottom": bottom_v, "quantile": qv}, luts, fit_scores)


def _rescore(scores: Scores, read, n: int, units: np.ndarray, fc: FeatureColumns) -> None:
    """Replace the scores of ``units`` by those of their whole columns over the first n characters."""
    for part in _column_groups(units, n):
        sc, _ = column_scores(_columns(read, n, part), fc)
        for key in ("score", "auc", "r", "rho"):
            getattr(scores, key)[part] = getattr(sc, key)
        scores.n[part] = sc.n


def _column_group_scores(read, n: int, h: int, fc: FeatureColumns) -> Scores:
    """Scores of all h units from their whole columns over the first n characters."""
    scores = Scores(*(np.full((h, len(fc.names)), np.nan) for _ in range(4)), np.zeros(h, np.int64))
    _rescore(scores, read, n, np.arange(h), fc)
    return scores


def _count(read, n: int, h: int, lib, groups: list[slice], cut: int = 0) -> tuple[Counts, Counts | None]:
    """Value counts of all n characters, and of the first ``cut`` alone (None without a cut):
    those are counted on their own, then added into the others'. ``groups``: :func:`_unit_groups`."""
    counts, first = Counts.empty(h), Counts.empty(h) if cut else None

    def work(lo: int, block: np.ndarray, units: slice) -> None:
        _count_rows(block.view(np.uint16), lo, cut, Counts(counts.hist[units]),
                    None if first is None else Counts(first.hist[units]), lib)
    _blocks(read, n, _group_rows(groups, COUNT_ROWS, GROUP_VALUES[0]), work, _ahead(read, lib), groups)
    if first is not None:
        counts.hist += first.hist
    return counts, first


def _count_rows(bits: np.ndarray, lo: int, cut: int, counts: Counts, first: Counts | None, lib) -> None:
    """Count the (c, W) bits of characters lo..lo+c into ``counts``, those before ``cut`` into
    ``first`` instead (the callers add them in at the end)."""
    m = min(max(cut - lo, 0), len(bits))           # rows before the cut
    if m:
        first.add(bits[:m], lib)
    if m < len(bits):
        counts.add(bits[m:], lib)


def _read_once(read, n: int, groups: list[slice], lib) -> bool:
    """Whether each group of units is read once, whole, for both passes: where the kernel
    reads the chunks itself, in groups (:func:`_unit_groups`), and a group's column of all n
    characters fits in :data:`ONCE_BYTES`; else the passes read the dump twice, in blocks."""
    width = groups[0].stop - groups[0].start
    return (lib is not None and getattr(read, "direct", False) and getattr(read, "into", False)
            and n * width * 2 <= ONCE_BYTES)


def _buffer(buffers: dict, name: str, shape: tuple, dtype, order: str = "C") -> np.ndarray:
    """``buffers[name]`` when it has this shape and dtype, else a new one there (the old one
    let go first)."""
    got = buffers.pop(name, None)
    if got is None or got.shape != shape or got.dtype != dtype:
        del got
        got = np.empty(shape, dtype, order=order)
    buffers[name] = got
    return got


def _count_column(bits: np.ndarray, cut: int, lib, hists: list[np.ndarray]) -> tuple[Counts, Counts | None]:
    """Value counts of a group's whole (n, W) column, and of its first ``cut`` characters
    alone (None without a cut; the first counts include them), into the (W, 65536) int32
    ``hists`` (one, two with a cut), which are zeroed first."""
    for hist in hists:
        hist.fill(0)
    counts, first = Counts(hists[0]), Counts(hists[1]) if cut else None
    _count_rows(bits, 0, cut, counts, first, lib)
    if first is not None:
        counts.hist += first.hist
    return counts, first


def _ahead(read, lib) -> bool:
    """Whether to read the next block while the kernel works: yes when h5py reads (holding
    Python's lock, on one core); no when the kernel reads the chunks itself, on every core."""
    return lib is not None and not getattr(read, "direct", False)


def _read_into(read, lo: int, hi: int, cols, buffer: np.ndarray | None) -> np.ndarray:
    """Rows lo:hi (of ``cols``) from ``read``: into ``buffer`` and unit by unit (the kernel's
    order) where the reader takes a buffer (``read.into``; one that does not fit is replaced),
    else as the reader returns them."""
    if not getattr(read, "into", False):
        return read(lo, hi, cols)
    return read(lo, hi, cols, out=buffer, by_unit=True)


def _unit_groups(read, h: int, lib) -> list[slice]:
    """The units each block holds: all of them, or, where the kernel reads the chunks itself,
    groups of whole chunks' units with 32 for each thread (read one group at a time, over
    more characters: :data:`GROUP_VALUES`)."""
    per = getattr(read, "chunk_units", 0)
    if lib is None or not getattr(read, "direct", False) or not per:
        return [slice(0, h)]
    width = min(h, -(-32 * threads() // per) * per)
    return [slice(u0, min(h, u0 + width)) for u0 in range(0, h, width)]


def _group_rows(groups: list[slice], rows: int, values: int) -> int:
    """Characters per block: ``rows`` for whole rows, else ``values`` over the group's width
    (a multiple of SPREAD, as the contexts' blocks of characters must be)."""
    if len(groups) == 1:
        return rows
    width = groups[0].stop - groups[0].start
    return max(rows, values // width // SPREAD * SPREAD)


def _blocks(read, n: int, rows: int, work, ahead: bool, groups: list[slice]) -> None:
    """work(lo, block, units) for every block of ``rows`` characters and, within it, every
    group of units (a slice; the block holds those units' columns), in order. With ``ahead``
    (whole rows only), the next block is read (h5py holds the GIL) while a worker thread
    runs the kernel on this one (without it): reading and counting overlap, on two cores. A
    reader that fills a given buffer (``read.into``) gets one back each time (two with
    ``ahead``), and is asked for the blocks unit by unit (the kernel's order; readers that
    read chunks directly lay them out so, the others ignore it)."""
    buffers: dict = {}
    whole = len(groups) == 1

    def next_block(lo: int, units: slice, slot: int) -> np.ndarray:
        hi = min(n, lo + rows)
        key = (slot, hi - lo, units.stop - units.start)     # the first and a shorter last block get their own
        buffers[key] = _read_into(read, lo, hi, None if whole else np.arange(units.start, units.stop),
                                  buffers.get(key))
        return buffers[key]
    if not ahead or not whole:
        for lo in range(0, n, rows):
            for units in groups:
                work(lo, next_block(lo, units, 0), units)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="rnnviz-analysis") as pool:
        pending = None
        for i, lo in enumerate(range(0, n, rows)):
            block = next_block(lo, groups[0], i % 2)
            if pending is not None:
                pending.result()
            pending = pool.submit(work, lo, block, groups[0])
        if pending is not None:
            pending.result()


def _find_quantiles(keys: np.ndarray, targets: np.ndarray, found: np.ndarray, offset: int) -> None:
    """First character holding each unit's quantile value, for the quantiles not found yet."""
    for j in range(targets.shape[1]):
        todo = np.flatnonzero(found[:, j] < 0)
        if not len(todo):
            continue
        eq = keys[:, todo] == targets[todo, j].astype(np.uint16)
        hit = eq.any(axis=0)
        found[todo[hit], j] = offset + eq[:, hit].argmax(axis=0)


def _column_groups(units: np.ndarray, n: int) -> list[np.ndarray]:
    size = max(1, COLUMN_BYTES // max(1, 8 * n))
    return [units[i:i + size] for i in range(0, len(units), size)]


def _columns(read, n: int, cols: np.ndarray) -> np.ndarray:
    """(n, len(cols)) float64 whole columns, read a block of characters at a time."""
    out = np.empty((n, len(cols)))
    for lo in range(0, n, COUNT_ROWS):
        hi = min(n, lo + COUNT_ROWS)
        out[lo:hi] = read(lo, hi, cols)
    return out


def _scan_columns(point, read, n, h, fc, contexts) -> PointResult:
    """float32 (or float64) states: whole columns a few units at a time, sorted to midranks."""
    k = len(fc.names)
    scores = Scores(*(np.full((h, k), np.nan) for _ in range(4)), np.zeros(h, np.int64))
    stats = {key: np.full(h, np.nan) for key in ("mean", "sd", "min", "max", "p1", "p50", "p99")}
    stats["n"], stats["nonfinite"] = np.zeros(h, np.int64), np.zeros(h, np.int64)
    below, above = np.zeros(h, np.int64), np.zeros(h, np.int64)
    top, bottom = np.full((h, contexts), -1, np.int64), np.full((h, contexts), -1, np.int64)
    qat = np.full((h, len(QUANTILES)), -1, np.int64)
    values = {"top": np.full((h, contexts), np.nan), "bottom": np.full((h, contexts), np.nan),
              "quantile": np.full((h, len(QUANTILES)), np.nan)}
    for part in _column_groups(np.arange(h), n):
        x = _columns(read, n, part)
        sc, cst = column_scores(x, fc)
        for key in ("score", "auc", "r", "rho"):
            getattr(scores, key)[part] = getattr(sc, key)
        scores.n[part] = sc.n
        finite = np.isfinite(x)
        stats["n"][part], stats["nonfinite"][part] = cst["n"], cst["nonfinite"]
        stats["mean"][part], stats["min"][part], stats["max"][part] = cst["mean"], cst["minimum"], cst["maximum"]
        for j, q in enumerate(PERCENTILES):
            stats[f"p{int(q)}"][part] = cst["percentiles"][:, j]
        with np.errstate(invalid="ignore"):
            stats["sd"][part] = np.sqrt(np.nanmean((x - cst["mean"]) ** 2, axis=0, where=finite))
            below[part] = ((x < LEFT) & finite).sum(0)
            above[part] = ((x > RIGHT) & finite).sum(0)
        with np.errstate(over="ignore"):                           # contexts: order by float16 values
            keys = f16_keys(x.astype(np.float16).view(np.uint16))
        ext = Extremes(len(part), contexts)
        ext.add(keys, 0, np.ones(len(part), bool))
        for side, where in (("top", top), ("bottom", bottom)):
            where[part] = idx = ext.result(side, n)[0]
            values[side][part] = np.where(idx >= 0, np.take_along_axis(x.T, np.maximum(idx, 0), 1), np.nan)
        for j, c in enumerate(part):
            v = np.where(finite[:, j], x[:, j], np.nan)
            order = np.argsort(v, kind="stable")[:cst["n"][j]]
            if len(order):
                qat[c] = order[(np.asarray(QUANTILES) * (len(order) - 1)).astype(int)]
                values["quantile"][c] = x[qat[c], j]
    return PointResult(point, scores, stats, below, above, top, bottom, qat, values, {})


# ----- circular-shift null over all characters
def shift_lags(n: int, shifts: int) -> tuple[int, np.ndarray]:
    """(d, lags): shifts by j*d characters, j in lags, never closer than MIN_SHIFT of the text to 0."""
    if shifts <= 0:
        return 0, np.zeros(0, int)
    m, jmin = shift_rows(shifts)
    d = n // m
    return d, np.arange(jmin, jmin + shifts)


def shifted_sums(r: np.ndarray, w: np.ndarray, d: int, lags: np.ndarray) -> np.ndarray:
    """For (T, n) rows r and one (n,) column w: (T, 1 + len(lags)) sums sum_t r[t] w[(t + L) % n]
    for L = 0 and L = j*d (j in lags), over all n characters.

    With the characters folded into A rows of d (zero padded to A*d = n + q), the unwrapped
    part of a shift by j*d is the j-th diagonal of the (A, A) product of the folded r and w,
    and the wrapped part (t + j*d >= n: w[t - (A - j)*d + q]) a diagonal of r's product with
    w folded q - d characters later (A + 1 rows): both from one product, the folded w stacked.
    """
    t_, n = r.shape
    a = -(-n // d)
    q = a * d - n
    rf = torch.zeros(t_, a * d)
    rf[:, :n] = torch.from_numpy(np.ascontiguousarray(r, np.float32))
    wf = torch.zeros((2 * a + 1) * d)
    wf[:n] = torch.from_numpy(np.ascontiguousarray(w, np.float32))
    wf[a * d + d - q:a * d + d - q + n] = wf[:n].clone()
    g = (rf.reshape(t_ * a, d) @ wf.reshape(2 * a + 1, d).T).reshape(t_, a, 2 * a + 1).double().numpy()
    out = np.empty((t_, 1 + len(lags)))
    for i, j in enumerate([0, *lags]):
        out[:, i] = np.trace(g[:, :, :a], offset=j, axis1=1, axis2=2)
        if j:
            out[:, i] += np.trace(g[:, :, a:], offset=-(a - j - 1), axis1=1, axis2=2)
    return out


def rank_columns(read, n: int, cols: np.ndarray, luts: dict | None) -> tuple[np.ndarray, np.ndarray]:
    """(len(cols), n) float32 centred doubled midranks (0 on inf/NaN) and the (len(cols),)
    sum of squares of the midranks' deviations, from the luts (float16) or by sorting."""
    out = np.zeros((len(cols), n), np.float32)
    ss = np.zeros(len(cols))
    if luts is not None and all(int(c) in luts for c in cols):
        lib = rank_kernel()
        table = torch.from_numpy(np.stack([luts[int(c)] for c in cols])) if lib is not None else None
        finite = torch.zeros(len(cols), dtype=torch.int64)
        block = None
        for lo in range(0, n, COUNT_ROWS):
            block = _read_into(read, lo, min(n, lo + COUNT_ROWS), cols, block)   # unit by unit where it can
            if lib is not None:
                lib.rank_rows(as_bits(block.view(np.uint16)), table, torch.from_numpy(out), lo, finite, threads())
                continue
            keys = f16_keys(block.view(np.uint16))
            for i, c in enumerate(cols):
                out[i, lo:lo + len(keys)] = luts[int(c)][keys[:, i]]
        if lib is not None:
            lib.centre_rows(torch.from_numpy(out), finite, torch.from_numpy(ss), threads())
            return out, ss
        for i in range(len(cols)):
            m = int((out[i] > 0).sum())
            out[i] = np.where(out[i] > 0, out[i] - (m + 1), 0)
            ss[i] = float((out[i].astype(np.float64) ** 2).sum()) / 4
        return out, ss
    x = _columns(read, n, cols)
    for i in range(len(cols)):
        keep = np.isfinite(x[:, i])
        m = int(keep.sum())
        r2 = 2 * midranks_1d(x[keep, i]) - (m + 1)
        out[i, keep] = r2
        ss[i] = float((r2 * r2).sum()) / 4
    return out, ss


def feature_weight(fc: FeatureColumns, j: int) -> tuple[np.ndarray, float]:
    """Feature j's centred column for the null, and the scale from sum_t r2[t] w[t] to its score."""
    table_r, table_x, code = fc.weight_table(j)
    if fc.binary[j]:                  # the mask less its mean (npos / n)
        npos = fc.npos[j]
        return table_x[code], 1.0 / (npos * (fc.n - npos))   # 2*AUC-1 = sum r2 m / (p q)
    return table_r[code], 0.25                               # times 1/sqrt(ss ss)


__all__ = ["PointResult", "scan_point", "shift_lags", "shifted_sums", "rank_columns", "feature_weight",
           "KEY_VALUE"]
