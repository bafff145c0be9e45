"""The emitter: an analog mapping as the instructions the cores' FSMs decode (issue 3, part 4).

:func:`write_program` turns an :class:`~hwmap_analog_imc.mapping.AnalogMapping` into a
:class:`~hwmap_analog_imc.program.Program` and writes ``program.bin`` (the binary format,
documented field by field in :mod:`hwmap_analog_imc.program`) and ``program.lst`` (the same
instructions as text). :func:`read_program` and :func:`parse_listing` read them back.

What is emitted, per crossbar layer (a Conv/Gemm/MatMul, fused or not; its layer record, weights
and post-ops are lowered by :mod:`.emit_layer`, their placement, schedule and ADC settings here):

* **Weights.** Per output channel symmetric integers ``w = round(W/s_w)`` (the layer's
  ``param_quant`` annotation, or max-abs scaling on ``weight_bits`` when it has none), in
  ``[−(2^(b−1)−1), 2^(b−1)−1]``. *Differential*: ``|w|`` is sliced into ``bits_per_cell``-bit
  digits, slice ``s`` stored in column ``2s`` (G+, when ``w > 0``) or ``2s+1`` (G−, when
  ``w < 0``); *offset*: ``w + o`` (``o = 2^(b−1)``) sliced into columns ``s``. Each block's
  cells are programmed where the mapper placed it (its element rectangle), row ``r`` of the
  block being row ``row_start + r`` of the unrolled filter (ONNX W order, C_in major).
* **Input (DAC) schedule.** Per core and computation cycle a READ per set of blocks sharing
  word lines (same layer, copy, group, rows and element row): the input vectors the copy
  handles (copy ``k`` of ``R`` takes positions ``k·⌈P/R⌉ ..``), one bit-plane of
  ``dac_bits`` per read. An ACCUM per block adds its shift-and-added read-out, with its
  digital corrections ``c0·Σ_r w`` per filter (``c0 = q_min − z`` turns unsigned codes back
  into signed inputs) and ``−o·Σ u`` for offset encoding, to the partial sums of the core
  that finishes its filters (:func:`.dataflow.accumulations`): its own core when every row tile of
  those filters of its copy sits there, else the core holding most of their cells.
* **ADC full scale** per block, per bit-plane and per column of a filter, as a power of two
  ``2^shift`` LSB (a shift): the smallest with ``(2^adc_bits − 1)·2^shift ≥ S_max``, where
  ``S_max`` is, with calibration data (``target.calibration``), the largest column sum the
  block produces on up to :data:`CAL_SAMPLES` samples (fewer when running them through the
  reference model would exceed ``2^30`` multiply-adds: MobileNet V1 at 224×224 gets one), at
  most :data:`CAL_VECTORS` input vectors per layer, evenly spaced (fewer for large layers, so
  a layer's calibration stays near ``2^27`` multiply-adds), and otherwise the analytic worst case
  ``max_f Σ_r G[r, f, j]·d_p`` (``d_p`` the largest DAC digit of plane ``p``; never clips; at most
  ``rows·(2^dac_bits − 1)·(2^bits_per_cell − 1)``). Calibration runs the reference executor
  on the legalized graph to get each layer's input.
* **Post-ops and output.** Dequantization scales, bias, the fused post-ops with their
  constants; the output's quantization is the next layer's DAC quantization (TENSORS).

Digital ops (pooling, reshapes, residual adds...) keep their attributes and constants and run
on the core legalization assigned (``mapping.digital``). The scales, bias, fused post-ops and
output quantization of a copy's filters run on the core that finishes them (the ACCUM
destination), so a copy holding whole filters sends finished values, not partial sums.
NoC transfers, per inference (:func:`.dataflow.plan_transfers`): the read-outs of blocks whose filters
are finished on another core (partial sums of ``input_bits + weight_bits + ⌈log2 rows⌉ + 1``
bits: not yet scaled or requantized), in the block's cycle; and, of every tensor a node
produced, from each core holding a piece of it (a copy's filters at its positions, a digital
op's whole outputs) the part each other core reads (a convolution copy: the channels of its
row tiles on the input rows its positions' receptive fields cover; a Gemm/MatMul copy: its
rows; a digital op or a post-op operand: the whole tensor), once, at the tensor's
quantization bits (``input_bits`` when it has none), in the first computation cycle that
core reads it. Graph inputs are loaded from off chip into each reader's buffer: no NoC
transfer.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import groupby
from pathlib import Path
from typing import Hashable, cast

import numpy as np

import hwmap
from hwmap import Graph, HwmapError, Node, TargetError

from .blocks import ceil_div
from .dataflow import (
    Accumulation, FlowBlock, FlowDigital, FlowLayer, FlowTransfer, Region, accumulations, copy_positions,
    input_region, plan_transfers, psum_bits, whole_region,
)
from .converters import Converters
from .crossbar import LayerKernel, ScheduleIndex, input_codes, max_digits
from .emit_layer import LayerLowering, attrs_json
from .layers import CROSSBAR_OPS
from .mapping import AnalogMapping
from .program import (
    ENC_DIFFERENTIAL, ENC_OFFSET, FLAG_AXIS, FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, PROGRAM_FILE, VERSION,
    AccumRec, AdcRec, BlockRec, Config, DigitalRec, Program, ReadRec, TensorRec, TransferRec,
    WeightsRec, parse_listing, read_program,
)

__all__ = ["PROGRAM_FILE", "LISTING_FILE", "CAL_SAMPLES", "CAL_VECTORS", "write_program", "build_program",
           "read_program", "parse_listing", "Region", "FlowBlock", "FlowLayer", "FlowDigital", "FlowTransfer",
           "Accumulation", "accumulations", "copy_positions", "input_region", "plan_transfers", "psum_bits",
           "whole_region"]

LISTING_FILE = "program.lst"
#: Calibration samples used at most for the ADC full scale (the brief's "up to 64 samples").
CAL_SAMPLES = 64
#: Input vectors per layer the ADC calibration looks at, at most.
CAL_VECTORS = 4096
_CAL_MACS = 2**27  # per layer: bounds calibration time on large layers
_CAL_NET_MACS = 2**30  # per calibration run of the reference model


def write_program(mapping: AnalogMapping, target: hwmap.Target, outdir: Path) -> hwmap.Artifacts:
    """Emit ``program.bin`` and ``program.lst`` for ``mapping`` into ``outdir``."""
    outdir = Path(outdir)
    program, notes = build_program(mapping, target.calibration)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / PROGRAM_FILE).write_bytes(program.to_bytes())
    (outdir / LISTING_FILE).write_bytes(program.to_listing().encode("utf-8"))
    cfg = program.config
    manifest = {
        "program": PROGRAM_FILE, "listing": LISTING_FILE, "format": "hwmap-analog-imc", "version": VERSION,
        "blocks": len(program.blocks), "computation_cycles": cfg.computation_cycles,
        "adc_full_scale": (f"calibrated on {cfg.calibration_vectors} input vectors" if cfg.adc_calibration
                           else "analytic worst case"),
        "notes": notes,
    }
    return hwmap.Artifacts(outdir, [PROGRAM_FILE, LISTING_FILE], manifest)


def build_program(mapping: AnalogMapping, calibration: np.ndarray | None = None) -> tuple[Program, list[str]]:
    """The program for ``mapping``; ADC full scales calibrated on ``calibration`` when given.
    Returns the program and notes on what the emitter decided."""
    return _Builder(mapping).build(calibration)


# ------------------------------------------------------------------------------ helpers
def _shift_for(s_max: np.ndarray, adc_bits: int) -> np.ndarray:
    """Smallest ``shift ≥ 0`` with ``(2^adc_bits − 1)·2^shift ≥ s_max`` (elementwise)."""
    top = 2**adc_bits - 1
    ratio = np.maximum(np.asarray(s_max, dtype=np.float64), 0.0) / top
    shift = np.where(ratio > 1.0, np.ceil(np.log2(np.maximum(ratio, 1.0))), 0.0).astype(np.int64)
    # guard the float log2 at exact powers of two: step down while the smaller shift still fits
    while True:
        lower = (shift > 0) & (top * np.ldexp(1.0, np.maximum(shift - 1, 0)) >= s_max)
        if not lower.any():
            break
        shift = shift - lower
    if (shift > 255).any():
        raise TargetError(f"a column sum of {float(np.max(s_max)):.3g} needs an ADC shift above 255")
    return shift.astype(np.uint8)


# ------------------------------------------------------------------------------ builder
class _Builder:
    def __init__(self, mapping: AnalogMapping) -> None:
        self.m = mapping
        self.g: Graph = mapping.graph
        self.hw = mapping.config.hardware
        self.notes: list[str] = []
        self.tensor_id: dict[str, int] = {}
        self.w_int: dict[int, np.ndarray] = {}  # program layer id -> (G, M, N) integer weights
        self.levels: dict[int, np.ndarray] = {}  # program layer id -> (G, M, N·cpf) levels
        self.tensor_home: dict[str, tuple[int, int]] = {}  # tensor -> (core, cycle) that produces it

    # -- the whole program
    def build(self, calibration: np.ndarray | None) -> tuple[Program, list[str]]:
        m, hw, g = self.m, self.hw, self.g
        bp = m.blueprint
        res = m.result
        batch = g.tensor(g.inputs[0]).shape[0] if g.inputs and g.tensor(g.inputs[0]).shape else 1
        # the converters at the program's resolutions (converters.py): a read's fixed time is the
        # DACs' settling plus the read pulse, and one conversion takes the adc_bits SAR's time
        conv = Converters.of(m.config)
        self.p = Program(Config(
            cores=len(bp.cores), crossbar_rows=hw.crossbar_rows, crossbar_cols=hw.crossbar_cols,
            element_rows=hw.element_rows, element_cols=hw.element_cols, bits_per_cell=hw.bits_per_cell,
            weight_bits=hw.weight_bits,
            encoding=ENC_DIFFERENTIAL if hw.weight_encoding == "differential" else ENC_OFFSET,
            input_bits=hw.input_bits, dac_bits=hw.dac_bits, adc_bits=hw.adc_bits, columns_per_adc=hw.columns_per_adc,
            mesh_cols=bp.mesh_cols, mesh_rows=bp.mesh_rows, link_width_bits=m.config.noc.link_width_bits,
            hop_latency_cycles=m.config.noc.hop_latency_cycles, computation_cycles=res.computation_cycles,
            batch=batch, input_buffer_bytes=hw.input_buffer_bytes, output_buffer_bytes=hw.output_buffer_bytes,
            adc_calibration=0, calibration_vectors=0, clock_hz=hw.clock_hz,
            read_pulse_s=conv.dac_s + hw.read_pulse_s, adc_conversion_s=conv.adc_s))
        self._tensors()
        lowering = LayerLowering(self.p, g, hw, self.tensor_id, self.notes)
        by_index = {lay.index: lay for lay in m.layers}
        layer_pid: dict[int, int] = {}
        for order, node in enumerate(g.nodes):
            if node.op in CROSSBAR_OPS:
                try:
                    cl = m.layer_of(node.name)
                except KeyError:
                    raise TargetError("crossbar node has no crossbar layer in the mapping",
                                      where=f"node {node.name!r}") from None
                pid, w_int, levels = lowering.layer(order, node, cl)
                self.w_int[pid], self.levels[pid] = w_int, levels
                layer_pid[cl.index] = pid
            else:
                self._digital(order, node, lowering)
        missing = set(by_index) - set(layer_pid)
        if missing:
            raise TargetError(f"mapping has crossbar layers not in the graph: "
                              f"{', '.join(by_index[i].node for i in sorted(missing))}")
        self._blocks(layer_pid)
        self._schedule()
        self._noc()
        self._adc(calibration)
        return self.p.check("emitted program"), self.notes

    # -- tensors
    def _tensors(self) -> None:
        g = self.g
        names: list[str] = list(g.inputs)
        for node in g.nodes:
            names += node.inputs + node.outputs
        names += g.outputs
        for name in names:
            if name in self.tensor_id:
                continue
            t = g.tensor(name)
            flags = (FLAG_INPUT if name in g.inputs else 0) | (FLAG_OUTPUT if name in g.outputs else 0)
            rec = TensorRec(name, t.dtype, tuple(t.shape), flags)
            q = t.quant
            if q is not None:
                flags |= FLAG_QUANT | (FLAG_AXIS if q.axis is not None else 0)
                rec = TensorRec(name, t.dtype, tuple(t.shape), flags, self.p.add_const(q.scale.astype(np.float64)),
                                self.p.add_const(q.zero_point.astype(np.float64)), q.bits, int(q.signed),
                                int(q.narrow), int(q.axis or 0))
            self.tensor_id[name] = len(self.p.tensors)
            self.p.tensors.append(rec)


    # -- digital ops
    def _digital(self, order: int, node: Node, lowering: LayerLowering) -> None:
        """Record a digital op; its core and cycle are settled once the layers are placed."""
        self.p.digital.append(DigitalRec(order, node.name, node.op, 0, 0, attrs_json(node.attrs),
                                         tuple(self.tensor_id[t] for t in node.inputs),
                                         tuple(self.tensor_id[t] for t in node.outputs), lowering.params(node)))

    # -- switches and weight programming
    def _blocks(self, layer_pid: dict[int, int]) -> None:
        res = self.m.result
        er, ec = self.hw.element_rows, self.hw.element_cols
        gr, gc = self.hw.crossbar_rows // er, self.hw.crossbar_cols // ec
        replicas = res.replicas
        for lm in res.layers:
            if lm.layer in layer_pid:
                pid = layer_pid[lm.layer]
                self.p.layers[pid] = replace(self.p.layers[pid], replicas=max(1, replicas.get(lm.layer, 1)))
        first: dict[int, tuple[int, int]] = {}
        last_cycle: dict[int, int] = {}
        cover = {pid: np.zeros((lay.replicas, lay.groups, lay.rows, lay.filters), dtype=np.int16)
                 for pid, lay in enumerate(self.p.layers)}
        for p in res.placements:
            if p.layer not in layer_pid:
                raise TargetError(f"placement of unknown layer {p.layer}", where="mapping")
            pid = layer_pid[p.layer]
            lay = self.p.layers[pid]
            cpf = lay.cols_per_filter
            where = f"layer {lay.name!r}, block {len(self.p.blocks)}"
            if (p.replica >= lay.replicas or p.group >= lay.groups or p.row_start + p.row_count > lay.rows
                    or p.filter_start + p.filter_count > lay.filters or min(p.row_count, p.filter_count) < 1):
                raise TargetError("placement lies outside its layer", where=where)
            if (p.elem_rows != ceil_div(p.row_count, er) or p.elem_cols != ceil_div(p.filter_count * cpf, ec)
                    or p.elem_row + p.elem_rows > gr or p.elem_col + p.elem_cols > gc or p.core >= len(
                        self.m.blueprint.cores)):
                raise TargetError("placement's element rectangle does not fit its cells or the crossbar",
                                  where=where)
            cover[pid][p.replica, p.group, p.row_start:p.row_start + p.row_count,
                       p.filter_start:p.filter_start + p.filter_count] += 1
            bid = len(self.p.blocks)
            self.p.blocks.append(BlockRec(pid, p.replica, p.group, p.row_start, p.row_count, p.filter_start,
                                          p.filter_count, p.cycle, p.core, p.elem_row, p.elem_col, p.elem_rows,
                                          p.elem_cols))
            cells = self.levels[pid][p.group, p.row_start:p.row_start + p.row_count,
                                     p.filter_start * cpf:(p.filter_start + p.filter_count) * cpf]
            self.p.weights.append(WeightsRec(bid, p.cycle, p.core, p.elem_row, p.elem_col, self.hw.bits_per_cell,
                                             np.ascontiguousarray(cells)))
            self.p.adc.append(AdcRec(bid, self.hw.adc_bits, np.zeros((lay.planes, cpf), dtype=np.uint8)))
            if p.replica == 0 and (pid not in first or (p.cycle, p.core) < first[pid]):
                first[pid] = (p.cycle, p.core)
            last_cycle[pid] = max(last_cycle.get(pid, 0), p.cycle)
        for pid, c in cover.items():
            if (c != 1).any():
                raise TargetError("the mapping does not place every weight of every copy exactly once",
                                  where=f"layer {self.p.layers[pid].name!r}")
            lay = self.p.layers[pid]
            self.p.layers[pid] = replace(lay, home_core=first[pid][1])
            self.tensor_home[self.p.tensors[lay.output].name] = (first[pid][1], last_cycle[pid])
        self._settle_digital()

    def _settle_digital(self) -> None:
        """Each digital op runs on the core legalization gave it (else where its first input
        was produced), in the cycle its last input is ready; in dataflow order."""
        homes = dict(self.tensor_home)
        steps = sorted([(lay.order, 0, i) for i, lay in enumerate(self.p.layers)]
                       + [(d.order, 1, i) for i, d in enumerate(self.p.digital)])
        for _, kind, i in steps:
            if kind == 0:
                continue
            d = self.p.digital[i]
            ins = [homes[self.p.tensors[t].name] for t in d.inputs if self.p.tensors[t].name in homes]
            core = self.m.digital.get(d.name, ins[0][0] if ins else 0)
            cycle = max((c for _, c in ins), default=0)
            self.p.digital[i] = replace(d, core=int(core), cycle=cycle)
            for t in d.outputs:
                homes[self.p.tensors[t].name] = (int(core), cycle)
        self.tensor_home = homes

    # -- schedule
    def _flow_layer(self, lid: int, ids: list[int]) -> FlowLayer:
        """Layer ``lid`` of the program, blocks ``ids``, as the dataflow planner sees it."""
        p, lay = self.p, self.p.layers[lid]
        return FlowLayer(
            lay.order, lay.name, lay.input, lay.output,
            tuple(t for po in p.postops if po.layer == lid for t in po.extra), lay.groups, lay.rows, lay.filters,
            lay.positions, lay.replicas, psum_bits(self.hw.input_bits, self.hw.weight_bits, lay.rows),
            lay.kernel, lay.strides, lay.pads_begin, lay.dilations, lay.out_spatial,
            tuple(p.blocks[i] for i in ids))

    def _schedule(self) -> None:
        blocks = self.p.blocks
        layers = self.p.layers
        ids_of: list[list[int]] = [[] for _ in layers]  # layer id -> its block ids, in program order
        for b, blk in enumerate(blocks):
            ids_of[blk.layer].append(b)
        self.flow = [self._flow_layer(lid, ids) for lid, ids in enumerate(ids_of)]
        acc_core: dict[int, int] = {}  # block id -> the core its partial sums go to
        for fl, ids in zip(self.flow, ids_of):
            for a in accumulations(fl):
                for j in a.blocks:
                    acc_core[ids[j]] = a.core

        def key(b: int) -> tuple[int, ...]:
            k = blocks[b]
            return (k.cycle, k.core, layers[k.layer].order, k.replica, k.group, k.row_start, k.row_count, k.elem_row)

        order = sorted(range(len(blocks)), key=lambda b: (key(b), blocks[b].filter_start, b))
        for _, same in groupby(order, key=key):  # blocks sharing word lines: one READ
            group = list(same)
            k = blocks[group[0]]
            lay = layers[k.layer]
            p0, count = copy_positions(lay.positions, lay.replicas, k.replica)
            if count == 0:
                continue
            self.p.schedule.append(ReadRec(k.cycle, k.core, k.layer, k.replica, k.group, k.row_start, k.row_count,
                                           p0, count, tuple(group)))
            c0 = lay.in_qmin - lay.in_zero_point
            w = self.w_int[k.layer]
            for b in group:
                blk = blocks[b]
                wsum = w[blk.group, blk.row_start:blk.row_start + blk.row_count,
                         blk.filter_start:blk.filter_start + blk.filter_count].sum(axis=0)
                self.p.schedule.append(AccumRec(blk.cycle, blk.core, b, acc_core[b],
                                                self.p.add_const((c0 * wsum).astype(np.int64)),
                                                -lay.weight_offset))

    # -- network on chip
    def _noc(self) -> None:
        p, bp, hw = self.p, self.m.blueprint, self.hw
        shapes: dict[Hashable, tuple[int, ...]] = {t: rec.shape for t, rec in enumerate(p.tensors)}
        bits: dict[Hashable, int] = {t: rec.q_bits if rec.flags & FLAG_QUANT else hw.input_bits
                                     for t, rec in enumerate(p.tensors)}
        digital = [FlowDigital(d.order, d.name, d.inputs, d.outputs, d.core, d.cycle) for d in p.digital]
        for tr in plan_transfers(shapes, bits, self.flow, digital):
            r = tr.region
            tensor = int(cast(int, tr.tensor))  # this program's tensors are keyed by index
            p.noc.append(TransferRec(tr.cycle, tr.src, tr.dst, bp.hops(tr.src, tr.dst), tensor, tr.kind, r.layout,
                                     r.ch_start, r.ch_count, r.pos_start, r.pos_count, ceil_div(tr.bits, 8)))

    # -- ADC full scale
    def _adc(self, calibration: np.ndarray | None) -> None:
        p = self.p
        smax: dict[int, np.ndarray] | None = None
        if calibration is not None:
            try:
                smax, vectors = self._calibrate(np.asarray(calibration))
            except HwmapError as e:
                self.notes.append(f"ADC calibration failed ({e}); analytic worst-case full scale used")
                smax = None
            else:
                p.config = replace(p.config, adc_calibration=1, calibration_vectors=vectors)
        for b, blk in enumerate(p.blocks):
            lay = p.layers[blk.layer]
            if smax is not None:
                s = smax[b]
            else:
                dmax = max_digits(lay, p.config.dac_bits).astype(float)
                col = p.weights[b].cells.astype(np.int64).sum(axis=0).reshape(blk.filter_count, lay.cols_per_filter)
                s = dmax[:, None] * col.max(axis=0)[None, :]
            p.adc[b] = AdcRec(b, p.config.adc_bits, _shift_for(s, p.config.adc_bits))

    def _calibrate(self, x: np.ndarray) -> tuple[dict[int, np.ndarray], int]:
        from hwmap.execute import run

        g, p = self.g, self.p
        if len(g.inputs) != 1:
            raise TargetError(f"calibration feeds one input, the graph has {len(g.inputs)}")
        want = g.tensor(g.inputs[0]).shape[1:]
        if x.ndim < 1 or tuple(x.shape[1:]) != tuple(want):
            raise TargetError(f"calibration samples of shape {list(x.shape[1:])} do not fit input {list(want)}")
        macs = sum(lay.groups * lay.rows * lay.filters * lay.positions for lay in p.layers) or 1
        n = max(1, min(CAL_SAMPLES, x.shape[0], _CAL_NET_MACS // macs))
        env = run(g, {g.inputs[0]: x[:n]}, collect=True)
        smax: dict[int, np.ndarray] = {}
        vectors = 0
        index = ScheduleIndex.of(p)  # one index of the schedule for every layer's kernel
        for lid, lay in enumerate(p.layers):
            kernel = LayerKernel(p, lid, index=index)
            u = input_codes(lay, env[p.tensors[lay.input].name])  # (G, n, P, M)
            total = u.shape[1] * u.shape[2]
            cells = lay.groups * lay.rows * lay.filters * lay.cols_per_filter * lay.replicas
            v = min(total, CAL_VECTORS, max(16, _CAL_MACS // max(1, lay.planes * cells)))
            idx = (np.arange(v, dtype=np.int64) * total) // v
            u = u.reshape(lay.groups, total, lay.rows)[:, idx][:, None]
            smax.update(kernel.probe(u))
            vectors += v
        return smax, vectors
