"""Steering the shipped model by clamping its string cell (issue 16's experiment).

    python benchmarks/steering.py [--seeds 10] [--length 500] [--checkpoint rnnviz/data/stdlib.pt]
                                  [--unit layer2.c[76]] [--k 5 10]

1. Records c of every layer over the checkpoint's held-out text (re-read and checked by
   hash) and scores every c unit against the ``in_string`` feature (inside a Python
   string literal) by ROC-AUC; the string cell is the unit with the largest
   max(AUC, 1 - AUC).
2. Its "inside" value: the 99th percentile of its c over that text if it is higher
   inside strings (AUC > 0.5), else the 1st percentile.
3. Samples ``--seeds`` x ``--length`` characters at temperature 1.0 (after ``--prime``;
   by default a newline)
   without a clamp, with the string cell clamped at its inside value, with a random unit
   of the same layer clamped at its own inside value (same rule), and with the best k
   units of that layer at theirs; prints the fraction of sampled characters inside a
   string literal (``in_string`` on each sample) per condition, with the spread over seeds.
   Also the string cell at its "outside" value (the other percentile), to show which way
   the unit pushes. ``--unit`` clamps that unit instead of the best one (e.g. the demo's
   quote cell, the best unit for ``in_short_string``); ``--show`` prints the start of one clamped sample.
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from rnnviz.checkpoint import load_checkpoint
from rnnviz.features import compute_features
from rnnviz.intervene import Clamp
from rnnviz.recording import record
from rnnviz.reference import heldout_texts
from rnnviz.shipped import shipped_model_path


def auc_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """ROC-AUC of each column of x (N, H) for the binary y (N,), ties at mid-rank."""
    from scipy.stats import rankdata
    ranks = rankdata(x, axis=0)
    pos = y.astype(bool)
    n1, n0 = pos.sum(), (~pos).sum()
    return (ranks[pos].sum(axis=0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def inside_value(values: np.ndarray, auc: float) -> float:
    return float(np.percentile(values, 99 if auc > 0.5 else 1))


def in_string_fraction(text: str, skip: int = 0) -> float:
    """The share of ``text[skip:]`` inside a string literal, read in the context of ``text[:skip]``."""
    return float(compute_features(text, ["in_string"], language="python")["in_string"].to_numpy()[skip:].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", default=str(shipped_model_path()))
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--length", type=int, default=500)
    ap.add_argument("--k", type=int, nargs="*", default=[5])
    ap.add_argument("--unit", help="clamp this c unit (e.g. layer2.c[76]) instead of the best one")
    ap.add_argument("--show", type=int, default=0, help="print this many characters of a clamped sample")
    ap.add_argument("--prime", default="", help="text read before sampling (e.g. an opened docstring); "
                                                "in_string is measured on prime + sample, over the sample")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = load_checkpoint(args.checkpoint)
    model, cfg = ckpt.model.eval(), ckpt.config
    started = time.perf_counter()

    # 1-2: the string cell and its inside value, on the held-out text.
    texts = heldout_texts(ckpt)
    points = [f"layer{layer}.c" for layer in range(cfg.num_layers)]
    cols, flags = [], []
    for text in texts:
        rec = record(model, torch.as_tensor(ckpt.vocab.encode(text)[0]), points=points)
        cols.append(torch.cat([rec[p] for p in points], dim=1).numpy())
        flags.append(compute_features(text, ["in_string"], language="python")["in_string"].to_numpy())
    c, y = np.concatenate(cols), np.concatenate(flags) > 0.5
    auc = auc_columns(c, y)
    H = cfg.hidden_size
    best = int(np.argmax(np.abs(auc - 0.5)))
    if args.unit:
        from rnnviz.names import parse_point, parse_unit
        point, index = parse_unit(args.unit)
        best = parse_point(point)[0] * H + index
    layer, unit = divmod(best, H)
    print(f"checkpoint {args.checkpoint}; held-out text {len(y):,} chars, {y.mean():.3f} inside strings")
    print(f"{'unit' if args.unit else 'string cell'}: layer{layer}.c[{unit}] (AUC {auc[best]:.3f}); ", end="")

    def clamp_of(col: int, outside: bool = False) -> Clamp:
        lay, u = divmod(col, H)
        return Clamp(lay, "c", u, inside_value(c[:, col], 1 - auc[col] if outside else auc[col]))

    string_clamp = clamp_of(best)
    print(f"inside value {string_clamp.value:.3f} (the {'99th' if auc[best] > 0.5 else '1st'} percentile "
          f"of its c; median {np.median(c[:, best]):.3f})")
    rng = np.random.default_rng(0)
    others = [j for j in range(layer * H, (layer + 1) * H) if j != best]
    random_col = int(rng.choice(others))
    in_layer = np.arange(layer * H, (layer + 1) * H)
    order = in_layer[np.argsort(-np.abs(auc[in_layer] - 0.5))]
    conditions = {"no clamp": [], f"{'unit' if args.unit else 'string cell'} layer{layer}.c[{unit}]={string_clamp.value:.3f}": [string_clamp],
                  f"the same at its outside value ={clamp_of(best, True).value:.3f}": [clamp_of(best, True)],
                  f"random unit layer{layer}.c[{random_col - layer * H}] (AUC {auc[random_col]:.3f}) "
                  f"={clamp_of(random_col).value:.3f}": [clamp_of(random_col)]}
    for k in args.k:
        conditions[f"best {k} units of layer {layer}"] = [clamp_of(int(j)) for j in order[:k]]

    # 3: samples.
    print(f"\n{args.seeds} seeds x {args.length} chars at temperature 1.0 after prime {args.prime!r}; fraction of "
          f"sampled characters inside a string literal:")
    for name, clamps in conditions.items():
        fractions = []
        for seed in range(args.seeds):
            gen = torch.Generator().manual_seed(seed)
            sample = model.sample(ckpt.vocab, args.length, args.prime, temperature=1.0, generator=gen, clamps=clamps)
            fractions.append(in_string_fraction(args.prime + sample, len(args.prime)))
        if args.show and clamps and name.startswith(("string", "unit")):
            gen = torch.Generator().manual_seed(0)
            shown = args.prime + model.sample(ckpt.vocab, args.show, args.prime, temperature=1.0, generator=gen,
                                              clamps=clamps)
            print(f"  (seed 0 under {name}:)\n" + "\n".join("    | " + line for line in shown.splitlines()))
        f = np.array(fractions)
        print(f"  {name:58s} {f.mean():.3f}  (seeds: min {f.min():.3f}, max {f.max():.3f}, "
              f"sd {f.std(ddof=1):.3f})")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
