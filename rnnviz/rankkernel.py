"""The analysis kernel (csrc/rank_count.cpp): the loops of rnnviz.exact and rnnviz.grouped
that touch every value of a dump (counting float16 values, their midranks, the sums per
group of characters), on every core the process may use.

Built with PyTorch's extension builder the first time an analysis needs it (a C++
compiler and ninja; about 30 s, once per machine) and cached beside the recording kernel
under PyTorch's extension cache, named after the source, the flags, the CPU, PyTorch and
Python (rnnviz.kernel's conventions). A failed build is remembered in that folder and not
tried again until the folder is removed. Without it, or with ``RNNVIZ_KERNEL=0``, numpy
does the same work, several times slower. ``RNNVIZ_KERNEL_FLAGS`` replaces the compiler
flags (e.g. ``-O3 -march=x86-64-v3 -ffast-math`` for an AVX2-only build) and
``RNNVIZ_THREADS`` the number of threads.
"""
from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import torch

from . import kernel
from .kernel import _first_line, _ninja_on_path, clear_stale_lock, cpu, disabled, flag_sets

log = logging.getLogger(__name__)
SOURCE = Path(__file__).parent / "csrc" / "rank_count.cpp"
FAILED = "failed.json"


def kernel_name() -> str:
    return kernel.kernel_name(SOURCE, prefix="rnnviz_rank")


def cache_dir() -> Path:
    return kernel.cache_dir(kernel_name())


@functools.lru_cache(maxsize=None)
def rank_kernel():
    """The compiled module (built first if need be), or None: numpy does the same."""
    if disabled():
        return None
    folder = cache_dir()
    if (folder / FAILED).exists():
        return None
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(folder)
    _ninja_on_path()
    source = folder / SOURCE.name       # one path for every checkout: ninja builds it once
    if not source.exists() or source.read_bytes() != SOURCE.read_bytes():
        shutil.copyfile(SOURCE, source)
    if not (folder / f"{kernel_name()}.so").exists():     # else loaded as built
        log.info("building rnnviz's analysis kernel (once per machine, about 30 s)")
    error = ""
    for flags in flag_sets():
        try:
            from torch.utils import cpp_extension
            lib = cpp_extension.load(kernel_name(), [str(source)], extra_cflags=flags,
                                     build_directory=str(folder), verbose=False)
            lib.flags = flags          # what a speed figure was measured with
            return lib
        except Exception as e:   # no compiler, no ninja, flags it refuses: try the next set
            error = _first_line(e)
    (folder / FAILED).write_text(json.dumps({"error": error, "cpu": cpu()}))
    log.warning("analysing with numpy (several times slower): the analysis kernel could not be built (%s)",
                error)
    return None


def threads() -> int:
    """Threads for the kernel: the cores this process may use (RNNVIZ_THREADS to choose)."""
    given = os.environ.get("RNNVIZ_THREADS", "")
    if given.isdigit() and int(given) > 0:
        return int(given)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def as_bits(bits: np.ndarray) -> torch.Tensor:
    """float16 bit patterns as the kernel takes them: (c, H) int16, contiguous row by row or
    unit by unit (each unit's values consecutive, as the analysis reads them from chunks:
    F order, or rows of a whole F-order column)."""
    from .dumpfile.direct import unit_by_unit
    if not (bits.flags.c_contiguous or unit_by_unit(bits)):
        bits = np.ascontiguousarray(bits)
    return torch.from_numpy(bits.view(np.int16))
