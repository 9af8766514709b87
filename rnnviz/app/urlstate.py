"""The view in the address bar, so that a view can be shared: parse and write the query string.

    ?unit=layer2.c[76]&pos=1200&span=1180-1199&thr=0.3&sign=neg&from=layer2.c,layer2.h&feature=in_string

``pos`` is the character a third of the way down the text view (a jump to it shows the
same rows), ``span`` the selected characters [start, end), ``sign`` pos|neg|both,
``from`` the layers and kinds units are selected from, ``before``/``after`` the
characters that must be off around the span, ``cover`` the share of the span (in
percent) a selected unit must be on at.
"""
from __future__ import annotations

import re
from urllib.parse import urlencode

from ..names import parse_point

SIGN_WORDS = {"pos": "positive", "neg": "negative", "both": "both"}     # selectmatch.SIGNS
_SPAN = re.compile(r"^(\d+)-(\d+)$")


def parse(args: dict[str, str]) -> tuple[dict, list[str]]:
    """The view an address asks for, and a message for each part that makes no sense (it is ignored)."""
    state, bad = {}, []
    for key in ("unit", "feature"):
        if args.get(key):
            state[key] = args[key]
    for key in ("pos", "before", "after"):
        if key in args:
            if args[key].isdigit():
                state[key] = int(args[key])
            else:
                bad.append(f"{key}={args[key]!r} is not a whole number")
    if "cover" in args:
        if args["cover"].isdigit() and 1 <= int(args["cover"]) <= 100:
            state["cover"] = int(args["cover"])
        else:
            bad.append(f"cover={args['cover']!r} is not a whole percentage from 1 to 100")
    if "span" in args:
        m = _SPAN.match(args["span"])
        if m and int(m[1]) < int(m[2]):
            state["span"] = (int(m[1]), int(m[2]))
        else:
            bad.append(f"span={args['span']!r}: expected START-END with START < END")
    if "thr" in args:
        try:
            thr = float(args["thr"])
            if not thr > 0:
                raise ValueError
            state["thr"] = thr
        except ValueError:
            bad.append(f"thr={args['thr']!r} is not a number > 0")
    if "sign" in args:
        if args["sign"] in SIGN_WORDS:
            state["sign"] = SIGN_WORDS[args["sign"]]
        else:
            bad.append(f"sign={args['sign']!r}: expected one of {', '.join(SIGN_WORDS)}")
    if "from" in args:
        points = [p for p in args["from"].split(",") if p]
        try:
            for p in points:
                parse_point(p)
            state["from"] = points
        except Exception:
            bad.append(f"from={args['from']!r}: expected points such as layer0.c,layer1.h")
    return state, bad


def encode(state: dict) -> str:
    """The query string for ``state`` (keys as :func:`parse` returns them; None values left out)."""
    words = {v: k for k, v in SIGN_WORDS.items()}
    out = {}
    for key in ("unit", "pos", "feature"):
        if state.get(key) is not None:
            out[key] = state[key]
    if state.get("span"):
        out["span"] = f"{state['span'][0]}-{state['span'][1]}"
        out["thr"] = f"{state['thr']:g}"
        out["sign"] = words[state["sign"]]
        out["from"] = ",".join(state["from"])
        out["before"], out["after"] = state["before"], state["after"]
        out["cover"] = state["cover"]
    return urlencode(out, safe="[],.")

