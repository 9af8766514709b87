"""Every command's options, one dataclass per command: a field's default is the library's
default and the command line's alike, and a field made with :func:`option` is also a
command-line option (its flags, help and click type are its metadata). ``rnnviz.cli``
derives the click options from these classes with :func:`command_options`; Python callers
build the same classes. No torch, numpy or pandas here, so that the command line starts fast.

    dump(ckpt, texts, "d.h5", DumpOptions(dtype="float32"))   # = rnnviz dump ... --dtype float32
"""
from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Any, Callable

import click

from .errors import RnnvizError

# The cells, named as PyTorch's RNNBase.mode in lower case; "rnn" is short for "rnn_tanh".
CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
_CELL_ALIASES = {"rnn": "rnn_tanh"}


def option(default: Any, /, *flags: str, help: str | None = None, negate: bool = False,
           parse: Callable[[Any], Any] | None = None, **click_kwargs) -> Any:
    """A dataclass field that is also a command-line option: ``--field-name`` unless ``flags``
    are given (``-n``, ``--length``), with ``help`` and any other ``click.option`` argument
    (``type=``, ``metavar=``, ``multiple=``; ``default=`` where the command line spells the
    default otherwise, e.g. "60/20/20"). ``negate``: a flag that sets the field to
    False (``--quiet`` for ``progress``). ``parse``: turns the command line's value into the
    field's (it may raise :class:`RnnvizError` or ``click.BadParameter``)."""
    spec = dict(flags=flags, help=help, negate=negate, parse=parse, click=click_kwargs)
    return field(default=default, metadata={"cli": spec})


def command_options(cls, into: str = "options"):
    """A decorator adding one click option per :func:`option` field of ``cls`` (in field
    order, where the decorator stands); the command receives ``into=cls(...)`` instead of
    the separate values. Put it below ``@user_errors`` (rnnviz.cli), so that a value the
    dataclass refuses is a one-line error."""
    fields = [f for f in dataclasses.fields(cls) if "cli" in f.metadata]

    def decorate(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            values = {}
            for f in fields:
                spec, value = f.metadata["cli"], kwargs.pop(f.name)
                if spec["negate"]:
                    value = not value
                elif spec["parse"] is not None and value is not None:
                    value = spec["parse"](value)
                values[f.name] = value
            return fn(*args, **{into: cls(**values)}, **kwargs)

        for f in reversed(fields):
            wrapper = _click_option(f)(wrapper)
        return wrapper
    return decorate


def field_option(cls, name: str):
    """The click option of one :func:`option` field of ``cls``, for a command that passes the
    value on by itself (``rnnviz errors --encoding``, as ``rnnviz dump``'s)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    assert not (f.metadata["cli"]["negate"] or f.metadata["cli"]["parse"]), "a plain value only"
    return _click_option(f)


def given_fields(ctx: click.Context) -> set[str]:
    """The fields (click parameter names) given on the command line rather than defaulted."""
    return {name for name in ctx.params if ctx.get_parameter_source(name).name != "DEFAULT"}


def _click_option(f: dataclasses.Field):
    spec = f.metadata["cli"]
    flags = spec["flags"] or ("--" + f.name.replace("_", "-"),)
    kw = dict(spec["click"])
    default = kw.pop("default", f.default)   # the command line's spelling of the default, if it differs
    if spec["negate"] or f.default is False:
        return click.option(*flags, f.name, is_flag=True, help=spec["help"], **kw)
    kw.setdefault("show_default", default not in (None, ()))
    if default is True:
        name = flags[-1][2:]
        return click.option(f"--{name}/--no-{name}", f.name, default=True, help=spec["help"], **kw)
    if default is not None and "type" not in kw and not kw.get("multiple"):
        kw["type"] = type(default)
    return click.option(*flags, f.name, default=default, help=spec["help"], **kw)


# -- values the command line spells differently ------------------------------------------

def _layer_list(value: str) -> list[int]:
    try:
        return [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected a comma list of layer numbers, found {value!r}",
                                 param_hint="--layers") from None


def _char_count(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    if value.strip().isdigit():
        return int(value)
    raise RnnvizError(f"--max-chars expects a number of characters, found {value!r}")


def _regex_features(values) -> tuple:
    from .features import parse_feature_option
    return tuple(parse_feature_option(v) for v in values)


def _parts(value: str):
    from .unitsets import parse_parts
    return parse_parts(value)


def _device() -> Any:
    return option("auto", help="auto (CUDA when torch sees a GPU, else the CPU), cpu or cuda.")


def _encoding() -> Any:
    return option("utf-8", help="Text encoding of the input files.")


def _errors() -> Any:
    return option("strict", type=click.Choice(["strict", "replace", "ignore"]),
                  help="What to do with bytes the encoding cannot decode.")


# -- the commands' options ----------------------------------------------------------------

def cell_name(cell: str) -> str:
    """The canonical name of ``cell`` (``rnn`` -> ``rnn_tanh``), checked."""
    name = _CELL_ALIASES.get(cell, cell)
    if name not in CELLS:
        raise RnnvizError(f"unknown cell {cell!r}: expected lstm, gru, rnn (= rnn_tanh) or rnn_relu")
    return name


@dataclass
class CharRNNConfig:
    """The model's shape (rnnviz.model), from ``rnnviz train``'s options."""
    vocab_size: int = 0       # set from the training text's vocabulary
    num_layers: int = option(2, "--layers")        # char-rnn default
    hidden_size: int = option(128, "--hidden", help="Units per layer.")  # char-rnn default
    # char-rnn feeds one-hot vectors; a learned embedding is cheaper
    embedding_size: int = option(64, "--embedding")
    dropout: float = option(0.0)  # between recurrent layers, training only (char-rnn default 0)
    # lstm, gru, rnn_tanh or rnn_relu; checkpoints without it are LSTMs
    cell: str = option("lstm", help="lstm, gru, rnn (tanh; also rnn_tanh) or rnn_relu: PyTorch's LSTM, GRU or RNN.")

    def __post_init__(self):
        self.cell = cell_name(self.cell)
        if self.num_layers < 1 or self.hidden_size < 1 or self.embedding_size < 1:
            raise RnnvizError("layers, hidden size and embedding size must be positive")
        if not 0.0 <= self.dropout < 1.0:
            raise RnnvizError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class TrainConfig:
    """How ``rnnviz train`` trains (rnnviz.train)."""
    seq_length: int = option(50)        # truncated-backprop length (char-rnn default)
    batch_size: int = option(50)        # parallel streams (char-rnn default)
    lr: float = option(2e-3)            # Adam, as torch-rnn
    lr_decay: float = option(0.97, help="Per-epoch factor.")  # multiply the rate by this every epoch ...
    decay_after: int = option(10, help="Epochs before decay starts.")  # ... once this many epochs have passed
    grad_clip: float = option(5.0)      # max global gradient norm
    val_fraction: float = option(0.05)  # tail of the text kept for validation (char-rnn: 5%)
    epochs: int = option(50)
    # seconds; stop (and keep the best model) after this
    max_time: float | None = option(None, type=float, help="Stop after this many seconds.")
    max_steps: int | None = option(None, type=int)
    eval_every: int = option(200)       # steps between validation passes (and at each epoch's end)
    max_val_chars: int = 200_000  # validation is capped so it stays a small part of the time
    # steps between the samples kept in the history (0: none)
    sample_every: int = option(0, show_default=False, help="Print and keep a sample every N steps.")
    sample_length: int = 200
    seed: int = option(0)
    threads: int | None = option(None, type=int, help="Torch CPU threads.")  # None: torch's default
    device: str = _device()
    keep_optimizer: bool = option(True, help="Store Adam's state too, so that --resume continues exactly "
                                             "(the file is 3x larger).")


@dataclass
class SampleOptions:
    """``rnnviz sample``: how characters are drawn (rnnviz.workflows.sample_stream)."""
    length: int = option(500, "-n", "--length",
                         help="Characters to generate (at most 1,000,000); printed as they come.")
    temperature: float = option(1.0, "-t", "--temperature", help="Divides the logits: lower is more conservative.")
    prime: str = option("", show_default=False, help="Text to read before generating.")
    seed: int = option(0)
    argmax: bool = option(False, help="Always take the most likely character.")
    device: str = _device()
    # an intervention (rnnviz.intervene): specs, units, where 'mean' comes from, both samples
    clamp: tuple = option((), multiple=True, metavar="SPEC",
                          help="Hold a unit at a value while sampling: layer2.c[76]=3.0, layer0.gate_f[12]=0.9, "
                               "layer1.h[5]=mean; @START:STOP limits it to those steps (repeatable).")
    ablate: tuple = option((), multiple=True, metavar="UNIT",
                           help="Switch a unit off: 0 for c, h and gate_g (GRU gate_n), its --reference mean for "
                                "the sigmoid gates (repeatable).")
    reference: str | None = option(None, type=str, metavar="TEXT",
                                   help="Where 'mean' comes from: a dump of this checkpoint, a text file, or "
                                        "'heldout' (the checkpoint's validation text, re-read and checked by hash).")
    compare: bool = option(False, help="Print the sample without the intervention, then with it, from the same seed.")


@dataclass
class DumpOptions:
    """``rnnviz dump`` (rnnviz.dump)."""
    # points or kinds (names.expand_selection); None or "all" = all
    record: str | None = option(
        "all", help="Points to record: all, or a comma list of kinds (LSTM: c,h,gate_i,gate_f,gate_g,gate_o; "
                    "GRU: h,gate_r,gate_z,gate_n; RNN: h; gates: all of them) or points (layer0.c).")
    layers: list[int] | None = option(None, type=str, parse=_layer_list,
                                      help="Comma list of layers to record, e.g. 0,1 [default: all].")
    dtype: str = option("float16", type=click.Choice(["float16", "float32"]))  # storage type of /states
    # float16 states barely compress (lzf: 1.00 of raw), so none
    compression: str = option("none", type=click.Choice(["none", "lzf", "gzip"]),
                              help="lzf is the fast one; float16 states barely compress.")
    max_chars: int | None = option(None, type=int, help="Stop after this many characters in total.")
    # Karpathy's blog shows 5
    topk: int = option(5, help="Next-character predictions kept per character.")
    batch_size: int = option(16, help="Files recorded side by side.")
    # characters per chunk: bounds memory, unit of resume
    chunk_chars: int = option(4096, help="Characters per recorded chunk (bounds memory).")
    # torch threads per pipeline thread (2 thrash a busy machine)
    threads: int = option(1, help="Torch threads per pipeline stage.")
    workers: int = 2                  # threads expanding chunks (gates, c) while the next one runs
    kernel: str = option(
        "auto", type=click.Choice(["auto", "on", "off"]),
        help="The compiled recorder (see `rnnviz kernel`): auto uses it where it is built and measured at "
             "least 1.15x pure PyTorch here; on builds it if need be and uses it; off: pure PyTorch.")
    device: str = _device()          # CUDA records with pure PyTorch
    force: bool = option(False, help="Overwrite an existing dump (or discard an unfinished one).")
    resume: bool = option(False, help="Continue the interrupted dump OUTPUT.partial.")
    progress: bool = option(True, "--quiet", negate=True, help="No progress bar.")  # tqdm bar on stderr
    encoding: str = _encoding()
    errors: str = _errors()
    command: str = ""                 # the command line, stored in the file


@dataclass
class AnalyzeOptions:
    """``rnnviz analyze`` (rnnviz.analyze.analyze_dump)."""
    # from features.regex_feature or features.custom_feature
    extra_features: tuple = option((), "--feature", multiple=True, metavar="NAME=REGEX", parse=_regex_features,
                                   help="Add a feature: 1 on characters inside a match of REGEX (repeatable).")
    # names of built-ins, comma separated (None: all)
    features: str | list[str] | None = option(None, type=str, metavar="A,B", help="Only these built-in features [default: all].")
    points: str | None = option(None, type=str,
                                help="Recording points, e.g. c,h or layer1.c,gates [default: all recorded].")
    top: int = option(5, type=click.IntRange(1), help="Units printed per feature.")
    shifts: int = option(99, type=click.IntRange(0), help="Circular shifts of each feature for the null.")
    holdout: float = option(0.0, type=click.FloatRange(0, 0.9),
                            help="Fraction at the end of the text kept out of the ranking, to confirm it on.")
    # None scores every character, exactly
    max_chars: int | None = option(
        None, type=str, metavar="N", parse=_char_count,
        help="A quick look: score N characters, in blocks spread over the text, instead of every one "
             "(the default, exact). The summary says 'sampled N of M characters'.")
    contexts: int = 8                 # top and bottom characters kept per unit
    store: bool = option(True, "--no-store", negate=True, help="Leave the dump untouched (no /analysis).")
    language: str = option(
        "auto", type=click.Choice(["auto", "python", "c", "text"]),
        help="Language of the sources for strings, comments and brackets; auto: per source, from a code "
             "extension (.py, .c, ...) or else the content (text = prose).")
    tab_size: int = option(8, type=click.IntRange(1, 64), help="Tab stops for indentation and position in the line.")
    # the best k units together (rnnviz.unitsets): fit, select and test fractions (None: no sets)
    # Off by default: the sets' units x units products and candidate columns grow with the
    # text (1M chars x 3,072 units: +1.9 GB and ~8x the time of the exact ranking alone).
    parts: tuple | None = option(
        None, default="none", type=str, metavar="FIT/SELECT/TEST", parse=_parts,
        help="The best k units together (off by default: they cost memory and time that grow with "
             "the text): contiguous parts of the analysed characters, in text order, to fit the probes "
             "on, choose the units on and score them on, e.g. 60/20/20; 'none' skips the sets.")
    all_units: bool = option(True, help="Also score a probe on every unit, next to the sets.")
    seed: int = 0


@dataclass
class ServerOptions:
    """``rnnviz serve`` and ``rnnviz demo``: how the app is served (rnnviz.app.serve)."""
    port: int = option(5006, type=click.IntRange(0, 65535), help="Port to listen on; 0 picks a free one.")
    host: str = option("127.0.0.1", help="Address to bind. Another address (0.0.0.0: every interface) serves "
                                         "the text to anyone who can reach the port, without a password; it "
                                         "needs --allow-origin.")
    allow_origins: tuple = option((), "--allow-origin", multiple=True, metavar="NAME[:PORT]",
                                  help="Also answer pages and websockets addressed to NAME:PORT (the port "
                                       "defaults to --port); only localhost and 127.0.0.1 are answered "
                                       "otherwise (repeatable).")
    max_sessions: int = option(10, type=click.IntRange(1), help="Browser tabs served at once; more get a 'busy' page.")
    open_browser: bool = option(True, "--no-browser", negate=True, help="Do not open a browser tab.")


@dataclass
class ErrorOptions:
    """``rnnviz errors``: what counts as an error and how it is classified (rnnviz.errors_breakdown)."""
    threshold: float = option(0.5, help="An error is a character the model gives a probability below this.")  # the paper's
    order: int = option(9, help="Highest n-gram order tried (1..N).")  # orders 1..9 as in the paper
    memory_context: int = option(4, help="Characters of context a repeated substring needs to count as dynamic memory.")
    rare_count: int = option(5, help="A word seen fewer times than this in TRAIN_TEXTS is rare.")


LANES = 128   # ablation targets per batch (rnnviz.ablation)


@dataclass
class AblateOptions:
    """``rnnviz ablate`` (rnnviz.ablation_report.ablate): which units, the null, the features
    and how the lanes run. ``points``, ``units`` and ``sets`` all empty: every c unit."""
    points: str | None = option(
        None, help="Ablate every unit of these points, one at a time: kinds (c, h, gates) or points "
                   "(layer2.c) [default: c, when no --units or --set is given].")
    units: str | None = option(
        None, help="Ablate these units, one at a time: a comma list such as layer2.c[76],layer0.c[169].")
    sets: tuple[str, ...] = option((), "--set", multiple=True, metavar="NAME=UNIT,UNIT",
                                   help="Ablate these units together as one target named NAME (repeatable).")
    per_char: str | None = option(None, metavar="TARGETS",
                                  help="Keep the per-character loss change of these units or set names "
                                       "(stored with --into, where the app colours the text by it).")
    reference: str | None = option(
        None, metavar="DUMP|TEXT|heldout",
        help="Text whose means ablate sigmoid gates (gate_i, gate_f, gate_o): a dump of this checkpoint, a "
             "text file, or 'heldout' (the checkpoint's validation text); never the evaluated text. Not needed "
             "for c, h and gate_g (0).")
    random: int = option(100, help="Random units of the same layer and kind (random sets of the same make for a "
                                   "set) for the null.")
    seed: int = option(0, help="Seed of the random draw.")
    features: str | None = option(None, type=str, metavar="A,B",
                                  help="Binary built-in features to compare inside/outside [default: all binary ones].")
    extra_features: tuple = option((), "--feature", multiple=True, metavar="NAME=REGEX", parse=_regex_features,
                                   help="Add a feature: 1 on characters inside a match of REGEX (repeatable).")
    language: str = option("auto", type=click.Choice(["auto", "python", "c", "text"]),
                           help="Language of the sources for strings and comments (as in analyze).")
    tab_size: int = 8
    top: int = option(5, type=click.IntRange(1), help="Rows printed per feature.")
    lanes: int = option(LANES, type=click.IntRange(1), help="Targets run side by side in one batch.")
    kernel: str = option("auto", type=click.Choice(["auto", "on", "off"]), help="The compiled stepper, as in dump.")
    engine: str = option(
        "auto", type=click.Choice(["auto", "fused", "stepper"]),
        help="How lanes run. auto: zero ablations of c and h through PyTorch's fused LSTM with the unit's o gate "
             "forced to 0 (the same outputs: h is 0 either way), the rest (gates) through the stepper; fused: "
             "every target fused, or an error; stepper: every target through the stepper. The output names the "
             "engine of each target.")
    # torch threads: 2 thrash a busy machine (OpenMP waits spin)
    threads: int = option(1, type=click.IntRange(1), help="Torch threads (more spin-wait on a busy machine).")
    device: str = _device()
    max_chars: int | None = option(None, type=int,
                                   help="Read only the first N characters (a sample; the output says so).")
    encoding: str = _encoding()
    errors: str = _errors()
    progress: bool = option(True, "--quiet", negate=True, help="No progress bar.")
