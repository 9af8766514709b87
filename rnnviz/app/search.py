"""Text search over a dump: streams the text in chunks, so it works on millions of
characters without holding the text in memory. (Select and match over units: selectmatch.py.)
"""
from __future__ import annotations

import re

import numpy as np

from ..errors import RnnvizError

MAX_MATCHES = 100_000
_LEAD = 64            # chars of context before a chunk, so ^ and lookbehinds see the real text
_OVERLAP = 4096       # a match may run this far past its chunk's end


def compile_query(query: str, regex: bool, case: bool = True) -> re.Pattern:
    if not query:
        raise RnnvizError("type something to search for")
    flags = re.MULTILINE | (0 if case else re.IGNORECASE)
    try:
        return re.compile(query if regex else re.escape(query), flags)
    except re.error as e:
        raise RnnvizError(f"the regular expression {query!r} does not compile: {e}") from None


def find_all(view, pattern: re.Pattern, limit: int = MAX_MATCHES, chunk: int = 1 << 20):
    """Starts (int64) and lengths (int32) of the non-empty matches, in order; True if cut at ``limit``."""
    starts: list[int] = []
    lengths: list[int] = []
    for pos in range(0, view.n_chars, chunk):
        lead = min(pos, _LEAD)
        text = view.text(pos - lead, pos + chunk + _OVERLAP)
        # Only matches starting inside this chunk count; the next chunk re-reads the overlap.
        for m in pattern.finditer(text, lead):
            if m.start() - lead >= chunk:
                break
            if m.end() > m.start():
                starts.append(pos - lead + m.start())
                lengths.append(m.end() - m.start())
                if len(starts) >= limit:
                    return np.array(starts, np.int64), np.array(lengths, np.int32), True
    return np.array(starts, np.int64), np.array(lengths, np.int32), False
