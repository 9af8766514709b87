"""``rnnviz export --lstmvis``: a folder the LSTMVis server (Strobelt et al. 2017) loads as it is.

    export_lstmvis("dumps/demo.h5", "lstmvis/demo", negate=["layer2.c[76]"])

LSTMVis reads HDF5 paths named in ``lstm.yml``, so the states, the text ids, the top-k
predictions and the feature tracks are read from the dump where they are. What must be
new goes into ``DIR/rnnviz_side.h5``, never into the dump: the source index of each
character (the dump's files run together on one axis) and negated copies of signed
units (LSTMVis matches only values above a positive threshold, and a cell can be
*negative* inside what it tracks). Its dict files are split on whitespace, so
whitespace characters get visible stand-ins (``STAND_INS``; any other whitespace or
unprintable character is written ``U+XXXX``).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import yaml

from .dumpfile import CHUNK_UNITS, SideFile, open_dump
from .errors import RnnvizError
from .names import KIND_RANGE, h5_path, kind_range, parse_point, parse_unit

STAND_INS = {" ": "␣", "\n": "↵", "\t": "→", "\r": "␍"}
CONFIG, CHARS, SOURCES, SIDE = "lstm.yml", "chars.dict", "sources.dict", "rnnviz_side.h5"
ROWS = 1 << 16   # rows read and written at a time: bounded memory on long dumps


def token(ch: str) -> str:
    """The whitespace-free word LSTMVis shows for character ``ch``."""
    if ch in STAND_INS:
        return STAND_INS[ch]
    if ch.isspace() or not ch.isprintable() or ch in STAND_INS.values():
        return f"U+{ord(ch):04X}"
    return ch


def export_lstmvis(dump_path, folder, *, points: str | None = None, negate=(), negate_signed: bool = False,
                   force: bool = False) -> Path:
    """Write ``folder`` (lstm.yml, chars.dict, sources.dict, rnnviz_side.h5) for the dump at
    ``dump_path``. ``points``: as ``rnnviz analyze --points`` (default every recorded one);
    ``negate``: unit names to add negated copies of; ``negate_signed``: all units of the
    exported c, h and gate_g points."""
    dump_path, folder = Path(dump_path).resolve(), Path(folder)
    if dump_path.suffix not in (".h5", ".hdf5"):
        raise RnnvizError(f"{dump_path}: LSTMVis opens HDF5 files only by the name .h5 or .hdf5; rename the dump")
    if folder.exists() and not folder.is_dir():
        raise RnnvizError(f"{folder}: exists and is not a folder")
    if folder.exists() and any(folder.iterdir()) and not force:
        raise RnnvizError(f"{folder} exists; pass --force to replace what rnnviz writes in it")
    if negate and negate_signed:
        raise RnnvizError("--negate and --negate-signed contradict each other: pick one")
    if not folder.parent.resolve().is_dir():
        raise RnnvizError(f"{folder}: folder {folder.parent} does not exist; create it first")
    with open_dump(dump_path) as d:
        exported = d.select(points)
        flipped = _negated_units(d, exported, negate, negate_signed)
        folder.mkdir(exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".rnnviz-export-") as tmp:
            tmp = Path(tmp)
            (tmp / CHARS).write_text("".join(f"{token(ch)} {i}\n" for i, ch in enumerate(d.vocab)), "utf-8")
            names = _source_tokens(list(d.sources["name"]))
            (tmp / SOURCES).write_text("".join(f"{n} {i}\n" for i, n in enumerate(names)), "utf-8")
            with SideFile(tmp / SIDE) as side:
                _write_side(d, side, flipped)
            config = _config(d, dump_path, exported, flipped)
            (tmp / CONFIG).write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), "utf-8")
            for name in (CHARS, SOURCES, SIDE, CONFIG):   # the YAML last: it names the rest
                os.replace(tmp / name, folder / name)
    return folder


def _negated_units(d, exported: list[str], negate, negate_signed: bool) -> dict[str, list[int]]:
    """point -> the unit indices to store negated, checked against the export."""
    if negate_signed:
        return {p: list(range(d.hidden_size)) for p in exported if KIND_RANGE[parse_point(p)[1]] != "unit"}
    out: dict[str, list[int]] = {}
    for name in negate:
        point, index = d.check_unit(name)
        if point not in exported:
            raise RnnvizError(f"--negate {name}: {point} is not among the exported points "
                              f"({', '.join(exported)})")
        if KIND_RANGE[parse_point(point)[1]] == "unit":
            raise RnnvizError(f"--negate {name}: a sigmoid gate is never negative; negate c, h or gate_g units")
        out.setdefault(point, []).append(index)
    return {p: sorted(set(ix)) for p, ix in out.items()}


def _source_tokens(names: list[str]) -> list[str]:
    """Whitespace-free, distinct names for the source-index dict (file names, then #N if repeated)."""
    short = ["".join(token(ch) if ch.isspace() or not ch.isprintable() else ch for ch in Path(n).name) or "unnamed"
             for n in names]
    return [s if short.count(s) == 1 else f"{s}#{i}" for i, s in enumerate(short)]


def _write_side(d, side: SideFile, flipped: dict[str, list[int]]) -> None:
    """The source index (int32, N) and, per point, a full-width copy holding minus the chosen
    units (the other columns stay unwritten zeros, so LSTMVis's cell numbers match rnnviz's)."""
    n = d.n_chars
    lengths = d.sources["length"].to_numpy()
    index = np.repeat(np.arange(len(lengths), dtype=np.int32), lengths)   # sources lie end to end
    side.create("source", (n,), np.int32)
    side.put("source", index)
    for point, units in flipped.items():
        ds = d[point]
        side.create(h5_path(point).replace("/states/", "negated/", 1), ds.shape, ds.dtype, {"units": units})
        groups = sorted({u // CHUNK_UNITS for u in units})           # chunk columns holding a chosen unit
        for start in range(0, n, ROWS):
            for g in groups:
                lo, hi = g * CHUNK_UNITS, min(ds.shape[1], (g + 1) * CHUNK_UNITS)
                block = -ds[start:start + ROWS, lo:hi]
                keep = np.zeros(hi - lo, bool)
                keep[[u - lo for u in units if lo <= u < hi]] = True
                block[:, ~keep] = 0
                side.put(h5_path(point).replace("/states/", "negated/", 1), block, start, np.s_[lo:hi])


def _state_entry(point: str, path: str, label: str, cell: str, **extra) -> dict:
    layer, kind = parse_point(point)
    entry = {"type": label, "layer": layer + 1, "path": path, **extra}
    # LSTMVis applies tanh unless told otherwise: right for the unbounded c (and the h of
    # a ReLU RNN) only.
    entry["transform"] = "tanh" if kind_range(kind, cell) == "unbounded" else "none"
    if KIND_RANGE[kind] == "unit":
        entry["unsigned"] = True
    return entry


def _config(d, dump_path: Path, exported: list[str], flipped: dict[str, list[int]]) -> dict:
    types = [_state_entry(p, h5_path(p), parse_point(p)[1], d.cell) for p in exported]
    for point, units in flipped.items():
        shown = ",".join(map(str, units[:6])) + ("..." if len(units) > 6 else "")
        types.append(_state_entry(point, "/" + h5_path(point).replace("/states/", "negated/", 1),
                                  f"-{parse_point(point)[1]} ({shown})", d.cell, file="side"))
    meta = {"top_predictions": {"file": "dump", "type": "wordvec", "path": "/predictions/topk_ids",
                                "weights_path": "/predictions/topk_probs", "dict": "chars",
                                "vis": {"type": "wordvec"}},
            "source": {"file": "side", "path": "/source", "dict": "sources", "vis": {"type": "discrete", "range": "dict"}}}
    a = d.analysis
    for name, kind in ({} if a is None else a.feature_kinds).items():
        if kind == "binary":
            meta[name] = {"file": "dump", "path": f"/analysis/features/{name}",
                          "vis": {"type": "discrete", "range": [0, 1]}}
    return {
        "name": dump_path.stem,
        "description": f"rnnviz dump {dump_path.name}: {d.n_chars:,} characters in {len(d.sources)} file(s), "
                       f"{d.num_layers} layers x {d.hidden_size} units (rnnviz export --lstmvis)",
        "files": {"dump": str(dump_path), "side": SIDE, "chars": CHARS, "sources": SOURCES},
        "word_sequence": {"file": "dump", "path": "/text/ids", "dict_file": "chars"},
        "states": {"file": "dump", "types": types},
        "meta": meta,
        "etc": {"regex_search": False},   # LSTMVis's regex search fails on Python >= 3.8
    }


def parse_units(spec: str | None) -> list[str]:
    """'layer2.c[76],layer0.c[169]' -> the unit names, each checked."""
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    for name in names:
        parse_unit(name)
    return names

