"""The compiled recorder (csrc/lstm_record.cpp, built by rnnviz.kernel): each layer of a
chunk stepped through time, writing c, h and all four gates as it goes. The fused
LSTM's work and nothing recomputed; CPU and float32 only. Clamps (rnnviz.intervene) go
to the kernel as a table grouped by lane and are applied inside its loop.
"""
from __future__ import annotations

import torch
from torch import nn

from ..errors import RnnvizError
from ..names import KINDS
from . import Backend, LayerRun
from .pytorch import Linear

# With fewer lanes than this the kernel's per-step product is bound by reading the
# weights, so the input term x_t W_ih^T of all steps is one time-parallel product
# beforehand; with more, it is done inside each step, which saves writing and reading
# it. One 256-unit layer, one thread, lane-steps/s: 1 lane 44k against 33k done inside,
# 16 lanes 66k inside against 59k beforehand.
PROJECT_BELOW = 8
_EMPTY = torch.empty(0)  # "no such argument" for the kernel


def _packed_or_empty(w_hh: torch.Tensor) -> torch.Tensor:
    """oneDNN's packed W_hh for the kernel's per-step product where this PyTorch has the
    op and it agrees with mm on a probe; an empty tensor (the kernel takes mm) otherwise.
    At batch 1 mm is the faster of the two."""
    linear = Linear(w_hh, torch.zeros(w_hh.shape[0]), "sigmoid")
    return linear.packed if linear.packed is not None else _EMPTY


class KernelBackend(Backend):
    """Records with the compiled kernel ``lib`` (rnnviz.kernel.kernel_for). Given an
    ``embedding``, layer 0 takes ids and looks its input term up in a table (one row per
    id) instead of multiplying. :meth:`layer` also computes the next layer's input term
    where that layer will want it (few lanes), in the calling thread: in a wavefront, the
    thread of the layer below has the shorter step."""
    name = "kernel"

    def __init__(self, lstm: nn.LSTM, lib, embedding=None, dtype=torch.float32):
        super().__init__(lstm, embedding, dtype)
        self.lib = lib
        self.w_hh_t = [w.w_hh.t().contiguous() for w in self.weights]
        self.packed = [_packed_or_empty(w.w_hh) for w in self.weights]
        self.w_ih_t = [w.w_ih.t().contiguous() for w in self.weights]
        self.biases = [w.bias.contiguous()[None] for w in self.weights]
        self.table = None  # (V, 4H): layer 0's input term of every id
        if self.embedding is not None:
            w = self.weights[0]
            self.table = torch.addmm(w.bias, self.embedding.to(w.w_ih.dtype), w.w_ih.t()).contiguous()

    @torch.no_grad()
    def layer(self, layer: int, inputs, state=None, clamps=(), t0: int = 0) -> KernelRun:
        x, init, ids = _EMPTY, None, _EMPTY
        if isinstance(inputs, KernelRun) and inputs.next_term is not None:
            init = inputs.next_term  # (B, T, 4H), computed by the layer below
            B, T = init.shape[:2]
        elif layer == 0 and self.table is not None and not inputs.is_floating_point():
            if inputs.dim() != 2:
                raise RnnvizError(f"expected ids of shape (batch, time), found {tuple(inputs.shape)}")
            init, ids = self.table, inputs.contiguous()
            B, T = ids.shape
        else:
            x = self.layer_input(layer, inputs)
            B, T = x.shape[:2]
            if B < PROJECT_BELOW:
                init, x = self.project(x, layer), _EMPTY
            else:
                x, init = x.contiguous(), self.biases[layer]
        state = self.zeros(B) if state is None else state
        lc = self.layer_clamps(clamps, layer, t0, B, T)
        table = (_EMPTY, _EMPTY, _EMPTY) if lc is None else lc.kernel_table(t0)
        out = torch.empty(6, B, T, self.hidden_size, dtype=self.dtype)
        h32 = torch.empty(B, T, self.hidden_size) if self.dtype == torch.float16 else _EMPTY
        h, c = state[0].contiguous().clone(), state[1].contiguous().clone()
        packed = self.packed[layer] if B > 1 else _EMPTY
        self.lib.run_layer(x, self.w_ih_t[layer], init, ids, self.w_hh_t[layer], packed, h, c, out, h32,
                           *table, t0)
        run = KernelRun(out, out[1] if h32 is _EMPTY else h32, (h, c))
        if layer + 1 < self.num_layers and B < PROJECT_BELOW:
            run.next_term = self.project(run.h, layer + 1)
        return run

    def product_path(self, lanes: int) -> str:
        """The per-step product the kernel takes for ``lanes`` lanes: "avx512" (its own
        loop, where it was compiled for AVX-512 and 4H is a multiple of 128), "packed"
        (oneDNN's) or "mm" (ATen's)."""
        return self.lib.product_path(self.hidden_size, lanes, self.packed[0].numel() > 0)

    @torch.no_grad()
    def project(self, x: torch.Tensor, layer: int) -> torch.Tensor:
        """x_t W_ih^T + b_ih + b_hh of every step of ``x`` (B, T, In) at once: (B, T, 4H)."""
        B, T, n_in = x.shape
        flat = x.reshape(B * T, n_in).contiguous()
        return self.lib.project(flat, self.w_ih_t[layer], self.biases[layer]).view(B, T, -1)


class KernelRun(LayerRun):
    def __init__(self, out: torch.Tensor, h: torch.Tensor, state):
        self.out = out  # (6, B, T, H) in KINDS order, the backend's dtype
        self.h, self.state = h, state
        self.next_term: torch.Tensor | None = None  # the layer above's input term, if computed

    def points(self, kinds=KINDS) -> dict[str, torch.Tensor]:
        arrays = dict(zip(KINDS, self.out))
        return {kind: arrays[kind] for kind in kinds}
