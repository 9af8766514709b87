"""rnnviz's best k units together against a peer's way of choosing units: NeuroX's.

NeuroX (Dalvi et al. 2019) fits one elastic-net logistic probe on every unit and orders
the units by the absolute value of their weights. Here that probe is scikit-learn's
``LogisticRegression(l1_ratio=0.5, solver="saga")`` on all units,
standardised on the fit part; its strength C is chosen from 10 log-spaced values in
[1e-3, 1e2] by the select part's AUC. Both orderings then go through rnnviz's own probe
(:func:`rnnviz.unitsets.score_sets`: a ridge probe fitted on the fit part, AUC on the test
part), on rnnviz's split (fit 60% / select 20% / test 20%, contiguous), so only the choice
of units differs. It also prints the mean |correlation| between the units of each top 10
(on the fit part): copies of one another add little.

    rnnviz demo --no-browser     # makes dumps/demo.h5 (Ctrl-C once it serves the page)
    python benchmarks/neurox_baseline.py dumps/demo.h5 --feature in_string

Needs scikit-learn (`pip install scikit-learn`; rnnviz itself does not). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np

from rnnviz.analyze import analyze_dump
from rnnviz.dumpfile import open_dump
from rnnviz.features import TextIndex, feature_values, select_features
from rnnviz.setprobe import MAX_K, test_score
from rnnviz.unitsets import PARTS, part_bounds, score_sets

MAX_ITER = 20       # saga epochs per C, each C starting from the previous one's weights (NeuroX trains 10)


def load(path: str, feature: str):
    """(n, U) float16 values of every unit, their names, the feature's values and kind."""
    with open_dump(path) as d:
        names = d.select(None)
        x = np.concatenate([d[p][:] for p in names], axis=1)
        units = [f"{p}[{i}]" for p in names for i in range(d[p].shape[1])]
        ti = TextIndex(d.text, d.sources, "auto", 8)
        feat = select_features([feature], ())[0]
        return x, units, feature_values(ti, feat), feat.kind


def neurox_order(x: np.ndarray, y: np.ndarray, f: int, s: int, cs) -> tuple[np.ndarray, float, float, list]:
    """Units by |weight| of the elastic-net probe whose C scores best on the select part;
    that C, the probe's test AUC on all units, and (C, select AUC, non-zero weights) per C."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    xf = x[:f].astype(np.float32)
    mu, sd = xf.mean(0), xf.std(0)
    sd[sd == 0] = 1.0
    xf = (xf - mu) / sd
    xs = (x[f:s].astype(np.float32) - mu) / sd
    best, trace = None, []
    # From the strongest penalty to the weakest, each fit starting from the previous weights.
    probe = LogisticRegression(l1_ratio=0.5, solver="saga", max_iter=MAX_ITER, tol=1e-3, warm_start=True)
    for c in sorted(cs):
        t = time.time()
        probe.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.simplefilter("ignore", FutureWarning)
            probe.fit(xf, y[:f])
        auc = test_score(probe.decision_function(xs)[:, None], y[f:s], True)[0]
        trace.append((float(c), float(auc), int((probe.coef_ != 0).sum()), int(probe.n_iter_[0])))
        print(f"  C = {c:.4g}: select AUC {auc:.4f}, {trace[-1][2]} units with a non-zero weight, "
              f"{trace[-1][3]} epochs, {time.time() - t:.0f} s", flush=True)
        if best is None or auc > best[0]:
            best = (auc, c, probe.coef_.copy(), probe.intercept_.copy())
            print("    its 16 largest |weights|: " + " ".join(map(str, np.argsort(-np.abs(probe.coef_[0]))[:16])),
                  flush=True)
    _, c, coef, intercept = best
    probe.coef_, probe.intercept_ = coef, intercept
    xt = (x[s:].astype(np.float32) - mu) / sd
    test = test_score(probe.decision_function(xt)[:, None], y[s:], True)[0]
    return np.argsort(-np.abs(probe.coef_[0]), kind="stable"), float(c), float(test), trace


def mean_abs_corr(x: np.ndarray, cols) -> float:
    """Mean |Pearson r| over the pairs of ``cols``."""
    c = np.corrcoef(x[:, cols].astype(np.float64).T)
    k = len(cols)
    return float(np.nanmean(np.abs(c[~np.eye(k, dtype=bool)])))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump")
    ap.add_argument("--feature", default="in_string")
    args = ap.parse_args()
    t0 = time.time()
    x, units, v, kind = load(args.dump, args.feature)
    if kind != "binary":
        raise SystemExit(f"{args.feature} is {kind}; NeuroX's logistic probe needs an on/off feature")
    y = (v != 0).astype(np.int64)
    n = len(y)
    f, s = part_bounds(n)
    print(f"{args.dump}: {n:,} characters, {len(units):,} units; fit {f:,}, select {s - f:,}, test {n - s:,}")
    t = time.time()
    order, c, l1_test, trace = neurox_order(x, y, f, s, np.logspace(-3, 2, 10))
    t_neurox = time.time() - t
    t = time.time()
    res = analyze_dump(args.dump, features=[args.feature], store=False, shifts=0, parts=PARTS)  # sets are opt-in
    t_sets = time.time() - t
    sets = res.sets.set_index("k")
    col = {u: i for i, u in enumerate(units)}
    greedy = [col[u] for u in sets["units"].iloc[-1].split()]
    top = [col[u] for u in sets["top_unit"] if u]
    ks = list(range(1, MAX_K + 1))
    neurox = score_sets(x, y, True, [order[:k] for k in ks])
    check = score_sets(x, y, True, [greedy[:k] for k in ks])
    print(f"\nNeuroX-style probe: C = {c:.4g} chosen on the select part; on all units its test AUC is {l1_test:.4f}")
    print(f"rnnviz's probe on all units: test AUC {sets['all_units'].iloc[0]:.4f}\n")
    print(f"{'k':>3}  {'best k together':>16}  {'NeuroX order':>13}  {'top k alone':>12}  {'random k':>9}")
    for k in ks:
        print(f"{k:>3}  {sets.loc[k, 'greedy']:>16.4f}  {neurox[k - 1]:>13.4f}  {sets.loc[k, 'top_k']:>12.4f}  "
              f"{sets.loc[k, 'random_k']:>9.4f}")
    fit = x[:f]
    corr = {"best k together": mean_abs_corr(fit, greedy[:10]), "NeuroX order": mean_abs_corr(fit, order[:10]),
            "top k alone": mean_abs_corr(fit, top[:10])}
    print("\nmean |r| between the units of each top 10 (fit part): "
          + ", ".join(f"{k} {v:.3f}" for k, v in corr.items()))
    print("top 10s: " + "; ".join(f"{nm}: {' '.join(units[i] for i in cols[:10])}"
                                   for nm, cols in (("best k together", greedy), ("NeuroX order", order),
                                                    ("top k alone", top))))
    print(f"\ntime: rnnviz analyze of this feature (every unit ranked, the sets) {t_sets:.0f} s; "
          f"the NeuroX-style probe over 10 C {t_neurox:.0f} s; all {time.time() - t0:.0f} s")
    print(json.dumps({"feature": args.feature, "n": n, "parts": [f, s - f, n - s], "units": len(units),
                      "C": c, "neurox_all_units_test_auc": l1_test, "trace": trace,
                      "neurox_order": [units[i] for i in order[:MAX_K]],
                      "greedy": list(sets["greedy"]), "greedy_rescored": list(check), "neurox": list(neurox),
                      "top_k": list(sets["top_k"]), "random_k": list(sets["random_k"]),
                      "all_units": float(sets["all_units"].iloc[0]), "mean_abs_corr_top10": corr,
                      "seconds": {"sets": t_sets, "neurox": t_neurox}}))


if __name__ == "__main__":
    main()
