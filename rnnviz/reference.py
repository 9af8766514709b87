"""The reference text of an intervention: where ``mean`` values come from.

    means = reference_means(ckpt, "heldout", ["layer1.c"])   # point -> (H,) float64

A reference is named by the user, never the text being evaluated: a dump recorded from
the same checkpoint (its stored activations are averaged), a text file (recorded now,
each file from a zero state as ``rnnviz dump`` does), or ``heldout``: the checkpoint's
validation text, re-read from the paths recorded in it and checked against their
hashes (a stdlib-preset model's held-out files; otherwise the tail of its corpus that
training validated on).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from .errors import RnnvizError
from .names import parse_point

log = logging.getLogger(__name__)

HELDOUT = "heldout"
CHUNK = 4096          # steps per recorded chunk of a reference text
ROWS = 1 << 16        # dump rows read at a time


def reference_means(checkpoint, reference, points: list[str]) -> dict[str, np.ndarray]:
    """Each of ``points``' per-unit mean (H,) over ``reference`` (a dump path, a text
    file, or "heldout") for ``checkpoint`` (a rnnviz.checkpoint.Checkpoint: its hash is
    checked against a dump's, its vocabulary reads a text, its metadata names the
    held-out text; a bare CharRNN takes a dump only)."""
    model = getattr(checkpoint, "model", checkpoint)
    vocab = getattr(checkpoint, "vocab", None)
    if str(reference) == HELDOUT:
        if vocab is None:
            raise RnnvizError("--reference heldout needs the checkpoint (its metadata), not a bare model")
        return text_means(model, vocab, heldout_texts(checkpoint), points)
    path = Path(reference)
    if not path.exists():
        raise RnnvizError(f"--reference {reference}: no such file (expected a dump, a text file or 'heldout')")
    with open(path, "rb") as f:
        is_hdf5 = f.read(8) == b"\x89HDF\r\n\x1a\n"
    if is_hdf5:
        return dump_means(path, points, getattr(checkpoint, "sha256", None))
    if vocab is None:
        raise RnnvizError(f"--reference {reference}: a text needs the checkpoint (its vocabulary), not a bare model")
    from .text import read_sources
    return text_means(model, vocab, [s.text for s in read_sources([str(path)])], points)


def dump_means(path, points: list[str], sha256: str | None = None) -> dict[str, np.ndarray]:
    """Per-unit means of ``points`` over every character of the dump at ``path``."""
    from .dumpfile import open_dump
    with open_dump(path) as d:
        recorded = d.attrs.get("checkpoint_sha256")
        if sha256 is not None and recorded not in (None, sha256):
            raise RnnvizError(f"--reference {path}: recorded from another checkpoint (sha256 {str(recorded)[:12]}..., "
                              f"this one is {sha256[:12]}...)")
        out = {}
        for point in points:
            if point not in d:
                raise RnnvizError(f"--reference {path}: the dump has no {point} (it recorded "
                                  f"{', '.join(d.points) or 'no points'}); dump it with --record all")
            a = d[point]
            total = np.zeros(a.shape[1], np.float64)
            for lo in range(0, a.shape[0], ROWS):
                total += a[lo:lo + ROWS].astype(np.float64).sum(axis=0)
            out[point] = total / max(a.shape[0], 1)
    return out


def heldout_texts(checkpoint) -> list[str]:
    """The checkpoint's validation text, re-read from its recorded paths and checked
    against their hashes: the held-out files of a preset, else the tail of the corpus."""
    from .text import read_source
    meta = checkpoint.meta
    entries = meta.get("heldout") or meta.get("corpus") or []
    if not entries:
        raise RnnvizError("--reference heldout: the checkpoint records no text files; name a dump or a text file")
    texts = []
    for e in entries:
        path = Path(e["name"])
        if not path.is_file():
            raise RnnvizError(f"--reference heldout: {path}, recorded in the checkpoint, is missing; "
                              f"name a dump or a text file instead")
        src = read_source(path)
        if e.get("sha256") and src.sha256 != e["sha256"]:
            raise RnnvizError(f"--reference heldout: {path} changed since training (sha256 differs); "
                              f"name a dump or a text file instead")
        texts.append(src.text)
    if meta.get("heldout"):
        return texts
    # Training validated on the tail of the joined corpus (rnnviz.train.split_text).
    n_val = int(meta.get("split", {}).get("val_chars", 0))
    if n_val <= 0:
        raise RnnvizError("--reference heldout: the checkpoint records no validation split; "
                          "name a dump or a text file")
    return ["".join(texts)[-n_val:]]


@torch.no_grad()
def text_means(model, vocab, texts: list[str], points: list[str], kernel: str = "auto") -> dict[str, np.ndarray]:
    """Per-unit means of ``points`` over ``texts``, each recorded from a zero state by
    ``model`` (a CharRNN) without any intervention."""
    from .backends import make_backend
    backend = make_backend(model.rnn, kernel=kernel, embedding=model.embed.weight)
    wanted: dict[int, list[str]] = {}
    for p in points:
        layer, kind = parse_point(p)
        wanted.setdefault(layer, []).append(kind)
    device = model.embed.weight.device
    log.info("averaging %s over the reference text (%s chars)", ", ".join(points), f"{sum(map(len, texts)):,}")
    sums = {p: torch.zeros(model.config.hidden_size, dtype=torch.float64) for p in points}
    n = 0
    for text in texts:
        ids = torch.as_tensor(vocab.encode(text)[0], device=device)[None]
        state = None
        for t in range(0, ids.shape[1], CHUNK):
            runs = backend.run(ids[:, t:t + CHUNK], state)
            state = tuple(torch.stack([r.state[k] for r in runs]) for k in range(len(runs[0].state)))
            for layer, kinds in wanted.items():
                for kind, a in runs[layer].points(kinds).items():
                    sums[f"layer{layer}.{kind}"] += a[0].double().sum(dim=0).cpu()
        n += ids.shape[1]
    if n == 0:
        raise RnnvizError("the reference text is empty")
    return {p: (s / n).numpy() for p, s in sums.items()}
