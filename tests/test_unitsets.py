"""The best k units together (rnnviz.unitsets) through the real analysis of real dumps."""
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from dumpfactory import ar1, write_synthetic_dump

from rnnviz.analyze import analyze_dump
from rnnviz.cli import cli
from rnnviz.dumpfile import open_dump
from rnnviz.exact import FeatureColumns
from rnnviz.features import compute_features
from rnnviz.stream import scan_point
from rnnviz.setprobe import RIDGE, Classes, greedy
from rnnviz.unitsets import part_bounds, score_sets

H = 8


@pytest.fixture(scope="module")
def copies(tmp_path_factory, stdlib_text_file):
    """in_string is read by layer0.c[1] and its exact copy layer1.h[4] (the strongest single
    units), and by layer1.c[6], weaker alone but with noise of its own."""
    text = stdlib_text_file.read_text()[:12000]
    y = compute_features(text)["in_string"].to_numpy()
    rng = np.random.default_rng(3)
    n = len(text)
    states = {f"layer{L}.{k}": 0.5 * ar1(rng, n, H, 0.9) for L in range(2) for k in ("c", "h")}
    noise = ar1(rng, n, 2, 0.9)
    copy = y + 0.9 * noise[:, 0]
    states["layer0.c"][:, 1] = copy
    states["layer1.h"][:, 4] = copy
    states["layer1.c"][:, 6] = y + 1.3 * noise[:, 1]
    path = tmp_path_factory.mktemp("dumps") / "copies.h5"
    write_synthetic_dump(path, text, states, dtype="float16")
    return path, text, y


@pytest.fixture(scope="module")
def copies_result(copies, tmp_path_factory):
    path = tmp_path_factory.mktemp("stored") / "copies.h5"
    shutil.copy(copies[0], path)
    return path, analyze_dump(path, features=["in_string", "line_pos"], shifts=9, parts=(0.6, 0.2, 0.2))


def test_greedy_takes_one_copy_and_the_independent_unit(copies_result):
    _, res = copies_result
    sets = res.sets[res.sets["feature"] == "in_string"].set_index("k")
    assert list(sets.loc[[1, 2], "top_unit"]) in (["layer0.c[1]", "layer1.h[4]"], ["layer1.h[4]", "layer0.c[1]"])
    first, second = sets.loc[2, "units"].split()
    assert first in ("layer0.c[1]", "layer1.h[4]") and second == "layer1.c[6]"
    # The second copy adds nothing on the test part; the independent unit does.
    assert sets.loc[2, "top_k"] == pytest.approx(sets.loc[1, "top_k"], abs=2e-3)
    assert sets.loc[2, "greedy"] > sets.loc[2, "top_k"] + 0.01
    assert sets.loc[2, "greedy"] > sets.loc[2, "random_k"] + 0.1
    assert list(sets.index) == list(range(1, 17))                # 1..16 with 32 units


def test_sets_are_stored_and_exported(copies_result, tmp_path):
    path, res = copies_result
    with open_dump(path) as d:
        stored = d.analysis.table("sets")
        ranking = d.analysis.table("ranking")
        options = d.analysis.options
    assert len(stored) == 2 * 16 and set(stored["feature"]) == {"in_string", "line_pos"}
    assert stored["metric"].tolist() == ["auc"] * 16 + ["r"] * 16
    n = res.info["analysed_chars"]
    assert options["part_chars"] == [round(0.6 * n), round(0.8 * n) - round(0.6 * n), n - round(0.8 * n)]
    # Every unit a greedy set took carries its k and that k's figures on its ranking row.
    took = ranking.dropna(subset=["set_k"]).sort_values(["feature", "set_k"])
    assert len(took) == 32
    row = took[(took["feature"] == "in_string") & (took["set_k"] == 2)].iloc[0]
    assert row["unit"] == "layer1.c[6]"
    assert row["set_test"] == pytest.approx(res.sets.query("feature == 'in_string' and k == 2")["greedy"].iloc[0])
    csv = tmp_path / "r.csv"
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_string", "--shifts", "0", "--no-store",
                                   "--parts", "60/20/20", "--csv", str(csv)])
    assert out.exit_code == 0, out.output
    assert "best k together" in out.output and "layer1.c[6]" in out.output
    df = pd.read_csv(csv)
    for col in ("fit_score", "fit_rank", "set_k", "set_test", "set_top_k", "set_random_k", "set_all_units"):
        assert col in df
    assert df.loc[df["set_k"] == 2, "unit"].tolist() == ["layer1.c[6]"]


def test_sets_come_from_the_features_own_scores(copies, tmp_path):
    """Asking for more features changes nothing in a feature's sets."""
    path = tmp_path / "d.h5"
    shutil.copy(copies[0], path)
    alone = analyze_dump(path, features=["in_string"], shifts=0, store=False, parts=(0.6, 0.2, 0.2)).sets
    many = analyze_dump(path, features=["in_string", "line_pos", "depth", "indent"], shifts=0, store=False, parts=(0.6, 0.2, 0.2)).sets
    pd.testing.assert_frame_equal(alone.reset_index(drop=True),
                                  many[many["feature"] == "in_string"].reset_index(drop=True))


def test_fit_scores_are_those_of_the_fit_part_alone(copies):
    path, text, y = copies
    feats = compute_features(text)
    n = len(text)
    f, _ = part_bounds(n)
    cols = ["in_string", "line_pos", "depth"]
    kinds = ["binary", "continuous", "ordinal"]
    fc = FeatureColumns.build([feats[c].to_numpy() for c in cols], cols, kinds)
    fit = FeatureColumns.build([feats[c].to_numpy()[:f] for c in cols], cols, kinds)
    with open_dump(path) as d:
        read = d.reader("layer1.c", [(0, n)])
        both = scan_point("layer1.c", read, n, H, np.float16, fc, contexts=0, fit=fit)
        alone = scan_point("layer1.c", d.reader("layer1.c", [(0, f)]), f, H, np.float16, fit, contexts=0)
    np.testing.assert_allclose(both.fit_scores.score, alone.scores.score, rtol=0, atol=1e-12)
    assert not np.allclose(both.scores.score, alone.scores.score)


def test_greedy_updates_match_a_direct_solve():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 12)) @ rng.standard_normal((12, 12))
    y = x[:, 2] - 0.5 * x[:, 7] + rng.standard_normal(3000)
    z = (x - x[:2000].mean(0)) / x[:2000].std(0)
    yc = y - y[:2000].mean()
    fxx, fxy = z[:2000].T @ z[:2000] / 2000, z[:2000].T @ yc[:2000] / 2000
    sxx, sxy, syy = z[2000:].T @ z[2000:], z[2000:].T @ yc[2000:], float(yc[2000:] @ yc[2000:])
    chosen, r2 = greedy(fxx, fxy, sxx, sxy, syy, max_k=5)
    for k in range(1, 6):
        s = chosen[:k]
        w = np.linalg.solve(fxx[np.ix_(s, s)] + RIDGE * np.eye(k), fxy[s])
        e = yc[2000:] - z[2000:, s] @ w
        assert r2[k - 1] == pytest.approx(1 - e @ e / syy, abs=1e-9)
        # and no other unit would have done better at that step
        for c in set(range(12)) - set(s):
            t = chosen[:k - 1] + [c]
            wt = np.linalg.solve(fxx[np.ix_(t, t)] + RIDGE * np.eye(k), fxy[t])
            et = yc[2000:] - z[2000:, t] @ wt
            assert et @ et >= e @ e - 1e-9


def test_score_sets_agrees_with_the_analysis(copies_result, copies):
    _, res = copies_result
    path, _, y = copies
    with open_dump(path) as d:
        names = d.select(None)
        x = np.concatenate([d[p][:] for p in names], axis=1)
        units = [f"{p}[{i}]" for p in names for i in range(d[p].shape[1])]
    col = {u: i for i, u in enumerate(units)}
    sets = res.sets[res.sets["feature"] == "in_string"]
    greedy_sets = [[col[u] for u in s.split()] for s in sets["units"]]
    np.testing.assert_allclose(score_sets(x, y, True, greedy_sets), sets["greedy"], atol=1e-4)


def test_greedy_separation_matches_a_direct_computation():
    """On/off features: each step takes the unit whose probe separates the classes best on
    the select part (d' of the probe's output), computed here from the values themselves."""
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4000, 10)) @ rng.standard_normal((10, 10))
    y = (x[:, 1] + 0.7 * x[:, 5] + rng.standard_normal(4000) > 0).astype(float)
    f = 2500
    z = (x - x[:f].mean(0)) / x[:f].std(0)
    yc = y - y[:f].mean()
    fxx, fxy = z[:f].T @ z[:f] / f, z[:f].T @ yc[:f] / f
    zs, ys = z[f:], y[f:]
    on = ys > 0
    cls = Classes(zs.mean(0), zs[on].mean(0) - zs[~on].mean(0), float(on.sum()), float((~on).sum()))
    chosen, dprime = greedy(fxx, fxy, zs.T @ zs, zs.T @ yc[f:], float(yc[f:] @ yc[f:]), max_k=4, classes=cls)

    def direct(s):
        w = np.linalg.solve(fxx[np.ix_(s, s)] + RIDGE * np.eye(len(s)), fxy[s])
        out = zs[:, s] @ w
        pooled = np.sqrt((((out[on] - out[on].mean()) ** 2).sum() + ((out[~on] - out[~on].mean()) ** 2).sum()) / len(out))
        return (out[on].mean() - out[~on].mean()) / pooled
    for k in range(1, 5):
        assert dprime[k - 1] == pytest.approx(direct(chosen[:k]), rel=1e-9)
        assert all(direct(chosen[:k - 1] + [c]) <= dprime[k - 1] + 1e-9 for c in set(range(10)) - set(chosen[:k]))


def test_without_all_units_the_sets_are_the_same(copies, copies_result, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(copies[0], path)
    res = analyze_dump(path, features=["in_string", "line_pos"], shifts=0, store=False, all_units=False, parts=(0.6, 0.2, 0.2))
    full = copies_result[1].sets
    assert res.sets["all_units"].isna().all() and full["all_units"].notna().all()
    assert res.sets["units"].tolist() == full["units"].tolist()
    np.testing.assert_allclose(res.sets["greedy"], full["greedy"], atol=1e-6)
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_string", "--shifts", "0", "--no-store",
                                   "--parts", "50/25/25"])
    assert out.exit_code == 0 and "probes fitted on the first 6,000 analysed characters" in out.output
    bad = CliRunner().invoke(cli, ["analyze", str(path), "--parts", "60/40"])
    assert bad.exit_code == 1 and "Error: --parts expects FIT/SELECT/TEST" in bad.output
