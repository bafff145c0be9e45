"""The pipeline's pictures: how balanced it is, and how it fills over time.

Two panels, written when the user asks (``hwmap compile --plot F.png``, or
:func:`plot_pipeline` into any path): on the left, the cycles per frame of every layer as
bars against the initiation interval (the analytic II as a line, the simulated one dashed):
a balanced pipeline has every bar near the line; on the right, the occupancy chart of the
cycle simulation: for each engine (a row) and each simulated frame, the span from its first
item's start to its last item's end, so the frames entering, overlapping and draining show.
matplotlib is imported here, on use, with the Agg backend; the PNG carries no timestamp.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["plot_pipeline"]


def plot_pipeline(m: Any, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    specs, cycles, sim = m.specs, m.cycles, m.sim
    names = [s.name for s in specs]
    n = len(names)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, max(4.0, 0.28 * n + 1.5)))
    colors = ["tab:red" if i == m.bottleneck else "tab:blue" for i in range(n)]
    ax1.barh(range(n), cycles, color=colors)
    ax1.axvline(m.analytic_ii, color="k", lw=1, label=f"analytic II {m.analytic_ii:,}")
    ax1.axvline(sim.ii, color="k", lw=1, ls="--", label=f"simulated II {sim.ii:,.0f}")
    ax1.set_yticks(range(n), names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("cycles per frame")
    ax1.set_title(f"cycles per layer ({m.tuned.used['multipliers']:,} of {m.cfg.hardware.multipliers:,} "
                  "multipliers)")
    ax1.legend(fontsize=7, loc="lower right")
    cmap = plt.get_cmap("tab10")
    for i, name in enumerate(names):
        for fr, (start, end) in enumerate(sim.timeline.get(name, [])):
            ax2.barh(i, max(end - start, 1e-9), left=start, color=cmap(fr % 10), alpha=0.75, height=0.8)
    ax2.set_yticks(range(n), names, fontsize=7)
    ax2.invert_yaxis()
    ax2.set_xlabel("cycle")
    ax2.set_title(f"pipeline occupancy: {sim.frames} frames (one colour each), latency {sim.latency:,.0f} cycles")
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    plt.close(fig)
    return path
