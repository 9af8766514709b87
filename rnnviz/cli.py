"""The ``rnnviz`` command line: parse, call one library function, turn expected
failures into a one-line error and a non-zero exit."""
from __future__ import annotations

import functools
import sys

import click

from . import __version__
from .errors import RnnvizError


def user_errors(fn):
    """Expected failures become ``Error: ...`` on one line and exit code 1; Ctrl-C exits 130."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RnnvizError as e:
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
    """Record, rank and explore the units of character-level LSTMs.

    \b
    Typical path:  rnnviz train corpus/ -o model.pt
                   rnnviz dump model.pt text.py -o dumps/text.h5
                   rnnviz analyze dumps/text.h5
                   rnnviz serve dumps/text.h5
    """


def main():
    cli(prog_name="rnnviz")
