"""The recorders behind one contract: run a network layer by layer over a chunk of steps
and hand back every recording point of the cell.

    backend = make_backend(lstm, kernel="auto")
    run = backend.layer(0, x)                  # x (B, T, In); then layer(1, run), ...
    run.points(["c", "gate_f"])                # kind -> (B, T, H)

A :class:`Backend` runs one layer of one chunk at a time, from a given state, so that a
caller can carry the state across chunks, run the layers of successive chunks in a
wavefront (rnnviz.dump) and, for a cell whose kinds differ (a GRU has no c), use the
backend's ``kinds``. What :meth:`Backend.layer` returns is a :class:`LayerRun`: the
layer's output ``h`` (the input of the layer above), its final ``state``, and
:meth:`LayerRun.points`, which may do the time-parallel part of the work and may be
called from another thread while the backend runs the next chunk.

Interventions (rnnviz.intervene) go in as ``clamps`` with ``t0``, the text step of the
chunk's first step: ``layer(0, x, clamps=[Clamp(0, "c", 5, 0.0)], t0=4096)``. A layer
with no clamp active in the chunk takes the backend's usual path; the pure-PyTorch
backends step a clamped layer one step at a time (the clamped values feed the next
step), the kernel applies them inside its own loop.

Two backends for LSTMs: :class:`~rnnviz.backends.pytorch.PytorchBackend` (any device
and dtype) and :class:`~rnnviz.backends.compiled.KernelBackend` (the compiled kernel,
CPU float32; rnnviz.kernel decides when it is used); one for GRUs and vanilla RNNs,
:class:`~rnnviz.backends.cells.CellBackend` (pure PyTorch, any device; its state is
``(h,)``).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import RnnvizError
from ..names import KINDS

__all__ = ["Backend", "LayerRun", "make_backend", "check_cell", "check_lstm", "layer_weights", "measure_speedup"]


def check_cell(module) -> str:
    """"lstm", "gru", "rnn_tanh" or "rnn_relu" for a module the recorders model; refuses
    the rest with a message saying what they expect."""
    if not isinstance(module, (nn.LSTM, nn.GRU, nn.RNN)):
        raise RnnvizError(f"expected a torch.nn.LSTM, GRU or RNN, found {type(module).__name__}")
    if module.bidirectional:
        raise RnnvizError(f"bidirectional {type(module).__name__}s are not supported: record each "
                          f"direction as its own module (the backward one over the reversed input)")
    if getattr(module, "proj_size", 0):
        raise RnnvizError(f"LSTMs with projections (proj_size={module.proj_size}) are not supported: "
                          f"expected proj_size=0")
    return module.mode.lower()


def check_lstm(lstm) -> nn.LSTM:
    if check_cell(lstm) != "lstm":
        raise RnnvizError(f"expected a torch.nn.LSTM, found {type(lstm).__name__}")
    return lstm


def single_layer(module: nn.RNNBase, layer: int) -> nn.RNNBase:
    """A one-layer fused module of ``module``'s kind sharing layer ``layer``'s parameters
    (no copy), batch-first, in evaluation mode."""
    w = getattr(module, f"weight_ih_l{layer}")
    kwargs = {"nonlinearity": module.nonlinearity} if isinstance(module, nn.RNN) else {}
    one = type(module)(w.shape[1], module.hidden_size, 1, bias=module.bias, batch_first=True,
                       device="meta", **kwargs)
    for name in one._flat_weights_names:
        setattr(one, name, getattr(module, name[:-1] + str(layer)))
    return one.eval()


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


class LayerRun:
    """One layer over one chunk. ``h`` (B, T, H) float32 and ``state`` ((B, H) h_n and c_n)
    are there at once; :meth:`points` gives the recorded arrays."""
    h: torch.Tensor
    state: tuple[torch.Tensor, torch.Tensor]

    def points(self, kinds=KINDS) -> dict[str, torch.Tensor]:
        """kind -> (B, T, H) in the backend's ``dtype``, for ``kinds``; the caller may keep them."""
        raise NotImplementedError


class SteppedRun(LayerRun):
    """A layer stepped one step at a time (under clamps): every point is there at once."""

    def __init__(self, arrays: dict[str, torch.Tensor], state, dtype: torch.dtype):
        self.arrays, self.h, self.state, self.dtype = arrays, arrays["h"], state, dtype

    def points(self, kinds=KINDS) -> dict[str, torch.Tensor]:
        for kind in kinds:
            if kind not in self.arrays:
                raise RnnvizError(f"this layer has no {kind}: its points are {', '.join(self.arrays)}")
        return {kind: self.arrays[kind].to(self.dtype, copy=kind == "h") for kind in kinds}


class Backend:
    """Runs an nn.LSTM one layer and one chunk at a time. Inputs are batch-first."""
    name: str                 # "pytorch" or "kernel": which recorder ran, for reports and tests
    kinds: tuple[str, ...] = KINDS  # the cell's recording points, per layer

    def __init__(self, lstm: nn.LSTM, embedding: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32):
        check_lstm(lstm)
        if dtype not in (torch.float32, torch.float16):
            raise RnnvizError(f"expected float32 or float16 recordings, found {dtype}")
        self.num_layers, self.hidden_size, self.input_size = lstm.num_layers, lstm.hidden_size, lstm.input_size
        self.weights = [layer_weights(lstm, layer) for layer in range(self.num_layers)]
        self.embedding = None if embedding is None else embedding.detach()  # (V, In): layer 0 takes ids
        self.dtype = dtype

    def layer(self, layer: int, inputs, state=None, clamps=(), t0: int = 0) -> LayerRun:
        """Layer ``layer`` over a chunk from ``state`` ((B, H) h and c; default zeros).
        ``inputs``: the LayerRun of the layer below, or for layer 0 a float (B, T, In)
        tensor, or (B, T) int64 ids where the backend was given an ``embedding``.
        ``clamps``: rnnviz.intervene Clamps (any layer's; or a ClampTable) applied where
        this layer's are on, ``t0`` the text step of the chunk's first step."""
        raise NotImplementedError

    def run(self, inputs, state=None, clamps=(), t0: int = 0) -> list[LayerRun]:
        """Every layer over a chunk from ``state`` ((L, B, H) h and c; h alone for a GRU or
        RNN; default zeros), under ``clamps`` (see :meth:`layer`)."""
        from ..intervene import ClampTable
        table = ClampTable.of(clamps)
        if len(table) and int(table.layer_ids.max()) >= self.num_layers:
            raise RnnvizError(f"a clamp on layer {int(table.layer_ids.max())}: the network has layers "
                              f"0..{self.num_layers - 1}")
        runs: list[LayerRun] = []
        for layer in range(self.num_layers):
            below = inputs if layer == 0 else runs[-1]
            runs.append(self.layer(layer, below, None if state is None else tuple(s[layer] for s in state),
                                   table, t0))
        return runs

    def layer_clamps(self, clamps, layer: int, t0: int, lanes: int, steps: int):
        """This layer's clamps on in text steps [t0, t0 + steps) (rnnviz.intervene.LayerClamps),
        or None: then the layer takes the backend's usual path."""
        if not clamps:
            return None
        from ..intervene import ClampTable
        return ClampTable.of(clamps).layer(layer, t0, steps, lanes, self.hidden_size, self.kinds)

    def layer_input(self, layer: int, inputs) -> torch.Tensor:
        """``inputs`` as a float (B, T, In) tensor, checked."""
        if isinstance(inputs, LayerRun):
            return inputs.h
        if layer == 0 and self.embedding is not None and not inputs.is_floating_point():
            if inputs.dim() != 2:
                raise RnnvizError(f"expected ids of shape (batch, time), found {tuple(inputs.shape)}")
            return nn.functional.embedding(inputs, self.embedding)
        n_in = self.input_size if layer == 0 else self.hidden_size
        if inputs.dim() != 3 or inputs.shape[-1] != n_in:
            raise RnnvizError(f"expected inputs of shape (batch, time, {n_in}), found {tuple(inputs.shape)}")
        return inputs

    def zeros(self, lanes: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = self.weights[0].w_hh
        z = torch.zeros(lanes, self.hidden_size, dtype=w.dtype, device=w.device)
        return z, z


def make_backend(lstm: nn.RNNBase, kernel: str = "auto", embedding: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32, reuse_buffers: bool = False) -> Backend:
    """The backend for ``lstm`` (an nn.LSTM, GRU or RNN) under the kernel mode
    (rnnviz.kernel.kernel_for): the compiled kernel for a CPU float32 LSTM where the mode
    picks it, else pure PyTorch (rnnviz.backends.cells for a GRU or RNN).
    ``reuse_buffers``: the pure-PyTorch backend keeps its scratch arrays between chunks."""
    from ..kernel import kernel_for
    from .cells import CellBackend
    from .compiled import KernelBackend
    from .pytorch import PytorchBackend
    if check_cell(lstm) != "lstm":  # GRU and RNN: pure PyTorch (the kernel steps LSTMs only)
        return CellBackend(lstm, embedding=embedding, dtype=dtype)
    w = check_lstm(lstm).weight_hh_l0
    lib = kernel_for(kernel) if w.device.type == "cpu" and w.dtype == torch.float32 else None
    if lib is not None:
        return KernelBackend(lstm, lib, embedding=embedding, dtype=dtype)
    return PytorchBackend(lstm, embedding=embedding, dtype=dtype, reuse_buffers=reuse_buffers)


# Two jobs a dump meets: one long text (one lane) and files recorded side by side.
SPEEDUP_JOBS = {"one_text": (1, 2048), "16_files": (16, 256)}


@torch.inference_mode()
def measure_speedup(lib, repeats: int = 3, hidden: int = 256, layers: int = 2) -> dict:
    """The kernel's speed against pure PyTorch on this machine, recording every point of a
    ``layers`` x ``hidden`` LSTM in float16 (as rnnviz dump does) on one thread, best of
    ``repeats`` interleaved: lane-steps/s for each of SPEEDUP_JOBS and ``speedup``, the
    smaller of the two ratios."""
    from .compiled import KernelBackend
    from .pytorch import PytorchBackend
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        lstm = nn.LSTM(64, hidden, layers, batch_first=True)
        backends = {"kernel": KernelBackend(lstm, lib, dtype=torch.float16),
                    "pytorch": PytorchBackend(lstm, dtype=torch.float16, reuse_buffers=True)}
        best: dict[tuple[str, str], float] = {}
        for _ in range(repeats):
            for job, (lanes, steps) in SPEEDUP_JOBS.items():
                x = torch.randn(lanes, steps, 64)
                for name, backend in backends.items():
                    start = time.perf_counter()
                    for run in backend.run(x):
                        run.points()
                    seconds = time.perf_counter() - start
                    best[name, job] = min(best.get((name, job), seconds), seconds)
    finally:
        torch.set_num_threads(threads)
    out: dict = {}
    for job, (lanes, steps) in SPEEDUP_JOBS.items():
        for name in backends:
            out[f"{name}_{job}"] = round(lanes * steps / best[name, job])
        out[f"speedup_{job}"] = round(best["pytorch", job] / best["kernel", job], 3)
    out["speedup"] = min(out[f"speedup_{job}"] for job in SPEEDUP_JOBS)
    out["model"] = f"{layers}x{hidden}"
    return out
