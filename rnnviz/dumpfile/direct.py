"""Reading a dump's uncompressed chunked arrays chunk by chunk, past HDF5's hyperslab copies.

The exact analysis reads every state array (once, or once per pass for long texts); through
HDF5's hyperslab selection that took longer than the analysis of what it read. An array written by ``rnnviz dump``
(uncompressed, in chunks of CHUNK_ROWS x CHUNK_UNITS) lies in the file chunk by chunk, so
the analysis kernel (:mod:`rnnviz.rankkernel`) reads whole chunks at the places HDF5 lists
and copies their rows out (all units, or a few chunks' worth), on every core, without
Python's lock. Nothing is mapped into memory: the process holds what it asked for (a block,
or a group of units' whole column).
Anything else (compressed or filtered arrays, chunks never written, other byte orders, no
kernel, no ``pread``) is read through h5py.
"""
from __future__ import annotations

import os
import sys
import weakref

import h5py
import numpy as np

from ..errors import RnnvizError

_NATIVE = ("=", "|", "<" if sys.byteorder == "little" else ">")
_SAME_SIZE = {1: np.uint8, 2: np.int16, 4: np.int32, 8: np.int64}


def unit_by_unit(a: np.ndarray) -> bool:
    """Whether (c, W) ``a`` holds each unit's c items one after another, as the analysis
    kernel takes them: F order, or rows of a longer F-order column (units further apart)."""
    return a.ndim == 2 and (a.flags.f_contiguous or (a.strides[0] == a.itemsize
                                                     and a.strides[1] >= a.shape[0] * a.itemsize))


class ChunkReader:
    """Rows of one (N, H) chunked, uncompressed array, read chunk by chunk from its file."""

    def __init__(self, fd: int, offsets: np.ndarray, ds: h5py.Dataset, path, lib):
        import torch                       # the kernel's module brings it; plain reading does not
        self._fd, self._offsets = fd, torch.from_numpy(offsets)
        self.shape, self.dtype, self.chunks, self.path, self.name = ds.shape, ds.dtype, ds.chunks, path, ds.name
        self._lib = lib
        weakref.finalize(self, os.close, fd)

    @classmethod
    def open(cls, ds: h5py.Dataset, path) -> "ChunkReader | None":
        """The array ``ds`` of the file at ``path`` read this way, or None where it cannot be."""
        from ..rankkernel import rank_kernel
        lib = rank_kernel()
        if (lib is None or not hasattr(lib, "gather") or ds.ndim != 2 or ds.chunks is None or 0 in ds.shape
                or ds.id.get_create_plist().get_nfilters() or ds.dtype.itemsize not in _SAME_SIZE
                or ds.dtype.byteorder not in _NATIVE or ds.dtype.kind not in "fiu"):
            return None
        cr, cu = ds.chunks
        offsets = np.full((-(-ds.shape[0] // cr), -(-ds.shape[1] // cu)), -1, np.int64)
        sizes = np.zeros(offsets.shape, np.int64)

        def place(info) -> None:
            i, j = info.chunk_offset[0] // cr, info.chunk_offset[1] // cu
            offsets[i, j], sizes[i, j] = info.byte_offset, info.size
        try:
            ds.id.chunk_iter(place)
        except (AttributeError, RuntimeError, ValueError, OSError):   # HDF5 before 1.14, or damaged
            return None
        chunk_bytes = cr * cu * ds.dtype.itemsize
        if (offsets < 0).any() or (sizes != chunk_bytes).any() or \
                int(offsets.max()) + chunk_bytes > os.path.getsize(path):
            return None      # chunks never written (fill values) or a cut file: h5py reads (or says so)
        return cls(os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0)), offsets, ds, path, lib)

    def read(self, lo: int, hi: int, cols=None, out: np.ndarray | None = None) -> np.ndarray:
        """Rows lo:hi (of ``cols``, increasing, or every unit) in the stored dtype, into ``out``
        (C-contiguous, or :func:`unit_by_unit`, as the analysis kernel takes them)."""
        import torch
        from ..rankkernel import threads
        out = np.empty((hi - lo, self.shape[1] if cols is None else len(cols)), self.dtype) if out is None else out
        by_unit = not out.flags.c_contiguous
        picked = torch.zeros(0, dtype=torch.int64) if cols is None else torch.as_tensor(np.asarray(cols, np.int64))
        if not self._lib.gather(self._fd, self._offsets, self.shape[1], self.chunks[0], self.chunks[1],
                                self.dtype.itemsize, lo, picked, torch.from_numpy(out.view(_SAME_SIZE[out.itemsize])),
                                by_unit, threads()):
            raise RnnvizError(f"{self.path}: cannot read {self.name} (a chunk ends past the end of the file); "
                              f"the file looks truncated or damaged")
        return out
