"""Tables and JSON attributes in a dump (part of rnnviz.dumpfile; nothing else touches HDF5).

A *table* is a group of equal-length 1-D column datasets with attribute
``rnnviz_table = 1`` and ``columns`` (their order); strings are UTF-8. Anyone can
rebuild it with ``pd.DataFrame({k: g[k][()] for k in g.attrs["columns"]})``.
"""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd

STR = h5py.string_dtype("utf-8")


def write_table(parent: h5py.Group, name: str, df: pd.DataFrame) -> h5py.Group:
    if name in parent:
        del parent[name]
    g = parent.create_group(name)
    g.attrs["rnnviz_table"] = 1
    g.attrs["columns"] = json.dumps([str(c) for c in df.columns])
    for col in df.columns:
        values = df[col].to_numpy()
        if values.dtype == object or pd.api.types.is_string_dtype(df[col].dtype):
            g.create_dataset(str(col), data=np.asarray([str(v) for v in values], dtype=object), dtype=STR)
        elif values.dtype == bool:
            g.create_dataset(str(col), data=values.astype(np.uint8))
            g[str(col)].attrs["bool"] = 1
        else:
            g.create_dataset(str(col), data=values)
    return g


def read_table(g: h5py.Group) -> pd.DataFrame:
    cols = json.loads(g.attrs["columns"])
    data = {}
    for col in cols:
        ds = g[col]
        if h5py.check_string_dtype(ds.dtype) is not None:
            data[col] = ds.asstr()[()]
        elif ds.attrs.get("bool", 0):
            data[col] = ds[()].astype(bool)
        else:
            data[col] = ds[()]
    return pd.DataFrame(data, columns=cols)


def json_attr(obj, key: str, default=None):
    raw = obj.attrs.get(key)
    if raw is None:
        return default
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)
