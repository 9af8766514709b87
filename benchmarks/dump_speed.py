"""How fast `rnnviz dump` records, against the plain forward pass and a naive loop.

For each model (random-init CharLSTM, 2x256 and 3x512; ``--cell gru`` etc. for the other cells) and each workload (one long
text; many short files recorded side by side) over the standard library's .py source,
in one run, best of a few interleaved repeats (the machine is shared):

  (a) the plain fused forward (CharLSTM.forward, logits included), nothing recorded,
      over the same chunks and batches the dump uses, at 1 and at 2 torch threads;
      the faster of the two is the baseline;
  (b) a naive per-step Python loop recording everything (record.record_naive + head),
      timed on a prefix of the text;
  (c) rnnviz.dump.dump end to end (checkpoint load, text read, every array, float16,
      file written), as `rnnviz dump` runs it by default (--kernel auto) on a machine
      where the compiled recorder was built on request (this script builds it first,
      as `rnnviz kernel --build` does, and reports how long that took and the speed-up
      it measured); the backend that ran is named with each figure. The full run also
      times (c) with pure PyTorch (--kernel off), for comparison.
      Each timed dump starts after the previous one's file is deleted and written back
      to disk (os.sync, untimed), as a user's single dump would find the machine.

Prints the CPU and its vector flags, chars/s, the ratios c/a and c/b and the file's
bytes per character. RNNVIZ_KERNEL_FLAGS builds the kernel with other compiler flags
(e.g. "-O3 -ffast-math -mavx2 -mfma -mf16c": the code a CPU without AVX-512 runs). ``--memory``
also dumps 100k and 1M characters (2x256, every array) in subprocesses and reports
each one's peak RSS (VmHWM: a forked child's ru_maxrss would include its parent's).
The last line is one JSON object with every figure.

    python benchmarks/dump_speed.py --quick     # under a minute
    python benchmarks/dump_speed.py --memory    # adds the 100k / 1M peak-memory runs
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import peak_rss_bytes
from rnnviz.checkpoint import save_checkpoint
from rnnviz.dump import DumpOptions, _Text, dump, plan
from rnnviz.kernel import build_kernel, build_record, cpu, vector_flags
from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
from rnnviz.recording import record_naive
from rnnviz.text import read_sources, stdlib_dir


def stdlib_files(total: int, folder: Path, one_file: bool) -> list[Path]:
    """Copies of the standard library's .py files (in sorted order) adding up to ``total`` chars,
    as one long file or as the separate files (the last one cut)."""
    texts, n = [], 0
    for path in sorted(stdlib_dir().rglob("*.py")):
        t = path.read_text(errors="replace")[: total - n]
        if len(t) > 200 or (t and n + len(t) == total):
            texts.append(t)
            n += len(t)
        if n >= total:
            break
    if one_file:
        texts = ["".join(texts)]
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, t in enumerate(texts):
        paths.append(folder / f"f{i:04d}.py")
        paths[-1].write_text(t)
    return paths


def make_checkpoint(path: Path, layers: int, hidden: int, text: str, cell: str = "lstm") -> Path:
    torch.manual_seed(0)
    vocab = Vocab.from_text(text)
    model = CharLSTM(CharLSTMConfig(vocab_size=len(vocab), num_layers=layers, hidden_size=hidden, cell=cell))
    save_checkpoint(path, model, vocab, meta={})
    return path


def plain_forward(model: CharLSTM, text: _Text, opt: DumpOptions, threads: int) -> float:
    """(a): the model's own forward over the dump's chunks and batches; seconds."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        with torch.inference_mode():
            state, before = None, None
            for chunk in plan(text.lengths, opt.batch_size, opt.chunk_chars):
                ids, _ = text.batch(chunk)
                carried = chunk.carry(state, before)  # a tuple: (h, c), or (h,) for a GRU or RNN
                if carried is not None and len(carried) == 1:
                    carried = carried[0]
                logits, state = model(torch.from_numpy(ids), carried)
                state = state if isinstance(state, tuple) else (state,)
                torch.log_softmax(logits, dim=-1)
                before = chunk
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(old)


def naive_loop(model: CharLSTM, text: _Text, opt: DumpOptions, budget: int) -> tuple[float, int]:
    """(b): the step-by-step loop over the first chunks (about ``budget`` chars); seconds, chars."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    chars, start = 0, time.perf_counter()
    try:
        with torch.inference_mode():
            for chunk in plan(text.lengths, opt.batch_size, opt.chunk_chars):
                ids, _ = text.batch(chunk)
                rec = record_naive(model.rnn, model.embed(torch.from_numpy(ids)))
                torch.log_softmax(model.head(rec.output), dim=-1).topk(opt.topk, dim=-1)
                chars += sum(min(chunk.t1, text.lengths[s]) - chunk.t0 for s in chunk.lanes)
                if chars >= budget:
                    break
        return time.perf_counter() - start, chars
    finally:
        torch.set_num_threads(old)


def settle(out: Path) -> None:
    """Before a timed dump: remove the last one and let the kernel write back its dirty
    pages. Otherwise each dump (1.2 GB for 200k chars) can stall in the kernel's
    writeback throttling on the gigabytes the previous repeats left, which a user's
    single dump does not meet (seen: one 200k dump took 29 s of wall for 7.6 s of CPU)."""
    out.unlink(missing_ok=True)
    os.sync()


def measure(layers: int, hidden: int, files: list[Path], work: Path, repeats: int,
            naive_budget: int, threads: list[int], compare_pytorch: bool, cell: str = "lstm") -> dict:
    sources = read_sources(files)
    ckpt = make_checkpoint(work / f"m{layers}x{hidden}.pt", layers, hidden, "".join(s.text for s in sources), cell)
    model = CharLSTM(CharLSTMConfig(**torch.load(ckpt, weights_only=True)["config"]))
    model.load_state_dict(torch.load(ckpt, weights_only=True)["state_dict"])
    model.eval()
    opt = DumpOptions(force=True, progress=False)
    text = _Text(sources, Vocab(torch.load(ckpt, weights_only=True)["vocab"]), None)
    n = text.n
    best: dict[str, float] = {}
    out = work / "bench.h5"
    for _ in range(repeats):  # interleaved, best of: other people share the cores
        for t in (1, 2):
            best[f"a_{t}"] = min(best.get(f"a_{t}", 1e9), plain_forward(model, text, opt, t))
        for t in threads:
            settle(out)
            result = dump(ckpt, files, out, DumpOptions(force=True, progress=False, threads=t))
            best[f"c_{t}"] = min(best.get(f"c_{t}", 1e9), result.seconds)
            backend = result.backend
    if compare_pytorch and cell == "lstm":  # GRUs and RNNs always record with pure PyTorch
        settle(out)
        result = dump(ckpt, files, out, DumpOptions(force=True, progress=False, kernel="off"))
        best["c_pytorch"] = result.seconds
    b_seconds, b_chars = naive_loop(model, text, opt, naive_budget)
    a = max(n / best["a_1"], n / best["a_2"])
    c = max(n / best[f"c_{t}"] for t in threads)
    b = b_chars / b_seconds
    fig = {"chars": n, "files": len(files), "a_chars_per_s": a, "a_1thread": n / best["a_1"],
           "a_2threads": n / best["a_2"], "b_chars_per_s": b, "c_chars_per_s": c,
           "c_over_a": c / a, "c_over_b": c / b, "bytes_per_char": out.stat().st_size / n,
           "c_backend": backend}
    for t in threads:
        fig[f"c_{t}thread{'s' if t > 1 else ''}"] = n / best[f"c_{t}"]
    if "c_pytorch" in best:
        fig["c_without_kernel"] = n / best["c_pytorch"]
    out.unlink()
    return fig


def memory_child(n: int, work: Path) -> None:
    """Dump n chars of stdlib source with a 2x256 model; print this process's peak RSS (bytes)."""
    files = stdlib_files(n, work / f"mem{n}", one_file=True)
    ckpt = make_checkpoint(work / "mem.pt", 2, 256, files[0].read_text())
    dump(ckpt, files, work / f"mem{n}.h5", DumpOptions(force=True, progress=False))
    (work / f"mem{n}.h5").unlink()
    print(peak_rss_bytes())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small texts, one repeat: under a minute")
    ap.add_argument("--memory", action="store_true", help="also peak RSS of 100k vs 1M char dumps")
    ap.add_argument("--models", default="2x256,3x512", help="comma-separated LAYERSxHIDDEN (default: both)")
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn_tanh", "rnn_relu"],
                    help="the models' cell (GRUs and RNNs record with pure PyTorch)")
    ap.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        return memory_child(args.memory_child, args.work)
    models = [tuple(int(v) for v in m.split("x")) for m in args.models.split(",")]
    if args.quick:
        sizes, repeats, naive, threads = {2: 24_000, 3: 8_000}, 1, 1500, [1]
    else:
        sizes, repeats, naive, threads = {2: 200_000, 3: 60_000}, 3, 6000, [1, 2]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads by default; "
          f"chars/s, best of {repeats}", flush=True)
    figures: dict = {}
    print(f"CPU: {cpu().partition(' | ')[0]}, {os.cpu_count()} cores; vector flags: {vector_flags()}", flush=True)
    figures["cpu"], figures["vector_flags"] = cpu().partition(" | ")[0], vector_flags()
    already, start = build_record(), time.perf_counter()
    if already is None or already["status"] != "built":
        build_kernel(retry=True)
    record = build_record()
    if record["status"] != "built":
        print(f"the recording kernel could not be built ({record['error']}): (c) is pure PyTorch", flush=True)
    else:
        figures["kernel_build_seconds"] = record["build_seconds"]
        figures["kernel_flags"] = " ".join(record["flags"])
        figures["kernel_speedup_at_build"] = record["speedup"]
        print(f"recording kernel: {'already built' if already and already['status'] == 'built' else 'built'} in {record['build_seconds']:.0f} s "
              f"with {' '.join(record['flags'])}; measured {record['speedup']:.2f}x pure PyTorch "
              f"({record['timings']})", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for layers, hidden in models:
            n = sizes[layers]
            for workload, one in (("long", True), ("files", False)):
                files = stdlib_files(n, work / f"{workload}{layers}", one_file=one)
                fig = measure(layers, hidden, files, work, repeats, naive, threads, not args.quick, args.cell)
                key = f"{'' if args.cell == 'lstm' else args.cell + '_'}{layers}x{hidden}_{workload}"
                figures[key] = fig
                print(f"{key:16s} {fig['chars']:>8,} chars in {fig['files']:>3} file(s): "
                      f"(a) plain {fig['a_chars_per_s']:>8,.0f} (1 thr {fig['a_1thread']:,.0f}, "
                      f"2 thr {fig['a_2threads']:,.0f})  (b) naive {fig['b_chars_per_s']:>7,.0f}  "
                      f"(c) dump {fig['c_chars_per_s']:>8,.0f}  c/a {fig['c_over_a']:.2f}  "
                      f"c/b {fig['c_over_b']:.1f}  {fig['bytes_per_char']:,.0f} bytes/char  "
                      f"backend {fig['c_backend']}"
                      + (f"  (without the kernel {fig['c_without_kernel']:,.0f})" if "c_without_kernel" in fig else ""),
                      flush=True)
        if args.memory:
            for n in (100_000, 1_000_000):
                proc = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--work", str(work)],
                                      capture_output=True, text=True, check=True)
                figures[f"peak_rss_bytes_{n}"] = int(proc.stdout.split()[-1])
                print(f"peak RSS dumping {n:>9,} chars (2x256, every array): "
                      f"{figures[f'peak_rss_bytes_{n}'] / 2**20:,.0f} MiB", flush=True)
    print(json.dumps({k: ({kk: round(vv, 3) if isinstance(vv, float) else vv for kk, vv in v.items()}
                          if isinstance(v, dict) else v)
                      for k, v in figures.items()}))


if __name__ == "__main__":
    main()
