"""`rnnviz dump` against the plain forward on two checkouts, interleaved in one run.

Each round runs benchmarks/dump_speed.py's ``measure`` (2x256, one long text and the same
characters as separate files, best of 2) in a fresh process on checkout A, then on B (the next
round B first, then A: ABBA), so that the other jobs on a shared machine weigh on both alike.
Prints the CPU and its vector flags, each round's c/a (dump chars/s over the plain forward's)
with the backend that ran, and the medians. ``--cpu`` also counts CPU seconds (user + system,
every thread) per character of the plain forward and of the dump, best of 3: a measure of the
work that other jobs stretch less than the wall clock. Each checkout's kernel must be built
already (`rnnviz kernel --build` there; older checkouts build theirs on first use).

    git worktree add /tmp/before bbd2551
    python benchmarks/dump_ab.py /tmp/before .     # before the backends vs this checkout
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def cpu_seconds() -> float:
    import resource
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cpu_per_char(ds, files: list[Path], work: Path) -> dict:
    """Best-of-3 CPU microseconds per character: the plain forward (1 thread) and the dump."""
    import torch
    from rnnviz.dump import DumpOptions, _Text, dump
    from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
    from rnnviz.text import read_sources
    sources = read_sources(files)
    ckpt = ds.make_checkpoint(work / "cpu.pt", 2, 256, "".join(s.text for s in sources))
    saved = torch.load(ckpt, weights_only=True)
    model = CharLSTM(CharLSTMConfig(**saved["config"]))
    model.load_state_dict(saved["state_dict"])
    model.eval()
    opt, text = DumpOptions(force=True, progress=False), _Text(sources, Vocab(saved["vocab"]), None)
    best = {"a": float("inf"), "c": float("inf")}
    for _ in range(3):
        start = cpu_seconds()
        ds.plain_forward(model, text, opt, 1)
        best["a"] = min(best["a"], cpu_seconds() - start)
        ds.settle(work / "cpu.h5")
        start = cpu_seconds()
        dump(ckpt, files, work / "cpu.h5", DumpOptions(force=True, progress=False, threads=1))
        best["c"] = min(best["c"], cpu_seconds() - start)
    return {"a_cpu_us": 1e6 * best["a"] / text.n, "c_cpu_us": 1e6 * best["c"] / text.n}


def child(tree: Path, chars: int, cpu: bool) -> None:
    """One round on ``tree``: its own rnnviz and its own dump_speed.py."""
    sys.path[:0] = [str(tree), str(tree / "benchmarks")]
    import dump_speed as ds
    import rnnviz
    assert Path(rnnviz.__file__).resolve().is_relative_to(tree.resolve()), rnnviz.__file__
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for workload, one in (("long", True), ("files", False)):
            files = ds.stdlib_files(chars, work / workload, one_file=one)
            fig = ds.measure(2, 256, files, work, 2, 400, [1], False)
            out[workload] = {"files": fig["files"], "a": fig["a_chars_per_s"], "c": fig["c_chars_per_s"],
                             "c_over_a": fig["c_over_a"], "backend": fig.get("c_backend", "(not named)")}
            if cpu:
                out[workload].update(cpu_per_char(ds, files, work))
    print(json.dumps(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path, help="checkout A (e.g. the code before a change)")
    ap.add_argument("b", type=Path, nargs="?", default=Path("."), help="checkout B [default: this one]")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per checkout (ABBA order)")
    ap.add_argument("--chars", type=int, default=60_000, help="characters per workload")
    ap.add_argument("--cpu", action="store_true", help="also CPU seconds per character (doubles the time)")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args.child, args.chars, args.cpu)
    sys.path.insert(0, str(Path(__file__).parent.parent))
    from rnnviz.kernel import cpu, vector_flags
    print(f"CPU: {cpu().partition(' | ')[0]}; vector flags: {vector_flags()}", flush=True)
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for name in ("AB" if r % 2 == 0 else "BA"):
            tree = (args.a if name == "A" else args.b).resolve()
            proc = subprocess.run([sys.executable, __file__, str(tree), "--child", str(tree), "--chars",
                                   str(args.chars)] + ["--cpu"] * args.cpu, capture_output=True, text=True, cwd=tree)
            if proc.returncode:
                sys.exit(f"{tree}: {proc.stderr.strip().splitlines()[-1]}")
            fig = json.loads(proc.stdout.strip().splitlines()[-1])
            runs[name].append(fig)
            print(f"round {r + 1} {name} ({tree.name}): " + "  ".join(
                f"{w} c/a {fig[w]['c_over_a']:.3f} (plain {fig[w]['a']:,.0f}, dump {fig[w]['c']:,.0f} chars/s, "
                f"{fig[w]['backend']})" + (f", CPU us/char plain {fig[w]['a_cpu_us']:.1f} dump {fig[w]['c_cpu_us']:.1f}"
                                            if "c_cpu_us" in fig[w] else "") for w in ("long", "files")), flush=True)
    medians = {name: {w: statistics.median(f[w]["c_over_a"] for f in runs[name]) for w in ("long", "files")}
               for name in runs}
    for w in ("long", "files"):
        print(f"median c/a, {w}: A {medians['A'][w]:.3f}  B {medians['B'][w]:.3f}  B/A {medians['B'][w] / medians['A'][w]:.2f}")
        if args.cpu:
            a, b = (statistics.median(f[w]["c_cpu_us"] for f in runs[n]) for n in "AB")
            print(f"median dump CPU us/char, {w}: A {a:.1f}  B {b:.1f}  B/A {b / a:.3f}")
    print(json.dumps({"cpu": cpu(), "chars": args.chars, "medians": medians, "runs": runs}))


if __name__ == "__main__":
    main()
