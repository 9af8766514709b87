"""Reading the user's text files: one function for train, dump and demo.

A directory argument means the text files below it (sorted, hidden ones skipped).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import RnnvizError

# Suffixes taken from a directory; any file named explicitly is read whatever its suffix.
TEXT_SUFFIXES = {".txt", ".py", ".c", ".h", ".md", ".rst", ".js", ".ts", ".java", ".go",
                 ".rs", ".cpp", ".hpp", ".cc", ".tex", ".html", ".css", ".json", ".yaml",
                 ".yml", ".toml", ".cfg", ".ini", ".sh", ".lua", ".rb", ".pl", ".csv", ""}


@dataclass
class Source:
    name: str          # path as given (or found below a directory)
    text: str
    size_bytes: int
    sha256: str

    def describe(self) -> dict:
        return {"name": self.name, "size_bytes": self.size_bytes, "chars": len(self.text),
                "sha256": self.sha256}


def expand_paths(paths) -> list[Path]:
    out: list[Path] = []
    for p in map(Path, paths):
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
            out.append(p)
    if not out:
        raise RnnvizError("no input files given")
    return out


def read_source(path: Path, encoding: str = "utf-8", errors: str = "strict",
                skip_binary: bool = False) -> Source | None:
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        if skip_binary:
            return None
        raise RnnvizError(f"{path}: looks like a binary file (NUL bytes), expected text")
    try:
        text = data.decode(encoding, errors=errors)
    except LookupError:
        raise RnnvizError(f"unknown encoding {encoding!r}") from None
    except UnicodeDecodeError as e:
        raise RnnvizError(f"{path}: not valid {encoding} at byte {e.start}; pass --encoding "
                          f"(e.g. latin-1) or --errors replace") from None
    return Source(str(path), text, len(data), hashlib.sha256(data).hexdigest())


def read_sources(paths, encoding: str = "utf-8", errors: str = "strict") -> list[Source]:
    """Read every file (directories expanded); refuse empty input with a clear message."""
    given_dirs = {Path(p) for p in paths if Path(p).is_dir()}
    sources = []
    for path in expand_paths(paths):
        from_dir = any(d in path.parents for d in given_dirs)
        # Inside a directory, skip binaries and undecodable files quietly; named files must be text.
        try:
            src = read_source(path, encoding, errors, skip_binary=from_dir)
        except RnnvizError:
            if from_dir:
                continue
            raise
        if src is not None and (src.text or not from_dir):
            sources.append(src)
    if not sources or not any(s.text for s in sources):
        names = ", ".join(map(str, paths))
        raise RnnvizError(f"{names}: no text to read (empty files)")
    return sources


def stdlib_dir() -> Path | None:
    """The running Python's standard-library source folder, if it ships .py files."""
    import sysconfig
    d = Path(sysconfig.get_paths()["stdlib"])
    return d if (d / "os.py").exists() else None
