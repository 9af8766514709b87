"""Record every cell state, hidden state and gate of any ``torch.nn.LSTM``, exactly and fast.

    rec = rnnviz.record(lstm, inputs); rec["layer0.gate_f"]  # laid out like the LSTM's output

PyTorch's fused LSTM (oneDNN on CPU) returns h of the last layer only, and a Python loop
over steps is several times slower than it. So:

- the compiled kernel (rnnviz.kernel, csrc/lstm_record.cpp) steps each layer of a chunk
  through time and writes c, h and all four gates as it goes: the fused LSTM's work,
  nothing recomputed (:meth:`Recorder.run_layer`);
- where the kernel cannot be built (or for a GPU or non-float32 LSTM), PyTorch's own
  fused single-layer LSTM gives h at every step (:meth:`Recorder.run`, the sequential
  half), and :meth:`Recorder.expand` (the time-parallel half) recomputes all gate
  pre-activations of the chunk with ONE matrix product on [x_t, h_{t-1}], and c by the
  linear scan c_t = f_t c_{t-1} + i_t g_t in float64, restarted every ``anchor`` steps
  from the fused run's own c so that rounding cannot build up over long texts.

Either way a caller can overlap ``run`` of one chunk with ``expand`` of the previous one
in another thread, and run the layers of successive chunks in a wavefront.
"""
from __future__ import annotations

import math
import sys
import threading
import types
from dataclasses import dataclass, field

import torch
from torch import nn

from .errors import RnnvizError
from .kernel import kernel_for
from .names import KINDS, PointArrays, all_points, parse_point, point_name

ANCHOR = 128  # steps between exact restarts of the c scan (also the fused call length)
# With fewer lanes than this the kernel's per-step product is bound by reading the
# weights, so the input term x_t W_ih^T of all steps is one time-parallel product
# beforehand; with more, it is done inside each step, which saves writing and reading
# it. One 256-unit layer, one thread, lane-steps/s: 1 lane 44k against 33k done inside,
# 16 lanes 66k inside against 59k beforehand.
PROJECT_BELOW = 8


def check_lstm(lstm) -> nn.LSTM:
    """Refuse what the recorder does not model, with a message saying what it expects."""
    if not isinstance(lstm, nn.LSTM):
        raise RnnvizError(f"expected a torch.nn.LSTM, found {type(lstm).__name__}")
    if lstm.bidirectional:
        raise RnnvizError("bidirectional LSTMs are not supported: record each direction as its own "
                          "nn.LSTM (the backward one over the reversed input)")
    if getattr(lstm, "proj_size", 0):
        raise RnnvizError(f"LSTMs with projections (proj_size={lstm.proj_size}) are not supported: "
                          f"expected proj_size=0")
    return lstm


@dataclass
class LayerWeights:
    w_ih: torch.Tensor  # (4H, In)
    w_hh: torch.Tensor  # (4H, H)
    bias: torch.Tensor  # (4H,) b_ih + b_hh (zeros for bias=False)


def layer_weights(lstm: nn.LSTM, layer: int) -> LayerWeights:
    w_ih = getattr(lstm, f"weight_ih_l{layer}").detach()
    w_hh = getattr(lstm, f"weight_hh_l{layer}").detach()
    if lstm.bias:
        bias = (getattr(lstm, f"bias_ih_l{layer}") + getattr(lstm, f"bias_hh_l{layer}")).detach()
    else:
        bias = torch.zeros(w_ih.shape[0], dtype=w_ih.dtype, device=w_ih.device)
    return LayerWeights(w_ih, w_hh, bias)


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


def _packed_or_empty(w_hh: torch.Tensor) -> torch.Tensor:
    """oneDNN's packed W_hh for the kernel's per-step product where this PyTorch has the
    op and it agrees with mm on a probe; an empty tensor (the kernel takes mm) otherwise.
    At batch 1 mm is the faster of the two (see :meth:`Recorder.run_layer`)."""
    linear = Linear(w_hh, torch.zeros(w_hh.shape[0]), "sigmoid")
    return linear.packed if linear.packed is not None else _EMPTY


_EMPTY = torch.empty(0)  # "no such argument" for the kernel


@dataclass
class Pass:
    """One chunk after the sequential half: everything :meth:`Recorder.expand` needs.
    Filled one layer at a time (so layers can run in a wavefront across chunks)."""
    x: torch.Tensor | None                                      # (B, T, In) layer-0 input
    ids: torch.Tensor | None = None                             # (B, T) int64 instead, with set_embedding
    xw: dict[int, torch.Tensor] = field(default_factory=dict)   # layer -> (B, T, 4H) input term (project)
    h0: list[torch.Tensor] = field(default_factory=list)       # per layer (B, H): state before
    c0: list[torch.Tensor] = field(default_factory=list)
    h: list[torch.Tensor] = field(default_factory=list)        # per layer (B, T, H)
    anchors: list[torch.Tensor] = field(default_factory=list)  # per layer (B, nb, H): c at block starts
    recorded: list[torch.Tensor | None] = field(default_factory=list)  # per layer (6, B, T, H) from the kernel
    hn: list[torch.Tensor] = field(default_factory=list)       # per layer (B, H): state after
    cn: list[torch.Tensor] = field(default_factory=list)

    @property
    def state(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(h_n, c_n) after the chunk, each (L, B, H), once every layer has run."""
        return torch.stack(self.hn), torch.stack(self.cn)


class Recorder:
    """Records one nn.LSTM chunk by chunk, carrying the state across chunks.

    Inputs are batch-first (B, T, In) whatever the LSTM's layout (:func:`record` handles
    layouts). With the kernel, :meth:`expand` returns ``dtype`` (float32 or float16, to
    be stored); without it, float32. Dropout between layers is not applied (evaluation
    behaviour). With ``reuse_buffers`` the arrays :meth:`expand` returns on the
    pure-PyTorch path are overwritten by its next call: page faults on fresh large
    arrays cost as much as the arithmetic there.
    """

    def __init__(self, lstm: nn.LSTM, anchor: int = ANCHOR, reuse_buffers: bool = False,
                 kernel: str = "auto", job_steps: int = 0, dtype: torch.dtype = torch.float32):
        check_lstm(lstm)
        self.dtype = dtype  # of what the kernel returns (float16: converted as it goes)
        self.num_layers, self.hidden_size = lstm.num_layers, lstm.hidden_size
        self.input_size = lstm.input_size
        self.anchor, self.reuse = anchor, reuse_buffers
        self.weights = [layer_weights(lstm, layer) for layer in range(self.num_layers)]
        w0 = self.weights[0].w_hh
        # kernel: "auto", "on" or "off" (rnnviz.kernel.kernel_for; job_steps: the job's size).
        self.kernel = (kernel_for(kernel, job_steps) if w0.device.type == "cpu" and w0.dtype == torch.float32
                       else None)
        if self.kernel is not None:
            self.w_hh_t = [w.w_hh.t().contiguous() for w in self.weights]
            self.packed = [_packed_or_empty(w.w_hh) for w in self.weights]
            self.w_ih_t = [w.w_ih.t().contiguous() for w in self.weights]
            self.biases = [w.bias.contiguous()[None] for w in self.weights]
            self.fused, self.linears = [], []  # the pure-PyTorch path's, not needed
        else:
            self.fused = [self._single_layer(lstm, layer) for layer in range(self.num_layers)]
            self.linears = [gate_linears(w, self.hidden_size) for w in self.weights]
        self.table = None  # layer 0's init row per input id (set_embedding)
        self._local = threading.local()  # scratch buffers, one set per thread

    @staticmethod
    def _single_layer(lstm: nn.LSTM, layer: int) -> nn.LSTM:
        """A one-layer fused LSTM sharing layer ``layer``'s parameters (no copy)."""
        w = getattr(lstm, f"weight_ih_l{layer}")
        one = nn.LSTM(w.shape[1], lstm.hidden_size, 1, bias=lstm.bias, batch_first=True,
                      device="meta")
        for name in one._flat_weights_names:
            setattr(one, name, getattr(lstm, name[:-1] + str(layer)))
        return one.eval()

    @torch.no_grad()
    def run(self, x: torch.Tensor, state=None) -> Pass:
        """The sequential half: x (B, T, In) from ``state`` ((L, B, H) each, default zeros)
        -> h of every layer at every step."""
        p = Pass(x=self.check_input(x))
        for layer in range(self.num_layers):
            self.run_layer(p, layer, None if state is None else (state[0][layer], state[1][layer]))
        return p

    def check_input(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise RnnvizError(f"expected inputs of shape (batch, time, {self.input_size}), "
                              f"found {tuple(x.shape)}")
        return x

    @torch.no_grad()
    def run_layer(self, p: Pass, layer: int, state=None) -> None:
        """Layer ``layer`` over the chunk (the layers below it done) from ``state``
        ((B, H) each, default zeros): PyTorch's fused recurrence in blocks of ``anchor``
        steps, keeping c at each block start."""
        assert len(p.h) == layer, "layers run in order"
        inp = p.x if layer == 0 else p.h[layer - 1]
        if state is None:
            lanes = (p.ids if inp is None else inp).shape[0]
            state = (torch.zeros(lanes, self.hidden_size, dtype=self.weights[0].w_hh.dtype,
                                 device=self.weights[0].w_hh.device),) * 2
        p.h0.append(state[0])
        p.c0.append(state[1])
        if self.kernel is not None:
            B, T = (p.ids if inp is None else inp).shape[:2]
            x, init, ids = _EMPTY, p.xw.pop(layer, None), _EMPTY
            if init is not None:
                pass  # the input term, computed beforehand (project)
            elif inp is None:  # layer 0 by table lookup
                init, ids = self.table, p.ids
            elif B < PROJECT_BELOW:
                init = self.project(inp, layer)
            else:
                x, init = inp.contiguous(), self.biases[layer]
            out = torch.empty(6, B, T, self.hidden_size, dtype=self.dtype)
            h32 = torch.empty(B, T, self.hidden_size) if self.dtype == torch.float16 else _EMPTY
            h, c = state[0].contiguous().clone(), state[1].contiguous().clone()
            packed = self.packed[layer] if B > 1 else _EMPTY
            self.kernel.run_layer(x, self.w_ih_t[layer], init, ids, self.w_hh_t[layer], packed, h, c, out, h32)
            p.recorded.append(out)
            p.h.append(out[1] if h32 is _EMPTY else h32)
            p.hn.append(h)
            p.cn.append(c)
            return
        p.recorded.append(None)
        h, c = state[0][None].contiguous(), state[1][None].contiguous()
        outs, starts = [], []
        for t in range(0, inp.shape[1], self.anchor):
            starts.append(c[0])
            out, (h, c) = self.fused[layer](inp[:, t:t + self.anchor], (h, c))
            outs.append(out)
        p.h.append(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])
        p.anchors.append(torch.stack(starts, dim=1))
        p.hn.append(h[0])
        p.cn.append(c[0])

    def wants_projection(self, p: Pass, layer: int) -> bool:
        """Whether ``layer``'s kernel would take its input term computed beforehand: a
        caller may do that in another thread with :meth:`project` into ``p.xw``."""
        return self.kernel is not None and layer < self.num_layers and len(p.h) >= layer > 0 \
            and p.h[layer - 1].shape[0] < PROJECT_BELOW

    @torch.no_grad()
    def project(self, inp: torch.Tensor, layer: int) -> torch.Tensor:
        """x_t W_ih^T + b_ih + b_hh of every step of ``inp`` (B, T, In) at once: (B, T, 4H)."""
        B, T, n_in = inp.shape
        flat = inp.reshape(B * T, n_in).contiguous()
        return self.kernel.project(flat, self.w_ih_t[layer], self.biases[layer]).view(B, T, -1)

    @torch.no_grad()
    def set_embedding(self, weight: torch.Tensor) -> None:
        """For a model whose inputs are rows of ``weight`` (V, In), an embedding: layer 0's
        input term of every id at once (V, 4H), so that :class:`Pass` can carry ids instead
        of embedded inputs and the kernel looks its rows up. Without the kernel, a no-op."""
        if self.kernel is not None:
            w = self.weights[0]
            self.table = torch.addmm(w.bias, weight.detach().to(w.w_ih.dtype), w.w_ih.t()).contiguous()

    @torch.no_grad()
    def expand(self, p: Pass, layer: int, kinds=KINDS) -> dict[str, torch.Tensor]:
        """The time-parallel half for one layer: kind -> (B, T, H) float, for ``kinds``."""
        if p.recorded[layer] is not None:  # the kernel wrote everything already
            arrays = dict(zip(KINDS, p.recorded[layer]))
            return {kind: arrays[kind] for kind in kinds}
        out = {"h": p.h[layer]} if "h" in kinds else {}
        if set(kinds) <= {"h"}:
            return out
        H = self.hidden_size
        gates = self._gates(layer, p)
        i, f = gates["if"][..., :H], gates["if"][..., H:]
        if "c" in kinds:
            out["c"] = self._cells(i, f, gates["g"], p.anchors[layer])
        out.update(gate_i=i, gate_f=f, gate_g=gates["g"], gate_o=gates["o"])
        return {kind: out[kind] for kind in kinds}

    def _buffer(self, name: str, shape, dtype) -> torch.Tensor:
        n = math.prod(shape)
        buffers = self._local.__dict__
        buf = buffers.get(name) if self.reuse else None
        if buf is None or buf.numel() < n or buf.dtype != dtype:
            buf = torch.empty(n, dtype=dtype, device=self.weights[0].w_ih.device)
            if self.reuse:
                buffers[name] = buf
        return buf[:n].view(shape)

    def _gates(self, layer: int, p: Pass) -> dict[str, torch.Tensor]:
        """Gates after their nonlinearity, from [x_t, h_{t-1}] of the whole chunk at once:
        "if" (B, T, 2H), "g" and "o" (B, T, H)."""
        H = self.hidden_size
        x, h = (p.x if layer == 0 else p.h[layer - 1]), p.h[layer]
        B, T, n_in = x.shape
        xh = self._buffer("xh", (B, T, n_in + H), h.dtype)
        xh[..., :n_in] = x
        xh[:, 0, n_in:] = p.h0[layer]
        xh[:, 1:, n_in:] = h[:, :-1]
        flat = xh.view(B * T, n_in + H)
        return {name: lin(flat).view(B, T, -1) for name, lin in self.linears[layer].items()}

    def _cells(self, i, f, g, starts: torch.Tensor) -> torch.Tensor:
        """c_t = f_t c_{t-1} + i_t g_t for i, f, g (B, T, H), restarting from ``starts``
        (B, nb, H) every ``anchor`` steps: a loop over the offset inside a block, all
        blocks at once, in float64."""
        B, T, H = f.shape
        nb, block = starts.shape[1], self.anchor
        f64 = self._buffer("f64", (B, nb * block, H), torch.float64)
        ig = self._buffer("ig64", (B, nb * block, H), torch.float64)
        f64[:, T:] = 0
        ig[:, T:] = 0
        f64[:, :T] = f
        torch.mul(i, g, out=ig[:, :T])
        f64, ig = f64.view(B, nb, block, H), ig.view(B, nb, block, H)
        c = self._buffer("c64", (B, nb, block, H), torch.float64)
        prev = starts.double()
        for j in range(block):
            prev = torch.addcmul(ig[:, :, j], f64[:, :, j], prev, out=c[:, :, j])
        out = self._buffer("c", (B, T, H), f.dtype)
        out.copy_(c.view(B, nb * block, H)[:, :T])
        return out


@dataclass(eq=False)
class Recording(PointArrays):
    """Recorded points (name -> tensor laid out like the LSTM's output), output and final state.
    A mapping like the dump ``rnnviz.open`` returns: ``rec["layer1.c"]``, ``rec.unit("layer1.c[42]")``."""
    points: dict[str, torch.Tensor]
    output: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]

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
    ``kernel``: "auto" (the compiled kernel if built, or built for a big input), "on", "off"."""
    rec = Recorder(lstm, kernel=kernel, job_steps=inputs.shape[:-1].numel())
    points = all_points(rec.num_layers) if points is None else list(points)
    wanted: dict[int, list[str]] = {}
    for q in points:
        layer, kind = parse_point(q)
        if layer >= rec.num_layers:
            raise RnnvizError(f"{q}: the LSTM has layers 0..{rec.num_layers - 1}")
        wanted.setdefault(layer, []).append(kind)
    x, unbatched = _batch_first(lstm, inputs)
    if state is not None and unbatched:
        state = tuple(s[:, None] for s in state)
    got: dict[str, list[torch.Tensor]] = {q: [] for q in points}
    outs = []
    for t in range(0, x.shape[1], chunk):
        p = rec.run(x[:, t:t + chunk], state)
        state = p.state
        outs.append(p.h[-1])
        for layer, kinds in wanted.items():
            for kind, a in rec.expand(p, layer, kinds).items():
                got[point_name(layer, kind)].append(a)
    if not outs:
        raise RnnvizError("expected at least one time step, found an empty input")

    def layout(parts):
        return _restore(lstm, torch.cat(parts, dim=1), unbatched)
    h_n, c_n = state
    if unbatched:
        h_n, c_n = h_n[:, 0], c_n[:, 0]
    return Recording({q: layout(a) for q, a in got.items()}, layout(outs), (h_n, c_n))


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


class _CallableModule(types.ModuleType):
    """Lets ``rnnviz.record(lstm, inputs)`` work although ``rnnviz.record`` is this module."""

    def __call__(self, *args, **kwargs) -> Recording:
        return record(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
