"""How fast `rnnviz ablate` ablates every unit of a point, against one forward pass per unit.

The shipped model (3 x 256) over the first 20,000 characters of its held-out
standard-library files (the demo text), in one run:

  (a) lanes: all 768 c units, each ablated to 0 in its own lane, LANES lanes a batch, the
      unablated lower layers computed once per chunk and shared (rnnviz.ablation, as
      `rnnviz ablate` runs it), the per-character loss of every lane computed;
  (b) the loop: one forward pass per unit at batch 1 through the same stepper with the
      unit clamped (its layer through the stepper with the clamp, the others through
      PyTorch's fused LSTM, as the lanes run them), the loss of every character
      computed. It is timed on a subset of the units (the same number from each layer)
      and extrapolated to all 768: the output says so, with the subset's size.

Both run on the same stepper (the compiled kernel, built first as `rnnviz kernel --build`
does; --kernel off for pure PyTorch) and the same torch thread count (--threads, default
1). Wall and CPU time are both given: on a shared machine the wall time of either side
depends on the other programs running. The subset's losses from (b) are checked against their lanes in (a) (largest
difference printed). Prints the CPU and its vector flags; the last line is one JSON
object with every figure.

    python benchmarks/ablate_speed.py --quick     # under a minute: 1,000 characters
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

from rnnviz.ablation import LANES, parse_targets, run_ablations
from rnnviz.checkpoint import load_checkpoint
from rnnviz.backends import make_backend
from rnnviz.intervene import Clamp, ClampTable
from rnnviz.kernel import cpu, kernel_for, vector_flags
from rnnviz.presets import stdlib_files
from rnnviz.shipped import shipped_model_path
from rnnviz.text import read_sources


@torch.no_grad()
def loop_bits(model, ids: np.ndarray, unit, stepper, fused, chunk: int = 4096) -> np.ndarray:
    """Bits of every predicted character with ``unit`` (layer, kind, index) clamped to 0,
    one forward pass at batch 1: its layer through ``stepper`` under the clamp, the other
    layers through ``fused`` (as the lanes run them)."""
    table = ClampTable([Clamp(unit[0], unit[1], unit[2], 0.0)])
    x = torch.as_tensor(ids, dtype=torch.int64)
    out, state = [], [None] * model.config.num_layers
    for t0 in range(0, len(ids) - 1, chunk):
        t1 = min(t0 + chunk, len(ids) - 1)
        inp = x[None, t0:t1]
        for layer in range(len(state)):
            if layer == unit[0]:
                inp = stepper.layer(layer, inp, state[layer], clamps=table, t0=t0)
            else:
                inp = fused.layer(layer, inp, state[layer])
            state[layer] = inp.state
        logp = torch.log_softmax(model.head(inp.h[0]), dim=-1)
        out.append(-logp.gather(1, x[t0 + 1:t1 + 1, None])[:, 0].double().numpy() / np.log(2))
    return np.concatenate(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 characters, 1 loop unit per layer")
    ap.add_argument("--chars", type=int, help="characters of the held-out text [20000; quick 1000]")
    ap.add_argument("--loop-units", type=int, help="units per layer timed in the loop [3; quick 1]")
    ap.add_argument("--lanes", type=int, default=LANES)
    ap.add_argument("--kernel", choices=["on", "off"], default="on")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    chars = args.chars or (1000 if args.quick else 20000)
    per_layer = args.loop_units or (1 if args.quick else 3)
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu().partition(' | ')[0]}, {os.cpu_count()} cores; vector flags: {vector_flags()}; "
          f"torch threads: {args.threads}", flush=True)
    if args.kernel == "on" and kernel_for("on") is None:
        raise SystemExit("the compiled kernel could not be built here; run with --kernel off")
    ckpt = load_checkpoint(shipped_model_path())
    model = ckpt.model.eval()
    cfg = ckpt.config
    _, held = stdlib_files()
    sources = read_sources([str(p) for p in held], max_chars=chars)
    ids = [ckpt.vocab.encode(s.text)[0] for s in sources]
    n = sum(map(len, ids))
    targets = parse_targets("c", num_layers=cfg.num_layers, hidden_size=cfg.hidden_size)
    values = {u: 0.0 for t in targets for u in t.units}
    rng = np.random.default_rng(0)
    subset = [t for layer in range(cfg.num_layers)
              for t in rng.choice([t for t in targets if t.low == layer], per_layer, replace=False)]
    print(f"{len(targets)} c units of the shipped model ({cfg.num_layers} x {cfg.hidden_size}) over {n:,} chars "
          f"of {len(sources)} held-out file(s)", flush=True)

    start, cpu0 = time.perf_counter(), time.process_time()
    lanes = run_ablations(model, ids, targets, values, np.zeros((0, n), bool), [t.name for t in subset],
                          lanes=args.lanes, kernel=args.kernel)
    lanes_s, lanes_cpu = time.perf_counter() - start, time.process_time() - cpu0
    print(f"(a) lanes of {args.lanes} ({lanes.backend} stepper): {lanes_s:.1f} s ({lanes_cpu:.1f} s of CPU) for all "
          f"{len(targets)} units ({len(targets) * n / lanes_s:,.0f} unit-chars/s)", flush=True)

    stepper = make_backend(model.rnn, kernel=args.kernel, embedding=model.embed.weight)
    fused = make_backend(model.rnn, kernel="off", embedding=model.embed.weight)
    per_layer_s: dict[int, list[float]] = {}
    per_layer_cpu: dict[int, list[float]] = {}
    worst = 0.0
    for t in subset:
        start, cpu0 = time.perf_counter(), time.process_time()
        bits = [loop_bits(model, x, t.units[0], stepper, fused) for x in ids]
        per_layer_s.setdefault(t.low, []).append(time.perf_counter() - start)
        per_layer_cpu.setdefault(t.low, []).append(time.process_time() - cpu0)
        firsts = np.cumsum([0] + [len(x) for x in ids[:-1]])
        for first, b in zip(firsts, bits):
            got = lanes.baseline[first + 1:first + 1 + len(b)] + lanes.per_char[t.name][first + 1:first + 1 + len(b)]
            worst = max(worst, float(np.abs(got - b).max()))
    loop_s = sum(np.mean(v) * sum(t.low == layer for t in targets) for layer, v in per_layer_s.items())
    loop_cpu = sum(np.mean(v) * sum(t.low == layer for t in targets) for layer, v in per_layer_cpu.items())
    timed = sum(map(len, per_layer_s.values()))
    print(f"(b) one forward per unit at batch 1 (same stepper): {np.mean([s for v in per_layer_s.values() for s in v]):.2f} "
          f"s per unit; all {len(targets)} extrapolated from {timed} timed units ({per_layer} per layer): {loop_s:.0f} s "
          f"({loop_cpu:.0f} s of CPU)",
          flush=True)
    print(f"largest difference between the loop's and the lanes' per-character loss: {worst:.2e} bits", flush=True)
    ratio, ratio_cpu = loop_s / lanes_s, loop_cpu / lanes_cpu
    print(f"lanes are {ratio:.1f}x the one-forward-per-unit loop (wall time; {ratio_cpu:.1f}x in CPU time, "
          f"which a busy shared machine disturbs less)", flush=True)
    print(json.dumps({"cpu": cpu().partition(" | ")[0], "vector_flags": vector_flags(), "threads": args.threads,
                      "chars": n, "units": len(targets), "lanes": args.lanes, "stepper": lanes.backend,
                      "lanes_s": round(lanes_s, 2), "loop_s_extrapolated": round(loop_s, 1),
                      "lanes_cpu_s": round(lanes_cpu, 2), "loop_cpu_s_extrapolated": round(loop_cpu, 1),
                      "loop_units_timed": timed, "ratio": round(ratio, 2), "ratio_cpu": round(ratio_cpu, 2),
                      "max_diff_bits": worst}))


if __name__ == "__main__":
    main()
