"""Checkpoints: one file with weights, config, vocabulary, training options, history,
corpus description and versions. Loaded with ``weights_only=True``: no pickled code runs;
each field is checked (ckfields.py) before anything is built from it.

    ckpt = load_checkpoint("model.pt"); ckpt.model(ids)
"""
from __future__ import annotations

import hashlib
import io
import os
import platform
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import __version__
from .ckfields import check_config, check_int, check_meta, check_state_dict, check_vocab
from .errors import RnnvizError
from .model import UNKNOWN, CharLSTM, CharLSTMConfig, Vocab
from .outputs import disk_full

FORMAT = "rnnviz-checkpoint"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    model: CharLSTM
    vocab: Vocab
    meta: dict = field(default_factory=dict)  # options, history, corpus, versions (JSON-able)
    path: Path | None = None
    sha256: str = ""

    @property
    def config(self) -> CharLSTMConfig:
        return self.model.config


def versions() -> dict:
    return {"rnnviz": __version__, "torch": str(torch.__version__), "python": platform.python_version()}


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a sibling temporary file, then rename: the target never holds half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with disk_full(path), open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_checkpoint(path: str | os.PathLike, model: CharLSTM, vocab: Vocab, meta: dict) -> None:
    path = Path(path)
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    blob = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": model.config.to_dict(),
        "vocab": list(vocab.chars),
        "state_dict": state,
        "meta": {**meta, "versions": versions()},
    }
    buf = io.BytesIO()
    torch.save(blob, buf)
    atomic_write_bytes(path, buf.getvalue())


def read_checkpoint_blob(path: str | os.PathLike) -> dict:
    """The raw dict of a checkpoint file, checked to be one; no code from the file runs."""
    path = Path(path)
    if not path.exists():
        raise RnnvizError(f"{path}: no such file")
    if path.is_dir():
        raise RnnvizError(f"{path}: is a directory, expected an rnnviz checkpoint (.pt)")
    if not zipfile.is_zipfile(path):
        raise RnnvizError(f"{path}: expected an rnnviz checkpoint (a torch .pt file), found something else")
    try:
        with warnings.catch_warnings():     # torch's own notes on odd files would precede our one line
            warnings.simplefilter("ignore")
            blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for foreign or damaged files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise RnnvizError(f"{path}: not a loadable rnnviz checkpoint ({first[:200]})") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise RnnvizError(f"{path}: expected an rnnviz checkpoint, found a torch file of another kind")
    try:
        version = check_int(blob.get("format_version", 1), "format_version", 1)
        if version > FORMAT_VERSION:
            raise RnnvizError(f"checkpoint format {version} is newer than this rnnviz understands "
                              f"({FORMAT_VERSION}); upgrade rnnviz")
        config = check_config(blob.get("config"))
        check_vocab(blob.get("vocab"), config["vocab_size"], UNKNOWN)
        check_state_dict(blob.get("state_dict"), config)
        blob["meta"] = check_meta(blob.get("meta"))
    except RnnvizError as e:
        raise RnnvizError(f"{path}: {e}") from None
    return blob


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> Checkpoint:
    """The one loader every command uses; every field is checked before the model is built."""
    blob = read_checkpoint_blob(path)
    try:
        model = CharLSTM(CharLSTMConfig(**blob["config"]))
        model.load_state_dict(blob["state_dict"])
    except RuntimeError as e:       # the fields were checked: only torch itself is left to fail
        raise RnnvizError(f"{path}: damaged checkpoint ({str(e).splitlines()[0][:200]})") from None
    model.to(device).eval()
    return Checkpoint(model=model, vocab=Vocab(blob["vocab"]), meta=blob["meta"], path=Path(path),
                      sha256=file_sha256(path))
