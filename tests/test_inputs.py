"""Reading texts: in pieces, so that --max-chars bounds what is read; pipes and standard
input read like files; devices and sockets refused in one line."""
import os
import socket
import subprocess
import sys
import threading

import h5py
import pytest
from click.testing import CliRunner

from rnnviz.cli import cli
from rnnviz.dumpfile.tables import read_table
from test_dump import SOURCE, make_ckpt

RNNVIZ = [sys.executable, "-m", "rnnviz"]  # this checkout's rnnviz, not whichever is on PATH

PEAK_RSS = ("import resource, sys\n"
            "from rnnviz.cli import cli\n"
            "try:\n"
            "    cli(sys.argv[1:], prog_name='rnnviz')\n"
            "except SystemExit as e:\n"
            "    code = e.code\n"
            "print('peak_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)\n")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("model"))


def _dump_peak(*args) -> tuple[subprocess.CompletedProcess, int]:
    """``rnnviz dump ARGS`` in a fresh process: the result and its peak resident memory in bytes."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, "dump", "--quiet", *map(str, args)],
                       capture_output=True, text=True, timeout=600)
    peak = int(r.stderr.rsplit("peak_kb", 1)[1].split()[0]) * 1024
    return r, peak


def _n_chars(path) -> int:
    with h5py.File(path, "r") as f:
        return int(f.attrs["n_chars"])


def test_max_chars_bounds_the_read_of_a_10_gb_file(ckpt, tmp_path):
    text = (SOURCE * 3)[:20_000]
    small = tmp_path / "small.py"
    small.write_text(text)
    huge = tmp_path / "huge.py"
    with open(huge, "w") as f:
        f.write(text)
    os.truncate(huge, 10 * 2**30)               # sparse: 10 GB to read, next to no disk
    base, base_peak = _dump_peak(ckpt, small, "-o", tmp_path / "small.h5", "--max-chars", "5000")
    r, peak = _dump_peak(ckpt, huge, "-o", tmp_path / "huge.h5", "--max-chars", "5000")
    assert base.returncode == 0 and r.returncode == 0, r.stderr
    assert _n_chars(tmp_path / "huge.h5") == 5000
    with h5py.File(tmp_path / "huge.h5", "r") as f:
        assert "".join(map(chr, f["text/codes"][:])) == text[:5000]
    assert peak < base_peak + 100 * 2**20, (peak, base_peak)     # not 10 GB, nor even 1


@pytest.mark.parametrize("device", ["/dev/zero", "socket"])
def test_devices_and_sockets_are_refused_in_one_line(ckpt, tmp_path, device):
    if device == "socket":
        device = tmp_path / "s.sock"
        server = socket.socket(socket.AF_UNIX)
        server.bind(str(device))
    r = CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt), str(device), "-o", str(tmp_path / "d.h5"),
                                 "--max-chars", "1000"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("Error:"), r.output
    assert "device" in lines[0] or "socket" in lines[0]
    assert not (tmp_path / "d.h5").exists() and not (tmp_path / "d.h5.partial").exists()


def test_a_fifo_is_dumped(ckpt, tmp_path):
    fifo = tmp_path / "text.fifo"
    os.mkfifo(fifo)
    text = SOURCE[:1000]

    def feed():
        with open(fifo, "w") as f:
            f.write(text)
    writer = threading.Thread(target=feed)
    writer.start()
    r = subprocess.run([*RNNVIZ, "dump", "--quiet", str(ckpt), str(fifo), "-o", str(tmp_path / "d.h5")],
                       capture_output=True, text=True, timeout=300)
    writer.join()
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert "".join(map(chr, f["text/codes"][:])) == text
        assert list(read_table(f["sources"])["length"]) == [1000]


def test_standard_input_is_dumped(ckpt, tmp_path):
    text = SOURCE[:1500]
    r = subprocess.run([*RNNVIZ, "dump", "--quiet", str(ckpt), "-", "-o", str(tmp_path / "d.h5"),
                        "--max-chars", "1200"], input=text, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with h5py.File(tmp_path / "d.h5", "r") as f:
        assert "".join(map(chr, f["text/codes"][:])) == text[:1200]
        assert list(read_table(f["sources"])["name"]) == ["-"]
