"""The recorder agrees with the LSTM equations written out, for any nn.LSTM."""
import copy
import os
import shutil

import pytest
import torch
from torch import nn

import rnnviz
from rnnviz.errors import RnnvizError
from rnnviz.model import CharLSTM, CharLSTMConfig
from rnnviz.names import all_points
from rnnviz.kernel import load_kernel
from rnnviz.record import Recorder, record, record_naive

TOL = 1e-5  # the bound on every recorded array, float32


@pytest.fixture(params=["kernel", "pytorch"], autouse=True)
def path(request, monkeypatch):
    """Every test runs on both paths: the compiled kernel and the pure-PyTorch fallback."""
    if request.param == "pytorch":
        monkeypatch.setattr("rnnviz.record.kernel_for", lambda mode, steps: None)
    return request.param


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler here")
def test_the_kernel_builds_here():
    """The speed figures depend on it: a machine that can build extensions must get it."""
    assert load_kernel() is not None


def max_error(a: rnnviz.record.Recording, b: rnnviz.record.Recording) -> float:
    assert set(a.points) == set(b.points)
    return max(float((a[q] - b[q]).abs().max()) for q in a.points)


# Hidden sizes 32 and 64 take the kernel's own AVX-512 product (4H a multiple of 128),
# 16 and 24 its ATen fallback; batches of 1, 2, 3, 5 and 11 cover its lane blocking.
@pytest.mark.parametrize("layers, hidden, n_in, batch_first, bias, batch, steps", [
    (1, 16, 8, True, True, 1, 300),
    (2, 32, 8, False, True, 3, 260),
    (3, 24, 5, True, False, 2, 200),
    (2, 16, 16, False, False, 5, 129),
    (2, 64, 7, True, True, 11, 150),
    (1, 32, 3, False, False, 1, 140),
])
def test_user_lstm_matches_the_step_by_step_equations(layers, hidden, n_in, batch_first, bias, batch, steps):
    torch.manual_seed(layers * 100 + hidden)
    lstm = nn.LSTM(n_in, hidden, layers, batch_first=batch_first, bias=bias)
    x = torch.randn((batch, steps, n_in) if batch_first else (steps, batch, n_in))
    # Small chunks: the state is carried across chunk and anchor boundaries.
    fast, slow = record(lstm, x, chunk=100), record_naive(lstm, x)
    assert fast["layer0.c"].shape == (x.shape[0], x.shape[1], hidden)  # the LSTM's own layout
    assert max_error(fast, slow) <= TOL
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x)
    # The reference itself is right: it reproduces PyTorch's own outputs.
    assert float((slow.output - out).abs().max()) <= TOL
    assert float((fast.output - out).abs().max()) <= TOL
    assert float((fast.state[1] - c_n).abs().max()) <= TOL
    assert float((fast.state[0] - h_n).abs().max()) <= TOL


def test_rnnviz_model_is_recorded_exactly_and_h_is_o_tanh_c():
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=30, num_layers=2, hidden_size=32, embedding_size=8)).eval()
    ids = torch.randint(0, 30, (2, 700))
    x = model.embed(ids).detach()
    fast, slow = record(model.lstm, x, chunk=256), record_naive(model.lstm, x)
    assert max_error(fast, slow) <= TOL
    for layer in range(2):
        o, c, h = (fast[f"layer{layer}.{k}"] for k in ("gate_o", "c", "h"))
        assert float((o * torch.tanh(c) - h).abs().max()) <= TOL
    with torch.no_grad():
        logits, _ = model(ids)
        assert float((model.head(fast.output) - logits).abs().max()) <= TOL


def test_long_sequence_does_not_drift():
    # Integrating cells (forget gate near 1) reach |c| ~ 150 over 6000 steps. There one
    # float32 step is 1.5e-5, so the bound is relative: the recording stays as close to
    # the exact (float64) values as PyTorch's own float32 forward does.
    torch.manual_seed(1)
    lstm = nn.LSTM(4, 16, 1, batch_first=True)
    with torch.no_grad():
        lstm.bias_ih_l0[16:32] = 6.0
    x = torch.randn(1, 6000, 4)
    fast = record(lstm, x, points=["layer0.c"])["layer0.c"].double()
    exact = record_naive(copy.deepcopy(lstm).double(), x.double())["layer0.c"]
    scale = float(exact.abs().max())
    assert scale > 100  # the cells really integrate
    assert float((fast - exact).abs().max()) <= 1e-5 * scale
    with torch.no_grad():
        _, (_, c_n) = lstm(x)
    # At the end, no further from the exact c than PyTorch's own forward is.
    ours, torchs = (float((a - exact[0, -1]).abs().max()) for a in (fast[0, -1], c_n[0, 0].double()))
    assert ours <= torchs + 1e-6 * scale


def test_initial_state_and_unbatched_input():
    torch.manual_seed(2)
    lstm = nn.LSTM(3, 8, 2)
    x = torch.randn(40, 3)  # (T, In): no batch axis
    state = (torch.randn(2, 8), torch.randn(2, 8))
    fast, slow = record(lstm, x, state=state), record_naive(lstm, x[:, None], (state[0][:, None], state[1][:, None]))
    assert fast["layer1.gate_g"].shape == (40, 8)
    assert float((fast["layer1.gate_g"] - slow["layer1.gate_g"][:, 0]).abs().max()) <= TOL
    assert float((fast["layer0.c"] - slow["layer0.c"][:, 0]).abs().max()) <= TOL


def test_only_the_chosen_points_are_returned():
    lstm = nn.LSTM(3, 8, 2, batch_first=True)
    rec = rnnviz.record(lstm, torch.randn(1, 10, 3), points=["layer1.gate_f", "layer0.h"])
    assert sorted(rec.points) == ["layer0.h", "layer1.gate_f"]
    assert len(all_points(2)) == 12


@pytest.mark.parametrize("lstm, message", [
    (nn.LSTM(3, 8, 1, bidirectional=True), "bidirectional"),
    (nn.LSTM(3, 8, 1, proj_size=4), "proj_size=4"),
    (nn.GRU(3, 8, 1), "expected a torch.nn.LSTM, found GRU"),
])
def test_unsupported_networks_are_refused_clearly(lstm, message):
    with pytest.raises(RnnvizError, match=message):
        record(lstm, torch.randn(5, 3))


def test_bad_points_and_inputs_are_refused():
    lstm = nn.LSTM(3, 8, 2, batch_first=True)
    with pytest.raises(RnnvizError, match="layers 0..1"):
        record(lstm, torch.randn(1, 5, 3), points=["layer2.c"])
    with pytest.raises(RnnvizError, match="unknown recording point"):
        record(lstm, torch.randn(1, 5, 3), points=["layer0.q"])
    with pytest.raises(RnnvizError, match=r"\(batch, time, 3\)"):
        Recorder(lstm).run(torch.randn(1, 5, 4))


def test_plain_matmul_fallback_gives_the_same_numbers(path):
    """Builds without oneDNN's packed linear op take addmm; the numbers must not change."""
    torch.manual_seed(3)
    lstm = nn.LSTM(6, 24, 2, batch_first=True)
    x = torch.randn(2, 300, 6)
    fast, plain = Recorder(lstm), Recorder(lstm)
    for layer in plain.linears:
        for linear in layer.values():
            linear.packed = None
    if path == "kernel":
        plain.packed = [torch.empty(0)] * 2
    p, q = fast.run(x), plain.run(x)
    for layer in range(2):
        a, b = fast.expand(p, layer), plain.expand(q, layer)
        for kind in a:
            assert float((a[kind] - b[kind]).abs().max()) <= TOL


def test_embedding_table_input_matches_embedded_input():
    """Layer 0 by table lookup (what dump uses for a character model) = layer 0 of the embedding."""
    torch.manual_seed(4)
    model = CharLSTM(CharLSTMConfig(vocab_size=40, num_layers=2, hidden_size=32, embedding_size=8)).eval()
    ids = torch.randint(0, 40, (3, 200))
    by_id, embedded = Recorder(model.lstm), Recorder(model.lstm)
    by_id.set_embedding(model.embed.weight)
    with torch.no_grad():
        x = model.embed(ids)
    p = by_id.run(x) if by_id.table is None else _run_ids(by_id, ids)
    q = embedded.run(x)
    for layer in range(2):
        a, b = by_id.expand(p, layer), embedded.expand(q, layer)
        for kind in a:
            assert float((a[kind] - b[kind]).abs().max()) <= TOL


def _run_ids(rec, ids):
    from rnnviz.record import Pass
    p = Pass(x=None, ids=ids)
    for layer in range(rec.num_layers):
        rec.run_layer(p, layer)
    return p


def test_a_failed_kernel_build_falls_back_with_a_note(monkeypatch, capsys):
    """No compiler, no ninja: one note, then the pure-PyTorch path, same numbers."""
    from torch.utils import cpp_extension

    from rnnviz import kernel

    def no_compiler(*args, **kwargs):
        raise RuntimeError("Ninja is required to load C++ extensions\nmore detail")
    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    monkeypatch.setattr(kernel, "is_built", lambda: False)
    kernel.load_kernel.cache_clear()
    try:
        assert kernel.load_kernel(build=True) is None
        assert kernel.kernel_for("on", 10) is None
    finally:
        kernel.load_kernel.cache_clear()
    err = capsys.readouterr().err
    assert "pure PyTorch" in err and "Ninja is required" in err and "more detail" not in err
    assert kernel.kernel_for("off", 10**9) is None
    with pytest.raises(RnnvizError, match="--kernel: expected one of auto, on, off"):
        kernel.kernel_for("fast", 10)


def test_a_stale_build_lock_is_removed(tmp_path, monkeypatch):
    """A build killed with -9 leaves a lock that PyTorch would wait on forever."""
    import os
    import time

    from torch.utils import cpp_extension

    from rnnviz import kernel
    monkeypatch.setattr(cpp_extension, "_get_build_directory", lambda name, verbose: str(tmp_path))
    lock = tmp_path / "lock"
    lock.touch()
    assert not kernel.clear_stale_lock()  # a build may be running right now
    old = time.time() - kernel.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    assert kernel.clear_stale_lock() and not lock.exists()
