"""The dataflow planner: where each crossbar output is finished and what moves over the NoC.

Pure functions on plain records, used by both the emitter (:mod:`.emit`, from the program's
records) and the estimate (:mod:`.estimate`, from the mapping), so that the estimate counts
exactly the transfers the emitter writes. A layer's blocks are grouped by the filters they
share (:func:`accumulations`); a group on one core is finished there, a group spread over
cores sends partial sums (:func:`psum_bits` each) to the core holding most of its cells.
Every tensor a step produced is held in pieces; each core reading it receives, once, the part
of its pieces it reads (:func:`input_region`), in the first cycle it reads it
(:func:`plan_transfers`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Hashable, Union

from .blocks import copy_positions
from .mapper import Placement
from .program import KIND_ACT, KIND_PSUM, LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST, LAYOUT_WHOLE, BlockRec

__all__ = ["Region", "whole_region", "FlowBlock", "FlowLayer", "FlowDigital", "FlowTransfer", "Accumulation",
           "accumulations", "copy_positions", "input_region", "plan_transfers", "psum_bits"]


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


#: A block as the dataflow sees it: a mapper placement (the estimate) or a program's BLOCK
#: record (the emitter); the planner reads their common fields ``replica, group, row_start,
#: row_count, filter_start, filter_count, cycle, core``.
FlowBlock = Union[Placement, BlockRec]


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


@dataclass
class _Need:
    """What one core reads of one tensor: the first step reading it (and that step's name),
    the first cycle it reads it in and the regions its reads take."""

    step: tuple[int, int, int]
    name: str
    cycle: int
    regions: list[Region] = field(default_factory=list)


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
    # per tensor, per core: what the core reads of it (steps come in dataflow order, so the
    # first step to ask for a tensor on a core is the one its transfers serve)
    needs: dict[Hashable, dict[int, _Need]] = {}

    def need(t: Hashable, core: int, cycle: int, region: Region | None, step: tuple[int, int, int], name: str) -> None:
        if t not in pieces or region is None:
            return
        cur = needs.setdefault(t, {}).setdefault(core, _Need(step, name, cycle))
        cur.cycle = min(cur.cycle, cycle)
        cur.regions.append(region)

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
        for t in dict.fromkeys(ins):  # each tensor once, in operand order
            for core, nd in sorted(needs.get(t, {}).items()):
                if nd.step != step:
                    continue
                want = _merge(nd.regions, shapes[t])
                for src, piece in pieces.get(t, []):
                    if src == core:
                        continue
                    part = _intersect(piece, want)
                    if part is not None and part.elements:
                        out.append(FlowTransfer(nd.name, nd.cycle, src, core, t, KIND_ACT, part,
                                                part.elements * bits[t]))
    return out


def psum_bits(input_bits: int, weight_bits: int, rows: int) -> int:
    """Bits of a partial sum of a layer with ``rows`` rows as it goes over the NoC:
    ``input_bits + weight_bits + max(1, ceil(log2 rows)) + 1`` (an integer dot product's
    width plus a sign bit)."""
    return input_bits + weight_bits + max(1, math.ceil(math.log2(max(rows, 2)))) + 1
