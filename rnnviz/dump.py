"""``rnnviz dump``: record every cell and gate of a checkpoint over text files into HDF5.

The file layout is docs/dump-format.md, owned by rnnviz.dumpfile (which writes every
array); readers open dumps with ``rnnviz.open`` (:func:`rnnviz.dumpfile.open_dump`).

    with rnnviz.open("dumps/demo.h5") as d: c = d["layer1.c"][:, 17]
"""
from __future__ import annotations

import json
import logging
import os
import queue
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .backends import make_backend
from .backends.pytorch import ANCHOR
from .checkpoint import load_checkpoint, versions
from .device import resolve_device
from .dumpfile import DumpWriter, describe_dump, open_dump
from .errors import RnnvizError
from .names import expand_selection, parse_point, point_name
from .options import DumpOptions
from .outputs import check_space, discard_broken, disk_full, hold_partial, is_disk_full
from .text import read_sources

log = logging.getLogger(__name__)
PLAN_VERSION = 2  # in the resume key: a .partial made under another plan is not resumed
# Progress is saved (and the file flushed) this often: a kill redoes at most this much work,
# and partly filled HDF5 chunks of files recorded side by side are not rewritten every chunk.
FLUSH_SECONDS = 1.0

__all__ = ["DumpOptions", "DumpResult", "dump", "plan", "open_dump", "describe_dump"]


@dataclass
class Chunk:
    """One chunk of work: rows = sources side by side (in char-axis order), steps t0..t1 of each."""
    index: int
    lanes: list[int]
    t0: int
    t1: int

    def carry(self, state, before: Chunk | None):
        """The recurrent state this chunk starts from, given ``state`` after chunk ``before``:
        zeros (None) at the start of its sources, else the rows of the sources still running."""
        if self.t0 == 0:
            return None
        keep = torch.tensor([before.lanes.index(s) for s in self.lanes], device=state[0].device)
        return tuple(s.index_select(-2, keep) for s in state)  # the lane axis


@dataclass
class DumpResult:
    path: Path
    n_chars: int
    unknown_chars: int
    seconds: float
    size_bytes: int
    backend: str = "pytorch"  # the recorder that ran: "kernel" (compiled) or "pytorch" (rnnviz.backends)
    no_kernel: str = ""       # why the compiled kernel could not run here (a GRU, CUDA), if so


def plan(lengths: list[int], batch_size: int, chunk_chars: int, anchor: int = ANCHOR) -> list[Chunk]:
    """The fixed order of work (PLAN_VERSION): groups of ``batch_size`` sources of similar
    length (so little is padded), each cut in time into chunks of about ``chunk_chars``
    characters."""
    order = sorted((s for s, n in enumerate(lengths) if n > 0), key=lambda s: -lengths[s])
    chunks: list[Chunk] = []
    for g in range(0, len(order), batch_size):
        group = sorted(order[g:g + batch_size])  # rows in char-axis order
        longest, t0 = max(lengths[s] for s in group), 0
        while t0 < longest:
            lanes = [s for s in group if lengths[s] > t0]
            # As sources end, fewer lanes and longer chunks: each about chunk_chars.
            steps = max(anchor, chunk_chars // len(lanes) // anchor * anchor)
            chunks.append(Chunk(len(chunks), lanes, t0, min(t0 + steps, longest)))
            t0 += steps
    return chunks


def dump(checkpoint: str | os.PathLike, texts: list, out: str | os.PathLike | None = None,
         options: DumpOptions | None = None) -> DumpResult:
    """Record ``checkpoint`` over the text files ``texts`` into ``out`` (default
    dumps/<stem of the first file>.h5); each file is one sequence from a zero state."""
    opt = options or DumpOptions()
    target = _target(texts, out, opt)
    partial = target.with_name(target.name + ".partial")
    kept = (f"nothing else was changed; the unfinished {partial.name} was removed (HDF5 cannot continue "
            f"a file after a failed write): free some space and run the dump again")
    with hold_partial(partial, target), disk_full(partial, kept):
        return _dump(checkpoint, texts, target, partial, opt)


def _dump(checkpoint, texts: list, target: Path, partial: Path, opt: DumpOptions) -> DumpResult:
    started = time.perf_counter()
    _check_partial(partial, opt)
    device = resolve_device(opt.device)
    ckpt = load_checkpoint(checkpoint, device)
    cfg = ckpt.config
    points = expand_selection(opt.record, cfg.num_layers, opt.layers, cfg.cell)
    if opt.dtype not in ("float16", "float32"):
        raise RnnvizError(f"--dtype: expected float16 or float32, found {opt.dtype!r}")
    if opt.compression not in ("none", "lzf", "gzip"):
        raise RnnvizError(f"--compression: expected none, lzf or gzip, found {opt.compression!r}")
    if not 1 <= opt.topk <= len(ckpt.vocab):
        raise RnnvizError(f"--topk: expected 1..{len(ckpt.vocab)} (the vocabulary size), found {opt.topk}")
    if opt.batch_size < 1 or opt.chunk_chars < 1:
        raise RnnvizError("--batch-size and --chunk-chars must be positive")
    if opt.max_chars is not None and opt.max_chars < 1:
        raise RnnvizError(f"--max-chars: expected a positive number, found {opt.max_chars}")
    text = _Text(read_sources(texts, opt.encoding, opt.errors, max_chars=opt.max_chars), ckpt.vocab, opt.max_chars)
    if text.unknown:
        log.warning("%s characters not in the model's vocabulary were fed as the unknown symbol (id 0)",
                    f"{text.unknown:,}")
    chunks = plan(text.lengths, opt.batch_size, opt.chunk_chars)
    key = json.dumps({"checkpoint_sha256": ckpt.sha256, "sources": [s.sha256 for s in text.sources],
                      "lengths": text.lengths, "points": points, "dtype": opt.dtype,
                      "topk": opt.topk, "compression": opt.compression,
                      "plan": [opt.batch_size, opt.chunk_chars, ANCHOR, PLAN_VERSION]})
    if opt.compression == "none":
        per_char = 4 + 4 + 4 + 8 * opt.topk + len(points) * cfg.hidden_size * np.dtype(opt.dtype).itemsize
        have = partial.stat().st_size if opt.resume else 0
        check_space(partial, max(0, text.n * per_char - have), "the dump")
    if opt.resume:
        f, done, h, c = DumpWriter.resume(partial, key, locking=False)    # hold_partial locks it
        state = tuple(torch.from_numpy(a).to(device) for a in ((h, c) if cfg.cell == "lstm" else (h,)))
    else:                   # the locked .partial is overwritten in place, never deleted
        f, done, state = _create(partial, key, points, text, ckpt, checkpoint, opt), 0, None
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, opt.threads))
    try:
        with torch.inference_mode():
            backend = _record(f, chunks, done, state, text, ckpt.model, points, opt)
        f.finish(target)
    except BaseException as e:
        if not is_disk_full(e):
            f.close()
            log.info("kept the unfinished %s; continue it with --resume", partial)
            raise
        # HDF5 may have written some of its bookkeeping and not the rest: the progress can
        # then run ahead of the data (measured: --resume gave 36% of rows as zeros). Not kept.
        discard_broken(f, partial)
        raise
    finally:
        torch.set_num_threads(threads)
    no_kernel = ("the compiled kernel steps LSTMs only" if cfg.cell != "lstm" else
                 f"the compiled kernel is CPU-only; this ran on {device}" if device.type != "cpu" else "")
    return DumpResult(target, text.n, text.unknown, time.perf_counter() - started,
                      target.stat().st_size, backend, no_kernel)


def _target(texts: list, out, opt: DumpOptions) -> Path:
    """Where the dump goes; refuses to overwrite anything without --force."""
    if not texts:
        raise RnnvizError("no input files given")
    if out is None:
        target = Path("dumps") / (Path(texts[0]).stem + ".h5")
        target.parent.mkdir(exist_ok=True)
    else:
        target = Path(out)
    if not target.parent.is_dir():
        raise RnnvizError(f"{target}: folder {target.parent} does not exist; create it first")
    if target.is_dir():
        raise RnnvizError(f"{target}: is a directory, expected a file name such as dumps/text.h5")
    if target.exists() and not opt.force:
        raise RnnvizError(f"{target} exists; pass --force to overwrite it")
    return target


def _check_partial(partial: Path, opt: DumpOptions) -> None:
    """Under the lock: an interrupted dump is continued or replaced only when asked."""
    unfinished = partial.exists() and partial.stat().st_size > 0   # empty: just created by the lock
    if opt.resume and not unfinished:
        raise RnnvizError(f"nothing to resume: {partial} does not exist")
    if unfinished and not (opt.resume or opt.force):
        raise RnnvizError(f"{partial} exists (an interrupted dump): pass --resume to continue it "
                          f"or --force to start over")


class _Text:
    """The sources as one char axis: codes, vocabulary ids and where each source starts."""

    def __init__(self, sources, vocab, max_chars: int | None):
        self.sources, self.lengths, codes, ids, self.unknown = sources, [], [], [], 0
        budget = sys.maxsize if max_chars is None else max_chars
        for src in sources:
            piece = src.text[:budget]
            budget -= len(piece)
            i, unknown = vocab.encode(piece)
            codes.append(np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32))
            ids.append(i.astype(np.int32))
            self.lengths.append(len(piece))
            self.unknown += unknown
        self.codes, self.ids = np.concatenate(codes), np.concatenate(ids)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)
        self.n = int(self.codes.size)

    def batch(self, chunk: Chunk) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) ids fed to the model and the ids that follow them (-1: end of source)."""
        B, T = len(chunk.lanes), chunk.t1 - chunk.t0
        ids, nxt = np.zeros((B, T), np.int64), np.full((B, T), -1, np.int64)
        for row, s in enumerate(chunk.lanes):
            n = min(chunk.t1, self.lengths[s]) - chunk.t0
            a = self.starts[s] + chunk.t0
            ids[row, :n] = self.ids[a:a + n]
            m = min(n, self.lengths[s] - chunk.t0 - 1)
            nxt[row, :m] = self.ids[a + 1:a + 1 + m]
        return ids, nxt

    def rows(self, chunk: Chunk):
        """(row in the batch, first char-axis index, count) of each source in ``chunk``."""
        for row, s in enumerate(chunk.lanes):
            yield row, int(self.starts[s] + chunk.t0), min(chunk.t1, self.lengths[s]) - chunk.t0


def _create(path: Path, key: str, points: list[str], text: _Text, ckpt, checkpoint,
            opt: DumpOptions) -> DumpWriter:
    """A new .partial file with every attribute and (empty) dataset of docs/dump-format.md."""
    cfg = ckpt.config
    header = {"num_layers": cfg.num_layers, "unknown_chars": text.unknown, "vocab": ckpt.vocab.chars,
              "model_config": cfg.to_dict(), "checkpoint": str(checkpoint), "checkpoint_sha256": ckpt.sha256,
              "versions": versions(), "command": opt.command}
    sources = pd.DataFrame({
        "name": [s.name for s in text.sources], "start": text.starts,
        "length": np.asarray(text.lengths, np.int64),
        "size_bytes": np.asarray([s.size_bytes for s in text.sources], np.int64),
        "sha256": [s.sha256 for s in text.sources]})
    return DumpWriter.create(path, header, text.codes, text.ids, sources, points, hidden_size=cfg.hidden_size,
                             topk=opt.topk, dtype=opt.dtype, compression=opt.compression,
                             progress=(cfg.num_layers, min(opt.batch_size, len(text.sources))), resume_key=key,
                             locking=False)   # hold_partial locks it


def _record(f: DumpWriter, chunks: list[Chunk], done: int, state, text: _Text, model,
            points: list[str], opt: DumpOptions) -> str:
    """A pipeline of threads joined by queues of 2, which bound the memory: this thread
    runs layer 0 over chunk after chunk; one thread per further layer runs its layer on
    each chunk the layer below has finished (a wavefront: on a busy layer-0 thread the
    other layers cost no time); a pool of ``opt.workers`` threads gets each chunk's
    arrays (the time-parallel part of the pure-PyTorch backend) and predictions; a writer
    thread writes them in order. Returns the backend's name."""
    from tqdm import tqdm
    backend = make_backend(model.rnn, kernel=opt.kernel, embedding=model.embed.weight,
                           dtype=getattr(torch, opt.dtype), reuse_buffers=True)
    layers, device = backend.num_layers, model.embed.weight.device
    wanted: dict[int, list[str]] = {}
    for point in points:
        layer, kind = parse_point(point)
        wanted.setdefault(layer, []).append(kind)
    failure: list[BaseException] = []
    stop = threading.Event()
    inbox = [queue.Queue(maxsize=2) for _ in range(layers)]  # chunks for layer l (l >= 1)
    todo = queue.Queue(maxsize=2)  # for the writer
    pool = ThreadPoolExecutor(max_workers=max(1, opt.workers), thread_name_prefix="rnnviz-expand")
    chars_done = sum(n for u in chunks[:done] for _, _, n in text.rows(u))
    bar = tqdm(total=text.n, initial=chars_done, unit="char", unit_scale=True, file=sys.stderr,
               disable=not opt.progress, desc="dump", smoothing=0.1)

    def stage(layer: int, items) -> None:
        """Run ``layer`` on each (chunk, runs so far) in order, carrying this layer's state."""
        carried = None if state is None else tuple(s[layer] for s in state)
        before = chunks[done - 1] if done else None
        for chunk, runs in items:
            below = runs[-1] if runs else torch.from_numpy(text.batch(chunk)[0]).to(device)
            runs.append(backend.layer(layer, below, chunk.carry(carried, before)))
            carried, before = runs[-1].state, chunk
            if layer + 1 < layers:
                sent = _put(inbox[layer + 1], (chunk, runs), stop)
            else:
                job = pool.submit(_expand, model, text, chunk, runs, wanted, opt)
                state_after = tuple(torch.stack([r.state[k] for r in runs]).cpu() for k in range(len(runs[0].state)))
                sent = _put(todo, (chunk, job, state_after), stop)
            if not sent:
                return
        _put(inbox[layer + 1] if layer + 1 < layers else todo, None, stop)

    threads = [threading.Thread(target=_guarded, daemon=True, args=(stage, failure, stop, layer,
                                                                    _drain(inbox[layer], stop)))
               for layer in range(1, layers)]
    threads.append(threading.Thread(target=_guarded, daemon=True,
                                    args=(_writer, failure, stop, f, _drain(todo, stop), text, bar)))
    for thread in threads:
        thread.start()
    try:
        stage(0, ((chunk, []) for chunk in chunks[done:]))
        threads[-1].join()
    finally:
        stop.set()
        pool.shutdown(cancel_futures=True)
        for thread in threads:
            while thread.is_alive():
                thread.join(0.2)
        bar.close()
    if failure:
        raise failure[0]
    return backend.name


def _guarded(fn, failure: list, stop: threading.Event, *args) -> None:
    """Run a pipeline thread; an error stops the pipeline and goes to the main thread."""
    try:
        with torch.inference_mode():  # grad mode is per thread
            fn(*args)
    except BaseException as e:
        failure.append(e)
        stop.set()


def _put(box: queue.Queue, item, stop: threading.Event) -> bool:
    """Hand ``item`` on unless the pipeline has stopped: never blocks forever."""
    while not stop.is_set():
        try:
            box.put(item, timeout=0.2)
            return True
        except queue.Full:
            pass
    return False


def _drain(box: queue.Queue, stop: threading.Event):
    """The items put in ``box`` up to None, waking up to notice a stop (Ctrl-C, an error)."""
    while not stop.is_set():
        try:
            item = box.get(timeout=0.2)
        except queue.Empty:
            continue
        if item is None:
            return
        yield item


def _expand(model, text: _Text, chunk: Chunk, runs: list, wanted: dict, opt: DumpOptions) -> dict:
    """One chunk's arrays as stored, by the writer's names: recorded points and predictions."""
    out = {}
    with torch.inference_mode():  # grad mode is per thread
        for layer, kinds in wanted.items():
            for kind, a in runs[layer].points(kinds).items():
                out[point_name(layer, kind)] = a.cpu().numpy()
        logp = torch.log_softmax(model.head(runs[-1].h), dim=-1).cpu()  # (B, T, V)
        nxt = torch.from_numpy(text.batch(chunk)[1])
        loss = -logp.gather(-1, nxt.clamp(min=0)[..., None])[..., 0]
        loss[nxt < 0] = float("nan")
        top = logp.topk(opt.topk, dim=-1)
        out["loss"] = loss.numpy()
        out["topk_ids"] = top.indices.to(torch.int32).numpy()
        out["topk_probs"] = top.values.exp().numpy()
    return out


def _writer(f: DumpWriter, items, text: _Text, bar) -> None:
    """Write each chunk in order and, every FLUSH_SECONDS, the progress that --resume reads."""
    flushed = 0.0
    for chunk, job, state in items:
        for name, a in job.result().items():
            f.write(name, a, text.rows(chunk))
        if time.monotonic() - flushed >= FLUSH_SECONDS:
            h = state[0].numpy()  # a GRU or RNN has no c: its slot holds zeros
            f.save_progress(chunk.index + 1, h, state[1].numpy() if len(state) > 1 else np.zeros_like(h))
            flushed = time.monotonic()
        bar.update(sum(n for _, _, n in text.rows(chunk)))
