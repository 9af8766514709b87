"""How often select & match finds strings (and comments) on a dump: the figure that
tests/test_selectmatch.py measures in Chromium, computed here without a browser by the
app's own query (rnnviz.app.discover.SelectMatch), so that a candidate model can be
judged before it is shipped.

The rule is the test's. In each source, the span is its first string literal (first
comment) of 12 or more characters, by ``tokenize``. The layer, kind and sign to select
from are those of the best unit in the dump's ranking for the span's own kind of literal:
``in_long_string`` for a triple-quoted string (every first literal of the held-out files
is a module docstring), ``in_short_string`` for a quoted one, ``in_comment`` for a
comment. (Until the shipped model gained dropout the rule took the best ``in_string``
unit, which was its docstring cell too; in the dropout model the quote cell can score
higher for any string literal, and selecting a docstring from the quote cell's layer
asks the wrong cells.) Everything else is the app's default (threshold 0.3, on at >= 90%
of the span, off on 1 character before it, 0 after). Of the top 20 runs, those that overlap neither the span nor
a run counted before are counted, and the figure is the share of them that lie entirely
inside the feature (every character has it).

    rnnviz dump model.pt FILES... -o x.h5 && rnnviz analyze x.h5
    python benchmarks/selectmatch_quality.py x.h5 [y.h5 ...]

The demo dump's held-out files are the test's text; to compare models without choosing
one by the test, give them text that no preset trains on (for example modules of the
standard library's packages, such as json/decoder.py: the stdlib preset trains on the
top-level modules only).
"""
from __future__ import annotations

import argparse
import io
import sys
import time
import tokenize
from dataclasses import dataclass

import numpy as np

import rnnviz
from rnnviz.app.discover import DiscoverPanel, SelectMatch
from rnnviz.app.selectmatch import SIGNS
from rnnviz.app.store import DumpView
from rnnviz.errors import RnnvizError
from rnnviz.names import kinds_in, parse_point

TOKENS = {"in_string": tokenize.STRING, "in_comment": tokenize.COMMENT}
MIN_LITERAL = 12        # the span: the first literal (comment) of at least this many chars
TOP = 20                # runs looked at per span


def first_literals(text: str, sources, token_type: int) -> list[tuple[str, int, int]]:
    """(file name, start, end) of the first token of ``token_type`` of >= MIN_LITERAL chars in each source."""
    spans = []
    for s0, n, name in zip(sources["start"], sources["length"], sources["name"]):
        body = text[int(s0):int(s0) + int(n)]
        offsets = np.cumsum([0] + [len(line) for line in body.splitlines(keepends=True)])
        try:
            for t in tokenize.generate_tokens(io.StringIO(body).readline):
                if t.type == token_type and len(t.string) >= MIN_LITERAL:
                    a = int(s0) + int(offsets[t.start[0] - 1]) + t.start[1]
                    spans.append((str(name).rsplit("/", 1)[-1], a, a + len(t.string)))
                    break
        except (tokenize.TokenError, SyntaxError):      # not Python: no span in this source
            continue
    return spans


def counted_runs(starts, ends, span: tuple[int, int], top: int = TOP) -> list[tuple[int, int]]:
    """Of the first ``top`` runs, those overlapping neither ``span`` nor a run counted before."""
    a, b = span
    taken: list[tuple[int, int]] = []
    for s, e in list(zip(starts, ends))[:top]:
        if (e <= a or s >= b) and all(e <= ts or s >= te for ts, te in taken):
            taken.append((int(s), int(e)))
    return taken


@dataclass
class SpanFigure:
    name: str
    span: tuple[int, int]
    unit: str               # the best unit for the span's kind of literal: where it was selected from
    point: str
    sign: str
    selected: int           # units listed
    matched: int            # of them, not on almost everywhere
    counted: int
    inside: int             # counted runs entirely inside the feature


def best_point(ranking, feature: str) -> tuple[str, str, str]:
    """(unit, point, sign) of the feature's best unit: the test's rule for where to select from."""
    rows = ranking[ranking["feature"] == feature]
    if rows.empty:
        raise RnnvizError(f"the dump's analysis has no '{feature}' ranking: analyse it with that feature")
    best = rows.iloc[0]
    return str(best["unit"]), str(best["point"]), "negative" if best["score"] < 0 else "positive"


def span_feature(literal: str, feature: str) -> str:
    """The ranking feature whose best unit says where a span of ``feature``'s kind is selected
    from: a string literal's own kind (triple-quoted or quoted), else ``feature`` itself."""
    if feature != "in_string":
        return feature
    return "in_long_string" if literal.lstrip("rRbBuUfF")[:3] in ('"""', "'''") else "in_short_string"


def span_rule(ranking, text: str, span: tuple[int, int], feature: str) -> tuple[str, str, str]:
    """(unit, point, sign) to select ``span`` from: the test's rule."""
    return best_point(ranking, span_feature(text[span[0]:span[1]], feature))


def figures(path: str, feature: str, cover: int | None = None) -> tuple[list[SpanFigure], dict]:
    """Per source, what the app's query finds for the first literal of ``feature``'s kind
    (``cover``: the *On in span ≥ %* setting, the app's default when None)."""
    view = DumpView(path)
    with rnnviz.open(path) as d:
        text, sources, ranking, feats = d.text, d.sources, d.ranking, d.features
    if ranking is None:
        raise RnnvizError(f"{path} has no analysis: run `rnnviz analyze {path}` first")
    on = feats[feature].to_numpy() > 0.5
    panel = DiscoverPanel(sorted({parse_point(p)[0] for p in view.points}), kinds_in(view.points),
                          lambda *a: None, lambda *a: None)
    if cover is not None:
        panel.cover.value = cover
    query = SelectMatch(view, panel)
    rows = []
    for name, a, b in first_literals(text, sources, TOKENS[feature]):
        unit, point, sign = span_rule(ranking, text, (a, b), feature)
        panel.points = lambda recorded, point=point: [point]
        panel.sign.active = SIGNS.index(sign)
        panel.start.value, panel.end.value = a, b
        query.refresh()
        runs = []
        if query.selected:
            found, _ = query.match_job()[1](lambda done: None)
            runs = counted_runs(found["start"].to_numpy(), found["end"].to_numpy(), (a, b))
        rows.append(SpanFigure(name, (a, b), unit, point, sign, len(panel.units.data["unit"]), len(query.selected),
                               len(runs), sum(bool(on[s:e].all()) for s, e in runs)))
    return rows, {"base_rate": float(on.mean())}


def percent(value: str) -> int:
    """An integer percentage 1..100, for argparse."""
    if not value.isdigit() or not 1 <= int(value) <= 100:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 100, got {value!r}")
    return int(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dumps", nargs="+", help="analysed dumps (rnnviz dump, then rnnviz analyze)")
    ap.add_argument("--features", default="in_string,in_comment")
    ap.add_argument("--cover", type=percent, metavar="1..100",
                    help="On in span >= this %% (the app's default: 90; LSTMVis's rule: 100)")
    args = ap.parse_args()
    unknown = set(args.features.split(",")) - set(TOKENS)
    if unknown:
        ap.error(f"--features: {', '.join(sorted(unknown))}: expected some of {', '.join(TOKENS)}")
    for path in args.dumps:
        for feature in args.features.split(","):
            t0 = time.perf_counter()
            try:
                rows, rule = figures(path, feature, args.cover)
            except RnnvizError as e:
                sys.exit(f"Error: {e}")
            counted, inside = sum(r.counted for r in rows), sum(r.inside for r in rows)
            print(f"{path}: {feature}, each span selected from the point and sign of the best unit for its "
                  f"kind of literal")
            for r in rows:
                print(f"  {r.name:16} {r.span[0]:>8,}-{r.span[1]:<8,} {r.point} {r.sign[:3]} ({r.unit})  "
                      f"{r.selected:3d} units ({r.matched} matched)  {r.inside:2d}/{r.counted:2d} runs entirely inside")
            print(f"  pooled: {inside}/{counted} = {inside / max(counted, 1):.1%} of the counted runs entirely "
                  f"inside ({feature} base rate {rule['base_rate']:.1%} of chars; "
                  f"{time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
