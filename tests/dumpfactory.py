"""Write small synthetic dumps through rnnviz.dumpfile, for tests of the analyzer and the app
that need planted units rather than a trained model."""
from __future__ import annotations

import numpy as np
import pandas as pd

from rnnviz.dumpfile import write_dump
from rnnviz.model import UNKNOWN


def write_synthetic_dump(path, text: str, states: dict[str, np.ndarray], *, sources=None,
                         topk: int = 3, dtype: str = "float32", complete: bool = True,
                         hidden_size: int | None = None, num_layers: int | None = None,
                         seed: int = 0, attrs: dict | None = None, chunks: tuple[int, int] | None = None) -> None:
    """``states`` maps point names (``layer0.c``) to (N, H) arrays; predictions are random.

    ``sources``: list of (name, length) pairs covering the text; default one source.
    ``attrs``: root attributes to set differently (e.g. a newer ``schema_version``).
    ``chunks``: (rows, units) of the states' chunks; default up to 4,096 rows of every unit.
    """
    n = len(text)
    rng = np.random.default_rng(seed)
    vocab = [UNKNOWN] + sorted(set(text) - {UNKNOWN})
    index = {ch: i for i, ch in enumerate(vocab)}
    layers = sorted({int(p.split(".")[0][5:]) for p in states})
    hidden = hidden_size or next(iter(states.values())).shape[1]
    layer_count = num_layers or (max(layers) + 1)
    sources = sources or [("synthetic.txt", n)]
    starts = np.cumsum([0] + [length for _, length in sources[:-1]])
    lengths = np.array([length for _, length in sources], dtype=np.int64)
    ids = rng.integers(0, len(vocab), size=(n, topk)).astype(np.int32)
    probs = np.sort(rng.dirichlet(np.ones(topk + 1), size=n)[:, :topk], axis=1)[:, ::-1]
    loss = rng.exponential(1.0, size=n).astype(np.float32)
    loss[starts + lengths - 1] = np.nan
    for point, values in states.items():
        assert values.shape[0] == n, point
    write_dump(
        path, text, {p: v.astype(dtype) for p, v in states.items()}, vocab=vocab,
        ids=np.array([index[c] for c in text], dtype=np.int32),
        sources=pd.DataFrame({"name": [name for name, _ in sources], "start": starts.astype(np.int64),
                              "length": lengths, "size_bytes": lengths, "sha256": ["0" * 64] * len(sources)}),
        loss=loss, topk_ids=ids, topk_probs=probs.astype(np.float32), dtype=dtype, complete=complete,
        chunks=chunks or (min(n, 4096), hidden),
        header={"num_layers": layer_count, "hidden_size": hidden, "unknown_chars": 0,
                "model_config": {"num_layers": layer_count, "hidden_size": hidden, "vocab_size": len(vocab)},
                "checkpoint": "synthetic", "checkpoint_sha256": "0" * 64, "versions": {"rnnviz": "test"},
                "command": "tests/dumpfactory.py", **(attrs or {})})


def ar1(rng, n: int, units: int, phi: float) -> np.ndarray:
    """(n, units) autocorrelated noise, like a recurrent unit drifting on its own."""
    out = np.empty((n, units))
    out[0] = rng.standard_normal(units)
    eps = rng.standard_normal((n, units)) * np.sqrt(1 - phi ** 2)
    for t in range(1, n):
        out[t] = phi * out[t - 1] + eps[t]
    return out
