"""Open dumps once per server process and read them lazily, one window at a time.

Every browser tab gets its own Bokeh document, but they all share the
:class:`DumpView` returned by :func:`open_view`, so a dump of millions of
characters is opened once and only the windows being looked at are read.
"""
from __future__ import annotations

import os
import threading
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..dumpfile import Dump, open_dump
from ..dumpfile.reader import check_unit
from ..errors import RnnvizError
from ..names import parse_point, parse_unit, unit_name
from ..render.scales import computed_stats, stored_stats

# Windows of state blocks kept per process; a 10k-char window of 256 float16 units is 5 MB.
BLOCK_CACHE_BYTES = 64 << 20
_ANALYSIS_TABLES = ("ranking", "saturation", "contexts", "units")

_VIEWS: dict[str, "DumpView"] = {}
_VIEWS_LOCK = threading.Lock()


def open_view(path) -> "DumpView":
    """The process-wide view of the dump at ``path`` (opened and checked on first use)."""
    key = os.path.realpath(path)
    with _VIEWS_LOCK:
        view = _VIEWS.get(key)
        if view is None:
            view = _VIEWS[key] = DumpView(path)
        return view


@dataclass
class AnalysisTables:
    """The /analysis group's tables, or None for each one that is missing."""
    ranking: pd.DataFrame | None = None
    saturation: pd.DataFrame | None = None
    contexts: pd.DataFrame | None = None
    units: pd.DataFrame | None = None                        # per-unit percentiles (colour scales)
    features: dict[str, str] = field(default_factory=dict)   # name -> kind (binary, continuous, ordinal)
    row_index: dict = field(default_factory=dict)            # table -> {unit: row numbers}, built on first use
    options: dict = field(default_factory=dict)              # how it was made (analysed_chars, z_bound, ...)


class DumpView:
    """Read-only, thread-safe window reader over one dump file."""

    def __init__(self, path):
        self.path = str(path)
        self.name = Path(path).name
        self._lock = threading.RLock()
        self._busy: str | None = None       # why the file is closed right now (e.g. analysis running)
        self._blocks: OrderedDict = OrderedDict()
        self._analysis: AnalysisTables | None | bool = False   # False = not read yet
        self._stats: dict = {}              # unit -> its distribution over the text (colour scales)
        self._file = None
        self._open()

    # ----- opening and checking
    def _open(self) -> None:
        d = open_dump(self.path)
        try:
            self._read_header(d)
        except BaseException:
            d.close()
            raise
        self._file = d

    def _read_header(self, d: Dump) -> None:
        self.n_chars, self.num_layers, self.hidden_size = d.n_chars, d.num_layers, d.hidden_size
        self.topk, self.vocab, self.points, self.dtype = d.topk, d.vocab, d.points, d.dtype
        self.cell = d.cell
        for point in self.points:
            shape = d[point].shape
            if shape[0] != self.n_chars or len(shape) != 2:
                raise RnnvizError(f"{self.path}: {point} has shape {shape}, expected "
                                  f"({self.n_chars}, {self.hidden_size})")
        if not self.points:
            raise RnnvizError(f"{self.path}: none of the recorded state arrays {d.recorded} is in the "
                              f"file; record it again with rnnviz dump")
        if d.loss.shape[0] != self.n_chars:
            raise RnnvizError(f"{self.path}: /predictions/loss has {d.loss.shape[0]} "
                              f"rows, expected {self.n_chars}")
        self.sources = d.sources

    @contextmanager
    def _h5(self):
        with self._lock:
            if self._file is None:
                raise RnnvizError(f"{self.name}: {self._busy or 'closed'}; try again when it finishes")
            yield self._file

    def close(self) -> None:
        """Close the file (a view from ``open_view`` is shared: only for views made directly)."""
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file, self._busy = None, "closed"

    def describe(self) -> str:
        return (f"{self.name}: {self.n_chars:,} chars in {len(self.sources)} source(s), "
                f"{self.cell.upper()}, {self.num_layers} layer(s) x {self.hidden_size} units")

    # ----- units
    def check_unit(self, unit: str) -> tuple[str, int]:
        """'layer1.c[42]' -> ('layer1.c', 42), refusing units this dump does not hold."""
        return check_unit(unit, self.points, self.hidden_size)

    def check_position(self, pos: int) -> int:
        if not 0 <= pos < self.n_chars:
            raise RnnvizError(f"position {pos:,} is outside the text, which has {self.n_chars:,} "
                              f"chars (0..{self.n_chars - 1:,})")
        return int(pos)

    # ----- windows
    def source_breaks(self, start: int, end: int) -> list[int]:
        """Offsets into chars [start, end) where a source other than the first one begins."""
        firsts = self.sources["start"].to_numpy()
        return (firsts[(firsts > start) & (firsts < end)] - start).tolist()

    def text(self, start: int, end: int) -> str:
        start, end = max(0, start), min(self.n_chars, end)
        if end <= start:
            return ""
        with self._h5() as d:
            return d.text_slice(start, end)

    def codes(self, start: int, end: int) -> np.ndarray:
        with self._h5() as d:
            return d.codes(start, end)

    def block(self, point: str, start: int, end: int) -> np.ndarray:
        """(T, H) states of ``point`` for chars [start, end), as stored (float16/32); cached."""
        return self._cached((point, start, end), lambda d: d[point][start:end])

    def values(self, point: str, index: int, start: int, end: int) -> np.ndarray:
        """(T,) float32 values of one unit over chars [start, end).

        Reads (and caches) the HDF5 chunk column holding the unit (e.g. 64 of 256 units),
        so the next unit usually comes from memory and a new one costs a quarter of a block.
        """
        key = (point, start, end)
        with self._lock:
            whole = self._blocks.get(key)
            if whole is not None:
                return whole[:, index].astype(np.float32)
            with self._h5() as d:
                ds = d[point]
                width = ds.chunks[1] if ds.chunks else ds.shape[1]
            lo = index // width * width
            slab = self._cached((point, start, end, lo), lambda d: d[point][start:end, lo:lo + width])
            return slab[:, index - lo].astype(np.float32)

    def _cached(self, key, read) -> np.ndarray:
        """LRU over state slabs, at most BLOCK_CACHE_BYTES in all."""
        with self._lock:
            hit = self._blocks.get(key)
            if hit is not None:
                self._blocks.move_to_end(key)
                return hit
            with self._h5() as d:
                arr = read(d)
            self._blocks[key] = arr
            while sum(a.nbytes for a in self._blocks.values()) > BLOCK_CACHE_BYTES and len(self._blocks) > 1:
                self._blocks.popitem(last=False)
            return arr

    def predictions(self, start: int, end: int):
        """loss (T,), top-k ids (T, K) and probabilities (T, K) for chars [start, end)."""
        with self._h5() as d:
            return d.loss[start:end], d.topk_ids[start:end], d.topk_probs[start:end]

    def read(self, point: str, start: int, end: int, cols: slice = slice(None)) -> np.ndarray:
        """(T, C) states of ``point`` for chars [start, end) and units ``cols``, as stored; not cached."""
        with self._h5() as d:
            return d[point][start:end, cols]

    def iter_point(self, point: str, chunk: int = 1 << 16, cols: slice = slice(None)):
        """Yield (start, (T, C) block) of units ``cols`` over the whole dump, without caching the blocks."""
        for pos in range(0, self.n_chars, chunk):
            yield pos, self.read(point, pos, pos + chunk, cols)

    # ----- result groups other commands add (/errors, /ablation)
    def group_table(self, group: str, table: str) -> pd.DataFrame | None:
        """Table ``table`` of the result group ``group``, or None when either is absent."""
        with self._h5() as d:
            g = d.group(group)
            return None if g is None else g.table(table)

    def group_options(self, group: str) -> dict:
        """The options result group ``group`` was made with ({} when absent)."""
        with self._h5() as d:
            g = d.group(group)
            return {} if g is None else g.options

    def group_slice(self, group: str, array: str, start: int, end: int) -> np.ndarray:
        """Chars [start, end) of a per-character (N,) array in a result group."""
        with self._h5() as d:
            return d.group(group).array(array)[start:end]

    def group_rows(self, group: str, array: str, row: int, start: int, end: int) -> np.ndarray:
        """Columns [start, end) of row ``row`` of a (rows, N) array in a result group."""
        with self._h5() as d:
            return d.group(group).array(array)[row, start:end]

    # ----- analysis
    @property
    def analysis(self) -> AnalysisTables | None:
        """The /analysis group's tables (read once per process), or None before ``rnnviz analyze``."""
        with self._lock:
            if self._analysis is False:
                with self._h5() as d:
                    self._analysis = _read_analysis(d)
            return self._analysis

    def feature(self, name: str, start: int, end: int) -> np.ndarray:
        with self._h5() as d:
            ds = None if d.analysis is None else d.analysis.feature(name)
            if ds is None:
                raise RnnvizError(f"{self.name}: no feature {name!r} in the analysis")
            return ds[start:end].astype(np.float32)

    def unit_rows(self, table: str, unit: str) -> pd.DataFrame:
        """The rows of analysis table ``table`` (ranking, contexts) about ``unit``, in table order."""
        a = self.analysis
        df = getattr(a, table, None) if a is not None else None
        if df is None or "unit" not in df:
            return pd.DataFrame()
        with self._lock:
            # One grouping per table and process: a string comparison over 100k rows costs ~4 ms a switch.
            index = a.row_index.get(table)
            if index is None:
                index = a.row_index[table] = df.groupby("unit", sort=False).indices
        return df.iloc[index.get(unit, [])]

    def unit_stats(self, unit: str) -> dict:
        """``unit``'s p1, p50, p99, min and max over the whole text (its colour scale).

        From /analysis/units; without it, computed from the states on first use, for the
        unit's whole chunk column at once (kept in memory, never written to the dump).
        """
        with self._lock:
            if not self._stats:
                a = self.analysis
                self._stats.update(stored_stats(None if a is None else a.units, None if a is None else a.options))
            hit = self._stats.get(unit)
            if hit is not None:
                return hit
            point, index = self.check_unit(unit)
            with self._h5() as d:
                ds = d[point]
                width = ds.chunks[1] if ds.chunks else ds.shape[1]
                lo = index // width * width
                cols = slice(lo, min(lo + width, ds.shape[1]))
                stats = computed_stats(lambda a, b: ds[a:b, cols], self.n_chars, cols.stop - lo, ds.dtype)
            for i, st in enumerate(stats):
                self._stats.setdefault(unit_name(point, lo + i), st)
            return self._stats[unit]

    def run_analysis(self) -> None:
        """Run ``rnnviz analyze`` on this dump; its file is closed meanwhile (the analyzer writes it)."""
        from ..analyze import analyze_dump
        with self._lock:
            if self._file is None:
                raise RnnvizError(f"{self.name}: {self._busy}; try again when it finishes")
            self._file.close()
            self._file, self._busy = None, "the analysis is running"
            self._blocks.clear()
        try:
            analyze_dump(self.path)
        finally:
            with self._lock:
                self._analysis = False
                self._stats.clear()
                self._busy = None
                self._open()


def _read_analysis(d: Dump) -> AnalysisTables | None:
    g = d.analysis
    if g is None:
        return None
    tables = {name: g.table(name) for name in _ANALYSIS_TABLES}
    analysis = AnalysisTables(features=g.feature_kinds, options=g.options, **tables)
    if analysis.ranking is not None:
        analysis.ranking = _with_unit_columns(analysis.ranking)
    return analysis


def _with_unit_columns(ranking: pd.DataFrame) -> pd.DataFrame:
    """Fill `point`/`index` from `unit` where the analyzer left them out, and sort by |score|."""
    if "unit" in ranking and ("point" not in ranking or "index" not in ranking):
        parsed = [parse_unit(u) for u in ranking["unit"]]
        ranking["point"] = [p for p, _ in parsed]
        ranking["index"] = [i for _, i in parsed]
    if "score" in ranking:
        ranking = ranking.iloc[np.argsort(-np.abs(ranking["score"].to_numpy(np.float64)), kind="stable")]
    return ranking.reset_index(drop=True)
