"""Reading rnnviz dumps: the checked opener and the summary ``rnnviz info`` prints.

Kept free of torch so that ``rnnviz analyze``, ``rnnviz serve`` and ``rnnviz info`` start fast.
The layout is docs/dump-format.md.
"""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from .errors import RnnvizError
from .h5util import json_attr, read_table

FORMAT = "rnnviz-dump"
SCHEMA_VERSION = 1


def open_dump(path: str | os.PathLike, mode: str = "r") -> h5py.File:
    """Open a finished rnnviz dump (``mode`` "r", or "r+" to add /analysis), checked.

    The one opener that analyze and serve use: raises RnnvizError
    "expected an rnnviz dump, found ..." for anything else, for a newer schema and for
    an unfinished (``complete == 0``) file.
    """
    path = Path(path)
    if not path.exists():
        raise RnnvizError(f"{path}: no such file")
    if path.is_dir():
        raise RnnvizError(f"{path}: expected an rnnviz dump, found a directory")
    if not h5py.is_hdf5(path):
        raise RnnvizError(f"{path}: expected an rnnviz dump, found a file that is not HDF5")
    try:
        f = h5py.File(path, mode)
    except OSError as e:
        raise RnnvizError(f"{path}: expected an rnnviz dump, found an unreadable HDF5 file "
                          f"({str(e).splitlines()[0][:200]})") from None
    try:
        fmt = f.attrs.get("format")
        fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
        if fmt != FORMAT:
            raise RnnvizError(f"{path}: expected an rnnviz dump, found an HDF5 file with "
                              f"format={fmt!r}")
        version = int(f.attrs.get("schema_version", 0))
        if version > SCHEMA_VERSION:
            raise RnnvizError(f"{path}: expected an rnnviz dump of schema <= {SCHEMA_VERSION}, "
                              f"found schema {version}; upgrade rnnviz")
        if int(f.attrs.get("complete", 0)) != 1:
            raise RnnvizError(f"{path}: expected an rnnviz dump, found an unfinished one "
                              f"(complete=0); finish it with `rnnviz dump --resume`")
    except BaseException:
        f.close()
        raise
    return f


def describe_dump(path: str | os.PathLike) -> str:
    """A few lines for ``rnnviz info``: what the dump holds and how it was made."""
    path = Path(path)
    with open_dump(path) as f:
        n = int(f.attrs["n_chars"])
        recorded = json_attr(f, "recorded", [])
        sources = read_table(f["sources"])
        config = json_attr(f, "model_config", {})
        loss = f["predictions/loss"][()]
        lines = [
            f"rnnviz dump (schema {int(f.attrs['schema_version'])}): {path}",
            f"  characters   {n:,} in {len(sources)} source(s); "
            f"{int(f.attrs['unknown_chars']):,} not in the vocabulary",
            f"  model        {int(f.attrs['num_layers'])} layers x {int(f.attrs['hidden_size'])} units, "
            f"vocab {config.get('vocab_size', '?')}; checkpoint {f.attrs['checkpoint']} "
            f"(sha256 {str(f.attrs['checkpoint_sha256'])[:12]})",
            f"  recorded     {len(recorded)} points as {f.attrs['dtype']}: {_summarize_points(recorded)}",
            f"  predictions  top-{int(f.attrs['topk'])}; mean loss "
            f"{np.nanmean(loss) if np.isfinite(loss).any() else float('nan'):.4f} nats/char",
            f"  file         {path.stat().st_size:,} bytes ({path.stat().st_size / max(n, 1):,.0f} "
            f"bytes/char), compression {f.attrs['compression']}",
            f"  created      {f.attrs['created']} by: {f.attrs['command']}",
        ]
        for row in sources.head(5).itertuples():
            lines.append(f"  source       {row.name} ({row.length:,} chars from {row.start:,})")
        if len(sources) > 5:
            lines.append(f"  ...          and {len(sources) - 5} more sources")
        if "analysis" in f:
            lines.append(f"  analysis     present (created {f['analysis'].attrs.get('created', '?')})")
    return "\n".join(lines)


def _summarize_points(points: list[str]) -> str:
    """['layer0.c', 'layer0.h', 'layer1.c', 'layer1.h'] -> 'c, h in layers 0-1'."""
    by_kind: dict[str, list[int]] = {}
    for p in points:
        layer, kind = p.split(".", 1)
        by_kind.setdefault(kind, []).append(int(layer[len("layer"):]))
    groups: dict[tuple, list[str]] = {}
    for kind, layers in by_kind.items():
        groups.setdefault(tuple(layers), []).append(kind)
    return "; ".join(f"{', '.join(kinds)} in layers {','.join(map(str, layers))}"
                     for layers, kinds in groups.items()) or "nothing"
