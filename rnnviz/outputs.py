"""Writing outputs safely: the lock on a dump's ``.partial``, writable folders checked
before the work, and a full disk said in one line.

    with hold_partial(partial, target), disk_full(partial, kept=...): ...
"""
from __future__ import annotations

import errno
import fcntl
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import RnnvizError


class DiskFull(RnnvizError):
    """The disk filled up while (or before) writing; nothing else was changed."""


@contextmanager
def hold_partial(partial: Path, target: Path):
    """An advisory lock (flock) on ``partial`` for the whole run, so that two dumps to one
    target cannot both write it (or delete the other's). The file is created empty if need
    be, and removed on the way out if it is still empty; a killed run's lock goes with it."""
    try:
        fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise RnnvizError(f"cannot write {partial}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RnnvizError(f"another dump is writing {target} (it holds {partial.name}); "
                          f"wait for it, or stop it and pass --resume") from None
    try:
        yield
    finally:
        try:
            here = os.stat(partial)
            mine = os.fstat(fd)
            if (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino) and here.st_size == 0:
                os.unlink(partial)          # never written: not an interrupted dump
        except FileNotFoundError:
            pass
        os.close(fd)


def discard_broken(f, path: Path) -> None:
    """Close ``f`` (a writer whose writes failed) and delete ``path``. Closing may fail again
    (its buffers cannot be written); the file is dropped all the same."""
    try:
        f.close()
    except Exception:
        pass
    Path(path).unlink(missing_ok=True)


def check_writable(folder: Path, what: str) -> None:
    """Fail now, not after the work, when ``folder`` cannot take a new file."""
    folder = Path(folder)
    if not folder.is_dir():
        raise RnnvizError(f"{what}: folder {folder} does not exist; create it first")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".rnnviz-write-test-"):
            pass
    except OSError as e:
        raise RnnvizError(f"{what}: cannot write in {folder} ({e.strerror or e})") from None


def is_disk_full(e: BaseException) -> bool:
    """ENOSPC, also as HDF5 reports it (an OSError or RuntimeError whose message carries errno 28)."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(e)
    return isinstance(e, (OSError, RuntimeError)) and ("No space left on device" in text or "errno = 28" in text)


def _free(path) -> int | None:
    try:
        return shutil.disk_usage(Path(path).parent).free
    except OSError:
        return None


def check_space(path, need: int, what: str) -> None:
    """Refuse before writing when ``need`` bytes for ``path`` will not fit: HDF5 is not built
    to survive a full disk halfway through a write."""
    free = _free(path)
    if free is not None and need > free:
        raise RnnvizError(f"{path}: no space left on device ({_size(free)} free, {what} needs about "
                          f"{_size(need)}); nothing else was changed")


def _size(n: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1000


@contextmanager
def disk_full(path, kept: str = "nothing else was changed"):
    """An ENOSPC while writing ``path`` becomes one line: no space left, how much is free, ``kept``."""
    try:
        yield
    except BaseException as e:
        if not is_disk_full(e):
            raise
        free = _free(path)
        free = "unknown" if free is None else _size(free)
        raise DiskFull(f"{path}: no space left on device ({free} free); {kept}") from None
