"""Training a CharLSTM char-rnn style: contiguous streams, truncated backprop with the
state carried across batches, Adam, learning-rate decay, gradient clipping, keeping the
best-validation checkpoint.

    result = train(read_sources(["corpus/"]), TrainConfig(max_time=60), "model.pt")
"""
from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import RnnvizError
from .model import CharLSTM, CharLSTMConfig, Vocab
from .text import Source

LN2 = math.log(2)


@dataclass
class TrainConfig:
    seq_length: int = 50        # truncated-backprop length (char-rnn default)
    batch_size: int = 50        # parallel streams (char-rnn default)
    lr: float = 2e-3            # Adam, as torch-rnn
    lr_decay: float = 0.97      # multiply the rate by this every epoch ...
    decay_after: int = 10       # ... once this many epochs have passed (char-rnn)
    grad_clip: float = 5.0      # max global gradient norm
    val_fraction: float = 0.05  # tail of the text kept for validation (char-rnn: 5%)
    epochs: int = 50
    max_time: float | None = None   # seconds; stop (and keep the best model) after this
    max_steps: int | None = None
    eval_every: int = 200       # steps between validation passes (and at each epoch's end)
    max_val_chars: int = 200_000  # validation is capped so it stays a small part of the time
    sample_every: int = 0       # steps between the samples kept in the history (0: none)
    sample_length: int = 200
    seed: int = 0
    threads: int | None = None  # torch intra-op threads (None: torch's default)
    keep_optimizer: bool = True  # store Adam's state so --resume continues exactly


@dataclass
class TrainResult:
    best_val_loss: float
    steps: int
    epochs_done: float
    chars_per_second: float       # training steps only (validation, samples, saving excluded)
    wall_seconds: float = 0.0
    history: list = field(default_factory=list)


def unigram_entropy_bits(text: str) -> float:
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def split_text(sources: list[Source], val_fraction: float) -> tuple[str, str]:
    text = "".join(s.text for s in sources)
    if not 0.0 < val_fraction < 0.5:
        raise RnnvizError(f"--val-fraction must be in (0, 0.5), got {val_fraction}")
    n_val = int(len(text) * val_fraction)
    return text[:len(text) - n_val], text[len(text) - n_val:]


def _streams(ids: torch.Tensor, batch_size: int, seq_length: int) -> torch.Tensor:
    """(B, L) contiguous streams, L a multiple of seq_length plus one for the targets."""
    per_stream = (len(ids) - 1) // batch_size
    steps = per_stream // seq_length
    if steps < 1:
        raise RnnvizError(f"text too short: {len(ids)} characters cannot fill one batch of "
                          f"{batch_size} x {seq_length}; lower --batch-size or --seq-length")
    usable = steps * seq_length + 1
    return torch.stack([ids[b * per_stream: b * per_stream + usable] for b in range(batch_size)])


@torch.no_grad()
def evaluate(model: CharLSTM, ids: torch.Tensor, seq_length: int, batch_size: int) -> float:
    """Mean next-character loss in nats over ``ids``, state carried as in training."""
    model.eval()
    batch_size = max(1, min(batch_size, (len(ids) - 1) // (seq_length + 1)))
    streams = _streams(ids, batch_size, seq_length)
    # Whole streams at once: the fused LSTM runs fastest on long sequences.
    logits, _ = model(streams[:, :-1])
    loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), streams[:, 1:].reshape(-1))
    model.train()
    return float(loss)


def train(sources: list[Source], cfg: TrainConfig, out: str | Path,
          model_cfg: CharLSTMConfig | None = None, resume: Checkpoint | None = None,
          val_sources: list[Source] | None = None, extra_meta: dict | None = None, progress: bool = True, log=print) -> TrainResult:
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    if val_sources:
        train_text, val_text = "".join(s.text for s in sources), "".join(s.text for s in val_sources)
    else:
        train_text, val_text = split_text(sources, cfg.val_fraction)
    if resume is not None:
        vocab, model = resume.vocab, resume.model
        state = resume.meta.get("train_state", {})
        # The checkpoint holds the best step; what came after it is trained again.
        resumed_at = int(state.get("step", 0))
        history = [h for h in resume.meta.get("history", []) if h["step"] <= resumed_at]
        samples = [s for s in resume.meta.get("samples", []) if s["step"] <= resumed_at]
    else:
        vocab = Vocab.from_text(train_text + val_text)
        model_cfg = replace(model_cfg or CharLSTMConfig(), vocab_size=len(vocab))
        model = CharLSTM(model_cfg)
        state, history, samples = {}, [], []
    model.train()
    train_ids = torch.as_tensor(vocab.encode(train_text)[0])
    val_ids = torch.as_tensor(vocab.encode(val_text[:cfg.max_val_chars])[0])
    streams = _streams(train_ids, cfg.batch_size, cfg.seq_length)
    if len(val_ids) < cfg.seq_length + 2:
        raise RnnvizError(f"validation text too short ({len(val_ids)} chars): add text or raise --val-fraction")
    steps_per_epoch = (streams.shape[1] - 1) // cfg.seq_length

    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    if "optimizer" in state:
        opt.load_state_dict(state["optimizer"])
    step = int(state.get("step", 0))
    best = float(state.get("best_val_loss", math.inf))
    sample_gen = torch.Generator().manual_seed(cfg.seed)
    meta_base = {
        "train_options": asdict(cfg),
        "corpus": [s.describe() for s in sources],
        "corpus_chars": len(train_text) + len(val_text),
        "split": {"train_chars": len(train_text), "val_chars": len(val_text),
                  "val_chars_used": len(val_ids)},
        "unigram_bits_per_char": unigram_entropy_bits(train_text + val_text),
        **(extra_meta or {}),
    }

    def save(val_loss: float):
        meta = {**meta_base, "history": history, "samples": samples,
                "best_val_loss": val_loss, "best_val_bpc": val_loss / LN2,
                "train_state": {"step": step, "best_val_loss": val_loss,
                                **({"optimizer": opt.state_dict()} if cfg.keep_optimizer else {})}}
        save_checkpoint(out, model, vocab, meta)

    hidden = None
    t0 = time.perf_counter()
    chars_done = 0
    side_seconds = 0.0  # validation, samples and checkpoint writes
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    bar = tqdm(total=total_steps, initial=min(step, total_steps), disable=not progress,
               unit="step", dynamic_ncols=True)
    train_loss = math.nan
    val_loss = math.nan
    stop = False
    try:
        while step < total_steps and not stop:
            epoch, pos = divmod(step, steps_per_epoch)
            if pos == 0:
                hidden = None  # each epoch starts the streams afresh
            lr = cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_after)
            for group in opt.param_groups:
                group["lr"] = lr
            x = streams[:, pos * cfg.seq_length: (pos + 1) * cfg.seq_length]
            y = streams[:, pos * cfg.seq_length + 1: (pos + 1) * cfg.seq_length + 1]
            logits, hidden = model(x, hidden)
            hidden = tuple(h.detach() for h in hidden)
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            step += 1
            chars_done += x.numel()
            loss_value = loss.item()
            train_loss = loss_value if math.isnan(train_loss) else 0.95 * train_loss + 0.05 * loss_value
            elapsed = time.perf_counter() - t0
            out_of_time = cfg.max_time is not None and elapsed >= cfg.max_time
            at_epoch_end = step % steps_per_epoch == 0
            side_start = time.perf_counter()
            if step % cfg.eval_every == 0 or at_epoch_end or out_of_time or step >= total_steps:
                val_loss = evaluate(model, val_ids, cfg.seq_length, cfg.batch_size)
                history.append({"step": step, "epoch": step / steps_per_epoch, "train_loss": train_loss,
                                "val_loss": val_loss, "lr": lr, "seconds": elapsed})
                if val_loss < best:
                    best = val_loss
                    save(best)
            if cfg.sample_every and step % cfg.sample_every == 0:
                text = model.sample(vocab, cfg.sample_length, temperature=0.8, generator=sample_gen)
                samples.append({"step": step, "train_loss": train_loss, "text": text})
                bar.write(f"--- sample at step {step} (loss {train_loss:.3f}) ---\n{text}\n")
            side_seconds += time.perf_counter() - side_start
            bar.set_postfix(refresh=False, loss=f"{train_loss:.3f}", val=f"{val_loss:.3f}",
                            bpc=f"{val_loss / LN2:.3f}",
                            cps=f"{chars_done / max(elapsed - side_seconds, 1e-9):,.0f}")
            bar.update(1)
            stop = out_of_time
    finally:
        bar.close()
    if not out.exists():
        save(best)
    elif samples or history:
        # Keep the best weights but record the full history and samples up to the stop.
        ckpt = load_checkpoint(out)
        meta = {**ckpt.meta, "history": history, "samples": samples}
        save_checkpoint(out, ckpt.model, ckpt.vocab, meta)
    elapsed = time.perf_counter() - t0
    return TrainResult(best_val_loss=best, steps=step, epochs_done=step / steps_per_epoch,
                       chars_per_second=chars_done / max(elapsed - side_seconds, 1e-9),
                       wall_seconds=elapsed, history=history)
