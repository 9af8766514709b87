"""The analysis tables (ranking, units, saturation, contexts) from the per-point results of
:mod:`rnnviz.stream`, with the circular-shift null of each feature's best units."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .contexts import QUANTILES, SATURATING
from .exact import FeatureColumns
from .names import parse_point
from .rank import RANK_COLUMNS, null_stats, torch_threads, z_bound
from .rankkernel import threads
from .stream import PointResult, feature_weight, shift_lags, shifted_sums

UNIT_COLUMNS = ["unit", "point", "layer", "kind", "index", "analysed_chars", "nonfinite", "mean", "sd",
                "min", "max", "p1", "p50", "p99"]
SATURATION_COLUMNS = ["unit", "point", "layer", "gate", "index", "frac_left", "frac_right"]


@dataclass
class Tables:
    ranking: pd.DataFrame
    units: pd.DataFrame
    saturation: pd.DataFrame
    results: list

    def contexts(self, position) -> pd.DataFrame:
        """Long table of top, bottom and quantile characters; ``position`` maps analysed
        character indices to indices on the char axis."""
        frames = []
        for res in self.results:
            names = _unit_names(res)
            for which, idx, levels in (("top", res.top, None), ("bottom", res.bottom, None),
                                       ("quantile", res.quantile_at, QUANTILES)):
                h, k = idx.shape
                ok = idx >= 0
                frames.append(pd.DataFrame({
                    "unit": np.repeat(np.asarray(names, dtype=object), k)[ok.ravel()],
                    "which": which,
                    "rank": np.tile(np.arange(1, k + 1), h)[ok.ravel()],
                    "quantile": (np.tile(np.asarray(levels, float), h)[ok.ravel()] if levels is not None
                                 else np.nan),
                    "position": np.asarray([position(int(i)) for i in idx[ok]], np.int64),
                    "value": res.values[which][ok].astype(np.float32)}))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["unit", "which", "rank", "quantile", "position", "value"])


def _unit_names(res: PointResult) -> list[str]:
    return [f"{res.point}[{i}]" for i in range(len(res.scores.score))]


def top_units(results: list[PointResult], top: int) -> dict[int, list[tuple[int, int]]]:
    """Per feature j: its ``top`` strongest (point number, unit index) with a finite score."""
    score = np.concatenate([np.abs(r.scores.score) for r in results])
    owner = np.concatenate([np.stack([np.full(len(r.scores.score), i), np.arange(len(r.scores.score))], 1)
                            for i, r in enumerate(results)])
    out = {}
    for j in range(score.shape[1]):
        s = np.nan_to_num(score[:, j], nan=-1.0)
        order = np.argsort(-s, kind="stable")[:top]
        out[j] = [tuple(map(int, owner[i])) for i in order if s[i] >= 0]
    return out


def build_tables(results: list[PointResult], fc: FeatureColumns, n: int, *, top: int, shifts: int,
                 null_columns) -> Tables:
    """``null_columns(point, cols) -> ((T, n) centred doubled midranks, (T,) their sums of squares)``."""
    units, meta = [], []
    for res in results:
        layer, kind = parse_point(res.point)
        for i, u in enumerate(_unit_names(res)):
            units.append(u)
            meta.append((u, res.point, layer, kind, i))
    meta = pd.DataFrame(meta, columns=["unit", "point", "layer", "kind", "index"])
    score, auc, r, rho = (np.concatenate([getattr(res.scores, key) for res in results])
                          for key in ("score", "auc", "r", "rho"))
    scored = np.concatenate([res.scores.n for res in results])
    z = np.full(score.shape, np.nan)
    p = np.full(score.shape, np.nan)
    beats = np.zeros(score.shape, bool)
    bound = z_bound(len(units))
    offsets = np.cumsum([0] + [len(res.scores.score) for res in results])
    if shifts > 0:
        best = top_units(results, top)
        d, lags = shift_lags(n, shifts)
        wanted: dict[int, set] = {}
        for j, pairs in best.items():
            for pi, u in pairs:
                wanted.setdefault(pi, set()).add(u)
        for pi, cols in wanted.items():
            cols = np.array(sorted(cols))
            ranks, rank_ss = null_columns(results[pi].point, cols)
            row = {int(c): i for i, c in enumerate(cols)}
            for j, pairs in best.items():
                mine = [u for q, u in pairs if q == pi]
                if not mine:
                    continue
                w, scale = feature_weight(fc, j)
                with torch_threads(threads()):    # the null's products, on every core: nothing else runs
                    sums = shifted_sums(ranks[[row[u] for u in mine]], w, d, lags)
                if not fc.binary[j]:
                    scale = scale / np.sqrt(rank_ss[[row[u] for u in mine]] * fc.rank_ss[j])[:, None]
                null = sums[:, 1:] * scale
                g = offsets[pi] + np.array(mine)
                obs = score[g, j]
                zz, pp = null_stats(obs, null)
                z[g, j], p[g, j] = zz, pp
                beats[g, j] = (np.abs(obs) > np.abs(null).max(axis=1)) & (np.abs(zz) >= bound)
    frames = []
    for j, (name, kind) in enumerate(zip(fc.names, fc.kinds)):
        order = np.argsort(-np.nan_to_num(np.abs(score[:, j]), nan=-1.0), kind="stable")
        df = meta.iloc[order].reset_index(drop=True)
        df.insert(0, "feature_kind", kind)
        df.insert(0, "feature", name)
        df["rank"] = np.arange(1, len(order) + 1)
        for col, values in (("score", score), ("auc", auc), ("r", r), ("rho", rho), ("null_z", z),
                            ("null_p", p), ("beats_null", beats)):
            df[col] = values[order, j]
        df["analysed_chars"] = scored[order]
        frames.append(df)
    ranking = pd.concat(frames, ignore_index=True)[RANK_COLUMNS + ["analysed_chars"]]
    stats = {key: np.concatenate([res.stats[key] for res in results])
             for key in ("n", "nonfinite", "mean", "sd", "min", "max", "p1", "p50", "p99")}
    unit_df = meta.assign(analysed_chars=stats.pop("n"), **stats)[UNIT_COLUMNS]
    sat = []
    for res in results:
        layer, kind = parse_point(res.point)
        if kind in SATURATING:
            m = np.maximum(res.stats["n"], 1)
            sat.append(pd.DataFrame({"unit": _unit_names(res), "point": res.point, "layer": layer, "gate": kind,
                                     "index": np.arange(len(m)), "frac_left": res.below / m,
                                     "frac_right": res.above / m}))
    saturation = pd.concat(sat, ignore_index=True) if sat else pd.DataFrame(columns=SATURATION_COLUMNS)
    return Tables(ranking, unit_df, saturation, results)


def hold_column(ranking: pd.DataFrame, units: list[str], hold: np.ndarray, names: list[str]) -> np.ndarray:
    """The held-out score of each ranking row, from the (U, K) held-out scores."""
    row = {u: i for i, u in enumerate(units)}
    col = {nm: j for j, nm in enumerate(names)}
    return hold[ranking["unit"].map(row).to_numpy(), ranking["feature"].map(col).to_numpy()]


def null_candidates(results: list[PointResult], keep: dict, top: int) -> dict:
    """The value-to-rank tables worth keeping for the null: those of the units now among some
    feature's ``top`` best (the last result brings its tables; earlier ones were trimmed)."""
    wanted: dict[str, set] = {}
    for pairs in top_units(results, top).values():
        for pi, u in pairs:
            wanted.setdefault(results[pi].point, set()).add(u)
    last = results[-1]
    out = {}
    for point, cols in wanted.items():
        if point == last.point:     # copies: a row would keep its point's whole (H, 65536) table alive
            out[point] = {u: last.luts[u].copy() for u in cols if u in last.luts}
        else:
            out[point] = {u: keep[point][u] for u in cols if u in keep.get(point, {})}
    return out
