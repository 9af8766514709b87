"""The ablation toggle: colour the text by how much worse the model predicts each character
when the shown unit is ablated, where ``rnnviz ablate --per-char ... --into`` stored it
(the dump's /ablation group). Read-only: the app never runs the network.
"""
from __future__ import annotations

import numpy as np
from bokeh.models import Toggle

GROUP, ARRAY = "ablation", "loss_change"
OFF_LABEL = "Colour by loss change when ablated"
ON_LABEL = "Showing the loss change when ablated (click for the unit's values)"


class AblationToggle:
    """A toggle that is enabled only for units whose per-character change the dump holds."""

    def __init__(self, view):
        self.view = view
        table = view.group_table(GROUP, "per_char")
        # A target named like a unit is that unit; sets are kept under their own names.
        self.rows = {} if table is None else {str(t): i for i, t in enumerate(table["target"])}
        self._limits: dict[str, float] = {}
        self.toggle = Toggle(label=OFF_LABEL, active=False, disabled=True, width=420, name="ablation_toggle",
                             visible=bool(self.rows))

    def show_for(self, unit: str) -> None:
        """Enable the toggle where ``unit``'s change is stored; switch it off elsewhere."""
        held = unit in self.rows
        self.toggle.disabled = not held
        if not held and self.toggle.active:
            self.toggle.active = False
        self.toggle.label = ON_LABEL if self.toggle.active else (
            OFF_LABEL if held else f"{OFF_LABEL}: not stored for {unit}")

    def values(self, unit: str, start: int, end: int) -> tuple[np.ndarray, float] | None:
        """(change in bits of chars [start, end), symmetric colour limit), or None when the
        toggle is off or the dump does not hold ``unit``'s change."""
        if not self.toggle.active or unit not in self.rows:
            return None
        row = self.rows[unit]
        if unit not in self._limits:           # one scale per unit over the whole text: pages compare
            whole = np.abs(self.view.group_rows(GROUP, ARRAY, row, 0, self.view.n_chars))
            whole = whole[np.isfinite(whole)]
            self._limits[unit] = max(float(np.percentile(whole, 99.5)) if len(whole) else 0.0, 1e-3)
        change = self.view.group_rows(GROUP, ARRAY, row, start, end).astype(np.float32)
        return change, self._limits[unit]
