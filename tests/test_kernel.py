"""When the compiled recorder is built, cached and used (rnnviz.kernel)."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from rnnviz import kernel
from rnnviz.backends import make_backend
from rnnviz.errors import RnnvizError

AVX512 = ("x86_64 AMD EPYC | avx avx2 avx512bw avx512f f16c fma sse4_2")
AVX2 = ("x86_64 AMD EPYC | avx avx2 f16c fma sse4_2")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty extension cache, on a CPU with AVX-512; nothing loads for real."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv("RNNVIZ_KERNEL", raising=False)
    monkeypatch.delenv("RNNVIZ_KERNEL_FLAGS", raising=False)
    monkeypatch.setattr(kernel, "cpu", lambda: AVX512)
    monkeypatch.setattr(kernel, "load_kernel", lambda: "the kernel")
    return tmp_path


def built(speedup: float) -> None:
    """A cache entry as a build that measured ``speedup`` leaves it."""
    kernel.cache_dir().mkdir(parents=True, exist_ok=True)
    kernel._write_record({"status": "built", "speedup": speedup, "module": "m", "library": "m.so",
                          "flags": ["-O3"], "build_seconds": 30.0, "when": "now", "timings": {}})


def no_compiler(monkeypatch) -> list:
    """The extension builder fails like a machine without a compiler; returns its calls."""
    from torch.utils import cpp_extension
    calls = []

    def load(*args, **kwargs):
        calls.append(kwargs.get("extra_cflags"))
        raise RuntimeError("Error building extension 'rnnviz_lstm': c++: not found\nmore detail")
    monkeypatch.setattr(cpp_extension, "load", load)
    return calls


def test_auto_uses_a_built_kernel_only_where_it_measured_at_least_the_threshold(cache):
    assert kernel.kernel_for("auto") is None  # never built: auto does not build it
    assert "not built" in kernel.why("auto", False)
    built(1.10)
    assert kernel.kernel_for("auto") is None
    assert "measured 1.10x" in kernel.why("auto", False)
    assert kernel.kernel_for("on") == "the kernel"  # asked for: used anyway
    built(kernel.MIN_SPEEDUP)
    assert kernel.kernel_for("auto") == "the kernel"
    assert kernel.kernel_for("off") is None
    with pytest.raises(RnnvizError, match="--kernel: expected one of auto, on, off"):
        kernel.kernel_for("fast")


def test_a_build_made_on_another_kind_of_cpu_is_not_used(cache, monkeypatch):
    """-march=native code for AVX-512 would crash an AVX2 CPU, and its speed-up was
    measured on the other CPU: a shared home folder must not hand it over."""
    built(1.9)
    assert kernel.kernel_for("auto") == "the kernel"
    monkeypatch.setattr(kernel, "cpu", lambda: AVX2)
    assert kernel.kernel_for("auto") is None
    assert kernel.vector_flags() == "avx2 f16c fma"


def test_the_cache_key_does_not_depend_on_the_checkout(cache, tmp_path, monkeypatch):
    name = kernel.kernel_name()
    copy = tmp_path / "elsewhere" / "lstm_record.cpp"
    copy.parent.mkdir()
    shutil.copy(kernel.SOURCE, copy)
    monkeypatch.setattr(kernel, "SOURCE", copy)
    assert kernel.kernel_name() == name
    copy.write_text(copy.read_text() + "\n// changed\n")
    assert kernel.kernel_name() != name


def test_a_failed_build_is_remembered_and_retried_only_when_asked(cache, monkeypatch, caplog):
    calls = no_compiler(monkeypatch)
    assert kernel.build_kernel() is None
    assert len(calls) == len(kernel.flag_sets()) == 2  # -march=native, then without it
    assert kernel.build_record()["status"] == "failed"
    assert "c++: not found" in caplog.text and "more detail" not in caplog.text
    assert kernel.kernel_for("on") is None and kernel.build_kernel() is None
    assert len(calls) == 2  # not tried again
    assert "failed to build" in kernel.why("on", False)
    assert kernel.build_kernel(retry=True) is None
    assert len(calls) == 4


def test_pure_pytorch_where_the_kernel_cannot_run(cache):
    built(3.0)
    lstm = nn.LSTM(3, 8, 1)
    assert make_backend(lstm, kernel="off").name == "pytorch"
    assert make_backend(lstm.double(), kernel="on").name == "pytorch"  # the kernel is float32 only


def test_a_stale_build_lock_is_removed(tmp_path):
    """A build killed with -9 leaves a lock that PyTorch would wait on forever."""
    lock = tmp_path / "lock"
    lock.touch()
    assert not kernel.clear_stale_lock(tmp_path)  # a build may be running right now
    old = time.time() - kernel.STALE_LOCK_SECONDS - 5
    os.utime(lock, (old, old))
    assert kernel.clear_stale_lock(tmp_path) and not lock.exists()


COMPILER = """#!/bin/sh
echo "$@" >> {log}
{then}
"""


def _copy_of_rnnviz(folder: Path) -> Path:
    shutil.copytree(Path(kernel.__file__).parent, folder / "rnnviz",
                    ignore=shutil.ignore_patterns("__pycache__", "data"))
    return folder


def _run(copy: Path, env: dict, code: str) -> subprocess.CompletedProcess:
    # In the copy's folder: `python -c` puts the working directory first on sys.path.
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env, PYTHONPATH=str(copy)), cwd=copy,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    return proc


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler here")
def test_two_copies_of_rnnviz_share_one_build_and_one_failure(tmp_path):
    """The package copied to two paths, one cache folder: the second copy loads the first
    one's build without calling the compiler; a failed build is not retried."""
    a, b = _copy_of_rnnviz(tmp_path / "a"), _copy_of_rnnviz(tmp_path / "b")
    log = tmp_path / "compiler.log"
    cxx = tmp_path / "c++"
    cxx.write_text(COMPILER.format(log=log, then=f'exec {shutil.which("c++")} "$@"'))
    cxx.chmod(0o755)
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path / "cache"), CXX=str(cxx),
               RNNVIZ_KERNEL_FLAGS="-O1")  # a quicker compile; the flags are part of the key
    env.pop("RNNVIZ_KERNEL", None)
    use = ("import torch, rnnviz.recording as r, rnnviz.kernel as k\n"
           f"assert r.__file__.startswith({str(tmp_path)!r}), r.__file__\n"
           "rec = r.record(torch.nn.LSTM(3, 8, 1), torch.randn(20, 3), kernel='on')\n"
           "print(rec.backend, k.load_kernel().__file__)")
    first = _run(a, env, use)
    assert "lstm_record.cpp" in log.read_text() and first.stdout.startswith("kernel ")
    calls = log.read_text().count("\n")
    second = _run(b, env, use)
    assert second.stdout == first.stdout  # the same library, from the shared cache
    assert log.read_text().count("\n") == calls  # and no compiler call at all
    record = json.loads(next((tmp_path / "cache").rglob("build.json")).read_text())
    assert record["status"] == "built" and record["speedup"] > 0 and record["flags"] == ["-O1"]

    cxx.write_text(COMPILER.format(log=log, then="echo 'cc1plus: out of memory' >&2; exit 1"))
    env["RNNVIZ_KERNEL_FLAGS"] = "-O0"  # another key: a fresh build, which fails
    fails = ("import torch, rnnviz.recording as r\n"
             "print(r.record(torch.nn.LSTM(3, 8, 1), torch.randn(20, 3), kernel='on').backend)")
    calls = log.read_text().count("\n")
    assert _run(a, env, fails).stdout == "pytorch\n"
    after_failure = log.read_text().count("\n")
    assert after_failure > calls
    again = _run(b, env, fails)
    assert again.stdout == "pytorch\n" and "failed to build before" in again.stderr
    assert log.read_text().count("\n") == after_failure


def test_kernel_command_says_what_is_cached(cache):
    from click.testing import CliRunner

    from rnnviz.cli import cli
    result = CliRunner().invoke(cli, ["kernel"])
    assert result.exit_code == 0 and "not built; `rnnviz kernel --build` builds it" in result.output
    assert "avx512f" in result.output and str(kernel.cache_dir()) in result.output
    kernel.cache_dir().mkdir(parents=True)
    kernel._write_record({"status": "built", "speedup": 1.07, "flags": ["-O3"], "build_seconds": 41.0,
                          "when": "2026-01-01", "timings": {
                              "model": "2x256", "kernel_one_text": 30000, "pytorch_one_text": 28000,
                              "kernel_16_files": 60000, "pytorch_16_files": 50000}})
    result = CliRunner().invoke(cli, ["kernel"])
    assert "1.07x pure PyTorch" in result.output and "not used by --kernel auto (under 1.15x)" in result.output
