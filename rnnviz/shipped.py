"""The pretrained model shipped inside the package (trained by ``rnnviz train --preset stdlib``)."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

from .errors import RnnvizError


def shipped_model_path() -> Path:
    path = Path(str(resources.files("rnnviz") / "data" / "stdlib.pt"))
    if not path.exists():
        raise RnnvizError(f"{path}: the shipped model is missing from this install; "
                          f"reinstall rnnviz or train one with `rnnviz train --preset stdlib`")
    return path
