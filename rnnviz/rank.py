"""Scoring units against text features, with a null that respects autocorrelation.

Per (unit, feature), chosen by the feature's kind:

* binary: ROC-AUC (``auc`` = max(AUC, 1-AUC); its sign is in ``score`` = 2*AUC-1)
  and the point-biserial correlation ``r``;
* continuous / ordinal: Pearson ``r`` and Spearman ``rho`` (``score`` = rho).

``score`` is signed, 0 for no association and +-1 for a perfect one, for every kind.
Ranks are midranks of the float16 values (float32 states are rounded to float16
first, a relative step of 1/2048); units whose values span more than 16384 float16
steps share a rank between neighbouring steps. Both AUC and rho are then linear
in the ranks, so every score is one matrix product over the characters.

Null: the feature is circularly shifted against the units by S evenly spaced lags
(never closer than 5% of the text to zero), which keeps both autocorrelations. For
the ``null_top`` strongest units of each feature: ``null_z`` = (score -
mean) / sd over the shifts, ``null_p`` = (1 + #shifts at least as strong) / (S + 1),
``beats_null`` when ``|null_z|`` clears the Bonferroni bound for every unit ranked
(two-sided alpha 0.01) and the score beats every shift. (The maximum over all units
at every shift would be the sharper family-wise null, but it costs S times the
ranking itself; per-unit nulls of the top units cost a few matrix products.)

    ranking = rank_units(acts, compute_features(text))
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np
import pandas as pd
import torch

from .errors import RnnvizError
from .names import parse_point, parse_unit

MAX_BINS = 16384          # rank table entries per unit; wider units share ranks between steps
ALPHA = 0.01              # family-wise level for beats_null
MIN_SHIFT = 0.05          # shifts stay this fraction of the characters away from lag 0
RANK_COLUMNS = ["feature", "feature_kind", "unit", "point", "layer", "kind", "index", "rank",
                "score", "auc", "r", "rho", "null_z", "null_p", "beats_null"]


def matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """a @ b through torch. Every product in the analyzer goes this way: numpy's OpenBLAS
    threads and torch's OpenMP threads spin against each other (30x slower on 2 cores)."""
    return (torch.from_numpy(a) @ torch.from_numpy(b)).numpy()


@contextmanager
def torch_threads(n: int):
    """Run torch on n threads meanwhile."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def one_thread():
    """Run torch on one thread meanwhile: the products here are small, and with every core
    busy a second OpenMP thread makes each one wait for a descheduled peer (10x slower)."""
    return torch_threads(1)


# ----- features at the analysed characters
@dataclass
class FeatureSet:
    """Feature columns prepared once and reused for every point."""
    names: list[str]
    kinds: list[str]
    z: np.ndarray        # (n, K) standardised values: r = x.T @ z / (n sd_x)
    w: np.ndarray        # (n, K) rank weights: binary f/npos - (1-f)/nneg; else standardised midranks
    valid: np.ndarray    # (K,) False for a feature that is constant here (nothing to score)

    @property
    def n(self) -> int:
        return self.z.shape[0]


def prepare_features(values: np.ndarray, names: list[str], kinds: list[str]) -> FeatureSet:
    values = np.asarray(values, dtype=np.float64)
    n, k = values.shape
    z = np.zeros((n, k), np.float32)
    w = np.zeros((n, k), np.float32)
    valid = np.zeros(k, bool)
    for j, (name, kind) in enumerate(zip(names, kinds)):
        f = values[:, j]
        if not np.isfinite(f).all():
            raise RnnvizError(f"feature {name!r} has NaN or infinite values; features need a number "
                              f"on every character")
        if kind == "binary":
            pos = f != 0
            npos = int(pos.sum())
            if 0 < npos < n:
                p = npos / n
                z[:, j] = (pos - p) / math.sqrt(p * (1 - p))
                w[:, j] = np.where(pos, 1.0 / npos, -1.0 / (n - npos))
                valid[j] = True
        elif f.std() > 0:
            z[:, j] = (f - f.mean()) / f.std()
            rf = midranks_1d(f)
            w[:, j] = (rf - rf.mean()) / rf.std()
            valid[j] = True
    return FeatureSet(list(names), list(kinds), z, w, valid)


def midranks_1d(f: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing the mean of their ranks."""
    _, inverse, counts = np.unique(f, return_inverse=True, return_counts=True)
    cum = np.cumsum(counts)
    return (cum - (counts - 1) / 2.0)[inverse]


# ----- units: ranks from float16 keys
def fp16_keys(x: np.ndarray) -> np.ndarray:
    """(n, H) values -> (n, H) int16 keys that sort like the float16 values (NaN aside)."""
    if x.dtype != np.float16:   # torch converts ~10x faster than numpy; +-inf past +-65504 still sorts
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).half().numpy()
    keys = x.view(np.int16).copy()
    keys ^= (keys >> 15) & np.int16(0x7FFF)  # negative floats sort backwards as integers
    return keys


def transpose(a: np.ndarray, block: int = 512) -> np.ndarray:
    """(n, H) -> contiguous (H, n), in row blocks that stay in cache (2x faster than .T.copy())."""
    out = np.empty(a.shape[::-1], a.dtype)
    for i in range(0, len(a), block):
        out[:, i:i + block] = a[i:i + block].T
    return out


def unit_midranks(keys: np.ndarray, group: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(H, n) keys -> (H, n) float32 midranks and the (H,) sd of each unit's ranks.

    One bincount over a small table per group of units (kept in cache), then one
    lookup per value; indices are intp from the start so numpy converts nothing.
    """
    h, n = keys.shape
    ranks = np.empty((h, n), np.float32)
    sd = np.empty(h)
    kmin = keys.min(axis=1).astype(np.intp)
    span = keys.max(axis=1).astype(np.intp) - kmin + 1
    shift = np.maximum(0, np.ceil(np.log2(span / MAX_BINS))).astype(np.intp)
    bins = ((span - 1) >> shift) + 1
    for g in range(0, h, group):
        sl = slice(g, min(h, g + group))
        offsets = np.concatenate([[0], np.cumsum(bins[sl])[:-1]])
        idx = keys[sl].astype(np.intp)
        if shift[sl].any():
            idx -= kmin[sl, None]
            idx >>= shift[sl, None]
            idx += offsets[:, None]
        else:
            idx -= (kmin[sl] - offsets)[:, None]
        counts = np.bincount(idx.ravel(), minlength=int(bins[sl].sum()))
        cum = np.cumsum(counts)
        cum -= np.repeat(cum[offsets] - counts[offsets], bins[sl])   # restart at each unit's table
        mid = cum - (counts - 1) / 2.0
        np.take(mid.astype(np.float32), idx, out=ranks[sl], mode="clip")   # "raise" buffers `out`
        sq = np.add.reduceat(counts * mid ** 2, offsets)
        sd[sl] = np.sqrt(np.maximum(sq / n - ((n + 1) / 2.0) ** 2, 0.0))
    return ranks, sd


@dataclass
class PointScores:
    """Scores of the H units of one point against K features, plus what the null needs."""
    score: np.ndarray    # (H, K)
    auc: np.ndarray      # (H, K) max(AUC, 1-AUC), NaN for non-binary features
    r: np.ndarray        # (H, K) Pearson / point-biserial
    rho: np.ndarray      # (H, K) Spearman, NaN for binary features
    keys: np.ndarray     # (n, H) int16 keys (fp16_keys)


def score_point(x: np.ndarray, fs: FeatureSet, buffer: torch.Tensor | None = None) -> PointScores:
    """x: (n, H) values of one recording point at the analysed characters.

    ``buffer``: a float32 tensor of x's shape to reuse (fresh pages cost more than the work).
    """
    n, h = x.shape
    if n != fs.n:
        raise ValueError(f"{n} rows of values for {fs.n} rows of features")
    xf = buffer if buffer is not None and buffer.shape == x.shape else torch.empty(x.shape)
    xf.copy_(torch.from_numpy(np.require(x, requirements="W")))  # (n, H) float32, ~10x numpy's speed
    xf -= xf.mean(dim=0)      # centred: no cancellation in the sum of squares
    xn = xf.numpy()
    sd_x = np.sqrt(np.einsum("ij,ij->j", xn, xn, dtype=np.float64) / n)   # no (n, H) temporary
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xf.T @ torch.from_numpy(fs.z)).numpy() / (n * sd_x[:, None])
    keys = fp16_keys(x)                                          # (n, H)
    ranks, rank_sd = unit_midranks(transpose(keys))
    lin = matmul(ranks, fs.w)                                    # (H, K)
    binary = np.array([k == "binary" for k in fs.kinds])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = lin / (n * rank_sd[:, None])
    score = np.where(binary, 2.0 * lin / n, rho)
    score[:, ~fs.valid] = np.nan
    score[rank_sd == 0] = np.nan                                 # a constant unit says nothing
    r[:, ~fs.valid] = np.nan
    auc = np.where(binary, 0.5 + np.abs(score) / 2, np.nan)
    rho = np.where(binary, np.nan, score)
    return PointScores(score, auc, r.astype(np.float64), rho, keys)


# ----- circular-shift null
def shift_rows(shifts: int) -> tuple[int, int]:
    """(M, jmin): the fewest rows M of the folded text such that ``shifts`` lags j*d with
    jmin <= j <= M - jmin fit, jmin keeping every shift MIN_SHIFT of the text from 0."""
    m = shifts
    while True:
        jmin = max(1, math.ceil(MIN_SHIFT * m))
        if m - 2 * jmin + 1 >= shifts:
            return m, jmin
        m += 1


def shift_plan(n: int, shifts: int) -> tuple[int, int, np.ndarray]:
    """(M, d, lags j): lags j*d for j in ``lags``, all on the first M*d characters."""
    if shifts <= 0:
        return 0, 0, np.zeros(0, int)
    m, jmin = shift_rows(shifts)
    d = n // m
    if d < 1:
        raise RnnvizError(f"{shifts} shifts need at least {m} analysed characters, found {n}; "
                          f"use fewer --shifts")
    return m, d, np.arange(jmin, m - jmin + 1)


def null_scores(ranks: np.ndarray, rank_sd: np.ndarray, w: np.ndarray, binary: bool,
                shifts: int) -> tuple[np.ndarray, np.ndarray]:
    """For T units' (T, n) ranks against one feature's weights: (observed (T,), null (T, S)).

    Both come from the first M*d characters: with the characters folded into an (M, d)
    grid, a circular shift by j*d is the j-th wrapped diagonal of one (M, M) product.
    """
    n = ranks.shape[1]
    m, d, lags = shift_plan(n, shifts)
    used = m * d
    wc = w[:used] - w[:used].mean()
    # Contiguous 2-D operands: numpy's batched matmul on strided views skips BLAS (100x slower).
    folded = np.ascontiguousarray(ranks[:, :used]).reshape(-1, d)               # (T*M, d)
    grid = matmul(folded, np.ascontiguousarray(wc.reshape(m, d).T)).reshape(-1, m, m)   # (T, M, M)
    a = np.arange(m)
    diag = grid[:, a[:, None], (a[:, None] + np.arange(m)[None, :]) % m].sum(axis=1)   # (T, M) by lag
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.full(len(ranks), 2.0 / used) if binary else 1.0 / (used * rank_sd)
    return diag[:, 0] * scale, diag[:, lags] * scale[:, None]


def null_stats(observed: np.ndarray, null: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(z, empirical p) of each observed score against its shifted scores."""
    mu, sd = null.mean(axis=1), null.std(axis=1, ddof=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        z = (observed - mu) / sd
    p = (1 + (np.abs(null) >= np.abs(observed)[:, None]).sum(axis=1)) / (null.shape[1] + 1)
    return z, p


def z_bound(n_tests: int, alpha: float = ALPHA) -> float:
    """|z| a Gaussian null exceeds with probability alpha over n_tests two-sided tests."""
    return NormalDist().inv_cdf(1 - alpha / (2 * max(n_tests, 1)))


# ----- accumulating a ranking over points
@dataclass
class Ranker:
    """Scores points one at a time (each (n, H) block is dropped after), then builds the table.

    The null is computed in :meth:`table` for the ``null_top`` best units of each feature;
    the int16 keys of every point's local best units are kept until then (a few MB).
    """
    fs: FeatureSet
    shifts: int = 99
    null_top: int = 5
    parts: list = field(default_factory=list)
    _keys: dict = field(default_factory=dict)         # global unit index -> (n,) int16 keys
    _buffer: torch.Tensor | None = None

    def add(self, point: str, x: np.ndarray, units: list[str] | None = None) -> PointScores:
        if self._buffer is None or self._buffer.shape != x.shape:
            self._buffer = torch.empty(x.shape)
        ps = score_point(x, self.fs, self._buffer)
        if self.shifts > 0:   # the global best units of a feature are among some point's best
            strength = np.nan_to_num(np.abs(ps.score), nan=-1.0)
            best = np.argsort(-strength, axis=0, kind="stable")[:self.null_top]
            for u in np.unique(best[np.take_along_axis(strength, best, 0) >= 0]):
                self._keys[self.n_units + int(u)] = ps.keys[:, u].copy()
        units = units or [f"{point}[{i}]" for i in range(x.shape[1])]
        self.parts.append((point, units, ps.score, ps.auc, ps.r, ps.rho))
        return ps

    @property
    def n_units(self) -> int:
        return sum(len(part[1]) for part in self.parts)

    def table(self) -> pd.DataFrame:
        """One row per (feature, unit), features in order, strongest |score| first within each."""
        if not self.parts:
            return pd.DataFrame(columns=RANK_COLUMNS)
        score, auc, r, rho = (np.concatenate([part[i] for part in self.parts]) for i in range(2, 6))
        units = [u for part in self.parts for u in part[1]]
        meta = pd.DataFrame([_unit_meta(u) for u in units], columns=["unit", "point", "layer", "kind", "index"])
        bound = z_bound(len(units))
        frames = []
        for j, (name, kind) in enumerate(zip(self.fs.names, self.fs.kinds)):
            order = np.argsort(-np.nan_to_num(np.abs(score[:, j]), nan=-1.0), kind="stable")
            df = meta.iloc[order].reset_index(drop=True)
            df.insert(0, "feature_kind", kind)
            df.insert(0, "feature", name)
            df["rank"] = np.arange(1, len(order) + 1)
            for col, values in (("score", score), ("auc", auc), ("r", r), ("rho", rho)):
                df[col] = values[order, j]
            z, p, beats = (np.full(len(order), np.nan), np.full(len(order), np.nan), np.zeros(len(order), bool))
            top = [i for i in order[:self.null_top] if np.isfinite(score[i, j])] if self.shifts else []
            if top:
                ranks, rank_sd = unit_midranks(np.stack([self._keys[i] for i in top]))
                obs, null = null_scores(ranks, rank_sd, self.fs.w[:, j], kind == "binary", self.shifts)
                at = np.arange(len(top))
                z[at], p[at] = null_stats(obs, null)
                beats[at] = (np.abs(obs) > np.abs(null).max(axis=1)) & (np.abs(z[at]) >= bound)
            df["null_z"], df["null_p"], df["beats_null"] = z, p, beats
            frames.append(df)
        return pd.concat(frames, ignore_index=True)[RANK_COLUMNS]


def _unit_meta(unit: str) -> tuple:
    try:
        point, index = parse_unit(unit)
        layer, kind = parse_point(point)
        return unit, point, layer, kind, index
    except RnnvizError:  # a column that is not an rnnviz unit name: keep it whole
        return unit, unit, -1, "", -1


def rank_units(acts, feats, *, kinds: dict[str, str] | None = None, shifts: int = 99,
               null_top: int = 5) -> pd.DataFrame:
    """Rank every unit against every feature (pure, over arrays).

    ``acts``: DataFrame (one column per unit, e.g. ``layer0.c[3]``), dict
    ``{point: (n, H) array}`` or an (n, U) array. ``feats``: DataFrame from
    :func:`rnnviz.features.compute_features` (kinds from ``attrs["kinds"]``) or
    ``{name: (n,) array}`` with ``kinds``; features not marked are binary when
    their values are all 0/1, else continuous.
    """
    feats = pd.DataFrame(feats)
    kinds = {**getattr(feats, "attrs", {}).get("kinds", {}), **(kinds or {})}
    names = [str(c) for c in feats.columns]
    values = feats.to_numpy(np.float64)
    kind_list = [kinds.get(nm) or ("binary" if np.isin(values[:, j], (0, 1)).all() else "continuous")
                 for j, nm in enumerate(names)]
    # Fewer than ~20 characters per lag says little about the null.
    ranker = Ranker(prepare_features(values, names, kind_list), shifts=min(shifts, len(values) // 20),
                    null_top=null_top)
    with one_thread():
        return _rank_groups(ranker, acts, len(values))


def _rank_groups(ranker: Ranker, acts, n: int) -> pd.DataFrame:
    if isinstance(acts, dict):
        groups = [(point, np.asarray(x), None) for point, x in acts.items()]
    elif isinstance(acts, pd.DataFrame):
        groups = [("acts", acts.to_numpy(), [str(c) for c in acts.columns])]
    else:
        x = np.asarray(acts)
        groups = [("unit", x.reshape(len(x), -1), None)]
    for point, x, units in groups:
        if len(x) != n:
            raise RnnvizError(f"{point}: {len(x)} rows of activations for {n} rows of features")
        ranker.add(point, x, units)
    return ranker.table()
