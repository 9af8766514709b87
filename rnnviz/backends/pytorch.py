"""The pure-PyTorch recorder: any device, any float dtype, no compiler.

PyTorch's fused LSTM returns h of one layer at every step and nothing else. So
:meth:`PytorchBackend.layer` (the sequential half) runs the fused single-layer LSTM in
blocks of ``anchor`` steps, keeping c at each block start, and :meth:`TorchRun.points`
(the time-parallel half) recomputes the gates of the whole chunk with ONE matrix product
on [x_t, h_{t-1}], and c by the linear scan c_t = f_t c_{t-1} + i_t g_t in float64,
restarted every ``anchor`` steps from the fused run's own c so that rounding cannot
build up over long texts.

A layer under clamps (rnnviz.intervene) is stepped by :func:`step_lstm` instead: the
input term of the chunk is one product, then one step at a time, the clamped values
written in before they are used.
"""
from __future__ import annotations

import math
import threading

import torch
from torch import nn

from ..names import KINDS
from ..intervene import Applier
from . import Backend, LayerRun, LayerWeights, SteppedRun, single_layer

ANCHOR = 128  # steps between exact restarts of the c scan (also the fused call length)


class Linear:
    """x -> act(x @ weight.T + bias), act "sigmoid" or "tanh", through oneDNN's packed-weight
    kernel with the activation fused where this PyTorch has it: 2-3x the throughput of the
    default BLAS on some CPUs (MKL on AMD). Otherwise, or if it disagrees on a probe,
    addmm then the activation."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor, activation: str):
        self.weight, self.bias, self.activation, self.packed = weight, bias, activation, None
        if weight.device.type != "cpu" or weight.dtype != torch.float32:
            return
        try:
            packed = torch.ops.mkldnn._reorder_linear_weight(weight)
            probe = torch.randn(5, weight.shape[1], generator=torch.Generator().manual_seed(0))
            got = torch.ops.mkldnn._linear_pointwise(probe, packed, bias, activation, [], "")
        except (AttributeError, RuntimeError):  # an op this build does not have
            return
        want = getattr(torch, activation)(torch.addmm(bias, probe, weight.t()))
        if torch.allclose(got, want, rtol=1e-4, atol=1e-5):
            self.packed = packed

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, self.activation, [], "")
        return getattr(torch.Tensor, self.activation + "_")(torch.addmm(self.bias, x, self.weight.t()))


def gate_linears(w: LayerWeights, hidden: int) -> dict[str, Linear]:
    """For [x_t, h_{t-1}]: "if" (sigmoid, i and f side by side), "g" (tanh), "o" (sigmoid)."""
    weight = torch.cat([w.w_ih, w.w_hh], dim=1)
    rows = {"if": slice(0, 2 * hidden), "g": slice(2 * hidden, 3 * hidden), "o": slice(3 * hidden, 4 * hidden)}
    return {name: Linear(weight[r].contiguous(), w.bias[r].contiguous(), "tanh" if name == "g" else "sigmoid")
            for name, r in rows.items()}


class PytorchBackend(Backend):
    """Records with PyTorch's own fused LSTM and a time-parallel recomputation of the gates.
    Dropout between layers is not applied (evaluation behaviour). With ``reuse_buffers``
    the scratch arrays of :meth:`TorchRun.points` are kept for the next call (one set per
    thread): page faults on fresh large arrays cost as much as the arithmetic there."""
    name = "pytorch"

    def __init__(self, lstm: nn.LSTM, embedding=None, dtype=torch.float32, reuse_buffers: bool = False,
                 anchor: int = ANCHOR):
        super().__init__(lstm, embedding, dtype)
        self.anchor, self.reuse = anchor, reuse_buffers
        self.fused = [single_layer(lstm, layer) for layer in range(self.num_layers)]
        self.linears = [gate_linears(w, self.hidden_size) for w in self.weights]
        self._local = threading.local()

    @torch.no_grad()
    def layer(self, layer: int, inputs, state=None, clamps=(), t0: int = 0) -> LayerRun:
        x = self.layer_input(layer, inputs)
        state = self.zeros(x.shape[0]) if state is None else state
        lc = self.layer_clamps(clamps, layer, t0, x.shape[0], x.shape[1])
        if lc is not None:
            arrays, state = step_lstm(self.weights[layer], x, state, lc)
            return SteppedRun(arrays, state, self.dtype)
        h, c = state[0][None].contiguous(), state[1][None].contiguous()
        outs, starts = [], []
        for t in range(0, x.shape[1], self.anchor):
            starts.append(c[0])
            out, (h, c) = self.fused[layer](x[:, t:t + self.anchor], (h, c))
            outs.append(out)
        hs = torch.cat(outs, dim=1) if len(outs) > 1 else outs[0]
        return TorchRun(self, layer, x, state[0], hs, torch.stack(starts, dim=1), (h[0], c[0]))

    def buffer(self, name: str, shape, dtype) -> torch.Tensor:
        n = math.prod(shape)
        buffers = self._local.__dict__
        buf = buffers.get(name) if self.reuse else None
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = torch.empty(n, dtype=dtype, device=self.weights[0].w_ih.device)
            if self.reuse:
                buffers[name] = buf
        return buf[:n].view(shape)


def step_lstm(w: LayerWeights, x: torch.Tensor, state, clamps) -> tuple[dict[str, torch.Tensor], tuple]:
    """One LSTM layer over x (B, T, In) from ``state`` (h, c), one step at a time, under
    ``clamps`` (rnnviz.intervene.LayerClamps): gates clamped after their nonlinearity,
    then c (before h = o tanh(c)), then h. Every point (B, T, H) and the final (h, c)."""
    B, T, _ = x.shape
    H = w.w_hh.shape[1]
    xw = torch.addmm(w.bias, x.reshape(B * T, -1), w.w_ih.t()).view(B, T, 4 * H)
    w_hh_t = w.w_hh.t()
    gates = x.new_empty(B, T, 4, H)  # i, f, g, o
    cs, hs = x.new_empty(B, T, H), x.new_empty(B, T, H)
    on_gates = Applier(clamps, ("gate_i", "gate_f", "gate_g", "gate_o"), x.device, x.dtype)
    on_c, on_h = (Applier(clamps, (k,), x.device, x.dtype) for k in ("c", "h"))
    h, c = state
    for t in range(T):
        pre = torch.addmm(xw[:, t], h, w_hh_t).view(B, 4, H)
        g = gates[:, t]
        torch.sigmoid(pre, out=g)
        torch.tanh(pre[:, 2], out=g[:, 2])
        if on_gates:
            on_gates.apply(t, g)
        c = torch.addcmul(g[:, 1] * c, g[:, 0], g[:, 2])
        if on_c:
            on_c.apply(t, c)
        h = g[:, 3] * torch.tanh(c)
        if on_h:
            on_h.apply(t, h)
        cs[:, t], hs[:, t] = c, h
    arrays = {"c": cs, "h": hs, "gate_i": gates[:, :, 0], "gate_f": gates[:, :, 1],
              "gate_g": gates[:, :, 2], "gate_o": gates[:, :, 3]}
    return arrays, (h, c)


class TorchRun(LayerRun):
    def __init__(self, backend: PytorchBackend, layer: int, x, h0, h, anchors, state):
        self.backend, self.layer = backend, layer
        self.x, self.h0, self.h = x, h0, h  # (B, T, In), (B, H), (B, T, H)
        self.anchors = anchors  # (B, nb, H): c at each block start
        self.state = state

    @torch.no_grad()
    def points(self, kinds=KINDS) -> dict[str, torch.Tensor]:
        b = self.backend
        out = {"h": self.h}
        if not set(kinds) <= {"h"}:
            H = b.hidden_size
            gates = self._gates()
            i, f = gates["if"][..., :H], gates["if"][..., H:]
            if "c" in kinds:
                out["c"] = self._cells(i, f, gates["g"])
            out.update(gate_i=i, gate_f=f, gate_g=gates["g"], gate_o=gates["o"])
        # A copy where the array is a reused buffer (or h, which the layer above reads).
        return {kind: out[kind].to(b.dtype, copy=b.reuse) for kind in kinds}

    def _gates(self) -> dict[str, torch.Tensor]:
        """Gates after their nonlinearity, from [x_t, h_{t-1}] of the whole chunk at once:
        "if" (B, T, 2H), "g" and "o" (B, T, H)."""
        b, x, h = self.backend, self.x, self.h
        B, T, n_in = x.shape
        xh = b.buffer("xh", (B, T, n_in + b.hidden_size), h.dtype)
        xh[..., :n_in] = x
        xh[:, 0, n_in:] = self.h0
        xh[:, 1:, n_in:] = h[:, :-1]
        flat = xh.view(B * T, -1)
        return {name: lin(flat).view(B, T, -1) for name, lin in b.linears[self.layer].items()}

    def _cells(self, i, f, g) -> torch.Tensor:
        """c_t = f_t c_{t-1} + i_t g_t for i, f, g (B, T, H), restarting from the anchors
        (B, nb, H) every ``anchor`` steps: a loop over the offset inside a block, all
        blocks at once, in float64."""
        b, starts = self.backend, self.anchors
        B, T, H = f.shape
        nb, block = starts.shape[1], b.anchor
        f64 = b.buffer("f64", (B, nb * block, H), torch.float64)
        ig = b.buffer("ig64", (B, nb * block, H), torch.float64)
        f64[:, T:] = 0
        ig[:, T:] = 0
        f64[:, :T] = f
        torch.mul(i, g, out=ig[:, :T])
        f64, ig = f64.view(B, nb, block, H), ig.view(B, nb, block, H)
        c = b.buffer("c64", (B, nb, block, H), torch.float64)
        prev = starts.double()
        for j in range(block):
            prev = torch.addcmul(ig[:, :, j], f64[:, :, j], prev, out=c[:, :, j])
        out = b.buffer("c", (B, T, H), f.dtype)
        out.copy_(c.view(B, nb * block, H)[:, :T])
        return out
