"""The pure-PyTorch recorder for GRU and vanilla RNN layers (any device, any float dtype).

PyTorch's equations (torch.nn.GRU, torch.nn.RNN), per layer and step, x_t the input:

    r_t = sigmoid(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)            # gate_r
    z_t = sigmoid(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)            # gate_z
    n_t = tanh(W_in x_t + b_in + r_t * (W_hn h_{t-1} + b_hn))       # gate_n
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}                           # h
    RNN: h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), act tanh or relu

:meth:`CellBackend.layer` (the sequential half) runs PyTorch's fused single-layer
module, which gives h at every step; :meth:`CellRun.points` (the time-parallel half)
recomputes r, z and n of the whole chunk from [x_t, h_{t-1}] with two matrix products.
Nothing is scanned, so nothing builds up over long texts. A layer under clamps
(rnnviz.intervene) is stepped by :func:`step_cell`, the clamped values written in before
they are used.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import RnnvizError
from ..names import cell_kinds
from ..intervene import Applier
from . import Backend, LayerRun, SteppedRun, check_cell, single_layer


class CellBackend(Backend):
    """Records a torch.nn.GRU or torch.nn.RNN one layer and one chunk at a time. The state
    is a one-tuple ``(h,)``, h (B, H). Dropout between layers is not applied."""
    name = "pytorch"

    def __init__(self, module: nn.RNNBase, embedding=None, dtype=torch.float32, **_):
        self.cell = check_cell(module)
        if self.cell == "lstm":
            raise RnnvizError("CellBackend records GRUs and RNNs; an LSTM takes PytorchBackend")
        if dtype not in (torch.float32, torch.float16):
            raise RnnvizError(f"expected float32 or float16 recordings, found {dtype}")
        self.kinds = cell_kinds(self.cell)
        self.num_layers, self.hidden_size, self.input_size = module.num_layers, module.hidden_size, module.input_size
        self.embedding = None if embedding is None else embedding.detach()
        self.dtype = dtype
        self.fused = [single_layer(module, layer) for layer in range(self.num_layers)]
        self.weights = []  # per layer: W_ih (GH, In), W_hh (GH, H), b_ih, b_hh (GH,): G = 3 (GRU) or 1
        for layer in range(self.num_layers):
            w_ih = getattr(module, f"weight_ih_l{layer}").detach()
            w_hh = getattr(module, f"weight_hh_l{layer}").detach()
            zeros = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
            b_ih = getattr(module, f"bias_ih_l{layer}").detach() if module.bias else zeros
            b_hh = getattr(module, f"bias_hh_l{layer}").detach() if module.bias else zeros
            self.weights.append((w_ih, w_hh, b_ih, b_hh))

    @torch.no_grad()
    def layer(self, layer: int, inputs, state=None, clamps=(), t0: int = 0) -> LayerRun:
        x = self.layer_input(layer, inputs)
        h0 = self.zeros(x.shape[0])[0] if state is None else state[0]
        lc = self.layer_clamps(clamps, layer, t0, x.shape[0], x.shape[1])
        if lc is not None:
            arrays, h_n = step_cell(self.cell, self.weights[layer], x, h0, lc)
            return SteppedRun(arrays, (h_n,), self.dtype)
        out, h_n = self.fused[layer](x, h0[None].contiguous())
        return CellRun(self, layer, x, h0, out, (h_n[0],))

    def zeros(self, lanes: int) -> tuple[torch.Tensor]:
        w = self.weights[0][1]
        return (torch.zeros(lanes, self.hidden_size, dtype=w.dtype, device=w.device),)


def step_cell(cell: str, weights, x: torch.Tensor, h: torch.Tensor, clamps) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """One GRU or RNN layer over x (B, T, In) from h (B, H), one step at a time, under
    ``clamps`` (rnnviz.intervene.LayerClamps): r and z clamped after their sigmoid (r then
    enters n), n before it enters h, then h. Every point (B, T, H) and the final h."""
    w_ih, w_hh, b_ih, b_hh = weights
    B, T, _ = x.shape
    H = w_hh.shape[1]
    gi = torch.addmm(b_ih, x.reshape(B * T, -1), w_ih.t()).view(B, T, -1)
    w_hh_t = w_hh.t()
    hs = x.new_empty(B, T, H)
    on_h = Applier(clamps, ("h",), x.device, x.dtype)
    if cell != "gru":
        act = torch.tanh if cell == "rnn_tanh" else torch.relu
        for t in range(T):
            h = act(torch.addmm(gi[:, t] + b_hh, h, w_hh_t))
            if on_h:
                on_h.apply(t, h)
            hs[:, t] = h
        return {"h": hs}, h
    gates = x.new_empty(B, T, 3, H)  # r, z, n
    on_rz = Applier(clamps, ("gate_r", "gate_z"), x.device, x.dtype)
    on_n = Applier(clamps, ("gate_n",), x.device, x.dtype)
    for t in range(T):
        gh = torch.addmm(b_hh, h, w_hh_t).view(B, 3, H)
        g, i = gates[:, t], gi[:, t].view(B, 3, H)
        torch.sigmoid(i[:, :2] + gh[:, :2], out=g[:, :2])
        if on_rz:
            on_rz.apply(t, g[:, :2])
        torch.tanh(torch.addcmul(i[:, 2], g[:, 0], gh[:, 2]), out=g[:, 2])
        if on_n:
            on_n.apply(t, g[:, 2])
        h = (1 - g[:, 1]) * g[:, 2] + g[:, 1] * h
        if on_h:
            on_h.apply(t, h)
        hs[:, t] = h
    return {"h": hs, "gate_r": gates[:, :, 0], "gate_z": gates[:, :, 1], "gate_n": gates[:, :, 2]}, h


class CellRun(LayerRun):
    def __init__(self, backend: CellBackend, layer: int, x, h0, h, state):
        self.backend, self.layer = backend, layer
        self.x, self.h0, self.h = x, h0, h  # (B, T, In), (B, H), (B, T, H)
        self.state = state

    @torch.no_grad()
    def points(self, kinds=None) -> dict[str, torch.Tensor]:
        b = self.backend
        kinds = b.kinds if kinds is None else kinds
        for kind in kinds:
            if kind not in b.kinds:
                raise RnnvizError(f"a {b.cell} layer has no {kind}: its points are {', '.join(b.kinds)}")
        out = {"h": self.h}
        if set(kinds) - {"h"}:
            out.update(self._gates())
        return {kind: out[kind].to(b.dtype, copy=kind == "h") for kind in kinds}

    def _gates(self) -> dict[str, torch.Tensor]:
        """gate_r, gate_z, gate_n (B, T, H) of the whole chunk at once."""
        b, x, h = self.backend, self.x, self.h
        w_ih, w_hh, b_ih, b_hh = b.weights[self.layer]
        B, T, H = h.shape
        h_prev = torch.cat([self.h0[:, None], h[:, :-1]], dim=1)  # (B, T, H)
        gi = torch.addmm(b_ih, x.reshape(B * T, -1), w_ih.t()).view(B, T, 3 * H)
        gh = torch.addmm(b_hh, h_prev.reshape(B * T, H), w_hh.t()).view(B, T, 3 * H)
        rz = torch.sigmoid(gi[..., :2 * H] + gh[..., :2 * H])
        r, z = rz[..., :H], rz[..., H:]
        n = torch.tanh(torch.addcmul(gi[..., 2 * H:], r, gh[..., 2 * H:]))
        return {"gate_r": r, "gate_z": z, "gate_n": n}
