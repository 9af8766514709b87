"""Check a stored `rnnviz analyze` ranking against an independent scorer.

For every unit of the dump (its whole column in memory) and every feature stored in
/analysis/features, scipy's ``rankdata`` midranks give ROC-AUC (ties counting half) for
binary features and Spearman's rho (the Pearson correlation of midranks) for the others,
on all characters where the unit is finite. None of rnnviz's scoring code is used. It
prints, per feature, the best unit and score from both, and the largest difference over
every (unit, feature); the last line is one JSON object.

    rnnviz analyze dumps/demo.h5
    python benchmarks/analyze_reference.py dumps/demo.h5
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from scipy.stats import rankdata


def reference_scores(columns, features: dict[str, np.ndarray], kinds: dict[str, str]) -> dict:
    """{feature: (U,) signed scores}: 2*AUC-1 or rho; ``columns`` yields (name, (N,) values)."""
    names = list(features)
    out = {nm: [] for nm in names}
    units = []
    franks = {nm: rankdata(f) for nm, f in features.items() if kinds[nm] != "binary"}
    for unit, x in columns:
        units.append(unit)
        x = x.astype(np.float64)
        keep = np.isfinite(x)
        r = rankdata(x[keep])
        for nm in names:
            f = features[nm][keep]
            if kinds[nm] == "binary":
                pos = f != 0
                npos, nneg = int(pos.sum()), int((~pos).sum())
                if npos == 0 or nneg == 0 or np.ptp(r) == 0:
                    out[nm].append(np.nan)
                    continue
                auc = (r[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg)
                out[nm].append(2 * auc - 1)
            else:
                s = franks[nm][keep] if keep.all() else rankdata(f)
                out[nm].append(np.nan if np.ptp(r) == 0 or np.ptp(s) == 0 else np.corrcoef(r, s)[0, 1])
    return units, {nm: np.array(v) for nm, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    args = ap.parse_args()
    import rnnviz
    with rnnviz.open(args.dump) as d:
        if d.analysis is None:
            sys.exit(f"{args.dump} has no /analysis: run `rnnviz analyze {args.dump}` first")
        ranking = d.analysis.table("ranking")
        options = d.analysis.options
        if options.get("sampled") or options.get("analysed_chars") != d.n_chars:
            sys.exit(f"the stored analysis scored {options.get('analysed_chars')} of {d.n_chars} characters; "
                     f"run the default `rnnviz analyze` (every character) first")
        kinds = d.analysis.feature_kinds
        features = {nm: d.analysis.feature(nm)[()].astype(np.float64) for nm in kinds}

        def columns():
            for point in d.points:
                block = d[point][()]                       # (N, H): one point in memory at a time
                for i in range(block.shape[1]):
                    yield f"{point}[{i}]", block[:, i]
        units, ref = reference_scores(columns(), features, kinds)
    stored = ranking.set_index(["feature", "unit"])["score"]
    worst, report = 0.0, {}
    print(f"{'feature':<17}{'rnnviz best':<18}{'score':>9}   {'reference best':<18}{'score':>9}")
    for nm, scores in ref.items():
        mine = stored.loc[nm].reindex(units).to_numpy()
        both = np.isfinite(scores) & np.isfinite(mine)
        assert (np.isfinite(scores) == np.isfinite(mine)).all(), f"{nm}: NaN in one and not the other"
        diff = float(np.abs(scores[both] - mine[both]).max()) if both.any() else 0.0
        worst = max(worst, diff)
        ours = ranking[ranking["feature"] == nm].iloc[0]
        best = int(np.nanargmax(np.abs(scores)))
        report[nm] = {"rnnviz": [ours["unit"], float(ours["score"])], "reference": [units[best], float(scores[best])],
                      "max_abs_diff": diff}
        print(f"{nm:<17}{ours['unit']:<18}{ours['score']:>+9.5f}   {units[best]:<18}{scores[best]:>+9.5f}"
              f"{'' if ours['unit'] == units[best] else '   <- differs'}")
    same = all(v["rnnviz"][0] == v["reference"][0] for v in report.values())
    print(f"{len(units)} units x {len(ref)} features on all {len(features[next(iter(features))]):,} characters: "
          f"same best unit for every feature: {same}; largest |score difference| {worst:.2e}")
    print(json.dumps({"same_best_units": same, "max_abs_diff": worst, "features": report}))


if __name__ == "__main__":
    main()
