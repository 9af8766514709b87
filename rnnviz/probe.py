"""Sparse probes: which few units carry a feature, and how well k units predict it.

Per feature, an L1-regularised logistic (binary) or linear (continuous, ordinal)
regression, fitted by FISTA (proximal gradient) in torch on a subsample of
characters (Radford et al. 2017; Dalvi et al. 2019). Its candidates are every unit
when the dump has at most ``MAX_CANDIDATES``, else the union of each feature's
``PER_FEATURE`` best-ranked units: one shared matrix that stays in cache, ~20x
cheaper than all 3072 units of a 2 x 256 model, and a unit ranked below those
rarely carries a feature the others miss. The L1 weight is the larger of 5% of
the weight that zeroes every unit and the universal threshold sd(y) sqrt(2 log p / m),
so a feature no unit tracks gets (almost) no units.

Quality on held-out characters (the last quarter, in text order): ROC-AUC of the
probe's output for binary features, Pearson r otherwise (robust to the held-out
part having another mean). For comparison, ridge regressions (closed form; least
squares on 0/1 for binary features) on the top-k ranked units and on k random ones.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch

from .rank import midranks_1d

L1_FRACTION = 0.05
ITERATIONS = 100
MAX_CANDIDATES = 512
PER_FEATURE = 32
PROBE_COLUMNS = ["feature", "feature_kind", "metric", "l1", "l1_candidates", "top_k", "random_k", "k",
                 "n_selected", "selected", "n_train", "n_test"]


def fit_l1(x: torch.Tensor, y: torch.Tensor, binary: np.ndarray, l1: np.ndarray,
           iterations: int = ITERATIONS) -> tuple[torch.Tensor, torch.Tensor]:
    """FISTA for K probes sharing x (m, p); y (m, K) -> weights (p, K), intercepts (K,).

    Logistic loss where ``binary``, squared loss elsewhere, plus l1 * |w|.
    """
    m = x.shape[0]
    binary = torch.as_tensor(np.asarray(binary, bool))
    # Step 1/L: L bounds the curvature of the squared loss; the logistic loss is 4x flatter.
    lip = max(_top_singular(x) ** 2 / m, 1.0)
    step = torch.where(binary, 4.0, 1.0) / lip                                   # (K,)
    thresh = step * torch.as_tensor(np.asarray(l1, np.float32))
    mean = y.mean(0)
    w = torch.zeros(x.shape[1], y.shape[1])
    b = torch.where(binary, torch.logit(mean.clamp(1e-4, 1 - 1e-4)), mean)
    w_prev, b_prev, t = w, b, 1.0
    for _ in range(iterations):
        t_next = (1 + math.sqrt(1 + 4 * t * t)) / 2
        mom = (t - 1) / t_next
        vw, vb = w + mom * (w - w_prev), b + mom * (b - b_prev)
        out = x @ vw + vb
        err = torch.where(binary, torch.sigmoid(out), out) - y                   # d loss / d out
        w_prev, b_prev = w, b
        w = vw - step * (x.T @ err) / m
        w = torch.sign(w) * torch.clamp(w.abs() - thresh, min=0.0)             # soft threshold
        b = vb - step * err.mean(0)
        t = t_next
    return w, b


def _top_singular(x: torch.Tensor, iterations: int = 30) -> float:
    """Largest singular value by power iteration (an SVD would cost more than the fit)."""
    v = torch.ones(x.shape[1], 1) / math.sqrt(x.shape[1])
    for _ in range(iterations):
        v = x.T @ (x @ v)
        v = v / v.norm().clamp_min(1e-12)
    return 1.05 * float((x @ v).norm())   # power iteration approaches the top value from below


def ridge_sets(x: torch.Tensor, y: torch.Tensor, split: int, sets: np.ndarray, targets: np.ndarray,
               l2: float = 1e-2) -> np.ndarray:
    """Closed-form ridge probes, one per row of ``sets`` (B, k) predicting y[:, targets[b]];
    fitted on the first ``split`` characters, returns held-out predictions (B, m - split)."""
    cols = torch.as_tensor(sets, dtype=torch.int64)
    xb = torch.cat([x[:, cols].permute(1, 0, 2), torch.ones(len(sets), x.shape[0], 1)], dim=2)  # (B, m, k+1)
    yb = y[:, torch.as_tensor(targets)].T[:, :, None]                                            # (B, m, 1)
    tr = xb[:, :split]
    gram = tr.transpose(1, 2) @ tr / split + l2 * torch.eye(xb.shape[2])
    w = torch.linalg.solve(gram, tr.transpose(1, 2) @ yb[:, :split] / split)
    return (xb[:, split:] @ w)[:, :, 0].numpy()


def _quality(pred: np.ndarray, y: np.ndarray, binary: bool) -> float:
    """Held-out ROC-AUC (binary) or Pearson r; NaN when the held-out target does not vary."""
    if np.ptp(y) == 0 or np.ptp(pred) == 0:
        return float("nan")
    if binary:
        pos = y > 0.5
        r = midranks_1d(pred)
        return float((r[pos].mean() - r[~pos].mean()) / len(y) + 0.5)
    pc, yc = pred - pred.mean(), y - y.mean()
    return float((pc * yc).sum() / np.sqrt((pc * pc).sum() * (yc * yc).sum()))


def probe_table(x: np.ndarray, y: np.ndarray, names: list[str], kinds: list[str], units: list[str],
                ranked: dict[str, list[int]], k: int = 5, repeats: int = 3, seed: int = 0) -> pd.DataFrame:
    """x (m, U) unit values and y (m, K) features at m characters in text order;
    ``ranked[name]``: columns of x, best-ranked unit first."""
    m = len(x)
    split = int(m * 0.75)
    binary = np.array([kd == "binary" for kd in kinds])
    if len(units) <= MAX_CANDIDATES:
        cand = np.arange(len(units))
    else:
        cand = np.unique(np.concatenate([np.asarray(ranked[nm][:PER_FEATURE], int) for nm in names]))
    xc = x[:, cand]
    mu, sd = xc[:split].mean(0), xc[:split].std(0)
    sd[sd == 0] = 1.0
    xs = torch.from_numpy(((xc - mu) / sd).astype(np.float32))
    yc = y.astype(np.float64).copy()
    ymu, ysd = yc[:split].mean(0), yc[:split].std(0)
    for j in np.flatnonzero(~binary):
        yc[:, j] = (yc[:, j] - ymu[j]) / (ysd[j] or 1.0)
    yc[:, binary] = yc[:, binary] != 0
    yt = torch.from_numpy(yc.astype(np.float32))
    # lambda_max: the L1 weight above which every unit weight stays zero.
    lam_max = (xs[:split].T @ (yt[:split] - yt[:split].mean(0))).abs().amax(0).numpy() / split
    universal = yc[:split].std(0) * math.sqrt(2 * math.log(max(len(cand), 2)) / split)
    w, b = fit_l1(xs[:split], yt[:split], binary, np.maximum(L1_FRACTION * lam_max, universal))
    l1_pred, w = (xs[split:] @ w + b).numpy(), w.numpy()
    # Ridge probes on k units: the top-k ranked ones, and `repeats` random k-sets, per feature.
    rng = np.random.default_rng(seed)
    kk = min(k, len(units))
    xall = torch.from_numpy(((x - x[:split].mean(0)) / np.where(x[:split].std(0) > 0, x[:split].std(0), 1))
                            .astype(np.float32))
    sets = [np.asarray(ranked[nm][:kk]) for nm in names]
    sets += [rng.choice(len(units), size=kk, replace=False) for _ in names for _ in range(repeats)]
    targets = np.concatenate([np.arange(len(names)), np.repeat(np.arange(len(names)), repeats)])
    small = ridge_sets(xall, yt, split, np.stack(sets), targets)
    rows = []
    for j, (name, kind) in enumerate(zip(names, kinds)):
        held = yc[split:, j]
        chosen = np.flatnonzero(w[:, j])
        chosen = chosen[np.argsort(-np.abs(w[chosen, j]))]
        rand = [_quality(small[len(names) + j * repeats + r], held, binary[j]) for r in range(repeats)]
        rows.append({
            "feature": name, "feature_kind": kind, "metric": "auc" if binary[j] else "r",
            "l1": _quality(l1_pred[:, j], held, binary[j]), "l1_candidates": len(cand),
            "top_k": _quality(small[j], held, binary[j]), "random_k": _mean(rand), "k": kk,
            "n_selected": len(chosen),
            "selected": " ".join(f"{units[cand[i]]}:{w[i, j]:+.2f}" for i in chosen[:8]),
            "n_train": split, "n_test": m - split})
    return pd.DataFrame(rows, columns=PROBE_COLUMNS)


def _mean(values: list[float]) -> float:
    values = [v for v in values if np.isfinite(v)]
    return float(np.mean(values)) if values else float("nan")
