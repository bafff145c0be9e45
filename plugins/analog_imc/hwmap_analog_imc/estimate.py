"""KPIs of an analog IMC mapping: an analytic event-count, timing and energy model.

Every constant comes from the target config (``hardware``, ``noc``, ``energy``); every
count from the mapping (:class:`~.mapper.MapResult` placements). Where the simulator measured
``activity`` (keys in :data:`ACTIVITY_KEYS`), measured counts replace the analytic ones.

Counts (per inference; ``B = ceil(input_bits / dac_bits)`` input bit-planes, ISAAC-style
bit-serial inputs; ``P_r`` the output positions copy ``r`` of a layer computes: copy ``k``
takes positions ``k·⌈P/R⌉ ..``, as the emitter schedules them)

* a block (placement) of ``R`` used rows and ``C = filters · cols_per_filter`` used
  columns performs ``reads = P_r · B`` crossbar reads (MVMs); each read drives ``R`` DAC
  conversions, converts ``C`` columns through the ADCs and reads ``R · C`` cells;
* a read takes ``t_DAC + read_pulse_s + a · t_ADC``, ``a`` the most of the block's columns
  any one ADC converts (``t_DAC``, ``t_ADC``: the DACs' settling and one conversion at
  ``dac_bits`` / ``adc_bits``, :mod:`.converters`) (``columns_per_adc`` neighbouring columns share one ADC; ISAAC,
  Shafiee et al., ISCA 2016, and PUMA, Ankit et al., ASPLOS 2019: ~100 ns per 128-column
  ADC-multiplexed read);
* buffers: per position a block reads its input vector (``R · input_bits`` bits) and writes
  its outputs (``filters · w`` bits, ``w = input_bits`` when the block holds whole filters,
  else a partial sum of :func:`psum_bits`); digital nodes read and write their tensors once;
* digital operations: one shift-and-add per ADC conversion (bit slices, bit-planes,
  differential pairs), one add per extra partial sum of a filter split over row tiles, and
  per output value its bias, fused post-ops, re-quantization and, with offset encoding,
  the offset correction (plus ``Σx`` over each input vector); digital nodes one op per
  output element (pooling: one per window element, global pooling: one per input element);
* NoC: exactly the transfers the emitter writes (:func:`~.dataflow.plan_transfers` on the same
  blocks): a copy's filters are accumulated, post-processed and re-quantized on the core
  holding all their row tiles (else on the core their partial sums go to, :func:`psum_bits`
  each); each core reading a tensor receives only what it reads of it (a convolution copy:
  its row tiles' channels on the input rows its positions cover; a Gemm/MatMul copy: its
  rows; a digital op: all of it) from the cores holding those pieces, at the tensor's
  quantization bits; graph inputs come from off chip. ``hops`` = XY-routing distance on
  the mesh. The accumulation and post-op work counts on the accumulating core's logic.

Time: :mod:`.schedule` (layers pipelined through line buffers within a computation cycle;
when there are several cycles, every cycle reprogrammed once per batch of
``schedule.batch`` inferences, which stream through it); latency (the batch's) and
throughput (``batch / latency``) come from it.

Energy: ADC conversions × the ADC's energy at ``adc_bits`` and DAC conversions × the DAC's
at ``dac_bits`` (:mod:`.converters`: Walden and Schreier bounds, binary-weighted DAC),
cell reads × ``cell_read_fj``, buffer bits × ``buffer_pj_per_bit``, NoC bits × hops ×
``noc_pj_per_bit_hop``, digital ops × ``digital_pj_per_op`` and programming: cells × rounds ×
``program_pj_per_cell``, with 1 / ``schedule.batch`` rounds per inference when the model
needs several cycles (the simulator's ``programmings_per_inference`` where it ran); when it
fits in one, programming is a one-time cost (``resources["programming_one_time_j"]``) left
out of the per-inference energy; static energy ``(static_w_per_core + buffer leakage) ×
cores used / throughput``. Power = energy × throughput. The record's per-layer costs, energy kinds,
bottleneck and provenance: :mod:`.breakdown`; its assumptions: :mod:`.assumptions`.

Measured activity: per-layer MVMs, ADC and DAC conversions replace the analytic counts (DAC
conversions with zero-bit skipping); cell reads scale with the measured DAC conversions
(an undriven row draws no current), MACs and a layer's read time with its measured MVMs,
NoC energy with the measured bits (or bit-hops). The simulator's ``cycle_time_s`` (its own
data-independent timing: slowest core plus serial transfers, no pipelining) is reported as
``resources["simulator_cycle_time_s"]``; the latency stays this model's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Hashable

from hwmap import Graph, KPIs, Node, Provenance, Target

from .assumptions import assumptions
from .breakdown import (NodeEvents, core_bottleneck, detail_energy, energy_by_kind, idle_bottleneck, layer_costs,
                        provenance, reprogramming_bottleneck)
from .converters import Converters
from .dataflow import FlowDigital, FlowLayer, accumulations, copy_positions, plan_transfers, psum_bits
from .hardware import AnalogIMCConfig, Blueprint
from .layers import CrossbarLayer
from .mapper import MapResult, Placement
from .mapping import AnalogMapping
from .schedule import Timing, schedule
from .working_set import buffer_bytes, conv_fill_fraction

__all__ = ["estimate", "CostModel", "ACTIVITY_KEYS", "adc_share", "replica_positions", "psum_bits",
           "conv_fill_fraction"]

#: What the simulator's ``Simulation.activity`` may carry (all per inference).
ACTIVITY_KEYS = ("samples", "mvms", "adc_conversions", "dac_conversions", "cycle_time_s", "noc_bits",
                 "programmings_per_inference")
#: Re-indexing ops: no data moves, no time.
_FREE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Constant"})
#: Ops that need their whole input before their first output.
_WHOLE_INPUT_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "Softmax", "Transpose", "ReduceMean"})


# -- small formulas ---------------------------------------------------------------------------------
def adc_share(spans: list[tuple[int, int]], columns_per_adc: int) -> int:
    """Most columns one ADC converts in a read of the column ranges ``spans`` (``(first column,
    count)`` each), when ADC ``a`` serves columns ``[a · columns_per_adc, (a + 1) · columns_per_adc)``:
    the conversions that ADC performs one after the other."""
    per_adc: dict[int, int] = {}
    for first, cols in spans:
        for a in range(first // columns_per_adc, (first + cols - 1) // columns_per_adc + 1) if cols > 0 else ():
            lo, hi = max(first, a * columns_per_adc), min(first + cols, (a + 1) * columns_per_adc)
            per_adc[a] = per_adc.get(a, 0) + hi - lo
    return max(per_adc.values(), default=0)


def _read_groups(blocks: list[Placement]) -> dict[tuple[int, ...], list[Placement]]:
    """Blocks read together: same computation cycle, core, copy, group, row tile and element
    row (they share word lines and input vector, as the emitter's READ instructions group them)."""
    out: dict[tuple[int, ...], list[Placement]] = {}
    for p in blocks:
        out.setdefault((p.cycle, p.core, p.replica, p.group, p.row_start, p.row_count, p.elem_row), []).append(p)
    return out


def replica_positions(positions: int, replicas: int, replica: int) -> int:
    """Positions copy ``replica`` of ``replicas`` computes: copy ``k`` takes positions
    ``k·⌈P/R⌉ ..`` (as the emitter schedules them), the last copies possibly fewer or none."""
    return copy_positions(positions, replicas, replica)[1]


# -- the per-node model -------------------------------------------------------------------------------
@dataclass
class _Transfer:
    """One NoC transfer per inference; ``bits`` rounded up to whole bytes (the emitter's NOC
    records count bytes)."""

    node: str
    cycle: int
    src: int
    dst: int
    bits: float
    hops: int

    def __post_init__(self) -> None:
        self.bits = 8.0 * math.ceil(self.bits / 8 - 1e-9)


@dataclass
class _NodeCost:
    """What one node costs; crossbar counts are per inference."""

    name: str
    crossbar: bool
    cycles: list[int]
    positions: int = 1
    fill: float = 0.0
    mvms: float = 0.0
    adc: float = 0.0
    dac: float = 0.0
    cells: float = 0.0
    macs: float = 0.0
    buffer_bits: float = 0.0
    digital_ops: float = 0.0
    # (cycle, core) -> seconds of crossbar reads / digital logic
    array_s: dict[tuple[int, int], float] = field(default_factory=dict)
    logic_ops: dict[tuple[int, int], float] = field(default_factory=dict)


class CostModel:
    """Every node's counts per inference (:class:`_NodeCost`) and the NoC transfers of a mapping."""

    def __init__(self, mapping: AnalogMapping) -> None:
        self.m = mapping
        self.cfg: AnalogIMCConfig = mapping.config
        self.hw = self.cfg.hardware
        self.g: Graph = mapping.graph
        self.bp: Blueprint = mapping.blueprint
        self.res: MapResult = mapping.result
        self.planes = math.ceil(self.hw.input_bits / self.hw.dac_bits)
        self.conv = Converters.of(self.cfg)
        # a read: the DACs settle, the read pulse, then the most columns one ADC converts in turn
        self.read_fixed_s = self.conv.dac_s + self.hw.read_pulse_s
        self.batch = self.g.tensor(self.g.inputs[0]).shape[0] if self.g.inputs and self.g.tensor(
            self.g.inputs[0]).shape else 1
        self.layer_by_node = {lay.node: lay for lay in mapping.layers}
        self.layer_by_index = {lay.index: lay for lay in mapping.layers}
        self.replicas = self.res.replicas
        self.blocks: dict[str, list[Placement]] = {lay.node: [] for lay in mapping.layers}
        for p in self.res.placements:
            self.blocks[self.layer_by_index[p.layer].node].append(p)
        self.costs: dict[str, _NodeCost] = {}
        self.order = {node.name: i for i, node in enumerate(self.g.nodes)}
        self.flow: dict[str, FlowLayer] = {}
        self.transfers: list[_Transfer] = []
        self.cycle_of_tensor: dict[str, int] = {t: 0 for t in self.g.inputs}
        self.producer: dict[str, str] = {}
        for node in self.g.nodes:
            cost = self._crossbar(node) if node.name in self.layer_by_node else self._digital(node)
            self.costs[node.name] = cost
            for t in node.outputs:
                self.producer[t] = node.name
                self.cycle_of_tensor[t] = max(cost.cycles)
        self._transfers()

    # per-inference element count of a tensor (the batch axis divided out)
    def _elements(self, tensor: str) -> float:
        shape = self.g.tensor(tensor).shape
        return math.prod(shape) / max(1, self.batch) if shape else 1.0

    def _out_width(self, lay: CrossbarLayer, p: Placement) -> int:
        if p.row_count >= lay.rows:
            return self.hw.input_bits
        return psum_bits(self.hw.input_bits, self.hw.weight_bits, lay.rows)

    def _crossbar(self, node: Node) -> _NodeCost:
        hw, lay = self.hw, self.layer_by_node[node.name]
        blocks = self.blocks[node.name]
        r_total = self.replicas.get(lay.index, 1)
        cost = _NodeCost(node.name, True, sorted({p.cycle for p in blocks}) or [0], lay.positions)
        cost.fill = conv_fill_fraction(node, self.g.tensor(node.inputs[0]).shape) \
            if node.op.endswith("Conv") else (1.0 if lay.positions <= 1 else 1.0 / lay.positions)
        self.flow[node.name] = flow = self._flow_layer(node, lay, blocks, r_total)
        for key, group in _read_groups(blocks).items():
            cycle, core, replica, _, _, row_count, _ = key
            pos = replica_positions(lay.positions, r_total, replica)
            reads = pos * self.planes
            spans = [(p.elem_col * self.bp.element_cols, p.filter_count * lay.cols_per_filter) for p in group]
            cols = sum(c for _, c in spans)
            t_read = self.read_fixed_s + adc_share(spans, hw.columns_per_adc) * self.conv.adc_s
            slot = (cycle, core)
            cost.array_s[slot] = cost.array_s.get(slot, 0.0) + reads * t_read
            cost.mvms += reads
            cost.adc += reads * cols
            cost.dac += reads * row_count
            cost.cells += reads * row_count * cols
            cost.buffer_bits += pos * row_count * hw.input_bits  # the input vector, read once per position
            # shift-and-add of every conversion, on the core that converted it
            cost.logic_ops[slot] = cost.logic_ops.get(slot, 0.0) + reads * cols
            for p in group:
                cost.macs += pos * p.row_count * p.filter_count
                width = self._out_width(lay, p)
                cost.buffer_bits += pos * p.filter_count * width
        # accumulation, post-ops and re-quantization run where each filter range of each copy is
        # accumulated (the emitter's ACCUM destinations): on its own core when it holds all the
        # range's row tiles, else on the core its partial sums go to
        post = self._post_ops_per_output(node)
        input_sums = 0.0
        if hw.weight_encoding == "offset":
            # one correction per output; Σx of each input vector is summed on the input path as
            # the vector is loaded into the DAC registers, so it costs energy but no lane time
            post += 1
            input_sums = lay.positions * lay.groups * lay.rows
        psum_adds = out_ops = 0.0
        for a in accumulations(flow):
            covered = sum(flow.blocks[j].filter_count for j in a.blocks)
            adds, outs = a.pos_count * (covered - a.filter_count), a.pos_count * a.filter_count * post
            slot = (a.cycle, a.core)
            cost.logic_ops[slot] = cost.logic_ops.get(slot, 0.0) + adds + outs
            psum_adds += adds
            out_ops += outs
        cost.digital_ops = cost.adc + psum_adds + out_ops + input_sums
        return cost

    def _flow_layer(self, node: Node, lay: CrossbarLayer, blocks: list[Placement], replicas: int) -> FlowLayer:
        """The layer as the emitter's dataflow planner sees it (same blocks, same order)."""
        x = node.inputs[0]
        geo: Any = None
        if node.op.endswith("Conv"):
            from hwmap.ops.conv import conv_geometry

            b = node.params.get("B")
            geo, _ = conv_geometry(node, self.g.tensor(x).shape, node.params["W"].shape,
                                   None if b is None else b.shape)
        return FlowLayer(
            self.order[node.name], node.name, x, node.outputs[0], tuple(node.inputs[1:]), lay.groups, lay.rows,
            lay.filters, lay.positions, replicas, psum_bits(self.hw.input_bits, self.hw.weight_bits, lay.rows),
            tuple(geo.kernel) if geo else (), tuple(geo.strides) if geo else (),
            tuple(geo.pads_begin) if geo else (), tuple(geo.dilations) if geo else (),
            tuple(geo.out) if geo else (), tuple(blocks))

    @staticmethod
    def _post_ops_per_output(node: Node) -> int:
        """Digital operations per output value: bias, fused post-ops, re-quantization."""
        bias = 1 if ("B" in node.params and node.op.endswith("Conv")) or "C" in node.params else 0
        return bias + max(0, len(node.fused) - 1) + 1

    def _digital(self, node: Node) -> _NodeCost:
        hw = self.hw
        core = self.m.digital.get(node.name, 0)
        cycle = max((self.cycle_of_tensor.get(t, 0) for t in node.inputs), default=0)
        out = node.outputs[0] if node.outputs else None
        out_shape = self.g.tensor(out).shape if out else ()
        positions = int(math.prod(out_shape[2:])) if len(out_shape) > 2 else 1
        cost = _NodeCost(node.name, False, [cycle], positions)
        if node.op in _FREE_OPS:
            return cost
        out_elems = sum(self._elements(t) for t in node.outputs)
        in_elems = sum(self._elements(t) for t in node.inputs)
        if node.op in ("MaxPool", "AveragePool"):
            ops = out_elems * math.prod(int(k) for k in node.attrs.get("kernel_shape", [1]))
        elif node.op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean"):
            ops = in_elems
        elif node.op == "Softmax":
            ops = 3 * out_elems  # exponent, sum, divide
        else:
            ops = out_elems
        cost.digital_ops = ops
        cost.logic_ops[(cycle, core)] = ops
        cost.buffer_bits = (in_elems + out_elems) * hw.input_bits
        if node.op in _WHOLE_INPUT_OPS:
            cost.fill = 1.0
        elif node.op in ("MaxPool", "AveragePool") and node.inputs:
            cost.fill = conv_fill_fraction(node, self.g.tensor(node.inputs[0]).shape)
        return cost

    def _transfers(self) -> None:
        """The emitter's NOC records (:func:`~.dataflow.plan_transfers` on the same blocks, digital
        cores and cycles): partial sums of filter ranges split over cores to the core
        accumulating them; finished values, per copy, only the part of each tensor a core
        reads, at the tensor's quantization bits (``input_bits`` without one)."""
        shapes: dict[Hashable, tuple[int, ...]] = {name: tuple(t.shape) for name, t in self.g.tensors.items()}
        bits: dict[Hashable, int] = {name: (t.quant.bits if t.quant is not None else self.hw.input_bits)
                                     for name, t in self.g.tensors.items()}
        layers = list(self.flow.values())  # filled in graph order
        digital = [FlowDigital(self.order[node.name], node.name, tuple(node.inputs), tuple(node.outputs),
                               self.m.digital.get(node.name, 0), self.costs[node.name].cycles[0])
                   for node in self.g.nodes if node.name not in self.layer_by_node]
        for tr in plan_transfers(shapes, bits, layers, digital):
            self.transfers.append(_Transfer(tr.node, tr.cycle, tr.src, tr.dst, tr.bits, self.bp.hops(tr.src, tr.dst)))


# -- the estimate -----------------------------------------------------------------------------------------
def _number(activity: dict[str, Any] | None, key: str) -> float | None:
    v = (activity or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None


def _measured(activity: dict[str, Any] | None, key: str) -> dict[str, float]:
    v = (activity or {}).get(key)
    if not isinstance(v, dict):
        return {}
    return {str(k): float(x) for k, x in v.items() if isinstance(x, (int, float)) and math.isfinite(x) and x >= 0}


def _node_events(model: CostModel, timing: Timing, activity: dict[str, Any] | None) -> list[NodeEvents]:
    """Every node's events per inference, in graph order: the model's counts, replaced by the
    simulator's per-layer MVMs, ADC and DAC conversions where it measured them (cell reads
    scale with the measured DAC conversions: an undriven row draws no current; MACs with
    the measured MVMs)."""
    m_mvm, m_adc, m_dac = (_measured(activity, k) for k in ("mvms", "adc_conversions", "dac_conversions"))
    noc_bits: dict[str, float] = {}
    noc_hops: dict[str, float] = {}
    for t in model.transfers:
        noc_bits[t.node] = noc_bits.get(t.node, 0.0) + t.bits
        noc_hops[t.node] = noc_hops.get(t.node, 0.0) + t.bits * t.hops
    placed = {lm.node: lm for lm in model.res.layers}
    out = []
    for node in model.g.nodes:
        c = model.costs[node.name]
        ev = NodeEvents(node.name, node.op, c.crossbar, time_s=timing.node_s.get(node.name, 0.0),
                        digital_ops=c.digital_ops, buffer_bits=c.buffer_bits, noc_bits=noc_bits.get(node.name, 0.0),
                        noc_bit_hops=noc_hops.get(node.name, 0.0))
        if c.crossbar:
            ev.mvms = m_mvm.get(node.name, c.mvms)
            ev.adc = m_adc.get(node.name, c.adc)
            ev.dac = m_dac.get(node.name, c.dac)
            ev.cell_reads = c.cells * (ev.dac / c.dac if c.dac else 1.0)
            ev.macs = c.macs * (ev.mvms / c.mvms if c.mvms else 1.0)
            lm = placed[node.name]
            ev.cells_programmed = lm.cells
            ev.resources = {
                "blocks": len(model.blocks[node.name]), "elements": lm.elements, "cells": lm.cells,
                "copies": lm.replicas, "row_tiles": lm.row_tiles, "cores": sorted({k for _, k in lm.slots}),
                "computation_cycles": sorted({cy for cy, _ in lm.slots}), "mvms": ev.mvms, "adc_conversions": ev.adc,
                "dac_conversions": ev.dac, "cell_reads": ev.cell_reads}
        else:
            ev.resources = {"core": model.m.digital.get(node.name, 0), "computation_cycles": list(c.cycles)}
        ev.resources.update({"digital_ops": ev.digital_ops, "buffer_bits": ev.buffer_bits, "noc_bits": ev.noc_bits})
        out.append(ev)
    return out


def _total(events: list[NodeEvents], noc_bit_hops: float, cells_programmed: int) -> NodeEvents:
    """The events of the whole inference: the nodes' summed, NoC bit-hops as measured."""
    t = NodeEvents("total", "", False, noc_bit_hops=noc_bit_hops, cells_programmed=cells_programmed)
    for ev in events:
        t.mvms += ev.mvms
        t.adc += ev.adc
        t.dac += ev.dac
        t.cell_reads += ev.cell_reads
        t.macs += ev.macs
        t.digital_ops += ev.digital_ops
        t.buffer_bits += ev.buffer_bits
        t.noc_bits += ev.noc_bits
    return t


def estimate(mapping: AnalogMapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    """The KPI record of ``mapping`` on ``target`` (model: the module docstring; the record's
    per-layer costs, energy kinds and bottleneck: :mod:`.breakdown`)."""
    model = CostModel(mapping)
    hw, en = model.hw, model.cfg.energy
    res = model.res
    m_mvm = _measured(activity, "mvms")
    for lay in mapping.layers:  # reads the simulator did not perform take no time either
        c = model.costs[lay.node]
        if lay.node in m_mvm and c.mvms:
            ratio = m_mvm[lay.node] / c.mvms
            c.array_s = {slot: v * ratio for slot, v in c.array_s.items()}
    timing = schedule(model)
    sim_cycles = (activity or {}).get("cycle_time_s")
    events = _node_events(model, timing, activity)

    # NoC energy follows the measured bit-hops (or bits) where the simulator counted them; each
    # node's analytic bit-hops are scaled to that total
    noc_bits = sum(t.bits for t in model.transfers)
    noc_bit_hops = sum(t.bits * t.hops for t in model.transfers)
    measured_bits, measured_bit_hops = _number(activity, "noc_bits"), _number(activity, "noc_bit_hops")
    target_hops = noc_bit_hops
    if measured_bit_hops is not None:
        target_hops = measured_bit_hops
    elif measured_bits is not None:
        target_hops = noc_bit_hops * measured_bits / noc_bits if noc_bits else measured_bits
    noc_scale = target_hops / noc_bit_hops if noc_bit_hops else 0.0
    total = _total(events, target_hops, res.cells_used)
    if measured_bits is not None:
        total.noc_bits = measured_bits

    multi = res.computation_cycles > 1
    batch = model.cfg.schedule.batch if multi else 1
    latency = timing.latency_s
    throughput = batch / latency if multi else max(1.0 / timing.bottleneck_s, 1.0 / latency)
    # programming rounds per inference: each batch writes every cycle's cells once (the
    # simulator's count where it measured one); one cycle: programmed once, not per inference
    rounds = 1.0 / batch if multi else 0.0
    measured_rounds = _number(activity, "programmings_per_inference")
    if multi and measured_rounds is not None:
        rounds = measured_rounds / res.computation_cycles
    # static power over the time one inference occupies the chip, so that power = energy × throughput
    static_j = model.conv.static_w_per_core * res.cores_used / throughput
    detail = detail_energy(total, en, model.conv, rounds)
    detail["static"] = static_j
    kinds = energy_by_kind(detail)
    energy = sum(kinds.values())
    layers = layer_costs(events, en, model.conv, rounds, static_j, noc_scale)
    if multi:
        bottleneck = reprogramming_bottleneck(layers, res.computation_cycles, res.computation_cycles_lower_bound,
                                              res.cores_used, sum(timing.programming_s), latency, energy, batch)
    elif timing.bottleneck_slot is not None:
        bottleneck = core_bottleneck(timing.bottleneck_slot, timing.loads[timing.bottleneck_slot],
                                     timing.bottleneck_s, throughput)
    else:
        bottleneck = idle_bottleneck(latency)
    programming_j = res.cells_used * en.program_pj_per_cell * 1e-12
    act_bytes, in_need, out_need = buffer_bytes(model)

    resources: dict[str, Any] = dict(res.resources())
    resources.update({
        "strategy": res.strategy,
        "cells_used": res.cells_used,
        "input_bit_planes": model.planes,
        "mvms": total.mvms,
        "adc_conversions": total.adc,
        "dac_conversions": total.dac,
        "cell_reads": total.cell_reads,
        "macs": total.macs,
        "digital_ops": total.digital_ops,
        "buffer_bits": total.buffer_bits,
        "noc_bits": total.noc_bits,
        "mvms_per_layer": {ev.name: ev.mvms for ev in events if ev.crossbar},
        "latency_per_layer_s": {n: timing.node_s[n] for n in sorted(timing.node_s)},
        "latency_per_cycle_s": timing.cycle_span_s,
        "programming_s_per_cycle": timing.programming_s,
        "batch": batch,
        "programming_rounds_per_inference": res.computation_cycles * rounds,
        "static_w": model.conv.static_w_per_core * res.cores_used,
        "converters": {"adc_pj_per_conversion": model.conv.adc_pj, "adc_conversion_s": model.conv.adc_s,
                       "dac_pj_per_conversion": model.conv.dac_pj, "dac_settle_s": model.conv.dac_s},
        "programming_one_time_j": 0.0 if multi else programming_j,
        "programming_one_time_s": 0.0 if multi else sum(timing.programming_s),
        "bottleneck": timing.bottleneck,
        "bottleneck_s": timing.bottleneck_s,
        "buffer_need_bytes": {"input": in_need, "output": out_need},
        "energy_breakdown_j": detail,
    })
    if isinstance(sim_cycles, (list, tuple)):
        resources["simulator_cycle_time_s"] = [float(x) for x in sim_cycles]
    ops_measured = bool(mapping.layers) and all(lay.node in m_mvm for lay in mapping.layers)
    return KPIs(
        latency_s=latency,
        throughput_inf_per_s=throughput,
        energy_per_inference_j=energy,
        power_w=energy * throughput,
        weight_memory_bytes=math.ceil(res.cells_used * hw.bits_per_cell / 8),
        activation_memory_bytes=act_bytes,
        ops_per_inference=int(round(total.macs)),
        ops_kind="MAC",
        utilization=min(1.0, max(0.0, res.crossbar_utilization)),
        resources=resources,
        layers=layers,
        bottleneck=bottleneck,
        energy_breakdown=kinds,
        provenance=Provenance(kpis=provenance(ops_measured)),
        assumptions=assumptions(target, model.planes, model.g.meta, activity, (in_need, out_need), list(mapping.notes)),
    )
