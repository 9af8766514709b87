"""Reading a finished dump: :class:`Dump`, what ``rnnviz.open`` returns.

    with rnnviz.open("dumps/demo.h5") as d:
        d["layer1.c"][:, 42]; d.unit("layer2.c[76]"); d.ranking; d.show("layer2.c[76]", 0, 2000)

Everything is read when asked for: a state array is an h5py dataset, sliced like one.
"""
from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from ..errors import RnnvizError
from ..names import PointArrays, expand_selection, parse_point, parse_unit
from .analysis import GROUP, AnalysisGroup, write_analysis
from .groups import replace_group
from .direct import ChunkReader, unit_by_unit
from .schema import CODES, IDS, SOURCES, DumpLocked, dataset_path, open_checked
from .tables import json_attr, read_table


class Dump(PointArrays):
    """An open rnnviz dump: a mapping from recorded points (``layer0.c``) to lazy (N, H) arrays."""

    def __init__(self, path, mode: str = "r"):
        if mode not in ("r", "r+"):
            raise RnnvizError(f"mode: expected 'r' or 'r+', found {mode!r}")
        self.path, self.mode = Path(path), mode
        self._f = open_checked(path, mode)
        try:
            self._read_header()
        except (KeyError, ValueError, TypeError) as e:
            self._f.close()
            raise RnnvizError(f"{path}: damaged dump ({e}); record it again with rnnviz dump") from None
        except BaseException:
            self._f.close()
            raise

    def _read_header(self) -> None:
        f = self._f
        for key in (CODES, SOURCES) + tuple(dataset_path(p) for p in ("loss", "topk_ids", "topk_probs")):
            if key not in f:
                raise RnnvizError(f"{self.path}: missing /{key.lstrip('/')}, which every dump has "
                                  f"(docs/dump-format.md); record it again with rnnviz dump")
        self.n_chars = int(f[CODES].shape[0])
        self.num_layers = int(f.attrs["num_layers"])
        self.hidden_size = int(f.attrs["hidden_size"])
        self.topk = int(f[dataset_path("topk_ids")].shape[1])
        self.dtype = str(f.attrs.get("dtype", "float32"))
        self.vocab: list[str] = json_attr(f, "vocab", [])
        self.recorded: list[str] = json_attr(f, "recorded", [])
        # The model's cell (rnnviz.model.CELLS); dumps made before GRU and RNN cells are LSTMs.
        self.cell: str = json_attr(f, "model_config", {}).get("cell", "lstm")
        # Points listed but missing are left out here; analyze names them (a damaged dump).
        self.points = [p for p in self.recorded if dataset_path(p) in f]

    # ----- the file
    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> Dump:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<rnnviz dump {self.path}: {self.n_chars:,} chars in {len(self.sources)} source(s), "
                f"{self.num_layers} layer(s) x {self.hidden_size} units, {len(self.points)} points>")

    @cached_property
    def attrs(self) -> dict:
        """The root attributes (docs/dump-format.md), JSON ones decoded."""
        out = {}
        for key, value in self._f.attrs.items():
            value = value.decode() if isinstance(value, bytes) else value
            out[key] = json_attr(self._f, key) if key in ("recorded", "vocab", "model_config", "versions") \
                else (value.item() if isinstance(value, np.generic) else value)
        return out

    # ----- the mapping of points
    def __getitem__(self, point: str) -> h5py.Dataset:
        if point not in self.points:
            raise KeyError(f"{point!r}: this dump recorded {', '.join(self.points) or 'no points'}")
        return self._f[dataset_path(point)]

    def __iter__(self):
        return iter(self.points)

    def __len__(self) -> int:
        return len(self.points)

    def unit(self, name: str) -> np.ndarray:
        """(N,) float32 values of one unit, e.g. ``"layer1.c[42]"``, over the whole text."""
        point, index = self.check_unit(name)
        return self[point][:, index].astype(np.float32)

    def check_unit(self, name: str) -> tuple[str, int]:
        """'layer1.c[42]' -> ('layer1.c', 42), refusing units this dump does not hold."""
        return check_unit(name, self.points, self.hidden_size)

    def select(self, spec: str | None) -> list[str]:
        """Recorded points named by ``spec`` (``"c,h"``, ``"layer1.c,gates"``; None: all of them),
        refusing any this dump did not record."""
        if not spec:
            return list(self.recorded)
        wanted = expand_selection(spec, self.num_layers, cell=self.cell)
        missing = [p for p in wanted if p not in self.recorded]
        if missing:
            raise RnnvizError(f"{self.path}: {', '.join(missing)} not recorded in this dump; it has "
                              f"{', '.join(self.recorded) or 'no states'}")
        return wanted

    def rows(self, point: str, blocks) -> np.ndarray:
        """(n, H) rows of ``point`` in the given (start, length) blocks, in the stored dtype."""
        ds = self[point]
        out = np.empty((sum(length for _, length in blocks), ds.shape[1]), ds.dtype)
        at = 0
        try:
            for start, length in blocks:
                ds.read_direct(out, np.s_[start:start + length], np.s_[at:at + length])
                at += length
        except (OSError, ValueError) as e:
            raise RnnvizError(f"{self.path}: cannot read {ds.name} ({str(e).splitlines()[0]}); the file "
                              f"looks truncated or damaged") from None
        return out

    def reader(self, point: str, blocks):
        """``read(lo, hi, cols=None, out=None, by_unit=False)``: rows lo:hi of the characters in
        the (start, length) ``blocks`` laid end to end (all of ``cols``, increasing, or every
        unit), in the stored dtype, into ``out`` when it has that shape; what the exact
        analysis streams over. ``by_unit``: laid out unit by unit (F order), as the analysis
        kernel takes them, where the chunks are read directly."""
        ds = self[point]
        starts = np.cumsum([0] + [length for _, length in blocks])
        direct = ChunkReader.open(ds, self.path) if self.mode == "r" else None
        width = ds.chunks[1] if ds.chunks else ds.shape[1]

        def read(lo: int, hi: int, cols=None, out: np.ndarray | None = None, by_unit: bool = False) -> np.ndarray:
            shape = (hi - lo, ds.shape[1] if cols is None else len(cols))
            by_unit = by_unit and direct is not None
            fits = out is not None and out.shape == shape and out.dtype == ds.dtype and (
                unit_by_unit(out) if by_unit else out.flags.c_contiguous)
            if not fits:
                out = np.empty(shape, ds.dtype, order="F" if by_unit else "C")
            if cols is not None and direct is None:   # (first, end) index ranges of cols, split where a
                # whole chunk lies between
                gaps = np.flatnonzero(np.diff(np.asarray(cols) // width) > 1) + 1
                spans = list(zip([0, *gaps], [*gaps, len(cols)]))
            b, at = int(np.searchsorted(starts, lo, side="right")) - 1, lo
            try:
                while at < hi:
                    begin, length = blocks[b]
                    a, e = begin + at - starts[b], begin + min(length, hi - starts[b])
                    part = out[at - lo:at - lo + e - a]
                    if direct is not None and (part.flags.c_contiguous or unit_by_unit(part)):
                        direct.read(a, e, cols, part)
                    elif direct is not None:     # rows of a unit-by-unit buffer: read, then copied in
                        part[:] = direct.read(a, e, cols)
                    elif cols is None:
                        ds.read_direct(out, np.s_[a:e], np.s_[at - lo:at - lo + e - a])
                    else:     # plain slices over runs of columns (h5py's lists are slow), one
                        # per group of chunks that holds some: the chunks between are not read
                        for i, j in spans:
                            c0, c1 = int(cols[i]), int(cols[j - 1]) + 1
                            out[at - lo:at - lo + e - a, i:j] = ds[a:e, c0:c1][:, np.asarray(cols[i:j]) - c0]
                    at, b = at + e - a, b + 1
            except (OSError, ValueError) as err:
                raise RnnvizError(f"{self.path}: cannot read {ds.name} ({str(err).splitlines()[0]}); the file "
                                  f"looks truncated or damaged") from None
            return out
        read.direct = direct is not None     # read on every core already: nothing to overlap
        read.chunk_units = width             # units per chunk: reading whole chunks' units costs least
        read.into = True                     # takes ``out``: a buffer to fill (a fresh one costs page faults)
        return read

    # ----- text and predictions
    @cached_property
    def text(self) -> str:
        """The whole text, all sources run together (``sources`` says where each starts)."""
        return self.text_slice(0, self.n_chars, errors="strict")

    def text_slice(self, start: int, stop: int, errors: str = "replace") -> str:
        start, stop = max(0, start), min(self.n_chars, stop)
        if stop <= start:
            return ""
        try:
            return self.codes(start, stop).astype("<u4").tobytes().decode("utf-32-le", errors=errors)
        except UnicodeDecodeError:
            raise RnnvizError(f"{self.path}: /text/codes holds values that are not Unicode code points") from None

    def codes(self, start: int = 0, stop: int | None = None) -> np.ndarray:
        """Unicode code points of chars [start, stop)."""
        return self._f[CODES][max(0, start):self.n_chars if stop is None else min(self.n_chars, stop)]

    @property
    def ids(self) -> h5py.Dataset:
        return self._f[IDS]

    @cached_property
    def sources(self) -> pd.DataFrame:
        """One row per input file: name, start, length, size_bytes, sha256 (str columns)."""
        return read_table(self._f[SOURCES])

    @property
    def loss(self) -> h5py.Dataset:
        return self._f[dataset_path("loss")]

    @property
    def topk_ids(self) -> h5py.Dataset:
        return self._f[dataset_path("topk_ids")]

    @property
    def topk_probs(self) -> h5py.Dataset:
        return self._f[dataset_path("topk_probs")]

    # ----- analysis
    @property
    def analysis(self) -> AnalysisGroup | None:
        """/analysis (see rnnviz.dumpfile.analysis), or None before ``rnnviz analyze``."""
        g = self._f.get(GROUP)
        return AnalysisGroup(g) if isinstance(g, h5py.Group) else None

    def _analysed(self) -> AnalysisGroup:
        a = self.analysis
        if a is None:
            raise RnnvizError(f"{self.path}: not analysed yet; run `rnnviz analyze {self.path}`")
        return a

    @property
    def ranking(self) -> pd.DataFrame:
        """Every unit scored against every feature (docs/dump-format.md, `ranking` columns)."""
        table = self._analysed().table("ranking")
        if table is None:
            raise RnnvizError(f"{self.path}: the analysis holds no ranking; run `rnnviz analyze` again")
        return table

    @property
    def features(self) -> pd.DataFrame:
        """One column per text feature, one row per character (``feature_kinds`` has their kinds)."""
        a = self._analysed()
        return pd.DataFrame({name: a.feature(name)[()] for name in a.feature_kinds})

    @property
    def feature_kinds(self) -> dict[str, str]:
        a = self.analysis
        return {} if a is None else a.feature_kinds

    def write_analysis(self, **parts) -> None:
        """Replace /analysis (``mode="r+"`` only); see :func:`rnnviz.dumpfile.analysis.write_analysis`."""
        if self.mode != "r+":
            raise RnnvizError(f"{self.path}: opened read-only; open it with mode='r+' to write the analysis")
        write_analysis(self._f, n_chars=self.n_chars, **parts)

    def group(self, name: str) -> AnalysisGroup | None:
        """A result group other commands add, such as /errors (docs/dump-format.md): its
        tables and arrays are read when asked for. None when absent."""
        g = self._f.get(name)
        return AnalysisGroup(g) if isinstance(g, h5py.Group) else None

    def write_group(self, name: str, **parts) -> None:
        """Replace the result group ``name`` (``mode="r+"`` only); see
        :func:`rnnviz.dumpfile.groups.replace_group`."""
        if self.mode != "r+":
            raise RnnvizError(f"{self.path}: opened read-only; open it with mode='r+' to write /{name}")
        if name in ("text", "states", "predictions", "sources", GROUP):
            raise RnnvizError(f"/{name} is not a result group")
        replace_group(self._f, name, **parts)

    # ----- pictures
    def show(self, unit: str, start: int = 0, stop: int = 2000, scale: str = "auto"):
        """Chars [start, stop) coloured by ``unit`` as the app colours them; shows inline in
        Jupyter (plain HTML with inline styles: no script, nothing fetched)."""
        from ..render.figure import Span
        return Span.from_dump(self, unit, start, stop, scale)

    def source_breaks(self, start: int, stop: int) -> list[int]:
        """Offsets into chars [start, stop) where a source other than the first one begins."""
        firsts = self.sources["start"].to_numpy()
        return (firsts[(firsts > start) & (firsts < stop)] - start).tolist()

    def unit_stats(self, name: str) -> dict:
        """``name``'s distribution over the whole text (p1, p50, p99, min, max, n): from
        /analysis/units, else computed from the states (not written): what colours it."""
        from ..render.scales import computed_stats, stored_stats
        a = self.analysis
        units = None if a is None else a.table("units")
        if units is not None:
            stats = stored_stats(units[units["unit"] == name], a.options)
            if name in stats:
                return stats[name]
        point, index = self.check_unit(name)
        ds = self[point]
        return computed_stats(lambda lo, hi: ds[lo:hi, index:index + 1], self.n_chars, 1, ds.dtype)[0]


def check_unit(name: str, points: list[str], hidden_size: int) -> tuple[str, int]:
    """'layer1.c[42]' -> ('layer1.c', 42), refusing units outside ``points`` x ``hidden_size``."""
    point, index = parse_unit(name)
    if point not in points:
        raise RnnvizError(f"{name}: this dump recorded {', '.join(points)}, not {point}")
    if index >= hidden_size:
        raise RnnvizError(f"{name}: index out of range, the layers have {hidden_size} units")
    return point, index


def open_dump(path: str | os.PathLike, mode: str = "r") -> Dump:
    """Open a finished rnnviz dump, checked (see :func:`rnnviz.dumpfile.schema.open_checked`);
    ``mode="r+"`` to write /analysis. A file that another process (``rnnviz serve``) reads
    opens read-only as well; :class:`DumpLocked` when one writes it."""
    return Dump(path, mode)


def describe_dump(path: str | os.PathLike) -> str:
    """A few lines for ``rnnviz info``: what the dump holds and how it was made."""
    path = Path(path)
    with open_dump(path) as d:
        n, a, sources = d.n_chars, d.attrs, d.sources
        loss = d.loss[()]
        config = a.get("model_config", {})
        lines = [
            f"rnnviz dump (schema {a['schema_version']}): {path}",
            f"  characters   {n:,} in {len(sources)} source(s); {a['unknown_chars']:,} not in the vocabulary",
            f"  model        {d.cell.upper()}, {d.num_layers} layers x {d.hidden_size} units, "
            f"vocab {config.get('vocab_size', '?')}; "
            f"checkpoint {a['checkpoint']} (sha256 {str(a['checkpoint_sha256'])[:12]})",
            f"  recorded     {len(d.recorded)} points as {d.dtype}: {_summarize_points(d.recorded)}",
            f"  predictions  top-{d.topk}; mean loss "
            f"{np.nanmean(loss) if np.isfinite(loss).any() else float('nan'):.4f} nats/char",
            f"  file         {path.stat().st_size:,} bytes ({path.stat().st_size / max(n, 1):,.0f} "
            f"bytes/char), compression {a['compression']}",
            f"  created      {a['created']} by: {a['command']}",
        ]
        for row in sources.head(5).itertuples():
            lines.append(f"  source       {row.name} ({row.length:,} chars from {row.start:,})")
        if len(sources) > 5:
            lines.append(f"  ...          and {len(sources) - 5} more sources")
        if d.analysis is not None:
            lines.append(f"  analysis     present (created {d.analysis.created or '?'})")
        lines += _result_group_lines(d)
    return "\n".join(lines)


def _result_group_lines(d: Dump) -> list[str]:
    """rnnviz info's lines for /ablation and /errors (docs/dump-format.md), where present."""
    lines = []
    ablation = d.group("ablation")
    if ablation is not None:
        o, effects = ablation.options, ablation.table("effects")
        asked = 0 if effects is None else int((~effects["random"].astype(bool)).sum())
        engines = ", ".join(f"{name} {n:,}" for name, n in o.get("engines", {}).items())
        lines.append(f"  ablation     {asked:,} target(s) and {len(effects) - asked if effects is not None else 0:,} "
                     f"random ones; per-character change of {', '.join(o.get('per_char', [])) or 'none'}"
                     f"{f'; engines: {engines}' if engines else ''} (created {ablation.created or '?'})")
    errors = d.group("errors")
    if errors is not None:
        table = errors.table("breakdown")
        total = None if table is None else table[table["category"] == "all errors"]
        what = (f"{int(total['errors'].iloc[0]):,} errors ({float(total['share_of_chars'].iloc[0]):.1%} of the "
                f"predicted characters, p < {errors.options.get('threshold', '?')})"
                if total is not None and len(total) else "present")
        lines.append(f"  errors       {what} (created {errors.created or '?'})")
    return lines


def _summarize_points(points: list[str]) -> str:
    """['layer0.c', 'layer0.h', 'layer1.c', 'layer1.h'] -> 'c, h in layers 0-1'."""
    by_kind: dict[str, list[int]] = {}
    for p in points:
        layer, kind = parse_point(p)
        by_kind.setdefault(kind, []).append(layer)
    groups: dict[tuple, list[str]] = {}
    for kind, layers in by_kind.items():
        groups.setdefault(tuple(layers), []).append(kind)
    return "; ".join(f"{', '.join(kinds)} in layers {','.join(map(str, layers))}"
                     for layers, kinds in groups.items()) or "nothing"


__all__ = ["Dump", "DumpLocked", "check_unit", "open_dump", "describe_dump"]
