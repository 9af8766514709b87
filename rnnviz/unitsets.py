"""The best k units together: per feature, greedy forward selection of k = 1..16 units,
against the single-unit top k, k random units and all units.

The analysed characters are cut into three contiguous parts, in text order: **fit**
(the first 60%), **select** (the next 20%) and **test** (the last 20%; ``PARTS``).

* Every unit is scored on the fit part alone (the exact AUC / Spearman's rho of
  :mod:`rnnviz.exact`, from the fit part's own counts). Per feature, its candidates are
  its own ``TOP`` best units on the fit part plus the ``PER_POINT`` best of every
  recording point (so every layer and kind takes part), never another feature's.
* A *probe* on a set of units is a ridge regression of the feature on the units'
  standardised values (:data:`rnnviz.setprobe.RIDGE`), fitted on the fit part; for an on/off feature this is
  Fisher's linear discriminant. Greedy selection adds, at each k, the candidate whose
  probe does best on the select part: the smallest squared error, or for an on/off
  feature the best separation of its two classes (d', which like the AUC ignores the
  output's offset and scale).
* Reported on the test part, at every k: the greedy set's probe, the probe on the k best
  single units (ranked on the fit part), the mean over ``DRAWS`` draws of k random units
  (each draw a prefix of one random order of all units), and, once per feature, the
  probe on all units. ROC-AUC for on/off features, Pearson's r of the probe's output
  with the feature otherwise.

Everything but the test part's predictions is a sum over characters: each part's
moments (:class:`Moments`) are accumulated a block of characters at a time in one pass
over every unit, so memory holds one block of every unit, the (U, U) moments of the fit
and select parts (all units, or with ``all_units=False`` the candidates and random
units), and the test part of the units the sets use, as stored (2 bytes a value for
float16 dumps). Values that are inf or NaN count as the unit's mean.

    sets = unit_sets(Inputs(readers, widths, y, names, kinds, fit_scores, means), units)
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import RnnvizError
from .setprobe import MAX_K, Classes, Moments, all_units_probe, classes_of, greedy, probe, test_score

PARTS = (0.6, 0.2, 0.2)     # fit, select, test: fractions of the analysed characters, in text order
TOP = 1024                  # candidates: a feature's best units on the fit part ...
PER_POINT = 16              # ... and the best of every recording point
DRAWS = 20                  # random k-sets per k
ROWS = 4096                 # characters per block of the pass over every unit
SET_COLUMNS = ["feature", "feature_kind", "metric", "k", "unit", "greedy", "select", "top_unit", "top_k",
               "random_k", "random_sd", "all_units", "units", "candidates", "n_fit", "n_select", "n_test"]


def parse_parts(text: str) -> tuple[float, float, float] | None:
    """'60/20/20' -> (0.6, 0.2, 0.2); 'none' -> None."""
    if text.strip().lower() == "none":
        return None
    try:
        parts = tuple(float(v) for v in text.split("/"))
    except ValueError:
        parts = ()
    if len(parts) != 3:
        raise RnnvizError(f"--parts expects FIT/SELECT/TEST such as 60/20/20, or none; found {text!r}")
    return check_parts(tuple(v / sum(parts) if sum(parts) > 0 else v for v in parts))


def check_parts(parts) -> tuple[float, float, float]:
    """Three positive fractions that sum to 1."""
    parts = tuple(float(v) for v in parts)
    if len(parts) != 3 or min(parts) <= 0 or abs(sum(parts) - 1) > 1e-6:
        raise RnnvizError(f"the fit, select and test parts must be three positive fractions summing to 1, "
                          f"found {parts}")
    return parts


def part_bounds(n: int, parts=PARTS) -> tuple[int, int]:
    """(f, s): fit = [0, f), select = [f, s), test = [s, n) of n characters."""
    fit, select, test = parts
    total = fit + select + test
    f = int(round(n * fit / total))
    s = f + int(round(n * select / total))
    return f, s


def candidates(fit_score: np.ndarray, point_of: np.ndarray, top: int = TOP, per_point: int = PER_POINT) -> np.ndarray:
    """Columns of one feature's candidates from its (U,) fit-part scores: its ``top`` best
    units and the ``per_point`` best of every point (``point_of``: (U,) point number), best first."""
    s = np.nan_to_num(np.abs(fit_score), nan=-1.0)
    order = np.argsort(-s, kind="stable")
    order = order[s[order] >= 0]
    picked = list(order[:top])
    for p in np.unique(point_of):
        mine = order[point_of[order] == p]
        picked += list(mine[:per_point])
    seen, out = set(), []
    for c in picked:                 # keep the order of the scores
        if c not in seen:
            seen.add(c)
            out.append(int(c))
    return np.array(sorted(out, key=lambda c: -s[c]), np.int64)


def random_orders(n_units: int, draws: int = DRAWS, max_k: int = MAX_K, seed: int = 0) -> np.ndarray:
    """(draws, min(max_k, U)) units: the first k of a row are k units drawn at random."""
    rng = np.random.default_rng(seed)
    return np.stack([rng.permutation(n_units)[:min(max_k, n_units)] for _ in range(draws)])


@dataclass
class Inputs:
    """What the sets need from the analysis: per point a reader of its analysed characters
    (``read(lo, hi) -> (hi - lo, H)``, see :mod:`rnnviz.stream`) and its width, the
    features there (n, K) with names and kinds, every unit's (U, K) fit-part scores and its
    (U,) mean over all analysed characters (the offset the moments are centred by)."""
    readers: list
    widths: list
    y: np.ndarray
    names: list
    kinds: list
    fit_score: np.ndarray
    mean: np.ndarray


def _blocks(lo: int, hi: int, rows: int = ROWS):
    return [(a, min(hi, a + rows)) for a in range(lo, hi, rows)]


def _raw(inp: Inputs, lo: int, hi: int) -> np.ndarray:
    """(hi - lo, U) values of every unit as stored."""
    return np.concatenate([read(lo, hi) for read in inp.readers], axis=1)


def _centre(raw: np.ndarray, mean: np.ndarray, cols: np.ndarray | None = None) -> np.ndarray:
    """float32 values of the units ``cols`` (raw's columns; None: all) less their ``mean``,
    inf and NaN as 0 (the mean)."""
    cols = np.arange(raw.shape[1]) if cols is None else cols
    x = raw[:, cols].astype(np.float32) - mean[cols].astype(np.float32)
    x[~np.isfinite(x)] = 0.0
    return np.ascontiguousarray(x)


def _rows(inp: Inputs, lo: int, hi: int, cols: np.ndarray | None = None) -> np.ndarray:
    return _centre(_raw(inp, lo, hi), inp.mean, cols)


def unit_sets(inp: Inputs, units: list[str], *, parts=PARTS, all_units: bool = True, max_k: int = MAX_K,
              draws: int = DRAWS, seed: int = 0) -> pd.DataFrame:
    """One row per (feature, k): see ``SET_COLUMNS`` and the module doc."""
    n = len(inp.y)
    f, s = part_bounds(n, parts)
    binary = np.array([k == "binary" for k in inp.kinds])
    y = np.where(binary[None, :], inp.y != 0, inp.y).astype(np.float32)
    ok = [j for j in range(len(inp.names)) if f >= 2 and s > f and n > s and np.ptp(y[:f, j]) > 0]
    if not ok:
        return pd.DataFrame(columns=SET_COLUMNS)
    point_of = np.repeat(np.arange(len(inp.widths)), inp.widths)
    cands = {j: candidates(inp.fit_score[:, j], point_of) for j in ok}
    rand = random_orders(len(units), draws, max_k, seed)
    # The units the moments cover: all of them for the all-units probe, else what the sets can use.
    every = np.arange(len(units)) if all_units else np.unique(np.concatenate([*cands.values(), rand.ravel()]))
    sym = [(a, min(a + 256, len(every))) for a in range(0, len(every), 256)]      # column blocks
    fit_m, sel_m = Moments.empty(len(every), y.shape[1]), Moments.empty(len(every), y.shape[1])
    for (lo, hi), m in [(b, fit_m) for b in _blocks(0, f)] + [(b, sel_m) for b in _blocks(f, s)]:
        m.add(_rows(inp, lo, hi, None if all_units else every), y[lo:hi], sym)
    fit_m.finish()
    sel_m.finish()
    # Standardised on the fit part: z = (x - mu) / sd, the feature centred by its fit mean.
    mu, ybar = fit_m.sx / f, fit_m.sy / f
    fxx, fxy, _ = fit_m.about(mu, ybar)
    sd = np.sqrt(np.maximum(np.diag(fxx) / f, 0))
    sd[sd == 0] = 1.0
    fxx, fxy = fxx / f / np.outer(sd, sd), fxy / f / sd[:, None]
    sxx, sxy, syy = sel_m.about(mu, ybar)
    sxx, sxy = sxx / np.outer(sd, sd), sxy / sd[:, None]
    del fit_m
    local = np.full(len(units), -1)
    local[every] = np.arange(len(every))
    # Per feature: the greedy order, the single-unit order on the fit part, random orders.
    orders = {}
    for j in ok:
        c = local[cands[j]]
        cls = classes_of(sel_m, mu, sd, j) if binary[j] else None
        chosen, r2 = greedy(fxx[np.ix_(c, c)], fxy[c, j], sxx[np.ix_(c, c)], sxy[c, j], syy[j], max_k,
                            None if cls is None else Classes(cls.mean[c], cls.diff[c], cls.n_on, cls.n_off))
        orders[j] = (c[chosen], r2, c[:max_k], local[rand])
    # Probes (standardised ridge) per set, then one pass over the test part for the units they use.
    probes = {j: [probe(fxx, fxy[:, j], np.stack([o[:k] for o in (g, t, *r) if len(o) >= k]))
                  for k in range(1, len(g) + 1)] for j, (g, _, t, r) in orders.items()}
    all_w = all_units_probe(fxx, fxy) if all_units else None
    used = np.unique(np.concatenate([o for g, _, t, r in orders.values() for o in (g, t, r.ravel())]))
    at = np.full(len(every), -1)
    at[used] = np.arange(len(used))
    test_raw = None                        # the used units' test part as stored (float16: 2 bytes each)
    all_pred = np.zeros((n - s, y.shape[1]))
    for lo, hi in _blocks(s, n):
        raw = _raw(inp, lo, hi)
        test_raw = np.empty((n - s, len(used)), raw.dtype) if test_raw is None else test_raw
        test_raw[lo - s:hi - s] = raw[:, every[used]]
        if all_w is not None:
            all_pred[lo - s:hi - s] = ((_centre(raw, inp.mean) - mu) / sd) @ all_w
    rows = []
    for j, (g, r2, t, r) in orders.items():
        all_score = test_score(all_pred[:, [j]], y[s:, j], binary[j])[0] if all_units else np.nan
        mine = np.unique(np.concatenate([g, t, r.ravel()]))            # this feature's units, standardised
        z = (_centre(test_raw, inp.mean[every[used]], at[mine]) - mu[mine]) / sd[mine]
        pos = np.full(len(every), -1)
        pos[mine] = np.arange(len(mine))
        for k, (sets, w) in enumerate(probes[j], start=1):
            sc = test_score(np.einsum("nbk,bk->nb", z[:, pos[sets]], w), y[s:, j], binary[j])
            has_top = k <= len(t)
            rnd = sc[1 + has_top:]
            rows.append({
                "feature": inp.names[j], "feature_kind": inp.kinds[j], "metric": "auc" if binary[j] else "r",
                "k": k, "unit": units[every[g[k - 1]]], "greedy": sc[0], "select": r2[k - 1],
                "top_unit": units[every[t[k - 1]]] if has_top else "", "top_k": sc[1] if has_top else np.nan,
                "random_k": _stat(np.mean, rnd), "random_sd": _stat(np.std, rnd),
                "all_units": all_score, "units": " ".join(units[every[c]] for c in g[:k]),
                "candidates": len(cands[j]), "n_fit": f, "n_select": s - f, "n_test": n - s})
    return pd.DataFrame(rows, columns=SET_COLUMNS)


def _stat(fn, values: np.ndarray) -> float:
    """fn of the finite values; NaN when there are none (a feature constant on the test part)."""
    values = values[np.isfinite(values)]
    return float(fn(values)) if len(values) else float("nan")


SHOWN_K = (1, 2, 5, 10, 16)     # the k the summary prints


def set_lines(sets: pd.DataFrame, feature: str) -> list[str]:
    """The summary's lines for one feature's sets (none when it has none)."""
    rows = sets[sets["feature"] == feature].set_index("k") if len(sets) else sets
    if not len(rows):
        return []
    ks = [k for k in SHOWN_K if k in rows.index]
    metric = "AUC" if rows["metric"].iloc[0] == "auc" else "r"

    def figures(col):
        return ", ".join(_fmt(rows.loc[k, col]) for k in ks)
    return [f"test {metric} at k = {', '.join(map(str, ks))}: best k together {figures('greedy')}; "
            f"top k alone {figures('top_k')}; random k {figures('random_k')}; all units {_fmt(rows['all_units'].iloc[0])}",
            f"best {max(rows.index)} together, in the order chosen: {rows['units'].iloc[-1].replace(' ', ', ')}"]


def _fmt(v) -> str:
    return f"{v:.3f}" if np.isfinite(v) else "-"


def set_columns(ranking: pd.DataFrame, units: list[str], fit_score: np.ndarray, names: list[str],
                sets: pd.DataFrame) -> pd.DataFrame:
    """Columns for the ranking (same index): each unit's score and rank on the fit part, and
    on the row of the unit the greedy set took at k: k and that k's test figures."""
    col = {u: i for i, u in enumerate(units)}
    feat = {nm: j for j, nm in enumerate(names)}
    ui = ranking["unit"].map(col).to_numpy()
    fj = ranking["feature"].map(feat).to_numpy()
    strength = np.nan_to_num(np.abs(fit_score), nan=-1.0)
    rank = np.empty(fit_score.shape, np.int64)
    for j in range(fit_score.shape[1]):
        rank[np.argsort(-strength[:, j], kind="stable"), j] = np.arange(1, len(units) + 1)
    out = pd.DataFrame({"fit_score": fit_score[ui, fj], "fit_rank": rank[ui, fj]}, index=ranking.index)
    picked = sets.rename(columns={"k": "set_k", "greedy": "set_test", "top_k": "set_top_k",
                                  "random_k": "set_random_k", "all_units": "set_all_units"})
    keys = ["feature", "unit"]
    extra = ["set_k", "set_test", "set_top_k", "set_random_k", "set_all_units"]
    merged = ranking[keys].merge(picked[keys + extra], on=keys, how="left")
    merged.index = ranking.index
    for c in extra:
        out[c] = merged[c].astype("Int64" if c == "set_k" else float)
    return out


def score_sets(x: np.ndarray, y: np.ndarray, binary: bool, sets: list, parts=PARTS) -> np.ndarray:
    """Test scores of the probes :func:`unit_sets` fits, for units given as in-memory columns:
    ``x`` (n, U) values, ``y`` (n,) one feature, ``sets`` lists of column numbers (each set
    fitted on the fit part, scored on the test part). For comparing other orderings of units
    (benchmarks/neurox_baseline.py) on the same terms."""
    n = len(y)
    f, s = part_bounds(n, parts)
    y = (y != 0 if binary else y).astype(np.float32)[:, None]
    cols = np.unique(np.concatenate([np.asarray(c, np.int64) for c in sets]))
    m = Moments.empty(len(cols), 1)
    xf = np.asarray(x[:f][:, cols], np.float32)
    mean = np.nan_to_num(xf.mean(0))
    for lo, hi in _blocks(0, f):
        m.add(np.ascontiguousarray(xf[lo:hi] - mean), y[lo:hi])
    mu, ybar = m.sx / f, m.sy / f
    fxx, fxy, _ = m.about(mu, ybar)
    sd = np.sqrt(np.maximum(np.diag(fxx) / f, 0))
    sd[sd == 0] = 1.0
    fxx, fxy = fxx / f / np.outer(sd, sd), fxy / f / sd[:, None]
    z = (np.asarray(x[s:][:, cols], np.float32) - mean - mu) / sd
    at = {int(c): i for i, c in enumerate(cols)}
    out = []
    for c in sets:
        idx = np.array([[at[int(u)] for u in c]])
        _, w = probe(fxx, fxy[:, 0], idx)
        out.append(test_score((z[:, idx[0]] @ w[0])[:, None], y[s:, 0], binary)[0])
    return np.array(out)
