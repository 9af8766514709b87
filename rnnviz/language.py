"""Which language each source is in (``python``, ``c`` or ``text``), and feature descriptions
that say what the features mean in it.

``auto``: a code extension decides (``.py``: python; C-like extensions: c). Otherwise the
first 8 KiB are read: preprocessor lines, ``/* */`` and lines ending in ``;`` or braces
point to c; ``def``/``class`` lines, imports and lines ending in ``:`` to python; text with
hardly any code punctuation is prose. Without evidence, a prose extension (``.txt``,
``.md``, ...) means text and anything else python.
"""
from __future__ import annotations

import re
from pathlib import PurePath

LANGUAGES = ("python", "c", "text")
C_LIKE = {".c", ".h", ".cc", ".cpp", ".hpp", ".cxx", ".java", ".js", ".ts", ".go", ".rs",
          ".cs", ".swift", ".kt", ".scala", ".css", ".php", ".m"}
PYTHON = {".py", ".pyw", ".pyi"}
PROSE = {".txt", ".md", ".rst", ".tex", ".html"}
SAMPLE = 8192

_C_DIRECTIVE = re.compile(r"^[ \t]*#[ \t]*(?:include|define|undef|ifn?def|if|elif|endif|pragma)\b", re.M)
_C_LINE = re.compile(r"[;{}][ \t]*$", re.M)
_PY_DEF = re.compile(r"^[ \t]*(?:async[ \t]+)?(?:def|class)[ \t]+\w+.*:[ \t]*(?:#.*)?$", re.M)
_PY_IMPORT = re.compile(r"^(?:import[ \t]+[\w.]+|from[ \t]+[\w.]+[ \t]+import\b)", re.M)
_PY_LINE = re.compile(r":[ \t]*(?:#.*)?$", re.M)
_CODE_CHARS = set("{}[]()=;<>*/\\_#|&")


def sniff(text: str, default: str = "python") -> str:
    """The language the start of ``text`` looks like; ``default`` when it does not tell."""
    s = text[:SAMPLE]
    c = 3 * len(_C_DIRECTIVE.findall(s)) + 2 * s.count("/*") + len(_C_LINE.findall(s))
    py = 3 * len(_PY_DEF.findall(s)) + 2 * len(_PY_IMPORT.findall(s)) + len(_PY_LINE.findall(s)) + s.count("self.")
    if c >= 3 and c > py:
        return "c"
    if py >= 3 and py > c:
        return "python"
    if len(s) >= 200 and sum(ch in _CODE_CHARS for ch in s) < 0.01 * len(s):
        return "text"
    return default


def language_of(name: str, text: str, choice: str = "auto") -> str:
    """The language of one source: ``choice`` unless it is ``auto`` (see the module doc)."""
    if choice != "auto":
        return choice
    suffix = PurePath(name).suffix.lower()
    if suffix in C_LIKE:
        return "c"
    if suffix in PYTHON:
        return "python"
    return sniff(text, "text" if suffix in PROSE else "python")


# What the features that depend on the language mean in each one.
DESCRIPTIONS = {
    "in_string": {"python": "inside a Python string literal ('..', \"..\", triple-quoted, escapes)",
                  "c": "inside a C string or character literal (\"..\", '..', escapes)",
                  "text": "inside a string literal (prose has none)"},
    "in_short_string": {"python": "inside a one-line Python string literal ('..' or \"..\", not triple-quoted)",
                        "c": "inside a C string or character literal (\"..\", '..')",
                        "text": "inside a one-line string literal (prose has none)"},
    "in_long_string": {"python": "inside a triple-quoted Python string literal (docstrings, mostly)",
                       "c": "inside a triple-quoted string literal (C has none)",
                       "text": "inside a triple-quoted string literal (prose has none)"},
    "in_comment": {"python": "inside a Python comment (# to the end of the line)",
                   "c": "inside a C comment (// to the end of the line, /* .. */)",
                   "text": "inside a comment (prose has none)"},
}


def describe(name: str, default: str, languages) -> str:
    """Feature ``name``'s description for sources in ``languages`` (one per source)."""
    variants = DESCRIPTIONS.get(name)
    used = list(dict.fromkeys(languages))
    if variants is None or not used:
        return default
    if len(used) == 1:
        return variants[used[0]]
    return "; ".join(f"{lang}: {variants[lang]}" for lang in used)


def summarize(names, languages) -> str:
    """'c (a.txt), python (2 sources: b, c.py)'."""
    groups: dict[str, list[str]] = {}
    for name, lang in zip(names, languages):
        groups.setdefault(lang, []).append(PurePath(str(name)).name or "<text>")
    parts = []
    for lang, members in groups.items():
        shown = ", ".join(members[:3]) + (f", ... {len(members) - 3} more" if len(members) > 3 else "")
        parts.append(f"{lang} ({shown})" if len(members) == 1 else f"{lang} ({len(members)} sources: {shown})")
    return ", ".join(parts)
