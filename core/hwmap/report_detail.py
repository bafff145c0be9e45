"""One record in detail: where the cost is, layer by layer, and what moves it.

:func:`layers_table` is what ``hwmap compile`` prints under the summary (like hls4ml's and
FINN's per-layer reports): each layer's (or fused group's) latency, cycles, energy by kind,
share of the total and operations, then the bottleneck. :func:`layers_csv` gives the same
for several records, one row per (target, layer). :func:`sensitivity_table` shows how the
headline KPIs move when each constant marked "assumed" is halved and doubled
(``--sensitivity``).
"""

from __future__ import annotations

import csv
import io
from typing import TYPE_CHECKING, Any, Sequence

from .kpi import ENERGY_KINDS, KPIs
from .numfmt import MISSING, fmt_energy, fmt_fraction, fmt_ops, fmt_scalar, fmt_time, format_si, sig
from .text import rich_text

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["layers_table", "layers_csv", "sensitivity_table", "SENSITIVITY_KPIS"]

#: The figures ``--sensitivity`` follows, with their short names.
SENSITIVITY_KPIS = (("latency_s", "latency"), ("throughput_inf_per_s", "throughput"),
                    ("energy_per_inference_j", "energy"), ("power_w", "power"))


def _kinds(records: Sequence[KPIs]) -> list[str]:
    return [k for k in ENERGY_KINDS if any(layer.energy_j.get(k) for r in records for layer in r.layers)]


def layers_table(record: KPIs) -> "Table":
    """A rich table of ``record.layers`` with a total row, titled with the bottleneck."""
    from rich.table import Table

    kinds = _kinds([record])
    total = record.energy_per_inference_j or 0.0
    title = f"{record.model or 'model'} on {record.config or record.target}: per layer"
    caption = None
    if record.bottleneck is not None:
        b = record.bottleneck
        caption = f"bottleneck: {b.description}" + (f" (layer {b.layer})" if b.layer else "")
    t = Table(title=rich_text(title, style="bold"), title_justify="left", caption=rich_text(caption) if caption else None,
              caption_justify="left")
    t.add_column("layer", no_wrap=True)
    t.add_column("op")
    has_cycles = any(layer.cycles is not None for layer in record.layers)
    for name in ["latency", *(["cycles"] if has_cycles else []), *kinds, "energy", "share", "ops"]:
        t.add_column(name, justify="right")
    for layer in record.layers:
        e = layer.energy_total_j
        cells = [fmt_time(layer.latency_s)]
        if has_cycles:
            cells.append(MISSING if layer.cycles is None else f"{layer.cycles:,}")
        cells += [fmt_energy(layer.energy_j[k]) if k in layer.energy_j else MISSING for k in kinds]
        cells += [fmt_energy(e), fmt_fraction(e / total) if total > 0 else MISSING,
                  fmt_ops(layer.ops, record.ops_kind)]
        t.add_row(rich_text(layer.name), rich_text(layer.op), *cells)
    unattributed = total - sum(layer.energy_total_j for layer in record.layers)
    if record.layers:
        t.add_section()
        cells = [fmt_time(record.latency_s)]
        if has_cycles:
            cells.append("")
        cells += [fmt_energy(record.energy_breakdown.get(k, 0.0)) for k in kinds]
        note = "" if abs(unattributed) <= 1e-6 * max(total, 1e-30) else f" ({fmt_energy(unattributed)} not in a layer)"
        cells += [fmt_energy(total) + note, "100 %" if total > 0 else MISSING,
                  fmt_ops(record.ops_per_inference, record.ops_kind)]
        t.add_row(rich_text("total"), rich_text(""), *cells)
    return t


def layers_csv(records: Sequence[KPIs]) -> str:
    """One row per (target, layer): latency, cycles, energy by kind, total and operations."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["target", "config", "model", "layer", "op", "latency_s", "cycles",
                *(f"energy_j.{k}" for k in ENERGY_KINDS), "energy_j", "ops"])
    for r in records:
        for layer in r.layers:
            w.writerow([r.target, r.config, r.model, layer.name, layer.op, _num(layer.latency_s), _num(layer.cycles),
                        *(_num(layer.energy_j.get(k)) for k in ENERGY_KINDS), _num(layer.energy_total_j),
                        _num(layer.ops)])
    return buf.getvalue()


def _num(v: Any) -> str:
    if v is None:
        return ""
    return repr(float(v)) if isinstance(v, float) else str(v)


def sensitivity_table(record: KPIs) -> "Table":
    """How each headline KPI moves (as a ratio to the record's own) when an assumed constant
    is halved (×0.5) and doubled (×2)."""
    from rich.table import Table

    t = Table(title=rich_text(f"{record.config or record.target}: sensitivity to assumed constants", style="bold"),
              title_justify="left",
              caption="each cell: the KPI with the constant halved → doubled, as a ratio to the value above",
              caption_justify="left")
    t.add_column("constant", no_wrap=True)
    t.add_column("value", justify="right")
    for _, short in SENSITIVITY_KPIS:
        t.add_column(short, justify="right")
    t.add_column("source")
    for path, row in sorted(record.sensitivity.items()):
        value = _with_unit(row.get("value"), str(row.get("unit", "")))
        cells = []
        for key, _ in SENSITIVITY_KPIS:
            cells.append(" → ".join(_ratio(row.get(f), key) for f in ("x0.5", "x2")))
        t.add_row(rich_text(path), rich_text(value), *(rich_text(c) for c in cells), rich_text(str(row.get("source", ""))))
    return t


def _with_unit(value: Any, unit: str) -> str:
    """``1e9, "Hz"`` -> ``"1 GHz"``: SI prefixes for the base units, the plain number otherwise."""
    if unit in ("s", "Hz", "W", "J") and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_si(value, unit)
    if unit == "B" and isinstance(value, (int, float)) and not isinstance(value, bool):
        return format_si(value, unit, lowest=1.0)
    return f"{fmt_scalar(value)} {unit}".strip()


def _ratio(variant: Any, key: str) -> str:
    if not isinstance(variant, dict):
        return MISSING
    if "error" in variant:
        return "n/a"
    v = variant.get(key)
    return MISSING if v is None else f"{sig(float(v))}×"
