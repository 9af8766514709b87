"""A character n-gram baseline (interpolated Witten-Bell) on the stdlib preset's split,
beside the shipped model's validation loss on the same held-out files.

    python benchmarks/ngram_baseline.py [--order 5] [--quick]

Last line: one JSON object with every figure.
"""
import argparse
import json
import math
import sys
import time
from collections import Counter, defaultdict

import torch

from rnnviz.presets import stdlib_files
from rnnviz.shipped import shipped_model_path
from rnnviz.text import read_sources


class WittenBell:
    """P(c | h) = (C(hc) + T(h) P(c | h')) / (C(h) + T(h)), T(h) = distinct followers of h."""

    def __init__(self, text: str, order: int, alphabet: int):
        self.order, self.alphabet = order, alphabet
        self.grams = [Counter() for _ in range(order)]  # grams[k]: a k-char context followed by one char
        self.ctx_total = [defaultdict(int) for _ in range(order + 1)]
        self.ctx_types = [defaultdict(int) for _ in range(order + 1)]
        for k in range(order):                                # context length k = 0 .. order-1
            grams = Counter(text[i - k:i + 1] for i in range(k, len(text)))
            self.grams[k] = grams
            for g, n in grams.items():
                self.ctx_total[k][g[:-1]] += n
                self.ctx_types[k][g[:-1]] += 1

    def prob(self, history: str, c: str) -> float:
        p = 1.0 / self.alphabet
        for k in range(self.order):
            if k > len(history):
                break
            h = history[len(history) - k:] if k else ""
            total = self.ctx_total[k].get(h, 0)
            if total == 0:
                continue
            types = self.ctx_types[k][h]
            p = (self.grams[k].get(h + c, 0) + types * p) / (total + types)
        return p

    def bits_per_char(self, text: str) -> float:
        span = self.order - 1
        return -sum(math.log2(self.prob(text[max(0, i - span):i], text[i]))
                    for i in range(len(text))) / len(text)


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
    alphabet = len(set(train_text)) + 1
    lm = WittenBell(train_text, args.order, alphabet)
    # Each held-out file is scored on its own, as the model sees it from a fresh state.
    total_bits = sum(lm.bits_per_char(s.text) * len(s.text) for s in test_sources)
    n = sum(len(s.text) for s in test_sources)
    ngram_bpc = total_bits / n
    model_bits = sum(model_bits_per_char(shipped_model_path(), s.text) * (len(s.text) - 1)
                     for s in test_sources) / sum(len(s.text) - 1 for s in test_sources)
    figures = {"order": args.order, "train_chars": len(train_text), "heldout_chars": n,
               "heldout_files": [f.name for f in heldout],
               "ngram_bits_per_char": round(ngram_bpc, 4), "model_bits_per_char": round(model_bits, 4),
               "model_over_ngram": round(model_bits / ngram_bpc, 3),
               "seconds": round(time.perf_counter() - t0, 1)}
    print(f"{args.order}-gram Witten-Bell : {ngram_bpc:.3f} bits/char on {n:,} held-out chars", file=sys.stderr)
    print(f"shipped LSTM        : {model_bits:.3f} bits/char", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
