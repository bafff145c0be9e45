"""The KPI record's per-layer costs, energy by kind, bottleneck and provenance.

:mod:`.estimate` counts events per node of the legalized graph (a fused group is one node)
and schedules them; this module turns those counts into the record's contract fields
(:class:`hwmap.LayerCost`, ``energy_breakdown``, :class:`hwmap.Bottleneck`,
``provenance.kpis``).

Energy kinds (:data:`hwmap.kpi.ENERGY_KINDS`) from the model's detailed terms
(:data:`DETAIL_KINDS`): ``converters`` = ADC + DAC conversions, ``compute`` = cell reads +
digital operations, ``memory`` = buffer bits, ``communication`` = NoC bit-hops,
``reprogramming`` = write-verify of the cells, per inference only when the mapping needs
several computation cycles (then once per batch of ``schedule.batch`` inferences), ``static`` = ``static_w_per_core × cores used / throughput``
(the chip's static power over one inference's share of time, so that power = energy ×
throughput). A node's static share is its busy time over the sum of all nodes' busy times.
Every event is counted on exactly one node, so the nodes' energies add up to the totals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from hwmap import Bottleneck, LayerCost
from hwmap.kpi import ENERGY_KINDS

from .converters import Converters
from .hardware import EnergyConfig

__all__ = ["NodeEvents", "DETAIL_KINDS", "detail_energy", "energy_by_kind", "layer_costs", "reprogramming_bottleneck",
           "core_bottleneck", "idle_bottleneck", "provenance", "si", "rate"]

#: The model's detailed energy terms and the kind of :data:`hwmap.kpi.ENERGY_KINDS` each is.
DETAIL_KINDS = {"adc": "converters", "dac": "converters", "cells": "compute", "digital": "compute",
                "buffers": "memory", "noc": "communication", "programming": "reprogramming", "static": "static"}

#: Hints for a busy core resource: the config keys that shorten it.
_HINTS = {
    "crossbar reads": "copies of the layer on other cores (mapper.strategy = \"duplicated\"), fewer input bit-planes "
                      "(hardware.dac_bits) or more ADCs (hardware.columns_per_adc) shorten it",
    "digital logic": "the core's digital work runs on one lane per ADC: more ADCs (hardware.columns_per_adc) or a "
                     "faster clock (hardware.clock_hz) shorten it",
    "NoC link": "wider links (noc.link_width_bits) or a faster clock (hardware.clock_hz) shorten it",
}


@dataclass
class NodeEvents:
    """What one node of the legalized graph does per inference, counted by the model or
    measured by the simulator: conversions, cell reads, MACs, digital operations, buffer
    bits, NoC bits and bit-hops of the transfers it is served by, cells it programs, and
    its busy time (``time_s``, the schedule's per-node time)."""

    name: str
    op: str
    crossbar: bool
    time_s: float = 0.0
    mvms: float = 0.0
    adc: float = 0.0
    dac: float = 0.0
    cell_reads: float = 0.0
    macs: float = 0.0
    digital_ops: float = 0.0
    buffer_bits: float = 0.0
    noc_bits: float = 0.0
    noc_bit_hops: float = 0.0
    cells_programmed: int = 0
    resources: dict[str, Any] = field(default_factory=dict)


def detail_energy(ev: NodeEvents, en: EnergyConfig, conv: Converters, rounds: float) -> dict[str, float]:
    """Joules of one node's events by detailed term (:data:`DETAIL_KINDS`, without static):
    events × their per-event constant, the converters' at their resolutions (``conv``);
    programming ``rounds`` times per inference (0 when the weights stay programmed, 1 / batch
    when every batch reprograms every computation cycle)."""
    return {
        "adc": ev.adc * conv.adc_pj * 1e-12,
        "dac": ev.dac * conv.dac_pj * 1e-12,
        "cells": ev.cell_reads * en.cell_read_fj * 1e-15,
        "buffers": ev.buffer_bits * en.buffer_pj_per_bit * 1e-12,
        "noc": ev.noc_bit_hops * en.noc_pj_per_bit_hop * 1e-12,
        "programming": ev.cells_programmed * en.program_pj_per_cell * 1e-12 * rounds,
        "digital": ev.digital_ops * en.digital_pj_per_op * 1e-12,
    }


def energy_by_kind(detail: dict[str, float]) -> dict[str, float]:
    """The detailed terms summed into the canonical kinds, every kind present."""
    out = {kind: 0.0 for kind in ENERGY_KINDS}
    for term, joules in detail.items():
        out[DETAIL_KINDS[term]] += joules
    return out


def layer_costs(events: list[NodeEvents], en: EnergyConfig, conv: Converters, rounds: float, static_j: float,
                noc_scale: float) -> list[LayerCost]:
    """One :class:`hwmap.LayerCost` per node that costs something, in graph order.

    ``static_j`` (the inference's static energy) is split by busy time; ``noc_scale``
    scales each node's analytic bit-hops to the measured total (1 without a measurement)."""
    busy = sum(ev.time_s for ev in events)
    out = []
    for ev in events:
        detail = detail_energy(ev, en, conv, rounds)
        detail["noc"] *= noc_scale
        detail["static"] = static_j * ev.time_s / busy if busy > 0 else 0.0
        kinds = energy_by_kind(detail)
        if not ev.crossbar and ev.time_s <= 0 and not any(kinds.values()):
            continue  # re-indexing (Flatten, Reshape, ...): no time, no energy
        out.append(LayerCost(name=ev.name, op=ev.op, latency_s=ev.time_s, energy_j=kinds, ops=ev.macs,
                             resources=dict(ev.resources)))
    return out


# -- the bottleneck -------------------------------------------------------------------------------------
def si(value: float, unit: str) -> str:
    """``value`` with an SI prefix and three significant digits: ``si(0.00168, "J")`` -> "1.68 mJ"."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g} {unit}"
    prefixes = ((1e9, "G"), (1e6, "M"), (1e3, "k"), (1.0, ""), (1e-3, "m"), (1e-6, "µ"), (1e-9, "n"), (1e-12, "p"),
                (1e-15, "f"))
    for scale, prefix in prefixes:
        if abs(value) >= scale * 0.9995:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value / 1e-15:.3g} f{unit}"


def rate(per_s: float) -> str:
    """A rate with four significant digits, thousands grouped: 254300.1 -> "254,300"."""
    rounded = float(f"{per_s:.4g}")
    return f"{rounded:,.0f}" if rounded >= 1000 else f"{rounded:.4g}"


def _percent(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.0f} %" if whole > 0 else "0 %"


def reprogramming_bottleneck(layers: list[LayerCost], cycles: int, cycles_lower_bound: int, cores_used: int,
                             programming_s: float, latency_s: float, energy_j: float, batch: int = 1) -> Bottleneck:
    """Several computation cycles: every batch of ``batch`` inferences reprograms them all and
    batches cannot overlap (``latency_s`` is the batch's, ``programming_s`` its programming
    time, ``energy_j`` per inference). Names the layer programmed most (most cells written,
    first in graph order on a tie) and, for the time, the layer busy longest."""
    programmed = [x for x in layers if x.resources.get("cells", 0) > 0]
    most = max(programmed, key=lambda x: x.resources["cells"], default=None)
    longest = max(layers, key=lambda x: x.latency_s or 0.0, default=None)
    prog_j = sum(x.energy_j.get("reprogramming", 0.0) for x in layers)
    per = "per inference" if batch == 1 else f"per batch of {batch} inferences"
    overlap = "successive inferences cannot overlap (throughput = 1 / latency)" if batch == 1 else \
        f"the batch's inferences pipeline through each cycle and successive batches cannot overlap " \
        f"(throughput = {batch} / latency)"
    text = (f"reprogramming {cycles} computation cycles {per} (the weights need at least "
            f"{cycles_lower_bound} on {cores_used} core{'s' if cores_used != 1 else ''}): writing the cells takes "
            f"{si(prog_j, 'J')} of {si(energy_j, 'J')} per inference ({_percent(prog_j, energy_j)}) and "
            f"{si(programming_s, 's')} of the {si(latency_s, 's')} latency ({_percent(programming_s, latency_s)}), "
            f"and {overlap}")
    if most is not None:
        text += (f"; the layer programmed most is {most.name!r} ({most.resources['cells']:,} cells, "
                 f"{si(most.energy_j.get('reprogramming', 0.0), 'J')})")
    if longest is not None and longest.latency_s:
        text += f"; the layer busy longest is {longest.name!r} ({si(longest.latency_s, 's')})"
    text += ". More cores or larger crossbars (hardware.cores, hardware.crossbar_rows/_cols) need fewer cycles; " \
            "with one the weights stay programmed; a larger schedule.batch spreads each programming over more " \
            "inferences."
    return Bottleneck(text, "reprogramming", most.name if most is not None else None)


def core_bottleneck(slot: tuple[int, int, str], loads: dict[str, float], busy_s: float,
                    throughput: float) -> Bottleneck:
    """One computation cycle: successive inferences pipeline and the busiest resource of any
    core (``slot`` = cycle, core, resource) sets the pace; names the node loading it most."""
    _, core, what = slot
    name, part = max(loads.items(), key=lambda kv: kv[1])  # the first in graph order on a tie
    text = (f"core {core} {what}: busy {si(busy_s, 's')} per inference, {si(part, 's')} of it for {name!r}; "
            f"successive inferences pipeline, so throughput = 1 / {si(busy_s, 's')} = "
            f"{rate(throughput)} inferences/s. {_HINTS[what][0].upper()}{_HINTS[what][1:]}.")
    return Bottleneck(text, f"core {core} {what}", name)


def idle_bottleneck(latency_s: float) -> Bottleneck:
    """Nothing keeps any array, logic or link busy (the graph only re-indexes its input)."""
    return Bottleneck(f"no crossbar, digital logic or link work: the graph only re-indexes its input; one inference "
                      f"takes the minimum of one clock cycle ({si(latency_s, 's')})", "none", None)


def provenance(ops_measured: bool) -> dict[str, str]:
    """How each headline figure was obtained (see :data:`hwmap.kpi.PROVENANCE_KINDS`)."""
    return {
        "latency_s": "modelled",
        "throughput_inf_per_s": "modelled",
        "energy_per_inference_j": "modelled",
        "power_w": "modelled",
        "weight_memory_bytes": "counted",
        "activation_memory_bytes": "modelled",
        "ops_per_inference": "simulated" if ops_measured else "counted",
        "utilization": "counted",
    }
