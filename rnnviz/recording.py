"""Record every cell state, hidden state and gate of any ``torch.nn.LSTM``, exactly and fast.

    rec = rnnviz.record(lstm, inputs); rec["layer0.gate_f"]  # laid out like the LSTM's output

The work is done by a backend (rnnviz.backends): the compiled kernel where it is built
and pays on this machine, else pure PyTorch; both agree with :func:`record_naive`, the
LSTM equations written out, to 1e-5.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .backends import check_lstm, layer_weights, make_backend
from .errors import RnnvizError
from .names import KINDS, PointArrays, all_points, parse_point, point_name


@dataclass(eq=False)
class Recording(PointArrays):
    """Recorded points (name -> tensor laid out like the LSTM's output), output and final state.
    A mapping like the dump ``rnnviz.open`` returns: ``rec["layer1.c"]``, ``rec.unit("layer1.c[42]")``."""
    points: dict[str, torch.Tensor]
    output: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]
    backend: str = "naive"  # which recorder ran: "kernel", "pytorch" (rnnviz.backends) or "naive"

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.points[name]

    def __iter__(self):
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)


def record(lstm: nn.LSTM, inputs: torch.Tensor, state=None, points: list[str] | None = None,
           chunk: int = 8192, kernel: str = "auto") -> Recording:
    """Run ``lstm`` over ``inputs`` (its own layout: (T, In), (B, T, In) if batch_first, else
    (T, B, In)) from ``state`` (default zeros) and return the recorded ``points`` (default
    all; names as in rnnviz.names, e.g. "layer0.gate_f") laid out like the LSTM's output.
    ``kernel``: "auto" (the compiled kernel where it is built and pays here), "on" (built
    now if need be), "off" (pure PyTorch); rnnviz.kernel."""
    backend = make_backend(lstm, kernel=kernel)
    points = all_points(backend.num_layers) if points is None else list(points)
    wanted: dict[int, list[str]] = {}
    for q in points:
        layer, kind = parse_point(q)
        if layer >= backend.num_layers:
            raise RnnvizError(f"{q}: the LSTM has layers 0..{backend.num_layers - 1}")
        wanted.setdefault(layer, []).append(kind)
    x, unbatched = _batch_first(lstm, inputs)
    if state is not None and unbatched:
        state = tuple(s[:, None] for s in state)
    got: dict[str, list[torch.Tensor]] = {q: [] for q in points}
    outs = []
    with torch.no_grad():
        for t in range(0, x.shape[1], chunk):
            runs = backend.run(x[:, t:t + chunk], state)
            state = torch.stack([r.state[0] for r in runs]), torch.stack([r.state[1] for r in runs])
            outs.append(runs[-1].h)
            for layer, kinds in wanted.items():
                for kind, a in runs[layer].points(kinds).items():
                    got[point_name(layer, kind)].append(a)
    if not outs:
        raise RnnvizError("expected at least one time step, found an empty input")

    def layout(parts):
        return _restore(lstm, torch.cat(parts, dim=1), unbatched)
    h_n, c_n = state
    if unbatched:
        h_n, c_n = h_n[:, 0], c_n[:, 0]
    return Recording({q: layout(a) for q, a in got.items()}, layout(outs), (h_n, c_n), backend.name)


@torch.no_grad()
def record_naive(lstm: nn.LSTM, inputs: torch.Tensor, state=None) -> Recording:
    """The LSTM equations written out, one step and one layer at a time: slow and plain.

    The reference the fast paths are tested against and the baseline the benchmark times.
    """
    check_lstm(lstm)
    x, unbatched = _batch_first(lstm, inputs)
    L, H = lstm.num_layers, lstm.hidden_size
    weights = [layer_weights(lstm, layer) for layer in range(L)]
    B, T, _ = x.shape
    h = [x.new_zeros(B, H) for _ in range(L)] if state is None else list(state[0].unbind(0))
    c = [x.new_zeros(B, H) for _ in range(L)] if state is None else list(state[1].unbind(0))
    got = {q: x.new_empty(B, T, H) for q in all_points(L)}
    for t in range(T):
        inp = x[:, t]
        for layer, w in enumerate(weights):
            pre = inp @ w.w_ih.T + h[layer] @ w.w_hh.T + w.bias
            i, f, g, o = pre.chunk(4, dim=1)
            i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
            c[layer] = f * c[layer] + i * g
            h[layer] = o * torch.tanh(c[layer])
            for kind, value in zip(KINDS, (c[layer], h[layer], i, f, g, o)):
                got[point_name(layer, kind)][:, t] = value
            inp = h[layer]
    points = {q: _restore(lstm, a, unbatched) for q, a in got.items()}
    return Recording(points, points[point_name(L - 1, "h")], (torch.stack(h), torch.stack(c)))


def _batch_first(lstm: nn.LSTM, inputs: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if inputs.dim() == 2:
        return inputs[None], True
    if inputs.dim() != 3:
        raise RnnvizError(f"expected inputs of 2 or 3 dimensions, found shape {tuple(inputs.shape)}")
    return (inputs if lstm.batch_first else inputs.transpose(0, 1)), False


def _restore(lstm: nn.LSTM, a: torch.Tensor, unbatched: bool) -> torch.Tensor:
    if unbatched:
        return a[0]
    return a if lstm.batch_first else a.transpose(0, 1)
