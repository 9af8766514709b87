"""Writing outputs: two dumps to one -o (the lock on the .partial), a full disk in one line
(a small tmpfs where the test can mount one, else ENOSPC injected), and output folders
checked before the work."""
import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from rnnviz.cli import cli
from test_dump import SOURCE, make_ckpt

RNNVIZ = [sys.executable, "-m", "rnnviz"]  # this checkout's rnnviz, not whichever is on PATH


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_ckpt(tmp_path_factory.mktemp("model"))


def _one_line(result) -> str:
    """The one error line (a first run may print a note that a kernel is being built)."""
    errors = [line for line in result.output.strip().splitlines() if line.startswith("Error:")]
    assert result.exit_code == 1 and len(errors) == 1 and "Traceback" not in result.output, result.output
    return errors[0]


@contextmanager
def small_disk(folder: Path, size: str, options: str = ""):
    """A tmpfs of ``size`` mounted at ``folder``; yields False where mounting is not allowed."""
    folder.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}{options}", "tmpfs", str(folder)],
                       capture_output=True)
    try:
        yield r.returncode == 0
    finally:
        if r.returncode == 0:
            subprocess.run(["umount", "-l", str(folder)], check=True)


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_second_dump_to_the_same_output_waits_for_none_and_deletes_nothing(ckpt, tmp_path):
    fifo, other = tmp_path / "text.fifo", tmp_path / "other.py"
    os.mkfifo(fifo)
    other.write_text(SOURCE[:500])
    out, partial = tmp_path / "d.h5", tmp_path / "d.h5.partial"
    text = SOURCE[:3000]
    writer_ready = threading.Event()
    release = threading.Event()

    def feed():                  # the test keeps the pipe open: the first dump holds its lock meanwhile
        with open(fifo, "w") as f:
            f.write(text)
            f.flush()
            writer_ready.set()
            release.wait(120)
    feeder = threading.Thread(target=feed)
    feeder.start()
    first = subprocess.Popen([*RNNVIZ, "dump", "--quiet", str(ckpt), str(fifo), "-o", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer_ready.wait(120)
        deadline = time.monotonic() + 60
        while not partial.exists():
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.05)
        held = partial.stat().st_ino
        for extra in ([], ["--force"], ["--resume"]):
            line = _one_line(CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt), str(other), "-o", str(out),
                                                      *extra]))
            assert f"another dump is writing {out}" in line, line
            assert partial.stat().st_ino == held and not out.exists()
    finally:
        release.set()
        feeder.join()
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"] == 1 and "".join(map(chr, f["text/codes"][:])) == text
    assert not partial.exists()


def test_a_dump_that_cannot_fit_is_refused_before_it_writes(ckpt, tmp_path, monkeypatch):
    text = tmp_path / "t.py"
    text.write_text(SOURCE[:20_000])        # about 4 MB of states
    disk = tmp_path / "disk"
    with small_disk(disk, "1m") as mounted:
        if not mounted:
            import rnnviz.outputs
            disk.mkdir(exist_ok=True)
            monkeypatch.setattr(rnnviz.outputs, "_free", lambda path: 1 << 20)
        keep = disk / "notes.txt"
        keep.write_text("mine")
        out = disk / "d.h5"
        line = _one_line(CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt), str(text), "-o", str(out)]))
        assert "no space left on device (" in line and "nothing else was changed" in line, line
        assert sorted(p.name for p in disk.iterdir()) == ["notes.txt"] and keep.read_text() == "mine"


def test_a_full_disk_while_the_dump_writes_removes_the_unfinished_file(ckpt, tmp_path, monkeypatch):
    """HDF5 may have written part of its bookkeeping: a --resume of such a file gave rows of
    zeros (measured on a real full tmpfs), so it is not kept."""
    from rnnviz.dumpfile.writer import DumpWriter
    text = tmp_path / "t.py"
    text.write_text(SOURCE[:6000])
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    out, partial = tmp_path / "d.h5", tmp_path / "d.h5.partial"
    real, calls = DumpWriter.write, []

    def fills_up(self, *args):           # the disk fills up after a few chunks
        calls.append(1)
        if len(calls) > 40:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, *args)
    monkeypatch.setattr(DumpWriter, "write", fills_up)
    args = ["dump", "--quiet", str(ckpt), str(text), "-o", str(out), "--chunk-chars", "256", "--batch-size", "1"]
    line = _one_line(CliRunner().invoke(cli, args))
    assert "d.h5.partial: no space left on device (" in line and " free); nothing else was changed" in line
    assert "d.h5.partial was removed" in line and "run the dump again" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "t.py"] and keep.read_text() == "mine"
    monkeypatch.setattr(DumpWriter, "write", real)
    assert CliRunner().invoke(cli, args).exit_code == 0
    with h5py.File(out, "r") as f:
        assert f.attrs["complete"] == 1 and f.attrs["n_chars"] == 6000


def _states_digest(path) -> str:
    h = hashlib.sha256()
    with h5py.File(path, "r") as f:
        for layer in sorted(f["states"]):
            for kind in sorted(f["states"][layer]):
                h.update(np.ascontiguousarray(f["states"][layer][kind][:]).tobytes())
    return h.hexdigest()


@pytest.fixture
def made(ckpt, tmp_path):
    text = tmp_path / "t.py"
    text.write_text(SOURCE[:6000])
    made = tmp_path / "made.h5"
    assert CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt), str(text), "-o", str(made)]).exit_code == 0
    return made


def test_analyze_refuses_to_store_what_cannot_fit(made, tmp_path, monkeypatch):
    before = _states_digest(made)
    disk = tmp_path / "disk"
    # room for the dump and a little more: not for /analysis (features are 4 bytes per char each)
    with small_disk(disk, f"{made.stat().st_size + 40_000}") as mounted:
        if not mounted:
            import rnnviz.outputs
            disk.mkdir(exist_ok=True)
            monkeypatch.setattr(rnnviz.outputs, "_free", lambda path: 40_000)
        dump = disk / "d.h5"
        dump.write_bytes(made.read_bytes())
        line = _one_line(CliRunner().invoke(cli, ["analyze", str(dump), "--shifts", "3"]))
        assert "no space left on device (" in line and "nothing else was changed" in line, line
        assert _states_digest(dump) == before
        with h5py.File(dump, "r") as f:
            assert "analysis" not in f and f.attrs["complete"] == 1


def test_a_full_disk_while_analyze_writes_leaves_the_dump_unchanged(made, monkeypatch):
    import rnnviz.dumpfile.groups
    before = _states_digest(made)
    monkeypatch.setattr(rnnviz.dumpfile.groups, "write_table", _disk_full)
    line = _one_line(CliRunner().invoke(cli, ["analyze", str(made), "--shifts", "3"]))
    assert "no space left on device (" in line and " free); nothing else was changed" in line, line
    assert _states_digest(made) == before
    with h5py.File(made, "r") as f:
        assert "analysis" not in f and "analysis_partial" not in f and f.attrs["complete"] == 1


@contextmanager
def read_only_folder(folder: Path):
    """A folder nobody may write in, root included (a read-only tmpfs); skips where none can be made."""
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    with small_disk(folder, "1m", ",ro") as mounted:
        if not mounted:
            pytest.skip("cannot mount a read-only tmpfs here")
        yield folder


def test_output_folders_are_checked_before_the_work(ckpt, made, tmp_path):
    text = tmp_path / "corpus.txt"
    text.write_text(SOURCE[:3000])
    with read_only_folder(tmp_path / "ro") as ro:
        line = _one_line(CliRunner().invoke(cli, ["train", str(text), "-o", str(ro / "m.pt"), "--max-steps", "1"]))
        assert "cannot write in" in line, line
        line = _one_line(CliRunner().invoke(cli, ["analyze", str(made), "--csv", str(ro / "r.csv"), "--no-store"]))
        assert "cannot write in" in line and "r.csv" in line, line
        line = _one_line(CliRunner().invoke(cli, ["dump", "--quiet", str(ckpt), str(text), "-o", str(ro / "d.h5")]))
        assert "cannot write" in line, line


def test_train_refuses_a_text_that_cannot_fit_in_memory_before_reading_it(tmp_path, monkeypatch):
    import rnnviz.workflows
    huge = tmp_path / "huge.txt"
    huge.write_text(SOURCE[:5000])
    os.truncate(huge, 10 * 2**30)
    monkeypatch.setattr(rnnviz.workflows, "available_memory", lambda: 2**30)
    read = []
    monkeypatch.setattr(rnnviz.workflows, "read_sources", lambda *a, **k: read.append(a))
    line = _one_line(CliRunner().invoke(cli, ["train", str(huge), "-o", str(tmp_path / "m.pt")]))
    assert "the training text is 10,737 MB" in line and "in memory" in line, line
    assert read == []


def test_a_full_disk_when_train_saves_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import rnnviz.checkpoint
    text = tmp_path / "corpus.txt"
    text.write_text(SOURCE[:20_000])
    out = tmp_path / "m.pt"
    out.write_bytes(b"the previous checkpoint")
    real_fsync = os.fsync
    monkeypatch.setattr(rnnviz.checkpoint.os, "fsync", lambda fd: _disk_full())
    r = CliRunner().invoke(cli, ["train", str(text), "-o", str(out), "--force", "--layers", "1", "--hidden", "8",
                                 "--embedding", "4", "--max-steps", "2", "--seq-length", "20", "--batch-size", "4"])
    monkeypatch.setattr(rnnviz.checkpoint.os, "fsync", real_fsync)
    line = r.output.strip().splitlines()[-1]         # after the progress bar
    assert r.exit_code == 1 and line.startswith("Error:") and "Traceback" not in r.output, r.output
    assert "m.pt: no space left on device (" in line and " free); nothing else was changed" in line, line
    assert out.read_bytes() == b"the previous checkpoint"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus.txt", "m.pt"]
