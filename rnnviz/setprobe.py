"""Ridge probes on sets of units, from sums over characters (see :mod:`rnnviz.unitsets`).

A probe on standardised units z and a feature y centred on the fit part is the ridge
regression (fxx_SS + RIDGE I)^-1 fxy_S, where fxx and fxy are the fit part's
correlations and covariances. Greedy forward selection grows a set one unit at a time by
a rank-one update of that inverse (a Schur complement), scoring every candidate on the
select part from that part's sums of products alone.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

MAX_K = 16                  # sets of 1..MAX_K units
RIDGE = 1e-3                # ridge on standardised units (Gram / n has ones on its diagonal)


@dataclass
class Moments:
    """Sums over the characters of one part, values centred by fixed offsets ``m``: count,
    sum of x (P,), of x x' (P, P), of x y (P, K), of y and y^2 (K,). Mergeable by adding."""
    n: int
    sx: np.ndarray
    xx: np.ndarray
    xy: np.ndarray
    sy: np.ndarray
    yy: np.ndarray

    @classmethod
    def empty(cls, p: int, k: int) -> "Moments":
        return cls(0, np.zeros(p), np.zeros((p, p)), np.zeros((p, k)), np.zeros(k), np.zeros(k))

    def add(self, x: np.ndarray, y: np.ndarray, symmetric_blocks=None) -> None:
        """A (c, P) block of centred float32 values and its (c, K) features."""
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        self.n += len(x)
        self.sx += xt.sum(0, dtype=torch.float64).numpy()
        if symmetric_blocks is None:
            self.xx += (xt.T @ xt).double().numpy()
        else:            # the upper blocks only (half the work), mirrored by ``finish``
            for lo, hi in symmetric_blocks:
                self.xx[lo:hi, lo:] += (xt[:, lo:hi].T @ xt[:, lo:]).double().numpy()
        self.xy += (xt.T @ yt).double().numpy()
        self.sy += y.sum(0, dtype=np.float64)
        self.yy += (y.astype(np.float64) ** 2).sum(0)

    def finish(self) -> None:
        """Mirror the upper blocks written by ``add(symmetric_blocks=...)``."""
        upper = np.triu(self.xx)
        self.xx = upper + np.triu(upper, 1).T

    def about(self, mu: np.ndarray, ybar: np.ndarray, idx=slice(None)) -> tuple:
        """(xx, xy, yy) of (x - mu) and (y - ybar) over this part, for the columns ``idx``;
        ``mu`` is in the centred coordinates."""
        sx, xx, xy = self.sx[idx], self.xx[idx][:, idx], self.xy[idx]
        cxx = xx - np.outer(sx, mu) - np.outer(mu, sx) + self.n * np.outer(mu, mu)
        cxy = xy - np.outer(mu, self.sy) - np.outer(sx, ybar) + self.n * np.outer(mu, ybar)
        cyy = self.yy - 2 * ybar * self.sy + self.n * ybar ** 2
        return cxx, cxy, cyy


def test_score(pred: np.ndarray, y: np.ndarray, binary: bool) -> np.ndarray:
    """(S,) test scores of S predictions (n, S): ROC-AUC with ties counting half, or Pearson's r."""
    pred = np.asarray(pred, np.float64)
    out = np.full(pred.shape[1], np.nan)
    if binary:
        pos = np.asarray(y) != 0
        npos = int(pos.sum())
        if 0 < npos < len(y) and pred.shape[1]:
            out = (_midrank_sums(pred, pos) - npos * (npos + 1) / 2) / (npos * (len(y) - npos))
        return out
    yc = y - y.mean()
    pc = pred - pred.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (pc * yc[:, None]).sum(0) / np.sqrt((pc * pc).sum(0) * (yc * yc).sum())
    return out


def _midrank_sums(pred: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """(S,) sums over the ``pos`` rows of each column's midranks (1..n, ties sharing the mean)."""
    vals, order = torch.sort(torch.from_numpy(np.ascontiguousarray(pred.T)), dim=1)     # (S, n)
    n = vals.shape[1]
    at = torch.arange(n, dtype=torch.float64).expand_as(vals)
    first = torch.ones_like(vals, dtype=torch.bool)
    first[:, 1:] = vals[:, 1:] != vals[:, :-1]
    last = torch.ones_like(first)
    last[:, :-1] = first[:, 1:]
    start = torch.where(first, at, torch.zeros_like(at)).cummax(dim=1).values
    end = torch.where(last, at, torch.full_like(at, n)).flip(1).cummin(dim=1).values.flip(1)
    mid = (start + end) / 2 + 1
    hit = torch.from_numpy(pos)[order]
    return (mid * hit).sum(1).numpy()


@dataclass
class Classes:
    """An on/off feature on the select part, in the standardised units: the mean of each
    unit (C,), the difference of its means on and off the feature (C,), and the counts."""
    mean: np.ndarray
    diff: np.ndarray
    n_on: float
    n_off: float


def greedy(fxx: np.ndarray, fxy: np.ndarray, sxx: np.ndarray, sxy: np.ndarray, syy: float,
           max_k: int = MAX_K, classes: Classes | None = None) -> tuple[list[int], list[float]]:
    """Forward selection: at each k, the unit whose ridge probe together with those chosen
    does best on the select part: the smallest squared error, or for an on/off feature
    (``classes``) the largest separation d' of the probe's output (the difference of its
    means on and off the feature over its pooled within-class sd: like the AUC, blind to
    the output's offset and scale, which can drift between parts).

    ``fxx`` (C, C), ``fxy`` (C,): the candidates' correlations with each other and their
    covariances with the feature on the fit part (standardised units, so the probe is
    (fxx_SS + RIDGE I)^-1 fxy_S); ``sxx``, ``sxy``, ``syy``: sums of the same standardised
    values' products on the select part. Adding a unit is a rank-one update (a Schur
    complement), so each step costs O(C k^2). Returns the chosen candidates in order and
    the select part's R^2 (1 - error / syy) or d' at each k.
    """
    c_all = len(fxx)
    chosen: list[int] = []
    crit: list[float] = []
    w = np.zeros(0)
    ainv = np.zeros((0, 0))
    for _ in range(min(max_k, c_all)):
        s_ = np.array(chosen, np.int64)
        v = fxx[s_]                                             # (k, C)
        q = ainv @ v                                            # A^-1 v_c per candidate
        d = np.diag(fxx) + RIDGE - (v * q).sum(0)               # Schur complement
        d = np.maximum(d, 1e-12)
        wc = (fxy - q.T @ fxy[s_]) / d                          # weight of the new unit
        ws = w[:, None] - q * wc[None, :]                       # the others' weights, (k, C)
        gss, gsc = sxx[np.ix_(s_, s_)], sxx[s_]
        quad = (ws * (gss @ ws)).sum(0) + 2 * wc * (ws * gsc).sum(0) + wc ** 2 * np.diag(sxx)
        if classes is None:
            fit_xy = (ws * sxy[s_, None]).sum(0) + wc * sxy
            score = 1 - (syy - 2 * fit_xy + quad) / syy if syy > 0 else np.zeros(c_all)
        else:
            n = classes.n_on + classes.n_off
            wm = (ws * classes.mean[s_, None]).sum(0) + wc * classes.mean
            wd = (ws * classes.diff[s_, None]).sum(0) + wc * classes.diff
            within = quad - n * wm ** 2 - classes.n_on * classes.n_off / n * wd ** 2
            with np.errstate(invalid="ignore", divide="ignore"):
                score = wd / np.sqrt(np.maximum(within, 1e-300) / n)
        score = np.nan_to_num(score, nan=-np.inf)
        score[s_] = -np.inf
        best = int(np.argmax(score))
        # A^-1 of the grown set by the block inverse (the same Schur complement).
        qb = q[:, best]
        ainv = np.block([[ainv + np.outer(qb, qb) / d[best], -qb[:, None] / d[best]],
                         [-qb[None, :] / d[best], np.array([[1 / d[best]]])]])
        w = np.append(ws[:, best], wc[best])
        chosen.append(best)
        crit.append(float(score[best]))
    return chosen, crit


def classes_of(sel: Moments, mu: np.ndarray, sd: np.ndarray, j: int) -> Classes:
    """The select part's class statistics of feature j, in the units standardised on the fit part."""
    n_on = float(sel.sy[j])
    n_off = sel.n - n_on
    total = (sel.sx - sel.n * mu) / sd                          # sum of z
    on = (sel.xy[:, j] - mu * n_on) / sd                        # sum of z where the feature is on
    mean = total / sel.n
    diff = on / max(n_on, 1) - (total - on) / max(n_off, 1)
    return Classes(mean, diff, n_on, n_off)


def probe(fxx: np.ndarray, fxy: np.ndarray, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(sets, weights): the ridge probe of each row of ``sets`` (B, k) on the standardised units."""
    a = fxx[sets[:, :, None], sets[:, None, :]] + RIDGE * np.eye(sets.shape[1])
    return sets, np.linalg.solve(a, fxy[sets][:, :, None])[:, :, 0]


def all_units_probe(fxx: np.ndarray, fxy: np.ndarray) -> np.ndarray:
    """(U, K) ridge probes on every unit: one Cholesky factor for all features."""
    a = torch.from_numpy(fxx + RIDGE * np.eye(len(fxx)))
    return torch.cholesky_solve(torch.from_numpy(fxy), torch.linalg.cholesky(a)).numpy()
