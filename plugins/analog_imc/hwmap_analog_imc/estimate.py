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
* a read takes ``read_pulse_s + a · adc_conversion_s``, ``a`` the most of the block's columns
  any one ADC converts (``columns_per_adc`` neighbouring columns share one ADC; ISAAC and
  PUMA: ~100 ns per 128-column ADC-muxed read; REFERENCES.md "Crossbar MVM latency");
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

Time

* a layer's time on a core is the largest of its reads (one after the other: a core's row
  drivers and ADCs serve one read at a time), its link serialization in and out
  (``bits / (link_width_bits · clock_hz)``) and its digital work (``ops / (clock_hz · ADCs)``:
  one digital lane per ADC) — they stream concurrently — plus the hop latency
  (``hops · hop_latency_cycles / clock_hz``); blocks of one layer on different cores run in
  parallel, so a layer's time is the largest over its cores;
* digital nodes run on the logic of their core, concurrently with its crossbar reads; pure
  re-indexing (Flatten, Reshape, Squeeze, Unsqueeze, Identity, Constant) takes no time;
* within a computation cycle nodes start in graph order once a fraction ``φ`` of each input
  produced in the same cycle exists (``φ``: a convolution's line buffer
  ``((K_h−1)·W + K_w) / (H·W)`` of its input, REFERENCES.md "Line buffer"; 1 for fully
  connected layers, global pooling, Softmax, Transpose; 0 for element-wise nodes) and the
  resources they use are free (nodes sharing a core's array, or its logic, do not
  overlap); a node ends no earlier than its own time after it starts and one position's
  worth of it after its last input ends: layers on distinct cores pipeline, layers on one
  core run one after the other;
* with several computation cycles the weights of each cycle are programmed before it runs
  (``rows written · program_row_s``, cores in parallel) and every inference reprograms all
  cycles (batch 1: the chip holds the last cycle's weights when the next inference needs
  the first's). Latency = Σ over cycles of (programming + span);
* throughput: one cycle — steady state, successive inferences overlap, ``1 / max over
  cores (array, logic, link busy)``; several cycles — ``1 / latency`` (no overlap across a
  reprogramming).

Energy: ADC conversions × ``adc_pj_per_conversion``, DAC conversions × ``dac_pj_per_input``,
cell reads × ``cell_read_fj``, buffer bits × ``buffer_pj_per_bit``, NoC bits × hops ×
``noc_pj_per_bit_hop``, digital ops × ``digital_pj_per_op`` and programming: cells × rounds ×
``program_pj_per_cell``, with one round per inference when the model needs several cycles;
when it fits in one, programming is a one-time cost (``resources["programming_one_time_j"]``)
left out of the per-inference energy. Power = energy × throughput + ``static_w_per_core`` ×
cores used.

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

from hwmap import Graph, KPIs, Node, Target

from .dataflow import FlowDigital, FlowLayer, accumulations, copy_positions, plan_transfers, psum_bits
from .hardware import AnalogIMCConfig, Blueprint
from .layers import CrossbarLayer
from .legalize import META_KEY, SYNTHETIC_NOTE
from .mapper import MapResult, Placement
from .mapping import AnalogMapping

__all__ = ["estimate", "ACTIVITY_KEYS", "adc_share", "replica_positions", "psum_bits", "conv_fill_fraction"]

#: What the simulator's ``Simulation.activity`` may carry (all per inference).
ACTIVITY_KEYS = ("samples", "mvms", "adc_conversions", "dac_conversions", "cycle_time_s", "noc_bits")
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


def conv_fill_fraction(node: Node, in_shape: tuple[int, ...]) -> float:
    """Share of a 2-D convolution's input that must exist before its first output: its line
    buffer ``((K_h−1)·W + K_w)`` of ``H·W`` (padded sizes, dilated kernel); 1 otherwise."""
    if len(in_shape) != 4:
        return 1.0
    w = node.params.get("W")
    kernel = node.attrs.get("kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if not kernel or len(kernel) != 2:
        return 1.0
    dil = node.attrs.get("dilations") or [1, 1]
    pads = node.attrs.get("pads") or [0, 0, 0, 0]
    kh, kw = ((int(k) - 1) * int(d) + 1 for k, d in zip(kernel, dil))
    h = in_shape[2] + int(pads[0]) + int(pads[2])
    wd = in_shape[3] + int(pads[1]) + int(pads[3])
    return min(1.0, ((kh - 1) * wd + kw) / max(1, h * wd))


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


class _Model:
    def __init__(self, mapping: AnalogMapping) -> None:
        self.m = mapping
        self.cfg: AnalogIMCConfig = mapping.config
        self.hw = self.cfg.hardware
        self.g: Graph = mapping.graph
        self.bp: Blueprint = mapping.blueprint
        self.res: MapResult = mapping.result
        self.planes = math.ceil(self.hw.input_bits / self.hw.dac_bits)
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
            t_read = hw.read_pulse_s + adc_share(spans, hw.columns_per_adc) * hw.adc_conversion_s
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


def _distinct_rows(tiles: set[tuple[int, int, int]]) -> int:
    """Rows covered by ``(group, row_start, row_count)`` tiles, overlaps counted once."""
    total = 0
    by_group: dict[int, list[tuple[int, int]]] = {}
    for grp, r0, rc in tiles:
        by_group.setdefault(grp, []).append((r0, r0 + rc))
    for spans in by_group.values():
        end = -1
        for a, b in sorted(spans):
            if b > end:
                total += b - max(a, end)
                end = b
    return total


# -- timing -------------------------------------------------------------------------------------------
@dataclass
class _Timing:
    node_s: dict[str, float]
    cycle_span_s: list[float]
    programming_s: list[float]
    latency_s: float
    bottleneck_s: float
    bottleneck: str


def _times(model: _Model) -> tuple[dict[tuple[str, int], float], dict[tuple[int, int], dict[str, float]]]:
    """Per (node, cycle): the node's time (its slowest core); per (cycle, core): how long its
    array, logic and link are busy per inference."""
    hw, noc = model.hw, model.cfg.noc
    link = noc.link_width_bits * hw.clock_hz
    hop_s = noc.hop_latency_cycles / hw.clock_hz
    ser: dict[tuple[str, int, int], float] = {}
    hop: dict[tuple[str, int, int], float] = {}
    for t in model.transfers:
        for k in (t.src, t.dst):  # both ends are busy serializing
            key = (t.node, t.cycle, k)
            ser[key] = ser.get(key, 0.0) + t.bits / link
            hop[key] = max(hop.get(key, 0.0), t.hops * hop_s)
    lanes = {c.index: c.adcs for c in model.bp.cores}
    per_node: dict[tuple[str, int], float] = {}
    busy: dict[tuple[int, int], dict[str, float]] = {}
    for name, cost in model.costs.items():
        slots = set(cost.array_s) | set(cost.logic_ops)
        slots |= {(c, k) for (n, c, k) in ser if n == name}
        for c, k in slots:
            a = cost.array_s.get((c, k), 0.0)
            lg = cost.logic_ops.get((c, k), 0.0) / (hw.clock_hz * lanes[k])
            s = ser.get((name, c, k), 0.0)
            span = max(a, lg, s) + hop.get((name, c, k), 0.0)
            per_node[(name, c)] = max(per_node.get((name, c), 0.0), span)
            b = busy.setdefault((c, k), {"crossbar reads": 0.0, "digital logic": 0.0, "NoC link": 0.0})
            b["crossbar reads"] += a
            b["digital logic"] += lg
            b["NoC link"] += s
    return per_node, busy


def _programming_s(model: _Model) -> list[float]:
    """Per computation cycle: rows written on the busiest core × program_row_s."""
    rows: dict[tuple[int, int], list[tuple[int, int]]] = {}
    er = model.bp.element_rows
    for p in model.res.placements:
        rows.setdefault((p.cycle, p.core), []).append((p.elem_row * er, p.elem_row * er + p.row_count))
    out = [0.0] * model.res.computation_cycles
    for (c, _), spans in rows.items():
        out[c] = max(out[c], _distinct_rows({(0, a, b - a) for a, b in spans}) * model.hw.program_row_s)
    return out


def _schedule(model: _Model) -> _Timing:
    per_node, busy = _times(model)
    cycles = max(1, model.res.computation_cycles)
    prog = _programming_s(model) if model.res.computation_cycles else []
    reprogram = model.res.computation_cycles > 1
    start: dict[str, float] = {}
    finish: dict[str, float] = {}
    spans: list[float] = []
    clock = 0.0
    for c in range(cycles):
        if reprogram:
            clock += prog[c]
        c0 = clock
        free: dict[tuple[str, int], float] = {}
        end = c0
        for node in model.g.nodes:
            cost = model.costs[node.name]
            if c not in cost.cycles:
                continue
            t = per_node.get((node.name, c), 0.0)
            ready = c0
            tails = []
            for tin in node.inputs:
                m = model.producer.get(tin)
                if m is None or max(model.costs[m].cycles) != c or m not in finish:
                    continue
                ready = max(ready, start[m] + cost.fill * (finish[m] - start[m]))
                tails.append(finish[m])
            # the resource the node occupies: its cores' arrays (reads) or logic (digital nodes)
            kind = "array" if cost.crossbar else "logic"
            cores = {k for (cc, k) in (cost.array_s if cost.crossbar else cost.logic_ops) if cc == c}
            s = max([ready] + [free.get((kind, k), c0) for k in cores])
            f = max([s + t] + [x + t / max(1, cost.positions) for x in tails])
            for k in cores:
                free[(kind, k)] = max(free.get((kind, k), c0), f)
            start[node.name], finish[node.name] = s, f
            end = max(end, f)
        span = end - c0
        spans.append(span)
        clock = c0 + span
    latency = max(clock, 1.0 / model.hw.clock_hz)
    node_s = {n: 0.0 for n in model.costs}
    for (n, _), v in per_node.items():
        node_s[n] += v
    if reprogram or not busy:
        bottleneck_s, which = latency, "reprogramming every computation cycle" if reprogram else "digital logic"
    else:
        # the busiest resource of any core: a steady-state stream cannot go faster
        bottleneck_s, which = max(((v, f"core {k} {what}") for (_, k), b in sorted(busy.items())
                                   for what, v in b.items()), key=lambda x: x[0])
    bottleneck_s = min(max(bottleneck_s, 1.0 / model.hw.clock_hz), latency)
    return _Timing(node_s, spans, prog, latency, bottleneck_s, which)


# -- buffers --------------------------------------------------------------------------------------------
def _buffer_bytes(model: _Model) -> tuple[int, int, int]:
    """Largest (input + output) buffer working set over (cycle, core), and its two parts.

    Input: a convolution's line buffer ``((K_h−1)·W + K_w)·C_in`` (REFERENCES.md, "Line
    buffer"), a fully connected layer's input vector, times the share of the layer's rows
    the core holds, at ``input_bits``; output: one output vector of the filters the core holds."""
    hw = model.hw
    need: dict[tuple[int, int], list[float]] = {}
    for lay in model.m.layers:
        node = model.g.node(lay.node)
        in_shape = model.g.tensor(node.inputs[0]).shape
        if node.op.endswith("Conv") and len(in_shape) == 4:
            window = conv_fill_fraction(node, in_shape) * _padded_area(node, in_shape) * in_shape[1]
        else:
            window = lay.groups * lay.rows
        tiles: dict[tuple[int, int], set[tuple[int, int, int]]] = {}
        outs: dict[tuple[int, int], float] = {}
        for p in model.blocks[lay.node]:
            slot = (p.cycle, p.core)
            tiles.setdefault(slot, set()).add((p.group, p.row_start, p.row_count))
            outs[slot] = outs.get(slot, 0.0) + p.filter_count * model._out_width(lay, p)
        for slot, t in tiles.items():
            share = _distinct_rows(t) / (lay.groups * lay.rows)
            cur = need.setdefault(slot, [0.0, 0.0])
            cur[0] += window * share * hw.input_bits
            cur[1] += outs[slot]
    if not need:
        return 0, 0, 0
    best = max(sorted(need), key=lambda s: need[s][0] + need[s][1])
    i, o = (math.ceil(b / 8) for b in need[best])
    worst_in = max(math.ceil(v[0] / 8) for v in need.values())
    worst_out = max(math.ceil(v[1] / 8) for v in need.values())
    return i + o, worst_in, worst_out


def _padded_area(node: Node, in_shape: tuple[int, ...]) -> int:
    pads = node.attrs.get("pads") or [0, 0, 0, 0]
    return (in_shape[2] + int(pads[0]) + int(pads[2])) * (in_shape[3] + int(pads[1]) + int(pads[3]))


# -- the estimate -----------------------------------------------------------------------------------------
def _number(activity: dict[str, Any] | None, key: str) -> float | None:
    v = (activity or {}).get(key)
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) and v >= 0 else None


def _measured(activity: dict[str, Any] | None, key: str) -> dict[str, float]:
    v = (activity or {}).get(key)
    if not isinstance(v, dict):
        return {}
    return {str(k): float(x) for k, x in v.items() if isinstance(x, (int, float)) and math.isfinite(x) and x >= 0}


def estimate(mapping: AnalogMapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    """The KPI record of ``mapping`` on ``target`` (model: the module docstring)."""
    model = _Model(mapping)
    hw, en = model.hw, model.cfg.energy
    res = model.res
    m_mvm = _measured(activity, "mvms")
    m_adc = _measured(activity, "adc_conversions")
    m_dac = _measured(activity, "dac_conversions")
    for lay in mapping.layers:  # reads the simulator did not perform take no time either
        c = model.costs[lay.node]
        if lay.node in m_mvm and c.mvms:
            ratio = m_mvm[lay.node] / c.mvms
            c.array_s = {slot: v * ratio for slot, v in c.array_s.items()}
    timing = _schedule(model)
    sim_cycles = (activity or {}).get("cycle_time_s")

    mvms = adc = dac = cells = macs = 0.0
    for lay in mapping.layers:
        c = model.costs[lay.node]
        l_mvm, l_adc, l_dac = m_mvm.get(lay.node, c.mvms), m_adc.get(lay.node, c.adc), m_dac.get(lay.node, c.dac)
        mvms += l_mvm
        adc += l_adc
        dac += l_dac
        cells += c.cells * (l_dac / c.dac if c.dac else 1.0)
        macs += c.macs * (l_mvm / c.mvms if c.mvms else 1.0)
    buffer_bits = sum(c.buffer_bits for c in model.costs.values())
    digital_ops = sum(c.digital_ops for c in model.costs.values())
    noc_bits = sum(t.bits for t in model.transfers)
    noc_bit_hops = sum(t.bits * t.hops for t in model.transfers)
    measured_bits, measured_bit_hops = _number(activity, "noc_bits"), _number(activity, "noc_bit_hops")
    if measured_bit_hops is not None:
        noc_bit_hops = measured_bit_hops
    elif measured_bits is not None:
        noc_bit_hops = noc_bit_hops * measured_bits / noc_bits if noc_bits else measured_bits
    if measured_bits is not None:
        noc_bits = measured_bits
    multi = res.computation_cycles > 1
    programming_j = res.cells_used * en.program_pj_per_cell * 1e-12
    breakdown = {
        "adc": adc * en.adc_pj_per_conversion * 1e-12,
        "dac": dac * en.dac_pj_per_input * 1e-12,
        "cells": cells * en.cell_read_fj * 1e-15,
        "buffers": buffer_bits * en.buffer_pj_per_bit * 1e-12,
        "noc": noc_bit_hops * en.noc_pj_per_bit_hop * 1e-12,
        "programming": programming_j if multi else 0.0,
        "digital": digital_ops * en.digital_pj_per_op * 1e-12,
    }
    energy = sum(breakdown.values())
    latency = timing.latency_s
    throughput = 1.0 / latency if multi else max(1.0 / timing.bottleneck_s, 1.0 / latency)
    power = energy * throughput + en.static_w_per_core * res.cores_used
    act_bytes, in_need, out_need = _buffer_bytes(model)
    samples = (activity or {}).get("samples")

    resources: dict[str, Any] = dict(res.resources())
    resources.update({
        "strategy": res.strategy,
        "cells_used": res.cells_used,
        "input_bit_planes": model.planes,
        "mvms": mvms,
        "adc_conversions": adc,
        "dac_conversions": dac,
        "cell_reads": cells,
        "macs": macs,
        "digital_ops": digital_ops,
        "buffer_bits": buffer_bits,
        "noc_bits": noc_bits,
        "mvms_per_layer": {lay.node: m_mvm.get(lay.node, model.costs[lay.node].mvms) for lay in mapping.layers},
        "latency_per_layer_s": {n: timing.node_s[n] for n in sorted(timing.node_s)},
        "latency_per_cycle_s": timing.cycle_span_s,
        "programming_s_per_cycle": timing.programming_s,
        "programming_rounds_per_inference": res.computation_cycles if multi else 0,
        "programming_one_time_j": 0.0 if multi else programming_j,
        "programming_one_time_s": 0.0 if multi else sum(timing.programming_s),
        "bottleneck": timing.bottleneck,
        "bottleneck_s": timing.bottleneck_s,
        "buffer_need_bytes": {"input": in_need, "output": out_need},
        "energy_breakdown_j": breakdown,
    })
    if isinstance(sim_cycles, (list, tuple)):
        resources["simulator_cycle_time_s"] = [float(x) for x in sim_cycles]
    assumptions = _assumptions(model, activity, samples, in_need, out_need)
    return KPIs(
        latency_s=latency,
        throughput_inf_per_s=throughput,
        energy_per_inference_j=energy,
        power_w=power,
        weight_memory_bytes=math.ceil(res.cells_used * hw.bits_per_cell / 8),
        activation_memory_bytes=act_bytes,
        ops_per_inference=int(round(macs)),
        ops_kind="MAC",
        utilization=min(1.0, max(0.0, res.crossbar_utilization)),
        resources=resources,
        assumptions=assumptions,
    )


def _assumptions(model: _Model, activity: dict[str, Any] | None, samples: Any, in_need: int,
                 out_need: int) -> dict[str, Any]:
    cfg, hw = model.cfg, model.hw
    out: dict[str, Any] = {}
    for section in ("hardware", "noc", "energy"):
        for k, v in getattr(cfg, section).model_dump(mode="json").items():
            out[f"{section}.{k}"] = v
    out["mapper.strategy"] = cfg.mapper.strategy
    out["model.counts"] = (f"blocks of one layer copy sharing word lines (cycle, core, group, row tile, element row) "
                           f"are read together; per read: its rows DAC conversions, its used columns ADC conversions, "
                           f"rows × columns cell reads; reads = positions × {model.planes} input bit-plane(s) "
                           f"(ceil(input_bits / dac_bits))")
    out["model.read_time"] = ("read_pulse_s + (most of a block's columns one ADC converts) × adc_conversion_s; "
                              "columns_per_adc neighbouring columns share an ADC; a core performs one read at a time")
    out["model.latency"] = ("blocks of a layer on different cores run in parallel; a layer's time on a core is the "
                            "largest of its reads, link serialization and digital work, plus hop latency; within a "
                            "computation cycle a node starts when its inputs' line-buffer share exists and its core "
                            "is free (layers on distinct cores pipeline, on one core they run in turn); with several "
                            "cycles each is preceded by programming its rows (program_row_s per row, cores in "
                            "parallel)")
    out["model.throughput"] = ("one computation cycle: steady state, 1 / the busiest core's crossbar, logic or "
                               "link time; "
                               "several: 1 / latency (every inference reprograms every cycle, batch 1)")
    out["model.energy"] = ("ADC conversions, DAC conversions, cell reads, buffer bits (input vector read and output "
                           "written per position, digital nodes' tensors once), NoC bits × hops, digital ops "
                           "(shift-add per conversion, partial sums, bias/post-ops/re-quantization per output), each "
                           "times its energy constant; power = energy × throughput + static_w_per_core × cores used")
    out["model.programming"] = ("several computation cycles: all used cells reprogrammed once per inference, in the "
                                "per-inference energy and latency; one cycle: a one-time cost "
                                "(resources.programming_one_time_j), not per inference")
    out["model.noc"] = ("the emitter's transfers on an XY-routed mesh: filters whose row tiles sit on several cores "
                        "send partial sums of input_bits + weight_bits + max(1, ceil(log2 rows)) + 1 bits to the core "
                        "accumulating them, every other copy finishes its outputs (post-ops, re-quantization) on its "
                        "own core; each core reading a tensor receives only the part it reads (a copy: its input "
                        "rows) from the cores holding it, at the tensor's bits; time bits / (link_width_bits × "
                        "clock_hz) + hops × hop_latency_cycles / clock_hz")
    out["model.digital_lanes"] = "one digital lane per ADC on each core, one op per lane per clock"
    calib = model.g.meta.get(META_KEY, {}).get("calibration", {})
    if calib.get("source") == "synthetic":
        out["calibration"] = f"{SYNTHETIC_NOTE} ({calib.get('samples')} seeded samples)"
    elif calib.get("source") == "data":
        out["calibration"] = f"activation scales calibrated (max-abs) on {calib.get('samples')} samples of --data"
    else:
        out["calibration"] = "quantization carried by the model"
    if activity:
        out["activity"] = (f"measured by the simulator on {samples} samples: MVMs, ADC and DAC conversions, NoC "
                           "bits; the simulator's own cycle times (slowest core's reads plus serial transfers, no "
                           "pipelining) are in resources.simulator_cycle_time_s, the latency stays this model's")
    else:
        out["activity"] = "analytic (no --data)"
    if in_need > hw.input_buffer_bytes or out_need > hw.output_buffer_bytes:
        out["warning.buffers"] = (f"working sets of {in_need} B input / {out_need} B output on the busiest core exceed "
                                  f"the {hw.input_buffer_bytes} B / {hw.output_buffer_bytes} B buffers: inputs are "
                                  "re-fetched over the NoC (not modelled)")
    for note in model.m.notes:
        out.setdefault("notes", []).append(note)
    return out
