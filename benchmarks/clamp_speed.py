"""What an intervention costs, and that the recorder without one costs what it did.

    python benchmarks/clamp_speed.py [--baseline-rev bf1d5bd]

1. One 256-unit LSTM layer in the compiled kernel, lane-steps/s without clamps: this
   kernel against the kernel source of ``--baseline-rev`` (a git revision from before
   the clamp table; its cached build is loaded, or it is built once into PyTorch's
   extension cache), one call of each in turn, best of ``--rounds`` (the machine is
   shared: the best of many interleaved calls is the figure least moved by other load).
   The no-clamp path must not be slower.
2. A 2 x 256 LSTM over 64 lanes x 512 steps, every point recorded, with no clamp and
   with one clamp per lane on a different unit each (the layout of an ablation sweep),
   for the kernel and for pure PyTorch (whose clamped layers are stepped one step at a
   time in PyTorch).
Figures name the CPU and its vector flags; one torch thread.
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from rnnviz.backends.compiled import KernelBackend
from rnnviz.backends.pytorch import PytorchBackend
from rnnviz.intervene import Clamp
from rnnviz.kernel import SOURCE, cache_dir, cpu, flag_sets, kernel_for, kernel_name, vector_flags

EMPTY = torch.empty(0)


def baseline_kernel(rev: str):
    """The kernel as it was at git revision ``rev``: its cached build, or built now."""
    old = subprocess.run(["git", "show", f"{rev}:rnnviz/csrc/lstm_record.cpp"], capture_output=True,
                         cwd=Path(__file__).parent, check=True).stdout
    tmp = Path(tempfile.mkdtemp()) / "lstm_record.cpp"
    tmp.write_bytes(old)
    name = kernel_name(tmp)
    folder = cache_dir(name)
    library = folder / f"{name}.so"   # as PyTorch's extension builder names it (Linux)
    if library.exists():
        spec = importlib.util.spec_from_file_location(name, str(library))
        lib = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(lib)
        return lib
    from torch.utils import cpp_extension
    folder.mkdir(parents=True, exist_ok=True)
    (folder / tmp.name).write_bytes(old)
    print(f"building the {rev} kernel once (a few minutes)...", flush=True)
    return cpp_extension.load(name, [str(folder / tmp.name)], extra_cflags=flag_sets()[0],
                              build_directory=str(folder), verbose=False)


def time_layer(lib, new: bool, B: int, T: int, H: int = 256) -> float:
    """Lane-steps/s of one call of ``lib``'s run_layer (``new``: it takes the clamp table)."""
    torch.manual_seed(0)
    w_ih_t, w_hh_t = torch.randn(64, 4 * H) * 0.1, torch.randn(H, 4 * H) * 0.05
    init = torch.randn(B, T, 4 * H)
    out = torch.empty(6, B, T, H)
    h, c = torch.zeros(B, H), torch.zeros(B, H)
    args = (EMPTY, w_ih_t, init, EMPTY, w_hh_t, EMPTY, h, c, out, EMPTY)
    start = time.perf_counter()
    lib.run_layer(*args, EMPTY, EMPTY, EMPTY, 0) if new else lib.run_layer(*args)
    return B * T / (time.perf_counter() - start)


def time_record(backend, x, clamps) -> float:
    start = time.perf_counter()
    for run in backend.run(x, None, clamps):
        run.points()
    return x.shape[0] * x.shape[1] / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline-rev", default="bf1d5bd")
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lib = kernel_for("on")
    if lib is None:
        raise SystemExit("the recording kernel does not build here")
    print(f"CPU: {cpu().partition(' | ')[0]} ({vector_flags()}); kernel flags {' '.join(flag_sets()[0])}; "
          f"torch {torch.__version__}, 1 thread")
    old = baseline_kernel(args.baseline_rev)
    print(f"\n1. kernel, one 256-unit layer, no clamps (lane-steps/s, best of {args.rounds} interleaved; "
          f"the kernel at {args.baseline_rev} = baseline)")
    for B, T in ((1, 2048), (16, 256), (64, 128)):
        figures = {}
        for _ in range(args.rounds):
            for name, l, new in (("baseline", old, False), ("this", lib, True)):
                figures[name] = max(figures.get(name, 0), time_layer(l, new, B, T))
        print(f"   {B:3d} lanes x {T:4d} steps: baseline {figures['baseline']:>10,.0f}   this "
              f"{figures['this']:>10,.0f}   ratio {figures['this'] / figures['baseline']:.3f}")

    rounds = max(3, args.rounds // 3)
    print(f"\n2. 2 x 256 LSTM, every point, 64 lanes x 512 steps (lane-steps/s, best of {rounds} interleaved)")
    torch.manual_seed(0)
    lstm = nn.LSTM(64, 256, 2, batch_first=True)
    x = torch.randn(64, 512, 64)
    per_lane = [Clamp(lane % 2, ("c", "h", "gate_f", "gate_g")[lane % 4], lane * 3 % 256, 0.0, lanes=(lane,))
                for lane in range(64)]
    for name, backend in (("kernel", KernelBackend(lstm, lib)), ("pytorch", PytorchBackend(lstm))):
        free = clamped = 0.0
        for _ in range(rounds):
            free = max(free, time_record(backend, x, ()))
            clamped = max(clamped, time_record(backend, x, per_lane))
        print(f"   {name:8s} no clamp {free:>10,.0f}   one clamp per lane {clamped:>10,.0f}   "
              f"ratio {clamped / free:.3f}")
    print(f"\nsource: {SOURCE.name} at this checkout")


if __name__ == "__main__":
    main()
