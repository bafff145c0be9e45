"""Checking a decoded program before anything runs it: every cross-reference, every count
and size against what it refers to, and the memory the simulator would take."""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Callable

import numpy as np
from hwmap import TargetError
from hwmap.safeio import MAX_JSON_DEPTH, json_depth

from .program_placement import check_placement
from .program_records import (Config, DigitalRec, FLAG_AXIS, FLAG_QUANT, LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST,
                              LAYOUT_WHOLE, LayerRec, NONE, PostOpRec, ReadRec)

if TYPE_CHECKING:
    from .program import Program

__all__ = ["check", "footprint", "region_extent", "region_elements"]


def check(p: Program, where: str) -> None:
    """Raise :class:`hwmap.TargetError` naming the first inconsistency of ``p``."""
    def bad(msg: str) -> TargetError:
        return TargetError(msg, where=where)

    c = p.config
    nt, nc, nl, nb = len(p.tensors), len(p.consts), len(p.layers), len(p.blocks)

    def ref(r: int, what: str, optional: bool = False) -> None:
        if not (r < nc or (optional and r == NONE)):
            raise bad(f"{what} refers to constant {r}, the program has {nc}")

    _check_config(c, bad)
    if c.computation_cycles > max(1, nb):
        raise bad(f"CONFIG declares {c.computation_cycles:,} computation cycles for {nb:,} blocks (each cycle holds "
                  "at least one)")
    for i, t in enumerate(p.tensors):
        if t.flags & FLAG_QUANT:
            ref(t.q_scale, f"tensor {i} quant scale")
            ref(t.q_zero_point, f"tensor {i} quant zero point")
            _check_quant(p, i, bad)
    for i, lay in enumerate(p.layers):
        if lay.input >= nt or lay.output >= nt:
            raise bad(f"layer {i} ({lay.name}) refers to tensor {max(lay.input, lay.output)}, the program has {nt}")
        ref(lay.w_scale, f"layer {i} w_scale")
        ref(lay.bias, f"layer {i} bias", optional=True)
        ref(lay.coef, f"layer {i} coef")
        if lay.home_core >= c.cores:
            raise bad(f"layer {i} ({lay.name}) has home core {lay.home_core}, the chip has {c.cores}")
        nsp = len(lay.kernel)
        if any(len(t) != nsp for t in (lay.strides, lay.pads_begin, lay.pads_end, lay.dilations, lay.out_spatial)):
            raise bad(f"layer {i} ({lay.name}) has geometry tuples of different lengths")
        if p.consts[lay.coef].shape != (lay.cols_per_filter,):
            raise bad(f"layer {i} ({lay.name}) coef has shape {p.consts[lay.coef].shape}, expected "
                      f"({lay.cols_per_filter},)")
        if p.consts[lay.w_scale].shape != (lay.groups * lay.filters,):
            raise bad(f"layer {i} ({lay.name}) w_scale has shape {p.consts[lay.w_scale].shape}")
        if lay.bias != NONE and p.consts[lay.bias].shape != (lay.groups * lay.filters,):
            raise bad(f"layer {i} ({lay.name}) bias has shape {p.consts[lay.bias].shape}")
        if not _geometry_ok(lay, p.tensors[lay.input].shape):
            raise bad(f"layer {i} ({lay.name}) does not fit its input tensor of shape "
                      f"{list(p.tensors[lay.input].shape)}")
        span = lay.in_qmax - lay.in_qmin
        if not (math.isfinite(lay.in_scale) and lay.in_scale > 0) or span < 0 or not 1 <= lay.planes <= c.input_bits \
                or span.bit_length() > lay.planes * c.dac_bits:
            raise bad(f"layer {i} ({lay.name}) has an input quantization its DAC bit-planes cannot drive (scale "
                      f"{lay.in_scale!r}, codes {lay.in_qmin}..{lay.in_qmax}, {lay.planes} planes of "
                      f"{c.dac_bits} bits)")
    held = [0] * nl  # weights (rows x filters) the blocks of each layer hold
    for i, b in enumerate(p.blocks):
        if b.layer >= nl:
            raise bad(f"block {i} refers to layer {b.layer}, the program has {nl}")
        lay = p.layers[b.layer]
        if (b.group >= lay.groups or b.row_start + b.row_count > lay.rows
                or b.filter_start + b.filter_count > lay.filters or b.replica >= lay.replicas):
            raise bad(f"block {i} lies outside layer {b.layer} ({lay.name})")
        if b.core >= c.cores or b.cycle >= c.computation_cycles:
            raise bad(f"block {i} sits on core {b.core} in cycle {b.cycle}, outside the chip/program")
        held[b.layer] += b.row_count * b.filter_count
    for i, lay in enumerate(p.layers):  # before anything the size of a layer is made
        if held[i] < lay.groups * lay.rows * lay.filters:
            raise bad(f"layer {i} ({lay.name}) declares {lay.groups * lay.rows * lay.filters:,} weights per filter "
                      f"column, its blocks hold {held[i]:,}")
    if len(p.weights) != nb or len(p.adc) != nb:
        raise bad(f"{nb} blocks but {len(p.weights)} weight and {len(p.adc)} ADC records")
    for i, (w, a) in enumerate(zip(p.weights, p.adc)):
        b = p.blocks[i]
        cpf = p.layers[b.layer].cols_per_filter
        if w.block != i or a.block != i:
            raise bad(f"weight/ADC record {i} is for block {w.block}/{a.block}")
        if w.cells.shape != (b.row_count, b.filter_count * cpf) or (w.cycle, w.core, w.elem_row, w.elem_col) != (
                b.cycle, b.core, b.elem_row, b.elem_col):
            raise bad(f"weight record of block {i} does not match its switch configuration")
        if a.shifts.shape != (p.layers[b.layer].planes, cpf):
            raise bad(f"ADC record of block {i} has {a.shifts.shape} shifts, expected (planes, cols_per_filter)")
    for k, ins in enumerate(p.schedule):
        if ins.core >= c.cores or ins.cycle >= c.computation_cycles:
            raise bad(f"instruction {k} runs on core {ins.core} in cycle {ins.cycle}, the chip has {c.cores} cores "
                      f"and the program {c.computation_cycles} cycles")
        if isinstance(ins, ReadRec):
            if ins.layer >= nl or any(b >= nb for b in ins.blocks):
                raise bad(f"READ instruction {k} refers to a missing layer or block")
            if ins.pos_start + ins.pos_count > p.layers[ins.layer].positions:
                raise bad(f"READ instruction {k} reads positions past the layer's {p.layers[ins.layer].positions}")
            if any((p.blocks[b].layer, p.blocks[b].group, p.blocks[b].row_start, p.blocks[b].row_count)
                   != (ins.layer, ins.group, ins.row_start, ins.row_count) for b in ins.blocks):
                raise bad(f"READ instruction {k} drives word lines (layer, group, rows) its blocks do not hold")
        else:
            if ins.block >= nb or ins.dst_core >= c.cores:
                raise bad(f"ACCUM instruction {k} refers to a missing block or core")
            ref(ins.offset, f"ACCUM instruction {k} offset")
    for k, po in enumerate(p.postops):
        if po.layer >= nl or any(t >= nt for t in po.extra):
            raise bad(f"post-op {k} ({po.name}) refers to a missing layer or tensor")
        for _, r in po.params:
            ref(r, f"post-op {k} ({po.name}) param")
    for k, d in enumerate(p.digital):
        if any(t >= nt for t in d.inputs + d.outputs) or d.core >= c.cores:
            raise bad(f"digital op {k} ({d.name}) refers to a missing tensor or core")
        for _, r in d.params:
            ref(r, f"digital op {k} ({d.name}) param")
    for k, tr in enumerate(p.noc):
        if tr.tensor >= nt or max(tr.src, tr.dst) >= c.cores:
            raise bad(f"NoC transfer {k} refers to a missing tensor or core")
        if region_elements(p.tensors[tr.tensor].shape, tr.layout, tr.ch_start, tr.ch_count, tr.pos_start,
                           tr.pos_count) is None:
            raise bad(f"NoC transfer {k} moves a region outside tensor {p.tensors[tr.tensor].name!r} "
                      f"(layout {tr.layout}, channels {tr.ch_start}+{tr.ch_count}, "
                      f"positions {tr.pos_start}+{tr.pos_count})")
    check_placement(p, bad)
    named: list[PostOpRec | DigitalRec] = [*p.postops, *p.digital]
    for op in named:
        try:
            attrs = json.loads(op.attrs)
        except (ValueError, RecursionError):
            attrs = None
        if not isinstance(attrs, dict) or json_depth(attrs, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH:
            raise bad(f"{op.KEYWORD} {op.name[:80]!r} has attributes that are not a JSON object (of at most "
                      f"{MAX_JSON_DEPTH} levels)")


def _check_quant(p: Program, i: int, bad: Callable[[str], TargetError]) -> None:
    """A quantized tensor's grid is one the simulator can hold it on: 1..32 bits, positive
    finite scales and finite zero points, one of each, or one per entry of its axis."""
    t = p.tensors[i]
    scale, zero = p.consts[t.q_scale], p.consts[t.q_zero_point]
    n = 1
    if t.flags & FLAG_AXIS:
        if not -len(t.shape) <= t.q_axis < len(t.shape):
            raise bad(f"TENSOR {i} ({t.name[:80]}) is quantized along axis {t.q_axis} of a {len(t.shape)}-d tensor")
        n = t.shape[t.q_axis]
    if not 1 <= t.q_bits <= 32 or scale.size not in (1, n) or zero.size not in (1, n) or scale.dtype.kind not in "iuf" \
            or not (np.isfinite(scale).all() and (scale > 0).all() and np.isfinite(zero).all()):
        raise bad(f"TENSOR {i} ({t.name[:80]}) declares a quantization no grid holds ({t.q_bits} bits, "
                  f"{scale.size} scales, {zero.size} zero points)")


#: The bounds of every CONFIG field the simulator computes with: bit widths as the
#: ``[hardware]`` config allows them, counts at least 1 where they divide.
_CONFIG_BOUNDS = {"bits_per_cell": (1, 8), "weight_bits": (1, 32), "input_bits": (1, 32), "dac_bits": (1, 16),
                  "adc_bits": (1, 32), "cores": (1, None), "element_rows": (1, None), "element_cols": (1, None),
                  "columns_per_adc": (1, None), "link_width_bits": (1, None), "batch": (1, None)}


def _check_config(c: Config, bad: Callable[[str], TargetError]) -> None:
    for name, (lo, hi) in _CONFIG_BOUNDS.items():
        v = getattr(c, name)
        if v < lo or (hi is not None and v > hi):
            raise bad(f"CONFIG {name} = {v} is outside {lo}..{hi if hi is not None else ''}")
    if not (math.isfinite(c.clock_hz) and c.clock_hz > 0):
        raise bad(f"CONFIG clock_hz = {c.clock_hz!r} is not a positive frequency")
    for name in ("read_pulse_s", "adc_conversion_s"):
        v = getattr(c, name)
        if not (math.isfinite(v) and v >= 0):
            raise bad(f"CONFIG {name} = {v!r} is not a duration")


def footprint(p: Program, noise: bool = False) -> tuple[int, int]:
    """Upper estimates, in bytes, of the memory the simulator takes for ``p``: to prepare
    it (running its instruction stream on the cores' state; per layer its integer weight matrix once per run of positions read by the same
    READs, the cover check, the im2col index plan and the DAC activity plan; the cells
    stacked and as floats) and per sample simulated (every tensor, and the largest layer's
    codes, digit planes and accumulations: float32 planes for the fast kernel, float64 ones
    and the column sums for the per-plane kernel device ``noise`` takes). The simulator
    checks both against the memory bound before it allocates anything the size of a layer
    (measured: zoo:mobilenet_v1 on analog_imc:default estimates 515 MB — 99 MB of it
    running the instruction stream, :mod:`.machine` — and 196 MB, takes
    149 MB to decode and prepare and 48 MB per sample; with noise 331 MB estimated and
    278 MB taken per sample)."""
    cuts: list[set[int]] = [{0, lay.positions} for lay in p.layers]
    geoms: list[set[tuple[int, int, int, int]]] = [set() for _ in p.layers]
    for ins in p.schedule:
        if isinstance(ins, ReadRec):
            cuts[ins.layer] |= {ins.pos_start, ins.pos_start + ins.pos_count}
            geoms[ins.layer].add((ins.row_start, ins.row_count, ins.pos_start, ins.pos_count))
    prepare = 12 * sum(w.cells.size for w in p.weights) + _machine_bytes(p)
    per_sample = 8 * sum(math.prod(t.shape[1:]) for t in p.tensors)
    worst = 0
    for lay, cut, geom in zip(p.layers, cuts, geoms):
        grf = lay.groups * lay.rows * lay.filters
        prepare += 16 * grf * len(cut) + 24 * lay.positions * lay.rows + 8 * sum(rc * pc for _, rc, _, pc in geom)
        per_vector = (8 * lay.rows * (lay.planes + 3) + 32 * lay.filters if noise
                      else 4 * lay.rows * (lay.planes + 2) + 24 * lay.filters)
        worst = max(worst, lay.groups * lay.positions * per_vector)
    return prepare, per_sample + worst


def _machine_bytes(p: Program) -> int:
    """What running the stream (:mod:`.machine`) holds at most: the crossbar cells and
    element owners of every core programmed, a mask per tensor per core that holds it (its
    producers and the NoC's destinations), every layer's partial-sum counters."""
    c = p.config
    cores = len({w.core for w in p.weights})
    elements = (c.crossbar_rows // c.element_rows) * (c.crossbar_cols // c.element_cols)
    holders: dict[int, set[int]] = {}
    for tr in p.noc:
        holders.setdefault(tr.tensor, set()).add(tr.dst)
    for d in p.digital:
        for t in d.outputs:
            holders.setdefault(t, set()).add(d.core)
    for ins in p.schedule:
        if not isinstance(ins, ReadRec):
            holders.setdefault(p.layers[p.blocks[ins.block].layer].output, set()).add(ins.dst_core)
    masks = sum(math.prod(p.tensors[t].shape[1:]) * len(cs) for t, cs in holders.items())
    counters = 16 * sum(lay.groups * lay.positions * lay.filters for lay in p.layers)
    return cores * (c.crossbar_rows * c.crossbar_cols + 8 * elements) + masks + counters


def region_extent(shape: tuple[int, ...], layout: int) -> tuple[int, int] | None:
    """(channels, positions) of a tensor of batch-first ``shape`` in ``layout`` (see NOC in
    the module docstring); None for an unknown layout or one the rank does not allow."""
    if layout == LAYOUT_WHOLE:
        return 1, math.prod(shape[1:])
    if len(shape) < 2 or layout not in (LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST):
        return None
    if layout == LAYOUT_CHANNELS_FIRST:
        return shape[1], math.prod(shape[2:])
    return shape[-1], math.prod(shape[1:-1])


def region_elements(shape: tuple[int, ...], layout: int, ch_start: int, ch_count: int, pos_start: int,
                    pos_count: int) -> int | None:
    """Elements per sample of a NOC region of a tensor of ``shape``; None when the region
    lies outside the tensor (or the layout does not apply)."""
    ext = region_extent(shape, layout)
    if ext is None or ch_start + ch_count > ext[0] or pos_start + pos_count > ext[1]:
        return None
    if layout == LAYOUT_WHOLE and (ch_start, ch_count, pos_start, pos_count) != (0, 1, 0, ext[1]):
        return None
    return ch_count * pos_count


def _geometry_ok(lay: LayerRec, x: tuple[int, ...]) -> bool:
    """Whether the layer's rows and positions are what its input tensor gives."""
    if min(lay.groups, lay.rows, lay.filters, lay.positions, lay.planes, lay.cols_per_filter, lay.replicas) < 1:
        return False
    if not lay.kernel:  # Gemm / MatMul: the last axis is the input vector
        return (lay.groups == 1 and len(x) >= 2 and x[-1] == lay.rows
                and max(1, math.prod(x[1:-1])) == lay.positions)
    nsp = len(lay.kernel)
    if len(x) != 2 + nsp or x[1] % lay.groups or (x[1] // lay.groups) * math.prod(lay.kernel) != lay.rows:
        return False
    if math.prod(lay.out_spatial) != lay.positions or min(lay.strides + lay.dilations) < 1:
        return False
    return all((size + b + e - (k - 1) * d - 1) // s + 1 == o and size + b + e >= (k - 1) * d + 1
               for size, k, s, d, b, e, o in zip(x[2:], lay.kernel, lay.strides, lay.dilations, lay.pads_begin,
                                                 lay.pads_end, lay.out_spatial))
