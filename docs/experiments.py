"""The three cells compared (docs/experiments.md): each checkpoint is dumped over the stdlib
preset's eight held-out files, analysed (the default, exact ranking over every character),
and its errors are broken down with the long-range test, all through the real CLI. Prints
the tables docs/experiments.md quotes and writes the figures under --out.

    python docs/experiments.py lstm=runs/lstm.pt gru=runs/gru.pt rnn=runs/rnn.pt

Each run's CPU seconds (user + system of the command and its children) are printed too.
"""
import argparse
import json
import math
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import rnnviz
from rnnviz.checkpoint import load_checkpoint
from rnnviz.errors_breakdown import long_range_summary
from rnnviz.presets import stdlib_files

FEATURES = ("in_string", "in_comment", "line_pos", "indent", "depth", "in_word")


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def cli(*args) -> float:
    """Run ``rnnviz ARGS``; its CPU seconds."""
    before = children_cpu()
    done = subprocess.run([sys.executable, "-m", "rnnviz", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"rnnviz {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return children_cpu() - before


def screenshot(html: Path) -> Path | None:
    """A PNG of the standalone plot page, through headless Chromium when it is installed."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        return None
    png = html.with_suffix(".png")
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                    "--window-size=760,560", f"--screenshot={png}", html.resolve().as_uri()],
                   capture_output=True, timeout=120)
    return png if png.exists() else None


def run_cell(name: str, checkpoint: Path, out: Path, held: list[Path], reuse: bool = False) -> dict:
    dump, done = out / f"{name}.h5", out / f"{name}-cpu.json"
    if reuse and done.exists() and dump.exists():
        cpu = json.loads(done.read_text())
    else:
        done.unlink(missing_ok=True)
        dump.unlink(missing_ok=True)
        cpu = {"dump": cli("dump", checkpoint, *held, "-o", dump, "--quiet")}
        cpu["analyze"] = cli("analyze", dump, "--csv", out / f"{name}-ranking.csv", "--force")
        cpu["errors"] = cli("errors", checkpoint, "@checkpoint", *held, "--into", dump, "-o",
                            out / f"{name}-breakdown.csv", "--long-range", out / f"{name}-long-range.csv",
                            "--plot", out / f"{name}-long-range.html", "--force")
        screenshot(out / f"{name}-long-range.html")
        done.write_text(json.dumps(cpu))
    with rnnviz.open(dump) as d:
        loss = d.loss[()]
        firsts = d.sources["start"].to_numpy()
        ends = np.r_[firsts[1:], d.n_chars]
        # loss[t] is the prediction of char t+1: every char but each file's last one has one
        keep = np.ones(d.n_chars, bool)
        keep[ends - 1] = False
        bpc = float(loss[keep].mean() / math.log(2))
        ranking = d.analysis.table("ranking")
        breakdown = d.group("errors").table("breakdown")
        long_range = d.group("errors").table("long_range")
        cell = d.cell
    top = (ranking[ranking["feature"].isin(FEATURES)].assign(a=lambda r: r["score"].abs())
           .sort_values("a", ascending=False).groupby("feature", sort=False).head(1).set_index("feature"))
    model = load_checkpoint(checkpoint).model
    far = long_range[(long_range["kind"] == ")") & (long_range["distance"] > 20)]
    return {"name": name, "cell": cell, "params": sum(p.numel() for p in model.parameters()), "bpc": bpc,
            "cpu": cpu, "top": top, "breakdown": breakdown, "long_range": long_range_summary(long_range),
            "far": (len(far), float(far["model_p"].mean()), float(far["ngram_p"].mean()))}


def parse_cells(items) -> list[tuple[str, Path]]:
    cells = []
    for item in items:
        name, _, path = item.partition("=")
        if not path or not Path(path).is_file():
            sys.exit(f"expected NAME=CHECKPOINT with an existing file, got {item!r}")
        cells.append((name, Path(path)))
    return cells


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cells", nargs="+", help="NAME=CHECKPOINT, e.g. lstm=runs/lstm.pt")
    p.add_argument("--out", type=Path, default=Path("dumps/experiments"))
    p.add_argument("--reuse", action="store_true",
                   help="take a cell's results from --out when an earlier run of this script finished it")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    _, held = stdlib_files()
    results = [run_cell(name, path, args.out, held, args.reuse) for name, path in parse_cells(args.cells)]
    names = [r["name"] for r in results]

    print("\n## Held-out bits per character and CPU seconds\n")
    print("| cell | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    print("| cell, parameters | " + " | ".join(f"{r['cell']}, {r['params']:,}" for r in results) + " |")
    print("| held-out bits/char | " + " | ".join(f"{r['bpc']:.3f}" for r in results) + " |")
    for step in ("dump", "analyze", "errors"):
        print(f"| CPU s, {step} | " + " | ".join(f"{r['cpu'][step]:.0f}" for r in results) + " |")

    print("\n## The strongest unit per feature (analyze's score: 2*AUC-1 for binary features, "
          "Spearman's rho otherwise)\n")
    print("| feature | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for f in FEATURES:
        cells = [f"{r['top'].loc[f, 'unit']} {r['top'].loc[f, 'score']:+.2f}" if f in r["top"].index else "-"
                 for r in results]
        print(f"| {f} | " + " | ".join(cells) + " |")

    print("\n## Error breakdown (share of errors; the last row: errors among predicted chars)\n")
    print("| category | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    tables = [r["breakdown"].set_index("category") for r in results]
    for cat in tables[0].index:
        if cat == "all errors":
            cells = [f"{int(t.loc[cat, 'errors']):,} ({100 * t.loc[cat, 'share_of_chars']:.1f}%)" for t in tables]
        else:
            cells = [f"{100 * t.loc[cat, 'share_of_errors']:.1f}%" for t in tables]
        print(f"| {cat} | " + " | ".join(cells) + " |")

    print("\n## Long range: mean P(truth) of ')' by distance to its '(' (model / 9-gram; closings)\n")
    bins = results[0]["long_range"]
    bins = bins[bins["kind"] == ")"]["distance_bin"].tolist()
    print("| distance | " + " | ".join(names) + " |\n|---|" + "---|" * len(names))
    for b in bins:
        cells = []
        for r in results:
            row = r["long_range"][(r["long_range"]["kind"] == ")") & (r["long_range"]["distance_bin"] == b)]
            cells.append("-" if not len(row) else
                         f"{row['model_p'].iloc[0]:.2f} / {row['ngram_p'].iloc[0]:.2f} ({int(row['n'].iloc[0])})")
        print(f"| {b} | " + " | ".join(cells) + " |")
    print("| > 20 | " + " | ".join(f"{m:.2f} / {g:.2f} ({n})" for n, m, g in (r["far"] for r in results)) + " |")
    print("\nFigures: " + ", ".join(str(args.out / f"{n}-long-range.html") for n in names))


if __name__ == "__main__":
    main()
