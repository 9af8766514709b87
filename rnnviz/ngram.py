"""Character n-gram language models with compact counts: interpolated Witten-Bell smoothing
over contexts of 0 .. order-1 characters, every table a pair of sorted numpy arrays.

    lm = NGramModel.fit(train_text, order=9)
    p = lm.truth_probs(held_out_text)          # (order, T): P(text[t] | text[:t]) per order

No dict per n-gram: each context of k characters is a 64-bit hash (a multiply-and-add over
its characters, exact up to hash collisions, which at 2^64 do not occur in practice), and
each table is a sorted key array searched with ``np.searchsorted``. The 4.6M-character
stdlib corpus at order 9 needs about 1 GB at its peak (``benchmarks/ngram_baseline.py``
measures it).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import RnnvizError

_MULT = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constant (golden ratio): mixes the hash


def symbols(text: str) -> np.ndarray:
    """Unicode code points of ``text`` as int64 (T,)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def extend_hash(keys: np.ndarray, syms: np.ndarray) -> np.ndarray:
    """Hash of a context one character longer: the old hash mixed with the new character."""
    with np.errstate(over="ignore"):
        return keys * _MULT + (syms.astype(np.uint64) + np.uint64(1))


@dataclass
class _Table:
    """Counts for contexts of one length k: sorted context hashes with their totals C(h) and
    distinct followers T(h), and sorted (context, next character) hashes with counts C(hc)."""
    ctx: np.ndarray      # (Nh,) uint64, sorted
    total: np.ndarray    # (Nh,) int64
    types: np.ndarray    # (Nh,) int64
    gram: np.ndarray     # (Ng,) uint64, sorted
    count: np.ndarray    # (Ng,) int64

    @classmethod
    def build(cls, ctx_keys: np.ndarray, nxt: np.ndarray) -> "_Table":
        grams, first, count = np.unique(extend_hash(ctx_keys, nxt), return_index=True, return_counts=True)
        ctx, total = np.unique(ctx_keys, return_counts=True)
        ctx_of_gram, types = np.unique(ctx_keys[first], return_counts=True)
        assert np.array_equal(ctx_of_gram, ctx)
        return cls(ctx, total.astype(np.int64), types.astype(np.int64), grams, count.astype(np.int64))

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.ctx, self.total, self.types, self.gram, self.count))


def _lookup(keys: np.ndarray, sorted_keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """values[key] where the key is in the table, else 0."""
    if len(sorted_keys) == 0:
        return np.zeros(len(keys), dtype=np.int64)
    at = np.minimum(np.searchsorted(sorted_keys, keys), len(sorted_keys) - 1)
    return np.where(sorted_keys[at] == keys, values[at], 0)


class NGramModel:
    """Interpolated Witten-Bell: P_k(c|h) = (C(hc) + T(h) P_{k-1}(c|h')) / (C(h) + T(h)),
    from P_{-1} = 1/alphabet; a context never seen in training keeps the shorter one's
    probability. The model of order n uses contexts of up to n-1 characters."""

    def __init__(self, tables: list[_Table], alphabet: int):
        self.tables, self.alphabet = tables, alphabet

    @property
    def order(self) -> int:
        return len(self.tables)

    @classmethod
    def fit(cls, texts: str | list[str], order: int = 9) -> "NGramModel":
        """Counts over each text on its own (no context crosses from one text into the next)."""
        if order < 1:
            raise RnnvizError(f"the n-gram order must be at least 1, got {order}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        syms = [symbols(t) for t in texts if t]
        if not syms:
            raise RnnvizError("no training text for the n-gram model")
        alphabet = len(np.unique(np.concatenate(syms))) + 1  # +1: room for unseen characters
        tables = []
        ctx = [np.zeros(len(s), dtype=np.uint64) for s in syms]  # the empty context at every t
        for k in range(order):
            # positions t >= k have k characters of context; ctx[i][t] hashes s[t-k:t]
            keys = np.concatenate([c[k:] for c, s in zip(ctx, syms)])
            nxt = np.concatenate([s[k:] for s in syms])
            tables.append(_Table.build(keys, nxt))
            ctx = [np.concatenate([c[:k + 1], extend_hash(c[k + 1:], s[:len(s) - k - 1])])
                   for c, s in zip(ctx, syms)]
        return cls(tables, alphabet)

    def nbytes(self) -> int:
        return sum(t.nbytes() for t in self.tables)

    def truth_probs(self, text: str) -> np.ndarray:
        """(order, T) float64: row n-1 is P(text[t] | the n-1 characters before t) under the
        order-n model, for every t; positions with fewer characters before them use the
        longest context they have."""
        syms = symbols(text)
        n = len(syms)
        out = np.empty((self.order, n))
        p = np.full(n, 1.0 / self.alphabet)
        ctx = np.zeros(n, dtype=np.uint64)
        for k, table in enumerate(self.tables):
            if k:
                ctx[k:] = extend_hash(ctx[k:], syms[:n - k])
            have = np.arange(n) >= k
            total = np.where(have, _lookup(ctx, table.ctx, table.total), 0)
            types = _lookup(ctx, table.ctx, table.types)
            count = _lookup(extend_hash(ctx, syms), table.gram, table.count)
            seen = total > 0
            p = np.where(seen, (count + types * p) / np.maximum(total + types, 1), p)
            out[k] = p
        return out

    def bits_per_char(self, texts: str | list[str]) -> float:
        """Mean -log2 P of the full-order model over every character of every text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        bits = sum(-np.log2(self.truth_probs(t)[-1]).sum() for t in texts if t)
        return float(bits / max(sum(len(t) for t in texts), 1))
