"""The emitter: an analog mapping as the instructions the cores' FSMs decode (issue 3, part 4).

:func:`write_program` turns an :class:`~hwmap_analog_imc.mapping.AnalogMapping` into a
:class:`~hwmap_analog_imc.program.Program` and writes ``program.bin`` (the binary format,
documented field by field in :mod:`hwmap_analog_imc.program`) and ``program.lst`` (the same
instructions as text). :func:`read_program` and :func:`parse_listing` read them back.

What is emitted, per crossbar layer (a Conv/Gemm/MatMul, fused or not):

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
  that finishes its filters (:func:`accumulations`): its own core when every row tile of
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
NoC transfers, per inference (:func:`plan_transfers`): the read-outs of blocks whose filters
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

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, cast

import numpy as np

import hwmap
from hwmap import Graph, HwmapError, Node, TargetError

from .hardware import HardwareConfig
from .layers import CROSSBAR_OPS, CrossbarLayer
from .mapping import AnalogMapping
from .program import (
    ENC_DIFFERENTIAL, ENC_OFFSET, FLAG_AXIS, FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, KIND_ACT, KIND_PSUM,
    LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST, LAYOUT_WHOLE, NONE, VERSION,
    AccumRec, AdcRec, BlockRec, Config, DigitalRec, LayerRec, PostOpRec, Program, ReadRec, TensorRec, TransferRec,
    WeightsRec, parse_listing, read_program,
)
from .simulator import PROGRAM_FILE, LayerKernel, input_codes

__all__ = ["PROGRAM_FILE", "LISTING_FILE", "CAL_SAMPLES", "CAL_VECTORS", "write_program", "build_program",
           "read_program", "parse_listing", "Region", "FlowBlock", "FlowLayer", "FlowDigital", "FlowTransfer",
           "Accumulation", "accumulations", "copy_positions", "input_region", "plan_transfers", "psum_bits"]

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
def _attrs_json(attrs: dict[str, Any]) -> str:
    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"attribute value of type {type(o).__name__} is not JSON")

    return json.dumps(attrs, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=default)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


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


def encode_weights(w_int: np.ndarray, hw: HardwareConfig) -> tuple[np.ndarray, np.ndarray, int]:
    """Cell levels ``(..., M, N·cols_per_filter)`` of integer weights ``(..., M, N)``, the
    per-column coefficients of the shift-and-add and the encoding offset ``o``."""
    bpc, wb = hw.bits_per_cell, hw.weight_bits
    mask = 2**bpc - 1
    w = w_int.astype(np.int64)
    if hw.weight_encoding == "differential":
        slices = _ceil(wb - 1, bpc)
        mag = np.abs(w)
        cols = []
        coef = []
        for s in range(slices):
            digit = (mag >> (s * bpc)) & mask
            cols += [np.where(w > 0, digit, 0), np.where(w < 0, digit, 0)]
            coef += [2 ** (s * bpc), -(2 ** (s * bpc))]
        offset = 0
    else:
        slices = _ceil(wb, bpc)
        offset = 2 ** (wb - 1)
        u = w + offset
        cols = [(u >> (s * bpc)) & mask for s in range(slices)]
        coef = [2 ** (s * bpc) for s in range(slices)]
    levels = np.stack(cols, axis=-1)  # (..., M, N, cpf): a filter's columns side by side
    levels = levels.reshape(*w.shape[:-1], w.shape[-1] * len(cols)).astype(np.uint8)
    return levels, np.asarray(coef, dtype=np.int64), offset


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
        self.p = Program(Config(
            cores=len(bp.cores), crossbar_rows=hw.crossbar_rows, crossbar_cols=hw.crossbar_cols,
            element_rows=hw.element_rows, element_cols=hw.element_cols, bits_per_cell=hw.bits_per_cell,
            weight_bits=hw.weight_bits,
            encoding=ENC_DIFFERENTIAL if hw.weight_encoding == "differential" else ENC_OFFSET,
            input_bits=hw.input_bits, dac_bits=hw.dac_bits, adc_bits=hw.adc_bits, columns_per_adc=hw.columns_per_adc,
            mesh_cols=bp.mesh_cols, mesh_rows=bp.mesh_rows, link_width_bits=m.config.noc.link_width_bits,
            hop_latency_cycles=m.config.noc.hop_latency_cycles, computation_cycles=res.computation_cycles,
            batch=batch, input_buffer_bytes=hw.input_buffer_bytes, output_buffer_bytes=hw.output_buffer_bytes,
            adc_calibration=0, calibration_vectors=0, clock_hz=hw.clock_hz, read_pulse_s=hw.read_pulse_s,
            adc_conversion_s=hw.adc_conversion_s))
        self._tensors()
        by_index = {lay.index: lay for lay in m.layers}
        layer_pid: dict[int, int] = {}
        for order, node in enumerate(g.nodes):
            if node.op in CROSSBAR_OPS:
                try:
                    cl = m.layer_of(node.name)
                except KeyError:
                    raise TargetError("crossbar node has no crossbar layer in the mapping",
                                      where=f"node {node.name!r}") from None
                layer_pid[cl.index] = self._layer(order, node, cl)
            else:
                self._digital(order, node)
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

    # -- one crossbar layer
    def _layer(self, order: int, node: Node, cl: CrossbarLayer) -> int:
        hw = self.hw
        where = f"node {node.name!r}"
        comp = node.fused[0] if node.op.startswith("Fused") and node.fused else node
        op = comp.op
        if not node.inputs:
            raise TargetError("a crossbar layer needs a dynamic input", where=where)
        x_name = node.inputs[0]
        x = self.g.tensor(x_name)
        kernel: tuple[int, ...] = ()
        geo: Any = None
        if op == "Conv":
            from hwmap.ops.conv import conv_geometry

            if "W" not in node.params:
                raise TargetError("Conv needs constant weights W to sit on a crossbar", where=where)
            w = np.asarray(node.params["W"], dtype=np.float64)
            b = node.params.get("B")
            geo, groups = conv_geometry(node, x.shape, w.shape, None if b is None else np.shape(b))
            c_out = w.shape[0]
            wmat = w.reshape(groups, c_out // groups, -1).transpose(0, 2, 1)  # (G, M, N)
            slot, out_axis, alpha = "W", 0, 1.0
            bias = None if b is None else np.asarray(b, dtype=np.float64).reshape(-1)
            kernel = geo.kernel
            positions = math.prod(geo.out)
        elif op in ("Gemm", "MatMul"):
            if "B" not in node.params:
                raise TargetError(f"{op} needs a constant right operand B to sit on a crossbar", where=where)
            bm = np.asarray(node.params["B"], dtype=np.float64)
            if bm.ndim != 2:
                raise TargetError(f"{op} weight B of shape {list(bm.shape)} is not a matrix", where=where)
            groups = 1
            if op == "Gemm":
                if node.attrs.get("transA", 0):
                    raise TargetError("Gemm with transA = 1 cannot stream its input rows into a crossbar",
                                      where=where)
                trans_b = bool(node.attrs.get("transB", 0))
                wmat = (bm.T if trans_b else bm)[None]
                out_axis = 0 if trans_b else 1
                alpha = float(node.attrs.get("alpha", 1.0))
                c = node.params.get("C")
                bias = None
                if c is not None:
                    c = np.asarray(c, dtype=np.float64) * float(node.attrs.get("beta", 1.0))
                    n_out = wmat.shape[2]
                    if c.size == n_out:
                        bias = c.reshape(-1)
                    elif c.size == 1:
                        bias = np.full(n_out, float(c.reshape(-1)[0]))
                    else:
                        raise TargetError(f"Gemm bias C of shape {list(c.shape)} is not per output channel",
                                          where=where)
            else:
                wmat, out_axis, alpha, bias = bm[None], 1, 1.0, None
            slot = "B"
            positions = math.prod(x.shape[1:-1]) if len(x.shape) > 2 else 1
        else:
            raise TargetError(f"op {op} is not a crossbar op", where=where)
        if wmat.shape[1:] != (cl.rows, cl.filters) or groups != cl.groups or max(positions, 1) != cl.positions:
            raise TargetError(f"weights {list(wmat.shape)} × {positions} positions disagree with the mapped layer "
                              f"({cl.groups} groups of {cl.rows}×{cl.filters}, {cl.positions} positions)", where=where)
        c_out = groups * cl.filters
        s_w, w_int = self._quantize_weights(node, slot, out_axis, wmat, c_out, where)
        levels, coef, offset = encode_weights(w_int, hw)
        in_scale, zp, qmin, qmax, planes = self._input_quant(x, where)
        pid = len(self.p.layers)
        self.w_int[pid] = w_int
        self.levels[pid] = levels
        nsp = len(kernel)
        self.p.layers.append(LayerRec(
            order=order, name=node.name, op=op, input=self.tensor_id[x_name],
            output=self.tensor_id[node.outputs[0]], home_core=0, groups=groups, rows=cl.rows, filters=cl.filters,
            cols_per_filter=cl.cols_per_filter, positions=cl.positions, replicas=1, planes=planes,
            kernel=tuple(kernel), strides=tuple(geo.strides) if nsp else (),
            pads_begin=tuple(geo.pads_begin) if nsp else (), pads_end=tuple(geo.pads_end) if nsp else (),
            dilations=tuple(geo.dilations) if nsp else (), out_spatial=tuple(geo.out) if nsp else (),
            in_scale=in_scale, in_zero_point=zp, in_qmin=qmin, in_qmax=qmax, weight_offset=offset,
            w_scale=self.p.add_const(s_w * alpha),
            bias=NONE if bias is None else self.p.add_const(bias), coef=self.p.add_const(coef)))
        if cl.cols_per_filter != coef.size:
            raise TargetError(f"the mapped layer takes {cl.cols_per_filter} columns per filter, the encoding "
                              f"{coef.size}", where=where)
        if node.op.startswith("Fused"):
            self._postops(pid, node)
        return pid

    def _quantize_weights(self, node: Node, slot: str, out_axis: int, wmat: np.ndarray, c_out: int,
                          where: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-output-channel scales ``(C_out,)`` and integer weights ``(G, M, N)``."""
        wb = self.hw.weight_bits
        top = 2 ** (wb - 1) - 1
        q = node.param_quant.get(slot)
        g, m, n = wmat.shape
        per_channel = wmat.transpose(0, 2, 1).reshape(c_out, m)  # (C_out, M), channel = g·N + f
        if q is None:
            amax = np.abs(per_channel).max(axis=1) if m else np.zeros(c_out)
            s_w = np.where(amax > 0, amax / top, 1.0)
            if "unannotated" not in " ".join(self.notes):
                self.notes.append(f"unannotated weights (first: {node.name}) quantized per output channel, "
                                  f"max-abs, {wb} bits")
        else:
            if q.bits > wb:
                raise TargetError(f"weights quantized to {q.bits} bits, the crossbar stores {wb}", where=where)
            if np.any(q.zero_point != 0):
                raise TargetError("weights with a nonzero zero point cannot be stored as signed cells", where=where)
            scale = np.asarray(q.scale, dtype=np.float64).reshape(-1)
            if scale.size == 1:
                s_w = np.full(c_out, float(scale[0]))
            elif scale.size == c_out and q.axis is not None and q.axis % np.ndim(node.params[slot]) == out_axis:
                s_w = scale.copy()
            else:
                raise TargetError(f"weight scale of {scale.size} values along axis {q.axis} is not per output "
                                  f"channel ({c_out} channels on axis {out_axis})", where=where)
            if np.any(s_w <= 0) or not np.all(np.isfinite(s_w)):
                raise TargetError("weight scales must be positive and finite", where=where)
            top = min(top, q.qmax)
        w_int = np.clip(np.round(per_channel / s_w[:, None]), -top, top)
        return s_w, w_int.reshape(g, n, m).transpose(0, 2, 1).astype(np.int64)

    def _input_quant(self, x: hwmap.Tensor, where: str) -> tuple[float, int, int, int, int]:
        q = x.quant
        if q is None:
            raise TargetError(f"input tensor {x.name!r} has no quantization annotation: legalization must set the "
                              "DAC scale (calibrate with --data)", where=where)
        if q.scale.size != 1 or q.zero_point.size != 1:
            raise TargetError(f"input tensor {x.name!r} is quantized per axis; the DACs take one scale per tensor",
                              where=where)
        span = q.qmax - q.qmin
        bits = max(1, int(span).bit_length())
        if bits > self.hw.input_bits:
            raise TargetError(f"input tensor {x.name!r} is quantized to {bits} bits, the DAC path takes "
                              f"input_bits = {self.hw.input_bits}", where=where)
        scale = float(q.scale.reshape(-1)[0])
        if not (scale > 0 and math.isfinite(scale)):
            raise TargetError(f"input tensor {x.name!r} has scale {scale}, must be positive", where=where)
        return scale, int(round(float(q.zero_point.reshape(-1)[0]))), int(q.qmin), int(q.qmax), \
            _ceil(bits, self.hw.dac_bits)

    def _params(self, node: Node) -> tuple[tuple[str, int], ...]:
        return tuple((slot, self.p.add_const(np.asarray(v))) for slot, v in node.params.items())

    def _postops(self, pid: int, node: Node) -> None:
        from hwmap.ops.fused import plan

        try:
            fp = plan(node)
        except HwmapError as e:
            raise TargetError(f"fused node cannot be lowered: {e}", where=f"node {node.name!r}") from None
        rest = list(node.inputs[fp.n_compute_inputs:])
        for post in fp.posts:
            extra, rest = rest[:post.extra], rest[post.extra:]
            sub = post.node
            self.p.postops.append(PostOpRec(pid, sub.name, sub.op, _attrs_json(sub.attrs), post.position,
                                            tuple(self.tensor_id[t] for t in extra), self._params(sub)))

    # -- digital ops
    def _digital(self, order: int, node: Node) -> None:
        """Record a digital op; its core and cycle are settled once the layers are placed."""
        self.p.digital.append(DigitalRec(order, node.name, node.op, 0, 0, _attrs_json(node.attrs),
                                         tuple(self.tensor_id[t] for t in node.inputs),
                                         tuple(self.tensor_id[t] for t in node.outputs), self._params(node)))

    # -- switches and weight programming
    def _blocks(self, layer_pid: dict[int, int]) -> None:
        res = self.m.result
        er, ec = self.hw.element_rows, self.hw.element_cols
        gr, gc = self.hw.crossbar_rows // er, self.hw.crossbar_cols // ec
        replicas = res.replicas
        for i, lm in enumerate(res.layers):
            if lm.layer in layer_pid:
                pid = layer_pid[lm.layer]
                self.p.layers[pid] = _replace(self.p.layers[pid], replicas=max(1, replicas.get(lm.layer, 1)))
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
            if (p.elem_rows != _ceil(p.row_count, er) or p.elem_cols != _ceil(p.filter_count * cpf, ec)
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
            self.p.layers[pid] = _replace(lay, home_core=first[pid][1])
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
            self.p.digital[i] = _replace(d, core=int(core), cycle=cycle)
            for t in d.outputs:
                homes[self.p.tensors[t].name] = (int(core), cycle)
        self.tensor_home = homes

    # -- schedule
    def _flow_layer(self, lid: int) -> FlowLayer:
        """Layer ``lid`` of the program as the dataflow planner sees it."""
        p, lay = self.p, self.p.layers[lid]
        ids = [b for b, blk in enumerate(p.blocks) if blk.layer == lid]
        return FlowLayer(
            lay.order, lay.name, lay.input, lay.output,
            tuple(t for po in p.postops if po.layer == lid for t in po.extra), lay.groups, lay.rows, lay.filters,
            lay.positions, lay.replicas, psum_bits(self.hw.input_bits, self.hw.weight_bits, lay.rows),
            lay.kernel, lay.strides, lay.pads_begin, lay.dilations, lay.out_spatial,
            tuple(FlowBlock(b.replica, b.group, b.row_start, b.row_count, b.filter_start, b.filter_count, b.cycle,
                            b.core) for b in (p.blocks[i] for i in ids)))

    def _schedule(self) -> None:
        blocks = self.p.blocks
        layers = self.p.layers
        self.flow = [self._flow_layer(lid) for lid in range(len(layers))]
        acc_core: dict[int, int] = {}  # block id -> the core its partial sums go to
        for lid, fl in enumerate(self.flow):
            ids = [b for b, blk in enumerate(blocks) if blk.layer == lid]
            for a in accumulations(fl):
                for j in a.blocks:
                    acc_core[ids[j]] = a.core

        def key(b: int) -> tuple[int, ...]:
            k = blocks[b]
            return (k.cycle, k.core, layers[k.layer].order, k.replica, k.group, k.row_start, k.row_count, k.elem_row)

        order = sorted(range(len(blocks)), key=lambda b: (key(b), blocks[b].filter_start, b))
        i = 0
        while i < len(order):
            j = i
            while j < len(order) and key(order[j]) == key(order[i]):
                j += 1
            group = order[i:j]
            i = j
            k = blocks[group[0]]
            lay = layers[k.layer]
            per = _ceil(lay.positions, lay.replicas)
            p0 = k.replica * per
            count = max(0, min(lay.positions, p0 + per) - p0)
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
                                     r.ch_start, r.ch_count, r.pos_start, r.pos_count, _ceil(tr.bits, 8)))

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
                p.config = _replace(p.config, adc_calibration=1, calibration_vectors=vectors)
        dac_top = 2**p.config.dac_bits - 1
        for b, blk in enumerate(p.blocks):
            lay = p.layers[blk.layer]
            if smax is not None:
                s = smax[b]
            else:
                umax = lay.in_qmax - lay.in_qmin
                dmax = np.array([min(dac_top, umax >> (k * p.config.dac_bits)) for k in range(lay.planes)], float)
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
        for lid, lay in enumerate(p.layers):
            kernel = LayerKernel(p, lid)
            u = input_codes(lay, env[p.tensors[lay.input].name])  # (G, n, P, M)
            total = u.shape[1] * u.shape[2]
            cells = lay.groups * lay.rows * lay.filters * lay.cols_per_filter * lay.replicas
            v = min(total, CAL_VECTORS, max(16, _CAL_MACS // max(1, lay.planes * cells)))
            idx = (np.arange(v, dtype=np.int64) * total) // v
            u = u.reshape(lay.groups, total, lay.rows)[:, idx][:, None]
            smax.update(kernel.probe(u))
            vectors += v
        return smax, vectors


# ------------------------------------------------------------------------------ dataflow
# Where each output is finished and what moves over the NoC. Pure functions on plain data, so
# that the estimate (from the mapping) follows exactly the transfers written here (from the
# program's records).

@dataclass(frozen=True)
class Region:
    """Part of a tensor, every sample (the NOC record's region fields; :mod:`.program`)."""

    layout: int
    ch_start: int
    ch_count: int
    pos_start: int
    pos_count: int

    @property
    def elements(self) -> int:
        return self.ch_count * self.pos_count


def whole_region(shape: tuple[int, ...]) -> Region:
    return Region(LAYOUT_WHOLE, 0, 1, 0, math.prod(shape[1:]))


@dataclass(frozen=True)
class FlowBlock:
    """A block as the dataflow sees it (a placement, or a SWITCHES record)."""

    replica: int
    group: int
    row_start: int
    row_count: int
    filter_start: int
    filter_count: int
    cycle: int
    core: int


@dataclass(frozen=True)
class FlowLayer:
    """A crossbar layer: tensors (any hashable keys), shape counts, convolution geometry
    (``kernel`` empty for Gemm/MatMul) and its blocks in program order."""

    order: int
    name: str
    input: Hashable
    output: Hashable
    extra: tuple[Hashable, ...]  # dynamic operands of the fused post-ops
    groups: int
    rows: int
    filters: int
    positions: int
    replicas: int
    psum_bits: int
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    pads_begin: tuple[int, ...]
    dilations: tuple[int, ...]
    out_spatial: tuple[int, ...]
    blocks: tuple[FlowBlock, ...]


@dataclass(frozen=True)
class FlowDigital:
    order: int
    name: str
    inputs: tuple[Hashable, ...]
    outputs: tuple[Hashable, ...]
    core: int
    cycle: int


@dataclass(frozen=True)
class Accumulation:
    """Filters ``filter_start..+filter_count`` of group ``group`` of copy ``replica``: the
    blocks holding their row tiles (indices into the layer's blocks), the core where they
    are accumulated, post-processed and finished (``core``) in computation cycle ``cycle``
    (the last of the blocks'), for the copy's positions ``pos_start..+pos_count``."""

    replica: int
    group: int
    filter_start: int
    filter_count: int
    blocks: tuple[int, ...]
    core: int
    cycle: int
    pos_start: int
    pos_count: int


@dataclass(frozen=True)
class FlowTransfer:
    """One NOC record: ``node`` is the step it serves (the consumer, or the layer whose
    partial sums move); ``bits`` per inference before rounding to bytes."""

    node: str
    cycle: int
    src: int
    dst: int
    tensor: Hashable
    kind: int
    region: Region
    bits: int


def copy_positions(positions: int, replicas: int, replica: int) -> tuple[int, int]:
    """(first position, count) copy ``replica`` of ``replicas`` computes: copy ``k`` takes
    positions ``k·⌈P/R⌉ ..`` (the last copies possibly fewer or none)."""
    per = _ceil(positions, replicas)
    start = replica * per
    return start, max(0, min(positions, start + per) - start)


def accumulations(layer: FlowLayer) -> list[Accumulation]:
    """The layer's blocks grouped by the filters they share (per copy and group: blocks whose
    filter ranges overlap hold row tiles of the same filters). A group on one core is
    finished there; a group spread over cores sends partial sums to the core holding most
    of its cells (the lowest such core on ties). Copies with no positions are left out."""
    by_key: dict[tuple[int, int], list[int]] = {}
    for i, b in enumerate(layer.blocks):
        by_key.setdefault((b.replica, b.group), []).append(i)
    out: list[Accumulation] = []
    for (replica, group), ids in sorted(by_key.items()):
        p0, pc = copy_positions(layer.positions, layer.replicas, replica)
        if pc == 0:
            continue
        ids.sort(key=lambda i: (layer.blocks[i].filter_start, i))
        runs: list[list[int]] = []
        end = -1
        for i in ids:
            b = layer.blocks[i]
            if runs and b.filter_start < end:
                runs[-1].append(i)
                end = max(end, b.filter_start + b.filter_count)
            else:
                runs.append([i])
                end = b.filter_start + b.filter_count
        for run in runs:
            blocks = [layer.blocks[i] for i in run]
            cells: dict[int, int] = {}
            for b in blocks:
                cells[b.core] = cells.get(b.core, 0) + b.row_count * b.filter_count
            core = min(cells, key=lambda c: (-cells[c], c))
            f0 = min(b.filter_start for b in blocks)
            f1 = max(b.filter_start + b.filter_count for b in blocks)
            out.append(Accumulation(replica, group, f0, f1 - f0, tuple(sorted(run)), core,
                                    max(b.cycle for b in blocks), p0, pc))
    return out


def _output_region(layer: FlowLayer, group: int, f0: int, fc: int, p0: int, pc: int) -> Region:
    layout = LAYOUT_CHANNELS_FIRST if layer.kernel else LAYOUT_CHANNELS_LAST
    return Region(layout, group * layer.filters + f0, fc, p0, pc)


def input_region(layer: FlowLayer, in_shape: tuple[int, ...], group: int, row_start: int, row_count: int,
                 pos_start: int, pos_count: int) -> Region | None:
    """The part of a layer's input one read group needs for positions ``pos_start..+pos_count``
    of its rows ``row_start..+row_count``: a Gemm/MatMul those input rows and entries; a
    convolution the channels its rows unroll (``row = c·ΠK + ...``, ONNX W order) on the
    input rows (first spatial axis) its output rows' receptive fields cover — ``o·s − p_b
    .. o·s − p_b + (k − 1)·d``, clipped to the tensor — all of every other spatial axis.
    None when they cover padding only."""
    if not layer.kernel:
        return Region(LAYOUT_CHANNELS_LAST, row_start, row_count, pos_start, pos_count)
    per_ch = math.prod(layer.kernel)
    cg = in_shape[1] // layer.groups
    c0 = group * cg + row_start // per_ch
    c1 = group * cg + (row_start + row_count - 1) // per_ch + 1
    inner_out = math.prod(layer.out_spatial[1:])
    o0, o1 = pos_start // inner_out, (pos_start + pos_count - 1) // inner_out
    s, pb, k, d = layer.strides[0], layer.pads_begin[0], layer.kernel[0], layer.dilations[0]
    lo = max(0, o0 * s - pb)
    hi = min(in_shape[2] - 1, o1 * s - pb + (k - 1) * d)
    if hi < lo:
        return None
    inner_in = math.prod(in_shape[3:])
    return Region(LAYOUT_CHANNELS_FIRST, c0, c1 - c0, lo * inner_in, (hi - lo + 1) * inner_in)


def _merge(regions: list[Region], shape: tuple[int, ...]) -> Region:
    """One region covering ``regions``: their bounding box in a common layout, else the whole."""
    if any(r.layout == LAYOUT_WHOLE for r in regions) or len({r.layout for r in regions}) > 1:
        return whole_region(shape)
    c0 = min(r.ch_start for r in regions)
    p0 = min(r.pos_start for r in regions)
    c1 = max(r.ch_start + r.ch_count for r in regions)
    p1 = max(r.pos_start + r.pos_count for r in regions)
    return Region(regions[0].layout, c0, c1 - c0, p0, p1 - p0)


def _intersect(piece: Region, need: Region) -> Region | None:
    """What of ``piece`` (held by one core) ``need`` takes: the overlap in a common layout;
    all of the piece when their layouts differ (a reshaping reader)."""
    if need.layout == LAYOUT_WHOLE:
        return piece
    if piece.layout == LAYOUT_WHOLE:
        return need
    if piece.layout != need.layout:
        return piece
    c0, c1 = max(piece.ch_start, need.ch_start), min(piece.ch_start + piece.ch_count, need.ch_start + need.ch_count)
    p0, p1 = (max(piece.pos_start, need.pos_start),
              min(piece.pos_start + piece.pos_count, need.pos_start + need.pos_count))
    if c1 <= c0 or p1 <= p0:
        return None
    return Region(piece.layout, c0, c1 - c0, p0, p1 - p0)


def _joined(pieces: list[tuple[int, Region]]) -> list[tuple[int, Region]]:
    """Pieces on one core at the same positions with adjacent channels joined into one."""
    out: list[tuple[int, Region]] = []
    for core, r in sorted(pieces, key=lambda cr: (cr[0], cr[1].layout, cr[1].pos_start, cr[1].pos_count,
                                                    cr[1].ch_start)):
        if out:
            c, q = out[-1]
            if (c, q.layout, q.pos_start, q.pos_count) == (core, r.layout, r.pos_start, r.pos_count) and \
                    q.ch_start + q.ch_count == r.ch_start:
                out[-1] = (c, Region(q.layout, q.ch_start, q.ch_count + r.ch_count, q.pos_start, q.pos_count))
                continue
        out.append((core, r))
    return out


def plan_transfers(shapes: dict[Hashable, tuple[int, ...]], bits: dict[Hashable, int], layers: list[FlowLayer],
                   digital: list[FlowDigital]) -> list[FlowTransfer]:
    """The NoC transfers per inference, in dataflow order of the steps they serve.

    * Partial sums: each block whose filters are accumulated on another core sends its
      read-out (``psum_bits`` per value) for its copy's positions there, in its cycle.
    * Finished values: every tensor a step produced is held in pieces (a layer's
      :func:`accumulations` each hold their filters at their copy's positions; a digital op
      its whole outputs). Each core reading a tensor needs one region of it (the bounding
      box of what its reads take, :func:`input_region`; a digital op, and a fused post-op's
      extra operand on each accumulating core, the whole tensor); every piece on another
      core sends the part of that region it holds, once, at ``bits[tensor]`` per value, in
      the first cycle the core reads it. Graph inputs (no producer) are loaded from off
      chip into each reader's buffer: no transfer."""
    steps = sorted([(lay.order, 0, i) for i, lay in enumerate(layers)] + [(d.order, 1, i) for i, d in enumerate(digital)])
    pieces: dict[Hashable, list[tuple[int, Region]]] = {}
    accs = [accumulations(lay) for lay in layers]
    for i, lay in enumerate(layers):
        pieces[lay.output] = _joined([(a.core, _output_region(lay, a.group, a.filter_start, a.filter_count,
                                                              a.pos_start, a.pos_count)) for a in accs[i]])
    for d in digital:
        for t in d.outputs:
            pieces[t] = [(d.core, whole_region(shapes[t]))]
    # what each core reads of each tensor: (first step, its name, first cycle, regions)
    needs: dict[tuple[Hashable, int], tuple[tuple[int, int, int], str, int, list[Region]]] = {}

    def need(t: Hashable, core: int, cycle: int, region: Region | None, step: tuple[int, int, int], name: str) -> None:
        if t not in pieces or region is None:
            return
        cur = needs.get((t, core))
        if cur is None:
            needs[(t, core)] = (step, name, cycle, [region])
        else:
            cur[3].append(region)
            needs[(t, core)] = (min(cur[0], step), cur[1] if cur[0] <= step else name, min(cur[2], cycle), cur[3])

    for step in steps:
        _, kind, i = step
        if kind == 1:
            d = digital[i]
            for t in d.inputs:
                need(t, d.core, d.cycle, whole_region(shapes[t]), step, d.name)
            continue
        lay = layers[i]
        x_shape = shapes[lay.input]
        for b in lay.blocks:
            p0, pc = copy_positions(lay.positions, lay.replicas, b.replica)
            if pc:
                need(lay.input, b.core, b.cycle,
                     input_region(lay, x_shape, b.group, b.row_start, b.row_count, p0, pc), step, lay.name)
        for a in accs[i]:
            for t in lay.extra:
                need(t, a.core, a.cycle, whole_region(shapes[t]), step, lay.name)
    out: list[FlowTransfer] = []
    for step in steps:
        _, kind, i = step
        if kind == 0:
            lay = layers[i]
            for a in accs[i]:
                for j in a.blocks:
                    b = lay.blocks[j]
                    if b.core != a.core:
                        region = _output_region(lay, b.group, b.filter_start, b.filter_count, a.pos_start,
                                                a.pos_count)
                        out.append(FlowTransfer(lay.name, b.cycle, b.core, a.core, lay.output, KIND_PSUM, region,
                                                region.elements * lay.psum_bits))
            ins = (lay.input,) + lay.extra
        else:
            ins = digital[i].inputs
        seen: set[Hashable] = set()
        for t in ins:
            if t in seen:
                continue
            seen.add(t)
            for (tt, core), (first, _, cycle, regions) in sorted(
                    ((k, v) for k, v in needs.items() if k[0] == t), key=lambda kv: kv[0][1]):
                if first != step:
                    continue
                want = _merge(regions, shapes[t])
                for src, piece in pieces.get(t, []):
                    if src == core:
                        continue
                    part = _intersect(piece, want)
                    if part is not None and part.elements:
                        out.append(FlowTransfer(needs[(tt, core)][1], cycle, src, core, t, KIND_ACT, part,
                                                part.elements * bits[t]))
    return out


def psum_bits(input_bits: int, weight_bits: int, rows: int) -> int:
    """Bits of a partial sum of a layer with ``rows`` rows as it goes over the NoC:
    ``input_bits + weight_bits + max(1, ceil(log2 rows)) + 1`` (an integer dot product's
    width plus a sign bit)."""
    return input_bits + weight_bits + max(1, math.ceil(math.log2(max(rows, 2)))) + 1


def _replace(rec: Any, **changes: Any) -> Any:
    from dataclasses import replace

    return replace(rec, **changes)
