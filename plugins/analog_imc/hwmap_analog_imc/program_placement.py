"""Checking a decoded program against the chip it names: where its blocks sit and where its
instructions run.

:func:`check_placement` runs after :func:`.program_check.check` has checked every
cross-reference (so every index it follows is in range) and raises a one-line
:class:`hwmap.TargetError` naming the first record that breaks one of these rules:

* a block's element rectangle lies within the core's element grid
  (``crossbar_rows / element_rows`` × ``crossbar_cols / element_cols`` elements);
* a block declares the elements its weights take: ``elem_rows = ⌈row_count /
  element_rows⌉`` and ``elem_cols = ⌈filter_count·cols_per_filter / element_cols⌉``;
* no two blocks of one computation cycle sit on the same elements of the same core (the
  switches concatenate each element into one block at a time);
* a READ drives blocks programmed on its own core in its own computation cycle, and an
  ACCUM runs on the core and in the cycle of the block it reads out;
* DIGITAL and NOC records run in a computation cycle of the program;
* the ``order`` of the LAYERS and DIGITAL records is one dataflow order: distinct numbers,
  each tensor made by at most one of them, before every one that reads it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

import numpy as np

from hwmap import TargetError

from .blocks import ceil_div
from .program_records import ReadRec

if TYPE_CHECKING:
    from .program import Program

__all__ = ["check_placement"]


def check_placement(p: Program, bad: Callable[[str], TargetError]) -> None:
    """Raise ``bad(message)`` for the first block or instruction the chip cannot run as written."""
    c = p.config
    gr, gc = c.crossbar_rows // c.element_rows, c.crossbar_cols // c.element_cols
    grids: dict[tuple[int, int], np.ndarray] = {}  # (cycle, core) -> block on each element, −1 free
    for i, b in enumerate(p.blocks):
        lay = p.layers[b.layer]
        if b.elem_row + b.elem_rows > gr or b.elem_col + b.elem_cols > gc:
            raise bad(f"BLOCK {i} ({lay.name}) takes elements {b.elem_row}..{b.elem_row + b.elem_rows - 1} × "
                      f"{b.elem_col}..{b.elem_col + b.elem_cols - 1}, outside the {gr}×{gc} element grid of a core")
        want_rows = ceil_div(b.row_count, c.element_rows)
        want_cols = ceil_div(b.filter_count * lay.cols_per_filter, c.element_cols)
        if (b.elem_rows, b.elem_cols) != (want_rows, want_cols):
            raise bad(f"BLOCK {i} ({lay.name}) declares {b.elem_rows}×{b.elem_cols} elements for {b.row_count} rows "
                      f"× {b.filter_count * lay.cols_per_filter} columns of weights, which take "
                      f"{want_rows}×{want_cols}")
        grid = grids.get((b.cycle, b.core))
        if grid is None:
            grid = grids[(b.cycle, b.core)] = np.full((gr, gc), -1, dtype=np.int64)
        area = grid[b.elem_row:b.elem_row + b.elem_rows, b.elem_col:b.elem_col + b.elem_cols]
        taken = np.flatnonzero(area >= 0)
        if taken.size:
            other = int(area.reshape(-1)[taken[0]])
            r, col = divmod(int(taken[0]), b.elem_cols)
            raise bad(f"BLOCK {i} ({lay.name}) and BLOCK {other} ({p.layers[p.blocks[other].layer].name}) both sit "
                      f"on element ({b.elem_row + r}, {b.elem_col + col}) of core {b.core} in computation cycle "
                      f"{b.cycle}")
        area[...] = i
    for k, ins in enumerate(p.schedule):
        if isinstance(ins, ReadRec):
            for j in ins.blocks:
                held = p.blocks[j]
                if (held.core, held.cycle) != (ins.core, ins.cycle):
                    raise bad(f"READ instruction {k} runs on core {ins.core} in cycle {ins.cycle} but drives BLOCK "
                              f"{j}, programmed on core {held.core} in cycle {held.cycle}")
        else:
            blk = p.blocks[ins.block]
            if (blk.core, blk.cycle) != (ins.core, ins.cycle):
                raise bad(f"ACCUM instruction {k} runs on core {ins.core} in cycle {ins.cycle} but reads out BLOCK "
                          f"{ins.block}, programmed on core {blk.core} in cycle {blk.cycle}")
    for k, d in enumerate(p.digital):
        if d.cycle >= c.computation_cycles:
            raise bad(f"DIGITAL op {k} ({d.name[:80]}) runs in cycle {d.cycle}, the program has "
                      f"{c.computation_cycles}")
    for k, tr in enumerate(p.noc):
        if tr.cycle >= c.computation_cycles:
            raise bad(f"NOC transfer {k} runs in cycle {tr.cycle}, the program has {c.computation_cycles}")
    _check_order(p, bad)


def _check_order(p: Program, bad: Callable[[str], TargetError]) -> None:
    """The LAYERS' and DIGITAL records' ``order``: one sequence, producers before readers."""
    steps: list[tuple[int, str, tuple[int, ...], tuple[int, ...]]] = [
        (lay.order, f"LAYER {i} ({lay.name[:80]})", (lay.input,), (lay.output,)) for i, lay in enumerate(p.layers)]
    steps += [(d.order, f"DIGITAL op {k} ({d.name[:80]})", d.inputs, d.outputs) for k, d in enumerate(p.digital)]
    for po in p.postops:
        order, name, ins, outs = steps[po.layer]
        steps[po.layer] = (order, name, ins + po.extra, outs)
    made: dict[int, tuple[int, str]] = {}
    seen: dict[int, str] = {}
    for order, name, _, outs in steps:
        if order in seen:
            raise bad(f"{name} and {seen[order]} have the same order {order}")
        seen[order] = name
        for t in outs:
            if t in made:
                raise bad(f"{name} and {made[t][1]} both make tensor {p.tensors[t].name[:80]!r}")
            made[t] = (order, name)
    for order, name, ins, _ in steps:
        for t in ins:
            if t in made and made[t][0] >= order:
                raise bad(f"{name} (order {order}) reads tensor {p.tensors[t].name[:80]!r}, which {made[t][1]} "
                          f"makes later (order {made[t][0]})")
