"""Each unit's value distribution over the whole text: what its colour scale is made of.

``rnnviz analyze`` stores it (/analysis/units: p1, p50, p99, min, max per unit). Without
an analysis it is computed from the states, a group of units at a time, in memory only:
nothing is written to the dump. The percentiles are numpy's (linear interpolation) over
the finite values, as the analysis computes them, so both give the same colours.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..exact import PERCENTILES, Counts, unit_stats

BLOCK_ROWS = 1 << 15


def stored_stats(units: pd.DataFrame | None, options: dict | None = None) -> dict[str, dict]:
    """unit name -> stats dict, from an /analysis/units table (empty without one)."""
    if units is None or not {"unit", "p1", "p99"} <= set(units.columns):
        return {}
    options = options or {}
    of = options.get("n_chars") if options.get("sampled") else None
    out = {}
    cols = [c for c in ("p1", "p50", "p99", "min", "max") if c in units]
    n = units["analysed_chars"].to_numpy() if "analysed_chars" in units else np.zeros(len(units), np.int64)
    for name, count, *vals in zip(units["unit"].tolist(), n.tolist(), *(units[c].to_numpy(np.float64) for c in cols)):
        s = dict(zip(cols, vals), n=int(count))
        s.setdefault("min", s["p1"])
        s.setdefault("max", s["p99"])
        if of:
            s["of"] = int(of)
        out[name] = s
    return out


def computed_stats(read, n: int, width: int, dtype) -> list[dict]:
    """Stats of ``width`` units from ``read(lo, hi) -> (hi - lo, width)`` states over chars 0..n.

    float16: exact counts of the 65,536 values per unit (rnnviz.exact, as analyze counts);
    other dtypes: the units' whole columns.
    """
    if np.dtype(dtype) == np.float16:
        counts = Counts.empty(width)
        for lo in range(0, n, BLOCK_ROWS):
            counts.add(np.ascontiguousarray(read(lo, min(n, lo + BLOCK_ROWS))).view(np.uint16))
        st = unit_stats(counts)
        pct = {f"p{int(q)}": st.percentiles[:, j] for j, q in enumerate(PERCENTILES)}
        return [{"p1": float(pct["p1"][u]), "p50": float(pct["p50"][u]), "p99": float(pct["p99"][u]),
                 "min": float(st.minimum[u]), "max": float(st.maximum[u]), "n": int(st.n[u]), "computed": True}
                for u in range(width)]
    block = np.concatenate([read(lo, min(n, lo + BLOCK_ROWS)) for lo in range(0, n, BLOCK_ROWS)])
    out = []
    for u in range(width):
        x = block[:, u].astype(np.float64)
        x = x[np.isfinite(x)]
        if not len(x):
            out.append({"p1": np.nan, "p50": np.nan, "p99": np.nan, "min": np.nan, "max": np.nan, "n": 0,
                        "computed": True})
            continue
        p1, p50, p99 = np.percentile(x, PERCENTILES)
        out.append({"p1": float(p1), "p50": float(p50), "p99": float(p99), "min": float(x.min()),
                    "max": float(x.max()), "n": int(len(x)), "computed": True})
    return out
