import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for tests/dumpfactory.py


@pytest.fixture(scope="session", autouse=True)
def recording_kernel():
    """The compiled recorder, built once up front (the first run on a machine: 30-300 s)
    as `--kernel on` builds it; None where it cannot be built. Tests of both backends
    choose theirs explicitly."""
    from rnnviz.kernel import kernel_for
    return kernel_for("on")


@pytest.fixture(params=["kernel", "pytorch"])
def lstm_path(request, monkeypatch, recording_kernel):
    """The LSTM backend a test runs on: the compiled kernel (skipped where it cannot be
    built) or pure PyTorch, whatever `--kernel auto` would pick."""
    if request.param == "kernel" and recording_kernel is None:
        pytest.skip("the recording kernel could not be built here")
    lib = recording_kernel if request.param == "kernel" else None
    monkeypatch.setattr("rnnviz.kernel.kernel_for", lambda mode: lib)
    return request.param


@pytest.fixture(scope="session")
def stdlib_text_file():
    """A real Python source file every install has."""
    import textwrap
    return Path(textwrap.__file__)
