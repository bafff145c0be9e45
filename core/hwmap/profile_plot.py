"""The profiler's figure: three per-layer panels, as the chapter's Figures 3.16-3.18.

Top: parameters per layer (Fig. 3.16); middle: data volume normalized to the input's, on a
log scale (Fig. 3.17); bottom: output bandwidth in Gb/s at the profile's frame rate and bit
widths (Fig. 3.18), with the network input stream as a dashed line. Bars are coloured by
layer kind, so depthwise and pointwise layers (which the chapter contrasts) stand apart.
What a row does not count (an unknown node's parameters, an unknown shape) is left out.
matplotlib is imported here, on use, with the Agg backend (no display needed).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from .errors import HwmapError

if TYPE_CHECKING:
    from .profile_records import Profile

__all__ = ["plot_profile"]

_COLOURS = {"conv": "#1f77b4", "depthwise": "#2ca02c", "pointwise": "#ff7f0e", "fc": "#d62728",
            "matmul": "#9467bd"}
_OTHER = "#7f7f7f"


def plot_profile(prof: "Profile", path: Path) -> Path:
    """Write the three-panel PNG of ``prof`` to ``path`` (parent folders created); return it.

    The PNG carries no timestamp, so the same profile gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = prof.rows
    x = [r.index for r in rows]
    colours = [_COLOURS.get(r.kind, _OTHER) for r in rows]
    s = prof.settings
    fig, axes = plt.subplots(3, 1, figsize=(max(8.0, 0.32 * len(rows) + 2), 9), sharex=True)
    try:
        ax = axes[0]
        ax.bar(x, [_value(r.params) for r in rows], color=colours)
        ax.set_ylabel("parameters")
        ax.set_title(f"{s.model}: parameters per layer (Fig. 3.16)", fontsize=10)
        ax = axes[1]
        # log scale: a zero-volume layer cannot be drawn, it is left out of this panel
        ax.bar(x, [_value(r.data_volume_rel) if r.data_volume_rel else float("nan") for r in rows], color=colours)
        ax.set_yscale("log")
        ax.set_ylabel("data volume / input")
        ax.axhline(1.0, color="black", linewidth=0.8, linestyle=":")
        ax.set_title("data volume per layer, normalized to the input data volume (Fig. 3.17)", fontsize=10)
        ax = axes[2]
        ax.bar(x, [_value(r.bandwidth_bps) / 1e9 for r in rows], color=colours)
        ax.axhline(prof.input.bandwidth_bps / 1e9, color="black", linewidth=0.8, linestyle="--",
                   label=f"input ({prof.input.bits}-bit)")
        ax.set_ylabel("bandwidth (Gb/s)")
        ax.set_xlabel("layer")
        ax.set_title(f"bandwidth per layer at {s.fps:g} FPS, {s.act_bits}-bit activations (Fig. 3.18)", fontsize=10)
        ax.set_xticks(x)
        ax.set_xticklabels([str(i) for i in x], fontsize=7)
        kinds = sorted({r.kind for r in rows}, key=lambda k: (k not in _COLOURS, k))
        handles = [Patch(color=_COLOURS.get(k, _OTHER), label=k) for k in kinds if k in _COLOURS]
        if any(k not in _COLOURS for k in kinds):
            handles.append(Patch(color=_OTHER, label="other"))
        handles.append(ax.get_legend_handles_labels()[0][0])
        ax.legend(handles=handles, fontsize=7, loc="upper right")
        fig.tight_layout()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
        except OSError as e:
            raise HwmapError(f"cannot write the plot: {e.strerror or e}", where=str(path)) from None
    finally:
        plt.close(fig)
    return path


def _value(v: float | None) -> float:
    """A bar's height; NaN (no bar) for what was not counted."""
    return float("nan") if v is None else float(v)
