"""The compiled recording kernel (csrc/lstm_record.cpp): building it, caching it, and the
rule for using it.

It is built only on request (``rnnviz kernel --build``, or ``rnnviz dump --kernel on``)
with PyTorch's extension builder (a C++ compiler and ninja), then timed against pure
PyTorch on this machine. The library, that speed-up and a failed attempt are cached
together in one folder under PyTorch's extension cache (``TORCH_EXTENSIONS_DIR``,
default ``~/.cache/torch_extensions``), named after the source, the compiler flags, the
CPU, PyTorch and Python, but not the checkout: every copy of rnnviz on the machine
shares one build. ``auto`` uses a built kernel only where it measured at least
``MIN_SPEEDUP`` times pure PyTorch; a failed build is not retried until asked
(``rnnviz kernel --build``) or until the cache folder is removed.

    lib = kernel_for("auto")  # the compiled module, or None: record with pure PyTorch
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import shutil
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import RnnvizError

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "csrc" / "lstm_record.cpp"
MODES = ("auto", "on", "off")
MIN_SPEEDUP = 1.15  # auto: the kernel must beat pure PyTorch by this much on this machine
RECORD = "build.json"  # in the cache folder: what was built, with which flags, how fast, or why it failed
# PyTorch's builder waits forever on a lock file left by a build that was killed (kill -9);
# a build takes well under this, so an older lock is stale.
STALE_LOCK_SECONDS = 600


def flag_sets() -> list[list[str]]:
    """Compiler flags to try, best first. GCC and Clang tune for this CPU (-march=native:
    AVX-512 and F16C where it has them); if the compiler refuses that, plain -O3. MSVC
    (Windows) takes neither spelling. RNNVIZ_KERNEL_FLAGS replaces them (space-separated),
    e.g. to build without AVX-512 on a CPU that has it."""
    given = os.environ.get("RNNVIZ_KERNEL_FLAGS")
    if given:
        return [given.split()]
    if os.name == "nt":
        return [["/O2", "/fp:fast"], ["/O2"]]
    return [["-O3", "-march=native", "-ffast-math"], ["-O3", "-ffast-math"]]


@functools.lru_cache(maxsize=None)
def cpu() -> str:
    """The CPU's model name and instruction-set flags (Linux's /proc/cpuinfo; elsewhere
    what the platform module knows)."""
    model, flags = platform.processor(), ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() == "model name" and not model:
                    model = value.strip()
                elif key.strip() in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(value.split()))
    except OSError:
        pass
    return f"{platform.machine()} {model} | {flags}"


def vector_flags() -> str:
    """The instruction-set flags a speed figure depends on, e.g. 'avx2 avx512f fma f16c'."""
    flags = cpu().rpartition("|")[2].split()
    return " ".join(f for f in flags if f in ("avx2", "avx512f", "avx512bw", "fma", "f16c", "asimd", "neon"))


def kernel_name(source: Path | None = None, prefix: str = "rnnviz_lstm") -> str:
    """Changes with whatever the compiled library depends on, and with nothing else (not
    the checkout's path): a build is only loaded where it was made for this code, these
    flags, this kind of CPU (-march=native), this PyTorch and this Python. ``source`` and
    ``prefix`` name another of rnnviz's kernels (the analysis kernel, rnnviz.rankkernel)."""
    import torch
    key = [(source or SOURCE).read_bytes(), json.dumps(flag_sets()).encode(), cpu().encode(),
           torch.__version__.encode(), sys.implementation.cache_tag.encode()]
    return f"{prefix}_" + hashlib.sha256(b"\0".join(key)).hexdigest()[:12]


def cache_dir(name: str | None = None) -> Path:
    """A build's folder in PyTorch's extension cache (this kernel's by default)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "torch_extensions")
    return Path(root) / "rnnviz" / (name or kernel_name())


def disabled() -> bool:
    """RNNVIZ_KERNEL=0 (or off, no, false): never use the kernel."""
    return os.environ.get("RNNVIZ_KERNEL", "1").strip().lower() in ("0", "off", "no", "false")


def build_record() -> dict | None:
    """What the cache holds for this build: {"status": "built", "speedup": ..., ...},
    {"status": "failed", "error": ...}, or None (never built)."""
    try:
        return json.loads((cache_dir() / RECORD).read_text())
    except (OSError, ValueError):
        return None


def kernel_for(mode: str):
    """The kernel under ``mode``, or None (record with pure PyTorch): "off" never; "on"
    the built one, building it first if it never was; "auto" the built one where its
    measured speed-up is at least MIN_SPEEDUP, and never builds."""
    if mode not in MODES:
        raise RnnvizError(f"--kernel: expected one of {', '.join(MODES)}, found {mode!r}")
    if mode == "off" or disabled():
        return None
    record = build_record()
    if mode == "on":
        if record is None:
            return build_kernel()
        if record["status"] == "failed":
            log.warning("recording with pure PyTorch: the kernel failed to build before (%s); "
                        "`rnnviz kernel --build` tries again", record.get("error", "?"))
            return None
        return load_kernel()
    if record is not None and record["status"] == "built" and record.get("speedup", 0) >= MIN_SPEEDUP:
        return load_kernel()
    return None


def why(mode: str, used: bool) -> str:
    """One line on which recorder ran and why, for the dump's report."""
    if used:
        return f"the compiled kernel ({build_record()['speedup']:.2f}x pure PyTorch here)"
    record = None if mode == "off" or disabled() else build_record()
    if record is None:
        return "pure PyTorch" + ("" if mode == "off" or disabled() else
                                 " (the compiled kernel is not built: `rnnviz kernel --build`)")
    if record["status"] == "failed":
        return f"pure PyTorch (the compiled kernel failed to build: {record.get('error', '?')})"
    return (f"pure PyTorch (the compiled kernel measured {record['speedup']:.2f}x it on this CPU, "
            f"under the {MIN_SPEEDUP}x that auto asks for; --kernel on uses it anyway)")


def describe() -> str:
    """What ``rnnviz kernel`` prints: the cache folder, the CPU, and the build's state."""
    record = build_record()
    lines = [f"cache:  {cache_dir()}", f"cpu:    {cpu().partition(' | ')[0]} ({vector_flags()})"]
    if disabled():
        lines.append("state:  disabled by RNNVIZ_KERNEL")
    elif record is None:
        lines.append("state:  not built; `rnnviz kernel --build` builds it")
    elif record["status"] == "failed":
        lines.append(f"state:  the build failed ({record.get('error', '?')}, {record.get('when', '?')}); "
                     f"`rnnviz kernel --build` tries again")
    else:
        t = record["timings"]
        use = "used by --kernel auto" if record["speedup"] >= MIN_SPEEDUP else \
            f"not used by --kernel auto (under {MIN_SPEEDUP}x)"
        lines += [f"state:  built {record['when']} with {' '.join(record['flags'])} "
                  f"in {record['build_seconds']:.0f} s; {use}",
                  f"speed:  {record['speedup']:.2f}x pure PyTorch ({t['model']} LSTM, every point, float16, "
                  f"1 thread): one text {t['kernel_one_text']:,} against {t['pytorch_one_text']:,} chars/s, "
                  f"16 files {t['kernel_16_files']:,} against {t['pytorch_16_files']:,}"]
    return "\n".join(lines)


_LOADED: dict[str, object] = {}  # library path -> module: each is imported once per process


def load_kernel():
    """The built kernel, imported straight from the cache (no compiler, no ninja); None
    if there is none."""
    record = build_record()
    if disabled() or record is None or record.get("status") != "built":
        return None
    path = str(cache_dir() / record["library"])
    if path not in _LOADED:
        try:
            import torch  # noqa: F401  the library links against it
            spec = importlib.util.spec_from_file_location(record["module"], path)
            lib = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(lib)
        except (ImportError, OSError) as e:
            log.warning("recording with pure PyTorch: the cached kernel %s does not load (%s); "
                        "`rnnviz kernel --build` rebuilds it", path, _first_line(e))
            return None
        _LOADED[path] = lib
    return _LOADED[path]


def build_kernel(retry: bool = False):
    """Compile the kernel, time it against pure PyTorch, and cache both; the module, or
    None (with a warning) where it cannot be built. A build that failed before is only
    tried again with ``retry``."""
    if disabled():
        return None
    record = build_record()
    if record is not None and record["status"] == "failed" and not retry:
        return kernel_for("on")  # says why, returns None
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale_lock(folder)
    _ninja_on_path()
    # The same source path in every checkout, or ninja would rebuild for each of them.
    source = folder / SOURCE.name
    if not source.exists() or source.read_bytes() != SOURCE.read_bytes():
        shutil.copyfile(SOURCE, source)
    if not (folder / f"{kernel_name()}.so").exists():     # else loaded as built
        log.info("building rnnviz's recording kernel (once per machine; 30 s to a few minutes)")
    started, error, lib = time.perf_counter(), "", None
    for flags in flag_sets():
        try:
            from torch.utils import cpp_extension
            lib = cpp_extension.load(kernel_name(), [str(source)], extra_cflags=flags,
                                     build_directory=str(folder), verbose=False)
            break
        except Exception as e:  # no compiler, no ninja, flags it refuses: try the next set
            error = _first_line(e)
            log.info("the kernel did not build with %s: %s", " ".join(flags), error)
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if lib is None:
        _write_record({"status": "failed", "error": error, "when": now, "cpu": cpu()})
        log.warning("recording with pure PyTorch: the kernel could not be built (%s)", error)
        return None
    from .backends import measure_speedup
    timings = measure_speedup(lib)
    _write_record({"status": "built", "module": lib.__name__, "library": Path(lib.__file__).name,
                   "flags": flags, "build_seconds": round(time.perf_counter() - started, 1),
                   "speedup": timings["speedup"], "timings": timings, "when": now, "cpu": cpu(),
                   "vector_flags": vector_flags()})
    _LOADED[lib.__file__] = lib
    log.info("built the recording kernel: %.2fx pure PyTorch on this machine (%s); auto uses it "
             "from %.2fx", timings["speedup"], vector_flags(), MIN_SPEEDUP)
    return lib


def _write_record(record: dict) -> None:
    path = cache_dir() / RECORD
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1))
    os.replace(tmp, path)  # readers never see half a record


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:160]


def _ninja_on_path() -> None:
    """PyTorch runs ``ninja`` from PATH; the pip package's copy is not on it when rnnviz
    runs from a virtual environment that was never activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja
        except ImportError:  # then the build fails and says so
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


def clear_stale_lock(folder: Path, max_age: float = STALE_LOCK_SECONDS) -> bool:
    """Remove the build lock of a killed build (older than ``max_age`` s); True if removed."""
    lock = folder / "lock"
    try:
        if time.time() - lock.stat().st_mtime <= max_age:
            return False
        lock.unlink()
    except OSError:  # no lock: the usual case
        return False
    log.info("removed %s, left by a build that did not finish", lock)
    return True
