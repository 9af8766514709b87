"""Gate saturation and top-activating contexts: their definitions, and the text around a context.

Saturation (Karpathy et al. 2016): a sigmoid gate is left-saturated below 0.1 and
right-saturated above 0.9. Contexts: per unit, the k strongest and weakest
characters (at most one per 32 consecutive analysed characters, so the k contexts
differ), plus one character at each of a few activation quantiles. Both are found while
the exact analysis streams over the states (rnnviz.stream, rnnviz.exact).
"""
from __future__ import annotations

import pandas as pd

SATURATING = ("gate_i", "gate_f", "gate_o", "gate_r", "gate_z")  # sigmoid gates (LSTM, GRU); g, n are tanh
LEFT, RIGHT = 0.1, 0.9
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)
CONTEXT_COLUMNS = ["unit", "which", "rank", "quantile", "position", "value"]


def with_text(contexts: pd.DataFrame, text: str, before: int = 50, after: int = 10) -> pd.DataFrame:
    """Add ``before``, ``char`` and ``after`` text columns around each position."""
    pos = contexts["position"].to_numpy()
    return contexts.assign(
        before=[text[max(0, p - before):p] for p in pos.tolist()],
        char=[text[p] if p < len(text) else "" for p in pos.tolist()],
        after=[text[p + 1:p + 1 + after] for p in pos.tolist()])
