"""A character n-gram baseline (interpolated Witten-Bell, rnnviz.ngram) on the stdlib
preset's split, beside the shipped model's validation loss on the same held-out files;
with the n-gram's fit time, table size and this process's peak memory.

    python benchmarks/ngram_baseline.py [--order 5] [--quick]

Last line: one JSON object with every figure.
"""
import argparse
import json
import math
import sys
import time

import torch

from common import peak_rss_bytes
from rnnviz.ngram import NGramModel
from rnnviz.presets import stdlib_files
from rnnviz.shipped import shipped_model_path
from rnnviz.text import read_sources


def model_bits_per_char(path, text: str) -> float:
    from rnnviz.checkpoint import load_checkpoint
    ckpt = load_checkpoint(path)
    ids = torch.as_tensor(ckpt.vocab.encode(text)[0]).unsqueeze(0)
    with torch.no_grad():
        logits, _ = ckpt.model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits[0], ids[0, 1:])
    return float(loss) / math.log(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--order", type=int, default=5, help="n of the n-gram (context n-1 chars)")
    ap.add_argument("--quick", action="store_true", help="train the n-gram on a quarter of the corpus")
    args = ap.parse_args()
    train_files, heldout = stdlib_files()
    if args.quick:
        train_files = train_files[::4]
    train_text = "".join(s.text for s in read_sources([str(f) for f in train_files]))
    test_sources = read_sources([str(f) for f in heldout])
    t0 = time.perf_counter()
    lm = NGramModel.fit(train_text, args.order)
    fit_seconds = time.perf_counter() - t0
    # Each held-out file is scored on its own, as the model sees it from a fresh state.
    n = sum(len(s.text) for s in test_sources)
    ngram_bpc = lm.bits_per_char([s.text for s in test_sources])
    model_bits = sum(model_bits_per_char(shipped_model_path(), s.text) * (len(s.text) - 1)
                     for s in test_sources) / sum(len(s.text) - 1 for s in test_sources)
    figures = {"order": args.order, "train_chars": len(train_text), "heldout_chars": n,
               "heldout_files": [f.name for f in heldout],
               "ngram_bits_per_char": round(ngram_bpc, 4), "model_bits_per_char": round(model_bits, 4),
               "model_over_ngram": round(model_bits / ngram_bpc, 3),
               "fit_seconds": round(fit_seconds, 1), "table_mb": round(lm.nbytes() / 1e6, 1),
               "peak_rss_gb": round(peak_rss_bytes() / 1e9, 2),
               "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{args.order}-gram Witten-Bell: {ngram_bpc:.3f} bits/char on {n:,} held-out chars", file=sys.stderr)
    print(f"shipped LSTM        : {model_bits:.3f} bits/char", file=sys.stderr)
    print(f"n-gram fit {fit_seconds:.1f} s, tables {lm.nbytes() / 1e6:.0f} MB, "
          f"peak memory {peak_rss_bytes() / 1e9:.2f} GB", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
