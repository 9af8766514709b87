"""Record every cell state, hidden state and gate of any ``torch.nn.LSTM``, ``GRU`` or
``RNN``, exactly and fast.

    rec = rnnviz.record(lstm, inputs); rec["layer0.gate_f"]  # laid out like the module's output
    rec = rnnviz.record(model, ids, clamps=[Clamp(1, "c", 5, 0.0)])  # a CharRNN: logits too

Under ``clamps`` (rnnviz.intervene) the points and outputs are those of the network
with the units held at their values.

The work is done by a backend (rnnviz.backends): for an LSTM the compiled kernel where
it is built and pays on this machine, else pure PyTorch; for a GRU or RNN pure PyTorch.
All agree with :func:`record_naive`, the equations written out, to 1e-5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backends import check_cell, layer_weights, make_backend
from .errors import RnnvizError
from .intervene import ClampTable, check_clamps
from .names import KINDS, PointArrays, all_points, check_kind, parse_point, point_name


@dataclass(eq=False)
class Recording(PointArrays):
    """Recorded points (name -> tensor laid out like the LSTM's output), output and final state.
    A mapping like the dump ``rnnviz.open`` returns: ``rec["layer1.c"]``, ``rec.unit("layer1.c[42]")``."""
    points: dict[str, torch.Tensor]
    output: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor] | torch.Tensor  # as the module returns it: (h_n, c_n) or h_n
    backend: str = "naive"  # which recorder ran: "kernel", "pytorch" (rnnviz.backends) or "naive"

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.points[name]

    def __iter__(self):
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)


def record(module: nn.Module, inputs: torch.Tensor, state=None, points: list[str] | None = None,
           chunk: int = 8192, kernel: str = "auto", clamps=()) -> Recording:
    """Run ``module`` over ``inputs`` from ``state`` (as the module takes it; default zeros)
    and return the recorded ``points`` (default all of the cell's; names as in
    rnnviz.names, e.g. "layer0.gate_f", "layer0.gate_r") laid out like its output.
    ``module``: an nn.LSTM, GRU or RNN, ``inputs`` in its own layout ((T, In), (B, T, In)
    if batch_first, else (T, B, In)); or a CharRNN (rnnviz.model), ``inputs`` ids (T,) or
    (B, T), and ``output`` its logits. ``clamps``: rnnviz.intervene Clamps, steps counted
    from the first input, lanes the batch index. ``kernel``: "auto" (the compiled kernel
    where it is built and pays here), "on" (built now if need be), "off" (pure PyTorch);
    rnnviz.kernel. It steps LSTMs only."""
    rnn, head, embedding = _parts(module)
    cell = check_cell(rnn)
    backend = make_backend(rnn, kernel=kernel, embedding=embedding)
    points = all_points(backend.num_layers, cell) if points is None else list(points)
    wanted: dict[int, list[str]] = {}
    for q in points:
        layer, kind = parse_point(q)
        check_kind(kind, cell, q)
        if layer >= backend.num_layers:
            raise RnnvizError(f"{q}: the {type(rnn).__name__} has layers 0..{backend.num_layers - 1}")
        wanted.setdefault(layer, []).append(kind)
    x, unbatched = _batch_first(rnn, inputs, ids=embedding is not None)
    clamps = list(clamps) if not isinstance(clamps, ClampTable) else clamps
    if not isinstance(clamps, ClampTable):
        check_clamps(clamps, backend.num_layers, backend.hidden_size, cell, lanes=x.shape[0])
    table = ClampTable.of(clamps)
    if isinstance(state, torch.Tensor):
        state = (state,)
    if state is not None and unbatched:
        state = tuple(s[:, None] for s in state)
    got: dict[str, list[torch.Tensor]] = {q: [] for q in points}
    outs = []
    with torch.no_grad():
        for t in range(0, x.shape[1], chunk):
            runs = backend.run(x[:, t:t + chunk], state, table, t0=t)
            state = tuple(torch.stack([r.state[k] for r in runs]) for k in range(len(runs[0].state)))
            outs.append(runs[-1].h if head is None else head(runs[-1].h))
            for layer, kinds in wanted.items():
                for kind, a in runs[layer].points(kinds).items():
                    got[point_name(layer, kind)].append(a)
    if not outs:
        raise RnnvizError("expected at least one time step, found an empty input")

    def layout(parts):
        return _restore(rnn, torch.cat(parts, dim=1), unbatched)
    if unbatched:
        state = tuple(s[:, 0] for s in state)
    final = state if cell == "lstm" else state[0]
    return Recording({q: layout(a) for q, a in got.items()}, layout(outs), final, backend.name)


def _parts(module: nn.Module):
    """(recurrent module, output head or None, embedding weight or None) of an nn.LSTM,
    GRU or RNN, or of a CharRNN."""
    from .model import CharRNN
    if isinstance(module, CharRNN):
        return module.rnn, module.head, module.embed.weight.detach()
    return module, None, None


@torch.no_grad()
def record_naive(module: nn.Module, inputs: torch.Tensor, state=None, clamps=()) -> Recording:
    """PyTorch's equations written out (docs/dump-format.md), one step and one layer at a
    time, ``clamps`` applied one by one where docs/interventions.md says: slow and plain.
    The reference the fast paths are tested against and the baseline the benchmark times.
    ``module`` as for :func:`record`."""
    lstm, head, embedding = _parts(module)
    if head is not None:
        ids, unbatched = _batch_first(lstm, inputs, ids=True)
        rec = record_naive(lstm, nn.functional.embedding(ids, embedding), state, clamps)
        rec.output = head(rec.output)
        if unbatched:
            rec.points = {q: a[0] for q, a in rec.points.items()}
            rec.output = rec.output[0]
            rec.state = tuple(s[:, 0] for s in rec.state) if isinstance(rec.state, tuple) else rec.state[:, 0]
        return rec
    cell = check_cell(lstm)
    clamps = list(clamps)
    x, unbatched = _batch_first(lstm, inputs)
    L, H = lstm.num_layers, lstm.hidden_size
    B, T, _ = x.shape
    zeros = [x.new_zeros(B, H) for _ in range(L)]
    if cell != "lstm":
        if state is not None:
            zeros = list((state[:, None] if unbatched else state).unbind(0))
        return _naive_gru_rnn(lstm, cell, x, unbatched, zeros, clamps)
    weights = [layer_weights(lstm, layer) for layer in range(L)]
    h = zeros if state is None else list(state[0].unbind(0))
    c = [x.new_zeros(B, H) for _ in range(L)] if state is None else list(state[1].unbind(0))
    got = {q: x.new_empty(B, T, H) for q in all_points(L)}
    for t in range(T):
        inp = x[:, t]
        for layer, w in enumerate(weights):
            pre = inp @ w.w_ih.T + h[layer] @ w.w_hh.T + w.bias
            i, f, g, o = pre.chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            for kind, value in zip(KINDS[2:], (i, f, g, o)):
                _clamp(clamps, layer, kind, t, value)
            c[layer] = f * c[layer] + i * g
            _clamp(clamps, layer, "c", t, c[layer])
            h[layer] = o * torch.tanh(c[layer])
            _clamp(clamps, layer, "h", t, h[layer])
            for kind, value in zip(KINDS, (c[layer], h[layer], i, f, g, o)):
                got[point_name(layer, kind)][:, t] = value
            inp = h[layer]
    points = {q: _restore(lstm, a, unbatched) for q, a in got.items()}
    return Recording(points, points[point_name(L - 1, "h")], (torch.stack(h), torch.stack(c)))


def _clamp(clamps, layer: int, kind: str, t: int, value: torch.Tensor) -> None:
    """Set ``value`` (B, H), the point ``kind`` of ``layer`` at step t, where a clamp says."""
    for c in clamps:
        if c.layer == layer and c.kind == kind and c.start <= t and (c.stop is None or t < c.stop):
            value[slice(None) if c.lanes is None else list(c.lanes), c.unit] = c.value


def _naive_gru_rnn(module: nn.RNNBase, cell: str, x: torch.Tensor, unbatched: bool, h: list,
                   clamps=()) -> Recording:
    """record_naive for a GRU or vanilla RNN; ``x`` batch-first, ``h`` the initial h per layer."""
    L = module.num_layers
    B, T, _ = x.shape
    got = {q: x.new_empty(B, T, module.hidden_size) for q in all_points(L, cell)}
    for t in range(T):
        inp = x[:, t]
        for layer in range(L):
            w_ih, w_hh = (getattr(module, f"weight_{k}_l{layer}") for k in ("ih", "hh"))
            gi, gh = inp @ w_ih.T, h[layer] @ w_hh.T
            if module.bias:
                gi, gh = gi + getattr(module, f"bias_ih_l{layer}"), gh + getattr(module, f"bias_hh_l{layer}")
            if cell == "gru":
                (i_r, i_z, i_n), (h_r, h_z, h_n) = gi.chunk(3, dim=1), gh.chunk(3, dim=1)
                r, z = torch.sigmoid(i_r + h_r), torch.sigmoid(i_z + h_z)
                _clamp(clamps, layer, "gate_r", t, r)
                _clamp(clamps, layer, "gate_z", t, z)
                n = torch.tanh(i_n + r * h_n)
                _clamp(clamps, layer, "gate_n", t, n)
                h[layer] = (1 - z) * n + z * h[layer]
                for kind, value in (("gate_r", r), ("gate_z", z), ("gate_n", n)):
                    got[point_name(layer, kind)][:, t] = value
            else:
                h[layer] = torch.tanh(gi + gh) if cell == "rnn_tanh" else torch.relu(gi + gh)
            _clamp(clamps, layer, "h", t, h[layer])
            got[point_name(layer, "h")][:, t] = h[layer]
            inp = h[layer]
    points = {q: _restore(module, a, unbatched) for q, a in got.items()}
    h_n = torch.stack(h)
    return Recording(points, points[point_name(L - 1, "h")], h_n[:, 0] if unbatched else h_n)


def _batch_first(lstm: nn.LSTM, inputs: torch.Tensor, ids: bool = False) -> tuple[torch.Tensor, bool]:
    if ids:
        if inputs.is_floating_point() or inputs.dim() not in (1, 2):
            raise RnnvizError(f"expected character ids of shape (time,) or (batch, time), found "
                              f"{inputs.dtype} {tuple(inputs.shape)}")
        return (inputs[None], True) if inputs.dim() == 1 else (inputs, False)
    if inputs.dim() == 2:
        return inputs[None], True
    if inputs.dim() != 3:
        raise RnnvizError(f"expected inputs of 2 or 3 dimensions, found shape {tuple(inputs.shape)}")
    return (inputs if lstm.batch_first else inputs.transpose(0, 1)), False


def _restore(lstm: nn.LSTM, a: torch.Tensor, unbatched: bool) -> torch.Tensor:
    if unbatched:
        return a[0]
    return a if lstm.batch_first else a.transpose(0, 1)
