"""How long `rnnviz analyze` takes against simply reading the arrays it analyses.

A synthetic dump of a 2 x 256 model with every point recorded (c, h and four gates:
3072 units, float16, uncompressed, in the chunks `rnnviz dump` writes) over real
text (the standard library's .py files) is written for each size; then, each in a fresh
subprocess, every array is read once (the baseline) and the dump is analysed with the
default options: every character, exactly, all built-in features. The two alternate, three
rounds of one read and one analysis, and the fastest time of each is kept: a shared VM's
noise (the two are bound by memory, whose speed here swings by a third from minute to
minute) and its page cache, which it empties between runs, then slow the two alike; each
round's pair and ratio are printed too. Peak memory is each subprocess's VmHWM (the
largest over the rounds). It prints the CPU model and the instruction-set flags that
matter here; the last line is one JSON object.

    python benchmarks/analyze_speed.py            # 100k and 1M characters
    python benchmarks/analyze_speed.py --quick    # 20k and 100k characters, under a minute
    RNNVIZ_KERNEL_FLAGS="-O3 -march=x86-64-v3 -ffast-math" python benchmarks/analyze_speed.py
                                                  # the kernel built for AVX2 (no AVX-512)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import peak_rss_bytes, stdlib_text

LAYERS, HIDDEN = 2, 256
ROUNDS = 3                # rounds of one read and one analysis, alternating; the fastest of each is kept


def make_dump(path: Path, n: int) -> None:
    """Follows docs/dump-format.md (written by rnnviz.dumpfile in the chunks rnnviz dump uses);
    states are tiled random blocks, written 64k rows at a time."""
    import pandas as pd
    from rnnviz.dumpfile import DumpWriter
    from rnnviz.names import KINDS, point_name
    text, sources = stdlib_text(n)
    n = len(text)
    vocab = ["\ufffd"] + sorted(set(text))
    codes = np.frombuffer(text.encode("utf-32-le"), np.uint32)
    lut = np.zeros(codes.max() + 1, np.int32)
    lut[[ord(c) for c in vocab[1:]]] = np.arange(1, len(vocab))
    points = [point_name(layer, kind) for layer in range(LAYERS) for kind in KINDS]
    rng = np.random.default_rng(0)
    starts = np.cumsum([0] + [length for _, length in sources[:-1]])
    lengths = [length for _, length in sources]
    w = DumpWriter.create(path, {"num_layers": LAYERS, "vocab": vocab, "unknown_chars": 0,
                                 "model_config": {"num_layers": LAYERS, "hidden_size": HIDDEN},
                                 "checkpoint": "synthetic", "checkpoint_sha256": "0" * 64,
                                 "versions": {"rnnviz": "benchmark"}, "command": "benchmarks/analyze_speed.py"},
                          codes, lut[codes], pd.DataFrame({"name": [s for s, _ in sources], "start": starts,
                                                           "length": lengths, "size_bytes": lengths,
                                                           "sha256": ["0" * 64] * len(sources)}),
                          points, hidden_size=HIDDEN, topk=3)
    for point in points:
        kind = point.split(".")[1]
        base = rng.standard_normal((1 << 16, HIDDEN)).astype(np.float32)
        base = {"c": 2 * base, "h": np.tanh(base), "gate_g": np.tanh(base)}.get(kind, 1 / (1 + np.exp(-2 * base)))
        base = base.astype(np.float16)
        for s in range(0, n, 1 << 16):
            w.put(point, np.roll(base, s // 7, axis=0)[: min(1 << 16, n - s)], s)
    w.put("loss", rng.exponential(1.0, n).astype(np.float32))
    w.put("topk_ids", rng.integers(0, len(vocab), (n, 3)).astype(np.int32))
    w.put("topk_probs", np.full((n, 3), 0.2, np.float32))
    w.finish()


def child_read(path: str) -> dict:
    """Read every recorded array whole, in row blocks, in its stored dtype, once."""
    from rnnviz.dumpfile import open_dump
    t = time.perf_counter()
    with open_dump(path) as d:
        for ds in d.values():
            buf = np.empty((1 << 16, ds.shape[1]), ds.dtype)
            for s in range(0, ds.shape[0], 1 << 16):
                e = min(ds.shape[0], s + (1 << 16))
                ds.read_direct(buf, np.s_[s:e], np.s_[0:e - s])
    return {"seconds": time.perf_counter() - t}


def child_analyze(path: str, store: bool, max_chars) -> dict:
    """One analysis with the default options (besides ``store`` and ``max_chars``), timed."""
    import rnnviz.analyze as an   # imports torch, pandas, h5py: not part of the timing
    from rnnviz.exact import rank_kernel
    from rnnviz.rankkernel import threads
    rank_kernel()                 # built once per machine, not part of the timing
    t = time.perf_counter()
    result = an.analyze_dump(path, store=store, max_chars=max_chars)
    seconds, peak = time.perf_counter() - t, peak_rss_bytes() / 2**20     # before features_seconds
    return {"seconds": seconds, "peak_mb": peak, "units": result.info["units"], "features": len(result.features),
            "analysed_chars": result.info["analysed_chars"], "sampled": result.info["sampled"],
            "kernel": " ".join(rank_kernel().flags) if rank_kernel() is not None else "none (numpy)",
            "threads": threads(), "features_seconds": features_seconds(path)}


def features_seconds(path: str) -> float:
    """Every built-in feature over the whole text of the dump (part of the analysis above)."""
    from rnnviz.dumpfile import open_dump
    from rnnviz.features import TextIndex, feature_values, select_features
    with open_dump(path) as d:
        text, sources = d.text, d.sources
    t = time.perf_counter()
    ti = TextIndex(text, sources)
    for feat in select_features():
        feature_values(ti, feat)
    return time.perf_counter() - t


def run_child(*args) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *map(str, args)], capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"child {args[0]} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="20k and 100k characters (under a minute)")
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=Path, help="folder to keep the dumps in (reused when present)")
    args = ap.parse_args()
    if args.child:
        job, path, *rest = args.child
        if job == "make":
            make_dump(Path(path), int(rest[0]))
            res = {}
        else:
            res = child_read(path) if job == "read" else child_analyze(
                path, rest[0] == "store", None if rest[1] == "all" else int(rest[1]))
        res.setdefault("peak_mb", peak_rss_bytes() / 2**20)
        print(json.dumps(res))
        return
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        run(args, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="rnnviz-bench-") as folder:   # GBs: never left behind
            run(args, Path(folder))


def cpu() -> dict:
    """The CPU model, core count and the flags that decide the speed of these loops."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name") and model in ("", platform.machine()):
                model = line.split(":", 1)[1].strip()
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    wanted = ("avx2", "fma", "f16c", "avx512f", "avx512bw")
    return {"cpu": model, "cores": os.cpu_count(), "flags": [f for f in wanted if f in flags],
            "no": [f for f in wanted if f not in flags]}


def run(args, folder: Path) -> None:
    sizes = (20_000, 100_000) if args.quick else (100_000, 1_000_000)
    machine = cpu()
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores; has {', '.join(machine['flags']) or 'none of'} "
          f"(no {', '.join(machine['no']) or '-'})")
    figures = {"model": f"{LAYERS}x{HIDDEN}, all 6 points, float16", **machine}
    for n in sizes:
        path = folder / f"bench_{n}.h5"
        if not path.exists():
            t = time.perf_counter()
            run_child("make", path, n)   # in a child: its memory is not the parent's
            print(f"wrote {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t:.1f} s")
        rounds = []
        for i in range(ROUNDS):
            pair = run_child("read", path), run_child("analyze", path, "no-store", "all")
            rounds.append(pair)
            print(f"  {n:,} chars, round {i + 1}: read {pair[0]['seconds']:.2f} s, analyze {pair[1]['seconds']:.2f} s "
                  f"({pair[1]['seconds'] / pair[0]['seconds']:.2f}x)")
        read = min((r for r, _ in rounds), key=lambda r: r["seconds"])
        rank = min((a for _, a in rounds), key=lambda a: a["seconds"])
        read["peak_mb"] = max(r["peak_mb"] for r, _ in rounds)
        rank["peak_mb"] = max(a["peak_mb"] for _, a in rounds)
        assert rank["analysed_chars"] == n and not rank["sampled"], rank
        tag = f"{n // 1000}k"
        figures[f"rounds_{tag}"] = [[round(r["seconds"], 3), round(a["seconds"], 3)] for r, a in rounds]
        figures.update({f"read_s_{tag}": round(read["seconds"], 3), f"analyze_s_{tag}": round(rank["seconds"], 3),
                        f"ratio_to_read_{tag}": round(rank["seconds"] / read["seconds"], 2),
                        f"peak_mb_read_{tag}": round(read["peak_mb"]), f"peak_mb_analyze_{tag}": round(rank["peak_mb"]),
                        f"analysed_chars_{tag}": rank["analysed_chars"], f"features_s_{tag}":
                        round(rank["features_seconds"], 3), "units": rank["units"], "features": rank["features"],
                        "kernel": rank["kernel"]})
        print(f"{n:>9,} chars: read every array {read['seconds']:.2f} s | analyze, all {rank['analysed_chars']:,} "
              f"chars {rank['seconds']:.2f} s ({rank['seconds'] / read['seconds']:.2f}x read) | peak memory: "
              f"read {read['peak_mb']:.0f} MB, analyze {rank['peak_mb']:.0f} MB | the {rank['features']} features "
              f"over the text {rank['features_seconds']:.2f} s | kernel: {rank['kernel']}, {rank['threads']} threads")
    small, large = (f"{n // 1000}k" for n in sizes)
    figures["peak_mb_growth"] = round(figures[f"peak_mb_analyze_{large}"] - figures[f"peak_mb_analyze_{small}"])
    print(f"peak memory growth from {small} to {large} chars: {figures['peak_mb_growth']} MB")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
