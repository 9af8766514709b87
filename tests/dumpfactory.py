"""Write small synthetic dumps that follow docs/dump-format.md, for tests of the
analyzer and the app that need planted units rather than a trained model."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pandas as pd

from rnnviz.h5util import write_table
from rnnviz.model import UNKNOWN
from rnnviz.names import h5_path


def write_synthetic_dump(path, text: str, states: dict[str, np.ndarray], *, sources=None,
                         topk: int = 3, dtype: str = "float32", complete: bool = True,
                         hidden_size: int | None = None, num_layers: int | None = None,
                         seed: int = 0) -> None:
    """``states`` maps point names (``layer0.c``) to (N, H) arrays; predictions are random.

    ``sources``: list of (name, length) pairs covering the text; default one source.
    """
    n = len(text)
    rng = np.random.default_rng(seed)
    vocab = [UNKNOWN] + sorted(set(text) - {UNKNOWN})
    index = {ch: i for i, ch in enumerate(vocab)}
    layers = sorted({int(p.split(".")[0][5:]) for p in states})
    hidden = hidden_size or next(iter(states.values())).shape[1]
    sources = sources or [("synthetic.txt", n)]
    with h5py.File(path, "w") as f:
        f.attrs.update({
            "format": "rnnviz-dump", "schema_version": 1, "complete": int(complete),
            "n_chars": n, "num_layers": num_layers or (max(layers) + 1), "hidden_size": hidden,
            "recorded": json.dumps(list(states)), "dtype": dtype, "topk": topk,
            "unknown_chars": 0, "vocab": json.dumps(vocab),
            "model_config": json.dumps({"num_layers": num_layers or max(layers) + 1,
                                        "hidden_size": hidden, "vocab_size": len(vocab)}),
            "checkpoint": "synthetic", "checkpoint_sha256": "0" * 64,
            "versions": json.dumps({"rnnviz": "test"}), "created": "2026-01-01T00:00:00Z",
            "compression": "none", "command": "tests/dumpfactory.py",
        })
        f.create_dataset("text/codes", data=np.array([ord(c) for c in text], dtype=np.uint32))
        f.create_dataset("text/ids", data=np.array([index[c] for c in text], dtype=np.int32))
        starts = np.cumsum([0] + [length for _, length in sources[:-1]])
        write_table(f, "sources", pd.DataFrame({
            "name": [name for name, _ in sources], "start": starts.astype(np.int64),
            "length": np.array([length for _, length in sources], dtype=np.int64),
            "size_bytes": np.array([length for _, length in sources], dtype=np.int64),
            "sha256": ["0" * 64] * len(sources)}))
        for point, values in states.items():
            assert values.shape[0] == n, point
            f.create_dataset(h5_path(point), data=values.astype(dtype), chunks=(min(n, 4096), values.shape[1]))
        ids = rng.integers(0, len(vocab), size=(n, topk)).astype(np.int32)
        probs = np.sort(rng.dirichlet(np.ones(topk + 1), size=n)[:, :topk], axis=1)[:, ::-1]
        loss = rng.exponential(1.0, size=n).astype(np.float32)
        ends = starts + np.array([length for _, length in sources]) - 1
        loss[ends] = np.nan
        f.create_dataset("predictions/loss", data=loss)
        f.create_dataset("predictions/topk_ids", data=ids)
        f.create_dataset("predictions/topk_probs", data=probs.astype(np.float32))
