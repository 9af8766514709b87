"""Exact scores of every unit against every feature, streamed over all the characters.

Per (unit, feature): ROC-AUC with ties counting half (binary features), Spearman's rho
(continuous and ordinal ones), Pearson's r (point-biserial r for binary features). The
results equal scipy's on the full columns (``rankdata`` midranks) to float64 rounding.

float16 states (what ``rnnviz dump`` writes) take two passes over each recording point.
Where the compiled kernel reads the dump's uncompressed chunks itself, it reads a group of
units (32 per thread in whole chunks: one 64-unit chunk on two cores) over every character
once and runs both passes on it, while that column takes at most 256 MiB
(:data:`rnnviz.stream.ONCE_BYTES`: 2M characters at 64 units); past that, and for other
readers, the point is read once per pass, a block of characters at a time. Either way
memory is bounded, whatever the length of the text, beyond the features:

1. **counts**: per unit, how many characters hold each of the 65,536 float16 values
   (:class:`Counts`). They give every value's exact midrank (ties share the mean of
   their ranks), the unit's mean and variance, percentiles and gate saturation.
2. **sums** (:class:`Sums`): each block becomes doubled midranks (integers, looked up per
   unit) and float64 values, multiplied by the block's feature columns. AUC and rho are
   linear in the ranks and r in the values, so every score of every unit against every
   feature comes from two (H, K) sums of products accumulated in float64. Rank sums
   against 0/1 masks are sums of integers below 2^53, hence exact. The compiled kernel
   (:mod:`rnnviz.rankkernel`) gets the same sums with fewer operations, from sums per group
   of characters (:mod:`rnnviz.grouped`); numpy does the products.

Both are plain sums over characters: the results of separate blocks of characters merge
by adding (``merge``), so the same code can run per shard.

float32 states, and float16 units holding inf or NaN, are scored from whole columns, a
few units at a time (:func:`column_scores`): sorted to midranks, then the same sums.
Non-finite values are counted per unit and left out of every statistic of that unit
(its feature ranks and class counts are then taken over the characters it has a finite
value on).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from .contexts import LEFT, QUANTILES, RIGHT
from .rankkernel import as_bits, threads

BINS = 1 << 16
PERCENTILES = (1.0, 50.0, 99.0)


# ----- float16 values as sortable keys
def f16_keys(bits: np.ndarray) -> np.ndarray:
    """uint16 bit patterns of float16 values -> uint16 keys in value order (-NaN < -inf <
    ... < -0 < +0 < ... < +inf < +NaN); -0 and +0 get neighbouring keys (merged later)."""
    flip = (bits >> 15).astype(np.uint16)
    flip *= 0x7FFF
    flip |= 0x8000
    flip ^= bits
    return flip


def _key_tables() -> tuple[np.ndarray, np.ndarray]:
    keys = np.arange(BINS, dtype=np.uint32)
    bits = np.where(keys >= 0x8000, keys ^ 0x8000, keys ^ 0xFFFF).astype(np.uint16)
    value = bits.view(np.float16).astype(np.float64)
    finite = np.isfinite(value)
    value[~finite] = 0.0
    return value, finite


KEY_VALUE, KEY_FINITE = _key_tables()   # (65536,) value of each key (0 where not finite), finite?
NEG_ZERO, POS_ZERO = 0x7FFF, 0x8000


def rank_kernel():
    """The compiled counting kernel (csrc/rank_count.cpp), or None: numpy does the same."""
    from .rankkernel import rank_kernel as load
    return load()


def midranks_1d(f: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks (float64)."""
    _, inverse, counts = np.unique(f, return_inverse=True, return_counts=True)
    cum = np.cumsum(counts)
    return (cum - (counts - 1) / 2.0)[inverse]


# ----- features of the analysed characters
def _distinct(f: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(f, return_inverse=True, return_counts=True)``; by counting, without a sort,
    for small non-negative integers (positions, depths, indentation: most features)."""
    if len(f) and 0 <= f.min() and f.max() < max(1 << 16, 2 * len(f)):
        whole = f.astype(np.int64)
        if np.array_equal(whole, f):
            counts = np.bincount(whole)
            vals = np.flatnonzero(counts)
            index = np.cumsum(counts > 0) - 1
            return vals.astype(np.float64), index[whole], counts[vals]
    return np.unique(f, return_inverse=True, return_counts=True)


@dataclass
class FeatureColumns:
    """Features at the n analysed characters, kept compact: 0/1 masks for binary ones,
    an index into the distinct values for the others (whose midranks come with them)."""
    names: list
    kinds: list
    binary: np.ndarray       # (K,) bool
    masks: np.ndarray        # (n, Kb) uint8
    inverse: np.ndarray      # (n, Kc) index into values[j]: uint16 (int32 for a feature of more values)
    values: list             # per non-binary feature: (m,) distinct values, ascending
    ranks2: list             # per non-binary feature: (m,) 2 * midrank - (n + 1)
    mean: np.ndarray         # (K,) feature means
    ss: np.ndarray           # (K,) sum of squared deviations of the values
    rank_ss: np.ndarray      # (K,) of the midranks (4x for ranks2), NaN for binary
    npos: np.ndarray         # (K,) number of 1s (binary features)

    @property
    def n(self) -> int:
        return len(self.masks) if self.masks.shape[1] else len(self.inverse)

    @property
    def valid(self) -> np.ndarray:
        """(K,) False for a feature that is constant on these characters."""
        return np.where(self.binary, (self.npos > 0) & (self.npos < self.n), self.ss > 0)

    @classmethod
    def build(cls, columns, names, kinds) -> "FeatureColumns":
        """``columns``: iterable of (n,) arrays in the order of ``names``."""
        binary = np.array([k == "binary" for k in kinds])
        masks, inverse, values, ranks2, mean, ss, rank_ss, npos = [], [], [], [], [], [], [], []
        n = None
        for f, is_binary in zip(columns, binary):
            f = np.asarray(f, np.float64)
            n = len(f)
            mean.append(f.mean() if n else 0.0)
            ss.append(float(((f - mean[-1]) ** 2).sum()))
            if is_binary:
                m = f != 0
                masks.append(m.astype(np.uint8))
                npos.append(int(m.sum()))
                rank_ss.append(np.nan)
                if npos[-1] not in (0, n):   # a 0/1 feature: its deviations are exact from the counts
                    p = npos[-1] / n
                    mean[-1], ss[-1] = p, n * p * (1 - p)
                continue
            vals, inv, counts = _distinct(f)
            cum = np.cumsum(counts)
            r2 = 2.0 * cum - counts + 1 - (n + 1)                     # doubled midranks, centred
            inverse.append(inv.astype(np.uint16 if len(vals) <= 1 << 16 else np.int32))
            values.append(vals)
            ranks2.append(r2)
            rank_ss.append(float((counts * r2 * r2).sum()) / 4.0)
            npos.append(0)
        n = n or 0
        stack = lambda parts, dt: np.stack(parts, 1) if parts else np.zeros((n, 0), dt)   # noqa: E731
        narrow = all(inv.dtype == np.uint16 for inv in inverse)
        return cls(list(names), list(kinds), binary, stack(masks, np.uint8),
                   stack(inverse, np.uint16) if narrow else stack([i.astype(np.int32) for i in inverse], np.int32),
                   values, ranks2, np.array(mean), np.array(ss), np.array(rank_ss), np.array(npos))

    def subset(self, keep: np.ndarray) -> "FeatureColumns":
        """The same features on the characters where ``keep`` (a unit's finite values)."""
        cols, b, c = [], 0, 0
        for is_binary in self.binary:
            if is_binary:
                cols.append(self.masks[keep, b])
                b += 1
            else:
                cols.append(self.values[c][self.inverse[keep, c]])
                c += 1
        return FeatureColumns.build(cols, self.names, self.kinds)

    def weights(self, lo: int, hi: int, cols=None) -> tuple[np.ndarray, np.ndarray]:
        """Rows lo:hi as float64 (c, K) weights: for ranks (0/1 masks; centred doubled
        midranks) and for values (centred values); ``cols``: only those features."""
        return self.weights_at(slice(lo, hi), cols)

    def weights_at(self, rows, cols=None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`weights` of the characters ``rows`` (a slice or indices)."""
        cols = np.arange(len(self.names)) if cols is None else np.asarray(cols, int)
        c = len(range(self.n)[rows]) if isinstance(rows, slice) else len(rows)
        wr = np.empty((c, len(cols)))
        wx = np.empty((c, len(cols)))
        for i, j in enumerate(cols):
            table_r, table_x, code = self.weight_table(j)
            at = code[rows]
            wr[:, i] = table_r[at]
            wx[:, i] = table_x[at]
        return wr, wx

    def weight_table(self, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Feature j's weights as two tables and each character's index into them: (m,) rank
        weights (0/1 for a mask, centred doubled midranks), (m,) value weights (the values
        less the mean) and the (n,) column of indices (the mask itself, or ``inverse``'s)."""
        if self.binary[j]:
            levels = np.array([0.0, 1.0])
            return levels, levels - self.mean[j], self.masks[:, int(self.binary[:j].sum())]
        c = int((~self.binary[:j]).sum())
        return np.asarray(self.ranks2[c], np.float64), self.values[c] - self.mean[j], self.inverse[:, c]

    @functools.cached_property
    def grouping(self):
        """:class:`rnnviz.grouped.Grouping` of these characters (built once)."""
        from .grouped import Grouping
        return Grouping.build(self)


# ----- pass 1: value counts (float16)
@dataclass
class Counts:
    """Per unit, how many analysed characters hold each float16 value (by key). Mergeable."""
    hist: np.ndarray          # (H, 65536) int32

    @classmethod
    def empty(cls, h: int) -> "Counts":
        return cls(np.zeros((h, BINS), np.int32))

    def add(self, bits: np.ndarray, lib=None) -> None:
        """Count a (c, H) block of float16 bit patterns (uint16); ``lib``: rank_kernel()."""
        if lib is not None:
            lib.count_keys(as_bits(bits), torch.from_numpy(self.hist), threads())
            return
        keys = f16_keys(bits)
        for u in range(keys.shape[1]):
            self.hist[u] += np.bincount(keys[:, u], minlength=BINS)

    def merge(self, other: "Counts") -> "Counts":
        return Counts(self.hist + other.hist)


@dataclass
class UnitStats:
    """What the counts say about each unit (finite values only)."""
    n: np.ndarray             # (H,) finite values
    nonfinite: np.ndarray     # (H,) inf or NaN values
    lut2: np.ndarray          # (H, 65536) int32 doubled midrank of each key (0 where unused)
    rank_ss: np.ndarray       # (H,) sum of squared deviations of the midranks
    mean: np.ndarray          # (H,)
    ss: np.ndarray            # (H,) sum of squared deviations of the values
    percentiles: np.ndarray   # (H, 3) 1st, 50th, 99th (numpy's linear interpolation)
    minimum: np.ndarray
    maximum: np.ndarray
    below: np.ndarray         # (H,) values < LEFT (0.1)
    above: np.ndarray         # (H,) values > RIGHT (0.9)
    quantile_keys: np.ndarray  # (H, Q) key of the order statistic at each context quantile

    @classmethod
    def empty(cls, h: int, q: int) -> "UnitStats":
        """For h units, filled a few at a time (:meth:`put`)."""
        count, real = (lambda: np.zeros(h, np.int64)), (lambda: np.full(h, np.nan))   # noqa: E731
        return cls(count(), count(), np.zeros((h, BINS), np.int32), real(), real(), real(),
                   np.full((h, len(PERCENTILES)), np.nan), real(), real(), count(), count(), np.zeros((h, q), np.int64))

    def put(self, units: slice, part: "UnitStats") -> None:
        """Set the statistics of ``units`` to those of ``part`` (its lut2 may be ours already)."""
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name)[units], getattr(part, name)
            if not np.may_share_memory(mine, theirs):
                mine[...] = theirs


def unit_stats(counts: Counts, quantiles=QUANTILES, lib=None, lut2: np.ndarray | None = None) -> UnitStats:
    """Per unit, from the values it holds (the non-zero counts); ``lib``: rank_kernel();
    ``lut2``: an (H, 65536) int32 array to write the midranks into (the kernel only)."""
    if lib is not None:
        from .grouped import kernel_unit_stats
        return kernel_unit_stats(counts, quantiles, lib, lut2)
    hist = counts.hist
    h = len(hist)
    lut2 = np.zeros((h, BINS), np.int32)
    out = {k: np.full(h, np.nan) for k in ("rank_ss", "mean", "ss", "minimum", "maximum")}
    pct = np.full((h, len(PERCENTILES)), np.nan)
    qkeys = np.zeros((h, len(quantiles)), np.int64)
    n, nonfinite, below, above = (np.zeros(h, np.int64) for _ in range(4))
    for u in range(h):
        used = np.flatnonzero(hist[u])
        c = hist[u, used].astype(np.int64)
        finite = KEY_FINITE[used]
        nonfinite[u] = c[~finite].sum()
        used, c = used[finite], c[finite]
        zeros = np.searchsorted(used, [NEG_ZERO, POS_ZERO])
        both = zeros[1] < len(used) and used[zeros[0]] == NEG_ZERO and used[zeros[1]] == POS_ZERO
        if both:                                          # -0 and +0 are one value
            c[zeros[1]] += c[zeros[0]]
            used, c = np.delete(used, zeros[0]), np.delete(c, zeros[0])
        m = n[u] = int(c.sum())
        if m == 0:
            continue
        cum = np.cumsum(c)
        lut = 2 * cum - c + 1
        lut2[u, used] = lut
        if both:
            lut2[u, NEG_ZERO] = lut2[u, POS_ZERO]
        v = KEY_VALUE[used]
        below[u], above[u] = c[v < LEFT].sum(), c[v > RIGHT].sum()
        dev = (lut - (m + 1)) / 2.0
        out["rank_ss"][u] = float((c * dev * dev).sum())
        mu = float((c * v).sum()) / m
        out["mean"][u], out["ss"][u] = mu, float((c * (v - mu) ** 2).sum())
        out["minimum"][u], out["maximum"][u] = v[0], v[-1]

        def order_stat(k: int) -> float:                  # 0-based
            return v[np.searchsorted(cum, k, side="right")]
        for j, q in enumerate(PERCENTILES):
            pos = q / 100 * (m - 1)
            lo = int(np.floor(pos))
            pct[u, j] = order_stat(lo) if pos == lo else order_stat(lo) + (pos - lo) * (
                order_stat(lo + 1) - order_stat(lo))
        qkeys[u] = used[np.searchsorted(cum, (np.asarray(quantiles) * (m - 1)).astype(np.int64), side="right")]
    return UnitStats(n, nonfinite, lut2, out["rank_ss"], out["mean"], out["ss"], pct, out["minimum"],
                     out["maximum"], below, above, qkeys)


# ----- pass 2: sums of products (float16)
@dataclass
class Sums:
    """Per unit and feature: sum of doubled midrank x rank weight, and of value x centred
    feature. Mergeable."""
    gr: np.ndarray   # (H, K)
    gx: np.ndarray   # (H, K)

    @classmethod
    def empty(cls, h: int, k: int) -> "Sums":
        return cls(np.zeros((h, k)), np.zeros((h, k)))

    def add(self, bits: np.ndarray, lut2: np.ndarray, wr: np.ndarray, wx: np.ndarray, lib=None) -> None:
        """A (c, H) block of float16 bit patterns against its (c, K) feature weights."""
        c, h = bits.shape
        if lib is not None:          # every feature weighted per character (one group): each weight its own code
            k = wr.shape[1]
            lib.accumulate(as_bits(bits), torch.from_numpy(lut2), torch.zeros(c, dtype=torch.int32),
                           torch.arange(c * k, dtype=torch.int32).reshape(c, k),
                           *(torch.from_numpy(np.ascontiguousarray(w, np.float64).ravel()) for w in (wr, wx)),
                           torch.zeros(h, 1, dtype=torch.float64), torch.zeros(h, 1, dtype=torch.float64),
                           torch.from_numpy(self.gr), torch.from_numpy(self.gx),
                           torch.zeros(0, dtype=torch.int64), torch.zeros(0, dtype=torch.int32),
                           torch.zeros(0, dtype=torch.int64), 0, threads())
            return
        keys = f16_keys(bits)
        r32 = np.empty((h, c), np.int32)
        for u in range(h):
            np.take(lut2[u], keys[:, u], out=r32[u], mode="clip")
        ranks, x = torch.from_numpy(r32).double(), torch.from_numpy(bits.view(np.float16)).double().T
        self.gr += (ranks @ torch.from_numpy(wr)).numpy()
        self.gx += (x @ torch.from_numpy(wx)).numpy()

    def merge(self, other: "Sums") -> "Sums":
        return Sums(self.gr + other.gr, self.gx + other.gx)


# ----- scores from the sums
@dataclass
class Scores:
    """(U, K) scores; ``n`` (U,) characters each unit was scored on."""
    score: np.ndarray
    auc: np.ndarray
    r: np.ndarray
    rho: np.ndarray
    n: np.ndarray


def finish(sums: Sums, n, rank_ss, x_ss, fc: FeatureColumns) -> Scores:
    """Scores from the sums of units that all share the feature columns ``fc``."""
    rank_ss, x_ss = np.atleast_1d(np.asarray(rank_ss, float)), np.atleast_1d(np.asarray(x_ss, float))
    binary = fc.binary[None, :]
    npos = fc.npos[None, :].astype(np.float64)
    nneg = fc.n - npos
    with np.errstate(invalid="ignore", divide="ignore"):
        auc_raw = (sums.gr / 2 - npos * (npos + 1) / 2) / (npos * nneg)
        rho = sums.gr / 4 / np.sqrt(rank_ss[:, None] * fc.rank_ss[None, :])
        r = sums.gx / np.sqrt(x_ss[:, None] * fc.ss[None, :])
    score = np.where(binary, 2 * auc_raw - 1, rho)
    dead = (rank_ss[:, None] <= 0) | ~fc.valid[None, :]
    score[dead] = np.nan
    r[dead] = np.nan
    auc = np.where(binary, 0.5 + np.abs(score) / 2, np.nan)
    rho = np.where(binary, np.nan, score)
    return Scores(score, auc, r, rho, np.broadcast_to(np.asarray(n), (len(score),)).copy())


# ----- whole columns: float32 states, or float16 units with inf/NaN
def column_scores(x: np.ndarray, fc: FeatureColumns, block: int = 1 << 15) -> tuple[Scores, dict]:
    """Scores of the (n, B) columns ``x`` (any float dtype) and their per-unit statistics."""
    n, b = x.shape
    k = len(fc.names)
    parts = {key: np.full((b, k), np.nan) for key in ("score", "auc", "r", "rho")}
    stats = {key: np.full(b, np.nan) for key in ("mean", "minimum", "maximum")}
    stats["percentiles"] = np.full((b, len(PERCENTILES)), np.nan)
    stats["n"], stats["nonfinite"] = np.zeros(b, np.int64), np.zeros(b, np.int64)
    for j in range(b):
        col = np.asarray(x[:, j], np.float64)
        keep = np.isfinite(col)
        m = int(keep.sum())
        stats["n"][j], stats["nonfinite"][j] = m, n - m
        if m == 0:
            continue
        sub = fc if m == n else fc.subset(keep)
        v = col[keep]
        r2 = 2 * midranks_1d(v) - (m + 1)                 # centred doubled midranks
        mu = v.mean()
        sums = Sums.empty(1, k)
        for lo in range(0, m, block):
            hi = min(m, lo + block)
            wr, wx = sub.weights(lo, hi)
            # (r2 + m + 1) are the doubled midranks themselves: the masks need them uncentred.
            sums.gr += (r2[lo:hi] + (m + 1)) @ wr
            sums.gx += v[lo:hi] @ wx
        one = finish(sums, m, float((r2 * r2).sum()) / 4, float(((v - mu) ** 2).sum()), sub)
        for key in parts:
            parts[key][j] = getattr(one, key)[0]
        stats["mean"][j], stats["minimum"][j], stats["maximum"][j] = mu, v.min(), v.max()
        stats["percentiles"][j] = np.percentile(v, PERCENTILES)
    return Scores(parts["score"], parts["auc"], parts["r"], parts["rho"], stats["n"]), stats
