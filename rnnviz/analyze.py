"""``rnnviz analyze``: rank every unit of a dump against text features; store it in /analysis.

    result = analyze_dump("dumps/demo.h5")
    print(result.summary()); result.ranking.head()

By default every character is scored, exactly (see :mod:`rnnviz.exact`): the states are
streamed a block of characters at a time, one recording point after another, so memory
does not grow with the text beyond the features of each character. ``max_chars=N`` is a
quick look at N characters in equal blocks spread over the text; the summary, the CSV
(``analysed_chars``) and /analysis say so. Features are computed for the whole text and
stored whole.

Writing is safe: everything is computed with the file open read-only, then the new
group is written as ``/analysis_partial`` and renamed over ``/analysis``; a failure
removes the partial group and never touches ``/text``, ``/states`` or ``/predictions``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from . import __version__
from .contexts import CONTEXT_COLUMNS, with_text
from .dumpfile import Dump, DumpLocked, open_dump
from .errors import RnnvizError
from .exact import FeatureColumns
from .features import BUILTIN, Feature, TextIndex, feature_values, select_features
from .language import summarize
from .names import h5_path, parse_point
from .options import AnalyzeOptions
from .outputs import check_space, check_writable, disk_full
from .rank import one_thread, z_bound
from .stream import rank_columns, scan_point
from .ranking import build_tables, hold_column, null_candidates
from .unitsets import PARTS, SET_COLUMNS, Inputs, check_parts, part_bounds, set_columns, set_lines, unit_sets

BLOCK = 512                 # characters per sampled block (--max-chars): HDF5 reads of fewer rows cost more per row


@dataclass
class Analysis:
    """What ``rnnviz analyze`` computes; every table is a pandas DataFrame."""
    ranking: pd.DataFrame      # one row per (feature, unit), see rnnviz.ranking
    saturation: pd.DataFrame   # one row per sigmoid gate unit
    contexts: pd.DataFrame     # per unit: top, bottom and quantile characters with their text
    sets: pd.DataFrame         # one row per (feature, k): the best k units together, see rnnviz.unitsets
    features: pd.DataFrame     # name, kind, description, mean on the analysed characters, scored
    info: dict = field(default_factory=dict)
    units: pd.DataFrame | None = None   # one row per unit: percentiles, mean, sd, inf/NaN count

    def summary(self, top: int = 5) -> str:
        """The table ``rnnviz analyze`` prints: per feature, the best units with their scores."""
        i = self.info
        if i["sampled"]:
            chars = (f"sampled {i['analysed_chars']:,} of {i['n_chars']:,} characters ({i['blocks']} blocks "
                     f"of {i['block']} spread over the text; without --max-chars every one is scored)")
        elif i["holdout_chars"]:
            chars = f"all {i['analysed_chars']:,} characters before the held-out end"
        else:
            chars = f"all {i['analysed_chars']:,} characters, exactly"
        lines = [f"Ranked {i['units']:,} units ({_points_summary(i['points'])}) against {len(self.features)} "
                 f"features on {chars}.",
                 f"Null: {i['shifts']} circular shifts of each feature over those characters, for its top "
                 f"{i['top']} units; "
                 f"'yes' = beats it (|z| >= {i['z_bound']:.2f}, Bonferroni over {i['units']:,} units at "
                 f"alpha 0.01, and stronger than every shift)."]
        names, langs = zip(*i["languages"]) if i["languages"] else ((), ())
        lines.append(f"Languages ({'chosen with --language' if i['language'] != 'auto' else 'auto'}): "
                     f"{summarize(names, langs)}; tab stops every {i['tab_size']} columns.")
        if i["nonfinite_units"]:
            lines.append(f"{i['nonfinite_units']:,} units hold inf or NaN ({i['nonfinite_values']:,} values in all); "
                         f"each is scored on the characters where it is finite (column analysed_chars).")
        if i["holdout_chars"]:
            lines.append(f"holdout = the same score on the last {i['holdout']:.0%} of the text "
                         f"({i['holdout_chars']:,} characters analysed), not used for ranking.")
        if i["part_chars"]:
            f, s, t = i["part_chars"]
            lines.append(f"Best k units together: probes fitted on the first {f:,} analysed characters, units "
                         f"chosen on the next {s:,}, scored on the last {t:,} (test AUC for on/off features, r "
                         f"for the others; see rnnviz.unitsets).")
        head = (f"{'feature':<18}{'kind':<11}{'rank':>4}  {'unit':<19}{'score':>7}{'AUC/rho':>8}{'r':>8}"
                f"{'null z':>8}{'null p':>8}  {'beats null':<11}" + ("holdout" if i["holdout_chars"] else ""))
        lines += ["", head, "-" * len(head)]
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
            lines += [f"{'':<35}{line}" for line in set_lines(self.sets, feat.name)]
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


def analyze_dump(path, options: AnalyzeOptions | None = None, **overrides) -> Analysis:
    """Rank the dump's units against text features (see module doc); ``store`` writes /analysis.

    ``options`` (rnnviz.options.AnalyzeOptions, or its fields as keywords):
    ``features``: names of built-ins (default all); ``extra_features``: from
    :func:`rnnviz.features.regex_feature` or :func:`rnnviz.features.custom_feature`.
    ``points``: e.g. ``"c,h"`` or ``"layer1.c"`` (default: every recorded point).
    ``max_chars``: None (the default) scores every character; a number scores that many, in
    blocks spread over the text (a quick look: the summary says it was sampled).
    ``language``: auto (per source, from its extension or else its content), python, c or
    text; ``tab_size``: tab stops for indentation and position in the line.
    ``parts``: the fit, select and test fractions of the analysed characters for the best k
    units together (:mod:`rnnviz.unitsets`; ``None``: no sets); ``all_units``: also the probe
    on every unit (a (U, U) product over the fit part).
    """
    o = replace(options or AnalyzeOptions(), **overrides)
    rest = {f.name: getattr(o, f.name) for f in fields(o) if f.name not in ("features", "extra_features")}
    with one_thread():
        return _analyze(Path(path), select_features(o.features, o.extra_features), **rest)


def _feature_columns(ti: TextIndex, feats, cache, pos: np.ndarray | None, fit: int = 0):
    """FeatureColumns of the analysed characters (``pos``; None = all), built one feature at a
    time; with ``fit``, also those of the first ``fit`` of them and the (n, K) float32 values."""
    y = np.empty((ti.n if pos is None else len(pos), len(feats) if fit else 0), np.float32)
    fit_cols = []

    def columns():
        for j, feat in enumerate(feats):
            v = cache[feat.name] if feat.name in cache else feature_values(ti, feat)
            v = v if pos is None else v[pos]
            if fit:
                y[:, j] = v
                fit_cols.append(v[:fit])
            yield v
    names, kinds = [ft.name for ft in feats], [ft.kind for ft in feats]
    fc = FeatureColumns.build(columns(), names, kinds)
    return fc, (FeatureColumns.build(fit_cols, names, kinds) if fit else None), y


def _analyze(path: Path, feats: list[Feature], *, points, top, shifts, holdout, max_chars, contexts,
             parts, all_units, store, language, tab_size, seed) -> Analysis:
    if not feats:
        raise RnnvizError("no features to rank: name built-ins with --features or add --feature NAME=REGEX")
    if not 0.0 <= holdout < 1.0:
        raise RnnvizError(f"--holdout must be a fraction in [0, 1), found {holdout}")
    parts = check_parts(parts) if parts else None
    if top < 1 or shifts < 0 or (max_chars is not None and max_chars < BLOCK):
        raise RnnvizError(f"expected top >= 1, shifts >= 0 and max-chars >= {BLOCK}; found "
                          f"{top}, {shifts}, {max_chars}")
    if store and path.exists() and not os.access(path, os.W_OK):
        raise RnnvizError(f"{path}: not writable, so /analysis cannot be stored; use --no-store")
    with open_dump(path) as d:
        text, sources = _text(d, path)
        names = _points(d, path, points)
        plan = _plan(d[names[0]], len(text), max_chars, holdout)
        n = sum(length for _, length in plan.rank_blocks)
        every = n + sum(length for _, length in plan.hold_blocks) == len(text)
        pos = None if n == len(text) else plan.positions(plan.rank_blocks)
        ti = TextIndex(text, sources, language, tab_size)
        cache = {ft.name: feature_values(ti, ft) for ft in feats if ft.name not in BUILTIN}  # user code runs once
        fit_n = part_bounds(n, parts)[0] if parts else 0
        fc, fit_fc, y = _feature_columns(ti, feats, cache, pos, fit_n)
        hold_fc = _feature_columns(ti, feats, cache, plan.positions(plan.hold_blocks))[0] if plan.hold_blocks else None
        ti.forget()                            # (N,) helpers: the scans' memory; _store builds them again
        used_shifts = min(shifts, n // 20)     # fewer than ~20 characters per lag says little
        readers = {p: d.reader(p, plan.rank_blocks) for p in names}
        results, keep_luts, hold_scores, buffers = [], {}, [], {}
        for p in names:
            ds = d[p]
            res = scan_point(p, readers[p], n, ds.shape[1], ds.dtype, fc, contexts=contexts, fit=fit_fc,
                             buffers=buffers)
            results.append(res)
            keep_luts = null_candidates(results, keep_luts, top)
            res.luts = {}
            if hold_fc is not None:
                hold = scan_point(p, d.reader(p, plan.hold_blocks), hold_fc.n, ds.shape[1], ds.dtype,
                                  hold_fc, contexts=0, buffers=buffers)
                hold_scores.append(hold.scores.score)
        del buffers
        tables = build_tables(results, fc, n, top=top, shifts=used_shifts,
                              null_columns=lambda p, cols: rank_columns(readers[p], n, cols, keep_luts.get(p)))
        units = tables.units["unit"].tolist()
        sets = pd.DataFrame(columns=SET_COLUMNS)
        if fit_fc is not None:
            valid = np.flatnonzero(fc.valid)
            sets = unit_sets(Inputs([readers[p] for p in names], [len(r.scores.score) for r in results], y[:, valid],
                                    [fc.names[j] for j in valid], [fc.kinds[j] for j in valid],
                                    np.concatenate([r.fit_scores.score[:, valid] for r in results]),
                                    np.nan_to_num(tables.units["mean"].to_numpy(float))),
                             units, parts=parts, all_units=all_units, seed=seed)
    ranking = tables.ranking
    if hold_scores:
        ranking["holdout_score"] = hold_column(ranking, tables.units["unit"].tolist(),
                                               np.concatenate(hold_scores), fc.names)
    if fit_fc is not None:
        fit_score = np.concatenate([r.fit_scores.score for r in results])
        ranking = ranking.join(set_columns(ranking, units, fit_score, fc.names, sets))
    feature_df = pd.DataFrame({"name": fc.names, "kind": fc.kinds, "description": [ti.describe(ft) for ft in feats],
                               "mean": fc.mean, "scored": fc.valid})
    positions = (lambda i: i) if pos is None else (lambda i: pos[i])
    info = {"path": str(path), "n_chars": len(text), "analysed_chars": int(n), "sampled": not every,
            "blocks": len(plan.rank_blocks), "block": plan.block if not every else int(n),
            "holdout_chars": int(sum(length for _, length in plan.hold_blocks)), "holdout": holdout,
            "points": names, "units": len(units), "shifts": used_shifts, "top": top,
            "z_bound": z_bound(len(units)), "max_chars": max_chars, "seed": seed, "stored": False,
            "language": language, "languages": [[nm, lang] for nm, lang in zip(ti.names, ti.languages)],
            "tab_size": ti.tab_size, "parts": list(parts) if parts else None,
            "part_chars": _part_chars(n, parts), "all_units": bool(all_units),
            "nonfinite_units": int((tables.units["nonfinite"] > 0).sum()),
            "nonfinite_values": int(tables.units["nonfinite"].sum())}
    result = Analysis(ranking, tables.saturation, with_text(tables.contexts(positions), text), sets,
                      feature_df, info, tables.units)
    if store:
        _store(path, ti, feats, cache, result, plan)
        result.info["stored"] = True
    return result


def _part_chars(n: int, parts) -> list[int] | None:
    if not parts:
        return None
    f, s = part_bounds(n, parts)
    return [f, s - f, n - s]


def _store(path: Path, ti: TextIndex, feats, cache, result: Analysis, plan: _Plan) -> None:
    options = {k: v for k, v in result.info.items() if k not in ("path", "stored")}
    options.update(features=[ft.name for ft in feats], rank_blocks=plan.rank_blocks,
                   hold_blocks=plan.hold_blocks, rnnviz=__version__)
    rows = len(result.ranking) + len(result.contexts) + len(result.saturation)
    check_space(path, 4 * ti.n * len(feats) + 200 * rows, "/analysis")
    try:
        d = open_dump(path, "r+")
    except DumpLocked:
        raise RnnvizError(f"{path}: open in another program (rnnviz serve?), so /analysis cannot be "
                          f"stored; close it, or use --no-store") from None
    with disk_full(path), d:
        d.write_analysis(
            features=((ft.name, cache[ft.name] if ft.name in cache else feature_values(ti, ft), ft.kind,
                       ti.describe(ft)) for ft in feats),     # one at a time: each is N floats
            # Context positions only: the text around them is in /text/codes (strings would double the group).
            tables={"ranking": result.ranking, "saturation": result.saturation,
                    "contexts": result.contexts[CONTEXT_COLUMNS], "sets": result.sets,
                    "units": result.units},
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
            with disk_full(target):
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
        if target is not None:
            check_writable(Path(target).resolve().parent, str(target))
    if parquet is not None:
        import importlib.util
        if importlib.util.find_spec("pyarrow") is None and importlib.util.find_spec("fastparquet") is None:
            raise RnnvizError("--parquet needs pyarrow: pip install pyarrow (or pip install 'rnnviz[parquet]')")
