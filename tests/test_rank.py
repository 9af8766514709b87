"""Unit scores against exact references, planted units, and a null that respects autocorrelation."""
import numpy as np
import pandas as pd
import pytest
from dumpfactory import ar1

from rnnviz.errors import RnnvizError
from rnnviz.rank import (fp16_keys, null_scores, prepare_features, rank_units, score_point, shift_plan,
                         transpose, unit_midranks)


def exact_auc(x, f):
    pos, neg = x[f == 1], x[f == 0]
    return (pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean()


def runs(rng, n, mean_length):
    """A binary feature made of random on/off runs (like 'inside quotes')."""
    lengths = rng.geometric(1 / mean_length, size=n)
    values = np.repeat(np.arange(len(lengths)) % 2, lengths)[:n]
    return values.astype(float)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
def test_scores_match_exact_references(dtype):
    rng = np.random.default_rng(0)
    n = 2000
    x = np.column_stack([
        np.tanh(rng.standard_normal(n)),              # h-like
        np.round(rng.random(n), 1),                   # many ties
        rng.standard_normal(n) * 30,                  # c-like, wide: shares ranks between fp16 steps
        1 / (1 + np.exp(-4 * rng.standard_normal(n))),  # gate, saturated
    ]).astype(dtype)
    f = (rng.random(n) < 0.3).astype(float)
    g = np.floor(rng.random(n) * 6) + x[:, 0].astype(float)    # continuous, related to unit 0
    ps = score_point(x, prepare_features(np.column_stack([f, g]), ["b", "c"], ["binary", "continuous"]))
    xd = x.astype(np.float64)
    # float16 values are ranked exactly while a unit spans <= 16384 float16 steps (unit 1), else
    # neighbouring steps share a rank; float32 values are rounded to float16 (~5e-4 relative) first.
    tol = 2e-3 if dtype == np.float32 else 1e-4
    for u in range(x.shape[1]):
        slack = 2e-3 if u == 2 else 1e-6 if (u == 1 and dtype == np.float16) else tol
        assert abs(ps.auc[u, 0] - max(exact_auc(xd[:, u], f), 1 - exact_auc(xd[:, u], f))) < slack
        assert np.sign(ps.score[u, 0]) == np.sign(exact_auc(xd[:, u], f) - 0.5)
        assert abs(ps.r[u, 0] - np.corrcoef(xd[:, u], f)[0, 1]) < 1e-5            # point-biserial
        assert abs(ps.r[u, 1] - np.corrcoef(xd[:, u], g)[0, 1]) < 1e-5            # Pearson
        rho = np.corrcoef(pd.Series(xd[:, u]).rank(), pd.Series(g).rank())[0, 1]  # Spearman = Pearson of average ranks
        assert abs(ps.rho[u, 1] - rho) < slack and ps.score[u, 1] == ps.rho[u, 1]
    assert np.isnan(ps.rho[:, 0]).all() and np.isnan(ps.auc[:, 1]).all()


def test_midranks_are_exact_for_float16_and_close_when_shared():
    rng = np.random.default_rng(1)
    narrow = np.round(rng.random((3000, 1)) * 50).astype(np.float16)           # ties everywhere
    wide = (rng.standard_normal((3000, 1)) * 1000).astype(np.float16)           # > 16384 fp16 steps
    for x, tol in ((narrow, 0), (wide, 3)):
        ranks, sd = unit_midranks(transpose(fp16_keys(x)))
        exact = pd.Series(x[:, 0].astype(float)).rank().to_numpy()
        assert np.abs(ranks[0] - exact).max() <= tol
        assert abs(sd[0] - exact.std()) < 0.01 * exact.std()


def test_planted_units_rank_first_and_beat_the_null():
    rng = np.random.default_rng(2)
    n = 20000
    quotes = runs(rng, n, 60)
    line_pos = np.concatenate([np.arange(k) for k in rng.integers(5, 80, n)])[:n].astype(float)
    acts = ar1(rng, n, 24, phi=0.98)
    acts[:, 3] += 3 * quotes                                     # on exactly inside 'quotes'
    acts[:, 7] = -np.tanh(line_pos / 30) + 0.3 * acts[:, 7]     # counts along the line, with a minus
    feats = pd.DataFrame({"quotes": quotes, "line_pos": line_pos})
    ranking = rank_units({"layer0.c": acts.astype(np.float16)}, feats, kinds={"line_pos": "continuous"})
    best = ranking.groupby("feature").head(1).set_index("feature")
    assert best.loc["quotes", "unit"] == "layer0.c[3]" and best.loc["quotes", "beats_null"]
    assert best.loc["quotes", "auc"] > 0.95
    assert best.loc["line_pos", "unit"] == "layer0.c[7]" and best.loc["line_pos", "score"] < -0.6
    assert best.loc["line_pos", "beats_null"] and best.loc["line_pos", "point"] == "layer0.c"
    assert ranking.groupby("feature")["beats_null"].sum().to_dict() == {"quotes": 1, "line_pos": 1}


def test_a_feature_no_unit_tracks_beats_no_null_although_iid_stats_would_flag_it():
    rng = np.random.default_rng(3)
    n = 20000
    acts = ar1(rng, n, 32, phi=0.99)
    feats = pd.DataFrame({"coin": runs(rng, n, 300), "drift": np.cumsum(rng.standard_normal(n))})
    ranking = rank_units(acts.astype(np.float32), feats)
    top = ranking.groupby("feature").head(1)
    # An iid test (z = r sqrt(n)) would call these chance correlations highly significant...
    assert (top["r"].abs() * np.sqrt(n) > 5).all()
    # ...the circular-shift null knows both series are slow.
    assert not ranking["beats_null"].any()
    assert top["null_z"].notna().all() and (top["null_z"].abs() < 4).all()


def test_shifted_null_at_lag_zero_is_the_score():
    rng = np.random.default_rng(4)
    m, d, lags = shift_plan(9900, 99)
    n = m * d
    x = rng.standard_normal((n, 3)).astype(np.float16)
    f = runs(rng, n, 20)
    fs = prepare_features(f[:, None], ["f"], ["binary"])
    ps = score_point(x, fs)
    ranks, sd = unit_midranks(transpose(ps.keys))
    observed, null = null_scores(ranks, sd, fs.w[:, 0], True, 99)
    assert np.allclose(observed, ps.score[:, 0], atol=1e-6)
    assert null.shape == (3, 99) and len(set(lags)) == 99 and lags.min() * d >= 0.05 * n


def test_constant_features_and_units_are_not_scored():
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.standard_normal(500), np.ones(500)])
    ranking = rank_units(pd.DataFrame(x, columns=["a", "b"]), pd.DataFrame({"flat": np.zeros(500),
                                                                            "ok": rng.random(500)}))
    assert ranking[ranking["feature"] == "flat"]["score"].isna().all()
    ok = ranking[ranking["feature"] == "ok"].set_index("unit")
    assert np.isnan(ok.loc["b", "score"]) and np.isfinite(ok.loc["a", "score"])
    assert ok["rank"].tolist() == [1, 2] and ok.index.tolist() == ["a", "b"]     # NaN ranks last


def test_mismatched_rows_are_a_clear_error():
    with pytest.raises(RnnvizError, match="10 rows of activations for 12 rows of features"):
        rank_units(np.zeros((10, 2)), pd.DataFrame({"f": np.arange(12.0)}))
