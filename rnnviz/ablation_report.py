"""``rnnviz ablate``: ablate units of a checkpoint over texts, compare each with random
units of the same layer and kind, rank them per feature, and store the results.

    report = ablate(AblateOptions(points="layer2.c"), "model.pt", ["held_out.py"])
    report.ranking           # per binary feature: the units whose ablation hurts most inside it

The measurements come from rnnviz.ablation (lanes, loss accounting); here are the null,
the ranking, the printed table, the CSV and the dump's /ablation group
(docs/dump-format.md).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .ablation import LaneResult, Target, composition_label, null_targets, parse_targets, run_ablations
from .errors import RnnvizError
from .names import point_name, unit_name
from .options import AblateOptions

log = logging.getLogger(__name__)
GROUP = "ablation"       # the dump's result group (docs/dump-format.md)


@dataclass
class AblationReport:
    effects: pd.DataFrame            # one row per target, random ones included
    ranking: pd.DataFrame            # per feature, the asked-for targets by contrast (inside - outside)
    result: LaneResult
    info: dict = field(default_factory=dict)

    def summary(self, top: int = 5) -> str:
        """What ``rnnviz ablate`` prints: the run, the targets that cost most overall, and the
        causal ranking per feature, in analyze's layout."""
        i = self.info
        lines = [f"Ablated {i['targets']:,} target(s) and {i['random_targets']:,} random one(s) for the null "
                 f"on {i['predicted']:,} predicted characters of {i['sources']} source(s){i['sampled']}; "
                 f"lanes of {i['lanes']}, {engine_text(i['engines'], i['backend'])}; the unablated lower "
                 f"layers computed once and shared.",
                 f"Unablated loss: {i['baseline_bits']:.4f} bits/char. Change = ablated - unablated, in "
                 f"bits/char; the loss of a prediction counts at the predicted character.",
                 f"Null: {i['null_text']}; pct = percentile among the null of the target's make, "
                 f"z = (x - mean) / sd of that null."]
        asked = self.effects[~self.effects["random"]].sort_values("change", ascending=False).head(top)
        head = f"{'target':<28}{'units':>6}{'change':>9}{'pct':>7}{'z':>7}  {'engine':<9}null"
        lines += ["", "Largest overall change", head, "-" * len(head)]
        for row in asked.itertuples():
            lines.append(f"{row.target:<28}{row.n_units:>6}{row.change:>+9.4f}{row.change_pct:>7.1f}"
                         f"{_num(row.change_z)}  {row.engine:<9}{row.null}")
        head = (f"{'feature':<18}{'rank':>4}  {'target':<26}{'inside':>9}{'outside':>9}{'contrast':>9}"
                f"{'pct':>7}{'z':>7}{'inside chars':>14}  engine")
        lines += ["", "Causal ranking per feature: contrast = change inside the feature - change outside it",
                  head, "-" * len(head)]
        for feature, rows in self.ranking.groupby("feature", sort=False):
            for n, row in enumerate(rows.head(top).itertuples()):
                lines.append(f"{feature if n == 0 else '':<18}{row.rank:>4}  {row.target:<26}"
                             f"{row.inside:>+9.4f}{row.outside:>+9.4f}{row.contrast:>+9.4f}"
                             f"{row.contrast_pct:>7.1f}{_num(row.contrast_z)}{row.inside_chars:>14,}  {row.engine}")
        return "\n".join(lines)


def _num(x: float) -> str:
    return f"{x:>+7.1f}" if np.isfinite(x) else f"{'-':>7}"


def percentile(x: float, null: np.ndarray) -> float:
    """Percent of ``null`` below ``x`` (ties count half)."""
    if not len(null):
        return float("nan")
    return float(100.0 * ((null < x).sum() + 0.5 * (null == x).sum()) / len(null))


def zscore(x: float, null: np.ndarray) -> float:
    sd = float(np.std(null, ddof=1)) if len(null) > 1 else 0.0
    return float((x - np.mean(null)) / sd) if sd > 0 else float("nan")


def tabulate(result: LaneResult, features: list[str], nulls: dict[tuple, list[Target]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(effects, ranking) from the measurements: each target's change against the null of
    its composition."""
    targets = result.targets
    change = result.mean_change()              # (n, 1 + F)
    outside = result.outside_change()          # (n, F)
    contrast = change[:, 1:] - outside
    row_of = {t: i for i, t in enumerate(targets)}
    null_rows = {comp: np.array([row_of[t] for t in ts], np.int64) for comp, ts in nulls.items()}
    effects = pd.DataFrame({
        "target": [t.name for t in targets],
        "units": [";".join(t.unit_names) for t in targets],
        "n_units": [len(t.units) for t in targets],
        "layer": [t.low for t in targets],
        "random": [t.random for t in targets],
        "null": [composition_label(t.composition) for t in targets],
        "bits": result.sums[:, 0] / max(result.counts[0], 1),
        "change": change[:, 0],
        "engine": result.engines or ["stepper"] * len(targets),
    })
    effects["change_pct"] = [percentile(change[i, 0], change[null_rows[t.composition], 0]) for i, t in enumerate(targets)]
    effects["change_z"] = [zscore(change[i, 0], change[null_rows[t.composition], 0]) for i, t in enumerate(targets)]
    rows = []
    for f, feature in enumerate(features):
        inside_chars, outside_chars = int(result.counts[1 + f]), int(result.counts[0] - result.counts[1 + f])
        if not inside_chars or not outside_chars:
            continue                            # constant on the predicted characters: nothing to compare
        for i, t in enumerate(targets):
            if t.random:
                continue
            null = contrast[null_rows[t.composition], f]
            rows.append({"feature": feature, "target": t.name, "units": effects.at[i, "units"],
                         "inside": change[i, 1 + f], "outside": outside[i, f], "contrast": contrast[i, f],
                         "contrast_pct": percentile(contrast[i, f], null), "contrast_z": zscore(contrast[i, f], null),
                         "change": change[i, 0], "change_pct": effects.at[i, "change_pct"],
                         "change_z": effects.at[i, "change_z"], "inside_chars": inside_chars,
                         "outside_chars": outside_chars, "null": effects.at[i, "null"], "null_size": len(null),
                         "engine": effects.at[i, "engine"]})
    ranking = pd.DataFrame(rows, columns=RANKING_COLUMNS)
    if len(ranking):
        ranking = ranking.sort_values(["feature", "contrast"], ascending=[True, False], kind="stable")
        order = {f: k for k, f in enumerate(features)}
        ranking = ranking.iloc[np.argsort(ranking["feature"].map(order).to_numpy(), kind="stable")]
        ranking.insert(1, "rank", ranking.groupby("feature").cumcount() + 1)
    else:
        ranking.insert(1, "rank", pd.Series(dtype=np.int64))
    return effects, ranking.reset_index(drop=True)


RANKING_COLUMNS = ["feature", "target", "units", "inside", "outside", "contrast", "contrast_pct", "contrast_z",
                   "change", "change_pct", "change_z", "inside_chars", "outside_chars", "null", "null_size", "engine"]


def ablation_values(units, ckpt, reference) -> dict:
    """The value each unit is ablated to (rnnviz.intervene.ablation): 0 for c, h and the
    tanh points, a sigmoid gate's mean over ``reference`` (a dump, a text file or
    "heldout"; never the evaluated text)."""
    from .intervene import ablation, resolve
    specs = [ablation(unit_name(point_name(layer, kind), index)) for layer, kind, index in sorted(units)]
    if reference is None:
        gates = [s for s in specs if s.value == "mean"]
        if gates:
            raise RnnvizError(f"{gates[0].text}: a sigmoid gate is ablated to its mean over a reference text (a "
                              f"zero gate is 'closed', not 'off'); name one with --reference (a dump, a text file "
                              f"or 'heldout': the checkpoint's validation text)")
    return {(c.layer, c.kind, c.unit): float(c.value) for c in resolve(specs, ckpt, reference)}


def ablate(options: AblateOptions, checkpoint, texts: list, *, into=None) -> AblationReport:
    """Read, ablate every target and its null in lanes, tabulate. ``into``: the dump of
    exactly ``texts`` from ``checkpoint``, checked before any work."""
    from .checkpoint import load_checkpoint
    from .device import resolve_device
    from .errors_breakdown import check_dump_matches
    from .features import TextIndex, feature_values, select_features
    from .text import read_sources
    o = options
    if o.random < 1:
        raise RnnvizError(f"--random must be at least 1, found {o.random}")
    if o.max_chars is not None and o.max_chars < 2:
        raise RnnvizError(f"--max-chars: expected at least 2 characters, found {o.max_chars}")
    device = resolve_device(o.device)
    ckpt = load_checkpoint(checkpoint, device)
    cfg = ckpt.config
    targets = parse_targets(o.points, o.units, o.sets, num_layers=cfg.num_layers, hidden_size=cfg.hidden_size,
                            cell=cfg.cell)
    keep = _per_char(o.per_char, targets)
    chosen = select_features(o.features, o.extra_features)
    feats = [f for f in chosen if f.kind == "binary"]
    if o.features and len(feats) < len(chosen):
        raise RnnvizError(f"--features: {', '.join(f.name for f in chosen if f.kind != 'binary')} not binary; ablate "
                          f"compares the loss inside and outside binary features (rnnviz analyze --list-features)")
    sources = read_sources(texts, o.encoding, o.errors, max_chars=o.max_chars)
    text = "".join(s.text for s in sources)
    if into is not None:
        check_dump_matches(into, ckpt, text, "TEXTS")
    nulls = null_targets(targets, cfg.hidden_size, o.random, o.seed)
    every, by_units = list(targets), {}
    for t in targets:
        by_units.setdefault(t.units, t)
    for drawn in nulls.values():          # a random unit that is also asked for runs once
        for t in drawn:
            if t.units not in by_units:
                by_units[t.units] = t
                every.append(t)
    nulls = {comp: [by_units[t.units] for t in drawn] for comp, drawn in nulls.items()}
    values = ablation_values({u for t in every for u in t.units}, ckpt, o.reference)
    ti = TextIndex(text, [(s.name, len(s.text)) for s in sources], o.language, o.tab_size)
    masks = np.stack([feature_values(ti, f) > 0 for f in feats]) if feats else np.zeros((0, len(text)), bool)
    ids = [ckpt.vocab.encode(s.text)[0] for s in sources]
    result = _run(ckpt.model, ids, every, values, masks, keep, o)
    effects, ranking = tabulate(result, [f.name for f in feats], nulls)
    info = {"targets": len(targets), "random_targets": sum(t.random for t in every),
            "predicted": int(result.counts[0]), "sources": len(sources), "lanes": o.lanes,
            "backend": result.backend, "engines": dict(Counter(result.engines)), "baseline_bits": float(result.base[0] / max(result.counts[0], 1)),
            "sampled": (f" (the first {len(text):,} characters: --max-chars)" if o.max_chars is not None else ""),
            "null_text": null_text(nulls, o.random, o.seed),
            "features": [f.name for f in feats], "per_char": list(keep), "text_chars": len(text),
            "values": {unit_name(point_name(u[0], u[1]), u[2]): v for u, v in sorted(values.items())},
            "checkpoint_sha256": ckpt.sha256, "options": {k: v for k, v in asdict(o).items()
                                                          if k not in ("extra_features", "progress")}}
    return AblationReport(effects, ranking, result, info)


def engine_text(engines: dict, backend: str) -> str:
    """'768 target(s) through the fused LSTM (...), 12 through the kernel stepper'."""
    parts = []
    if engines.get("fused"):
        parts.append(f"{engines['fused']:,} target(s) through PyTorch's fused LSTM (c or h at 0 as the o gate at 0: "
                     f"engine fused)")
    if engines.get("stepper"):
        parts.append(f"{engines['stepper']:,} target(s) through the {backend} stepper (engine stepper)")
    return ", ".join(parts)


def null_text(nulls: dict, wanted: int, seed: int) -> str:
    """'12 random units of layer0.c; 100 random sets of layer0.c + layer1.c (seed 0)'."""
    parts = []
    for comp, drawn in nulls.items():
        single = len(comp) == 1 and comp[0][2] == 1
        what = f"{len(drawn)} random {'units' if single else 'sets'} of {composition_label(comp)}"
        parts.append(what + (f" (all it has: fewer than {wanted})" if len(drawn) < wanted else ""))
    return "; ".join(parts) + f" (seed {seed})"


def _per_char(spec: str | None, targets: list[Target]) -> list[str]:
    names = [s.strip() for s in (spec or "").split(",") if s.strip()]
    known = {t.name for t in targets}
    for name in names:
        if name not in known:
            raise RnnvizError(f"--per-char {name}: not among the targets; name a unit or set that is ablated "
                              f"(with --points, --units or --set)")
    return list(dict.fromkeys(names))


def _run(model, ids, targets, values, masks, keep, o: AblateOptions) -> LaneResult:
    import torch
    if o.threads < 1:
        raise RnnvizError(f"--threads must be at least 1, found {o.threads}")
    total = sum(max(len(x) - 1, 0) for x in ids) * len(targets)
    bar = None
    if o.progress:
        from tqdm import tqdm
        bar = tqdm(total=total, unit="lane-char", unit_scale=True, desc="ablating", leave=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(o.threads)
    try:
        return run_ablations(model, ids, targets, values, masks, keep, lanes=o.lanes, kernel=o.kernel,
                             engine=o.engine, progress=None if bar is None else bar.update)
    finally:
        torch.set_num_threads(threads)
        if bar is not None:
            bar.close()


def store(path, report: AblationReport) -> None:
    """Replace the dump's /ablation group (docs/dump-format.md)."""
    from .dumpfile import open_dump
    from .outputs import disk_full
    r = report.result
    names = report.info["per_char"]
    change = np.stack([r.per_char[n] for n in names]) if names else np.zeros((0, len(r.baseline)), np.float32)
    per_char = pd.DataFrame({"target": names, "units": [";".join(t.unit_names) for n in names
                                                         for t in r.targets if t.name == n]})

    def fill(g):
        ds = g.create_dataset("loss_change", data=change.astype(np.float32))
        ds.dims[0].label, ds.dims[1].label = "target", "char"
        g.create_dataset("baseline", data=r.baseline.astype(np.float32)).dims[0].label = "char"
    options = {k: report.info[k] for k in ("checkpoint_sha256", "features", "per_char", "values", "options",
                                           "backend", "engines", "lanes", "null_text", "text_chars")}
    with disk_full(path), open_dump(path, "r+") as d:
        d.write_group(GROUP, tables={"effects": report.effects, "ranking": report.ranking,
                                     "per_char": per_char}, options=options, fill=fill)


def ablate_command(options: AblateOptions, checkpoint, texts: list, *, csv=None, into=None, force=False,
                   echo=print) -> AblationReport:
    """``rnnviz ablate``: run, print the tables, write the CSV (the ranking) and /ablation."""
    from .analyze import check_exports, export_ranking
    check_exports(csv, None, force)
    report = ablate(options, checkpoint, texts, into=into)
    echo(report.summary(options.top))
    for target in export_ranking(report.ranking, csv=csv, force=force):
        echo(f"wrote {target} ({len(report.ranking):,} rows: every target x feature)")
    if into is not None:
        store(into, report)
        echo(f"stored /{GROUP} in {into}" + (f" with the per-character change of {', '.join(report.info['per_char'])}"
                                            if report.info["per_char"] else ""))
    return report
