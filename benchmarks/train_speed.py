"""Training speed of rnnviz's loop against a minimal plain-PyTorch loop on the same model,
batch and sequence length, measured in the same run.

    python benchmarks/train_speed.py [--quick] [--cell gru]

Last line: one JSON object with every figure.
"""
import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from rnnviz.model import CharLSTM, CharLSTMConfig, Vocab
from rnnviz.text import read_sources, stdlib_dir
from rnnviz.train import TrainConfig, train


def plain_loop(ids, vocab_size, model_cfg, seq, batch, steps, lr=2e-3, clip=5.0):
    """The textbook loop: same model, Adam, clipping, state carried, nothing else."""
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=vocab_size, **model_cfg))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    per = (len(ids) - 1) // batch
    streams = torch.stack([ids[b * per:(b + 1) * per] for b in range(batch)])
    hidden = None
    t0 = time.perf_counter()
    for step in range(steps):
        p = (step * seq) % (per - seq - 1)
        x, y = streams[:, p:p + seq], streams[:, p + 1:p + seq + 1]
        logits, hidden = model(x, hidden)
        hidden = hidden.detach() if isinstance(hidden, torch.Tensor) else tuple(h.detach() for h in hidden)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab_size), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
    return steps * seq * batch / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps (under a minute)")
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cell", default="lstm", choices=["lstm", "gru", "rnn_tanh", "rnn_relu"])
    args = ap.parse_args()
    steps = 30 if args.quick else 200
    repeats = 2 if args.quick else args.repeats
    seq, batch = 50, 50
    root = stdlib_dir()
    files = sorted(root.glob("*.py"))[:60] if root else [Path(__file__)]
    sources = read_sources([str(f) for f in files])
    text = "".join(s.text for s in sources)
    vocab = Vocab.from_text(text)
    ids = torch.as_tensor(vocab.encode(text)[0])
    model_cfg = {"num_layers": args.layers, "hidden_size": args.hidden, "embedding_size": 64, "cell": args.cell}
    # Alternate the two so drifting machine load hits both alike; keep the best of each.
    rnnviz_cps, plain_cps = [], []
    plain_loop(ids, len(vocab), model_cfg, seq, batch, 3)  # warm-up: first calls allocate
    for _ in range(repeats):
        plain_cps.append(plain_loop(ids, len(vocab), model_cfg, seq, batch, steps))
        with tempfile.TemporaryDirectory() as d:
            cfg = TrainConfig(seq_length=seq, batch_size=batch, max_steps=steps,
                              eval_every=10**9, val_fraction=0.01)
            res = train(sources, cfg, Path(d) / "m.pt", CharLSTMConfig(**model_cfg), progress=False)
            rnnviz_cps.append(res.chars_per_second)
    figures = {
        "model": f"{args.cell} {args.layers}x{args.hidden}", "seq_length": seq, "batch_size": batch, "steps": steps,
        "threads": torch.get_num_threads(),
        "plain_chars_per_s": round(max(plain_cps)), "rnnviz_chars_per_s": round(max(rnnviz_cps)),
        "ratio_rnnviz_over_plain": round(max(rnnviz_cps) / max(plain_cps), 3),
    }
    print(f"plain PyTorch loop : {figures['plain_chars_per_s']:>10,} chars/s", file=sys.stderr)
    print(f"rnnviz train       : {figures['rnnviz_chars_per_s']:>10,} chars/s (training steps; its "
          f"validation passes and checkpoint writes are timed apart)", file=sys.stderr)
    print(f"ratio rnnviz/plain : {figures['ratio_rnnviz_over_plain']:.3f}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
