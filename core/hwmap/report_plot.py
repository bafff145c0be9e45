"""The comparison as a picture: one small bar chart per KPI, targets on the x axis."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

from .kpi import KPIs
from .numfmt import DOES_NOT_FIT, fmt_bytes, fmt_energy, fmt_fraction, fmt_power, fmt_rate, fmt_scalar, fmt_time, format_count, sig

__all__ = ["plot", "figure", "LOG_SPAN"]



def _label(r: KPIs) -> str:
    return r.config or r.target or "?"


_PLOTTED: list[tuple[str, Callable[[KPIs], float | None], Callable[[float], str]]] = [
    ("latency", lambda r: r.latency_s, fmt_time),
    ("throughput", lambda r: r.throughput_inf_per_s, fmt_rate),
    ("energy / inference", lambda r: r.energy_per_inference_j, fmt_energy),
    ("power", lambda r: r.power_w, fmt_power),
    ("weight memory", lambda r: r.weight_memory_bytes, fmt_bytes),
    ("ops / inference", lambda r: r.ops_per_inference, lambda v: format_count(v, "op")),
    ("utilization", lambda r: r.utilization, fmt_fraction),
    ("fidelity", lambda r: None if r.fidelity is None else r.fidelity.value, lambda v: fmt_scalar(float(v))),
]
#: A KPI whose values span more than this ratio is drawn on a log axis.
LOG_SPAN = 100.0


def plot(records: list[KPIs], path: Path) -> None:
    """Draw :func:`figure` into ``path`` (PNG, or any format matplotlib knows by suffix).

    Written with the Agg backend and without version metadata, so the same records give
    the same file.
    """
    import matplotlib.pyplot as plt

    fig = figure(records)
    try:
        fig.savefig(Path(path), dpi=100, metadata={"Software": None})
    finally:
        plt.close(fig)


def figure(records: Sequence[KPIs]) -> Any:
    """A matplotlib figure: a grid of small bar charts, one per KPI, targets on the x axis.

    Each bar is annotated with its value and, normalized, its ratio to the smallest value
    of the chart (``1×`` is the lowest). The axis is logarithmic where the values span
    more than 100×. A target that does not fit is a hatched empty bar labelled "does not
    fit"; a KPI a target did not report is labelled "n/a".
    """
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    labels = [_label(r) for r in records]
    n = len(_PLOTTED)
    ncols = 4
    nrows = math.ceil(n / ncols)
    width = max(12.0, 1.0 + ncols * max(2.6, 0.7 * len(records)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, 3.4 * nrows), squeeze=False)
    for ax, (title, get, fmt) in zip(axes.flat, _PLOTTED):
        _bar_chart(ax, records, labels, title, get, fmt)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    models = sorted({r.model for r in records if r.model})
    fig.suptitle(f"{', '.join(models) or 'model'}: KPIs per target", fontsize=12)
    fig.tight_layout()
    return fig


def _bar_chart(ax: Any, records: Sequence[KPIs], labels: list[str], title: str,
               get: Callable[[KPIs], float | None], fmt: Callable[[float], str]) -> None:
    values: list[float | None] = []
    for r in records:
        v = get(r) if r.fits else None
        values.append(float(v) if v is not None and math.isfinite(float(v)) else None)
    present = [v for v in values if v is not None]
    positive = [v for v in present if v > 0]
    log = len(positive) >= 2 and max(positive) / min(positive) > LOG_SPAN
    top = max(present) if present else 1.0
    top = top if top > 0 else 1.0
    base = min(positive) if positive else None
    xs = list(range(len(records)))
    for x, r, v in zip(xs, records, values):
        if not r.fits:
            ax.bar(x, top, color="none", edgecolor="0.45", hatch="//", linewidth=0.8)
            ax.text(x, top * (0.5 if not log else 0.3), DOES_NOT_FIT, ha="center", va="center", rotation=90,
                    fontsize=7, color="0.3")
            continue
        if v is None:
            ax.text(x, top * 0.05 if not log else (base or 1.0), "n/a", ha="center", va="bottom", fontsize=7,
                    color="0.4")
            continue
        height = v if not log or v > 0 else (base or 1.0)
        ax.bar(x, height, color="C0" if v > 0 else "0.8")
        note = fmt(v)
        if base and v > 0 and len(positive) > 1:
            note += f"\n{sig(v / base)}×"
        ax.text(x, height, note, ha="center", va="bottom", fontsize=7)
    from matplotlib.ticker import FuncFormatter

    ax.set_xlim(-0.6, len(records) - 0.4)
    if log:
        ax.set_yscale("log")
        ax.set_ylim(min(positive) / 2.0, top * 8.0)
    else:
        ax.set_ylim(0, top * 1.3)
    ax.set_title(title + (" (log)" if log else ""), fontsize=9)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, rotation=30 if len(records) > 2 else 0, ha="right" if len(records) > 2 else "center",
                       fontsize=8)
    ax.tick_params(axis="y", labelsize=7)
    ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _pos: fmt(y) if y > 0 else "0"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda y, _pos: ""))
