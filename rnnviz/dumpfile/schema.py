"""The dump's format constants, where each array lives, and the one place an HDF5 file is opened.

The schema rule (docs/dump-format.md): adding a group or dataset keeps
``schema_version`` and readers ignore what they do not know; changing or removing
one bumps it; readers refuse a newer version than they were written for.
"""
from __future__ import annotations

import errno
import os
from pathlib import Path

import h5py

from ..errors import RnnvizError
from ..names import h5_path

FORMAT = "rnnviz-dump"
SCHEMA_VERSION = 1

# HDF5 chunks of 32 KiB in float16 (measured best for writes); one unit's column is read
# without the rest of its layer.
CHUNK_ROWS, CHUNK_UNITS = 256, 64
CHUNK_CACHE_BYTES, CHUNK_CACHE_SLOTS = 8 << 20, 10007

CODES, IDS, SOURCES = "text/codes", "text/ids", "sources"
PREDICTIONS = ("loss", "topk_ids", "topk_probs")          # under /predictions
PROGRESS = "progress"                                       # only in .partial files
JSON_ATTRS = ("recorded", "vocab", "model_config", "versions", "resume_key")
SOURCE_COLUMNS = ("name", "start", "length", "size_bytes", "sha256")


def dataset_path(name: str) -> str:
    """Where an array the writer takes by name lives: 'layer0.c' -> '/states/layer0/c',
    'loss' -> '/predictions/loss'."""
    return f"/predictions/{name}" if name in PREDICTIONS else h5_path(name)


class DumpLocked(RnnvizError):
    """Another process holds the file open in a way that excludes this one (HDF5's file lock)."""


def h5open(path: str | os.PathLike, mode: str, **kwargs) -> h5py.File:
    """``h5py.File`` with HDF5's lock refusal (EAGAIN from flock) as :class:`DumpLocked`."""
    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise DumpLocked(f"{path}: open in another program (rnnviz serve, rnnviz analyze or a "
                             f"notebook) that {'writes' if mode == 'r' else 'reads or writes'} it; "
                             f"close it there first") from None
        raise


def open_checked(path: str | os.PathLike, mode: str = "r", *, finished: bool = True, **kwargs) -> h5py.File:
    """Open an rnnviz dump, checked: RnnvizError "expected an rnnviz dump, found ..." for
    anything else, for a newer schema and (``finished``) for an unfinished file."""
    path = Path(path)
    if not path.exists():
        raise RnnvizError(f"{path}: no such file")
    if path.is_dir():
        raise RnnvizError(f"{path}: expected an rnnviz dump, found a directory")
    if not h5py.is_hdf5(path):
        raise RnnvizError(f"{path}: expected an rnnviz dump, found a file that is not HDF5")
    try:
        f = h5open(path, mode, **kwargs)
    except DumpLocked:
        raise
    except OSError as e:
        raise RnnvizError(f"{path}: expected an rnnviz dump, found an unreadable HDF5 file "
                          f"({str(e).splitlines()[0][:200]})") from None
    try:
        check_header(f, path, finished)
    except BaseException:
        f.close()
        raise
    return f


def check_header(f: h5py.File, path, finished: bool = True) -> None:
    fmt = f.attrs.get("format")
    fmt = fmt.decode() if isinstance(fmt, bytes) else fmt
    if fmt != FORMAT:
        raise RnnvizError(f"{path}: expected an rnnviz dump, found an HDF5 file with format={fmt!r}")
    version = int(f.attrs.get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise RnnvizError(f"{path}: expected an rnnviz dump of schema <= {SCHEMA_VERSION}, "
                          f"found schema {version}; upgrade rnnviz")
    if finished and int(f.attrs.get("complete", 0)) != 1:
        raise RnnvizError(f"{path}: expected an rnnviz dump, found an unfinished one "
                          f"(complete=0); finish it with `rnnviz dump --resume`")


def header_attrs(path: str | os.PathLike) -> dict:
    """The root attributes of any HDF5 file, unchecked (e.g. who made an unfinished dump)."""
    with h5open(path, "r") as f:
        return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
