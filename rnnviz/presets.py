"""Named training recipes. ``stdlib`` trains the model shipped inside the package on the
running Python's standard-library source, holding out a fixed set of files."""
from __future__ import annotations

from pathlib import Path

from .errors import RnnvizError
from .text import stdlib_dir

# Held out of training: validation text, and the text the demo dumps and shows.
STDLIB_HELDOUT = ("textwrap.py", "shlex.py", "csv.py", "fnmatch.py", "string.py",
                  "glob.py", "colorsys.py", "netrc.py")

PRESETS = {
    "stdlib": {
        "model": {"num_layers": 3, "hidden_size": 256, "embedding_size": 48, "dropout": 0.2},
        "train": {"seq_length": 100, "batch_size": 64, "lr": 3e-3, "lr_decay": 0.9,
                  "decay_after": 1, "max_steps": 11250, "epochs": 50, "eval_every": 250,
                  "sample_every": 1000, "seed": 1234,
                  "keep_optimizer": False},
    },
}


def stdlib_files() -> tuple[list[Path], list[Path]]:
    """(training files, held-out files) of the stdlib preset: top-level .py modules, sorted."""
    root = stdlib_dir()
    if root is None:
        raise RnnvizError("this Python ships no standard-library source files; give text files instead")
    files = sorted(root.glob("*.py"))
    heldout = [root / name for name in STDLIB_HELDOUT if (root / name).exists()]
    train = [f for f in files if f.name not in STDLIB_HELDOUT]
    if not heldout or not train:
        raise RnnvizError(f"{root}: too few standard-library files for the stdlib preset")
    return train, heldout
