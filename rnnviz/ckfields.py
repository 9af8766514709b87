"""Checking a checkpoint's fields one by one before anything is built from them.

A checkpoint is data from anywhere: each field is checked for its type and range, the
vocabulary against the configuration, and every weight's shape against what the
configuration implies, so that a bad file gives one line naming the field instead of a
traceback (or a 25 GB allocation for a config nobody's weights match).
"""
from __future__ import annotations

import math
import numbers

import torch

from .errors import RnnvizError

MAX_LAYERS = 64
CONFIG_KEYS = ("vocab_size", "num_layers", "hidden_size", "embedding_size", "dropout")
OPTIONAL_CONFIG_KEYS = ("cell",)      # absent in checkpoints from before GRU and RNN cells: an LSTM
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}   # weight rows per unit


class FieldError(RnnvizError):
    def __init__(self, field: str, expected: str, found):
        shown = repr(found) if not isinstance(found, (dict, list)) else type(found).__name__
        super().__init__(f"checkpoint field {field}: expected {expected}, found {shown[:80]}")
        self.field = field


def check_int(value, field: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise FieldError(field, "an integer", value)
    if value < low or (high is not None and value > high):
        raise FieldError(field, f"an integer in {low}..{high}" if high is not None else f"an integer >= {low}", value)
    return int(value)


def _number(value, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise FieldError(field, "a finite number", value)
    return float(value)


def _typed(value, kind, field: str, what: str):
    if not isinstance(value, kind):
        raise FieldError(field, what, value)
    return value


def check_config(config) -> dict:
    _typed(config, dict, "config", "a dict")
    for key in CONFIG_KEYS:
        if key not in config:
            raise FieldError(f"config.{key}", "a value", None)
    extra = sorted(set(config) - set(CONFIG_KEYS) - set(OPTIONAL_CONFIG_KEYS))
    if extra:
        raise FieldError(f"config.{extra[0]}", "no such field", config[extra[0]])
    check_int(config["vocab_size"], "config.vocab_size", 2)
    check_int(config["num_layers"], "config.num_layers", 1, MAX_LAYERS)
    check_int(config["hidden_size"], "config.hidden_size", 1)
    check_int(config["embedding_size"], "config.embedding_size", 1)
    dropout = _number(config["dropout"], "config.dropout")
    if not 0.0 <= dropout < 1.0:
        raise FieldError("config.dropout", "a number in [0, 1)", dropout)
    cell = config.get("cell", "lstm")
    if not isinstance(cell, str) or {"rnn": "rnn_tanh"}.get(cell, cell) not in GATES:
        raise FieldError("config.cell", "lstm, gru, rnn (= rnn_tanh) or rnn_relu", cell)
    return config


def check_vocab(vocab, vocab_size: int, unknown: str) -> list[str]:
    _typed(vocab, list, "vocab", "a list of characters")
    for i, ch in enumerate(vocab):
        if not isinstance(ch, str) or len(ch) != 1:
            raise FieldError(f"vocab[{i}]", "one character", ch)
    if len(vocab) != vocab_size:
        raise FieldError("vocab", f"{vocab_size} characters (config.vocab_size, the output layer's size)",
                         f"{len(vocab)} characters")
    if vocab[0] != unknown:
        raise FieldError("vocab[0]", f"the unknown symbol {unknown!r}", vocab[0])
    if len(set(vocab)) != len(vocab):
        raise FieldError("vocab", "distinct characters", "repeated ones")
    return vocab


def expected_shapes(config: dict, module: str = "rnn") -> dict[str, tuple[int, ...]]:
    """Every weight of a CharRNN with ``config``, and its shape (the recurrent module's weights
    under ``module``: ``lstm`` in checkpoints from before GRU and RNN cells)."""
    V, L, H, E = (config[k] for k in ("vocab_size", "num_layers", "hidden_size", "embedding_size"))
    G = GATES[{"rnn": "rnn_tanh"}.get(config.get("cell", "lstm"), config.get("cell", "lstm"))] * H
    shapes = {"embed.weight": (V, E), "head.weight": (V, H), "head.bias": (V,)}
    for layer in range(L):
        shapes[f"{module}.weight_ih_l{layer}"] = (G, E if layer == 0 else H)
        shapes[f"{module}.weight_hh_l{layer}"] = (G, H)
        shapes[f"{module}.bias_ih_l{layer}"] = (G,)
        shapes[f"{module}.bias_hh_l{layer}"] = (G,)
    return shapes


def check_state_dict(state, config: dict) -> dict:
    _typed(state, dict, "state_dict", "a dict of tensors")
    shapes = expected_shapes(config, "lstm" if any(str(k).startswith("lstm.") for k in state) else "rnn")
    for name, shape in shapes.items():
        if name not in state:
            raise FieldError(f"state_dict.{name}", f"a tensor of shape {shape}", None)
        t = state[name]
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise FieldError(f"state_dict.{name}", "a floating-point tensor", type(t).__name__)
        if tuple(t.shape) != shape:
            raise FieldError(f"state_dict.{name}", f"shape {shape} (from config)", tuple(t.shape))
    extra = sorted(set(state) - set(shapes))
    if extra:
        raise FieldError(f"state_dict.{extra[0]}", "no such weight for this config", "one")
    return state


_META_LISTS = {  # field -> {key: kind} of each entry ("?": may be absent)
    "history": {"step": "int", "epoch": "number", "val_loss": "number", "seconds": "number"},
    "samples": {"step": "int", "train_loss": "number", "text": "str"},
    "corpus": {"name": "str", "chars": "int?", "sha256": "str?"},
    "heldout": {"name": "str", "chars": "int?", "sha256": "str?"},
}
_META_NUMBERS = ("best_val_loss", "best_val_bpc", "unigram_bits_per_char")
_META_DICTS = ("train_options", "versions", "train_state", "split")


def check_meta(meta) -> dict:
    """The parts of ``meta`` that commands read (info, train --resume, errors @checkpoint)."""
    if meta is None:
        return {}
    _typed(meta, dict, "meta", "a dict")
    for field, keys in _META_LISTS.items():
        entries = _typed(meta.get(field, []), list, f"meta.{field}", "a list")
        for i, entry in enumerate(entries):
            _typed(entry, dict, f"meta.{field}[{i}]", "a dict")
            for key, kind in keys.items():
                where, value = f"meta.{field}[{i}].{key}", entry.get(key)
                if kind.endswith("?"):
                    if key not in entry:
                        continue
                    kind = kind[:-1]
                if kind == "int":
                    check_int(value, where, 0)
                elif kind == "number":
                    _number(value, where)
                else:
                    _typed(value, str, where, "a string")
    for field in _META_NUMBERS:
        if field in meta:
            _number(meta[field], f"meta.{field}")
    for field in _META_DICTS:
        if field in meta:
            _typed(meta[field], dict, f"meta.{field}", "a dict")
    if "command" in meta:
        _typed(meta["command"], str, "meta.command", "a string")
    return meta
