"""Writing a dump: create it with every (empty) array, append rows, save progress, finish.

    w = DumpWriter.create(path, header, codes, ids, sources, points, hidden_size=256, topk=5)
    w.write("layer0.c", rows, [(0, 0, len(rows[0]))]); w.finish()

``rnnviz dump`` writes ``TARGET.partial`` and :meth:`DumpWriter.finish` renames it;
the tests' and benchmarks' synthetic dumps go through :func:`write_dump`.
"""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import RnnvizError
from .schema import (CHUNK_CACHE_BYTES, CHUNK_CACHE_SLOTS, CHUNK_ROWS, CHUNK_UNITS, CODES, FORMAT, IDS,
                     PROGRESS, SCHEMA_VERSION, SOURCE_COLUMNS, SOURCES, dataset_path, h5open)
from .tables import write_table

_CACHE = dict(rdcc_nbytes=CHUNK_CACHE_BYTES, rdcc_nslots=CHUNK_CACHE_SLOTS)


class DumpWriter:
    """An open dump being written. Arrays are named as points (``layer0.c``) or predictions
    (``loss``, ``topk_ids``, ``topk_probs``); rows go where ``rows`` says on the char axis."""

    def __init__(self, f: h5py.File, path: Path):
        self.f, self.path = f, path
        self._datasets: dict[str, tuple[h5py.Dataset, bool]] = {}   # opening one by path costs ~0.25 ms

    @classmethod
    def create(cls, path, header: dict, codes: np.ndarray, ids: np.ndarray, sources: pd.DataFrame,
               points: list[str], *, hidden_size: int, topk: int, dtype: str = "float16",
               compression: str = "none", progress: tuple[int, int] | None = None,
               resume_key: str | None = None, chunks: tuple[int, int] = (CHUNK_ROWS, CHUNK_UNITS),
               locking: bool = True) -> DumpWriter:
        """A new file with every attribute and (empty) dataset of docs/dump-format.md.

        ``header``: the root attributes that describe the model and how it was recorded
        (num_layers, vocab, model_config, checkpoint, ...; lists and dicts stored as JSON).
        ``progress``: (layers, lanes) for the state that ``--resume`` restarts from.
        ``locking=False`` leaves out HDF5's own file lock, for a caller that holds one.
        """
        path = Path(path)
        n = int(len(codes))
        f = h5open(path, "w", locking=locking, **_CACHE)
        try:
            attrs = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "complete": 0, "n_chars": n,
                     "hidden_size": hidden_size, "recorded": points, "dtype": dtype, "topk": topk,
                     "created": "", "compression": compression, **header}
            if resume_key is not None:
                attrs["resume_key"] = resume_key
            f.attrs.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in attrs.items()})
            packed = None if compression == "none" else compression

            def per_char(name, dtype, width=None, data=None, label="unit", fill=0):
                shape = (n,) if width is None else (n, width)
                rows = min(n, chunks[0] if width else 16 * CHUNK_ROWS)
                shape_of_chunk = (rows,) if width is None else (rows, min(width, chunks[1]))
                ds = f.create_dataset(name, shape=shape, dtype=dtype, data=data, chunks=shape_of_chunk,
                                      compression=packed, fillvalue=fill)
                ds.dims[0].label = "char"
                if width is not None:
                    ds.dims[1].label = label

            per_char(CODES, np.uint32, data=np.asarray(codes, np.uint32))
            per_char(IDS, np.int32, data=np.asarray(ids, np.int32))
            write_table(f, SOURCES, sources[list(SOURCE_COLUMNS)])
            for point in points:
                per_char(dataset_path(point), dtype, hidden_size)
            per_char(dataset_path("loss"), np.float32, fill=np.nan)
            per_char(dataset_path("topk_ids"), np.int32, topk, label="rank")
            per_char(dataset_path("topk_probs"), np.float32, topk, label="rank")
            if progress is not None:
                g = f.create_group(PROGRESS)
                g.create_dataset("units_done", data=0)
                for name in ("h", "c"):
                    g.create_dataset(name, shape=(*progress, hidden_size), dtype=np.float32)
            f.flush()
        except BaseException:
            f.close()
            path.unlink(missing_ok=True)
            raise
        return cls(f, path)

    @classmethod
    def resume(cls, path, resume_key: str, locking: bool = True) -> tuple[DumpWriter, int, np.ndarray, np.ndarray]:
        """The unfinished dump at ``path``, checked to be the same work: the writer, the
        chunks done and the LSTM state (h, c) after them."""
        try:
            f = h5open(path, "r+", locking=locking, **_CACHE)
        except RnnvizError:
            raise
        except OSError as e:
            raise RnnvizError(f"cannot resume {path}: the file is damaged ({str(e).splitlines()[0][:120]}); "
                              f"start over with --force") from None
        try:
            if f.attrs.get("format") != FORMAT or PROGRESS not in f:
                raise RnnvizError(f"cannot resume {path}: expected an unfinished rnnviz dump")
            if f.attrs.get("resume_key") != resume_key:
                raise RnnvizError(f"cannot resume {path}: it was made from a different checkpoint, "
                                  f"text or options; give the same ones, or start over with --force")
            g = f[PROGRESS]
            return cls(f, Path(path)), int(g["units_done"][()]), g["h"][()], g["c"][()]
        except BaseException:
            f.close()
            raise

    def write(self, name: str, a: np.ndarray, rows) -> None:
        """Rows of ``a`` (B, T, ...) to their places: ``rows`` yields (row of ``a``, first
        index on the char axis, count). h5py's low-level write: ``ds[i:j] = x`` costs ~70 us
        more per call, more than the data when many files run side by side (one
        union-of-slabs write is slower still). Whole chunks of uncompressed states go in
        directly (:func:`_direct_chunks`)."""
        got = self._datasets.get(name)
        if got is None:
            ds = self.f[dataset_path(name)]
            got = self._datasets[name] = (ds, _direct_ok(ds))
        ds, direct = got
        file, a = ds.id.get_space(), np.ascontiguousarray(a, dtype=ds.dtype)
        for row, first, n in rows:
            part = a[row, :n]
            if direct:
                # Rows up to the first chunk boundary, whole chunks, then the rest.
                lo = min(n, -first % CHUNK_ROWS)
                whole = (n - lo) // CHUNK_ROWS * CHUNK_ROWS
                if whole:
                    _slab(ds, file, part[:lo], first)
                    _direct_chunks(ds, part[lo:lo + whole], first + lo)
                    _slab(ds, file, part[lo + whole:], first + lo + whole)
                    continue
            _slab(ds, file, part, first)

    def put(self, name: str, a: np.ndarray, first: int = 0) -> None:
        """``a`` (T, ...) to rows ``first`` on."""
        self.write(name, np.asarray(a)[None], [(0, first, len(a))])

    def save_progress(self, units_done: int, h: np.ndarray, c: np.ndarray) -> None:
        """What ``--resume`` restarts from, flushed with everything written before it, so
        the progress on disk never runs ahead of the data."""
        g, lanes = self.f[PROGRESS], h.shape[1]
        g["h"][:, :lanes] = h
        g["c"][:, :lanes] = c
        g["units_done"][()] = units_done
        self.f.flush()

    def finish(self, target=None) -> Path:
        """Mark the dump complete, drop what only resuming needs, close it and (``target``)
        rename it there."""
        self.f.attrs["complete"] = 1
        self.f.attrs["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if PROGRESS in self.f:
            del self.f[PROGRESS]
        if "resume_key" in self.f.attrs:
            del self.f.attrs["resume_key"]
        self.f.close()
        if target is None:
            return self.path
        os.replace(self.path, target)
        return Path(target)

    def close(self) -> None:
        self.f.close()


def write_dump(path, text: str, states: dict[str, np.ndarray], *, vocab: list[str], ids: np.ndarray,
               sources: pd.DataFrame, loss: np.ndarray, topk_ids: np.ndarray, topk_probs: np.ndarray,
               header: dict, dtype: str = "float32", complete: bool = True,
               chunks: tuple[int, int] = (CHUNK_ROWS, CHUNK_UNITS)) -> Path:
    """A whole dump from arrays in memory (``states``: point -> (N, H)), for synthetic dumps."""
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    hidden = {a.shape[1] for a in states.values()}
    if len(hidden) > 1:
        raise RnnvizError(f"every point needs the same number of units, found {sorted(hidden)}")
    w = DumpWriter.create(path, {"vocab": vocab, **header}, codes, ids, sources, list(states),
                          hidden_size=header.get("hidden_size", hidden.pop() if hidden else 0),
                          topk=topk_ids.shape[1], dtype=dtype, chunks=chunks)
    try:
        for point, values in states.items():
            w.put(point, values)
        for name, a in (("loss", loss), ("topk_ids", topk_ids), ("topk_probs", topk_probs)):
            w.put(name, a)
    except BaseException:
        w.close()
        raise
    if complete:
        return w.finish()
    w.close()
    return Path(path)


class SideFile:
    """A plain HDF5 file of named arrays for another tool (never the dump itself), written
    in row blocks; chunks never written cost no disk and read as zeros.

        with SideFile("out/side.h5") as s: s.create("source", (n,), np.int32); s.put("source", a)
    """

    def __init__(self, path):
        self.path = Path(path)
        self.f = h5open(self.path, "w")

    def create(self, name: str, shape: tuple, dtype, attrs: dict | None = None) -> None:
        chunks = (min(shape[0], 16 * CHUNK_ROWS),) if len(shape) == 1 else \
            (min(shape[0], CHUNK_ROWS), min(shape[1], CHUNK_UNITS))
        ds = self.f.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks if shape[0] else None)
        ds.attrs.update({k: json.dumps(v) if isinstance(v, (list, dict)) else v for k, v in (attrs or {}).items()})

    def put(self, name: str, a: np.ndarray, first: int = 0, columns: slice = slice(None)) -> None:
        """``a`` to rows ``first`` on (and ``columns`` of a 2-D array)."""
        ds = self.f[name]
        if ds.ndim == 1:
            ds[first:first + len(a)] = a
        else:
            ds[first:first + len(a), columns] = a

    def __enter__(self) -> SideFile:
        return self

    def __exit__(self, *exc) -> None:
        self.f.close()


def _slab(ds: h5py.Dataset, file: h5py.h5s.SpaceID, part: np.ndarray, first: int) -> None:
    """``part`` to rows ``first`` on, through ``file`` (the dataset's space, reselected)."""
    if len(part):
        file.select_hyperslab((first,) + (0,) * (part.ndim - 1), part.shape)
        ds.id.write(h5py.h5s.create_simple(part.shape), file, part)


def _direct_ok(ds: h5py.Dataset) -> bool:
    """Uncompressed (N, width) states in chunks of CHUNK_ROWS x CHUNK_UNITS that tile the width."""
    return (ds.ndim == 2 and ds.chunks == (CHUNK_ROWS, CHUNK_UNITS) and ds.compression is None
            and ds.shape[1] % CHUNK_UNITS == 0)


def _direct_chunks(ds: h5py.Dataset, rows: np.ndarray, first: int) -> None:
    """Whole chunks (``first`` on a chunk boundary, a multiple of CHUNK_ROWS rows) written
    as they are stored, past HDF5's chunk cache and hyperslab copying, which cost more
    than the arithmetic when every array is recorded. Nothing else ever writes these
    chunks (the rows at either end go through :func:`_slab`), so the cache holds no
    stale copy of them."""
    width = rows.shape[1]
    # (chunks along the char axis, chunks along the units, CHUNK_ROWS, CHUNK_UNITS)
    tiles = rows.reshape(-1, CHUNK_ROWS, width // CHUNK_UNITS, CHUNK_UNITS).transpose(0, 2, 1, 3)
    tiles = np.ascontiguousarray(tiles)
    for i in range(tiles.shape[0]):
        for j in range(tiles.shape[1]):
            ds.id.write_direct_chunk((first + i * CHUNK_ROWS, j * CHUNK_UNITS), tiles[i, j])
