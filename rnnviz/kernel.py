"""The compiled recording kernel (csrc/lstm_record.cpp): one LSTM layer step by step,
emitting every gate and c as it goes, at the fused LSTM's speed.

It is built from source once per machine with PyTorch's own extension builder (a C++
compiler and ninja; about 30 s) and cached where PyTorch caches extensions
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``). Building costs as much
as recording about a million characters without it, so by default (``auto``) it is
built only for a job that size or larger, or when asked (``rnnviz dump --kernel on``);
once built, every job uses it. Where it cannot be built, or with ``off`` (also
``RNNVIZ_KERNEL=0``), the recorder falls back to pure PyTorch: the same numbers, about
half the speed.

    lib = load_kernel(build=True)  # the module, or None
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path

from .errors import RnnvizError

SOURCE = Path(__file__).parent / "csrc" / "lstm_record.cpp"
FLAGS = ["-O3", "-march=native", "-ffast-math"]
BUILD_FROM_STEPS = 1_000_000  # auto: build the kernel for jobs of this many lane-steps or more
# PyTorch's builder waits forever on a lock file left by a build that was killed (kill -9);
# a build takes well under this, so an older lock is stale.
STALE_LOCK_SECONDS = 600
MODES = ("auto", "on", "off")


def kernel_name() -> str:
    """Changes with the source, its location, the flags and the CPU, so a cached build is
    only ever one made for this code on this kind of CPU (-march=native: a build cached
    in a home folder shared with another kind of machine must not be loaded there).
    PyTorch rebuilds a cached extension whose source path changed, so two installs of
    rnnviz sharing one name would each rebuild it, silently, every time the other ran."""
    key = [SOURCE.read_bytes(), str(SOURCE.resolve()).encode(), " ".join(FLAGS).encode(), _cpu().encode()]
    digest = hashlib.sha256(b"\0".join(key))
    return f"rnnviz_lstm_{digest.hexdigest()[:12]}"


@functools.lru_cache(maxsize=None)
def _cpu() -> str:
    """The machine and its instruction-set flags (Linux's /proc/cpuinfo; elsewhere the platform)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        flags = platform.processor()
    return platform.machine() + " " + " ".join(sorted(flags.split(":", 1)[-1].split()))


def kernel_for(mode: str, steps: int):
    """The kernel for a job of ``steps`` characters (lane-steps) under ``mode``: "on" builds
    it if need be, "auto" too for a job of BUILD_FROM_STEPS or more (else only if built),
    "off" never uses it. None where it cannot be had."""
    if mode not in MODES:
        raise RnnvizError(f"--kernel: expected one of {', '.join(MODES)}, found {mode!r}")
    if mode == "off":
        return None
    if mode == "on" or steps >= BUILD_FROM_STEPS or is_built():
        return load_kernel(build=True)
    return None


def disabled() -> bool:
    """RNNVIZ_KERNEL=0 (or off, no, false): never use the kernel."""
    return os.environ.get("RNNVIZ_KERNEL", "1").strip().lower() in ("0", "off", "no", "false")


def is_built() -> bool:
    """Whether the kernel for this source and these flags is already compiled and cached."""
    build_dir = None if disabled() else _build_dir()
    return build_dir is not None and any(build_dir.glob(f"{kernel_name()}*.so"))


def _build_dir() -> Path | None:
    """Where PyTorch builds and caches the kernel; None if its private helper has moved."""
    try:
        from torch.utils import cpp_extension
        return Path(cpp_extension._get_build_directory(kernel_name(), False))
    except Exception:
        return None


def _ninja_on_path() -> None:
    """PyTorch runs ``ninja`` from PATH; the pip package's copy is not on it when rnnviz
    runs from a virtual environment that was never activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:  # then the build fails and says so
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def clear_stale_lock(max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock of a killed build (older than ``max_age`` s); True if removed."""
    build_dir = _build_dir()
    if build_dir is None:
        return False
    lock = build_dir / "lock"
    try:
        if time.time() - lock.stat().st_mtime <= max_age:
            return False
        lock.unlink()
    except OSError:  # no lock: the usual case
        return False
    print(f"note: removed {lock}, left by a build that did not finish", file=sys.stderr)
    return True


@functools.lru_cache(maxsize=None)
def load_kernel(build: bool = True):
    """The compiled module (built first if need be and ``build``); None (with a one-line
    note when a build failed) where it cannot be had."""
    if disabled():
        return None
    try:
        from torch.utils import cpp_extension
    except ImportError:  # a stripped-down torch
        return None
    built = is_built()
    if not built and not build:
        return None
    if not built:
        print("note: building rnnviz's recording kernel (once per machine, about 30 s)", file=sys.stderr)
        clear_stale_lock()
        _ninja_on_path()
    try:
        return cpp_extension.load(kernel_name(), [str(SOURCE)], extra_cflags=FLAGS, verbose=False)
    except Exception as e:  # no compiler, no ninja, a failed build: all mean the same here
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        print(f"note: recording with pure PyTorch (about half the speed): the kernel could not be "
              f"built ({first})", file=sys.stderr)
        return None
