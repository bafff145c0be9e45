"""The comparison report: KPI records side by side.

One column per target and one row per KPI, in the terminal (:func:`table`, rich), as
GitHub Markdown (:func:`to_markdown`), as JSON (:func:`to_json`, the full records), as CSV
(:func:`to_csv`, one flat row per target) and as a picture (:func:`plot`, one small bar
chart per KPI, :mod:`hwmap.report_plot`). Besides the headline figures the rows show the
reference model's accuracy on the same samples, the energy split by kind, what limits
throughput, and how many samples calibrated and were scored. A target that cannot take the
model is a column that says "does not fit" and why. Every text output is deterministic:
the same records give the same bytes. The per-layer table of one record is in
:mod:`hwmap.report_detail`.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from typing import TYPE_CHECKING, Any, Callable, Sequence

from .jsonio import dumps, json_default
from .kpi import ENERGY_KINDS, KPIs
from .numfmt import (DOES_NOT_FIT, MISSING, fmt_bytes, fmt_energy, fmt_fraction, fmt_ops, fmt_power, fmt_rate,
                     fmt_scalar, fmt_time, format_count, format_si)
from .report_plot import figure, plot
from .text import rich_text

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["table", "to_json", "to_csv", "to_markdown", "plot", "figure", "rows", "format_si", "format_count",
           "DOES_NOT_FIT", "energy_kinds"]

#: How much of a non-fitting target's violations (or a bottleneck) a table cell shows.
VIOLATION_WIDTH = 44
VIOLATION_LINES = 8
#: How many resource counts the "key resources" row shows per target.
MAX_RESOURCES = 6


def _fmt_fidelity(r: KPIs) -> str:
    if r.fidelity is None:
        return MISSING
    return f"{r.fidelity.metric}={fmt_scalar(float(r.fidelity.value))}"


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
    lines = [f"{k}={fmt_scalar(v) if not isinstance(v, (list, tuple)) else len(v)}"
             for k, v in list(flat.items())[:MAX_RESOURCES]]
    if len(flat) > MAX_RESOURCES:
        lines.append(f"(+{len(flat) - MAX_RESOURCES} more)")
    return lines


def _wrap(texts: list[str], width: int = VIOLATION_WIDTH, max_lines: int = VIOLATION_LINES,
          bullet: str = "• ") -> list[str]:
    """``texts`` wrapped to ``width`` and cut after ``max_lines`` lines."""
    lines: list[str] = []
    for v in texts:
        lines.extend(textwrap.wrap(f"{bullet}{v}", width=width, subsequent_indent="  " if bullet else "",
                                   break_long_words=True)
                     or [bullet.strip()])
    if len(lines) > max_lines:
        lines = lines[: max_lines - 1] + [f"… ({len(lines) - max_lines + 1} more lines)"]
    return lines


def _violation_lines(r: KPIs, width: int = VIOLATION_WIDTH, max_lines: int = VIOLATION_LINES) -> list[str]:
    """The violations wrapped to ``width`` and cut after ``max_lines`` lines."""
    return _wrap(r.violations or ["(no reason given)"], width, max_lines)


def _bottleneck_lines(r: KPIs) -> list[str]:
    b = r.bottleneck
    if b is None:
        return [MISSING]
    lines = _wrap([b.description], bullet="")
    if b.layer:
        lines.append(f"layer: {b.layer}")
    return lines


def _samples(r: KPIs) -> str:
    d = r.provenance.data
    if not d or not d.get("scored_samples"):
        return MISSING
    return f"{d.get('calibration_samples', 0)} cal. / {d['scored_samples']} scored"


def energy_kinds(records: Sequence[KPIs]) -> list[str]:
    """The energy kinds any of ``records`` spends energy on, in :data:`ENERGY_KINDS` order."""
    return [k for k in ENERGY_KINDS if any(r.energy_breakdown.get(k) for r in records)]


def _energy_share(r: KPIs, kind: str) -> str:
    v = r.energy_breakdown.get(kind)
    if v is None:
        return MISSING
    total = r.energy_per_inference_j or 0.0
    share = f" ({fmt_fraction(v / total)})" if total > 0 else ""
    return fmt_energy(v) + share


# -- the rows every tabular report shares ------------------------------------------------------
_ROWS: list[tuple[str, Callable[[KPIs], str]]] = [
    ("latency", lambda r: fmt_time(r.latency_s)),
    ("throughput", lambda r: fmt_rate(r.throughput_inf_per_s)),
    ("energy/inference", lambda r: fmt_energy(r.energy_per_inference_j)),
    ("power", lambda r: fmt_power(r.power_w)),
    ("weight memory", lambda r: fmt_bytes(r.weight_memory_bytes)),
    ("activation memory", lambda r: fmt_bytes(r.activation_memory_bytes)),
    ("ops", lambda r: fmt_ops(r.ops_per_inference, r.ops_kind)),
    ("utilization", lambda r: fmt_fraction(r.utilization)),
    ("fidelity", _fmt_fidelity),
    ("accuracy", lambda r: fmt_fraction(r.accuracy)),
    ("reference accuracy", lambda r: fmt_fraction(r.reference_accuracy)),
    ("samples", _samples),
]


def _header(r: KPIs) -> tuple[str, str]:
    """Column title: the config label and, when it differs, the target kind."""
    return (r.config or r.target or "?", r.target if r.target and r.target != r.config else "")


def rows(records: Sequence[KPIs]) -> list[tuple[str, list[list[str]]]]:
    """The report as rows: ``(kpi name, one list of cell lines per record)``.

    A target that does not fit shows "does not fit" in the ``fits`` row, its violations in
    the ``violations`` row (present only when some target does not fit) and "—" elsewhere.
    Rows nobody has a value for (accuracy without labels, samples without data) are left
    out; the energy rows are one per kind any target spends energy on.
    """
    out: list[tuple[str, list[list[str]]]] = [
        ("fits", [["yes"] if r.fits else [DOES_NOT_FIT] for r in records])]
    if any(not r.fits for r in records):
        out.append(("violations", [_violation_lines(r) if not r.fits else [MISSING] for r in records]))
    for name, fmt in _ROWS:
        cells = [[fmt(r)] if r.fits else [MISSING] for r in records]
        if name in ("reference accuracy", "samples") and all(c == [MISSING] for c in cells):
            continue
        out.append((name, cells))
        if name == "energy/inference":
            for kind in energy_kinds(records):
                out.append((f"  {kind}", [[_energy_share(r, kind)] if r.fits else [MISSING] for r in records]))
    out.append(("bottleneck", [_bottleneck_lines(r) if r.fits else [MISSING] for r in records]))
    out.append(("key resources", [(_fmt_resources(r) or [MISSING]) if r.fits else [MISSING] for r in records]))
    return out


def _title(records: Sequence[KPIs]) -> str:
    models = sorted({r.model for r in records if r.model})
    return f"{', '.join(models) or 'model'} on {len(records)} target{'s' if len(records) != 1 else ''}"


def table(records: list[KPIs]) -> "Table":
    """A rich table: one column per target, one row per KPI."""
    from rich.table import Table

    t = Table(title=rich_text(_title(records), style="bold"), show_lines=False, title_justify="left")
    t.add_column("KPI", style="bold", no_wrap=True)
    for r in records:
        name, kind = _header(r)
        # Text, not a str: a label like "imc [4 cores]" must not be read as rich markup
        t.add_column(rich_text(f"{name}\n{kind}" if kind else name), justify="right", overflow="fold",
                     max_width=VIOLATION_WIDTH + 2)
    for name, cells in rows(records):
        rendered = []
        for r, lines in zip(records, cells):
            style = "red" if not r.fits and name in ("fits", "violations") else ""
            left = name in ("violations", "bottleneck")
            rendered.append(rich_text("\n".join(lines), style=style, justify="left" if left else "right"))
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
                  "ops_per_inference", "ops_kind", "utilization", "accuracy", "reference_accuracy"]


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
    """One row per target: the scalar KPIs, ``fidelity_metric``/``fidelity_value``, the
    energy by kind (``energy_j.<kind>``), the bottleneck and its layer, the calibration and
    scored sample counts, every ``resources.*`` key (flattened with dots, the union over
    targets, sorted) and the violations joined by "; "."""
    flats = [_flatten(r.resources) for r in records]
    res_keys = sorted({k for f in flats for k in f})
    header = SCALAR_COLUMNS + ["fidelity_metric", "fidelity_value"] + [f"energy_j.{k}" for k in ENERGY_KINDS] + \
        ["bottleneck", "bottleneck_layer", "calibration_samples", "scored_samples"] + \
        [f"resources.{k}" for k in res_keys] + ["violations"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r, flat in zip(records, flats):
        row = [_csv_value(getattr(r, c)) for c in SCALAR_COLUMNS]
        row += [r.fidelity.metric if r.fidelity else "", _csv_value(float(r.fidelity.value)) if r.fidelity else ""]
        row += [_csv_value(r.energy_breakdown.get(k)) for k in ENERGY_KINDS]
        row += [r.bottleneck.description if r.bottleneck else "", (r.bottleneck.layer or "") if r.bottleneck else ""]
        row += [_csv_value(r.provenance.data.get(k)) for k in ("calibration_samples", "scored_samples")]
        row += [_csv_value(flat.get(k)) for k in res_keys]
        row.append("; ".join(r.violations))
        w.writerow(row)
    return buf.getvalue()
