"""The ``rnnviz`` command line: parse, call one library function, turn expected
failures into a one-line error and a non-zero exit."""
from __future__ import annotations

import functools
import logging
import os
import sys

import click

from . import __version__
from .errors import RnnvizError


_hdf5_write_failed = False


def user_errors(fn):
    """Expected failures become ``Error: ...`` on one line and exit code 1; Ctrl-C exits 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        global _hdf5_write_failed
        try:
            return fn(*args, **kwargs)
        except RnnvizError as e:
            from .outputs import DiskFull
            _hdf5_write_failed = isinstance(e, DiskFull)
            raise click.ClickException(str(e)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
        except (OSError, UnicodeError) as e:
            raise click.ClickException(_one_line(e)) from None
    return wrapper


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.filename:
        return f"{e.filename}: {e.strerror or e}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="rnnviz")
def cli():
    """Record, rank and explore the units of character-level LSTMs, GRUs and RNNs.

    \b
    Typical path:  rnnviz train corpus/ -o model.pt
                   rnnviz dump model.pt text.py -o dumps/text.h5
                   rnnviz analyze dumps/text.h5
                   rnnviz serve dumps/text.h5
    """
    _log_to_stderr()


class _Stderr(logging.Handler):
    """The library's log records on stderr, as the CLI shows them: notes as they are,
    ``warning: ...`` for warnings."""

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        click.echo(message, err=True)


def _log_to_stderr() -> None:
    logger = logging.getLogger("rnnviz")
    if not any(isinstance(h, _Stderr) for h in logger.handlers):
        logger.addHandler(_Stderr())
    logger.setLevel(logging.INFO)


def main():
    try:
        cli(prog_name="rnnviz")
    except SystemExit as e:
        if _hdf5_write_failed:
            # After a write that failed for want of space, HDF5 can crash while Python tears
            # down (a segfault after our one line, measured): leave without the teardown.
            sys.stderr.flush()
            os._exit(e.code if isinstance(e.code, int) else 1)
        raise


_ENCODING = click.option("--encoding", default="utf-8", show_default=True, help="Text encoding of the input files.")
_ERRORS = click.option("--errors", type=click.Choice(["strict", "replace", "ignore"]), default="strict",
                       show_default=True, help="What to do with bytes the encoding cannot decode.")


_DEVICE = click.option("--device", default="auto", show_default=True,
                       help="auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda.")


def _server_options(fn):
    """--port, --host, --allow-origin, --max-sessions and --no-browser, for the commands that start the app."""
    fn = click.option("--no-browser", is_flag=True, help="Do not open a browser tab.")(fn)
    fn = click.option("--max-sessions", type=click.IntRange(1), default=10, show_default=True,
                      help="Browser tabs served at once; more get a 'busy' page.")(fn)
    fn = click.option("--allow-origin", "allow_origins", multiple=True, metavar="NAME[:PORT]",
                      help="Also answer pages and websockets addressed to NAME:PORT (the port defaults to "
                           "--port); only localhost and 127.0.0.1 are answered otherwise (repeatable).")(fn)
    fn = click.option("--host", default="127.0.0.1", show_default=True,
                      help="Address to bind. Another address (0.0.0.0: every interface) serves the text to "
                           "anyone who can reach the port, without a password; it needs --allow-origin.")(fn)
    return click.option("--port", type=click.IntRange(0, 65535), default=5006, show_default=True,
                        help="Port to listen on; 0 picks a free one.")(fn)


@cli.command()
@click.argument("texts", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", default="model.pt", show_default=True, help="Checkpoint to write.")
@click.option("--preset", type=click.Choice(["stdlib"]), help="A named recipe; 'stdlib' trains the shipped demo model.")
@click.option("--cell", default="lstm", show_default=True,
              help="lstm, gru, rnn (tanh; also rnn_tanh) or rnn_relu: PyTorch's LSTM, GRU or RNN.")
@click.option("--layers", type=int, default=2, show_default=True)
@click.option("--hidden", type=int, default=128, show_default=True, help="Units per layer.")
@click.option("--embedding", type=int, default=64, show_default=True)
@click.option("--dropout", type=float, default=0.0, show_default=True)
@click.option("--seq-length", type=int, default=50, show_default=True)
@click.option("--batch-size", type=int, default=50, show_default=True)
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--lr-decay", type=float, default=0.97, show_default=True, help="Per-epoch factor.")
@click.option("--decay-after", type=int, default=10, show_default=True, help="Epochs before decay starts.")
@click.option("--grad-clip", type=float, default=5.0, show_default=True)
@click.option("--val-fraction", type=float, default=0.05, show_default=True)
@click.option("--epochs", type=int, default=50, show_default=True)
@click.option("--max-time", type=float, help="Stop after this many seconds.")
@click.option("--max-steps", type=int)
@click.option("--eval-every", type=int, default=200, show_default=True)
@click.option("--sample-every", type=int, default=0, help="Print and keep a sample every N steps.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=int, help="Torch CPU threads.")
@_DEVICE
@click.option("--resume", is_flag=True, help="Continue training the checkpoint at -o.")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint at -o.")
@click.option("--keep-optimizer/--no-keep-optimizer", default=True, show_default=True,
              help="Store Adam's state too, so that --resume continues exactly (the file is 3x larger).")
@_ENCODING
@_ERRORS
@user_errors
def train(texts, output, preset, cell, layers, hidden, embedding, dropout, resume, force, encoding, errors,
          seq_length, batch_size, lr, lr_decay, decay_after, grad_clip, val_fraction, epochs,
          max_time, max_steps, eval_every, sample_every, seed, threads, device, keep_optimizer):
    """Train a character-level LSTM, GRU or RNN on TEXTS (files or directories)."""
    from .workflows import train_command
    opts = dict(seq_length=seq_length, batch_size=batch_size, lr=lr, lr_decay=lr_decay,
                decay_after=decay_after, grad_clip=grad_clip, val_fraction=val_fraction,
                epochs=epochs, max_time=max_time, max_steps=max_steps, eval_every=eval_every,
                sample_every=sample_every, seed=seed, threads=threads, device=device,
                keep_optimizer=keep_optimizer)
    model = dict(num_layers=layers, hidden_size=hidden, embedding_size=embedding, dropout=dropout, cell=cell)
    given = {k for k, v in click.get_current_context().params.items()
             if click.get_current_context().get_parameter_source(k).name != "DEFAULT"}
    train_command(texts, output, opts, model, preset=preset, resume=resume, force=force,
                  encoding=encoding, errors=errors, given=given)


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.option("-n", "--length", type=int, default=500, show_default=True,
              help="Characters to generate (at most 1,000,000); printed as they come.")
@click.option("-t", "--temperature", type=float, default=1.0, show_default=True,
              help="Divides the logits: lower is more conservative.")
@click.option("--prime", default="", help="Text to read before generating.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--argmax", is_flag=True, help="Always take the most likely character.")
@_DEVICE
@click.option("--clamp", multiple=True, metavar="SPEC",
              help="Hold a unit at a value while sampling: layer2.c[76]=3.0, layer0.gate_f[12]=0.9, "
                   "layer1.h[5]=mean; @START:STOP limits it to those steps (repeatable).")
@click.option("--ablate", multiple=True, metavar="UNIT",
              help="Switch a unit off: 0 for c, h and gate_g (GRU gate_n), its --reference mean for the "
                   "sigmoid gates (repeatable).")
@click.option("--reference", metavar="TEXT",
              help="Where 'mean' comes from: a dump of this checkpoint, a text file, or 'heldout' "
                   "(the checkpoint's validation text, re-read and checked by hash).")
@click.option("--compare", is_flag=True, help="Print the sample without the intervention, then with it, "
                                              "from the same seed.")
@user_errors
def sample(checkpoint, length, temperature, prime, seed, argmax, device, clamp, ablate, reference, compare):
    """Generate text from a trained CHECKPOINT (to stdout), optionally under an intervention."""
    from .workflows import sample_stream
    stream = sample_stream(checkpoint, length, temperature, prime, seed, argmax, device=device,
                           clamp=clamp, ablate=ablate, reference=reference, compare=compare)
    first = next(stream)                    # the checks and the load, before anything is printed
    click.echo(first, nl=False)
    for ch in stream:
        click.echo(ch, nl=False)            # echo flushes: each character shows as it is drawn
    click.echo()


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("texts", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", help="Dump file to write [default: dumps/<stem of first file>.h5].")
@click.option("--record", "record_spec", default="all", show_default=True,
              help="Points to record: all, or a comma list of kinds (LSTM: c,h,gate_i,gate_f,gate_g,gate_o; "
                   "GRU: h,gate_r,gate_z,gate_n; RNN: h; gates: all of them) or points (layer0.c).")
@click.option("--layers", help="Comma list of layers to record, e.g. 0,1 [default: all].")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float16", show_default=True)
@click.option("--compression", type=click.Choice(["none", "lzf", "gzip"]), default="none", show_default=True,
              help="lzf is the fast one; float16 states barely compress.")
@click.option("--max-chars", type=int, help="Stop after this many characters in total.")
@click.option("--topk", type=int, default=5, show_default=True, help="Next-character predictions kept per character.")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Files recorded side by side.")
@click.option("--chunk-chars", type=int, default=4096, show_default=True,
              help="Characters per recorded chunk (bounds memory).")
@click.option("--threads", type=int, default=1, show_default=True, help="Torch threads per pipeline stage.")
@click.option("--kernel", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="The compiled recorder (see `rnnviz kernel`): auto uses it where it is built and measured at "
                   "least 1.15x pure PyTorch here; on builds it if need be and uses it; off: pure PyTorch.")
@_DEVICE
@click.option("--force", is_flag=True, help="Overwrite an existing dump (or discard an unfinished one).")
@click.option("--resume", is_flag=True, help="Continue the interrupted dump OUTPUT.partial.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_ENCODING
@_ERRORS
@user_errors
def dump(checkpoint, texts, output, record_spec, layers, dtype, compression, max_chars, topk, batch_size,
         chunk_chars, threads, kernel, device, force, resume, quiet, encoding, errors):
    """Record every cell and gate of CHECKPOINT over TEXTS (files or directories) into HDF5.

    Each file is one sequence starting from a zero state. The layout is docs/dump-format.md.
    """
    from .dump import DumpOptions, dump as run_dump
    try:
        layer_list = None if layers is None else [int(x) for x in layers.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma list of layer numbers, found {layers!r}",
                                 param_hint="--layers") from None
    options = DumpOptions(record=record_spec, layers=layer_list, dtype=dtype, compression=compression,
                          max_chars=max_chars, topk=topk, force=force, resume=resume, encoding=encoding,
                          errors=errors, batch_size=batch_size, chunk_chars=chunk_chars, threads=threads,
                          kernel=kernel, device=device, progress=not quiet,
                          command=_given_command("dump", checkpoint, *texts))
    result = run_dump(checkpoint, list(texts), output, options)
    from .kernel import why
    recorder = f"pure PyTorch ({result.no_kernel})" if result.no_kernel else why(kernel, result.backend == "kernel")
    click.echo(f"wrote {result.path}: {result.n_chars:,} chars, {result.size_bytes / result.n_chars:,.0f} "
               f"bytes/char, {result.n_chars / result.seconds:,.0f} chars/s with {recorder}", err=True)


@cli.command()
@click.option("--build", is_flag=True, help="Compile it now (again, if it failed before) and time it.")
@user_errors
def kernel(build):
    """The compiled recorder: whether it is built here, and how fast it is.

    It is built only on request, here or by `rnnviz dump --kernel on` (a C++ compiler and
    ninja; 30 s to a few minutes), then timed against pure PyTorch on this machine;
    `--kernel auto` uses it where it measured at least 1.15x.
    """
    from .kernel import build_kernel, describe
    if build:
        build_kernel(retry=True)
    click.echo(describe())


def _given_command(*arguments: str) -> str:
    """The command line as the user gave it (options left at their defaults omitted)."""
    import shlex
    ctx = click.get_current_context()
    parts = ["rnnviz", *arguments]
    for param in ctx.command.params:
        if isinstance(param, click.Option) and ctx.get_parameter_source(param.name).name != "DEFAULT":
            flag = max(param.opts, key=len)
            parts += [flag] if param.is_flag else [flag, str(ctx.params[param.name])]
    return shlex.join(parts)


@cli.command()
@click.argument("path", type=click.Path(path_type=str))
@user_errors
def info(path):
    """Print what a checkpoint or a dump holds."""
    from .workflows import describe_file
    click.echo(describe_file(path))


def _list_features(ctx, _param, value):
    if not value or ctx.resilient_parsing:
        return
    from .features import BUILTIN
    for f in BUILTIN.values():
        click.echo(f"{f.name:<17}{f.kind:<11}{f.description}")
    ctx.exit()


@cli.command()
@click.argument("dump_file", metavar="DUMP", type=click.Path(path_type=str))
@click.option("--list-features", is_flag=True, expose_value=False, is_eager=True, callback=_list_features,
              help="Print the built-in features (name, kind, meaning) and exit.")
@click.option("--feature", "regexes", multiple=True, metavar="NAME=REGEX",
              help="Add a feature: 1 on characters inside a match of REGEX (repeatable).")
@click.option("--features", "builtins", metavar="A,B", help="Only these built-in features [default: all].")
@click.option("--points", help="Recording points, e.g. c,h or layer1.c,gates [default: all recorded].")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Units printed per feature.")
@click.option("--shifts", type=click.IntRange(0), default=99, show_default=True,
              help="Circular shifts of each feature for the null.")
@click.option("--holdout", type=click.FloatRange(0, 0.9), default=0.0, show_default=True,
              help="Fraction at the end of the text kept out of the ranking, to confirm it on.")
@click.option("--max-chars", default=None, metavar="N",
              help="A quick look: score N characters, in blocks spread over the text, instead of every one "
                   "(the default, exact). The summary says 'sampled N of M characters'.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str), help="Write the full ranking here.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False, path_type=str),
              help="Write the full ranking as Parquet (needs pyarrow).")
@click.option("--force", is_flag=True, help="Overwrite existing --csv/--parquet files.")
@click.option("--no-store", is_flag=True, help="Leave the dump untouched (no /analysis).")
@click.option("--language", type=click.Choice(["auto", "python", "c", "text"]), default="auto", show_default=True,
              help="Language of the sources for strings, comments and brackets; auto: per source, from a code "
                   "extension (.py, .c, ...) or else the content (text = prose).")
@click.option("--tab-size", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Tab stops for indentation and position in the line.")
@click.option("--parts", default="60/20/20", show_default=True, metavar="FIT/SELECT/TEST",
              help="The best k units together: contiguous parts of the analysed characters, in text order, "
                   "to fit the probes on, choose the units on and score them on; 'none' skips the sets.")
@click.option("--all-units/--no-all-units", default=True, show_default=True,
              help="Also score a probe on every unit, next to the sets.")
@user_errors
def analyze(dump_file, regexes, builtins, points, top, shifts, holdout, max_chars, csv_path, parquet_path,
            force, no_store, language, tab_size, parts, all_units):
    """Rank every unit of DUMP against text features; store the results in it under /analysis."""
    from .analyze import analyze_dump, check_exports, export_ranking
    from .errors import RnnvizError
    from .features import parse_feature_option
    from .unitsets import parse_parts
    extra = tuple(parse_feature_option(r) for r in regexes)
    if max_chars is None or max_chars.strip().lower() == "all":
        limit = None
    elif max_chars.strip().isdigit():
        limit = int(max_chars)
    else:
        raise RnnvizError(f"--max-chars expects a number of characters, found {max_chars!r}")
    check_exports(csv_path, parquet_path, force)
    result = analyze_dump(dump_file, features=builtins, extra_features=extra, points=points, top=top,
                          shifts=shifts, holdout=holdout, max_chars=limit, store=not no_store,
                          language=language, tab_size=tab_size, parts=parse_parts(parts), all_units=all_units)
    click.echo(result.summary(top))
    # Which language each source got, on every row: a CSV has nowhere else to say it.
    langs = "; ".join(f"{nm}={lang}" for nm, lang in result.info["languages"])
    for written in export_ranking(result.ranking.assign(languages=langs), csv_path, parquet_path, force):
        click.echo(f"Wrote the full ranking ({len(result.ranking):,} rows) to {written}")
    if result.info["stored"]:
        click.echo(f"Stored /analysis in {dump_file}")


@cli.command()
@click.argument("dump_file", metavar="DUMP", type=click.Path(path_type=str))
@click.option("--lstmvis", "lstmvis_dir", metavar="DIR", required=True,
              help="Write DIR for the LSTMVis server: lstm.yml, a char dict and a side HDF5 (the dump is "
                   "read where it is, never changed).")
@click.option("--points", help="Recording points to export, e.g. c,h or layer1.c [default: all recorded].")
@click.option("--negate", metavar="UNITS", help="Add negated copies of these units (LSTMVis matches values above "
              "a positive threshold), e.g. layer2.c[76],layer0.c[169].")
@click.option("--negate-signed", is_flag=True, help="Add negated copies of every exported c, h and gate_g unit.")
@click.option("--force", is_flag=True, help="Replace the files rnnviz writes in an existing DIR.")
@user_errors
def export(dump_file, lstmvis_dir, points, negate, negate_signed, force):
    """Export DUMP for another tool: --lstmvis DIR writes a folder LSTMVis loads as it is."""
    from .lstmvis import export_lstmvis, parse_units
    out = export_lstmvis(dump_file, lstmvis_dir, points=points, negate=parse_units(negate),
                         negate_signed=negate_signed, force=force)
    click.echo(f"Wrote {out}/lstm.yml; start LSTMVis on the folder above it: "
               f"python lstm_server.py -dir {out.resolve().parent} --nodebug 1")


@cli.command()
@click.argument("dumps", nargs=-1, required=True, type=click.Path(path_type=str))
@_server_options
@click.option("--unit", default=None, help="Unit to show first, e.g. layer1.c[42].")
@user_errors
def serve(dumps, port, host, allow_origins, max_sessions, no_browser, unit):
    """Explore DUMPS in the browser: text coloured by each unit's firing."""
    from .app import serve as serve_app
    serve_app(list(dumps), port=port, host=host, open_browser=not no_browser, initial_unit=unit,
              allow_origins=allow_origins, max_sessions=max_sessions)


@cli.command()
@click.argument("texts", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", default="dumps/demo.h5", show_default=True, help="Where the demo dump goes.")
@_server_options
@_ENCODING
@_ERRORS
@user_errors
def demo(texts, output, port, host, allow_origins, max_sessions, no_browser, encoding, errors):
    """The shipped model on held-out standard-library text: dump, analyze, serve.

    TEXTS replaces the held-out files (needed where Python has no stdlib sources).
    """
    from .workflows import demo as run_demo
    run_demo(list(texts) or None, output, port=port, host=host, open_browser=not no_browser,
             encoding=encoding, errors=errors,
             server_options=dict(allow_origins=allow_origins, max_sessions=max_sessions))


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("train_texts", type=click.Path(path_type=str))
@click.argument("held_out", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="An error is a character the model gives a probability below this.")
@click.option("--order", type=int, default=9, show_default=True, help="Highest n-gram order tried (1..N).")
@click.option("--memory-context", type=int, default=4, show_default=True,
              help="Characters of context a repeated substring needs to count as dynamic memory.")
@click.option("--rare-count", type=int, default=5, show_default=True,
              help="A word seen fewer times than this in TRAIN_TEXTS is rare.")
@click.option("-o", "--csv", "csv_path", help="Write the breakdown table as CSV.")
@click.option("--long-range", "long_range_csv", help="Write one row per closing bracket/quote as CSV.")
@click.option("--plot", help="Write the long-range plot as a standalone (offline) HTML file.")
@click.option("--into", "into", help="Store the per-character categories in this dump of HELD_OUT (its /errors group).")
@_DEVICE
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_ENCODING
@_ERRORS
@user_errors
def errors(checkpoint, train_texts, held_out, threshold, order, memory_context, rare_count, csv_path,
           long_range_csv, plot, into, device, force, encoding, errors):
    """Why the model errs on HELD_OUT (Karpathy et al. 2015): n-gram, dynamic memory, rare
    word, word-initial, punctuation or other; and the long-range test for closing brackets
    and quotes, model against an n-gram fitted on TRAIN_TEXTS.

    TRAIN_TEXTS is a file or folder (held-out files inside it are left out), or @checkpoint:
    the files the checkpoint was trained on, re-read and checked against their hashes.
    """
    from .errors_breakdown import ErrorOptions, errors_command
    errors_command(checkpoint, [train_texts], list(held_out),
                   ErrorOptions(threshold, order, memory_context, rare_count), csv=csv_path,
                   long_range_csv=long_range_csv, plot=plot, into=into, force=force, device=device,
                   encoding=encoding, errors=errors, echo=click.echo)


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("texts", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--points", help="Ablate every unit of these points, one at a time: kinds (c, h, gates) or points "
                               "(layer2.c) [default: c, when no --units or --set is given].")
@click.option("--units", help="Ablate these units, one at a time: a comma list such as layer2.c[76],layer0.c[169].")
@click.option("--set", "sets", multiple=True, metavar="NAME=UNIT,UNIT",
              help="Ablate these units together as one target named NAME (repeatable).")
@click.option("--per-char", metavar="TARGETS", help="Keep the per-character loss change of these units or set names "
                                                    "(stored with --into, where the app colours the text by it).")
@click.option("--reference", metavar="DUMP|TEXT|heldout",
              help="Text whose means ablate sigmoid gates (gate_i, gate_f, gate_o): a dump of this checkpoint, a "
                   "text file, or 'heldout' (the checkpoint's validation text); never the evaluated text. Not needed "
                   "for c, h and gate_g (0).")
@click.option("--random", "n_random", type=int, default=100, show_default=True,
              help="Random units of the same layer and kind (random sets of the same make for a set) for the null.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random draw.")
@click.option("--features", "builtins", metavar="A,B", help="Binary built-in features to compare inside/outside "
                                                            "[default: all binary ones].")
@click.option("--feature", "regexes", multiple=True, metavar="NAME=REGEX",
              help="Add a feature: 1 on characters inside a match of REGEX (repeatable).")
@click.option("--language", type=click.Choice(["auto", "python", "c", "text"]), default="auto", show_default=True,
              help="Language of the sources for strings and comments (as in analyze).")
@click.option("--top", type=click.IntRange(1), default=5, show_default=True, help="Rows printed per feature.")
@click.option("--lanes", type=click.IntRange(1), default=128, show_default=True,
              help="Targets run side by side in one batch.")
@click.option("--max-chars", type=int, help="Read only the first N characters (a sample; the output says so).")
@click.option("--kernel", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
              help="The compiled stepper, as in dump.")
@click.option("--threads", type=click.IntRange(1), default=1, show_default=True,
              help="Torch threads (more spin-wait on a busy machine).")
@_DEVICE
@click.option("-o", "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str),
              help="Write the causal ranking (every target x feature) as CSV.")
@click.option("--into", help="Store the results in this dump of TEXTS from CHECKPOINT (its /ablation group).")
@click.option("--force", is_flag=True, help="Overwrite an existing CSV.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@_ENCODING
@_ERRORS
@user_errors
def ablate(checkpoint, texts, points, units, sets, per_char, reference, n_random, seed, builtins, regexes, language,
           top, lanes, max_chars, kernel, threads, device, csv_path, into, force, quiet, encoding, errors):
    """Ablate units of CHECKPOINT over TEXTS and measure the change in loss (bits/char): over all
    the text, inside and outside each binary feature, against random units of the same layer and kind.

    c, h and gate_g are ablated to 0, sigmoid gates to their mean over --reference. The loss of a
    prediction counts at the predicted character. Targets run side by side as lanes of one batch.
    """
    from .ablation_report import AblateOptions, ablate_command
    from .features import parse_feature_option
    if not (points or units or sets):
        points = "c"
    options = AblateOptions(points=points, units=units, sets=tuple(sets), per_char=per_char, reference=reference,
                            random=n_random, seed=seed, features=builtins,
                            extra_features=tuple(parse_feature_option(r) for r in regexes), language=language,
                            top=top, lanes=lanes, kernel=kernel, threads=threads, device=device, max_chars=max_chars,
                            encoding=encoding, errors=errors, progress=not quiet)
    ablate_command(options, checkpoint, list(texts), csv=csv_path, into=into, force=force, echo=click.echo)
