"""The picture of an exploration: every trial in the plane of the first two objectives, the
Pareto front in colour (one colour and marker per target kind, joined by its staircase),
the dominated trials in grey (in their kind's marker) and those outside the constraints as
grey crosses. With one objective, the trials against their number.
Written with the Agg backend and without version metadata, so the same study gives the same
file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .results import Results, TrialRow, fmt_column

__all__ = ["plot", "figure", "LOG_SPAN"]

#: An axis whose positive values span more than this ratio is logarithmic.
LOG_SPAN = 30.0


def plot(results: Results, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig = figure(results)
    try:
        fig.savefig(Path(path), dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def _log(values: list[float]) -> bool:
    pos = [v for v in values if v > 0]
    return len(pos) == len(values) and len(pos) >= 2 and max(pos) / min(pos) > LOG_SPAN


def figure(results: Results) -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter

    space = results.space
    objectives = space.objectives
    rows = [r for r in results.rows if r.state == "complete"]
    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    kinds = sorted({r.kind for r in results.rows})
    colour = {k: f"C{i % 10}" for i, k in enumerate(kinds)}

    def xy(r: TrialRow) -> tuple[float, float]:
        if len(objectives) == 1:
            return float(r.number), float(r.columns[objectives[0].column] or 0.0)
        return float(r.columns[objectives[0].column] or 0.0), float(r.columns[objectives[1].column] or 0.0)

    marker = {k: "os^Dv<>ph*"[i % 10] for i, k in enumerate(kinds)}
    for kind in kinds:  # dominated: grey, in the kind's marker; outside the constraints: a grey cross
        dominated = [xy(r) for r in rows if r.kind == kind and r.feasible and not r.pareto]
        if dominated:
            ax.scatter([p[0] for p in dominated], [p[1] for p in dominated], s=16, color="0.72", marker=marker[kind],
                       label=f"{kind} (dominated)", zorder=1)
    infeasible = [xy(r) for r in rows if not r.feasible]
    if infeasible:
        ax.scatter([p[0] for p in infeasible], [p[1] for p in infeasible], s=16, color="0.72", marker="x",
                   label="outside the constraints", zorder=1)
    for kind in kinds:
        pts = sorted(xy(r) for r in results.front if r.kind == kind)
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], s=34, color=colour[kind], marker=marker[kind],
                       edgecolor="black", linewidth=0.5, label=f"{kind} (Pareto front)", zorder=3)
    front = sorted(xy(r) for r in results.front)
    if len(objectives) > 1 and len(front) > 1:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="0.3", linewidth=0.8, zorder=2)
    xs = [xy(r)[0] for r in rows]
    ys = [xy(r)[1] for r in rows]
    if len(objectives) == 1:
        ax.set_xlabel("trial")
        ycol = objectives[0]
    else:
        xcol, ycol = objectives[0], objectives[1]
        ax.set_xlabel(f"{xcol.column} ({'lower' if xcol.sign > 0 else 'higher'} is better)")
        if _log(xs):
            ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_column(xcol.column)(v)))
    ax.set_ylabel(f"{ycol.column} ({'lower' if ycol.sign > 0 else 'higher'} is better)")
    if _log(ys):
        ax.set_yscale("log")
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _p: fmt_column(ycol.column)(v)))
    ax.tick_params(labelsize=8)
    ax.grid(True, linewidth=0.3, color="0.85")
    failed = sum(1 for r in results.rows if r.state == "fail")
    models = sorted({str(r.kpis.get("model")) for r in rows if r.kpis.get("model")})
    ax.set_title(f"{', '.join(models) or 'model'}: {len(results.front)} Pareto-optimal of {len(results.rows)} trials"
                 + (f" ({failed} failed, not shown)" if failed else "")
                 + ("; objectives 3+ not drawn" if len(objectives) > 2 else ""), fontsize=10)
    if rows:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
