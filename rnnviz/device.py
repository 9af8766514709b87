"""Choosing the torch device for a command: ``--device auto|cpu|cuda``."""
from __future__ import annotations

from .errors import RnnvizError

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto"):
    """``auto`` is CUDA when torch sees a GPU, else the CPU; ``cuda`` without one is an error."""
    import torch
    if name not in DEVICES and not name.startswith("cuda:"):
        raise RnnvizError(f"unknown device {name!r}: expected auto, cpu or cuda")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise RnnvizError(f"--device {name}: this torch sees no CUDA GPU (use --device cpu)")
    return torch.device(name)
