"""The command line as installed: every command the README shows is there."""
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"


def readme_commands() -> set[str]:
    """The subcommands the README tells users to run, in code spans and shell blocks."""
    text = README.read_text()
    found = set(re.findall(r"`rnnviz ([a-z]+)", text))
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, re.S):
        found |= set(re.findall(r"(?:^|&& )rnnviz ([a-z]+)", block, re.M))
    return found


def help_commands(out: str) -> set[str]:
    """The names in the Commands: section of click's --help."""
    section = out.split("Commands:", 1)[1]
    return {m.group(1) for m in re.finditer(r"^  ([a-z]+)\s", section, re.M)}


# The installed console script, not `python -m rnnviz` like the other tests: the entry
# point in pyproject.toml must work too.
@pytest.mark.skipif(shutil.which("rnnviz") is None, reason="the rnnviz script is not installed on PATH")
def test_the_installed_script_lists_every_command_the_readme_shows():
    script = Path(shutil.which("rnnviz"))
    assert script.parent == Path(sys.executable).parent  # this environment's, not another checkout's
    out = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    shown, documented = help_commands(out), readme_commands()
    assert documented >= {"train", "sample", "dump", "analyze", "serve", "demo", "info", "kernel"}
    assert documented <= shown, f"in the README but not in --help: {sorted(documented - shown)}"


def test_every_command_has_its_help():
    out = subprocess.run([sys.executable, "-m", "rnnviz", "--help"], capture_output=True, text=True,
                         check=True).stdout
    for command in sorted(help_commands(out)):
        r = subprocess.run([sys.executable, "-m", "rnnviz", command, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith(f"Usage: rnnviz {command} "), r.stderr


def test_no_other_test_runs_whichever_rnnviz_is_first_on_path():
    """Tests start this checkout's CLI (sys.executable -m rnnviz): a bare `rnnviz` may be
    another checkout's script (only the test above runs the script, checked to be ours)."""
    bare = re.compile(r"""\[\s*["']rnnviz["']\s*,""")
    offenders = [f"{path.name}:{i}" for path in sorted(Path(__file__).parent.glob("test_*.py"))
                 for i, line in enumerate(path.read_text().splitlines(), 1) if bare.search(line)]
    assert not offenders, offenders
