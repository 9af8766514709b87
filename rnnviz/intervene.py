"""Interventions: hold units of a recording point at a value while the network runs.

    clamps = resolve([parse_clamp("layer2.c[76]=3.0")], model)
    rec = rnnviz.record(model, ids, clamps=clamps)          # outputs under the intervention

A clamp replaces the computed value of one unit at every step of its span, before the
value is used anywhere (docs/interventions.md):
- ``c``: h_t = o_t tanh(c_clamped); the next step's recurrence starts from c_clamped.
- ``h``: the clamped h_t goes to the layer above, to the output layer and to the next step.
- a gate (LSTM i, f, g, o; GRU r, z, n): the clamped value enters c_t (GRU: n_t) and h_t.

Steps are counted from the start of the text (the first input character is step 0).
Each clamp may apply to some lanes of a batch only, so that many ablations can run side
by side; the backends take them grouped by layer and kind (:class:`ClampTable`), never
one clamp at a time per step.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np
import torch

from .errors import RnnvizError
from .names import ALL_KINDS, KIND_RANGE, check_kind, point_name, unit_name

NEVER = 2 ** 62  # stop of an open-ended span, in the kernel's int64 steps
SIGMOID_KINDS = frozenset(k for k, r in KIND_RANGE.items() if r == "unit")  # gates in (0, 1)


@dataclass(frozen=True)
class Clamp:
    layer: int
    kind: str                  # a recording point of the cell: "c", "h", "gate_i", ... (GRU: "gate_r", ...)
    unit: int
    value: float               # a resolved number
    start: int = 0             # first step (inclusive), counted from the start of the text
    stop: int | None = None    # last step (exclusive); None = to the end
    lanes: tuple[int, ...] | None = None   # None = every lane of the batch

    @property
    def point(self) -> str:
        return point_name(self.layer, self.kind)

    def __str__(self) -> str:
        span = "" if (self.start, self.stop) == (0, None) else f"@{self.start}:{'' if self.stop is None else self.stop}"
        return f"{unit_name(self.point, self.unit)}={self.value:g}{span}"


@dataclass(frozen=True)
class ClampSpec:
    """A clamp as written, before ``mean`` is resolved: ``value`` a number or "mean"."""
    layer: int
    kind: str
    unit: int
    value: float | str
    start: int = 0
    stop: int | None = None
    lanes: tuple[int, ...] | None = None
    text: str = ""             # as the user wrote it, for messages

    @property
    def point(self) -> str:
        return point_name(self.layer, self.kind)


_SPEC_RE = re.compile(r"^\s*layer(\d+)\.(c|h|gate_[a-z])\[(-?\d+)\]\s*=\s*([^@\s]*)\s*(?:@\s*(\d*)\s*:\s*(\d*))?\s*$")
_UNIT_RE = re.compile(r"^\s*layer(\d+)\.(c|h|gate_[a-z])\[(-?\d+)\]\s*$")
SPEC_FORM = "expected LAYER.POINT[UNIT]=VALUE, e.g. layer2.c[76]=3.0, layer0.gate_f[12]=0.9 or layer1.h[5]=mean"


def parse_clamp(spec: str, start: int = 0, stop: int | None = None,
                lanes: tuple[int, ...] | None = None) -> ClampSpec:
    """``"layer2.c[76]=3.0"``, ``"layer1.h[5]=mean"``, optionally with a span of steps
    ``"layer0.gate_f[12]=0.9@100:200"`` (from step 100 up to 200; ``@100:`` to the end).
    Checked for form here; against a model by :func:`check_clamps` (or :func:`resolve`)."""
    m = _SPEC_RE.match(spec)
    if not m:
        raise RnnvizError(f"--clamp {spec!r}: {SPEC_FORM}")
    layer, kind, unit, raw = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
    _check_form(spec, kind, unit)
    if raw == "mean":
        value: float | str = "mean"
    else:
        try:
            value = float(raw)
        except ValueError:
            raise RnnvizError(f"--clamp {spec!r}: the value {raw!r} is not a number or 'mean'") from None
        if not math.isfinite(value):
            raise RnnvizError(f"--clamp {spec!r}: the value must be finite, found {raw}")
    if m.group(5) is not None:
        start = int(m.group(5) or 0)
        stop = int(m.group(6)) if m.group(6) else None
    if stop is not None and stop <= start:
        raise RnnvizError(f"--clamp {spec!r}: the span {start}:{stop} is empty")
    return ClampSpec(layer, kind, unit, value, start, stop, lanes, spec.strip())


def ablation(unit: str, start: int = 0, stop: int | None = None,
             lanes: tuple[int, ...] | None = None) -> ClampSpec:
    """``--ablate layer1.c[5]``: 0 for c, h and the tanh points (LSTM gate_g, GRU gate_n),
    the unit's mean for the sigmoid gates (a gate at 0 is closed, not off)."""
    m = _UNIT_RE.match(unit)
    if not m:
        raise RnnvizError(f"--ablate {unit!r}: expected a unit like layer1.c[5] or layer0.gate_f[12]")
    kind = m.group(2)
    _check_form(unit, kind, int(m.group(3)), "--ablate")
    value = "mean" if kind in SIGMOID_KINDS else 0.0
    return ClampSpec(int(m.group(1)), kind, int(m.group(3)), value, start, stop, lanes, unit.strip())


def _check_form(spec: str, kind: str, unit: int, flag: str = "--clamp") -> None:
    if kind not in ALL_KINDS:
        raise RnnvizError(f"{flag} {spec!r}: unknown point {kind!r}; expected one of {', '.join(ALL_KINDS)}")
    if unit < 0:
        raise RnnvizError(f"{flag} {spec!r}: a unit index is 0 or more, found {unit}")


def check_clamps(clamps, num_layers: int, hidden_size: int, cell: str = "lstm", lanes: int | None = None) -> None:
    """Refuse, in one line, a clamp the network cannot take: a layer or unit out of range,
    a point its cell does not have, a lane beyond the batch."""
    for c in clamps:
        what = getattr(c, "text", "") or unit_name(point_name(c.layer, c.kind), c.unit)
        if not 0 <= c.layer < num_layers:
            raise RnnvizError(f"{what}: the model has layers 0..{num_layers - 1}")
        check_kind(c.kind, cell, what)
        if not 0 <= c.unit < hidden_size:
            raise RnnvizError(f"{what}: unit index out of range, a layer has units 0..{hidden_size - 1}")
        if lanes is not None and c.lanes is not None and any(not 0 <= b < lanes for b in c.lanes):
            raise RnnvizError(f"{what}: lanes {list(c.lanes)} out of range for a batch of {lanes}")


def resolve(specs, checkpoint, reference=None, means: dict[str, np.ndarray] | None = None) -> list[Clamp]:
    """:class:`Clamp` s with numbers for ``specs`` (ClampSpec or Clamp), checked against
    ``checkpoint`` (a rnnviz.checkpoint.Checkpoint, or a bare CharRNN). ``mean`` is the
    unit's mean over ``reference`` (rnnviz.reference: a dump, a text file, or "heldout" for
    the checkpoint's validation text), never over the text being evaluated; ``means``
    (point -> (H,)) instead when already computed."""
    specs = list(specs)
    cfg = getattr(checkpoint, "model", checkpoint).config
    check_clamps(specs, cfg.num_layers, cfg.hidden_size, cfg.cell)
    need = sorted({s.point for s in specs if s.value == "mean"})
    if need and means is None:
        if reference is None:
            raise RnnvizError(f"{next(s.text for s in specs if s.value == 'mean')}: 'mean' needs a reference "
                              f"text (--reference: a dump, a text file, or 'heldout')")
        from .reference import reference_means
        means = reference_means(checkpoint, reference, need)
    out = []
    for s in specs:
        if isinstance(s, Clamp):
            out.append(s)
            continue
        value = float(means[s.point][s.unit]) if s.value == "mean" else float(s.value)
        out.append(Clamp(s.layer, s.kind, s.unit, value, s.start, s.stop, s.lanes))
    return out


class ClampTable:
    """Clamps as arrays, one row per (clamp, lane) (``lane`` -1: every lane), built once;
    :meth:`layer` cuts the rows of one layer and one chunk of steps for a backend."""

    def __init__(self, clamps):
        clamps = list(clamps)
        rows = [(c.layer, ALL_KINDS.index(c.kind), c.unit, c.start, NEVER if c.stop is None else c.stop, lane,
                 c.value) for c in clamps for lane in (c.lanes if c.lanes is not None else (-1,))]
        a = np.array([r[:6] for r in rows], dtype=np.int64).reshape(-1, 6)
        self.layer_ids, self.kind, self.unit, self.start, self.stop, self.lane = a.T
        self.value = np.array([r[6] for r in rows], dtype=np.float64)

    @classmethod
    def of(cls, clamps) -> ClampTable:
        return clamps if isinstance(clamps, ClampTable) else cls(clamps or ())

    def __len__(self) -> int:
        return len(self.value)

    def layer(self, layer: int, t0: int, steps: int, lanes: int, hidden: int, kinds) -> LayerClamps | None:
        """The rows of layer ``layer`` active somewhere in text steps [t0, t0 + steps) of a
        batch of ``lanes``, every-lane rows expanded; None when there are none."""
        sel = (self.layer_ids == layer) & (self.start < t0 + steps) & (self.stop > t0)
        if not sel.any():
            return None
        idx = np.flatnonzero(sel)
        for k in np.unique(self.kind[idx]):
            if ALL_KINDS[k] not in kinds:
                raise RnnvizError(f"a clamp on layer{layer}.{ALL_KINDS[k]}: this cell has no {ALL_KINDS[k]}; "
                                  f"its points per layer are {', '.join(kinds)}")
        if (self.unit[idx] >= hidden).any():
            raise RnnvizError(f"a clamp on layer {layer}: unit index out of range, a layer has units 0..{hidden - 1}")
        lane = self.lane[idx]
        if (lane >= lanes).any():
            raise RnnvizError(f"a clamp on layer {layer}: lane {int(lane.max())} out of range for a batch of {lanes}")
        every = lane < 0
        # Expand every-lane rows; keep the table's order (a later clamp on the same unit wins).
        rep = np.where(every, lanes, 1)
        idx = np.repeat(idx, rep)
        lane = np.where(np.repeat(every, rep), _ranges(rep), np.repeat(lane, rep))
        return LayerClamps(lane, self.kind[idx], self.unit[idx], self.start[idx] - t0,
                           self.stop[idx] - t0, self.value[idx], lanes, steps)


def _ranges(rep: np.ndarray) -> np.ndarray:
    """0..n-1 for each n in ``rep``, concatenated."""
    ends = np.cumsum(rep)
    return np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - rep, rep)


class LayerClamps:
    """One layer's clamps over one chunk; steps relative to the chunk's first. For the
    PyTorch step loops: :meth:`segments` (index tensors per kind, constant over a run of
    steps); for the kernel: :meth:`kernel_table` (rows grouped by lane)."""

    def __init__(self, lane, kind, unit, start, stop, value, lanes: int, steps: int):
        self.lane, self.kind, self.unit, self.value = lane, kind, unit, value
        self.start, self.stop = np.maximum(start, 0), np.minimum(stop, steps)
        self.lanes, self.steps = lanes, steps

    def segments(self, kinds, device, dtype) -> list[tuple[int, int, tuple]]:
        """[(a, b, (lanes, units, kind positions, values))]: over steps a..b-1 of the chunk,
        the rows of ``kinds`` (positions in ``kinds``) that are on, as index tensors for
        one ``index_put_`` per step. A later row on the same lane and unit wins."""
        lut = np.full(len(ALL_KINDS), -1)
        lut[[ALL_KINDS.index(k) for k in kinds]] = np.arange(len(kinds))
        mine = lut[self.kind] >= 0
        if not mine.any():
            return []
        cuts = np.unique(np.concatenate([[0, self.steps], self.start[mine], self.stop[mine]]))
        cuts = cuts[(cuts >= 0) & (cuts <= self.steps)]
        out = []
        for a, b in zip(cuts[:-1], cuts[1:]):
            on = np.flatnonzero(mine & (self.start <= a) & (self.stop >= b))
            if not len(on):
                continue
            key = (self.lane[on] * len(kinds) + lut[self.kind[on]]) * (int(self.unit.max()) + 1) + self.unit[on]
            _, last = np.unique(key[::-1], return_index=True)   # the last row of each key
            on = on[::-1][last]
            out.append((int(a), int(b), tuple(torch.as_tensor(v, device=device) for v in
                                              (self.lane[on], self.unit[on], lut[self.kind[on]]))
                        + (torch.as_tensor(self.value[on], dtype=dtype, device=device),)))
        return out

    def kernel_table(self, t0: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(offsets (B + 1,), meta (N, 4) kind in KINDS order, unit, start, stop as text
        steps, values (N,) float32), rows grouped by lane in table order."""
        order = np.argsort(self.lane, kind="stable")
        counts = np.bincount(self.lane, minlength=self.lanes)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        meta = np.stack([self.kind[order], self.unit[order], self.start[order] + t0,
                         self.stop[order] + t0], axis=1).astype(np.int64)
        return (torch.from_numpy(offsets), torch.from_numpy(np.ascontiguousarray(meta)),
                torch.from_numpy(self.value[order].astype(np.float32)))


class Applier:
    """Applies one layer's clamps of some kinds inside a step loop: ``apply(t, x)`` sets
    the clamped entries of ``x`` ((B, H), or (B, K, H) for K kinds at once) at chunk step t
    with one index_put_."""

    def __init__(self, layer_clamps: LayerClamps | None, kinds, device, dtype):
        self.segs = [] if layer_clamps is None else layer_clamps.segments(kinds, device, dtype)
        self.multi = len(kinds) > 1
        self.at = 0

    def __bool__(self) -> bool:
        return bool(self.segs)

    def apply(self, t: int, x: torch.Tensor) -> None:
        while self.at < len(self.segs) and self.segs[self.at][1] <= t:
            self.at += 1
        if self.at == len(self.segs) or self.segs[self.at][0] > t:
            return
        lanes, units, pos, values = self.segs[self.at][2]
        x.index_put_((lanes, pos, units) if self.multi else (lanes, units), values)


def clamped_forward(model, clamps, kernel: str = "auto"):
    """``forward(ids (B, T), state=None, t0=0) -> (logits (B, T, V), state)`` for ``model``
    (a CharRNN) under ``clamps``, ``t0`` the text step of ids' first column. Its state is
    its own (a tuple of (L, B, H) tensors); pass back what it returned."""
    from .backends import make_backend
    cfg = model.config
    if not isinstance(clamps, ClampTable):
        check_clamps(clamps, cfg.num_layers, cfg.hidden_size, cfg.cell)
    backend = make_backend(model.rnn, kernel=kernel, embedding=model.embed.weight)
    table = ClampTable.of(clamps)

    @torch.no_grad()
    def forward(ids: torch.Tensor, state=None, t0: int = 0):
        runs = backend.run(ids, state, table, t0)
        state = tuple(torch.stack([r.state[k] for r in runs]) for k in range(len(runs[0].state)))
        return model.head(runs[-1].h), state
    return forward
