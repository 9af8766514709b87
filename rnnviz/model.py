"""The character-level RNN: embedding -> multi-layer nn.LSTM, nn.GRU or nn.RNN -> linear over
the vocabulary (Karpathy et al. 2015 compare the three cells at 1-3 layers).

No I/O and no argument parsing here; checkpoints live in ``checkpoint.py``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from .errors import RnnvizError
from .options import CELLS, CharRNNConfig, cell_name  # noqa: F401 (the model's config lives with the options)

UNKNOWN = "\ufffd"  # id 0 of every vocabulary: stands for characters never seen in training


class Vocab:
    """Maps characters to ids and back. Id 0 is the unknown symbol."""

    def __init__(self, chars: list[str]):
        if not chars or chars[0] != UNKNOWN or len(set(chars)) != len(chars):
            raise RnnvizError("a vocabulary is a list of distinct characters starting with the unknown symbol")
        self.chars = list(chars)
        self.index = {ch: i for i, ch in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        return cls([UNKNOWN] + sorted(set(text) - {UNKNOWN}))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> tuple[np.ndarray, int]:
        """Ids of ``text`` (int64) and how many characters were not in the vocabulary."""
        # A table over code points is ~30x faster than a dict lookup per character.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        top = max(ord(c) for c in self.chars)
        table = np.zeros(top + 2, dtype=np.int64)
        for i, ch in enumerate(self.chars):
            table[ord(ch)] = i
        ids = table[np.minimum(codes, top + 1)]
        unknown = int(np.count_nonzero(ids == 0)) - text.count(UNKNOWN)
        return ids, unknown

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


CharLSTMConfig = CharRNNConfig  # the name before GRU and RNN cells existed


class CharRNN(nn.Module):
    def __init__(self, config: CharRNNConfig):
        super().__init__()
        if config.vocab_size < 2:
            raise RnnvizError("the vocabulary needs at least two symbols")
        self.config = config
        self.embed = nn.Embedding(config.vocab_size, config.embedding_size)
        args = (config.embedding_size, config.hidden_size, config.num_layers)
        kwargs = dict(dropout=config.dropout if config.num_layers > 1 else 0.0, batch_first=True)
        if config.cell == "lstm":
            self.rnn = nn.LSTM(*args, **kwargs)
        elif config.cell == "gru":
            self.rnn = nn.GRU(*args, **kwargs)
        else:
            self.rnn = nn.RNN(*args, nonlinearity=config.cell[4:], **kwargs)
        self.drop = nn.Dropout(config.dropout)
        self.head = nn.Linear(config.hidden_size, config.vocab_size)
        if config.cell == "lstm":
            with torch.no_grad():
                # Forget-gate bias 1 (torch-rnn, Jozefowicz et al.): remembers by default early on.
                h = config.hidden_size
                for layer in range(config.num_layers):
                    getattr(self.rnn, f"bias_ih_l{layer}")[h:2 * h].fill_(1.0)
                    getattr(self.rnn, f"bias_hh_l{layer}")[h:2 * h].fill_(0.0)
        self._register_load_state_dict_pre_hook(_rename_lstm_keys)

    @property
    def lstm(self) -> nn.Module:
        """The recurrent module under its name from before GRU and RNN cells (any cell)."""
        return self.rnn

    def forward(self, ids: torch.Tensor, state=None):
        """ids (B, T) -> logits (B, T, V), state: (h_n, c_n) for an LSTM, h_n otherwise,
        each (layers, B, H)."""
        x = self.embed(ids)
        out, state = self.rnn(x, state)
        return self.head(self.drop(out)), state

    def sample(self, vocab: Vocab, length: int, prime: str = "", temperature: float = 1.0,
               argmax: bool = False, generator: torch.Generator | None = None, clamps=()) -> str:
        """Generate ``length`` characters after ``prime``; temperature divides the logits.
        ``clamps`` (rnnviz.intervene): units held at values, steps counted from the first
        character of ``prime`` (or of the newline that starts an empty prime)."""
        return "".join(self.generate(vocab, length, prime, temperature, argmax, generator, clamps))

    def generate(self, vocab: Vocab, length: int, prime: str = "", temperature: float = 1.0,
                 argmax: bool = False, generator: torch.Generator | None = None, clamps=()):
        """The characters of :meth:`sample`, one at a time, as they are drawn."""
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                device = next(self.parameters()).device
                prime_ids, _ = vocab.encode(prime or "\n")
                ids = torch.as_tensor(prime_ids, device=device).unsqueeze(0)
                if clamps:
                    from .intervene import clamped_forward
                    step = clamped_forward(self, clamps)
                else:
                    def step(ids, state=None, t0=0):
                        return self(ids, state)
                logits, state = step(ids)
                t = ids.shape[1]
                last = logits[0, -1]
                for _ in range(length):
                    if argmax:
                        nxt = int(last.argmax())
                    else:
                        # On the CPU, where ``generator`` lives: the same text on any device.
                        probs = torch.softmax(last.double().cpu() / temperature, dim=-1)
                        probs[0] = 0.0  # never emit the unknown symbol
                        nxt = int(torch.multinomial(probs, 1, generator=generator))
                    yield vocab.chars[nxt]
                    logits, state = step(torch.tensor([[nxt]], device=device), state, t0=t)
                    t += 1
                    last = logits[0, -1]
        finally:
            self.train(was_training)


CharLSTM = CharRNN  # the name before GRU and RNN cells existed


def detach_state(state):
    """A recurrent state ((h, c) of an LSTM, h of a GRU or RNN) cut from the graph."""
    if isinstance(state, torch.Tensor):
        return state.detach()
    return tuple(s.detach() for s in state)


def _rename_lstm_keys(state_dict, prefix, *_):
    """Checkpoints written before GRU and RNN cells name the recurrent module ``lstm``."""
    for key in [k for k in state_dict if k.startswith(prefix + "lstm.")]:
        state_dict[prefix + "rnn." + key[len(prefix) + 5:]] = state_dict.pop(key)
