"""Reading the user's text files: one function for train, dump and demo.

A directory argument means the text files below it (sorted, hidden ones skipped); a pipe
(``<(zcat corpus.gz)``, a FIFO) is read like a file and ``-`` is standard input. Every
input is read in pieces, so that a character limit bounds what is read.
"""
from __future__ import annotations

import codecs
import hashlib
import os
import stat
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import RnnvizError

STDIN = "-"


class TooMuchText(RnnvizError):
    """More text than the caller can hold (``max_bytes``)."""


# Suffixes taken from a directory; any file named explicitly is read whatever its suffix.
TEXT_SUFFIXES = {".txt", ".py", ".c", ".h", ".md", ".rst", ".js", ".ts", ".java", ".go",
                 ".rs", ".cpp", ".hpp", ".cc", ".tex", ".html", ".css", ".json", ".yaml",
                 ".yml", ".toml", ".cfg", ".ini", ".sh", ".lua", ".rb", ".pl", ".csv", ""}


@dataclass
class Source:
    name: str          # path as given (or found below a directory); "-" for standard input
    text: str
    size_bytes: int    # bytes read: the whole file unless a character limit stopped the reading
    sha256: str        # of those bytes

    def describe(self) -> dict:
        return {"name": self.name, "size_bytes": self.size_bytes, "chars": len(self.text),
                "sha256": self.sha256}


def expand_paths(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
        if str(p) == STDIN:
            out.append(p)
            continue
        if not p.exists():
            raise RnnvizError(f"{p}: no such file or directory")
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file()
                           and not any(part.startswith(".") for part in f.relative_to(p).parts)
                           and f.suffix.lower() in TEXT_SUFFIXES)
            if not found:
                raise RnnvizError(f"{p}: directory holds no text files")
            out += found
        else:
            check_input(p)
            out.append(p)
    if not out:
        raise RnnvizError("no input files given")
    return out


BLOCK = 1 << 20     # bytes read at a time: --max-chars bounds what is read, not only what is kept
_KINDS = [(stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
          (stat.S_ISSOCK, "a socket")]


def check_input(path: Path) -> None:
    """Refuse what cannot be read as a text: devices and sockets (``/dev/zero`` never ends)."""
    if str(path) == STDIN:
        return
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise RnnvizError(f"{path}: no such file or directory") from None
    for test, what in _KINDS:
        if test(mode):
            raise RnnvizError(f"{path}: is {what}, not a text; give a file, a pipe (such as "
                              f"<(zcat corpus.gz)) or - for standard input")


@contextmanager
def _open_input(path: Path):
    if str(path) == STDIN:
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as f:
            yield f


def read_source(path: Path, encoding: str = "utf-8", errors: str = "strict", skip_binary: bool = False,
                max_chars: int | None = None, max_bytes: int | None = None) -> Source | None:
    """Read ``path`` (``-``: standard input) in pieces, stopping after ``max_chars`` characters.

    ``size_bytes`` and ``sha256`` describe the bytes read: the whole file, unless ``max_chars``
    stopped the reading early. More than ``max_bytes`` is refused.
    """
    check_input(path)
    try:
        decoder = codecs.getincrementaldecoder(encoding)(errors)
    except LookupError:
        raise RnnvizError(f"unknown encoding {encoding!r}") from None
    digest, parts, n_chars, n_bytes, head = hashlib.sha256(), [], 0, 0, b""
    limit = sys.maxsize if max_chars is None else max_chars
    with _open_input(path) as f:
        while n_chars < limit:
            block = f.read(BLOCK)
            if len(head) < 8192:
                head += block[:8192 - len(head)]
                if b"\x00" in head:
                    if skip_binary:
                        return None
                    raise RnnvizError(f"{path}: looks like a binary file (NUL bytes), expected text")
            if max_bytes is not None and n_bytes + len(block) > max_bytes:
                raise TooMuchText(f"{path}: more than {max_bytes:,} bytes")
            pending = len(decoder.getstate()[0])       # bytes of a character cut by the last block
            try:
                piece = decoder.decode(block, final=not block)
            except UnicodeDecodeError as e:
                at = n_bytes - pending + e.start
                raise RnnvizError(f"{path}: not valid {encoding} at byte {max(at, 0)}; pass --encoding "
                                  f"(e.g. latin-1) or --errors replace") from None
            n_bytes += len(block)
            digest.update(block)
            piece = piece[:limit - n_chars]
            parts.append(piece)
            n_chars += len(piece)
            if not block:
                break
    return Source(str(path), "".join(parts), n_bytes, digest.hexdigest())


def read_sources(paths, encoding: str = "utf-8", errors: str = "strict", max_chars: int | None = None,
                 max_bytes: int | None = None) -> list[Source]:
    """Read every file (directories expanded) until ``max_chars`` characters in all (the files
    after that are not read); refuse empty input, and more than ``max_bytes``, with a clear message."""
    given_dirs = {Path(p) for p in paths if str(p) != STDIN and Path(p).is_dir()}
    sources = []
    chars_left = max_chars
    bytes_left = max_bytes
    for path in expand_paths(paths):
        if chars_left is not None and chars_left <= 0:
            break
        from_dir = any(d in path.parents for d in given_dirs)
        # Inside a directory, skip binaries and undecodable files quietly; named files must be text.
        try:
            src = read_source(path, encoding, errors, skip_binary=from_dir, max_chars=chars_left,
                              max_bytes=bytes_left)
        except TooMuchText:
            raise
        except RnnvizError:
            if from_dir:
                continue
            raise
        if src is not None and (src.text or not from_dir):
            sources.append(src)
            chars_left = None if chars_left is None else chars_left - len(src.text)
            bytes_left = None if bytes_left is None else bytes_left - src.size_bytes
    if not sources or not any(s.text for s in sources):
        names = ", ".join(map(str, paths))
        raise RnnvizError(f"{names}: no text to read (empty files)")
    return sources


def available_memory() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None: checks that need it are skipped."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def file_bytes(paths) -> int:
    """Bytes in the regular files among ``paths`` (directories expanded; pipes count 0)."""
    return sum(p.stat().st_size for p in expand_paths(paths) if str(p) != STDIN and p.is_file())


def stdlib_dir() -> Path | None:
    """The running Python's standard-library source folder, if it ships .py files."""
    import sysconfig
    d = Path(sysconfig.get_paths()["stdlib"])
    return d if (d / "os.py").exists() else None
