"""Pass 2 of the exact analysis (:mod:`rnnviz.exact`) in the compiled kernel, and the
per-unit statistics from the counts there.

Most features take few value combinations on a text: the on/off ones and the bracket
depths make a few hundred groups of characters on code. A feature that is constant within
each group has sum_t rank_t w_t = sum_g w_g (sum of the ranks in group g), so the kernel
adds each unit's doubled midrank and value into its character's group (one addition per
character and unit instead of one product per feature), and multiplies by the weights
only for the features that change from character to character (position in the line).
The group sums of ranks are integers below 2^53: exact, in any order.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .contexts import LEFT, RIGHT
from .exact import KEY_VALUE, PERCENTILES, BINS, Counts, FeatureColumns, Sums, UnitStats
from .rank import matmul
from .rankkernel import as_bits, threads

MAX_GROUPS = 512      # groups of characters in pass 2 (their sums stay in the L1/L2 cache)


@dataclass
class Grouping:
    """The characters in groups that share the values of the features with few value
    combinations (the on/off features, bracket depths: a few hundred groups on code).

    Those features' sums over characters are sums over groups of (per-group sum) x (the
    group's weight), so pass 2 adds each unit's ranks and values into its group once per
    character instead of multiplying them by every feature; only the other features
    (position in the line, indentation, ...) are weighted character by character."""
    ids: np.ndarray        # (n,) int32 group of each character
    wr: np.ndarray         # (G, K) rank weights of each group's characters (0 for dense features)
    wx: np.ndarray         # (G, K) value weights
    dense: np.ndarray      # (D,) the features weighted per character
    codes: np.ndarray      # (n, D) uint16 (int32 past 65,536 weights) per character and dense feature,
    tab_r: np.ndarray      # its weights' index in these (T,) tables: rank weights (mask; centred
    tab_x: np.ndarray      # doubled midrank) and value weights (centred value), as fc.weights

    @classmethod
    def build(cls, fc: FeatureColumns, max_groups: int = MAX_GROUPS) -> "Grouping":
        """On/off features first, then the others by number of distinct values, each joined
        to the grouping while there are at most ``max_groups`` groups."""
        n, k = fc.n, len(fc.names)
        bcol, ccol = np.cumsum(fc.binary) - 1, np.cumsum(~fc.binary) - 1
        levels = [2 if fc.binary[j] else len(fc.values[ccol[j]]) for j in range(k)]
        ids, g, grouped = np.zeros(n, np.int64), 1, []
        for j in sorted(range(k), key=lambda j: (not fc.binary[j], levels[j])):
            if n == 0 or g * levels[j] > 1 << 24:
                continue
            code = fc.masks[:, bcol[j]] if fc.binary[j] else fc.inverse[:, ccol[j]]
            combo = ids * levels[j] + code
            seen = np.zeros(g * levels[j], bool)
            seen[combo] = True
            m = int(seen.sum())
            if m <= max_groups:
                ids, g = (np.cumsum(seen) - 1)[combo], m
                grouped.append(j)
        first = np.zeros(g, np.int64)
        first[ids[::-1]] = np.arange(n)[::-1]      # a character of each group: its weights are the group's
        wr, wx = fc.weights_at(first) if n else (np.zeros((1, k)), np.zeros((1, k)))
        dense = np.array([j for j in range(k) if j not in grouped], int)
        wr[:, dense] = 0.0
        wx[:, dense] = 0.0
        return cls(ids.astype(np.int32), wr, wx, dense, *_dense_codes(fc, dense))


def _dense_codes(fc: FeatureColumns, dense: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The dense features' weights as codes into two tables (:class:`Grouping`): the kernel
    looks them up per character instead of reading (c, D) float64 weights made per block."""
    tables_r, tables_x, columns = [], [], []
    for j in dense:
        table_r, table_x, code = fc.weight_table(j)
        tables_r.append(table_r)
        tables_x.append(table_x)
        columns.append(code)
    base = np.cumsum([0] + [len(t) for t in tables_r])
    dtype = np.uint16 if base[-1] <= 1 << 16 else np.int32
    codes = np.empty((fc.n, len(dense)), dtype)
    for i, col in enumerate(columns):
        codes[:, i] = col + base[i]
    cat = lambda parts: np.concatenate(parts) if parts else np.zeros(0)   # noqa: E731
    return codes, cat(tables_r), cat(tables_x)


@dataclass
class GroupSums:
    """Pass 2 in the compiled kernel (:class:`Grouping`): per unit, the sums of doubled
    midranks and of values per group of characters (``sr`` exact integers) and against the
    dense features. Mergeable; :meth:`sums` gives the :class:`Sums` of every feature."""
    sr: np.ndarray   # (H, G)
    sx: np.ndarray   # (H, G)
    dr: np.ndarray   # (H, D)
    dx: np.ndarray   # (H, D)

    @classmethod
    def empty(cls, h: int, grouping: Grouping) -> "GroupSums":
        g, d = len(grouping.wr), len(grouping.dense)
        return cls(np.zeros((h, g)), np.zeros((h, g)), np.zeros((h, d)), np.zeros((h, d)))

    def of(self, units: slice) -> "GroupSums":
        """The sums of some units: views, which :meth:`add` adds into."""
        return GroupSums(self.sr[units], self.sx[units], self.dr[units], self.dx[units])

    def add(self, bits: np.ndarray, lut2: np.ndarray, fc: FeatureColumns, lo: int, lib, *, best=None,
            targets=None, found=None) -> None:
        """The (c, H) block of float16 bit patterns of analysed characters lo..lo+c. The kernel
        also keeps ``best`` ((H, 2, k, 2) int64, :class:`rnnviz.stream.Extremes`), the running
        top k of the largest and smallest key of every 32 characters, and fills ``found``
        ((H, Q) int64), the first character holding each key of ``targets`` ((H, Q) int32),
        where it is still -1."""
        hi, g = lo + len(bits), fc.grouping
        codes = g.codes[lo:hi]
        none = torch.zeros(0, dtype=torch.int32)
        lib.accumulate(as_bits(bits), torch.from_numpy(lut2), torch.from_numpy(g.ids[lo:hi]),
                       torch.from_numpy(codes.view(np.int16) if codes.dtype == np.uint16 else codes),
                       torch.from_numpy(g.tab_r), torch.from_numpy(g.tab_x),
                       *map(torch.from_numpy, (self.sr, self.sx, self.dr, self.dx)),
                       torch.zeros(0, dtype=torch.int64) if best is None else torch.from_numpy(best),
                       none if targets is None else torch.from_numpy(targets),
                       torch.zeros(0, dtype=torch.int64) if found is None else torch.from_numpy(found), lo, threads())

    def merge(self, other: "GroupSums") -> "GroupSums":
        return GroupSums(self.sr + other.sr, self.sx + other.sx, self.dr + other.dr, self.dx + other.dx)

    def sums(self, grouping: Grouping) -> Sums:
        gr, gx = matmul(self.sr, grouping.wr), matmul(self.sx, grouping.wx)   # not numpy's: see matmul
        gr[:, grouping.dense] += self.dr
        gx[:, grouping.dense] += self.dx
        return Sums(gr, gx)


def kernel_unit_stats(counts: Counts, quantiles, lib, lut2: np.ndarray | None = None) -> UnitStats:
    """:func:`unit_stats` in the kernel: the same numbers (order statistics by key, then
    numpy's linear interpolation between them); the midranks into ``lut2`` when given."""
    h = len(counts.hist)
    lut2 = np.empty((h, BINS), np.int32) if lut2 is None else lut2
    fractions = np.array([q / 100 for q in PERCENTILES] + list(quantiles), np.float64)
    stats, order = lib.unit_table(torch.from_numpy(counts.hist), torch.from_numpy(lut2), torch.from_numpy(fractions),
                                  LEFT, RIGHT, threads())
    stats, order = stats.numpy(), order.numpy()
    n = stats[:, 0].astype(np.int64)
    pct = np.full((h, len(PERCENTILES)), np.nan)
    for j, q in enumerate(PERCENTILES):
        pos = q / 100 * (n - 1)
        lo, hi = KEY_VALUE[order[:, j, 0]], KEY_VALUE[order[:, j, 1]]
        pct[:, j] = np.where(pos == np.floor(pos), lo, lo + (pos - np.floor(pos)) * (hi - lo))
    pct[n == 0] = np.nan
    counted = lambda col: np.nan_to_num(stats[:, col]).astype(np.int64)   # noqa: E731
    return UnitStats(n, stats[:, 1].astype(np.int64), lut2, stats[:, 2], stats[:, 3], stats[:, 4], pct,
                     stats[:, 7], stats[:, 8], counted(5), counted(6),
                     np.where(n[:, None] > 0, order[:, len(PERCENTILES):, 0], 0))
