"""What the CLI commands do, as plain functions callable from Python too."""
from __future__ import annotations

import itertools
import logging
import shlex
import sys
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from .checkpoint import load_checkpoint
from .device import resolve_device
from .errors import RnnvizError
from .model import CharLSTMConfig
from .options import SampleOptions, ServerOptions
from .outputs import check_writable
from .presets import PRESETS, stdlib_files
from .text import TooMuchText, available_memory, file_bytes, read_sources
from .train import LN2, TrainConfig, train

log = logging.getLogger(__name__)


def train_command(texts, output, opts: TrainConfig, model: CharLSTMConfig, *, preset=None, resume=False,
                  force=False, encoding="utf-8", errors="strict", given=frozenset()):
    """``rnnviz train``; ``given``: the option fields set on the command line (they win over a preset's)."""
    out = Path(output)
    resolve_device(opts.device)  # a missing GPU fails before the text is read
    if resume and force:
        raise RnnvizError("--resume and --force contradict each other: pick one")
    if not out.parent.exists():
        raise RnnvizError(f"{out.parent}: no such directory for the checkpoint")
    check_writable(out.parent, f"-o {out}")
    if out.exists() and not (resume or force):
        raise RnnvizError(f"{out} exists; pass --force to overwrite it or --resume to continue it")
    if resume and not out.exists():
        raise RnnvizError(f"--resume: {out} does not exist yet")
    val_sources = None
    extra = {"command": " ".join(shlex.quote(a) for a in ["rnnviz"] + sys.argv[1:])}
    if preset:
        recipe = PRESETS[preset]
        # Options given on the command line win over the preset's.
        model = replace(model, **{k: v for k, v in recipe["model"].items() if k not in given})
        opts = replace(opts, **{k: v for k, v in recipe["train"].items() if k not in given})
        if texts:
            raise RnnvizError(f"--preset {preset} chooses its own text; give no files with it")
        train_files, heldout = stdlib_files()
        texts = [str(p) for p in train_files]
        val_sources = read_sources([str(p) for p in heldout])
        extra["preset"] = preset
        extra["heldout"] = [s.describe() for s in val_sources]
    elif not texts:
        raise RnnvizError("give text files or directories to train on (or --preset stdlib)")
    sources = _read_training_text(texts, encoding, errors)
    ckpt = load_checkpoint(out) if resume else None
    result = train(sources, opts, out, model_cfg=model, resume=ckpt,
                   val_sources=val_sources, extra_meta=extra)
    log.info(f"best validation loss {result.best_val_loss:.4f} nats/char "
             f"({result.best_val_loss / LN2:.3f} bits/char) after {result.steps} steps, "
             f"{result.chars_per_second:,.0f} chars/s; saved {out}")
    return result


TRAIN_BYTES_PER_CHAR = 32   # train holds the whole text: as str, joined, split, as ids and as streams


def _read_training_text(texts, encoding: str, errors: str):
    """Every training file, refused up front (or, for a pipe, once read past it) when it
    cannot fit in memory."""
    have = available_memory()
    if have is None:
        return read_sources(texts, encoding, errors)
    most = have // TRAIN_BYTES_PER_CHAR
    why = (f"train holds all its text in memory, about {TRAIN_BYTES_PER_CHAR} bytes per character, and "
           f"{have / 2**30:.1f} GiB is available (room for {most / 1e6:,.0f} MB of text); train on less text")
    size = file_bytes(texts)
    if size > most:
        raise RnnvizError(f"the training text is {size / 1e6:,.0f} MB: {why}")
    try:
        return read_sources(texts, encoding, errors, max_bytes=most)
    except TooMuchText as e:
        raise RnnvizError(f"{e}: {why}") from None


MAX_SAMPLE = 1_000_000      # characters per `rnnviz sample`: a bound on one command's work


def sample_text(checkpoint, options: SampleOptions | None = None, **overrides) -> str:
    return "".join(sample_stream(checkpoint, options, **overrides))


def sample_stream(checkpoint, options: SampleOptions | None = None, **overrides):
    """``prime``, then the generated characters one at a time (checked before the first).
    ``options``: rnnviz.options.SampleOptions, or its fields as keywords. Its ``clamp``
    (specs like "layer2.c[76]=3.0") and ``ablate`` (units like "layer1.c[5]"): the sample
    under that intervention (rnnviz.intervene), ``mean`` values over ``reference``
    (rnnviz.reference); with ``compare``, first the sample without it from the same seed,
    each under a header line."""
    from .intervene import ablation, parse_clamp, resolve
    o = replace(options or SampleOptions(), **overrides)
    length, temperature, prime, seed, argmax = o.length, o.temperature, o.prime, o.seed, o.argmax
    if not temperature > 0:
        raise RnnvizError(f"--temperature must be > 0, got {temperature}")
    if not 0 <= length <= MAX_SAMPLE:
        raise RnnvizError(f"--length must be 0..{MAX_SAMPLE:,}, got {length:,}")
    specs = [parse_clamp(s) for s in o.clamp] + [ablation(u) for u in o.ablate]
    if o.compare and not specs:
        raise RnnvizError("--compare shows a sample with and without an intervention: add --clamp or --ablate")
    ckpt = load_checkpoint(checkpoint, resolve_device(o.device))
    clamps = resolve(specs, ckpt, o.reference) if specs else []
    _, unknown = ckpt.vocab.encode(prime)
    if unknown:
        log.warning("%d character(s) of --prime are not in the model's vocabulary", unknown)

    def one(clamps):
        gen = torch.Generator().manual_seed(seed)
        return ckpt.model.generate(ckpt.vocab, length, prime, temperature, argmax, gen, clamps)
    if not o.compare:
        return itertools.chain([prime], one(clamps))
    said = ", ".join(map(str, clamps))
    return itertools.chain([f"--- without the intervention (seed {seed}) ---\n", prime], one(()),
                           [f"\n--- with {said} (seed {seed}) ---\n", prime], one(clamps))


def describe_file(path) -> str:
    p = Path(path)
    if not p.exists():
        raise RnnvizError(f"{p}: no such file")
    with open(p, "rb") as f:
        magic = f.read(8)
    if magic == b"\x89HDF\r\n\x1a\n":
        from .dumpfile import describe_dump
        return describe_dump(p)
    return describe_checkpoint(p)


def describe_checkpoint(path) -> str:
    ckpt = load_checkpoint(path)
    m, c = ckpt.meta, ckpt.config
    lines = [f"rnnviz checkpoint {path}",
             f"  sha256        {ckpt.sha256}",
             f"  model         {c.cell.upper()}, {c.num_layers} layers x {c.hidden_size} units, "
             f"embedding {c.embedding_size}, dropout {c.dropout}, vocabulary {c.vocab_size}",
             f"  parameters    {sum(p.numel() for p in ckpt.model.parameters()):,}"]
    if "best_val_loss" in m:
        lines.append(f"  validation    {m['best_val_loss']:.4f} nats/char = {m['best_val_bpc']:.3f} bits/char"
                     f" (unigram entropy {m.get('unigram_bits_per_char', float('nan')):.3f} bits/char)")
    corpus = m.get("corpus", [])
    if corpus:
        total = sum(s.get("chars", 0) for s in corpus)
        lines.append(f"  corpus        {len(corpus)} file(s), {total:,} chars: "
                     + ", ".join(Path(s["name"]).name for s in corpus[:5]) + (" ..." if len(corpus) > 5 else ""))
    if m.get("heldout"):
        lines.append("  held out      " + ", ".join(Path(s["name"]).name for s in m["heldout"]))
    if m.get("command"):
        lines.append(f"  command       {m['command']}")
    opts = m.get("train_options")
    if opts:
        lines.append("  options       " + ", ".join(f"{k}={v}" for k, v in opts.items()
                                                   if k not in ("threads",)))
    hist = m.get("history", [])
    if hist:
        last = hist[-1]
        lines.append(f"  trained       {last['step']} steps, {last['epoch']:.2f} epochs, {last['seconds']:.0f} s")
        lines.append("  loss history  " + "  ".join(f"{h['step']}:{h['val_loss']:.3f}" for h in hist[-8:]))
    for s in m.get("samples", []):
        lines.append(f"  sample at step {s['step']} (train loss {s['train_loss']:.3f}):")
        lines += ["    | " + line for line in s["text"].splitlines()[:6]]
    v = m.get("versions", {})
    lines.append("  versions      " + ", ".join(f"{k} {v}" for k, v in v.items()))
    return "\n".join(lines)


DEMO_DUMP = Path("dumps") / "demo.h5"
# The demo opens on the unit that best tracks this: in the shipped model a docstring cell, on a
# diverging scale, so the first page (a module docstring, then code) shows the contrast. Its quote
# cell (the best unit for in_short_string) is one-signed and pale on that page: its 99th
# percentile is three times its median outside strings.
DEMO_FEATURE = "in_long_string"


def demo(texts=None, out: str | Path = DEMO_DUMP, server: ServerOptions | None = None, serve_app: bool = True,
         encoding: str = "utf-8", errors: str = "strict") -> str:
    """Dump held-out text with the shipped model, analyze it, serve it (``server``: how, see
    :func:`rnnviz.app.serve`); returns the unit shown.

    Reuses ``out`` when it was made from the same model and the same text.
    """
    from .dump import DumpOptions, dump
    from .shipped import shipped_model_path
    from .text import read_sources

    server = server or ServerOptions()
    if serve_app:
        from .app.server import check_host
        check_host(server.host, server.port, server.allow_origins)
    model = shipped_model_path()
    what = "file(s)"
    if not texts:
        what = "held-out standard-library file(s)"
        try:
            texts = [str(p) for p in stdlib_files()[1]]
        except RnnvizError:
            raise RnnvizError("this Python ships no standard-library source files to show; "
                              "give a text file instead: rnnviz demo FILE") from None
    out = Path(out)
    sources = read_sources(texts, encoding, errors)
    if _demo_dump_matches(out, model, sources):
        log.info(f"rnnviz demo: reusing {out} (same model, same text)")
    else:
        if out.exists() and not _made_by_demo(out):
            raise RnnvizError(f"{out} exists and was not made by rnnviz demo; move it or pass --output")
        out.parent.mkdir(parents=True, exist_ok=True)
        log.info(f"rnnviz demo: recording the shipped model ({model.name}) reading "
            f"{len(sources)} {what}, {sum(len(s.text) for s in sources):,} chars -> {out}")
        dump(model, texts, out, DumpOptions(force=True, command="rnnviz demo",
                                             encoding=encoding, errors=errors))
    unit = _analyzed_unit(out)
    if serve_app:
        from .app.server import serve
        log.info(f"rnnviz demo: opening the app on {unit}, the unit that best tracks '{DEMO_FEATURE}'")
        serve([out], initial_unit=unit, initial_feature=DEMO_FEATURE, **asdict(server))
    return unit


def _analyzed_unit(path: Path) -> str:
    """The unit with the strongest score for DEMO_FEATURE, analysing the dump first if needed."""
    from .analyze import analyze_dump
    from .dumpfile import open_dump
    with open_dump(path) as d:
        ranking = None if d.analysis is None else d.analysis.table("ranking")
    if ranking is None or DEMO_FEATURE not in set(ranking["feature"]):
        log.info(f"rnnviz demo: ranking every unit against the text features (results stored in {path})")
        ranking = analyze_dump(path).ranking          # every character, exactly
    rows = ranking[ranking["feature"] == DEMO_FEATURE]
    best = rows.iloc[int(np.abs(rows["score"].to_numpy()).argmax())]
    return str(best["unit"])


def _demo_dump_matches(path: Path, model: Path, sources) -> bool:
    if not path.exists():
        return False
    from .checkpoint import file_sha256
    from .dumpfile import open_dump
    try:
        with open_dump(path) as d:
            same_model = d.attrs.get("checkpoint_sha256") == file_sha256(model)
            return same_model and list(d.sources["sha256"]) == [s.sha256 for s in sources]
    except (RnnvizError, OSError, KeyError):
        return False


def _made_by_demo(path: Path) -> bool:
    from .dumpfile import header_attrs
    try:
        return str(header_attrs(path).get("command", "")).startswith("rnnviz demo")
    except (RnnvizError, OSError):
        return False
