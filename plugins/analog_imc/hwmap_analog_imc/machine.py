"""The chip as a program's instruction stream drives it: the cells of every core's crossbar,
every core's buffers and partial sums (the executor behind :class:`~.simulator.Simulator`).

The stream runs one computation cycle after the other. A cycle starts by programming its
blocks: each WEIGHTS record of the cycle writes its cell levels into its core's crossbar at
its element rectangle. Then, until nothing more can run:

* each core's crossbar FSM runs the cycle's SCHEDULE instructions of that core in stream
  order. A READ drives the word lines of the blocks it names: their cells are read back from
  the core's crossbar (the elements must hold what that block programmed), and the input
  elements its rows unroll at its positions (a convolution's receptive fields, a Gemm's
  rows) must be in the core's buffer; the blocks' read-outs then wait on the core. An ACCUM
  takes a block's read-out (its READ must have run) and adds it to the layer's partial sums
  on its destination core: directly when that is its own core, else as partial sums that a
  NOC record must carry there. Partial sums of a filter at a position that hold every row
  are finished on that core (scales, bias, the fused post-ops, whose other operands must be
  in that core's buffer): the output values land in the core's buffer;
* each core's digital logic runs the cycle's DIGITAL records of that core in record order,
  each once every input is wholly in the core's buffer; its outputs land there;
* the NoC runs the cycle's NOC records, each once what it moves is on its source core: a
  region of finished values (into the destination's buffer), or the partial sums of one
  ACCUM (added on the destination).

An instruction waits for its data within its cycle; whatever still waits when nothing can
run is a :class:`hwmap.TargetError` naming it and what it waits for. So are a block read
twice or never accumulated, partial sums no NOC record carries, a filter accumulated on two
cores, and a graph output no core completes. Graph inputs come from off chip into any core
that reads them. Buffers keep their contents from one cycle to the next.

Everything here depends on the program, not on the data, so :func:`execute` runs the stream
once when a session is made. It returns the cells each READ drove (read back from the
crossbars) and the order in which the crossbar layers and digital ops finished; the
simulator then computes the values of each layer in that order, its READs folded into a few
GEMMs (:mod:`.fast_layer`), from those cells.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np
from hwmap import TargetError
from hwmap.ops import sliding

from .crossbar import layer_window
from .program_records import (FLAG_INPUT, FLAG_OUTPUT, KIND_PSUM, LAYOUT_CHANNELS_FIRST, LAYOUT_CHANNELS_LAST,
                              AccumRec, LayerRec, ReadRec)

if TYPE_CHECKING:
    from .program import Program

__all__ = ["Execution", "execute", "value_order"]

#: Receptive fields kept for READs to come (a depthwise layer's groups share theirs).
_TOUCHED_CACHE = 64


@dataclass
class Execution:
    """What running a program's stream established: per block the cells its READ drove,
    the steps — ``(0, layer)`` or ``(1, digital op)`` — in the order they finished, and the
    bits the NOC records moved."""

    cells: dict[int, np.ndarray]
    steps: list[tuple[int, int]]
    noc_bits: int


def execute(p: Program) -> Execution:
    """Run the instruction stream of ``p`` (see the module docstring); a
    :class:`hwmap.TargetError` names the first instruction whose data is not where it needs it."""
    return _Machine(p).run()


def value_order(program: Program, finished: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The steps in the order the instruction stream finished them, each moved after the
    steps producing its operands (the values are computed a whole layer at a time, so a
    layer whose READs needed only part of a tensor still waits for all of it)."""
    made: dict[int, tuple[int, int]] = {}
    for lid, lay in enumerate(program.layers):
        made[lay.output] = (0, lid)
    for k, d in enumerate(program.digital):
        for t in d.outputs:
            made[t] = (1, k)
    extra: dict[int, tuple[int, ...]] = {}
    for po in program.postops:
        extra[po.layer] = extra.get(po.layer, ()) + po.extra

    def needs(step: tuple[int, int]) -> set[tuple[int, int]]:
        kind, i = step
        ts = program.digital[i].inputs if kind else (program.layers[i].input,) + extra.get(i, ())
        return {made[t] for t in ts if t in made and made[t] != step}

    rank = {step: n for n, step in enumerate(finished)}
    missing = {step: needs(step) for step in finished}
    readers: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for step, deps in missing.items():
        for dep in deps:
            readers.setdefault(dep, []).append(step)
    ready = [rank[step] for step, deps in missing.items() if not deps]
    heapq.heapify(ready)
    order: list[tuple[int, int]] = []
    while ready:  # Kahn's algorithm, the earliest finished first
        step = finished[heapq.heappop(ready)]
        order.append(step)
        for reader in readers.get(step, ()):
            missing[reader].discard(step)
            if not missing[reader]:
                heapq.heappush(ready, rank[reader])
    if len(order) < len(finished):
        raise TargetError("the program's layers and digital ops read each other's outputs in a circle")
    return order


def _view(shape: tuple[int, ...], layout: int) -> tuple[int, int]:
    """The (channels, positions) grid a per-sample mask of a tensor of ``shape`` is seen as:
    channels first ``(C, Π spatial)``, channels last ``(Π rows, K)``, else one row."""
    if layout == LAYOUT_CHANNELS_FIRST and len(shape) >= 2:
        return shape[1], math.prod(shape[2:])
    if layout == LAYOUT_CHANNELS_LAST and len(shape) >= 2:
        return math.prod(shape[1:-1]), shape[-1]
    return 1, math.prod(shape[1:])


@dataclass
class _Acc:
    """A layer's partial sums: rows accumulated and the core holding them, per (group,
    position, filter); the values still to finish."""

    rows: np.ndarray
    core: np.ndarray
    left: int


@dataclass
class _Finish:
    """Filters ``f0..`` of group ``g`` at positions ``p0..`` (``done``: those now complete)
    waiting on core ``core`` for their post-ops' operands."""

    layer: int
    core: int
    g: int
    p0: int
    f0: int
    done: np.ndarray


@dataclass
class _Cycle:
    """The instructions of one computation cycle still to run, per unit."""

    xbar: dict[int, deque[int]] = field(default_factory=dict)  # core -> SCHEDULE indices
    logic: dict[int, deque[int]] = field(default_factory=dict)  # core -> DIGITAL indices
    noc: list[int] = field(default_factory=list)


class _Machine:
    def __init__(self, p: Program) -> None:
        self.p = p
        c = p.config
        self.er, self.ec = c.element_rows, c.element_cols
        self.grid = (c.crossbar_rows // c.element_rows, c.crossbar_cols // c.element_cols)
        self.xbar: dict[int, np.ndarray] = {}  # core -> cell levels of its crossbar
        self.owner: dict[int, np.ndarray] = {}  # core -> the block that last programmed each element
        self.held: dict[tuple[int, int], np.ndarray] = {}  # (core, tensor) -> per-sample elements held
        self.inputs = {i for i, t in enumerate(p.tensors) if t.flags & FLAG_INPUT}
        self.readout: dict[int, tuple[int, int, int]] = {}  # block -> (core, pos_start, pos_count)
        self.accumulated: set[int] = set()
        self.packets: dict[tuple[int, ...], deque[tuple[int, int]]] = {}  # psum key -> (block, ACCUM index)
        self.acc: dict[int, _Acc] = {}
        self.finishing: list[_Finish] = []
        self.extra: list[tuple[int, ...]] = [() for _ in p.layers]
        for po in p.postops:
            self.extra[po.layer] += po.extra
        self.windows: dict[int, np.ndarray] = {}  # layer -> (positions, taps) flat input index, padding = size
        self.touched: dict[tuple[int, ...], np.ndarray] = {}
        self.cells: dict[int, np.ndarray] = {}
        self.steps: list[tuple[int, int]] = []
        self.noc_bits = 0

    # -- the stream
    def run(self) -> Execution:
        p = self.p
        cycles = [_Cycle() for _ in range(p.config.computation_cycles)]
        for k, ins in enumerate(p.schedule):
            cycles[ins.cycle].xbar.setdefault(ins.core, deque()).append(k)
        for k, d in enumerate(p.digital):
            cycles[d.cycle].logic.setdefault(d.core, deque()).append(k)
        for k, tr in enumerate(p.noc):
            cycles[tr.cycle].noc.append(k)
        programs: list[list[int]] = [[] for _ in cycles]
        for b, w in enumerate(p.weights):
            programs[w.cycle].append(b)
        for c, cyc in enumerate(cycles):
            for b in programs[c]:
                self._program(b)
            self._cycle(c, cyc)
        for key, queue in self.packets.items():
            b, k = queue[0]
            raise TargetError(f"ACCUM instruction {k} sends the partial sums of BLOCK {b} from core {key[0]} to core "
                              f"{key[1]}, and no NOC record carries them")
        for lid, lay in enumerate(p.layers):
            if (0, lid) not in self.steps:
                raise TargetError(f"layer {lid} ({lay.name}): the instruction stream never finishes all its outputs "
                                  "(its READs and ACCUMs do not cover every weight at every position)")
        for t, rec in enumerate(p.tensors):
            if rec.flags & FLAG_OUTPUT and t not in self.inputs:
                masks = [m for (_, tt), m in self.held.items() if tt == t]
                if not masks or not np.logical_or.reduce(masks).all():
                    raise TargetError(f"graph output {rec.name!r} is complete on no core at the end of the program")
        return Execution(self.cells, self.steps, self.noc_bits)

    @staticmethod
    def _drain(queues: dict[int, deque[int]], run: Callable[[int], str | None], tag: str,
               waiting: dict[str, str]) -> bool:
        """Run each core's queue in order until its head must wait (its reason recorded in
        ``waiting`` under ``tag``); whether anything ran."""
        moved = False
        for queue in queues.values():
            while queue:
                why = run(queue[0])
                if why:
                    waiting[f"{tag}:{queue[0]:012d}"] = why
                    break
                queue.popleft()
                moved = True
        return moved

    def _cycle(self, c: int, cyc: _Cycle) -> None:
        waiting: dict[str, str] = {}
        while True:
            moved = self._drain(cyc.xbar, self._schedule, "0", waiting)
            moved = self._drain(cyc.logic, self._digital, "1", waiting) or moved
            cyc.noc, ran = _attempt(cyc.noc, self._noc, lambda k: f"2:{k:012d}", waiting)
            self.finishing, done = _attempt(self.finishing, self._finish, lambda f: f"3:{f.layer:012d}", waiting)
            moved = moved or ran or done
            if not moved:
                break
            waiting.clear()
        if waiting:
            raise TargetError(f"in computation cycle {c}, {waiting[min(waiting)]}")

    # -- programming
    def _program(self, b: int) -> None:
        w = self.p.weights[b]
        if w.core not in self.xbar:
            self.xbar[w.core] = np.zeros((self.p.config.crossbar_rows, self.p.config.crossbar_cols), dtype=np.uint8)
            self.owner[w.core] = np.full(self.grid, -1, dtype=np.int64)
        rows, cols = w.cells.shape
        r0, c0 = w.elem_row * self.er, w.elem_col * self.ec
        self.xbar[w.core][r0:r0 + rows, c0:c0 + cols] = w.cells
        self.owner[w.core][w.elem_row:w.elem_row - (-rows // self.er), w.elem_col:w.elem_col - (-cols // self.ec)] = b

    # -- the crossbar FSM
    def _schedule(self, k: int) -> str | None:
        ins = self.p.schedule[k]
        if isinstance(ins, ReadRec):
            return self._read(k, ins)
        return self._accum(k, ins)

    def _read(self, k: int, r: ReadRec) -> str | None:
        p = self.p
        lay = p.layers[r.layer]
        if r.pos_count and lay.input not in self.inputs:
            missing = self._read_missing(r, lay)
            if missing:
                return f"READ instruction {k} ({lay.name}) on core {r.core} waits for {missing}"
        for b in r.blocks:
            if b in self.readout or b in self.accumulated:
                raise TargetError(f"READ instruction {k} ({lay.name}) reads BLOCK {b} a second time")
            blk = p.blocks[b]
            owner = self.owner.get(r.core)
            rect = None if owner is None else owner[blk.elem_row:blk.elem_row + blk.elem_rows,
                                                    blk.elem_col:blk.elem_col + blk.elem_cols]
            if rect is None or (rect != b).any():
                raise TargetError(f"READ instruction {k} ({lay.name}) drives BLOCK {b} on core {r.core}, whose "
                                  f"elements do not hold what BLOCK {b} programmed")
            r0, c0 = blk.elem_row * self.er, blk.elem_col * self.ec
            self.cells[b] = self.xbar[r.core][r0:r0 + blk.row_count,
                                              c0:c0 + blk.filter_count * lay.cols_per_filter].copy()
            self.readout[b] = (r.core, r.pos_start, r.pos_count)
        return None

    def _read_missing(self, r: ReadRec, lay: LayerRec) -> str | None:
        """What of its input a READ needs that its core does not hold (None: all there)."""
        shape = self.p.tensors[lay.input].shape
        held = self.held.get((r.core, lay.input))
        name = self.p.tensors[lay.input].name
        if not lay.kernel:
            need = None if held is None else held.reshape(_view(shape, LAYOUT_CHANNELS_LAST))[
                r.pos_start:r.pos_start + r.pos_count, r.row_start:r.row_start + r.row_count]
            if need is None or not need.all():
                return (f"rows {r.pos_start}..{r.pos_start + r.pos_count - 1}, entries {r.row_start}.."
                        f"{r.row_start + r.row_count - 1} of tensor {name!r}")
            return None
        taps = math.prod(lay.kernel)
        cg = shape[1] // lay.groups
        grid = None if held is None else held.reshape(_view(shape, LAYOUT_CHANNELS_FIRST))
        for ch, t0, t1 in self._channels(r.row_start, r.row_count, taps):
            c = slice(r.group * cg + ch.start, r.group * cg + ch.stop)
            touched = self._touched(r.layer, lay, r.pos_start, r.pos_count, t0, t1)
            if grid is None or not grid[c.start:c.stop][:, touched].all():
                return (f"channels {c.start}..{c.stop - 1} of tensor {name!r} at the input its positions "
                        f"{r.pos_start}..{r.pos_start + r.pos_count - 1} read")
        return None

    @staticmethod
    def _channels(r0: int, rc: int, taps: int) -> Iterator[tuple[slice, int, int]]:
        """Rows ``r0..r0+rc`` of a convolution (``row = channel·taps + tap``) as runs of
        channels with the same taps ``t0..t1``."""
        c_first, c_last = r0 // taps, (r0 + rc - 1) // taps
        if c_first == c_last:
            yield slice(c_first, c_first + 1), r0 - c_first * taps, r0 + rc - c_first * taps
            return
        lo = c_first
        if r0 > c_first * taps:
            yield slice(c_first, c_first + 1), r0 - c_first * taps, taps
            lo += 1
        end = r0 + rc - c_last * taps
        hi = c_last + 1 if end == taps else c_last
        if hi > lo:
            yield slice(lo, hi), 0, taps
        if end < taps:
            yield slice(c_last, c_last + 1), 0, end

    def _touched(self, lid: int, lay: LayerRec, p0: int, pc: int, t0: int, t1: int) -> np.ndarray:
        """Flat spatial input positions the taps ``t0..t1`` of positions ``p0..p0+pc`` read."""
        key = (lid, p0, pc, t0, t1)
        got = self.touched.get(key)
        if got is not None:
            return got
        win = self.windows.get(lid)
        spatial = self.p.tensors[lay.input].shape[2:]
        size = math.prod(spatial)
        if win is None:
            idx = np.arange(size, dtype=np.intp).reshape(spatial)[None, None]
            win = sliding(idx, layer_window(lay), fill=size).reshape(lay.positions, -1)
            self.windows[lid] = win
        mask = np.zeros(size + 1, dtype=bool)
        mask[win[p0:p0 + pc, t0:t1]] = True
        if len(self.touched) >= _TOUCHED_CACHE:
            self.touched.clear()
        got = self.touched[key] = np.flatnonzero(mask[:size])
        return got

    def _accum(self, k: int, a: AccumRec) -> str | None:
        if a.block in self.accumulated:
            raise TargetError(f"ACCUM instruction {k} reads out BLOCK {a.block} a second time")
        got = self.readout.pop(a.block, None)
        if got is None:
            return f"ACCUM instruction {k} waits for BLOCK {a.block} to be read (its READ has not run)"
        self.accumulated.add(a.block)
        core, p0, pc = got
        if a.dst_core == core:
            self._add(a.block, core, p0, pc, k)
        else:
            self.packets.setdefault(self._psum_key(a.block, core, a.dst_core, p0, pc), deque()).append((a.block, k))
        return None

    def _psum_key(self, b: int, src: int, dst: int, p0: int, pc: int) -> tuple[int, ...]:
        blk = self.p.blocks[b]
        lay = self.p.layers[blk.layer]
        layout = LAYOUT_CHANNELS_FIRST if lay.kernel else LAYOUT_CHANNELS_LAST
        return (src, dst, lay.output, layout, blk.group * lay.filters + blk.filter_start, blk.filter_count, p0, pc)

    def _add(self, b: int, core: int, p0: int, pc: int, k: int) -> None:
        """Block ``b``'s read-out for positions ``p0..`` added to its layer's partial sums on ``core``."""
        blk = self.p.blocks[b]
        lid = blk.layer
        lay = self.p.layers[lid]
        acc = self.acc.get(lid)
        if acc is None:
            shape = (lay.groups, lay.positions, lay.filters)
            acc = self.acc[lid] = _Acc(np.zeros(shape, dtype=np.int64), np.full(shape, -1, dtype=np.int64),
                                       math.prod(shape))
        if not pc or not blk.filter_count:
            return
        fs = slice(blk.filter_start, blk.filter_start + blk.filter_count)
        rows = acc.rows[blk.group, p0:p0 + pc, fs]
        where = acc.core[blk.group, p0:p0 + pc, fs]
        np.add(rows, blk.row_count, out=rows)
        if where.min() != where.max() or where.flat[0] not in (-1, core):
            others = where[(where >= 0) & (where != core)]
            if others.size:
                raise TargetError(f"ACCUM instruction {k} adds the partial sums of BLOCK {b} ({lay.name}) on core "
                                  f"{core}, those of other row tiles of its filters on core {int(others[0])}")
        where[...] = core
        top = rows.max()
        if top > lay.rows:
            raise TargetError(f"ACCUM instruction {k} adds rows of BLOCK {b} ({lay.name}) that other blocks "
                              "already accumulated")
        if top == lay.rows:
            done = rows == lay.rows
            f = _Finish(lid, core, blk.group, p0, blk.filter_start, done)
            if self._finish(f):
                self.finishing.append(f)

    def _finish(self, f: _Finish) -> str | None:
        """Finished values of a layer on a core, once its post-ops' operands are there."""
        p = self.p
        lay = p.layers[f.layer]
        for t in self.extra[f.layer]:
            if t not in self.inputs and not self._holds(f.core, t, None):
                return (f"layer {f.layer} ({lay.name}) waits on core {f.core} for tensor {p.tensors[t].name!r}, "
                        "an operand of its post-ops")
        pc, fc = f.done.shape
        ch = f.g * lay.filters + f.f0
        if lay.kernel:
            self._grid(f.core, lay.output, LAYOUT_CHANNELS_FIRST)[ch:ch + fc, f.p0:f.p0 + pc] |= f.done.T
        else:
            self._grid(f.core, lay.output, LAYOUT_CHANNELS_LAST)[f.p0:f.p0 + pc, ch:ch + fc] |= f.done
        acc = self.acc[f.layer]
        acc.left -= int(f.done.sum())
        if acc.left == 0:
            del self.acc[f.layer]
            self.steps.append((0, f.layer))
        return None

    # -- buffers
    def _grid(self, core: int, t: int, layout: int) -> np.ndarray:
        """Core ``core``'s mask of tensor ``t`` (made empty when missing), seen in ``layout``."""
        shape = self.p.tensors[t].shape
        held = self.held.get((core, t))
        if held is None:
            held = self.held[(core, t)] = np.zeros(math.prod(shape[1:]), dtype=bool)
        return held.reshape(_view(shape, layout))

    def _holds(self, core: int, t: int, region: tuple[int, int, int, int, int] | None) -> bool:
        """Whether ``core`` holds ``region`` (layout, ch_start, ch_count, pos_start, pos_count)
        of tensor ``t`` (None: all of it)."""
        if t in self.inputs:
            return True
        held = self.held.get((core, t))
        if held is None:
            return False
        if region is None:
            return bool(held.all())
        return bool(self._region(held.reshape(_view(self.p.tensors[t].shape, region[0])), region).all())

    @staticmethod
    def _region(grid: np.ndarray, region: tuple[int, int, int, int, int]) -> np.ndarray:
        layout, c0, cc, p0, pc = region
        if layout == LAYOUT_CHANNELS_LAST:
            return grid[p0:p0 + pc, c0:c0 + cc]
        if layout == LAYOUT_CHANNELS_FIRST:
            return grid[c0:c0 + cc, p0:p0 + pc]
        return grid

    # -- the digital logic and the NoC
    def _digital(self, k: int) -> str | None:
        d = self.p.digital[k]
        for t in d.inputs:
            if not self._holds(d.core, t, None):
                return (f"DIGITAL op {k} ({d.name[:80]}) on core {d.core} waits for tensor "
                        f"{self.p.tensors[t].name!r}")
        for t in d.outputs:
            self._grid(d.core, t, 0)[...] = True
        self.steps.append((1, k))
        return None

    def _noc(self, k: int) -> str | None:
        tr = self.p.noc[k]
        region = (tr.layout, tr.ch_start, tr.ch_count, tr.pos_start, tr.pos_count)
        name = self.p.tensors[tr.tensor].name
        if tr.kind == KIND_PSUM:
            queue = self.packets.get((tr.src, tr.dst, tr.tensor) + region)
            if not queue:
                return f"NOC transfer {k} waits for partial sums of tensor {name!r} on core {tr.src} to carry"
            b, acc_k = queue.popleft()
            if not queue:
                del self.packets[(tr.src, tr.dst, tr.tensor) + region]
            self._add(b, tr.dst, tr.pos_start, tr.pos_count, acc_k)
        else:
            if not self._holds(tr.src, tr.tensor, region):
                return f"NOC transfer {k} waits for the part of tensor {name!r} it moves to be on core {tr.src}"
            self._region(self._grid(tr.dst, tr.tensor, tr.layout), region)[...] = True
        self.noc_bits += tr.bytes * 8
        return None


def _attempt(items: list[Any], run: Callable[[Any], str | None], key: Callable[[Any], str],
             waiting: dict[str, str]) -> tuple[list[Any], bool]:
    """Run each of ``items`` that can run now (``run`` returns why not, or ``None`` when it
    ran); those that cannot stay, in order, with their reason under ``key(item)`` in
    ``waiting``. Returns what stays and whether anything ran."""
    left, ran = [], False
    for item in items:
        why = run(item)
        if why:
            waiting[key(item)] = why
            left.append(item)
        else:
            ran = True
    return left, ran
