"""Gate saturation and top-activating contexts, from the float16 keys of one point.

Saturation (Karpathy et al. 2016): a sigmoid gate is left-saturated below 0.1 and
right-saturated above 0.9. Contexts: per unit, the k strongest and weakest
characters (at most one per ``spread`` consecutive analysed characters, so the k
contexts differ), plus one character at each of a few activation quantiles.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from .rank import fp16_keys

SATURATING = ("gate_i", "gate_f", "gate_o", "gate_r", "gate_z")  # sigmoid gates (LSTM, GRU); g, n are tanh
LEFT, RIGHT = 0.1, 0.9
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
CONTEXT_COLUMNS = ["unit", "which", "rank", "quantile", "position", "value"]


def _nearest_key(limit: float, below: bool) -> int:
    """Key of the last float16 below ``limit`` (or the first above it)."""
    v = np.float16(limit)
    if (float(v) >= limit) if below else (float(v) <= limit):   # compare in float64
        v = np.nextafter(v, np.float16(-np.inf if below else np.inf))
    return int(fp16_keys(np.array([[v]], np.float16))[0, 0])


# Compare keys, not floats: no float copy of the block is needed.
_LEFT_KEY, _RIGHT_KEY = _nearest_key(LEFT, below=True), _nearest_key(RIGHT, below=False)


def saturation(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, H) keys -> fractions of characters < 0.1 and > 0.9, each (H,)."""
    n = len(keys)
    return (np.count_nonzero(keys <= _LEFT_KEY, axis=0) / n,
            np.count_nonzero(keys >= _RIGHT_KEY, axis=0) / n)


def extremes(keys: np.ndarray, k: int, spread: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """(n, H) keys -> (top, bottom): (H, k) indices of the highest and lowest values, best first."""
    n, h = keys.shape
    nb = n // spread
    if nb < 1:
        spread, nb = 1, n
    k = min(k, nb)
    # (nb, spread, H): reducing the middle axis runs along contiguous units, vectorised.
    blocks = keys[:nb * spread].reshape(nb, spread, h)       # a tail shorter than `spread` is skipped
    cols = np.arange(h)[None, :]
    out = []
    for best in (blocks.max(axis=1).astype(np.int32), -blocks.min(axis=1).astype(np.int32)):   # (nb, H)
        pick = np.argpartition(-best, k - 1, axis=0)[:k] if k < nb else np.tile(np.arange(nb)[:, None], (1, h))
        pick = np.take_along_axis(pick, np.argsort(-best[pick, cols], axis=0, kind="stable"), axis=0)
        inside = blocks[pick, :, cols]                                         # (k, H, spread)
        offset = inside.argmax(axis=2) if len(out) == 0 else inside.argmin(axis=2)
        out.append((pick * spread + offset).T)
    return out[0], out[1]


def quantile_picks(keys: np.ndarray, levels=QUANTILES, m: int = 1024, seed: int = 0) -> np.ndarray:
    """(n, H) keys -> (H, Q) indices of characters at the given activation quantiles.

    Quantiles of a fixed random subset of m characters: cheap, and within ~1/sqrt(m).
    """
    n = len(keys)
    sub = np.sort(np.random.default_rng(seed).choice(n, size=min(m, n), replace=False))
    order = np.argsort(keys[sub], axis=0, kind="stable")                   # (m, H)
    at = np.round(np.asarray(levels) * (len(sub) - 1)).astype(int)
    return sub[order[at]].T


def context_rows(units: list[str], which: str, idx: np.ndarray, positions: np.ndarray,
                 values: np.ndarray, levels=None) -> pd.DataFrame:
    """Long table rows for (H, k) picked indices into the analysed characters."""
    h, k = idx.shape
    return pd.DataFrame({
        "unit": np.repeat(np.asarray(units, dtype=object), k),
        "which": which,
        "rank": np.tile(np.arange(1, k + 1), h),
        "quantile": np.tile(np.asarray(levels, float), h) if levels is not None else np.nan,
        "position": positions[idx].ravel().astype(np.int64),
        "value": values.ravel().astype(np.float32),
    })


def with_text(contexts: pd.DataFrame, text: str, before: int = 50, after: int = 10) -> pd.DataFrame:
    """Add ``before``, ``char`` and ``after`` text columns around each position."""
    pos = contexts["position"].to_numpy()
    return contexts.assign(
        before=[text[max(0, p - before):p] for p in pos.tolist()],
        char=[text[p] if p < len(text) else "" for p in pos.tolist()],
        after=[text[p + 1:p + 1 + after] for p in pos.tolist()])
