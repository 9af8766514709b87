"""Result groups that later commands add beside the recording (``/analysis``, ``/errors``):
each is replaced whole, written as ``NAME_partial`` and renamed over ``NAME`` at the end,
so a failure or a kill leaves the previous group and never touches the rest of the file."""
from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timezone

import h5py
import numpy as np
import pandas as pd

from .tables import write_table


def replace_group(f: h5py.File, name: str, *, tables: dict[str, pd.DataFrame] | None = None,
                  arrays: dict[str, np.ndarray] | None = None, options: dict | None = None,
                  fill: Callable[[h5py.Group], None] | None = None) -> None:
    """Write /``name`` anew: ``tables`` as tables, ``arrays`` as datasets, ``options`` as a
    JSON attribute, ``fill(group)`` for anything else; ``created`` is stamped."""
    partial = f"{name}_partial"
    if partial in f:          # left by a run that was killed while writing
        del f[partial]
    try:
        g = f.create_group(partial)
        if fill is not None:
            fill(g)
        for key, df in (tables or {}).items():
            write_table(g, key, df)
        for key, a in (arrays or {}).items():
            g.create_dataset(key, data=a)
        g.attrs["options"] = json.dumps(options or {})
        g.attrs["created"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        if name in f:
            del f[name]
        f.move(partial, name)
    except BaseException:
        if partial in f:
            del f[partial]
        raise
