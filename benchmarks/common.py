"""What several benchmark scripts share. Scripts run as ``python benchmarks/NAME.py``, so
this folder is on sys.path and they import it as ``common``."""
from __future__ import annotations

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
