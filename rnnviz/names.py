"""Names of the recording points, defined once for the dump file, the analyzer and the app.

A recording point is one array per layer: ``layer0.c`` (cell state), ``layer0.h``
(hidden state) and the four gates after their nonlinearity, ``layer0.gate_i``,
``layer0.gate_f``, ``layer0.gate_g``, ``layer0.gate_o``. One unit of a point is
written ``layer0.c[17]``. In the HDF5 dump a point lives at ``/states/layer0/c``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

from .errors import RnnvizError

# PyTorch packs nn.LSTM gate weights in this order (the Lua char-rnn uses i, f, o, g).
GATES = ("i", "f", "g", "o")
KINDS = ("c", "h") + tuple(f"gate_{g}" for g in GATES)
# What each kind's values can be: the app picks a colour map from this.
KIND_RANGE = {"c": "unbounded", "h": "signed", "gate_i": "unit", "gate_f": "unit",
              "gate_g": "signed", "gate_o": "unit"}

_POINT_RE = re.compile(r"^layer(\d+)\.(c|h|gate_[ifgo])$")
_UNIT_RE = re.compile(r"^(layer\d+\.(?:c|h|gate_[ifgo]))\[(\d+)\]$")


def point_name(layer: int, kind: str) -> str:
    if kind not in KINDS:
        raise RnnvizError(f"unknown kind {kind!r}: expected one of {', '.join(KINDS)}")
    return f"layer{layer}.{kind}"


def all_points(num_layers: int) -> list[str]:
    return [point_name(layer, kind) for layer in range(num_layers) for kind in KINDS]


def parse_point(name: str) -> tuple[int, str]:
    """'layer1.gate_f' -> (1, 'gate_f')."""
    m = _POINT_RE.match(name)
    if not m:
        raise RnnvizError(f"unknown recording point {name!r}: expected names like "
                          f"layer0.c, layer0.h, layer0.gate_i .. layer0.gate_o")
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


def expand_selection(spec: str | None, num_layers: int, layers: list[int] | None = None) -> list[str]:
    """Turn a --record value into point names.

    ``None`` or ``all`` means everything; otherwise a comma list whose items are full
    point names (``layer0.c``) or kinds applied to every selected layer (``c,h,gate_f``).
    """
    layers = list(range(num_layers)) if layers is None else layers
    for layer in layers:
        if not 0 <= layer < num_layers:
            raise RnnvizError(f"layer {layer} does not exist: the model has layers 0..{num_layers - 1}")
    if spec is None or spec.strip() in ("", "all"):
        return [point_name(layer, kind) for layer in layers for kind in KINDS]
    out: list[str] = []
    for item in (s.strip() for s in spec.split(",")):
        if item in KINDS:
            out += [point_name(layer, item) for layer in layers]
        elif item in ("gates",):
            out += [point_name(layer, f"gate_{g}") for layer in layers for g in GATES]
        else:
            layer, _ = parse_point(item)
            if layer >= num_layers:
                raise RnnvizError(f"{item}: the model has layers 0..{num_layers - 1}")
            out.append(item)
    return sorted(set(out), key=lambda p: (parse_point(p)[0], KINDS.index(parse_point(p)[1])))


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
