"""The default analysis is exact on every character: scores against scipy's ranks on the full
columns, chunk results that merge, a null over all characters, stored percentiles, and
--max-chars as an explicit sample."""
import json
import shutil

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.stats as st
from click.testing import CliRunner
from dumpfactory import write_synthetic_dump

from rnnviz.analyze import analyze_dump
from rnnviz.cli import cli
from rnnviz.exact import Counts, FeatureColumns, Sums, finish, rank_kernel, unit_stats
from rnnviz.features import compute_features
from rnnviz.grouped import Grouping, GroupSums
from rnnviz.dumpfile.tables import read_table
from rnnviz.stream import shifted_sums

FEATURES = ["in_string", "in_comment", "line_pos", "depth", "indent"]
KINDS = {"in_string": "binary", "in_comment": "binary", "line_pos": "continuous", "depth": "ordinal",
         "indent": "ordinal"}


def reference(x: np.ndarray, f: np.ndarray, kind: str) -> tuple[float, float]:
    """(score, r) from scipy on the characters where x is finite: 2*AUC-1 (AUC from midranks,
    ties counting half) or Spearman's rho, and Pearson's (point-biserial) r."""
    keep = np.isfinite(x)
    x, f = x[keep].astype(np.float64), f[keep].astype(np.float64)
    if np.ptp(x) == 0 or np.ptp(f) == 0:
        return np.nan, np.nan
    r = st.pearsonr(x, f)[0]
    if kind != "binary":
        return st.spearmanr(x, f)[0], r
    ranks = st.rankdata(x)
    pos = f != 0
    npos, nneg = pos.sum(), (~pos).sum()
    auc = (ranks[pos].sum() - npos * (npos + 1) / 2) / (npos * nneg)
    return 2 * auc - 1, r


def hard_states(rng, n, feats):
    """Units that make ranking hard: ties, a constant unit, inf and NaN (float16 overflow),
    -0 next to +0, values past float16's 16384-step range, and a unit that tracks strings."""
    s = feats["in_string"].to_numpy()
    c = np.column_stack([
        np.round(rng.random(n), 1),                              # ten values: ties everywhere
        np.full(n, 0.25),                                        # constant
        rng.standard_normal(n) * 3000,                           # wide, with overflow below
        np.tanh(rng.standard_normal(n)) + 2 * s,                 # the string unit
        np.where(rng.random(n) < 0.5, 0.0, -0.0) + (rng.random(n) < 0.1),   # -0, +0 and 1
        np.cumsum(rng.standard_normal(n)) / 30,                  # a slow drift
    ])
    c[::97, 2] = 1e6          # +inf in float16
    c[5::211, 2] = np.nan
    c[7, 5] = -np.inf
    with np.errstate(over="ignore"):
        return {"layer0.c": c, "layer0.gate_f": 1 / (1 + np.exp(-3 * c[:, [0, 3, 5, 0, 3, 4]]))}


@pytest.fixture(scope="module", params=["float16", "float32"])
def hard_dump(request, tmp_path_factory, stdlib_text_file):
    text = stdlib_text_file.read_text()[:12000]
    sources = [("a.py", 7000), ("b.py", len(text) - 7000)]
    feats = compute_features(text, FEATURES, sources=sources)
    states = hard_states(np.random.default_rng(3), len(text), feats)
    path = tmp_path_factory.mktemp(request.param) / "hard.h5"
    with np.errstate(over="ignore"):
        write_synthetic_dump(path, text, states, sources=sources, dtype=request.param)
    with h5py.File(path) as f:
        stored = {p: f[f"states/layer0/{p.split('.')[1]}"][()] for p in states}
    return path, stored, feats


@pytest.fixture(params=["kernel", "kernel, many blocks", "kernel, read twice", "numpy"])
def counting(request, monkeypatch):
    """Both ways of counting and ranking float16 values: the compiled kernel and numpy; the
    kernel also over many blocks (the last one shorter), and reading the dump once per pass
    (in blocks, in buffers read again and again) instead of each column once for both."""
    if request.param == "numpy":
        monkeypatch.setattr("rnnviz.stream.rank_kernel", lambda: None)
        return None
    if request.param == "kernel, many blocks":
        monkeypatch.setattr("rnnviz.stream.COUNT_ROWS", 1024)
        monkeypatch.setattr("rnnviz.stream.SUM_ROWS", 2048)
    if request.param == "kernel, read twice":
        monkeypatch.setattr("rnnviz.stream.ONCE_BYTES", 0)
        monkeypatch.setattr("rnnviz.stream.COUNT_ROWS", 1024)
        monkeypatch.setattr("rnnviz.stream.SUM_ROWS", 2048)
    lib = rank_kernel()
    if lib is None:
        pytest.skip("the analysis kernel is not available here (no C++ compiler, or RNNVIZ_KERNEL=0)")
    return lib


@pytest.mark.filterwarnings("error::RuntimeWarning")     # inf/NaN units: left out, and quietly
def test_every_score_equals_scipy_on_the_full_columns(hard_dump, counting):
    path, stored, feats = hard_dump
    res = analyze_dump(path, features=FEATURES, store=False, shifts=0)
    assert res.info["analysed_chars"] == res.info["n_chars"] and not res.info["sampled"]
    rows = res.ranking.set_index(["feature", "unit"])
    checked = 0
    for point, x in stored.items():
        for u in range(x.shape[1]):
            for name in FEATURES:
                want_score, want_r = reference(x[:, u], feats[name].to_numpy(), KINDS[name])
                row = rows.loc[(name, f"{point}[{u}]")]
                np.testing.assert_allclose(row["score"], want_score, rtol=1e-9, atol=1e-12)
                np.testing.assert_allclose(row["r"], want_r, rtol=1e-9, atol=1e-12)
                assert row["analysed_chars"] == np.isfinite(x[:, u]).sum()
                checked += np.isfinite(want_score)
    assert checked >= 30
    units = res.units.set_index("unit")
    wide = stored["layer0.c"][:, 2]
    assert units.loc["layer0.c[2]", "nonfinite"] == (~np.isfinite(wide)).sum() > 0
    assert res.info["nonfinite_units"] == 2 and "hold inf or NaN" in res.summary()
    for u in range(6):
        col = stored["layer0.c"][:, u].astype(np.float64)
        col = col[np.isfinite(col)]
        np.testing.assert_allclose(units.loc[f"layer0.c[{u}]", ["p1", "p50", "p99"]].to_numpy(float),
                                   np.percentile(col, [1, 50, 99]), rtol=1e-12)


def test_chunk_results_merge_to_one_pass(stdlib_text_file, counting):
    text = stdlib_text_file.read_text()[:9000]
    feats = compute_features(text, FEATURES)
    with np.errstate(over="ignore"):                            # 1e6 overflows to inf, on purpose
        x = hard_states(np.random.default_rng(5), len(text), feats)["layer0.c"].astype(np.float16)
    bits = x.view(np.uint16)
    fc = FeatureColumns.build([feats[nm].to_numpy() for nm in FEATURES], FEATURES, [KINDS[nm] for nm in FEATURES])
    whole = Counts.empty(6)
    whole.add(bits, counting)
    parts = []
    for lo, hi in ((0, 1000), (1000, 4096), (4096, len(text))):     # uneven shards
        c = Counts.empty(6)
        c.add(bits[lo:hi], counting)
        parts.append(c)
    merged = parts[0].merge(parts[1]).merge(parts[2])
    assert np.array_equal(merged.hist, whole.hist)
    stats = unit_stats(merged)
    one = Sums.empty(6, len(FEATURES))
    one.add(bits, stats.lut2, *fc.weights(0, len(text)), counting)
    shards = []
    for lo, hi in ((0, 3000), (3000, 3100), (3100, len(text))):
        s = Sums.empty(6, len(FEATURES))
        s.add(bits[lo:hi], stats.lut2, *fc.weights(lo, hi), counting)
        shards.append(s)
    total = shards[2].merge(shards[0]).merge(shards[1])
    binary = fc.binary
    assert np.array_equal(total.gr[:, binary], one.gr[:, binary])          # integer rank sums: exact
    np.testing.assert_allclose(total.gr, one.gr, rtol=1e-12)
    np.testing.assert_allclose(total.gx, one.gx, rtol=1e-12, atol=1e-9)
    a, b = finish(total, stats.n, stats.rank_ss, stats.ss, fc), finish(one, stats.n, stats.rank_ss, stats.ss, fc)
    np.testing.assert_allclose(a.score, b.score, rtol=1e-12)


@pytest.mark.parametrize("n, d", [(1000, 10), (1003, 10), (997, 7)])
def test_the_shift_null_covers_every_character_circularly(n, d):
    rng = np.random.default_rng(n)
    r = rng.standard_normal((3, n)).astype(np.float32)
    w = rng.standard_normal(n).astype(np.float32)
    lags = np.arange(1, n // d)
    got = shifted_sums(r, w, d, lags)
    for i, lag in enumerate([0, *lags]):
        want = r.astype(np.float64) @ np.roll(w, -lag * d).astype(np.float64)
        np.testing.assert_allclose(got[:, i], want, rtol=1e-4, atol=1e-3)


def test_a_unit_that_tracks_strings_beats_the_null_and_noise_does_not(hard_dump):
    res = analyze_dump(hard_dump[0], features=["in_string"], store=False)
    best = res.ranking.iloc[0]
    assert best["unit"] == "layer0.c[3]" and best["beats_null"] and best["null_z"] > 5
    drift = res.ranking.set_index("unit").loc["layer0.c[5]"]
    assert not drift["beats_null"] or np.isnan(drift["null_z"])


def test_max_chars_is_an_explicit_sample_and_says_so(hard_dump, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(hard_dump[0], path)
    csv = tmp_path / "r.csv"
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_string", "--max-chars", "4096",
                                   "--csv", str(csv)])
    assert out.exit_code == 0, out.output
    n = len(hard_dump[2])
    assert f"sampled 4,096 of {n:,} characters" in out.output
    table = pd.read_csv(csv)
    assert (table.query("unit == 'layer0.c[3]'")["analysed_chars"] == 4096).all()
    with h5py.File(path) as f:
        options = json.loads(f["analysis"].attrs["options"])
        assert options["analysed_chars"] == 4096 and options["sampled"] and options["n_chars"] == n
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_string", "--csv", str(csv), "--force"])
    assert out.exit_code == 0 and "sampled" not in out.output and f"all {n:,} characters, exactly" in out.output
    assert (pd.read_csv(csv).query("unit == 'layer0.c[3]'")["analysed_chars"] == n).all()
    with h5py.File(path) as f:
        units = read_table(f["analysis/units"])
        assert list(units.columns[:5]) == ["unit", "point", "layer", "kind", "index"]
        assert {"p1", "p50", "p99", "nonfinite"} <= set(units.columns) and len(units) == 12
        assert not json.loads(f["analysis"].attrs["options"])["sampled"]


def kernel_or_skip():
    lib = rank_kernel()
    if lib is None:
        pytest.skip("the analysis kernel is not available here (no C++ compiler, or RNNVIZ_KERNEL=0)")
    return lib


@pytest.mark.parametrize("max_groups", [512, 6])
def test_grouped_sums_equal_the_products_and_merge(stdlib_text_file, max_groups):
    """The kernel's pass 2 (sums per group of characters, the rest per character) gives the
    numpy products' sums, whichever features are grouped, and merges across shards."""
    lib = kernel_or_skip()
    text = stdlib_text_file.read_text()[:9000]
    feats = compute_features(text, FEATURES)
    with np.errstate(over="ignore"):
        x = hard_states(np.random.default_rng(7), len(text), feats)["layer0.c"].astype(np.float16)
    x = np.where(np.isfinite(x), x, np.float16(0.5))        # units with inf/NaN are scored from columns
    bits = np.ascontiguousarray(np.tile(x, (1, 7))).view(np.uint16)     # 42 units: lanes and a partial piece
    fc = FeatureColumns.build([feats[nm].to_numpy() for nm in FEATURES], FEATURES, [KINDS[nm] for nm in FEATURES])
    fc.grouping = Grouping.build(fc, max_groups)
    assert 0 < len(fc.grouping.dense) < len(FEATURES)          # some features grouped, some not
    counts = Counts.empty(bits.shape[1])
    counts.add(bits)
    stats = unit_stats(counts)
    want = Sums.empty(bits.shape[1], len(FEATURES))
    want.add(bits, stats.lut2, *fc.weights(0, len(text)))            # numpy
    parts = []
    for lo, hi in ((0, 2500), (2500, 2501), (2501, len(text))):
        part = GroupSums.empty(bits.shape[1], fc.grouping)
        part.add(bits[lo:hi], stats.lut2, fc, lo, lib)
        parts.append(part)
    got = parts[0].merge(parts[1]).merge(parts[2]).sums(fc.grouping)
    assert np.array_equal(got.gr[:, fc.binary], want.gr[:, fc.binary])      # integer rank sums: exact
    np.testing.assert_allclose(got.gr, want.gr, rtol=1e-12)
    np.testing.assert_allclose(got.gx, want.gx, rtol=1e-10, atol=1e-9)


def test_grouped_sums_with_wide_codes_equal_the_products():
    """A feature of more than 65,536 distinct values (its index int32, and the dense weights'
    codes too): the kernel's sums are numpy's, and the scores scipy's."""
    lib = kernel_or_skip()
    rng = np.random.default_rng(3)
    n = 70_000
    cols = [rng.random(n), rng.random(n) < 0.3, rng.integers(0, 40, n).astype(float)]
    names, kinds = ["many", "on", "few"], ["continuous", "binary", "ordinal"]
    fc = FeatureColumns.build(cols, names, kinds)
    assert fc.inverse.dtype == np.int32 and fc.grouping.codes.dtype == np.int32
    x = (rng.standard_normal((n, 9)) * 3).astype(np.float16)
    bits = np.ascontiguousarray(x).view(np.uint16)
    counts = Counts.empty(9)
    counts.add(bits)
    stats = unit_stats(counts)
    want = Sums.empty(9, 3)
    want.add(bits, stats.lut2, *fc.weights(0, n))
    got = GroupSums.empty(9, fc.grouping)
    for lo in range(0, n, 30_000):
        got.add(bits[lo:lo + 30_000], stats.lut2, fc, lo, lib)
    got = got.sums(fc.grouping)
    np.testing.assert_allclose(got.gr, want.gr, rtol=1e-12)
    np.testing.assert_allclose(got.gx, want.gx, rtol=1e-10, atol=1e-9)
    scores = finish(got, stats.n, stats.rank_ss, stats.ss, fc)
    for u in (0, 8):
        for j, (name, kind) in enumerate(zip(names, kinds)):
            np.testing.assert_allclose(scores.score[u, j], reference(x[:, u], cols[j], kind)[0], rtol=1e-9)


def test_distinct_values_by_counting_equal_numpys_unique():
    from rnnviz.exact import _distinct
    rng = np.random.default_rng(0)
    for f in (rng.integers(0, 125, 5000).astype(float), np.array([3.0, 0.0, 3.0, 7.0, -0.0]),
              rng.random(100), np.array([1.5, 2.0, 2.0]), np.zeros(0), np.array([np.nan, 1.0, 1.0]),
              np.array([2.0 ** 40, 1.0]), np.array([-1.0, 0.0, 2.0])):
        got, want = _distinct(f), np.unique(f, return_inverse=True, return_counts=True)
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)


def test_the_kernel_counts_and_unit_statistics_equal_numpy(hard_dump):
    lib = kernel_or_skip()
    path, stored, _ = hard_dump
    with np.errstate(over="ignore"):
        bits = np.ascontiguousarray(np.concatenate(list(stored.values()), axis=1).astype(np.float16)).view(np.uint16)
    ours, ref = Counts.empty(bits.shape[1]), Counts.empty(bits.shape[1])
    ours.add(bits, lib)
    ref.add(bits)
    assert np.array_equal(ours.hist, ref.hist)
    a, b = unit_stats(ours, lib=lib), unit_stats(ref)
    held = ours.hist > 0                     # the ranks of the values each unit holds
    assert np.array_equal(a.lut2[held], b.lut2[held])
    for name in ("n", "nonfinite", "below", "above", "quantile_keys"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    for name in ("rank_ss", "mean", "ss", "percentiles", "minimum", "maximum"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-12, err_msg=name)


def test_the_kernel_finds_the_same_contexts_as_numpy(hard_dump, monkeypatch):
    kernel_or_skip()
    path, stored, _ = hard_dump
    if next(iter(stored.values())).dtype != np.float16:
        pytest.skip("contexts of float32 dumps come from whole columns either way")
    with_kernel = analyze_dump(path, features=FEATURES, store=False, shifts=0)
    monkeypatch.setattr("rnnviz.stream.SUM_ROWS", 2048)      # several blocks, in reused buffers
    in_blocks = analyze_dump(path, features=FEATURES, store=False, shifts=0)
    pd.testing.assert_frame_equal(with_kernel.contexts, in_blocks.contexts)
    monkeypatch.setattr("rnnviz.stream.rank_kernel", lambda: None)
    without = analyze_dump(path, features=FEATURES, store=False, shifts=0)
    pd.testing.assert_frame_equal(with_kernel.contexts, without.contexts)
    pd.testing.assert_frame_equal(with_kernel.saturation, without.saturation)
    pd.testing.assert_frame_equal(with_kernel.units, without.units, rtol=1e-12)


def test_the_reader_reads_scattered_columns(tmp_path, stdlib_text_file):
    """The null's columns: far-apart units are read from the chunks that hold them."""
    text = stdlib_text_file.read_text()[:3000]
    x = np.random.default_rng(1).standard_normal((len(text), 300)).astype(np.float16)
    write_synthetic_dump(tmp_path / "wide.h5", text, {"layer0.c": x}, dtype="float16",
                         chunks=(256, 64))                    # chunks of 64 units, as rnnviz dump writes
    from rnnviz.dumpfile import open_dump
    with open_dump(tmp_path / "wide.h5") as d:
        read = d.reader("layer0.c", [(0, 1000), (1500, len(text) - 1500)])
        cols = np.array([0, 1, 70, 150, 151, 299])
        rows = np.r_[0:1000, 1500:len(text)]
        np.testing.assert_array_equal(read(900, 1200, cols), x[rows[900:1200]][:, cols])
        np.testing.assert_array_equal(read(0, 5, cols[3:4]), x[:5, [150]])


def _wide_dump(path, text, units=150, chunk_units=16):
    """A float16 dump of ``units`` units stored in chunks of 256 characters x ``chunk_units``."""
    feats = compute_features(text, FEATURES)
    rng = np.random.default_rng(4)
    n = len(text)
    s = feats["in_string"].to_numpy()
    x = np.round(rng.standard_normal((n, units)), 2) + np.outer(s, rng.standard_normal(units))
    x[:, 7] = 0.5                                                      # constant
    x[3::101, 140] = np.inf                                            # float16 overflow
    x = x.astype(np.float16)
    write_synthetic_dump(path, text, {"layer0.c": x}, dtype="float16", chunks=(256, chunk_units))
    return x


def test_units_read_a_few_chunks_at_a_time_score_as_whole_rows(tmp_path, stdlib_text_file, monkeypatch):
    """Reading the chunks itself, the analysis takes a few chunks' units at a time over more
    characters (each unit's table then serves more of them), each group's whole column read
    once for both passes, or in blocks once per pass; every result is the same as over whole
    rows, with the fit part's own scores and the null too."""
    kernel_or_skip()
    monkeypatch.setenv("RNNVIZ_THREADS", "2")                        # groups of 64 units: 64, 64 and 22
    monkeypatch.setattr("rnnviz.stream.GROUP_VALUES", (64 * 1536, 64 * 1024))   # and many blocks
    _wide_dump(tmp_path / "wide.h5", stdlib_text_file.read_text()[:20000])
    import rnnviz.stream as stream
    seen = []
    grouped = stream._unit_groups
    monkeypatch.setattr("rnnviz.stream._unit_groups", lambda *a: seen.append(grouped(*a)) or seen[-1])
    kw = dict(features=FEATURES, store=False, shifts=19, top=3, parts=(0.6, 0.2, 0.2))
    read_once = stream._read_once
    once = []
    monkeypatch.setattr("rnnviz.stream._read_once", lambda *a: once.append(read_once(*a)) or once[-1])
    in_groups = analyze_dump(tmp_path / "wide.h5", **kw)       # each group's column read once
    assert [(g.start, g.stop) for g in seen[0]] == [(0, 64), (64, 128), (128, 150)] and all(once)
    monkeypatch.setattr("rnnviz.stream.ONCE_BYTES", 0)
    twice = analyze_dump(tmp_path / "wide.h5", **kw)           # read in blocks, once per pass
    assert not any(once[-len(once) // 2:])
    monkeypatch.setattr("rnnviz.stream._unit_groups", lambda read, h, lib: [slice(0, h)])
    whole = analyze_dump(tmp_path / "wide.h5", **kw)
    for got in (in_groups, twice):
        for name in ("ranking", "units", "contexts", "saturation"):
            pd.testing.assert_frame_equal(getattr(got, name), getattr(whole, name), rtol=1e-12, obj=name)
    assert in_groups.ranking["null_z"].notna().sum() >= 3 * len(FEATURES) // 2


def test_the_nulls_rank_columns_from_the_kernel_equal_numpys(tmp_path, stdlib_text_file, monkeypatch):
    from rnnviz.dumpfile import open_dump
    from rnnviz.stream import COUNT_ROWS, rank_columns
    lib = kernel_or_skip()
    text = stdlib_text_file.read_text()[:20000]
    x = _wide_dump(tmp_path / "wide.h5", text)
    counts = Counts.empty(x.shape[1])
    counts.add(x.view(np.uint16), lib)
    lut2 = unit_stats(counts, lib=lib).lut2
    cols = np.array([0, 7, 70, 140, 149])                             # constant and inf among them
    monkeypatch.setattr("rnnviz.stream.COUNT_ROWS", 4096)             # several blocks
    with open_dump(tmp_path / "wide.h5") as d:
        read = d.reader("layer0.c", [(0, len(text))])
        ranks, ss = rank_columns(read, len(text), cols, {int(c): lut2[c] for c in cols})
        monkeypatch.setattr("rnnviz.stream.rank_kernel", lambda: None)
        want, want_ss = rank_columns(read, len(text), cols, {int(c): lut2[c] for c in cols})
    assert COUNT_ROWS > 4096
    np.testing.assert_array_equal(ranks, want)
    np.testing.assert_allclose(ss, want_ss, rtol=1e-12)
    assert ranks[3][3::101].tolist() == [0.0] * len(range(3, len(text), 101))   # inf: left out
