"""The language of each source (--language auto|python|c|text) and tab stops (--tab-size)."""
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from dumpfactory import write_synthetic_dump

import rnnviz
from rnnviz.cli import cli
from rnnviz.features import compute_features
from rnnviz.language import language_of, sniff

C_CODE = """#include <stdio.h>
#define SQUARE(x) ((x) * (x))

/* Print the squares
   of a few numbers. */
static int square_all(const int *v, int n) {
    int total = 0;   // running sum
    for (int i = 0; i < n; i++) {
\ttotal += SQUARE(v[i]);
\tprintf("%d # not a comment\\n", v[i]);
    }
    return total;
}
"""
PY_CODE = '''import os
from pathlib import Path


class Walker:
    """Walk a tree."""

    def __init__(self, root):
        self.root = Path(root)   # where to start

    def files(self):
        # every file below the root
        return [p for p in self.root.rglob("*") if p.is_file()]
'''
PROSE = ("It was a bright cold day in April, and the clocks were striking thirteen. Winston Smith, "
         "his chin nuzzled into his breast in an effort to escape the vile wind, slipped quickly "
         "through the glass doors of Victory Mansions, though not quickly enough to prevent a "
         "swirl of gritty dust from entering along with him.\n") * 2


def test_the_content_decides_when_the_extension_does_not():
    assert sniff(C_CODE) == "c" and sniff(PY_CODE) == "python" and sniff(PROSE) == "text"
    assert language_of("header.txt", C_CODE) == "c" and language_of("walker", PY_CODE) == "python"
    assert language_of("notes.txt", PROSE) == "text" and language_of("notes.md", "x = 1\n") == "text"
    assert language_of("m.c", PY_CODE) == "c" and language_of("w.py", C_CODE) == "python"   # extension first
    assert language_of("anything", "x = 1\n") == "python"                                  # no evidence
    assert language_of("header.txt", C_CODE, "text") == "text"                               # a choice wins


@pytest.fixture(scope="module")
def mixed_dump(tmp_path_factory):
    """A C file named .txt and a Python file with no extension, one unit following comments."""
    text = C_CODE + PY_CODE
    sources = [("header.txt", len(C_CODE)), ("walker", len(PY_CODE))]
    comment = compute_features(text, ["in_comment"], sources=sources, language="auto")["in_comment"].to_numpy()
    rng = np.random.default_rng(0)
    c = rng.standard_normal((len(text), 4))
    c[:, 1] += 3 * comment
    path = tmp_path_factory.mktemp("lang") / "mixed.h5"
    write_synthetic_dump(path, text, {"layer0.c": c}, sources=sources, dtype="float16")
    return path, comment


def test_a_c_txt_and_an_extensionless_python_file_get_their_own_features(mixed_dump, tmp_path):
    path = tmp_path / "d.h5"
    shutil.copy(mixed_dump[0], path)
    csv = tmp_path / "r.csv"
    for args in ([], ["--language", "auto"]):
        out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_comment,in_string", "--shifts", "0",
                                       "--csv", str(csv), "--force", *args])
        assert out.exit_code == 0, out.output
        assert "Languages (auto): c (header.txt), python (walker)" in out.output
        assert "layer0.c[1]" in next(line for line in out.output.splitlines() if line.startswith("in_comment"))
    with rnnviz.open(path) as d:
        feats = d.analysis.feature("in_comment")[()]
        assert d.analysis.options["languages"] == [["header.txt", "c"], ["walker", "python"]]
        desc = d.analysis.feature_descriptions()["in_comment"]
        assert "C comment" in desc and "Python comment" in desc
    text = C_CODE + PY_CODE
    assert feats[text.index("/* Print") + 3] == 1 and feats[text.index("// running") + 3] == 1
    assert feats[text.index("# not a comment")] == 0                      # inside a C string
    assert feats[text.index("# every file") + 2] == 1                     # a Python comment
    assert feats[text.index("#include")] == 0 and feats[text.index("#define")] == 0
    assert (pd.read_csv(csv)["languages"] == "header.txt=c; walker=python").all()
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_comment", "--shifts", "0",
                                   "--language", "c"])
    assert out.exit_code == 0 and "Languages (chosen with --language): c (2 sources: header.txt, walker)" in out.output
    with rnnviz.open(path) as d:
        feats = d.analysis.feature("in_comment")[()]
        assert json.dumps(d.analysis.options["languages"]) == '[["header.txt", "c"], ["walker", "c"]]'
        assert d.analysis.feature_descriptions()["in_comment"].startswith("inside a C comment")
    assert feats[text.index("# every file") + 2] == 0                     # '#' starts no comment in C
    out = CliRunner().invoke(cli, ["analyze", str(path), "--features", "in_comment", "--shifts", "0",
                                   "--language", "python"])
    assert out.exit_code == 0 and "Languages (chosen with --language): python (2 sources: header.txt, walker)" in out.output
    with rnnviz.open(path) as d:
        feats = d.analysis.feature("in_comment")[()]
        assert d.analysis.options["languages"] == [["header.txt", "python"], ["walker", "python"]]
    assert feats[text.index("# every file") + 2] == 1                     # the extensionless file: Python
    assert feats[text.index("/* Print") + 3] == 0                         # '/*' starts no comment in Python


def test_prose_gets_no_comments_or_literals(tmp_path):
    df = compute_features(C_CODE, ["in_comment", "in_string"], sources=[("header.txt", len(C_CODE))],
                          language="text")
    assert not df["in_comment"].any() and not df["in_string"].any()
    assert df.attrs["languages"] == [("header.txt", "text")]
    assert "prose has none" in df.attrs["descriptions"]["in_comment"]


def test_tab_size_sets_the_columns_of_indentation_and_line_position():
    text = "\tint a;\n  \tb;\n    c;\n"
    starts = [0, text.index("  \tb"), text.index("    c")]
    for size, indents, column_of_b in ((8, [8, 8, 4], 8), (4, [4, 4, 4], 4), (2, [2, 4, 4], 4)):
        df = compute_features(text, ["indent", "line_pos"], sources=[("t.c", len(text))], tab_size=size)
        assert [df["indent"][s] for s in starts] == indents
        assert df["line_pos"][text.index("b;")] == column_of_b
    assert compute_features(text, ["indent"])["indent"][0] == 8            # the default: tab stops every 8
