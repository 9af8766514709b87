"""How fast `rnnviz ablate` ablates every unit of a point, against one forward pass per unit.

The shipped model (3 x 256) over the first 20,000 characters of its held-out
standard-library files (the demo text), in one run:

  (a) lanes: all 768 c units, each ablated to 0 in its own lane, LANES lanes a batch, the
      unablated lower layers computed once per chunk and shared (rnnviz.ablation, as
      `rnnviz ablate` runs it), the per-character loss of every lane computed; once per
      engine (--engine, default both): "fused" (PyTorch's fused LSTM with the unit's o gate
      forced to 0 through a one-hot input column per lane: `rnnviz ablate`'s default for
      c and h) and "stepper" (the lanes' clamps through the stepper: `--engine stepper`);
  (b) the loop: one forward pass per unit at batch 1 through the stepper with the unit
      clamped (its layer through the stepper with the clamp, the others through
      PyTorch's fused LSTM), the loss of every character computed. The issue's baseline;
      both engines' lanes are compared with it;
  (b') the same loop with the unit's layer through the fused LSTM with its o gate at 0
      (one lane of the fused engine), so that the fused lanes are also compared with a
      batch-1 loop of their own path.
  The loops are timed on a subset of the units (the same number from each layer) and
  extrapolated to all 768: the output says so, with the subset's size.

Both run with the same torch thread count (--threads, default 1); the stepper is the
compiled kernel, built first as `rnnviz kernel --build` does (--kernel off: pure
PyTorch). Wall and CPU time are both given: on a shared machine the wall time of either
side depends on the other programs running. The subset's losses from the loops are
checked against their lanes (largest difference printed).

Why the ratio is what it is: the matrix products' FLOPs (2 x 4H x (In + H) per layer and
lane-step, 2 x V x H for the output layer; the one-hot columns not counted) over the CPU
seconds give each side's GFLOP/s, beside this core's float32 matrix-product rate
(oneDNN's and MKL's products of (8192, 512) by (512, 1024), one thread, best of 5) and
the ratio the lanes would reach at the faster of the two. Prints the CPU and its vector flags; the last line is one JSON
object with every figure.

    python benchmarks/ablate_speed.py --quick     # under a minute: 1,000 characters, both engines
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from rnnviz.ablation import LANES, ZeroedLayer, parse_targets, run_ablations
from rnnviz.checkpoint import load_checkpoint
from rnnviz.backends import make_backend
from rnnviz.intervene import Clamp, ClampTable
from rnnviz.kernel import cpu, kernel_for, vector_flags
from rnnviz.presets import stdlib_files
from rnnviz.shipped import shipped_model_path
from rnnviz.text import read_sources


@torch.no_grad()
def loop_bits(model, ids: np.ndarray, unit, stepper, fused, engine: str, chunk: int = 4096) -> np.ndarray:
    """Bits of every predicted character with ``unit`` (layer, kind, index) at 0, one
    forward pass at batch 1: its layer through ``stepper`` under the clamp (engine
    "stepper") or through the fused LSTM with its o gate at 0 (engine "fused"), the other
    layers through ``fused``."""
    table = ClampTable([Clamp(unit[0], unit[1], unit[2], 0.0)])
    zeroed = ZeroedLayer(model.rnn, unit[0], [[unit[2]]]) if engine == "fused" else None
    x = torch.as_tensor(ids, dtype=torch.int64)
    out, state = [], [None] * model.config.num_layers
    for t0 in range(0, len(ids) - 1, chunk):
        t1 = min(t0 + chunk, len(ids) - 1)
        inp = x[None, t0:t1]
        for layer in range(len(state)):
            if layer == unit[0] and zeroed is not None:
                inp, state[layer] = zeroed(fused.layer_input(layer, inp), state[layer])
                continue
            run = (stepper.layer(layer, inp, state[layer], clamps=table, t0=t0) if layer == unit[0]
                   else fused.layer(layer, inp, state[layer]))
            inp, state[layer] = run.h, run.state
        logp = torch.log_softmax(model.head(inp[0]), dim=-1)
        out.append(-logp.gather(1, x[t0 + 1:t1 + 1, None])[:, 0].double().numpy() / np.log(2))
    return np.concatenate(out)


def matmul_gflops(n: int = 8192, k: int = 512, m: int = 1024, repeats: int = 5) -> dict[str, float]:
    """This core's float32 matrix-product rates, one (n, k) x (k, m) product, best of ``repeats``:
    "onednn" (oneDNN's packed-weight product, which PyTorch's fused LSTM's speed on this CPU
    matches) and "mkl" (torch.mm through MKL's sgemm, the batch-1 matrix-vector products'
    library)."""
    x, w, bias = torch.randn(n, k), torch.randn(m, k), torch.zeros(m)
    out = {"mkl": min(_cpu_seconds(lambda: torch.mm(x, w.t())) for _ in range(repeats))}
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(w)
        out["onednn"] = min(_cpu_seconds(lambda: torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], ""))
                            for _ in range(repeats))
    except (AttributeError, RuntimeError):       # a PyTorch without oneDNN's op
        pass
    return {name: 2 * n * k * m / s / 1e9 for name, s in out.items()}


def _cpu_seconds(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def layer_flops(cfg) -> list[int]:
    """FLOPs of the matrix products per lane-step, per layer (the output layer's added to the last)."""
    H = cfg.hidden_size
    flops = [2 * 4 * H * ((cfg.embedding_size if layer == 0 else H) + H) for layer in range(cfg.num_layers)]
    flops[-1] += 2 * cfg.vocab_size * H
    return flops


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 characters, 1 loop unit per layer")
    ap.add_argument("--chars", type=int, help="characters of the held-out text [20000; quick 1000]")
    ap.add_argument("--loop-units", type=int, help="units per layer timed in the loop [3; quick 1]")
    ap.add_argument("--lanes", type=int, default=LANES)
    ap.add_argument("--engine", choices=["both", "fused", "stepper"], default="both",
                    help="the lanes' engine(s), each against the same loops")
    ap.add_argument("--kernel", choices=["on", "off"], default="on")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    chars = args.chars or (1000 if args.quick else 20000)
    per_layer = args.loop_units or (1 if args.quick else 3)
    engines = ["fused", "stepper"] if args.engine == "both" else [args.engine]
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu().partition(' | ')[0]}, {os.cpu_count()} cores; vector flags: {vector_flags()}; "
          f"torch threads: {args.threads}; ATen CPU capability: {torch.backends.cpu.get_cpu_capability()}", flush=True)
    if args.kernel == "on" and kernel_for("on") is None:
        raise SystemExit("the compiled kernel could not be built here; run with --kernel off")
    ckpt = load_checkpoint(shipped_model_path())
    model = ckpt.model.eval()
    cfg = ckpt.config
    _, held = stdlib_files()
    sources = read_sources([str(p) for p in held], max_chars=chars)
    ids = [ckpt.vocab.encode(s.text)[0] for s in sources]
    n = sum(map(len, ids))
    steps = sum(len(x) - 1 for x in ids)
    targets = parse_targets("c", num_layers=cfg.num_layers, hidden_size=cfg.hidden_size)
    values = {u: 0.0 for t in targets for u in t.units}
    rng = np.random.default_rng(0)
    subset = [t for layer in range(cfg.num_layers)
              for t in rng.choice([t for t in targets if t.low == layer], per_layer, replace=False)]
    print(f"{len(targets)} c units of the shipped model ({cfg.num_layers} x {cfg.hidden_size}) over {n:,} chars "
          f"of {len(sources)} held-out file(s)", flush=True)
    flops = layer_flops(cfg)
    lanes_flops = steps * (sum(flops) + sum(sum(flops[t.low:]) for t in targets))   # + the shared unablated run
    loop_flops = steps * sum(flops) * len(targets)
    rates = matmul_gflops()
    peak = max(rates.values())
    print(f"this core's float32 matrix products ((8192, 512) x (512, 1024), one thread): "
          + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in rates.items()), flush=True)

    lanes = {}
    for engine in engines:
        start, cpu0 = time.perf_counter(), time.process_time()
        r = run_ablations(model, ids, targets, values, np.zeros((0, n), bool), [t.name for t in subset],
                          lanes=args.lanes, kernel=args.kernel, engine=engine)
        lanes[engine] = (r, time.perf_counter() - start, time.process_time() - cpu0)
        _, wall, cpu_s = lanes[engine]
        print(f"(a) lanes of {args.lanes}, engine {engine}" + (f" ({r.backend} stepper)" if engine == "stepper" else "")
              + f": {wall:.1f} s ({cpu_s:.1f} s of CPU) for all {len(targets)} units ({len(targets) * n / wall:,.0f} "
              f"unit-chars/s; {lanes_flops / cpu_s / 1e9:.0f} GFLOP/s of CPU time)", flush=True)

    stepper = make_backend(model.rnn, kernel=args.kernel, embedding=model.embed.weight)
    fused = make_backend(model.rnn, kernel="off", embedding=model.embed.weight)
    firsts = np.cumsum([0] + [len(x) for x in ids[:-1]])
    loops, worst = {}, {}
    for loop in ("stepper", "fused"):
        wall: dict[int, list[float]] = {}
        cpu_s: dict[int, list[float]] = {}
        for t in subset:
            start, cpu0 = time.perf_counter(), time.process_time()
            bits = [loop_bits(model, x, t.units[0], stepper, fused, loop) for x in ids]
            wall.setdefault(t.low, []).append(time.perf_counter() - start)
            cpu_s.setdefault(t.low, []).append(time.process_time() - cpu0)
            for engine, (r, _, _) in lanes.items():
                for first, b in zip(firsts, bits):
                    got = r.baseline[first + 1:first + 1 + len(b)] + r.per_char[t.name][first + 1:first + 1 + len(b)]
                    worst[engine] = max(worst.get(engine, 0.0), float(np.abs(got - b).max()))
        loops[loop] = tuple(sum(np.mean(v) * sum(t.low == layer for t in targets) for layer, v in d.items())
                            for d in (wall, cpu_s))
        name = "(b) one forward per unit at batch 1, the stepper" if loop == "stepper" else \
            "(b') one forward per unit at batch 1, the fused LSTM with the o gate at 0"
        print(f"{name}: all {len(targets)} extrapolated from {len(subset)} timed units ({per_layer} per layer): "
              f"{loops[loop][0]:.0f} s ({loops[loop][1]:.0f} s of CPU; {loop_flops / loops[loop][1] / 1e9:.0f} "
              f"GFLOP/s)", flush=True)
    out = {"cpu": cpu().partition(" | ")[0], "vector_flags": vector_flags(),
           "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": args.threads, "chars": n,
           "units": len(targets), "lanes": args.lanes, "loop_units_timed": len(subset),
           "matmul_gflops": {name: round(rate, 1) for name, rate in rates.items()}, "lanes_gflop": round(lanes_flops / 1e9, 1),
           "loop_gflop": round(loop_flops / 1e9, 1)}
    for loop, (wall, cpu_s) in loops.items():
        out[f"loop_{loop}_s_extrapolated"], out[f"loop_{loop}_cpu_s_extrapolated"] = round(wall, 1), round(cpu_s, 1)
    for engine, (r, wall, cpu_s) in lanes.items():
        print(f"largest difference between the loops' and the {engine} lanes' per-character loss: "
              f"{worst[engine]:.2e} bits", flush=True)
        out[f"{engine}_lanes_s"], out[f"{engine}_lanes_cpu_s"] = round(wall, 2), round(cpu_s, 2)
        out[f"{engine}_max_diff_bits"] = worst[engine]
        for loop, (loop_wall, loop_cpu) in loops.items():
            ratio, ratio_cpu = loop_wall / wall, loop_cpu / cpu_s
            out[f"{engine}_vs_{loop}_loop"], out[f"{engine}_vs_{loop}_loop_cpu"] = round(ratio, 2), round(ratio_cpu, 2)
            print(f"{engine} lanes are {ratio_cpu:.1f}x the {loop} loop in CPU time ({ratio:.1f}x wall, which the "
                  f"other programs on a shared machine disturb more)", flush=True)
    bound = loops["stepper"][1] / (lanes_flops / peak / 1e9)
    out["ratio_cpu_bound_at_matmul_rate"] = round(bound, 2)
    print(f"at most {bound:.1f}x against the stepper loop even if the lanes ran every product at {peak:.0f} GFLOP/s "
          f"({lanes_flops / 1e9:,.0f} GFLOP for the lanes against {loop_flops / 1e9:,.0f} for the loop: "
          f"the shared lower layers save {loop_flops / lanes_flops:.2f}x)", flush=True)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
