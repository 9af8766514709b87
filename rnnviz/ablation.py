"""Ablation: how much worse the model predicts the text when units are switched off, for
hundreds of units at once.

    result = run_ablations(model, [ids], targets, values, masks)   # masks: (F, N) features

A *target* is one unit or a set of units ablated together. Ablating a unit clamps it
(rnnviz.intervene, issue 16's semantics) to 0 for c, h and gate_g, and to its mean over
a reference text for a sigmoid gate, whose 0 would mean "closed", not "off".

**Lanes.** Targets run side by side as the lanes of one batch, each lane with its own
ablation, through one of two engines (``engine``, chosen per target):

- *stepper*: the lane's clamps go through the stepper ``rnnviz dump`` and ``rnnviz
  sample --clamp`` use (rnnviz.backends: the compiled kernel where ``kernel`` picks it).
  Every ablation runs this way with ``engine="stepper"``.
- *fused*: for an LSTM, holding c_j or h_j at 0 at every step from a zero state gives
  h_j = 0 at every step, and c_j reaches nothing but h_j = o_j tanh(c_j); so it is
  exactly forcing the output gate o_j to 0. PyTorch's fused LSTM does that per lane when
  the layer's input gets one one-hot column per lane (lane b's column is 1) whose input
  weight is O_OFF on the o row of lane b's ablated units: sigmoid(O_OFF + ...) is 0.0 in
  float32, and every other row gets exact zeros. Zero ablations of c and h take it with
  ``engine="auto"`` (the default) or ``"fused"``; gate ablations cannot (a gate held at a
  value is not an o gate at 0) and keep the stepper under ``"auto"``.

A layer none of the batch's units lies in runs PyTorch's fused LSTM unchanged. The
layers below a batch's lowest ablated layer do not depend on the ablation: they run
once per chunk, at batch 1, and every lane of every batch reads their output. Every
batch carries its own state from chunk to chunk, so memory does not grow with the text.

**Loss accounting.** The output after reading character t predicts character t+1, so
that loss is *character t+1's*: ``baseline[t]`` and every per-character change are
indexed by the predicted character, as ``/errors/p_model`` is, and a feature is read at
the predicted character (a character inside a string literal is predicted "inside").
The first character of each source is never predicted (NaN). Losses are in bits.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import RnnvizError
from .names import cell_kinds, expand_selection, parse_point, parse_unit, point_name, unit_name

Unit = tuple[int, str, int]          # (layer, kind, index)
LN2 = math.log(2.0)
from .options import LANES  # targets per batch
ENGINES = ("auto", "fused", "stepper")
O_OFF = -1e4                         # o-gate input for an ablated unit: exp(1e4) overflows, sigmoid = 0.0
LANE_STEPS = 1 << 13                 # lane-steps per chunk: bounds the stepper's scratch arrays
_SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class Target:
    """A unit or a set of units ablated together in one lane."""
    name: str                        # "layer2.c[76]", or the set's name
    units: tuple[Unit, ...]          # sorted, distinct
    random: bool = False             # drawn for the null, not asked for

    @property
    def low(self) -> int:
        """The lowest layer it touches: the layers below it are shared."""
        return min(u[0] for u in self.units)

    @property
    def composition(self) -> tuple[tuple[int, str, int], ...]:
        """((layer, kind, how many), ...): what a random target of its null is made of."""
        return tuple((layer, kind, n) for (layer, kind), n in sorted(Counter((u[0], u[1]) for u in self.units).items()))

    @property
    def unit_names(self) -> list[str]:
        return [unit_name(point_name(layer, kind), index) for layer, kind, index in self.units]


def composition_label(comp) -> str:
    """'layer2.c' for one unit, 'layer2.c x2 + layer0.c' for a set."""
    return " + ".join(point_name(layer, kind) + (f" x{n}" if n > 1 else "") for layer, kind, n in comp)


def _check_unit(name: str, num_layers: int, hidden_size: int, cell: str) -> Unit:
    point, index = parse_unit(name)
    layer, kind = parse_point(point)
    if kind not in cell_kinds(cell):
        raise RnnvizError(f"{name}: the model's layers have {', '.join(cell_kinds(cell))}, not {kind}")
    if layer >= num_layers:
        raise RnnvizError(f"{name}: the model has layers 0..{num_layers - 1}")
    if index >= hidden_size:
        raise RnnvizError(f"{name}: index out of range, the layers have {hidden_size} units (0..{hidden_size - 1})")
    return layer, kind, index


def parse_targets(points: str | None = None, units: str | None = None, sets=(), *, num_layers: int,
                  hidden_size: int, cell: str = "lstm") -> list[Target]:
    """The targets the user names: every unit of ``points`` (``c``, ``layer2.c,gates``:
    rnnviz.names.expand_selection), the units of ``units`` (``layer2.c[76],layer0.c[3]``)
    and each ``NAME=UNIT,UNIT,...`` of ``sets``, ablated together. A unit named twice is
    one target."""
    out: dict[str, Target] = {}
    if points:
        for point in expand_selection(points, num_layers, cell=cell):
            layer, kind = parse_point(point)
            for index in range(hidden_size):
                out.setdefault(unit_name(point, index), Target(unit_name(point, index), ((layer, kind, index),)))
    for name in [s.strip() for s in (units or "").split(",") if s.strip()]:
        unit = _check_unit(name, num_layers, hidden_size, cell)
        out.setdefault(name, Target(name, (unit,)))
    for spec in sets:
        name, sep, members = spec.partition("=")
        name = name.strip()
        if not sep or not _SET_NAME.match(name):
            raise RnnvizError(f"bad --set {spec!r}: expected NAME=UNIT,UNIT,... such as "
                              f"strings=layer2.c[76],layer0.c[169]")
        listed = [s.strip() for s in members.split(",") if s.strip()]
        if not listed:
            raise RnnvizError(f"--set {name}: an empty set; list the units to ablate together after '='")
        if name in out:
            raise RnnvizError(f"--set {name}: the name is used twice (or by a unit); pick another")
        found = sorted({_check_unit(u, num_layers, hidden_size, cell) for u in listed})
        out[name] = Target(name, tuple(found))
    if not out:
        raise RnnvizError("nothing to ablate: name units with --points, --units or --set")
    return list(out.values())


def null_targets(targets: list[Target], hidden_size: int, n_random: int, seed: int = 0) -> dict[tuple, list[Target]]:
    """For each composition among ``targets``: ``n_random`` random targets of the same make
    (units of the same layers and kinds, as many of each), drawn with ``seed``. A single
    unit's null is ``n_random`` distinct units of its point (all of them if it has fewer);
    a set's, ``n_random`` random sets (distinct ones)."""
    rng = np.random.default_rng(seed)
    out: dict[tuple, list[Target]] = {}
    for comp in dict.fromkeys(t.composition for t in targets):
        drawn: dict[tuple, Target] = {}
        if len(comp) == 1 and comp[0][2] == 1:
            layer, kind, _ = comp[0]
            for index in sorted(rng.choice(hidden_size, min(n_random, hidden_size), replace=False).tolist()):
                name = unit_name(point_name(layer, kind), index)
                drawn[(layer, kind, index)] = Target(name, ((layer, kind, index),), random=True)
        else:
            for _ in range(20 * n_random):   # distinct draws; small layers may have fewer
                if len(drawn) >= n_random:
                    break
                units = tuple(sorted((layer, kind, int(i)) for layer, kind, n in comp
                                     for i in rng.choice(hidden_size, n, replace=False)))
                if units not in drawn:
                    drawn[units] = Target(f"random set {len(drawn) + 1} ({composition_label(comp)})", units, True)
        out[comp] = list(drawn.values())
    return out


@dataclass
class LaneResult:
    """What :func:`run_ablations` measured. ``sums`` and ``base`` hold, per column, the
    summed loss in bits: column 0 over every predicted character, column 1 + f over those
    inside feature f; ``counts`` how many characters each column sums over."""
    targets: list[Target]
    baseline: np.ndarray             # (N,) float64 bits of each predicted character; NaN where none
    sums: np.ndarray                 # (n_targets, 1 + F) float64
    base: np.ndarray                 # (1 + F,) float64: the same for the unablated model
    counts: np.ndarray               # (1 + F,) int64
    per_char: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (N,) float32 change, bits
    backend: str = ""                # the stepper of the clamped layers ("kernel" or "pytorch")
    lanes: int = LANES
    engines: list[str] = field(default_factory=list)   # per target: "fused" or "stepper"

    def mean_change(self) -> np.ndarray:
        """(n_targets, 1 + F): mean change in bits/char over all characters and inside each feature."""
        n = np.maximum(self.counts, 1)
        return self.sums / n - self.base / n

    def outside_change(self) -> np.ndarray:
        """(n_targets, F): mean change over the predicted characters outside each feature."""
        n_out = np.maximum(self.counts[0] - self.counts[1:], 1)
        return ((self.sums[:, :1] - self.sums[:, 1:]) - (self.base[:1] - self.base[1:])) / n_out


def zero_of_c_or_h(target: Target, values: dict[Unit, float]) -> bool:
    """Whether ``target`` holds only c and h units, at 0: the fused engine's case."""
    return all(u[1] in ("c", "h") and values[u] == 0.0 for u in target.units)


def engines_for(targets: list[Target], values: dict[Unit, float], engine: str, lstm: bool) -> list[str]:
    """"fused" or "stepper" for each target under ``engine`` (ENGINES); ``lstm``: the model's
    cell is an LSTM (the o-gate identity is an LSTM's)."""
    if engine not in ENGINES:
        raise RnnvizError(f"expected an engine among {', '.join(ENGINES)}, found {engine!r}")
    if engine == "stepper":
        return ["stepper"] * len(targets)
    fits = [lstm and zero_of_c_or_h(t, values) for t in targets]
    if engine == "fused" and not all(fits):
        bad = next(t for t, ok in zip(targets, fits) if not ok)
        why = "the model is not an LSTM" if not lstm else "it holds a gate (only c and h at 0 are an o gate at 0)"
        raise RnnvizError(f"--engine fused: {bad.name} cannot run fused: {why}; use --engine auto (the stepper "
                          f"for such targets) or stepper")
    return ["fused" if ok else "stepper" for ok in fits]


class ZeroedLayer:
    """Layer ``layer`` of ``lstm`` through PyTorch's fused LSTM with, in lane b, h held at 0
    for the units ``lane_units[b]`` (the o gate forced to 0 through one one-hot input
    column per lane). Called on (B, T, In) inputs and a (h, c) state of (B, H), or None."""

    def __init__(self, lstm: nn.LSTM, layer: int, lane_units: list[list[int]]):
        w_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
        H, B = lstm.hidden_size, len(lane_units)
        extra = w_ih.new_zeros(4 * H, B)
        for lane, units in enumerate(lane_units):
            extra[[3 * H + u for u in units], lane] = O_OFF
        module = nn.LSTM(w_ih.shape[1] + B, H, 1, bias=lstm.bias, batch_first=True, device="meta")
        names = dict(weight_ih_l0=torch.cat([w_ih, extra], dim=1))
        for name in module._flat_weights_names[1:]:
            names[name] = getattr(lstm, name[:-1] + str(layer)).detach()
        for name, value in names.items():
            setattr(module, name, nn.Parameter(value, requires_grad=False))
        self.module, self.lanes = module.eval(), torch.eye(B, dtype=w_ih.dtype, device=w_ih.device)

    def __call__(self, x: torch.Tensor, state=None):
        B, T, _ = x.shape
        inp = torch.cat([x, self.lanes[:, None, :].expand(B, T, B)], dim=2)   # (B, T, In + B)
        out, (h, c) = self.module(inp, None if state is None else (state[0][None], state[1][None]))
        return out, (h[0], c[0])


@dataclass
class _Batch:
    low: int                         # its lanes are the same as the unablated run below this layer
    layers: set[int]                 # the layers its units lie in (the others have no clamp)
    rows: list[int]                  # indices into the targets
    clamps: object                   # rnnviz.intervene.ClampTable: every lane's clamps (stepper)
    zeroed: dict = field(default_factory=dict)  # layer -> ZeroedLayer (fused engine)
    state: list = field(default_factory=list)   # per layer >= low: the recurrent state carried


def _batches(targets: list[Target], engines: list[str], values: dict[Unit, float], lanes: int,
             lstm) -> list[_Batch]:
    from .intervene import Clamp, ClampTable
    by_low: dict[tuple[int, str], list[int]] = {}
    for i, t in enumerate(targets):
        by_low.setdefault((t.low, engines[i]), []).append(i)
    out = []
    for (low, engine), rows in sorted(by_low.items()):
        for b in range(0, len(rows), lanes):
            part = rows[b:b + lanes]
            units = [u for i in part for u in targets[i].units]
            layers = {u[0] for u in units}
            if engine == "fused":
                zeroed = {layer: ZeroedLayer(lstm, layer, [sorted({u[2] for u in targets[i].units if u[0] == layer})
                                                           for i in part]) for layer in layers}
                out.append(_Batch(low, layers, part, None, zeroed))
                continue
            clamps = [Clamp(layer, kind, index, float(values[(layer, kind, index)]), lanes=(lane,))
                      for lane, i in enumerate(part) for layer, kind, index in targets[i].units]
            out.append(_Batch(low, layers, part, ClampTable(clamps)))
    return out


@torch.no_grad()
def run_ablations(model, sources: list[np.ndarray], targets: list[Target], values: dict[Unit, float],
                  masks: np.ndarray, keep=(), *, lanes: int = LANES, kernel: str = "auto",
                  engine: str = "auto", progress=None) -> LaneResult:
    """Every target's loss over ``sources`` (id arrays, each read from a zero state; the
    char axis runs through them end to end), ``values``: the ablation value of every unit
    the targets hold; ``masks``: (F, N) bool, binary features at each character;
    ``keep``: names of targets whose per-character change is returned; ``engine``: "auto"
    (the fused engine for zero ablations of c and h, the stepper for the rest), "fused"
    (every target fused, or an error) or "stepper". ``progress(n)`` is called with the
    lane-steps done."""
    from .backends import make_backend
    if lanes < 1:
        raise RnnvizError(f"--lanes must be at least 1, found {lanes}")
    lstm, head = model.rnn, model.head
    device = head.weight.device
    engines = engines_for(targets, values, engine, isinstance(lstm, nn.LSTM))
    backend = make_backend(lstm, kernel=kernel, embedding=model.embed.weight)
    fused = make_backend(lstm, kernel="off", embedding=model.embed.weight)   # layers without clamps
    n = sum(len(s) for s in sources)
    masks = np.asarray(masks, bool)
    if masks.shape[1:] != (n,):
        raise RnnvizError(f"expected feature masks of shape (F, {n}), found {masks.shape}")
    F = masks.shape[0]
    sums = np.zeros((len(targets), 1 + F))
    base, counts = np.zeros(1 + F), np.zeros(1 + F, np.int64)
    baseline = np.full(n, np.nan)
    keep = {name: i for i, t in enumerate(targets) for name in [t.name] if name in set(keep)}
    per_char = {name: np.full(n, np.nan, np.float32) for name in keep}
    batches = _batches(targets, engines, values, lanes, lstm)
    steps = max(16, LANE_STEPS // min(lanes, max(len(targets), 1)))
    first = 0
    for ids in sources:
        ids_t = torch.as_tensor(np.asarray(ids, np.int64), device=device)
        shared = None                    # the unablated state of every layer
        for b in batches:
            b.state = [None] * lstm.num_layers
        for t0 in range(0, len(ids) - 1, steps):
            t1 = min(t0 + steps, len(ids) - 1)
            x, truth = ids_t[None, t0:t1], ids_t[t0 + 1:t1 + 1]
            at = slice(first + t0 + 1, first + t1 + 1)        # the predicted characters
            cols = np.concatenate([np.ones((1, t1 - t0), bool), masks[:, at]]).astype(np.float64).T  # (T, 1+F)
            runs, below = [], x
            for layer in range(lstm.num_layers):
                runs.append(fused.layer(layer, below, None if shared is None else shared[layer]))
                below = runs[-1]
            shared = [r.state for r in runs]
            loss = _bits(head, runs[-1].h, truth)[0]           # (T,)
            baseline[at] = loss
            base += loss @ cols
            counts += cols.sum(axis=0).astype(np.int64)
            for b in batches:
                B = len(b.rows)
                inp = x.expand(B, -1) if b.low == 0 else runs[b.low - 1].h.expand(B, -1, -1)
                for layer in range(b.low, lstm.num_layers):
                    if layer in b.zeroed:
                        inp, b.state[layer] = b.zeroed[layer](fused.layer_input(layer, inp), b.state[layer])
                        continue
                    if layer in b.layers:
                        run = backend.layer(layer, inp, b.state[layer], clamps=b.clamps, t0=t0)
                    else:
                        run = fused.layer(layer, inp, b.state[layer])
                    b.state[layer], inp = run.state, run.h
                ablated = _bits(head, inp, truth)              # (B, T)
                sums[b.rows] += ablated @ cols
                for lane, i in enumerate(b.rows):
                    name = targets[i].name
                    if name in per_char:
                        per_char[name][at] = ablated[lane] - loss
                if progress is not None:
                    progress(B * (t1 - t0))
        first += len(ids)
    return LaneResult(targets, baseline, sums, base, counts, per_char, backend.name, lanes, engines)


def _bits(head, h: torch.Tensor, truth: torch.Tensor) -> np.ndarray:
    """(B, T) float64 bits of ``truth`` (T,) under the output layer ``head`` on ``h`` (B, T, H)."""
    logp = torch.log_softmax(head(h), dim=-1)
    nats = -logp.gather(-1, truth.expand(h.shape[0], -1)[..., None])[..., 0]
    return nats.double().cpu().numpy() / LN2
