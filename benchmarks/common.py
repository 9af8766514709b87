"""What several benchmark scripts share. Scripts run as ``python benchmarks/NAME.py``, so
this folder is on sys.path and they import it as ``common``."""
from __future__ import annotations

import resource
import sysconfig
from pathlib import Path


def stdlib_text(n: int) -> tuple[str, list[tuple[str, int]]]:
    """About n chars of the running Python's standard-library .py files (cycled if need be),
    and (file name, length) per piece."""
    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    if not files:
        raise SystemExit("this Python ships no standard-library source files to benchmark on")
    parts, sources, total = [], [], 0
    while total < n:
        for f in files:
            t = f.read_text(errors="replace")[: n - total]
            if t:
                parts.append(t)
                sources.append((str(f), len(t)))
                total += len(t)
            if total >= n:
                break
    return "".join(parts), sources


def proc_status_bytes(field: str) -> int | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM, ...) in bytes; None off Linux."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    kb = next((line.split()[1] for line in status.splitlines() if line.startswith(field + ":")), None)
    return None if kb is None else int(kb) * 1024


def peak_rss_bytes() -> int:
    """This process's peak resident memory: VmHWM, which unlike ru_maxrss does not carry
    the parent's peak over through fork and exec; ru_maxrss where there is no /proc."""
    peak = proc_status_bytes("VmHWM")
    return peak if peak is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
