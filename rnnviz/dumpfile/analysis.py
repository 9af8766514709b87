"""The /analysis group: written whole by ``rnnviz analyze``, read lazily by everyone else.

A new table or per-character array needs no code here: pass it to
:func:`write_analysis` and read it back with :meth:`AnalysisGroup.table` or
:meth:`AnalysisGroup.array`; name it in ``TABLES``/``ARRAYS`` and docs/dump-format.md.
"""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd

from .groups import replace_group
from .tables import json_attr, read_table

GROUP = "analysis"
TABLES = ("ranking", "saturation", "contexts", "sets", "units")   # what rnnviz analyze writes today
ARRAYS: tuple[str, ...] = ()                               # per-unit or per-char arrays beside them


class AnalysisGroup:
    """Read-only view of /analysis; tables and arrays are read when asked for."""

    def __init__(self, g: h5py.Group):
        self._g = g

    @property
    def created(self) -> str:
        return _str(self._g.attrs.get("created", ""))

    @property
    def options(self) -> dict:
        return json_attr(self._g, "options", {})

    @property
    def tables(self) -> list[str]:
        """Names of the tables present (``TABLES`` and any later ones)."""
        return [k for k, v in self._g.items() if isinstance(v, h5py.Group) and "columns" in v.attrs]

    def table(self, name: str) -> pd.DataFrame | None:
        """The table ``name`` as a DataFrame (strings as str), or None when absent."""
        g = self._g.get(name)
        return read_table(g) if isinstance(g, h5py.Group) and "columns" in g.attrs else None

    def array(self, name: str) -> h5py.Dataset | None:
        """The dataset ``name`` (lazy, sliced like h5py), or None when absent."""
        ds = self._g.get(name)
        return ds if isinstance(ds, h5py.Dataset) else None

    def _features(self) -> list[tuple[str, h5py.Dataset]]:
        """The feature datasets in the analysis's order (``options["features"]``; HDF5 lists
        names alphabetically)."""
        g = self._g.get("features")
        if g is None:
            return []
        order = [name for name in self.options.get("features", []) if name in g]
        return [(name, g[name]) for name in order + sorted(set(g) - set(order))]

    @property
    def feature_kinds(self) -> dict[str, str]:
        """Feature name -> kind (binary, continuous, ordinal), in the analysis's order."""
        return {name: _str(ds.attrs.get("kind", "continuous")) for name, ds in self._features()}

    def feature_descriptions(self) -> dict[str, str]:
        return {name: _str(ds.attrs.get("description", "")) for name, ds in self._features()}

    def feature(self, name: str) -> h5py.Dataset | None:
        """Values of text feature ``name`` at each character (lazy), or None when absent."""
        g = self._g.get("features")
        return g[name] if g is not None and name in g else None


def write_analysis(f: h5py.File, *, features, tables: dict[str, pd.DataFrame], options: dict,
                   arrays: dict[str, np.ndarray] | None = None, n_chars: int) -> None:
    """Replace /analysis (through :func:`rnnviz.dumpfile.groups.replace_group`: a failure
    leaves the previous analysis and never touches the rest).

    ``features``: (name, values (N,), kind, description) per text feature (an iterable:
    each can be computed as it is written)."""
    def write_features(g: h5py.Group) -> None:
        fg = g.create_group("features")
        for name, values, kind, description in features:
            ds = fg.create_dataset(name, data=values, chunks=(max(1, min(n_chars, 1 << 14)),))  # little padding
            ds.attrs["kind"], ds.attrs["description"] = kind, description
            ds.dims[0].label = "char"
    replace_group(f, GROUP, tables=tables, arrays=arrays, options=options, fill=write_features)


def _str(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)
