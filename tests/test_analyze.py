"""rnnviz analyze on dumps with planted units: ranking, the stored /analysis, the CLI, bad input."""
import hashlib
import json
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from dumpfactory import write_synthetic_dump

import rnnviz.analyze as analyze_mod
import rnnviz.dumpfile.groups as groups_mod
import rnnviz.dumpfile.tables as tables_mod
from rnnviz.analyze import analyze_dump
from rnnviz.cli import cli
from rnnviz.errors import RnnvizError
from rnnviz.dumpfile.tables import read_table
from rnnviz.features import compute_features, custom_feature

H = 16


def ar1(rng, shape, phi=0.98):
    out = np.empty(shape)
    out[0] = rng.standard_normal(shape[1])
    eps = rng.standard_normal(shape) * np.sqrt(1 - phi ** 2)
    for t in range(1, shape[0]):
        out[t] = phi * out[t - 1] + eps[t]
    return out


def coin(text):
    """A feature no unit tracks: random on/off runs, independent of the text."""
    rng = np.random.default_rng(7)
    return np.repeat(np.arange(len(text)) % 2, rng.geometric(1 / 200, len(text)))[:len(text)]


COIN = custom_feature("coin", coin, kind="binary", description="random runs")


@pytest.fixture(scope="module")
def planted(tmp_path_factory, stdlib_text_file):
    """Two Python sources; layer1.c[3] is on inside strings, layer0.h[5] counts along the line,
    layer1.h[7] integrates bracket depth, layer0.gate_f[2] is always open; the rest is slow noise."""
    text = stdlib_text_file.read_text()[:16000]
    sources = [("a.py", 9000), ("b.py", len(text) - 9000)]
    f = compute_features(text, sources=sources)
    rng = np.random.default_rng(0)
    n = len(text)
    states = {f"layer{L}.{k}": 0.5 * ar1(rng, (n, H)) for L in range(2) for k in ("c", "h", "gate_f")}
    states["layer1.c"][:, 3] += 2.5 * f["in_string"].to_numpy()
    states["layer0.h"][:, 5] = np.tanh(f["line_pos"].to_numpy() / 25) + 0.2 * states["layer0.h"][:, 5]
    states["layer1.h"][:, 7] += 0.8 * f["depth"].to_numpy()
    for L in range(2):
        states[f"layer{L}.gate_f"] = 1 / (1 + np.exp(-3 * states[f"layer{L}.gate_f"]))
    states["layer0.gate_f"][:, 2] = 1 / (1 + np.exp(-8 - states["layer0.gate_f"][:, 2]))
    path = tmp_path_factory.mktemp("dumps") / "planted.h5"
    write_synthetic_dump(path, text, states, sources=sources, dtype="float16")
    return path, text, f


@pytest.fixture(scope="module")
def result(planted, tmp_path_factory):
    path = tmp_path_factory.mktemp("stored") / "planted.h5"
    shutil.copy(planted[0], path)
    return path, analyze_dump(path, extra_features=(COIN,), holdout=0.2, parts=(0.6, 0.2, 0.2))


def states_digest(path) -> str:
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for name in ("text/codes", "states/layer0/c", "states/layer1/h", "predictions/loss"):
            h.update(f[name][()].tobytes())
    return h.hexdigest()


def test_planted_units_rank_first_and_beat_the_null(result):
    _, res = result
    best = res.ranking.groupby("feature").head(1).set_index("feature")
    for feature, unit in (("in_string", "layer1.c[3]"), ("line_pos", "layer0.h[5]"), ("depth", "layer1.h[7]")):
        assert best.loc[feature, "unit"] == unit
        assert best.loc[feature, "beats_null"] and best.loc[feature, "null_z"] > 4
        assert best.loc[feature, "holdout_score"] > 0.5           # confirmed on the last 20%
    assert not res.ranking.query("feature == 'coin'")["beats_null"].any()
    assert len(res.ranking) == 6 * H * len(res.features)
    assert res.info["analysed_chars"] + res.info["holdout_chars"] == res.info["n_chars"]


def test_sets_start_with_the_planted_unit(result):
    sets = result[1].sets.set_index(["feature", "k"])
    assert sets.loc[("in_string", 1), "unit"] == "layer1.c[3]" == sets.loc[("in_string", 1), "top_unit"]
    assert sets.loc[("in_string", 1), "greedy"] > 0.95 and sets.loc[("in_string", 5), "greedy"] > 0.95
    assert sets.loc[("in_string", 5), "random_k"] < 0.9
    assert sets.loc[("line_pos", 1), "unit"] == "layer0.h[5]"
    assert sets.loc[("line_pos", 1), "metric"] == "r" and sets.loc[("line_pos", 5), "greedy"] > 0.8


def test_saturation_and_contexts(result, planted):
    _, res = result
    _, text, feats = planted
    sat = res.saturation.set_index("unit")
    assert set(sat["gate"]) == {"gate_f"} and len(sat) == 2 * H
    assert sat.loc["layer0.gate_f[2]", "frac_right"] > 0.99 and sat.loc["layer0.gate_f[2]", "frac_left"] == 0
    top = res.contexts.query("unit == 'layer1.c[3]' and which == 'top'")
    assert len(top) == 8 and (feats["in_string"].to_numpy()[top["position"]] == 1).all()
    assert top["value"].is_monotonic_decreasing
    row = top.iloc[0]
    p = int(row["position"])
    assert row["before"] == text[max(0, p - 50):p] and row["char"] == text[p] and row["after"] == text[p + 1:p + 11]
    quant = res.contexts.query("unit == 'layer1.c[3]' and which == 'quantile'")
    assert quant["quantile"].tolist() == [0.1, 0.25, 0.5, 0.75, 0.9] and quant["value"].is_monotonic_increasing


def test_analysis_is_stored_as_documented(result):
    path, res = result
    with h5py.File(path, "r") as f:
        g = f["analysis"]
        ds = g["features/in_string"]
        assert ds.shape == (res.info["n_chars"],) and ds.dtype == np.float32 and ds.dims[0].label == "char"
        assert ds.attrs["kind"] == "binary" and "string" in ds.attrs["description"]
        assert g["features/coin"].attrs["kind"] == "binary"
        ranking = read_table(g["ranking"])
        for col in ("feature", "feature_kind", "unit", "point", "layer", "kind", "index", "score"):
            assert col in ranking
        assert ranking.equals(res.ranking) or ranking[["unit", "score"]].equals(res.ranking[["unit", "score"]])
        assert list(read_table(g["saturation"]).columns[:7]) == ["unit", "point", "layer", "gate", "index",
                                                                "frac_left", "frac_right"]
        assert list(read_table(g["contexts"]).columns) == ["unit", "which", "rank", "quantile", "position", "value"]
        assert len(read_table(g["sets"])) == 16 * res.features["scored"].sum()
        assert json.loads(g.attrs["options"])["holdout"] == 0.2 and g.attrs["created"]


def test_rerunning_replaces_the_analysis(planted, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(planted[0], path)
    before = states_digest(path)
    analyze_dump(path)
    analyze_dump(path, features=["depth"], points="layer1.h")
    with h5py.File(path, "r") as f:
        assert list(f["analysis/features"]) == ["depth"] and "analysis_partial" not in f
        assert set(read_table(f["analysis/ranking"])["point"]) == {"layer1.h"}
    assert states_digest(path) == before


def test_sampled_characters_agree_with_all_of_them(planted):
    path = planted[0]
    some = analyze_dump(path, max_chars=4096, store=False, features=["in_string", "line_pos", "depth"])
    every = analyze_dump(path, max_chars=None, store=False, features=["in_string", "line_pos", "depth"])
    assert some.info["analysed_chars"] == 4096 and some.info["blocks"] == 8
    assert every.info["analysed_chars"] == len(planted[1])
    for res in (some, every):
        assert res.ranking.groupby("feature").head(1)["unit"].tolist() == ["layer1.c[3]", "layer0.h[5]",
                                                                          "layer1.h[7]"]
    merged = some.ranking.merge(every.ranking, on=["feature", "unit"]).groupby("feature").head(1)
    assert (merged["score_x"] - merged["score_y"]).abs().max() < 0.15   # 8 blocks of 512 chars of 16000


def test_cli_prints_a_table_and_writes_the_ranking(planted, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(planted[0], path)
    csv = tmp_path / "ranking.csv"
    run = subprocess.run([sys.executable, "-m", "rnnviz", "analyze", str(path), "--top", "2", "--features", "in_string,depth",
                          "--feature", r"call=\w+\(", "--csv", str(csv), "--holdout", "0.25", "--parts", "60/20/20"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    header = next(line for line in lines if line.startswith("feature"))
    for col in ("rank", "unit", "score", "AUC/rho", "null z", "beats null", "holdout"):
        assert col in header
    string_row = next(line for line in lines if line.startswith("in_string"))
    assert "layer1.c[3]" in string_row and "yes" in string_row
    assert any("test AUC at k = 1, 2, 5, 10, 16: best k together" in line for line in lines)
    import pandas as pd
    table = pd.read_csv(csv)
    assert len(table) == 3 * 6 * H and set(table["feature"]) == {"in_string", "depth", "call"}
    again = subprocess.run([sys.executable, "-m", "rnnviz", "analyze", str(path), "--csv", str(csv)], capture_output=True, text=True)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr


def test_parquet_needs_pyarrow(planted, tmp_path):
    pytest.importorskip("pytest")
    if __import__("importlib").util.find_spec("pyarrow"):
        pytest.skip("pyarrow is installed")
    out = CliRunner().invoke(cli, ["analyze", str(planted[0]), "--parquet", str(tmp_path / "r.parquet")])
    assert out.exit_code == 1 and "needs pyarrow" in out.output and "Traceback" not in out.output


def _no_text(path):
    with h5py.File(path, "r+") as f:
        del f["text/codes"]
        f["text/codes"] = np.zeros(0, np.uint32)


def _missing_array(path):
    with h5py.File(path, "r+") as f:
        del f["states/layer1/gate_f"]


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _not_a_dump(path):
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)


@pytest.mark.parametrize("damage, args, message", [
    (_no_text, [], "holds no text"),
    (_missing_array, [], "missing array /states/layer1/gate_f"),
    (None, ["--points", "layer0.gate_i"], "layer0.gate_i not recorded in this dump"),
    (None, ["--feature", "bad=("], "bad regex for feature 'bad'"),
    (None, ["--features", "in_string,quotes"], "unknown feature 'quotes': valid built-in features are"),
    (None, ["--max-chars", "lots"], "--max-chars expects a number of characters"),
    (_not_a_dump, [], "expected an rnnviz dump"),
    (_truncate, [], "expected an rnnviz dump|truncated or damaged"),
])
def test_bad_input_is_one_line_and_leaves_the_dump_alone(planted, tmp_path, damage, args, message):
    path = tmp_path / "d.h5"
    shutil.copy(planted[0], path)
    if damage:
        damage(path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    out = CliRunner().invoke(cli, ["analyze", str(path), *args])
    assert out.exit_code == 1
    assert out.output.startswith("Error: ") and len(out.output.strip().splitlines()) == 1
    assert __import__("re").search(message, out.output), out.output
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before


def test_a_failure_while_storing_keeps_the_states_and_the_old_analysis(planted, tmp_path, monkeypatch):
    path = tmp_path / "d.h5"
    shutil.copy(planted[0], path)
    analyze_dump(path, features=["depth"])
    before = states_digest(path)
    real = tables_mod.write_table

    def failing(group, name, df):
        if name == "contexts":
            raise OSError("disk full")
        return real(group, name, df)
    monkeypatch.setattr(groups_mod, "write_table", failing)
    with pytest.raises(OSError, match="disk full"):
        analyze_dump(path, features=["in_string"])
    with h5py.File(path, "r") as f:
        assert "analysis_partial" not in f and list(f["analysis/features"]) == ["depth"]
    assert states_digest(path) == before


def test_python_api_options_are_checked(planted):
    with pytest.raises(RnnvizError, match="holdout must be a fraction"):
        analyze_dump(planted[0], holdout=1.5, store=False)
    assert sys.modules["rnnviz.analyze"] is analyze_mod


def test_cli_lists_the_builtin_features_without_a_dump():
    from rnnviz.features import BUILTIN
    out = CliRunner().invoke(cli, ["analyze", "--list-features"])
    assert out.exit_code == 0
    lines = out.output.splitlines()
    assert [line.split()[0] for line in lines] == list(BUILTIN)
    assert any(line.startswith("in_string") and "binary" in line for line in lines)
