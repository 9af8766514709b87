"""rnnviz demo: the shipped model, the stdlib preset and the one-command tour, through the CLI."""
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import h5py
from click.testing import CliRunner

from rnnviz.checkpoint import load_checkpoint
from rnnviz.cli import cli
from rnnviz.presets import STDLIB_HELDOUT, stdlib_files
from rnnviz.shipped import shipped_model_path


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_demo(cwd: Path, *args: str, timeout: float = 240.0):
    """Run ``rnnviz demo --no-browser`` in ``cwd`` until its page answers; returns (proc, url, log)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "rnnviz", "demo", "--no-browser", "--port", str(port), *args],
                            cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}/"
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"rnnviz demo exited with {proc.returncode}: {proc.stdout.read()}")
        try:
            if urllib.request.urlopen(url, timeout=5).status == 200:
                return proc, url
        except OSError:
            time.sleep(0.3)
    proc.kill()
    raise AssertionError("rnnviz demo did not serve its page in time")


def stop(proc) -> str:
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    return out


def test_shipped_model_was_trained_by_the_stdlib_preset():
    ckpt = load_checkpoint(shipped_model_path())
    meta = ckpt.meta
    assert "--preset stdlib" in meta["command"]
    names = {Path(s["name"]).name for s in meta["corpus"]}
    assert len(names) > 100 and not names & set(STDLIB_HELDOUT)     # the demo text was never trained on
    assert {Path(s["name"]).name for s in meta["heldout"]} == set(STDLIB_HELDOUT)
    assert all(len(s["sha256"]) == 64 for s in meta["corpus"] + meta["heldout"])
    assert meta["best_val_bpc"] < 2.5


def test_shipped_model_has_the_preset_architecture_and_schedule():
    """Rerunning the preset must give the same kind of model: same shape, same schedule."""
    from rnnviz.presets import PRESETS
    ckpt = load_checkpoint(shipped_model_path())
    recipe = PRESETS["stdlib"]
    assert {k: ckpt.config.to_dict()[k] for k in recipe["model"]} == recipe["model"]
    trained = ckpt.meta["train_options"]
    # keep_optimizer only decides whether Adam's state is stored, not what is learnt.
    learnt = {k: v for k, v in recipe["train"].items() if k != "keep_optimizer"}
    assert {k: trained[k] for k in learnt} == learnt


def test_shipped_model_has_a_string_unit_and_a_line_position_unit(tmp_path):
    """The shipped model's promise, through the CLI on the held-out files: one unit for any
    string literal with AUC >= 0.9 and one for position in the line with |rho| >= 0.75 (the
    dropout model gives 0.943 and 0.785; the model before it, without dropout, 0.906 and
    0.880), each beating the circular-shift null."""
    import pandas as pd
    heldout = [str(p) for p in stdlib_files()[1]]
    runner = CliRunner()
    dump = tmp_path / "heldout.h5"
    done = runner.invoke(cli, ["dump", str(shipped_model_path()), *heldout, "-o", str(dump),
                               "--record", "c", "--quiet"])
    assert done.exit_code == 0, done.output
    table = tmp_path / "ranking.csv"
    done = runner.invoke(cli, ["analyze", str(dump), "--features", "in_string,line_pos", "--max-chars", "all",
                               "--top", "1", "--no-store", "--csv", str(table)])
    assert done.exit_code == 0, done.output
    best = pd.read_csv(table).query("rank == 1").set_index("feature")
    assert best.loc["in_string", "auc"] >= 0.9 and best.loc["in_string", "beats_null"]
    assert abs(best.loc["line_pos", "rho"]) >= 0.75 and best.loc["line_pos", "beats_null"]


def test_demo_dumps_analyzes_serves_then_reuses(tmp_path, stdlib_text_file):
    text = tmp_path / "shown.py"
    text.write_text(stdlib_text_file.read_text()[:6000])
    proc, url = start_demo(tmp_path, str(text))
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    first = stop(proc)
    dump = tmp_path / "dumps" / "demo.h5"
    assert "recording the shipped model" in first and str(Path("dumps") / "demo.h5") in first
    assert "the unit that best tracks 'in_long_string'" in first
    assert "/static/js/bokeh" in page
    with h5py.File(dump, "r") as f:
        assert "analysis/ranking" in f and f["text/codes"].shape == (6000,)
        assert f.attrs["command"].startswith("rnnviz demo")
    stamp = dump.stat().st_mtime_ns

    proc, _ = start_demo(tmp_path, str(text))
    again = stop(proc)
    assert "reusing dumps/demo.h5" in again and "recording" not in again
    assert dump.stat().st_mtime_ns == stamp

    text.write_text(stdlib_text_file.read_text()[:5000])       # new text: recorded afresh
    proc, _ = start_demo(tmp_path, str(text))
    assert "recording the shipped model" in stop(proc)
    with h5py.File(dump, "r") as f:
        assert f["text/codes"].shape == (5000,)


def test_demo_never_overwrites_a_file_it_did_not_make(tmp_path, stdlib_text_file):
    mine = tmp_path / "mine.h5"
    mine.write_bytes(b"precious")
    result = CliRunner().invoke(cli, ["demo", str(stdlib_text_file), "-o", str(mine), "--no-browser"])
    assert result.exit_code != 0
    assert "was not made by rnnviz demo" in result.output and "Traceback" not in result.output
    assert mine.read_bytes() == b"precious"


def test_demo_checks_the_port_before_recording(tmp_path, stdlib_text_file, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", str(stdlib_text_file), "--port", "99999", "--no-browser"])
    assert result.exit_code == 2 and "99999 is not in the range 0<=x<=65535" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "dumps").exists()


def test_demo_reads_other_encodings_when_told(tmp_path, monkeypatch):
    from rnnviz.workflows import demo
    monkeypatch.chdir(tmp_path)
    text = tmp_path / "latin.py"
    text.write_bytes("name = 'caf\xe9'  # a comment\n".encode("latin-1") * 40)
    result = CliRunner().invoke(cli, ["demo", str(text), "--no-browser"])
    assert result.exit_code == 1 and "--encoding" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "dumps").exists()
    unit = demo([str(text)], serve_app=False, encoding="latin-1")
    with h5py.File(tmp_path / "dumps" / "demo.h5", "r") as f:
        assert "".join(map(chr, f["text/codes"][:13])) == "name = 'café'"
    assert unit.startswith("layer")


def test_demo_without_stdlib_sources_asks_for_a_file(monkeypatch, tmp_path):
    import rnnviz.presets
    monkeypatch.setattr(rnnviz.presets, "stdlib_dir", lambda: None)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["demo", "--no-browser"])
    assert result.exit_code != 0
    assert "no standard-library source files" in result.output and "rnnviz demo FILE" in result.output
    assert not (tmp_path / "dumps").exists()


def test_heldout_files_exist_here():
    train, heldout = stdlib_files()
    assert len(heldout) == len(STDLIB_HELDOUT) and len(train) > 100
