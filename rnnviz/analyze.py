"""``rnnviz analyze``: rank every unit of a dump against text features; store it in /analysis.

    result = analyze_dump("dumps/demo.h5")
    print(result.summary()); result.ranking.head()

The dump is read in blocks along the char axis, one recording point at a time, so
memory does not grow with the text. By default ``max_chars`` characters are
analysed, in equal blocks spread evenly over the text (all of them when the text
is shorter): reading the arrays from a warm page cache costs well under a
nanosecond per value, so scoring every value of a long dump would cost many times
the read. ``max_chars=None`` analyses every character. Features are computed for
the whole text and stored whole.

Writing is safe: everything is computed with the file open read-only, then the new
group is written as ``/analysis_partial`` and renamed over ``/analysis``; a failure
removes the partial group and never touches ``/text``, ``/states`` or ``/predictions``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .contexts import (CONTEXT_COLUMNS, QUANTILES, SATURATING, context_rows, extremes, quantile_picks,
                       saturation, with_text)
from .dumpfile import Dump, DumpLocked, open_dump
from .errors import RnnvizError
from .features import BUILTIN, Feature, TextIndex, feature_values, select_features
from .names import h5_path, parse_point
from .probe import PER_FEATURE, PROBE_COLUMNS, probe_table
from .rank import Ranker, one_thread, prepare_features, z_bound

DEFAULT_MAX_CHARS = 16384   # characters analysed by default: ~1 s for 2 x 256 units x all six points
BLOCK = 512                 # characters per sampled block: HDF5 reads of fewer rows cost more per row
PROBE_CHARS = 2048
SATURATION_COLUMNS = ["unit", "point", "layer", "gate", "index", "frac_left", "frac_right"]


@dataclass
class Analysis:
    """What ``rnnviz analyze`` computes; every table is a pandas DataFrame."""
    ranking: pd.DataFrame      # one row per (feature, unit), see rnnviz.rank
    saturation: pd.DataFrame   # one row per sigmoid gate unit
    contexts: pd.DataFrame     # per unit: top, bottom and quantile characters with their text
    probes: pd.DataFrame       # one row per feature, see rnnviz.probe
    features: pd.DataFrame     # name, kind, description, mean on the analysed characters, scored
    info: dict = field(default_factory=dict)

    def summary(self, top: int = 5) -> str:
        """The table ``rnnviz analyze`` prints: per feature, the best units with their scores."""
        i = self.info
        every = i["analysed_chars"] + i["holdout_chars"] == i["n_chars"]
        sampled = (f"all {i['analysed_chars']:,} characters" if every else
                   f"{i['analysed_chars']:,} of {i['n_chars']:,} characters ({i['blocks']} blocks of "
                   f"{i['block']} spread over the text; --max-chars all for every one)")
        lines = [f"Ranked {i['units']:,} units ({_points_summary(i['points'])}) against {len(self.features)} "
                 f"features on {sampled}.",
                 f"Null: {i['shifts']} circular shifts of each feature, for its top {i['top']} units; "
                 f"'yes' = beats it (|z| >= {i['z_bound']:.2f}, Bonferroni over {i['units']:,} units at "
                 f"alpha 0.01, and stronger than every shift)."]
        if i["holdout_chars"]:
            lines.append(f"holdout = the same score on the last {i['holdout']:.0%} of the text "
                         f"({i['holdout_chars']:,} characters analysed), not used for ranking.")
        head = (f"{'feature':<18}{'kind':<11}{'rank':>4}  {'unit':<19}{'score':>7}{'AUC/rho':>8}{'r':>8}"
                f"{'null z':>8}{'null p':>8}  {'beats null':<11}" + ("holdout" if i["holdout_chars"] else ""))
        lines += ["", head, "-" * len(head)]
        probes = self.probes.set_index("feature") if len(self.probes) else None
        for feat in self.features.itertuples():
            if not feat.scored:
                lines.append(f"{feat.name:<18}{feat.kind:<11}   -  constant on the analysed characters: not scored")
                continue
            rows = self.ranking[self.ranking["feature"] == feat.name].head(top)
            for n, row in enumerate(rows.itertuples()):
                stat = row.auc if feat.kind == "binary" else row.rho
                lines.append(
                    f"{feat.name if n == 0 else '':<18}{feat.kind if n == 0 else '':<11}{row.rank:>4}  "
                    f"{row.unit:<19}{row.score:>+7.3f}{stat:>8.3f}{row.r:>+8.3f}{_num(row.null_z, '>8.1f')}"
                    f"{_num(row.null_p, '>8.3f')}  {'yes' if row.beats_null else '':<11}"
                    + (_num(row.holdout_score, '>+7.3f') if i["holdout_chars"] else ""))
            if probes is not None and feat.name in probes.index:
                p = probes.loc[feat.name]
                picked = ", ".join(u.split(":")[0] for u in str(p.selected).split()[:3])
                lines.append(f"{'':<35}probe, held-out {p.metric.upper()}: {_num(p.l1, '.3f')} L1 over "
                             f"{'all ' if p.l1_candidates == i['units'] else ''}{p.l1_candidates} units "
                             f"({p.n_selected} used{': ' + picked if picked else ''}), {_num(p.top_k, '.3f')} "
                             f"top {p.k}, {_num(p.random_k, '.3f')} random {p.k}")
        return "\n".join(lines)


def _num(value, fmt: str) -> str:
    """Formatted number, or a '-' as wide for NaN."""
    if np.isfinite(value):
        return format(value, fmt)
    width = fmt.split(".")[0].lstrip(">+")
    return "-".rjust(int(width) if width else 1)


def _points_summary(points: list[str]) -> str:
    """['layer0.c', 'layer0.h', 'layer1.c', 'layer1.h'] -> 'c, h in layers 0, 1'."""
    kinds = {}
    for p in points:
        layer, kind = parse_point(p)
        kinds.setdefault(kind, []).append(layer)
    groups = {}
    for kind, layers in kinds.items():
        groups.setdefault(tuple(layers), []).append(kind)
    return "; ".join(f"{', '.join(ks)} in layer{'s' if len(ls) > 1 else ''} {', '.join(map(str, ls))}"
                     for ls, ks in groups.items())


@dataclass
class _Plan:
    """Which characters are analysed: blocks (start, length) for ranking and for the held-out check."""
    rank_blocks: list
    hold_blocks: list
    block: int

    @staticmethod
    def positions(blocks) -> np.ndarray:
        return np.concatenate([np.arange(s, s + n) for s, n in blocks]) if blocks else np.zeros(0, np.int64)


def _blocks(lo: int, hi: int, budget: int | None, block: int, align: int) -> list[tuple[int, int]]:
    """All of [lo, hi) when it fits the budget, else budget // block blocks spread evenly over it."""
    total = hi - lo
    if total <= 0:
        return []
    if budget is None or total <= budget:
        return [(lo, total)]
    count = max(1, budget // block)
    starts = lo + (np.arange(count) * (total - block)) // max(count - 1, 1)
    starts = np.unique(np.maximum(lo, starts // align * align))
    return [(int(s), block) for s in starts]


def _plan(ds, n: int, max_chars: int | None, holdout: float) -> _Plan:
    block = align = BLOCK
    if ds.compression and ds.chunks and ds.chunks[0] <= (max_chars or n) // 4:
        block = align = ds.chunks[0]          # a compressed chunk is decoded whole: read whole ones
    split = n - int(round(n * holdout))
    hold_budget = None if max_chars is None else int(max_chars * holdout)
    rank_budget = None if max_chars is None else max_chars - hold_budget
    return _Plan(_blocks(0, split, rank_budget, block, align),
                 _blocks(split, n, hold_budget, block, align) if holdout else [], block)


BYTES_PER_VALUE = 20  # peak memory per analysed value (one point's rows, their ranks, scratch): 16 measured


def _check_memory(n: int, width: int) -> None:
    """Refuse to analyse every character when one point's values would not fit in memory."""
    need, have = n * width * BYTES_PER_VALUE, _available_memory()
    if have is not None and need > have:
        raise RnnvizError(f"analysing all {n:,} characters needs about {need / 2**30:.1f} GiB and "
                          f"{have / 2**30:.1f} GiB is available; pass a number to --max-chars instead")


def _available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None: the check is skipped."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _points(d: Dump, path, spec: str | None) -> list[str]:
    wanted = d.select(spec)
    if not wanted:
        raise RnnvizError(f"{path}: the dump holds no recorded states to analyse")
    for p in wanted:
        if p not in d:
            raise RnnvizError(f"{path}: missing array {h5_path(p)} for recorded point {p}; the dump is damaged, "
                              f"record it again with rnnviz dump")
        if d[p].ndim != 2 or d[p].shape[0] != d.n_chars:
            raise RnnvizError(f"{path}: {h5_path(p)} has shape {d[p].shape}, expected ({d.n_chars}, H)")
    return wanted


def _text(d: Dump, path) -> tuple[str, pd.DataFrame]:
    if d.n_chars == 0:
        raise RnnvizError(f"{path}: the dump holds no text (0 characters); nothing to analyse")
    return d.text, d.sources


def analyze_dump(path, *, features=None, extra_features: tuple[Feature, ...] = (), points: str | None = None,
                 top: int = 5, shifts: int = 99, holdout: float = 0.0,
                 max_chars: int | None = DEFAULT_MAX_CHARS, contexts: int = 8, probe_chars: int = PROBE_CHARS,
                 probe_k: int = 5, store: bool = True, language: str = "auto", seed: int = 0) -> Analysis:
    """Rank the dump's units against text features (see module doc); ``store`` writes /analysis.

    ``features``: names of built-ins (default all); ``extra_features``: from
    :func:`rnnviz.features.regex_feature` or :func:`rnnviz.features.custom_feature`.
    ``points``: e.g. ``"c,h"`` or ``"layer1.c"`` (default: every recorded point).
    """
    with one_thread():
        return _analyze(Path(path), select_features(features, extra_features), points=points, top=top,
                        shifts=shifts, holdout=holdout, max_chars=max_chars, contexts=contexts,
                        probe_chars=probe_chars, probe_k=probe_k, store=store, language=language, seed=seed)


def _analyze(path: Path, feats: list[Feature], *, points, top, shifts, holdout, max_chars, contexts,
             probe_chars, probe_k, store, language, seed) -> Analysis:
    if not feats:
        raise RnnvizError("no features to rank: name built-ins with --features or add --feature NAME=REGEX")
    if not 0.0 <= holdout < 1.0:
        raise RnnvizError(f"--holdout must be a fraction in [0, 1), found {holdout}")
    if top < 1 or shifts < 0 or (max_chars is not None and max_chars < BLOCK):
        raise RnnvizError(f"expected top >= 1, shifts >= 0 and max-chars >= {BLOCK}; found "
                          f"{top}, {shifts}, {max_chars}")
    if store and path.exists() and not os.access(path, os.W_OK):
        raise RnnvizError(f"{path}: not writable, so /analysis cannot be stored; use --no-store")
    with open_dump(path) as d:
        text, sources = _text(d, path)
        names = _points(d, path, points)
        plan = _plan(d[names[0]], len(text), max_chars, holdout)
        if max_chars is None:
            _check_memory(len(text), max(d[p].shape[1] for p in names))
        pos, hold_pos = plan.positions(plan.rank_blocks), plan.positions(plan.hold_blocks)
        ti = TextIndex(text, sources, language)
        cache = {ft.name: feature_values(ti, ft) for ft in feats if ft.name not in BUILTIN}  # user code runs once
        values = np.empty((len(pos), len(feats)), np.float32)
        hold_values = np.empty((len(hold_pos), len(feats)), np.float32)
        for j, feat in enumerate(feats):
            v = cache[feat.name] if feat.name in cache else feature_values(ti, feat)
            values[:, j], hold_values[:, j] = v[pos], v[hold_pos]
        kinds = [feat.kind for feat in feats]
        fs = prepare_features(values, [ft.name for ft in feats], kinds)
        used_shifts = min(shifts, len(pos) // 20)     # fewer than ~20 characters per lag says little
        ranker = Ranker(fs, shifts=used_shifts, null_top=top)
        hold = Ranker(prepare_features(hold_values, fs.names, kinds), shifts=0) if len(hold_pos) > 1 else None
        probe_at = np.unique(np.linspace(0, len(pos) - 1, min(probe_chars, len(pos))).astype(int))
        units, probe_x, sat, ctx = _scan_points(d, names, plan, ranker, hold, probe_at, contexts, seed)
    ranking = ranker.table()
    if hold is not None:
        ranking = ranking.merge(hold.table()[["feature", "unit", "score"]].rename(
            columns={"score": "holdout_score"}), on=["feature", "unit"], how="left")
    column = {u: i for i, u in enumerate(units)}
    ranked = {nm: [column[u] for u in g["unit"].head(max(PER_FEATURE, probe_k))]
              for nm, g in ranking.groupby("feature", sort=False)}
    valid = np.flatnonzero(fs.valid)
    probes = (probe_table(probe_x, values[probe_at][:, valid], [fs.names[j] for j in valid],
                          [kinds[j] for j in valid], units, ranked, k=probe_k, seed=seed)
              if len(valid) and len(probe_at) >= 16 else pd.DataFrame(columns=PROBE_COLUMNS))
    feature_df = pd.DataFrame({"name": fs.names, "kind": kinds, "description": [ft.description for ft in feats],
                               "mean": values.mean(axis=0), "scored": fs.valid})
    info = {"path": str(path), "n_chars": len(text), "analysed_chars": int(len(pos)),
            "blocks": len(plan.rank_blocks), "block": plan.block if len(plan.rank_blocks) > 1 else int(len(pos)),
            "holdout_chars": int(len(hold_pos)), "holdout": holdout, "points": names, "units": len(units),
            "shifts": used_shifts, "top": top, "z_bound": z_bound(len(units)), "max_chars": max_chars,
            "seed": seed, "stored": False}
    result = Analysis(ranking, pd.concat(sat, ignore_index=True) if sat else pd.DataFrame(columns=SATURATION_COLUMNS),
                      with_text(pd.concat(ctx, ignore_index=True), text), probes, feature_df, info)
    if store:
        _store(path, ti, feats, cache, result, plan)
        result.info["stored"] = True
    return result


def _scan_points(d: Dump, names, plan: _Plan, ranker: Ranker, hold: Ranker | None,
                 probe_at: np.ndarray, contexts: int, seed: int):
    """Read each point's analysed rows once and take from them all that needs the values."""
    pos = plan.positions(plan.rank_blocks)
    probe_x = np.empty((len(probe_at), sum(d[p].shape[1] for p in names)), np.float32)
    units, sat, ctx = [], [], []
    for p in names:
        x = d.rows(p, plan.rank_blocks)                              # (n, H)
        ps = ranker.add(p, x)
        layer, kind = parse_point(p)
        unit_names = [f"{p}[{i}]" for i in range(x.shape[1])]
        probe_x[:, len(units):len(units) + x.shape[1]] = x[probe_at]
        units += unit_names
        if kind in SATURATING:
            left, right = saturation(ps.keys)
            sat.append(pd.DataFrame({"unit": unit_names, "point": p, "layer": layer, "gate": kind,
                                     "index": np.arange(x.shape[1]), "frac_left": left, "frac_right": right}))
        ctx.append(_contexts(ps.keys, x, unit_names, pos, contexts, seed))
        if hold is not None:
            hold.add(p, d.rows(p, plan.hold_blocks))
    return units, probe_x, sat, ctx


def _contexts(keys, x, unit_names, pos, k, seed) -> pd.DataFrame:
    cols = np.arange(x.shape[1])[:, None]
    parts = []
    if k > 0:
        top, bottom = extremes(keys, k)
        parts += [context_rows(unit_names, "top", top, pos, x[top, cols]),
                  context_rows(unit_names, "bottom", bottom, pos, x[bottom, cols])]
    q = quantile_picks(keys, QUANTILES, seed=seed)
    parts.append(context_rows(unit_names, "quantile", q, pos, x[q, cols], QUANTILES))
    return pd.concat(parts, ignore_index=True)


def _store(path: Path, ti: TextIndex, feats, cache, result: Analysis, plan: _Plan) -> None:
    options = {k: v for k, v in result.info.items() if k not in ("path", "stored")}
    options.update(features=[ft.name for ft in feats], rank_blocks=plan.rank_blocks,
                   hold_blocks=plan.hold_blocks, rnnviz=__version__)
    try:
        d = open_dump(path, "r+")
    except DumpLocked:
        raise RnnvizError(f"{path}: open in another program (rnnviz serve?), so /analysis cannot be "
                          f"stored; close it, or use --no-store") from None
    with d:
        d.write_analysis(
            features=((ft.name, cache[ft.name] if ft.name in cache else feature_values(ti, ft), ft.kind,
                       ft.description) for ft in feats),     # one at a time: each is N floats
            # Context positions only: the text around them is in /text/codes (strings would double the group).
            tables={"ranking": result.ranking, "saturation": result.saturation,
                    "contexts": result.contexts[CONTEXT_COLUMNS], "probes": result.probes},
            options=options)


def export_ranking(ranking: pd.DataFrame, csv=None, parquet=None, force: bool = False) -> list[str]:
    """Write the ranking as CSV and/or Parquet (atomically; existing files only with ``force``)."""
    check_exports(csv, parquet, force)
    written = []
    for target, writer in ((csv, lambda df, p: df.to_csv(p, index=False)),
                           (parquet, lambda df, p: df.to_parquet(p, index=False))):
        if target is None:
            continue
        tmp = Path(f"{target}.partial")
        try:
            writer(ranking, tmp)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        written.append(str(target))
    return written


def check_exports(csv=None, parquet=None, force: bool = False) -> None:
    """Fail before a long analysis, not after it."""
    for target in (csv, parquet):
        if target is not None and Path(target).exists() and not force:
            raise RnnvizError(f"{target} exists; pass --force to overwrite it")
        if target is not None and not Path(target).resolve().parent.is_dir():
            raise RnnvizError(f"{target}: no such directory {Path(target).parent}")
    if parquet is not None:
        import importlib.util
        if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
            raise RnnvizError("--parquet needs pyarrow: pip install pyarrow (or pip install 'rnnviz[parquet]')")
