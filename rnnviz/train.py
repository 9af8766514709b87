"""Training a CharRNN (LSTM, GRU or RNN cells) char-rnn style: contiguous streams,
truncated backprop with the state carried across batches, Adam, learning-rate decay, gradient clipping, keeping the
best-validation checkpoint.

    result = train(read_sources(["corpus/"]), TrainConfig(max_time=60), "model.pt")
"""
from __future__ import annotations

import math
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .errors import RnnvizError
from .device import resolve_device
from .model import CharLSTM, CharLSTMConfig, Vocab, detach_state
from .options import TrainConfig
from .text import Source

LN2 = math.log(2)


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
          val_sources: list[Source] | None = None, extra_meta: dict | None = None,
          progress: bool = True) -> TrainResult:
    """Train on ``sources`` (validating on ``val_sources``, else on the tail of the text)
    and keep the best-validation model at ``out``; continue ``resume`` if given."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    run = _Run(sources, cfg, Path(out), model_cfg, resume, val_sources, extra_meta or {})
    bar = tqdm(total=run.total_steps, initial=min(run.step, run.total_steps), disable=not progress,
               unit="step", dynamic_ncols=True)
    try:
        while run.step < run.total_steps:
            lr = run.train_step()
            elapsed = run.clock.elapsed()
            out_of_time = cfg.max_time is not None and elapsed >= cfg.max_time
            with run.clock.aside():
                if (run.step % cfg.eval_every == 0 or run.step % run.steps_per_epoch == 0 or out_of_time
                        or run.step >= run.total_steps):
                    run.validate(lr, elapsed)
                if cfg.sample_every and run.step % cfg.sample_every == 0:
                    bar.write(run.keep_sample())
            bar.set_postfix(refresh=False, loss=f"{run.train_loss:.3f}", val=f"{run.val_loss:.3f}",
                            bpc=f"{run.val_loss / LN2:.3f}", cps=f"{run.clock.chars_per_second():,.0f}")
            bar.update(1)
            if out_of_time:
                break
    finally:
        bar.close()
    run.finish()
    return TrainResult(best_val_loss=run.best, steps=run.step, epochs_done=run.step / run.steps_per_epoch,
                       chars_per_second=run.clock.chars_per_second(), wall_seconds=run.clock.elapsed(),
                       history=run.history)


def _on_cpu(tree):
    """``tree`` with every tensor moved to the CPU: checkpoints are saved device-free."""
    if isinstance(tree, torch.Tensor):
        return tree.cpu()
    if isinstance(tree, dict):
        return {k: _on_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_on_cpu(v) for v in tree)
    return tree


class _Clock:
    """Wall time since the start, and the part of it spent training (validation, samples
    and checkpoint writes are ``aside``)."""

    def __init__(self):
        self.start, self.side, self.chars = time.perf_counter(), 0.0, 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    @contextmanager
    def aside(self):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.side += time.perf_counter() - start

    def chars_per_second(self) -> float:
        return self.chars / max(self.elapsed() - self.side, 1e-9)


class _Run:
    """One training run: the text as streams, the model, Adam, the history; one step at a time."""

    def __init__(self, sources, cfg: TrainConfig, out: Path, model_cfg, resume, val_sources, extra_meta):
        self.cfg, self.out = cfg, out
        if val_sources:
            train_text, val_text = "".join(s.text for s in sources), "".join(s.text for s in val_sources)
        else:
            train_text, val_text = split_text(sources, cfg.val_fraction)
        if resume is not None:
            self.vocab, self.model = resume.vocab, resume.model
            state = resume.meta.get("train_state", {})
            # The checkpoint holds the best step; what came after it is trained again.
            resumed_at = int(state.get("step", 0))
            self.history = [h for h in resume.meta.get("history", []) if h["step"] <= resumed_at]
            self.samples = [s for s in resume.meta.get("samples", []) if s["step"] <= resumed_at]
        else:
            self.vocab = Vocab.from_text(train_text + val_text)
            self.model = CharLSTM(replace(model_cfg or CharLSTMConfig(), vocab_size=len(self.vocab)))
            state, self.history, self.samples = {}, [], []
        device = resolve_device(cfg.device)
        self.model.to(device).train()
        train_ids = torch.as_tensor(self.vocab.encode(train_text)[0])
        self.val_ids = torch.as_tensor(self.vocab.encode(val_text[:cfg.max_val_chars])[0]).to(device)
        self.streams = _streams(train_ids, cfg.batch_size, cfg.seq_length).to(device)
        if len(self.val_ids) < cfg.seq_length + 2:
            raise RnnvizError(f"validation text too short ({len(self.val_ids)} chars): add text or "
                              f"raise --val-fraction")
        self.steps_per_epoch = (self.streams.shape[1] - 1) // cfg.seq_length
        self.total_steps = min(cfg.epochs * self.steps_per_epoch, cfg.max_steps or math.inf)
        self.opt = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        if "optimizer" in state:
            self.opt.load_state_dict(state["optimizer"])
        self.step = int(state.get("step", 0))
        self.best = float(state.get("best_val_loss", math.inf))
        self.sample_gen = torch.Generator().manual_seed(cfg.seed)
        self.meta = {
            "train_options": asdict(cfg),
            "corpus": [s.describe() for s in sources],
            "corpus_chars": len(train_text) + len(val_text),
            "split": {"train_chars": len(train_text), "val_chars": len(val_text),
                      "val_chars_used": len(self.val_ids)},
            "unigram_bits_per_char": unigram_entropy_bits(train_text + val_text),
            **extra_meta,
        }
        self.hidden = None  # carried across batches within an epoch
        self.train_loss = self.val_loss = math.nan
        self.clock = _Clock()

    def train_step(self) -> float:
        """One batch of truncated backprop; returns the learning rate it used."""
        cfg = self.cfg
        epoch, pos = divmod(self.step, self.steps_per_epoch)
        if pos == 0:
            self.hidden = None  # each epoch starts the streams afresh
        lr = cfg.lr * cfg.lr_decay ** max(0, epoch + 1 - cfg.decay_after)
        for group in self.opt.param_groups:
            group["lr"] = lr
        x = self.streams[:, pos * cfg.seq_length: (pos + 1) * cfg.seq_length]
        y = self.streams[:, pos * cfg.seq_length + 1: (pos + 1) * cfg.seq_length + 1]
        logits, hidden = self.model(x, self.hidden)
        self.hidden = detach_state(hidden)
        loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.step += 1
        self.clock.chars += x.numel()
        value = loss.item()
        self.train_loss = value if math.isnan(self.train_loss) else 0.95 * self.train_loss + 0.05 * value
        return lr

    def validate(self, lr: float, elapsed: float) -> None:
        """Validation loss into the history; the checkpoint saved when it is the best yet."""
        cfg = self.cfg
        self.val_loss = evaluate(self.model, self.val_ids, cfg.seq_length, cfg.batch_size)
        self.history.append({"step": self.step, "epoch": self.step / self.steps_per_epoch,
                             "train_loss": self.train_loss, "val_loss": self.val_loss, "lr": lr,
                             "seconds": elapsed})
        if self.val_loss < self.best:
            self.best = self.val_loss
            self.save(self.best)

    def keep_sample(self) -> str:
        """A sample kept in the history; the text to show."""
        text = self.model.sample(self.vocab, self.cfg.sample_length, temperature=0.8, generator=self.sample_gen)
        self.samples.append({"step": self.step, "train_loss": self.train_loss, "text": text})
        return f"--- sample at step {self.step} (loss {self.train_loss:.3f}) ---\n{text}\n"

    def save(self, val_loss: float) -> None:
        meta = {**self.meta, "history": self.history, "samples": self.samples,
                "best_val_loss": val_loss, "best_val_bpc": val_loss / LN2,
                "train_state": {"step": self.step, "best_val_loss": val_loss,
                                **({"optimizer": _on_cpu(self.opt.state_dict())} if self.cfg.keep_optimizer else {})}}
        save_checkpoint(self.out, self.model, self.vocab, meta)

    def finish(self) -> None:
        """The best weights stay at ``out``, with the full history and samples up to the stop."""
        if not self.out.exists():
            self.save(self.best)
        elif self.samples or self.history:
            ckpt = load_checkpoint(self.out)
            save_checkpoint(self.out, ckpt.model, ckpt.vocab, {**ckpt.meta, "history": self.history,
                                                                "samples": self.samples})
