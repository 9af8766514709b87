"""Each command's options come from its options dataclass (rnnviz.options): the command
line keeps every flag, help text and default it had when they were declared by hand."""
import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import click
import click.testing
import pytest

from rnnviz.cli import cli
from rnnviz.options import (AblateOptions, AnalyzeOptions, CharRNNConfig, DumpOptions, ErrorOptions, SampleOptions, ServerOptions,
                            TrainConfig)

# Every option's help line and the value its command received without it, as they were
# while click.option declared them one by one (a new option may be added; these stay).
BEFORE = json.loads((Path(__file__).parent / "cli_options.json").read_text())


def option_records(name: str) -> dict:
    cmd = cli.commands[name]
    ctx = cmd.make_context(name, [], parent=click.Context(cli, info_name="rnnviz"), resilient_parsing=True)
    records = {}
    for p in cmd.params:
        if isinstance(p, click.Option) and p.get_help_record(ctx):
            value = ctx.params.get(p.name)
            records[max(p.opts, key=len)] = {"help": list(p.get_help_record(ctx)),
                                             "default": list(value) if isinstance(value, tuple) else value}
    return records


@pytest.mark.parametrize("command", sorted(BEFORE))
def test_every_option_keeps_its_flags_help_and_default(command):
    now = option_records(command)
    for flag, before in BEFORE[command].items():
        assert flag in now, f"rnnviz {command} lost {flag}"
        assert now[flag] == before, f"rnnviz {command} {flag} changed"


def test_the_defaults_the_help_shows_are_the_librarys():
    """One declaration: a dataclass default is what --help prints as the default."""
    shown = {**BEFORE["train"], **BEFORE["dump"], **BEFORE["sample"]}
    assert TrainConfig().lr == 2e-3 and "[default: 0.002]" in shown["--lr"]["help"][1]
    assert CharRNNConfig().hidden_size == 128 and "[default: 128]" in shown["--hidden"]["help"][1]
    assert DumpOptions().chunk_chars == 4096 and "[default: 4096]" in BEFORE["dump"]["--chunk-chars"]["help"][1]
    assert SampleOptions().length == 500 and "[default: 500]" in shown["--length"]["help"][1]
    assert AnalyzeOptions().shifts == 99 and "[default: 99;" in BEFORE["analyze"]["--shifts"]["help"][1]
    assert ServerOptions().max_sessions == 10 and "[default: 10;" in BEFORE["serve"]["--max-sessions"]["help"][1]
    assert ErrorOptions().order == 9 and "[default: 9]" in BEFORE["errors"]["--order"]["help"][1]
    for cls in (TrainConfig, CharRNNConfig, DumpOptions, SampleOptions, AnalyzeOptions, ServerOptions, ErrorOptions,
                AblateOptions):
        assert any("cli" in f.metadata for f in fields(cls)), cls


def test_a_command_receives_its_dataclass(monkeypatch):
    """The command line's values reach the library as the dataclass, flags turned round and
    values parsed: what `rnnviz analyze` passes equals what a Python caller builds."""
    import rnnviz.analyze

    got = []
    monkeypatch.setattr(rnnviz.analyze, "analyze_dump", lambda path, options: got.append(options) or _stop())
    r = click.testing.CliRunner().invoke(cli, ["analyze", "d.h5", "--no-store", "--max-chars", "all",
                                               "--top", "3", "--features", "depth"])
    assert isinstance(r.exception, _Stop), r.output
    assert got == [AnalyzeOptions(store=False, max_chars=None, top=3, features="depth")]


def test_ablate_receives_its_dataclass(monkeypatch):
    """rnnviz ablate's options come from AblateOptions too; with no --points, --units or --set
    it ablates every c unit."""
    import rnnviz.ablation_report
    from rnnviz.options import AblateOptions

    got = []
    monkeypatch.setattr(rnnviz.ablation_report, "ablate_command", lambda options, *a, **k: got.append(options) or _stop())
    runner = click.testing.CliRunner()
    r = runner.invoke(cli, ["ablate", "m.pt", "t.py", "--units", "layer0.c[1]", "--set", "s=layer0.c[1],layer0.c[2]",
                            "--quiet", "--random", "7", "--lanes", "4"])
    assert isinstance(r.exception, _Stop), r.output
    assert got[-1] == AblateOptions(units="layer0.c[1]", sets=("s=layer0.c[1],layer0.c[2]",), progress=False,
                                    random=7, lanes=4)
    r = runner.invoke(cli, ["ablate", "m.pt", "t.py"])
    assert isinstance(r.exception, _Stop), r.output
    assert got[-1] == AblateOptions(points="c")


class _Stop(Exception):
    pass


def _stop():
    raise _Stop


def test_values_a_dataclass_refuses_are_one_line_errors(tmp_path):
    (tmp_path / "t.txt").write_text("hello world " * 50)
    r = subprocess.run([sys.executable, "-m", "rnnviz", "train", str(tmp_path / "t.txt"), "-o",
                        str(tmp_path / "m.pt"), "--dropout", "1.5"], capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr == "Error: dropout must be in [0, 1), got 1.5\n"
    r = subprocess.run([sys.executable, "-m", "rnnviz", "dump", str(tmp_path / "m.pt"), str(tmp_path / "t.txt"),
                        "--layers", "0,x"], capture_output=True, text=True)
    assert r.returncode == 2 and "expected a comma list of layer numbers, found '0,x'" in r.stderr
    assert "Traceback" not in r.stderr
