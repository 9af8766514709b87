"""Text features: what each built-in marks, user features, and bad input."""
import numpy as np
import pytest

from rnnviz.errors import RnnvizError
from rnnviz.features import (BUILTIN, compute_features, custom_feature, parse_feature_option,
                             regex_feature, select_features)


def marks(df, name) -> str:
    """'x' where a binary feature is on, '.' elsewhere."""
    return "".join("x" if v else "." for v in df[name])


def column(text, name, **kw):
    return compute_features(text, [name], **kw)[name].to_numpy()


PY = 'x = "a#b" + r\'c"d\'  # it\'s "q"\ns = """one\n\ntwo\\"""" + \'\'\nz = 1\n'


def test_python_strings_and_comments_exclude_each_other():
    df = compute_features(PY, sources=[("m.py", len(PY))])
    line1 = PY.index("\n")
    # A '#' inside a string is no comment; quotes inside a comment are no string.
    assert marks(df, "in_string")[:line1] == "....xxxx....xxxxx...................."[:line1]
    assert marks(df, "in_comment")[:line1] == "." * 20 + "x" * (line1 - 20)
    # Triple-quoted across a blank line, with an escaped quote inside; '' is an empty string.
    start, end = PY.index('"""'), PY.index('""""') + 3
    assert df["in_string"][start:end].all() and not df["in_string"][end]
    assert marks(df, "in_double_quote")[start:end + 1] == "x" * (end - start) + "."
    assert df["in_single_quote"][PY.index("''")] == 1 and df["in_single_quote"][PY.index("''") + 1] == 0
    # Python's grammar: long (triple-quoted) and short strings split in_string in two.
    assert (df["in_short_string"] + df["in_long_string"] == df["in_string"]).all()
    assert df["in_long_string"][start:end].all() and not df["in_short_string"][start:end].any()
    assert marks(df, "in_short_string")[:line1] == marks(df, "in_string")[:line1]


def test_c_comments_only_in_c_like_files():
    code = "a = b // c;\n/* x\n y */ d('/*');\n"
    c_df = compute_features(code, ["in_comment", "in_string"], sources=[("m.c", len(code))])
    assert marks(c_df, "in_comment") == "......xxxxx." + "x" * 9 + "." * (len(code) - 21)
    assert marks(c_df, "in_string")[-8:-3] == ".xxx."          # '/*' is a string, not a comment
    py_df = compute_features(code, ["in_comment"], sources=[("m.py", len(code))])
    assert not py_df["in_comment"].any()                       # // is floor division in Python


def test_prose_quotes_span_lines_and_restart_at_paragraphs():
    text = 'He said "hi\nthere" and don\'t \'go\'.\n\n"Open para\n\nNext \u201ccurly\u201d.'
    df = compute_features(text, ["in_double_quote", "in_single_quote", "in_quote"],
                          sources=[("book.txt", len(text))])
    inside = text.index('"hi')
    assert df["in_double_quote"][inside:text.index('" and')].all()            # across the newline
    assert not df["in_double_quote"][text.index('" and')]                      # closing quote is out
    assert not df["in_single_quote"][text.index("don'")]                       # apostrophe
    assert df["in_single_quote"][text.index("'go") + 1]
    assert not df["in_double_quote"][text.index("Next")]                       # paragraph restarts
    assert df["in_double_quote"][text.index("curly")] and not df["in_double_quote"][len(text) - 1]


def test_line_features_restart_at_sources():
    text = "ab\n\tcd\nxy" + "uv\n"        # the first source ends without a newline
    df = compute_features(text, ["line_pos", "to_newline", "indent"], sources=[("a.py", 9), ("b.py", 3)])
    assert df["line_pos"].tolist() == [0, 1, 2, 0, 8, 9, 10, 0, 1, 0, 1, 2]     # a tab ends at column 8
    assert df["to_newline"].tolist() == [2, 1, 0, 3, 2, 1, 0, 2, 1, 2, 1, 0]
    assert df["indent"].tolist() == [0, 0, 0, 8, 8, 8, 8, 0, 0, 0, 0, 0]
    one = compute_features(text, ["line_pos", "indent"], sources=[("a.py", 9), ("b.py", 3)], tab_size=1)
    assert one["line_pos"].tolist() == [0, 1, 2, 0, 1, 2, 3, 0, 1, 0, 1, 2]
    assert one["indent"].tolist() == [0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0]


def test_bracket_depth_ignores_strings_comments_and_stray_closers():
    code = 'f(a[1], {"(": 2})) # (\ng(\n  x)\n'
    df = compute_features(code, ["depth", "depth_paren", "depth_bracket", "depth_brace"],
                          sources=[("m.py", len(code))])
    #                    f  (  a  [  1  ]  ,     {  "  (  "  :     2  }  )  )
    assert df["depth"].tolist()[:18] == [0, 1, 1, 2, 2, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 1, 0, 0]
    assert df["depth"][code.index("g(") + 1:].tolist() == [1, 1, 1, 1, 1, 0, 0]   # stray ')' stays at 0
    assert df["depth_paren"][code.index("x)")] == 1 and df["depth_brace"].max() == 1
    assert df["depth_bracket"].max() == 1


def test_words_and_character_classes_handle_unicode():
    text = "Été 42_x!"
    df = compute_features(text, ["in_word", "word_pos", "uppercase", "vowel", "digit", "punctuation",
                                 "whitespace"])
    assert df["word_pos"].tolist() == [1, 2, 3, 0, 1, 2, 3, 4, 0]
    assert marks(df, "uppercase") == "x........"
    assert marks(df, "vowel") == "x.x......"                    # accents ignored
    assert marks(df, "digit") == "....xx..."
    assert marks(df, "punctuation") == "......x.x"                # '_' is punctuation, inside words too
    assert marks(df, "whitespace") == "...x....."


def test_kinds_and_dtypes_are_attached():
    df = compute_features("a (b)\n")
    assert list(df.columns) == list(BUILTIN)
    assert all(dt == np.float32 for dt in df.dtypes)
    assert df.attrs["kinds"]["in_string"] == "binary" and df.attrs["kinds"]["depth"] == "ordinal"
    assert df.attrs["kinds"]["line_pos"] == "continuous"


def test_regex_and_python_features():
    re_feat = parse_feature_option(r"call=\w+\(")
    fn = custom_feature("odd", lambda t: np.arange(len(t)) % 2, kind="binary")
    df = compute_features("f(x) + g(y)", ["digit", re_feat, fn])
    assert marks(df, "call") == "xx.....xx.."
    assert df["odd"].tolist() == [0, 1] * 5 + [0]
    assert df.attrs["kinds"] == {"digit": "binary", "call": "binary", "odd": "binary"}


@pytest.mark.parametrize("make, message", [
    (lambda: parse_feature_option("call=\\w+("), "bad regex for feature 'call'"),
    (lambda: parse_feature_option("no-equals-sign"), "expected NAME=REGEX"),
    (lambda: regex_feature("2bad", "x"), "bad feature name '2bad'"),
    (lambda: select_features(["in_string", "in_strnig"]), "unknown feature 'in_strnig': valid built-in"),
    (lambda: select_features(None, [regex_feature("depth", "x")]), "used twice"),
    (lambda: custom_feature("f", len, kind="nominal"), "unknown feature kind 'nominal'"),
    (lambda: compute_features("abc", [custom_feature("f", lambda t: [1, 2])]), r"shape \(2,\), expected \(3,\)"),
])
def test_bad_feature_input_is_a_clear_error(make, message):
    with pytest.raises(RnnvizError, match=message):
        make()


def test_a_million_characters_take_one_vectorised_pass(stdlib_text_file):
    """Every built-in on 1M characters of real code; values agree with a slow reference."""
    text = (stdlib_text_file.read_text() * 60)[:1_000_000]
    df = compute_features(text, sources=[("t.py", len(text))])
    assert len(df) == 1_000_000
    lines = text.split("\n")
    ref = [i for line in lines for i in range(len(line) + 1)][:len(text)]
    assert np.array_equal(df["line_pos"].to_numpy(), ref)
