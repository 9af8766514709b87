"""Where the time of one `rnnviz analyze` goes: wall time per kernel call and per phase.

Runs the default analysis (every character, exactly, all built-in features) of a dump once,
with a timer around each call of the analysis kernel (reading chunks, counting, the pass
of sums, the per-unit tables, the null's rank columns) and around the phases in Python
(features, each point's scan, the null and the tables), and prints the seconds of each,
the whole run's wall and CPU time, and the threads the kernel used. Phases contain the
kernel calls made inside them. Use a dump that `analyze_speed.py --keep FOLDER` wrote:

    python benchmarks/analyze_speed.py --keep /tmp/bench
    python benchmarks/analyze_phases.py /tmp/bench/bench_1000000.h5
"""
from __future__ import annotations

import argparse
import collections
import json
import time

KERNEL_CALLS = ("gather", "count_keys", "unit_table", "accumulate", "rank_rows", "centre_rows")


def timed(owner, name: str, label: str, totals: collections.Counter) -> None:
    """Replace owner.name by the same function, its wall time added to totals[label]."""
    inner = getattr(owner, name)

    def call(*args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            totals[label] += time.perf_counter() - t
    setattr(owner, name, call)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dump", help="a dump (for example one analyze_speed.py --keep wrote)")
    args = ap.parse_args()
    import rnnviz.analyze as an       # torch, pandas, h5py: imported before the timing
    from rnnviz.rankkernel import rank_kernel, threads
    lib = rank_kernel()
    totals: collections.Counter = collections.Counter()
    if lib is not None:
        for name in KERNEL_CALLS:
            if hasattr(lib, name):
                timed(lib, name, f"kernel {name}", totals)
    for name, label in (("_feature_columns", "features"), ("scan_point", "scan (all points)"),
                        ("build_tables", "null and tables")):
        timed(an, name, label, totals)
    wall, cpu = time.perf_counter(), time.process_time()
    an.analyze_dump(args.dump, store=False)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"analysis: {wall:.2f} s wall, {cpu:.2f} s CPU ({cpu / wall:.2f} cores busy on average); "
          f"kernel: {' '.join(lib.flags) if lib is not None else 'none (numpy)'}, {threads()} threads")
    for label, seconds in totals.most_common():
        print(f"  {label:22} {seconds:7.2f} s  {seconds / wall:6.1%}")
    print(json.dumps({"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "threads": threads(),
                      **{label: round(s, 3) for label, s in totals.items()}}))


if __name__ == "__main__":
    main()
