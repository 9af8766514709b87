"""The navigator on its own (rnnviz.app.navigation): every part it needs is given to it, so
it pages, jumps and searches a real dump with no Explorer around it."""
from contextlib import nullcontext

import numpy as np
import pytest

from rnnviz.app.controls import Controls
from rnnviz.app.navigation import Navigator
from rnnviz.app.store import open_view
from rnnviz.app.textview import TextView, window_data
from rnnviz.errors import RnnvizError
from test_app import write_app_dump


def test_a_navigator_needs_only_what_it_is_given(tmp_path, stdlib_text_file):
    path = tmp_path / "small.h5"
    text, _ = write_app_dump(path, stdlib_text_file)
    view = open_view(str(path))
    tv, controls, shown, said = TextView(), Controls(view, [str(path)], 0), [], []

    def show(start, end):
        shown.append((start, end))
        tv.show_window(*window_data(view, start, end, np.zeros(end - start, np.float32), None))

    nav = Navigator(view, tv, controls, show=show, quiet=nullcontext, info=said.append)
    nav.load_window(0)
    assert shown == [(0, nav.end)] and text[nav.end - 1] == "\n"        # a window ends at a line end
    assert controls.where.text.startswith(f"chars 0–{nav.end:,} of {len(text):,}")
    first_end = nav.end
    nav.next_page()
    assert nav.start == first_end and shown[-1][0] == first_end
    nav.prev_page()
    assert nav.start == 0
    with pytest.raises(RnnvizError, match="start of the text"):
        nav.prev_page()
    nav.jump(6500)
    assert nav.start <= 6500 < nav.end and tv.marks.data["x"]
    nav.jump_to_source(1)
    assert nav.start == 3000 and said == ["second.py starts at char 3,000"]
    nav.search("def ")
    assert len(nav.match_starts) == text.count("def ") and nav.start <= nav.match_starts[nav.match_i] < nav.end
