"""The comparison report: KPI records side by side (DESIGN.md, "KPI record" and ``compare``).

One column per target and one row per KPI, in the terminal (:func:`table`, rich), as
GitHub Markdown (:func:`to_markdown`), as JSON (:func:`to_json`, the full records), as CSV
(:func:`to_csv`, one flat row per target) and as a picture (:func:`plot`, one small bar
chart per KPI). A target that cannot take the model is a column that says "does not fit"
and why. Every text output is deterministic: the same records give the same bytes.

Units are shown with SI prefixes; memory uses decimal prefixes (1 kB = 1000 B), as the
KPI record counts bytes.
"""

from __future__ import annotations

import csv
import io
import json
import math
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .jsonio import dumps, json_default
from .kpi import KPIs

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["table", "to_json", "to_csv", "to_markdown", "plot", "figure", "rows", "format_si", "format_count",
           "DOES_NOT_FIT"]

DOES_NOT_FIT = "does not fit"
#: How much of a non-fitting target's violations a table cell shows.
VIOLATION_WIDTH = 44
VIOLATION_LINES = 8
#: How many resource counts the "key resources" row shows per target.
MAX_RESOURCES = 6
MISSING = "—"

_PREFIXES = [(1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"),
             (1e-15, "f")]


# -- number formatting ---------------------------------------------------------------------------
def _sig(x: float, digits: int = 3) -> str:
    """``x`` with ``digits`` significant digits, without exponent, trailing zeros kept off."""
    if x == 0:
        return "0"
    mag = math.floor(math.log10(abs(x)))
    decimals = max(0, digits - 1 - mag)
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def format_si(value: float | int | None, unit: str, *, lowest: float = 1e-15, highest: float = 1e9) -> str:
    """``0.00123, "s"`` -> ``"1.23 ms"``: three significant digits and an SI prefix between
    ``lowest`` and ``highest`` (so bytes never get a milli prefix)."""
    if value is None:
        return MISSING
    v = float(value)
    if not math.isfinite(v):
        return f"{v} {unit}".strip()
    if v == 0:
        return f"0 {unit}".strip()
    for factor, prefix in _PREFIXES:
        if factor > highest or factor < lowest:
            continue
        if abs(v) >= factor * 0.9995:  # 999.96 µs rounds to 1 ms, not "1000 µs"
            return f"{_sig(v / factor)} {prefix}{unit}".strip()
    factor, prefix = next((f, p) for f, p in reversed(_PREFIXES) if lowest <= f <= highest)
    return f"{_sig(v / factor)} {prefix}{unit}".strip()


def _fmt_time(v: float | None) -> str:
    return format_si(v, "s", highest=1.0)


def format_count(value: float | int | None, unit: str) -> str:
    """``123456, "MAC"`` -> ``"123k MAC"``: a count with a k/M/G/T multiplier."""
    if value is None:
        return MISSING
    v = float(value)
    if not math.isfinite(v):
        return f"{v} {unit}"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= factor * 0.9995:
            return f"{_sig(v / factor)}{prefix} {unit}"
    return f"{_sig(v)} {unit}"


def _fmt_rate(v: float | None) -> str:
    return format_count(v, "inf/s")


def _fmt_energy(v: float | None) -> str:
    return format_si(v, "J", highest=1.0)


def _fmt_power(v: float | None) -> str:
    return format_si(v, "W", highest=1e3)


def _fmt_bytes(v: float | None) -> str:
    return format_si(v, "B", lowest=1.0)


def _fmt_ops(v: float | None, kind: str | None) -> str:
    if v is None:
        return MISSING
    return format_count(v, kind or "ops")


def _fmt_fraction(v: float | None) -> str:
    return MISSING if v is None else f"{_sig(100.0 * float(v))} %"


def _fmt_scalar(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        return _sig(v) if math.isfinite(v) and abs(v) >= 1e-3 else f"{v:.3g}"
    return str(v)


def _fmt_fidelity(r: KPIs) -> str:
    if r.fidelity is None:
        return MISSING
    return f"{r.fidelity.metric}={_fmt_scalar(float(r.fidelity.value))}"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k in sorted(d, key=str):
        v = d[k]
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _fmt_resources(r: KPIs) -> list[str]:
    # The plugin's own order: it lists its headline counts first; nested tables come last.
    scalars = {k: v for k, v in r.resources.items() if not isinstance(v, dict)}
    nested = _flatten({k: v for k, v in r.resources.items() if isinstance(v, dict)})
    flat = {**scalars, **nested}
    if not flat:
        return []
    lines = [f"{k}={_fmt_scalar(v) if not isinstance(v, (list, tuple)) else len(v)}"
             for k, v in list(flat.items())[:MAX_RESOURCES]]
    if len(flat) > MAX_RESOURCES:
        lines.append(f"(+{len(flat) - MAX_RESOURCES} more)")
    return lines


def _violation_lines(r: KPIs, width: int = VIOLATION_WIDTH, max_lines: int = VIOLATION_LINES) -> list[str]:
    """The violations wrapped to ``width`` and cut after ``max_lines`` lines."""
    lines: list[str] = []
    for v in r.violations or ["(no reason given)"]:
        lines.extend(textwrap.wrap(f"• {v}", width=width, subsequent_indent="  ", break_long_words=True) or ["•"])
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [f"… ({len(lines) - max_lines + 1} more lines)"]
    return lines


# -- the rows every tabular report shares ------------------------------------------------------
_ROWS: list[tuple[str, Callable[[KPIs], str]]] = [
    ("latency", lambda r: _fmt_time(r.latency_s)),
    ("throughput", lambda r: _fmt_rate(r.throughput_inf_per_s)),
    ("energy/inference", lambda r: _fmt_energy(r.energy_per_inference_j)),
    ("power", lambda r: _fmt_power(r.power_w)),
    ("weight memory", lambda r: _fmt_bytes(r.weight_memory_bytes)),
    ("activation memory", lambda r: _fmt_bytes(r.activation_memory_bytes)),
    ("ops", lambda r: _fmt_ops(r.ops_per_inference, r.ops_kind)),
    ("utilization", lambda r: _fmt_fraction(r.utilization)),
    ("fidelity", _fmt_fidelity),
    ("accuracy", lambda r: _fmt_fraction(r.accuracy)),
]


def _header(r: KPIs) -> tuple[str, str]:
    """Column title: the config label and, when it differs, the target kind."""
    return (r.config or r.target or "?", r.target if r.target and r.target != r.config else "")


def rows(records: Sequence[KPIs]) -> list[tuple[str, list[list[str]]]]:
    """The report as rows: ``(kpi name, one list of cell lines per record)``.

    A target that does not fit shows "does not fit" in the ``fits`` row, its violations in
    the ``violations`` row (present only when some target does not fit) and "—" elsewhere.
    """
    out: list[tuple[str, list[list[str]]]] = [
        ("fits", [["yes"] if r.fits else [DOES_NOT_FIT] for r in records])]
    if any(not r.fits for r in records):
        out.append(("violations", [_violation_lines(r) if not r.fits else [MISSING] for r in records]))
    for name, fmt in _ROWS:
        out.append((name, [[fmt(r)] if r.fits else [MISSING] for r in records]))
    out.append(("key resources", [(_fmt_resources(r) or [MISSING]) if r.fits else [MISSING] for r in records]))
    return out


def _title(records: Sequence[KPIs]) -> str:
    models = sorted({r.model for r in records if r.model})
    return f"{', '.join(models) or 'model'} on {len(records)} target{'s' if len(records) != 1 else ''}"


def table(records: list[KPIs]) -> "Table":
    """A rich table: one column per target, one row per KPI."""
    from rich.table import Table
    from rich.text import Text

    t = Table(title=Text(_title(records), style="bold"), show_lines=False, title_justify="left")
    t.add_column("KPI", style="bold", no_wrap=True)
    for r in records:
        name, kind = _header(r)
        # Text, not a str: a label like "imc [4 cores]" must not be read as rich markup
        t.add_column(Text(f"{name}\n{kind}" if kind else name), justify="right", overflow="fold",
                     max_width=VIOLATION_WIDTH + 2)
    for name, cells in rows(records):
        rendered = []
        for r, lines in zip(records, cells):
            style = "red" if not r.fits and name in ("fits", "violations") else ""
            rendered.append(Text("\n".join(lines), style=style, justify="left" if name == "violations" else "right"))
        t.add_row(name, *rendered)
    return t


def to_markdown(records: list[KPIs]) -> str:
    """A GitHub Markdown table with targets as columns (cells joined with ``<br>``)."""

    def cell(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")

    heads = [cell(f"{n} ({k})" if k else n) for n, k in (_header(r) for r in records)]
    def line(parts: list[str]) -> str:
        return "| " + " | ".join(parts) + " |"

    lines = [f"**{cell(_title(records))}**", "", line(["KPI", *heads]),
             "|" + "|".join(["---"] + ["---:"] * len(records)) + "|"]
    for name, cells in rows(records):
        lines.append(line([name, *("<br>".join(cell(x) for x in c) for c in cells)]))
    return "\n".join(lines) + "\n"


def to_json(records: list[KPIs]) -> str:
    """The full records as a JSON list (keys sorted, so the text is deterministic)."""
    return dumps([r.to_json() for r in records])


SCALAR_COLUMNS = ["target", "config", "model", "fits", "latency_s", "throughput_inf_per_s",
                  "energy_per_inference_j", "power_w", "weight_memory_bytes", "activation_memory_bytes",
                  "ops_per_inference", "ops_kind", "utilization", "accuracy"]


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # shortest exact round-trip text
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), default=json_default)
    if hasattr(v, "item"):  # numpy scalar
        return _csv_value(v.item())
    return str(v)


def to_csv(records: list[KPIs]) -> str:
    """One row per target: the scalar KPIs, ``fidelity_metric``/``fidelity_value``, every
    ``resources.*`` key (flattened with dots, the union over targets, sorted) and the
    violations joined by "; "."""
    flats = [_flatten(r.resources) for r in records]
    res_keys = sorted({k for f in flats for k in f})
    header = SCALAR_COLUMNS + ["fidelity_metric", "fidelity_value"] + [f"resources.{k}" for k in res_keys] + \
        ["violations"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r, flat in zip(records, flats):
        row = [_csv_value(getattr(r, c)) for c in SCALAR_COLUMNS]
        row += [r.fidelity.metric if r.fidelity else "", _csv_value(float(r.fidelity.value)) if r.fidelity else ""]
        row += [_csv_value(flat.get(k)) for k in res_keys]
        row.append("; ".join(r.violations))
        w.writerow(row)
    return buf.getvalue()


# -- the picture ---------------------------------------------------------------------------------
_PLOTTED: list[tuple[str, Callable[[KPIs], float | None], Callable[[float], str]]] = [
    ("latency", lambda r: r.latency_s, _fmt_time),
    ("throughput", lambda r: r.throughput_inf_per_s, _fmt_rate),
    ("energy / inference", lambda r: r.energy_per_inference_j, _fmt_energy),
    ("power", lambda r: r.power_w, _fmt_power),
    ("weight memory", lambda r: r.weight_memory_bytes, _fmt_bytes),
    ("ops / inference", lambda r: r.ops_per_inference, lambda v: format_count(v, "op")),
    ("utilization", lambda r: r.utilization, _fmt_fraction),
    ("fidelity", lambda r: None if r.fidelity is None else r.fidelity.value, lambda v: _fmt_scalar(float(v))),
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

    labels = [_header(r)[0] for r in records]
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
            note += f"\n{_sig(v / base)}×"
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
