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
from rnnviz.backends import make_backend
from rnnviz.kernel import build_record
from rnnviz.recording import Recording, record, record_naive

TOL = 1e-5  # the bound on every recorded array, float32


@pytest.fixture(autouse=True)
def path(lstm_path):
    """Every test runs on both backends: the compiled kernel and pure PyTorch."""
    return lstm_path


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler here")
def test_the_kernel_builds_here(recording_kernel):
    """The speed figures depend on it: a machine that can build extensions must get it."""
    assert recording_kernel is not None and build_record()["status"] == "built"


def max_error(a: Recording, b: Recording) -> float:
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
def test_user_lstm_matches_the_step_by_step_equations(layers, hidden, n_in, batch_first, bias, batch, steps, path):
    torch.manual_seed(layers * 100 + hidden)
    lstm = nn.LSTM(n_in, hidden, layers, batch_first=batch_first, bias=bias)
    x = torch.randn((batch, steps, n_in) if batch_first else (steps, batch, n_in))
    # Small chunks: the state is carried across chunk and anchor boundaries.
    fast, slow = record(lstm, x, chunk=100), record_naive(lstm, x)
    assert fast.backend == path
    assert fast["layer0.c"].shape == (x.shape[0], x.shape[1], hidden)  # the LSTM's own layout
    assert max_error(fast, slow) <= TOL
    with torch.no_grad():
        out, (h_n, c_n) = lstm(x)
    # The reference itself is right: it reproduces PyTorch's own outputs.
    assert float((slow.output - out).abs().max()) <= TOL
    assert float((fast.output - out).abs().max()) <= TOL
    assert float((fast.state[1] - c_n).abs().max()) <= TOL
    assert float((fast.state[0] - h_n).abs().max()) <= TOL


def test_rnnviz_model_is_recorded_exactly_and_h_is_o_tanh_c(path):
    torch.manual_seed(0)
    model = CharLSTM(CharLSTMConfig(vocab_size=30, num_layers=2, hidden_size=32, embedding_size=8)).eval()
    ids = torch.randint(0, 30, (2, 700))
    x = model.embed(ids).detach()
    fast, slow = record(model.lstm, x, chunk=256), record_naive(model.lstm, x)
    assert fast.backend == path
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
    (nn.GRU(3, 8, 1, bidirectional=True), "bidirectional GRUs"),
    (nn.Linear(3, 8), "expected a torch.nn.LSTM, GRU or RNN, found Linear"),
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
        make_backend(lstm).run(torch.randn(1, 5, 4))


def test_plain_matmul_fallback_gives_the_same_numbers(path):
    """Builds without oneDNN's packed linear op take addmm; the numbers must not change."""
    torch.manual_seed(3)
    lstm = nn.LSTM(6, 24, 2, batch_first=True)
    x = torch.randn(2, 300, 6)
    fast, plain = make_backend(lstm), make_backend(lstm)
    if path == "kernel":
        assert fast.product_path(2) == "packed"  # 4H = 96: not the kernel's own loop
        plain.packed = [torch.empty(0)] * 2
        assert plain.product_path(2) == "mm"
    else:
        for layer in plain.linears:
            for linear in layer.values():
                linear.packed = None
    for a, b in zip(fast.run(x), plain.run(x)):
        a, b = a.points(), b.points()
        for kind in a:
            assert float((a[kind] - b[kind]).abs().max()) <= TOL


def test_embedding_table_input_matches_embedded_input(path):
    """Layer 0 from ids (what dump gives a character model) = layer 0 of the embedding."""
    torch.manual_seed(4)
    model = CharLSTM(CharLSTMConfig(vocab_size=40, num_layers=2, hidden_size=32, embedding_size=8)).eval()
    ids = torch.randint(0, 40, (3, 200))
    by_id, embedded = make_backend(model.lstm, embedding=model.embed.weight), make_backend(model.lstm)
    assert by_id.name == embedded.name == path
    with torch.no_grad():
        x = model.embed(ids)
    for a, b in zip(by_id.run(ids), embedded.run(x)):
        a, b = a.points(), b.points()
        for kind in a:
            assert float((a[kind] - b[kind]).abs().max()) <= TOL


def test_the_kernel_takes_its_own_product_where_it_was_built_for_avx512(path, recording_kernel):
    """Its figures depend on it: built with -march=native on an AVX-512 CPU, a layer whose
    4H is a multiple of 128 steps with the kernel's own loop, others with oneDNN's or ATen's."""
    if path != "kernel":
        pytest.skip("the kernel's product paths")
    from rnnviz.kernel import vector_flags
    lstm = nn.LSTM(8, 32, 1, batch_first=True)
    avx512 = "avx512f" in vector_flags().split() and "-march=native" in build_record()["flags"]
    assert make_backend(lstm).product_path(1) == ("avx512" if avx512 else "mm")
    assert make_backend(nn.LSTM(8, 24, 1)).product_path(1) == "mm"
