"""Names of the recording points, defined once for the dump file, the analyzer and the app.

A recording point is one array per layer. An LSTM has ``layer0.c`` (cell state),
``layer0.h`` (hidden state) and its four gates after their nonlinearity,
``layer0.gate_i``, ``layer0.gate_f``, ``layer0.gate_g``, ``layer0.gate_o``; a GRU has
``layer0.h``, the reset and update gates ``layer0.gate_r``, ``layer0.gate_z`` and the
candidate ``layer0.gate_n``; a vanilla RNN has ``layer0.h``. One unit of a point is
written ``layer0.c[17]``. In the HDF5 dump a point lives at ``/states/layer0/c``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import RnnvizError

# PyTorch packs nn.LSTM gate weights in this order (the Lua char-rnn uses i, f, o, g).
GATES = ("i", "f", "g", "o")
KINDS = ("c", "h") + tuple(f"gate_{g}" for g in GATES)  # an LSTM's
# Each cell's kinds (cells named as in rnnviz.model.CELLS); nn.GRU packs r, z, n.
CELL_KINDS = {"lstm": KINDS, "gru": ("h", "gate_r", "gate_z", "gate_n"),
              "rnn_tanh": ("h",), "rnn_relu": ("h",)}
ALL_KINDS = KINDS + ("gate_r", "gate_z", "gate_n")
# What each kind's values can be: the app picks a colour map from this. (h of an
# rnn_relu cell is >= 0 and unbounded: see kind_range.)
KIND_RANGE = {"c": "unbounded", "h": "signed", "gate_i": "unit", "gate_f": "unit",
              "gate_g": "signed", "gate_o": "unit", "gate_r": "unit", "gate_z": "unit",
              "gate_n": "signed"}
_CELL_WORDS = {"lstm": "an LSTM", "gru": "a GRU", "rnn_tanh": "a vanilla RNN", "rnn_relu": "a vanilla RNN"}

_POINT_RE = re.compile(r"^layer(\d+)\.(c|h|gate_[ifgorzn])$")
_UNIT_RE = re.compile(r"^(layer\d+\.(?:c|h|gate_[ifgorzn]))\[(\d+)\]$")


def cell_kinds(cell: str = "lstm") -> tuple[str, ...]:
    """The kinds of points a cell has, in storage order."""
    if cell not in CELL_KINDS:
        raise RnnvizError(f"unknown cell {cell!r}: expected one of {', '.join(CELL_KINDS)}")
    return CELL_KINDS[cell]


def kind_range(kind: str, cell: str = "lstm") -> str:
    """``KIND_RANGE`` for ``kind`` of ``cell``: "unbounded", "signed" or "unit"."""
    return "unbounded" if (cell, kind) == ("rnn_relu", "h") else KIND_RANGE[kind]


def check_kind(kind: str, cell: str, point: str | None = None) -> None:
    """Refuse a kind the cell does not have (``layer0.c`` of a GRU) in one line."""
    kinds = cell_kinds(cell)
    if kind not in kinds:
        raise RnnvizError(f"{point or kind}: {_CELL_WORDS[cell]} has no {kind}; its points per layer "
                          f"are {', '.join(kinds)}")


def kinds_in(points) -> list[str]:
    """The kinds among ``points`` (names like ``layer0.gate_r``), in the canonical order."""
    present = {parse_point(p)[1] for p in points}
    return [k for k in ALL_KINDS if k in present]


def point_name(layer: int, kind: str) -> str:
    if kind not in ALL_KINDS:
        raise RnnvizError(f"unknown kind {kind!r}: expected one of {', '.join(ALL_KINDS)}")
    return f"layer{layer}.{kind}"


def all_points(num_layers: int, cell: str = "lstm") -> list[str]:
    return [point_name(layer, kind) for layer in range(num_layers) for kind in cell_kinds(cell)]


def parse_point(name: str) -> tuple[int, str]:
    """'layer1.gate_f' -> (1, 'gate_f')."""
    m = _POINT_RE.match(name)
    if not m:
        raise RnnvizError(f"unknown recording point {name!r}: expected names like "
                          f"layer0.c, layer0.h, layer0.gate_i .. layer0.gate_o (LSTM), "
                          f"layer0.gate_r, gate_z, gate_n (GRU)")
    return int(m.group(1)), m.group(2)


def unit_name(point: str, index: int) -> str:
    return f"{point}[{index}]"


def parse_unit(name: str) -> tuple[str, int]:
    """'layer1.c[42]' -> ('layer1.c', 42)."""
    m = _UNIT_RE.match(name)
    if not m:
        raise RnnvizError(f"unknown unit {name!r}: expected a name like layer0.c[17]")
    return m.group(1), int(m.group(2))


def h5_path(point: str) -> str:
    layer, kind = parse_point(point)
    return f"/states/layer{layer}/{kind}"


def expand_selection(spec: str | None, num_layers: int, layers: list[int] | None = None,
                     cell: str = "lstm") -> list[str]:
    """Turn a --record value into point names of a ``cell`` network.

    ``None`` or ``all`` means everything; otherwise a comma list whose items are full
    point names (``layer0.c``) or kinds applied to every selected layer (``c,h,gate_f``;
    ``gates``: all of the cell's gates).
    """
    kinds = cell_kinds(cell)
    layers = list(range(num_layers)) if layers is None else layers
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise RnnvizError(f"layer {layer} does not exist: the model has layers 0..{num_layers - 1}")
    if spec is None or spec.strip() in ("", "all"):
        return [point_name(layer, kind) for layer in layers for kind in kinds]
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if item in ALL_KINDS:
            check_kind(item, cell)
            out += [point_name(layer, item) for layer in layers]
        elif item in ("gates",):
            gates = [k for k in kinds if k.startswith("gate_")]
            if not gates:
                check_kind("gate_r", cell, "gates")  # a vanilla RNN: says what it has
            out += [point_name(layer, k) for layer in layers for k in gates]
        else:
            layer, kind = parse_point(item)
            check_kind(kind, cell, item)
            if layer >= num_layers:
                raise RnnvizError(f"{item}: the model has layers 0..{num_layers - 1}")
            out.append(item)
    return sorted(set(out), key=lambda p: (parse_point(p)[0], kinds.index(parse_point(p)[1])))


class PointArrays(Mapping):
    """A mapping from point names to arrays whose last axis is the unit: what ``rnnviz.open``
    (lazy HDF5 datasets) and ``rnnviz.record`` (tensors) both return."""

    def unit(self, name: str):
        """One unit's values, e.g. ``"layer1.c[42]"``: the last axis of its point's array."""
        point, index = parse_unit(name)
        if point not in self:
            raise RnnvizError(f"{name}: recorded points are {', '.join(self) or 'none'}, not {point}")
        a = self[point]
        if index >= a.shape[-1]:
            raise RnnvizError(f"{name}: index out of range, {point} has {a.shape[-1]} units")
        return a[..., index]
