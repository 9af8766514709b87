"""The ``rnnviz`` command line: parse, call one library function, turn expected
failures into a one-line error and a non-zero exit.

A command's options are declared once, as the fields of its options dataclass in
rnnviz.options (default, flags, help, click type); ``@command_options(Cls)`` adds them
here and hands the command one ``Cls`` instance, which is what the library function takes:

    @cli.command()
    @user_errors                                  # first: a value Cls refuses is one line too
    @click.argument("checkpoint")
    @command_options(SampleOptions)
    def sample(checkpoint, options): ...          # sample_stream(checkpoint, options)

A new option is a new field made with ``option(default, help=...)`` (a plain field stays
out of the command line); a new command gets its own dataclass. What the library takes as
separate arguments (output paths, ``--force`` for exports, ``--resume``, ``--preset``) stays
a plain click.option; ``field_option(Cls, "name")`` reuses a field's declaration there
(``--encoding``, ``--errors``, ``--device``). tests/cli_options.json keeps every option's help
line and default as they were (tests/test_options.py): change one there only on purpose.
"""
from __future__ import annotations

import dataclasses
import functools
import logging
import os
import sys

import click

from . import __version__
from .errors import RnnvizError
from .options import (AblateOptions, AnalyzeOptions, CharRNNConfig, DumpOptions, ErrorOptions, SampleOptions, ServerOptions,
                      TrainConfig, command_options, field_option, given_fields)


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


# The same options on commands whose library function takes them one by one.
_ENCODING = field_option(DumpOptions, "encoding")
_ERRORS = field_option(DumpOptions, "errors")
_DEVICE = field_option(DumpOptions, "device")


@cli.command()
@user_errors
@click.argument("texts", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", default="model.pt", show_default=True, help="Checkpoint to write.")
@click.option("--preset", type=click.Choice(["stdlib"]), help="A named recipe; 'stdlib' trains the shipped demo model.")
@command_options(CharRNNConfig, into="model")
@command_options(TrainConfig)
@click.option("--resume", is_flag=True, help="Continue training the checkpoint at -o.")
@click.option("--force", is_flag=True, help="Overwrite an existing checkpoint at -o.")
@_ENCODING
@_ERRORS
def train(texts, output, preset, resume, force, encoding, errors, model, options):
    """Train a character-level LSTM, GRU or RNN on TEXTS (files or directories)."""
    from .workflows import train_command
    train_command(texts, output, options, model, preset=preset, resume=resume, force=force,
                  encoding=encoding, errors=errors, given=given_fields(click.get_current_context()))


@cli.command()
@user_errors
@click.argument("checkpoint", type=click.Path(path_type=str))
@command_options(SampleOptions)
def sample(checkpoint, options):
    """Generate text from a trained CHECKPOINT (to stdout), optionally under an intervention."""
    from .workflows import sample_stream
    stream = sample_stream(checkpoint, options)
    first = next(stream)                    # the checks and the load, before anything is printed
    click.echo(first, nl=False)
    for ch in stream:
        click.echo(ch, nl=False)            # echo flushes: each character shows as it is drawn
    click.echo()


@cli.command()
@user_errors
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("texts", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", help="Dump file to write [default: dumps/<stem of first file>.h5].")
@command_options(DumpOptions)
def dump(checkpoint, texts, output, options):
    """Record every cell and gate of CHECKPOINT over TEXTS (files or directories) into HDF5.

    Each file is one sequence starting from a zero state. The layout is docs/dump-format.md.
    """
    from dataclasses import replace

    from .dump import dump as run_dump
    options = replace(options, command=_given_command("dump", checkpoint, *texts))
    result = run_dump(checkpoint, list(texts), output, options)
    from .kernel import why
    recorder = f"pure PyTorch ({result.no_kernel})" if result.no_kernel else why(options.kernel, result.backend == "kernel")
    click.echo(f"wrote {result.path}: {result.n_chars:,} chars, {result.size_bytes / result.n_chars:,.0f} "
               f"bytes/char, {result.n_chars / result.seconds:,.0f} chars/s with {recorder}", err=True)


@cli.command()
@user_errors
@click.option("--build", is_flag=True, help="Compile it now (again, if it failed before) and time it.")
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
@user_errors
@click.argument("path", type=click.Path(path_type=str))
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
@user_errors
@click.argument("dump_file", metavar="DUMP", type=click.Path(path_type=str))
@click.option("--list-features", is_flag=True, expose_value=False, is_eager=True, callback=_list_features,
              help="Print the built-in features (name, kind, meaning) and exit.")
@command_options(AnalyzeOptions)
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str), help="Write the full ranking here.")
@click.option("--parquet", "parquet_path", type=click.Path(dir_okay=False, path_type=str),
              help="Write the full ranking as Parquet (needs pyarrow).")
@click.option("--force", is_flag=True, help="Overwrite existing --csv/--parquet files.")
def analyze(dump_file, csv_path, parquet_path, force, options):
    """Rank every unit of DUMP against text features; store the results in it under /analysis."""
    from .analyze import analyze_dump, check_exports, export_ranking
    check_exports(csv_path, parquet_path, force)
    result = analyze_dump(dump_file, options)
    click.echo(result.summary(options.top))
    # Which language each source got, on every row: a CSV has nowhere else to say it.
    langs = "; ".join(f"{nm}={lang}" for nm, lang in result.info["languages"])
    for written in export_ranking(result.ranking.assign(languages=langs), csv_path, parquet_path, force):
        click.echo(f"Wrote the full ranking ({len(result.ranking):,} rows) to {written}")
    if result.info["stored"]:
        click.echo(f"Stored /analysis in {dump_file}")


@cli.command()
@user_errors
@click.argument("dump_file", metavar="DUMP", type=click.Path(path_type=str))
@click.option("--lstmvis", "lstmvis_dir", metavar="DIR", required=True,
              help="Write DIR for the LSTMVis server: lstm.yml, a char dict and a side HDF5 (the dump is "
                   "read where it is, never changed).")
@click.option("--points", help="Recording points to export, e.g. c,h or layer1.c [default: all recorded].")
@click.option("--negate", metavar="UNITS", help="Add negated copies of these units (LSTMVis matches values above "
              "a positive threshold), e.g. layer2.c[76],layer0.c[169].")
@click.option("--negate-signed", is_flag=True, help="Add negated copies of every exported c, h and gate_g unit.")
@click.option("--force", is_flag=True, help="Replace the files rnnviz writes in an existing DIR.")
def export(dump_file, lstmvis_dir, points, negate, negate_signed, force):
    """Export DUMP for another tool: --lstmvis DIR writes a folder LSTMVis loads as it is."""
    from .lstmvis import export_lstmvis, parse_units
    out = export_lstmvis(dump_file, lstmvis_dir, points=points, negate=parse_units(negate),
                         negate_signed=negate_signed, force=force)
    click.echo(f"Wrote {out}/lstm.yml; start LSTMVis on the folder above it: "
               f"python lstm_server.py -dir {out.resolve().parent} --nodebug 1")


@cli.command()
@user_errors
@click.argument("dumps", nargs=-1, required=True, type=click.Path(path_type=str))
@command_options(ServerOptions)
@click.option("--unit", default=None, help="Unit to show first, e.g. layer1.c[42].")
def serve(dumps, unit, options):
    """Explore DUMPS in the browser: text coloured by each unit's firing."""
    from dataclasses import asdict

    from .app import serve as serve_app
    serve_app(list(dumps), initial_unit=unit, **asdict(options))


@cli.command()
@user_errors
@click.argument("texts", nargs=-1, type=click.Path(path_type=str))
@click.option("-o", "--output", default="dumps/demo.h5", show_default=True, help="Where the demo dump goes.")
@command_options(ServerOptions)
@_ENCODING
@_ERRORS
def demo(texts, output, encoding, errors, options):
    """The shipped model on held-out standard-library text: dump, analyze, serve.

    TEXTS replaces the held-out files (needed where Python has no stdlib sources).
    """
    from .workflows import demo as run_demo
    run_demo(list(texts) or None, output, options, encoding=encoding, errors=errors)


@cli.command()
@user_errors
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("train_texts", type=click.Path(path_type=str))
@click.argument("held_out", nargs=-1, required=True, type=click.Path(path_type=str))
@command_options(ErrorOptions)
@click.option("-o", "--csv", "csv_path", help="Write the breakdown table as CSV.")
@click.option("--long-range", "long_range_csv", help="Write one row per closing bracket/quote as CSV.")
@click.option("--plot", help="Write the long-range plot as a standalone (offline) HTML file.")
@click.option("--into", "into", help="Store the per-character categories in this dump of HELD_OUT (its /errors group).")
@_DEVICE
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@_ENCODING
@_ERRORS
def errors(checkpoint, train_texts, held_out, csv_path, long_range_csv, plot, into, device, force, encoding, errors,
           options):
    """Why the model errs on HELD_OUT (Karpathy et al. 2015): n-gram, dynamic memory, rare
    word, word-initial, punctuation or other; and the long-range test for closing brackets
    and quotes, model against an n-gram fitted on TRAIN_TEXTS.

    TRAIN_TEXTS is a file or folder (held-out files inside it are left out), or @checkpoint:
    the files the checkpoint was trained on, re-read and checked against their hashes.
    """
    from .errors_breakdown import errors_command
    errors_command(checkpoint, [train_texts], list(held_out), options, csv=csv_path,
                   long_range_csv=long_range_csv, plot=plot, into=into, force=force, device=device,
                   encoding=encoding, errors=errors, echo=click.echo)


@cli.command()
@click.argument("checkpoint", type=click.Path(path_type=str))
@click.argument("texts", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--csv", "csv_path", type=click.Path(dir_okay=False, path_type=str),
              help="Write the causal ranking (every target x feature) as CSV.")
@click.option("--into", help="Store the results in this dump of TEXTS from CHECKPOINT (its /ablation group).")
@click.option("--force", is_flag=True, help="Overwrite an existing CSV.")
@user_errors
@command_options(AblateOptions)
def ablate(checkpoint, texts, csv_path, into, force, options):
    """Ablate units of CHECKPOINT over TEXTS and measure the change in loss (bits/char): over all
    the text, inside and outside each binary feature, against random units of the same layer and kind.

    c, h and gate_g are ablated to 0, sigmoid gates to their mean over --reference. The loss of a
    prediction counts at the predicted character. Targets run side by side as lanes of one batch;
    zero ablations of c and h run through PyTorch's fused LSTM with the unit's o gate at 0 (h is 0
    either way; --engine stepper runs them through the stepper, as gates always are).
    """
    from .ablation_report import ablate_command
    if not (options.points or options.units or options.sets):
        options = dataclasses.replace(options, points="c")
    ablate_command(options, checkpoint, list(texts), csv=csv_path, into=into, force=force, echo=click.echo)
