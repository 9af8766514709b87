"""The example notebook, executed headlessly on a real kernel: rnnviz.open and show() offline."""
import re
import shutil
from pathlib import Path

import h5py
import nbclient
import nbformat
import numpy as np

from rnnviz.analyze import analyze_dump
from rnnviz.render import colours

NOTEBOOK = Path(__file__).resolve().parent.parent / "examples" / "explore_a_dump.ipynb"


def test_example_notebook_shows_the_coloured_text_offline(tmp_path):
    from test_dumpfile import planted
    (tmp_path / "dumps").mkdir()
    path = tmp_path / "dumps" / "demo.h5"
    text, c, _ = planted(path)
    analyze_dump(path, features=["in_short_string", "in_comment"], max_chars=None)
    shutil.copy(NOTEBOOK, tmp_path)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    shown = [o.data["text/html"] for o in outputs if "text/html" in o.get("data", {})
             and "rnnviz-span" in o.data["text/html"]]
    assert len(shown) == 1
    page = shown[0]
    # Offline: nothing in any output loads a script, a stylesheet or anything else over http(s).
    everything = "\n".join(str(o) for o in outputs)
    assert "<script" not in everything and not re.search(r"https?://", everything)
    # The planted quote cell comes first, and its text is coloured as the app colours it.
    assert "layer0.c[1] · chars 0–1,500" in page
    assert "colour: " in page and "1st … 99th percentile over all" in page      # the legend states the rule
    spans = re.findall(r'<span style="background:(#[0-9a-f]{6})[^"]*" title="char ([\d,]+): ([-\d.]+)">', page)
    assert len(spans) == 1500
    with h5py.File(path, "r") as f:                   # read independently of rnnviz
        values = f["states/layer0/c"][:1500, 1]
    low, high = colours.limits("c", values, "auto")
    fill, at, _ = spans[7]                            # the quote that opens the first string
    assert text[int(at)] == '"' and values[int(at)] == 2.0
    assert fill == colours.to_hex(np.array([values[int(at)]]), low, high, colours.palette("c"))[0] == colours.DIVERGING[-1]
    assert "layer0.c[1]: mean +2.00 inside quoted strings" in everything
