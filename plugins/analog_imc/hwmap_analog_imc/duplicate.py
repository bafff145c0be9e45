"""The ``duplicated`` strategy's search: extra whole copies of layers in the one cycle's free
space, each chosen to relieve the busiest core (see :func:`duplicate`)."""

from __future__ import annotations

from typing import Any, Callable

from .blocks import Placement, ceil_div, copy_positions
from .layers import CrossbarLayer
from .packer import NoRoom, Packer

__all__ = ["duplicate"]


_ReadGroup = tuple[int, int, int, int, int, int]  # core, copy, group, row_start, row_count, elem_row


def _read_groups(blocks: list[Placement]) -> set[_ReadGroup]:
    """Blocks read together (one crossbar read per position): same core, copy, group, row tile
    and element row share word lines and input vector (as the emitter's READ records and the
    estimate group them); one computation cycle is assumed (duplication needs one)."""
    return {(p.core, p.replica, p.group, p.row_start, p.row_count, p.elem_row) for p in blocks}


def _reads(layer: CrossbarLayer, copies: int, groups: set[_ReadGroup], cores: int) -> list[int]:
    """Per core, the crossbar reads per input bit-plane ``layer`` costs it: each read group
    performs one read per position of its copy."""
    per_copy = [copy_positions(layer.positions, copies, k)[1] for k in range(copies)]
    out = [0] * cores
    for core, replica, *_ in groups:
        out[core] += per_copy[replica]
    return out


def _busiest(load: list[int]) -> tuple[int, int]:
    """(most reads on one core, how many cores have that many): smaller is a better balance."""
    top = max(load)
    return top, load.count(top)


def _place_copy(packer: Packer, layer: CrossbarLayer, replica: int, order: tuple[int, ...], *,
                keep: bool) -> list[Placement] | None:
    """Copy ``replica`` of ``layer`` on the cores ``order`` (in that preference), in the
    current cycle: its blocks, or None when it does not fit whole. Rolled back unless ``keep``."""
    snap = packer.snapshot()
    packer.order = order
    try:
        packer.place_layer(layer, replica, new_cycles=False)
        new: list[Placement] | None = packer.placements[snap[4]:]
    except NoRoom:
        new = None
    finally:
        packer.order = tuple(range(packer.g.cores))
    if new is None or not keep:
        packer.restore(snap)
    return new


def duplicate(layers: list[CrossbarLayer], packer: Packer, hops: Callable[[int, int], int],
               notes: list[str]) -> dict[int, int]:
    """Extra whole copies of layers in the free space of the one computation cycle, each one
    relieving the busiest core (ISAAC, Shafiee et al. ISCA 2016, and NeuroSim replicate early
    layers onto spare arrays so they work in parallel).

    The work model is the estimate's: a core performs one crossbar read at a time, blocks of a
    layer on different cores read in parallel, and copy ``k`` of ``R`` computes positions
    ``k·⌈P/R⌉ ..``. A core's load is its reads per input bit-plane: Σ over its read groups
    (blocks sharing word lines) of the positions of their copy. Each round takes the busiest
    core (the throughput bottleneck) and tries one more copy of each layer it holds; a copy
    goes only on cores holding no block of that layer (a copy beside another block of its
    layer would queue behind it on that core's one read port), least loaded first (empty
    cores are load 0), nearer the layer's home core on ties. A copy is kept only if it lowers
    the busiest load (or the number of cores at it); of several, the one leaving the lowest
    loads, then the fewest elements. Duplication stops when no copy of the busiest core's
    layers fits or helps; a note says which and why."""
    replicas = {layer.index: 1 for layer in layers}
    if not layers:
        return replicas
    if packer.cycle > 0:
        notes.append(f"no duplication: the network needs {packer.cycle + 1} computation cycles, so copies "
                     "would have to be reprogrammed every cycle")
        return replicas
    cores = packer.g.cores
    blocks: dict[int, list[Placement]] = {layer.index: [] for layer in layers}
    for p in packer.placements:
        blocks[p.layer].append(p)
    groups = {i: _read_groups(b) for i, b in blocks.items()}
    reads = {layer.index: _reads(layer, 1, groups[layer.index], cores) for layer in layers}
    held = {i: {p.core for p in b} for i, b in blocks.items()}
    near: dict[int, list[int]] = {}  # layer -> hops from its home core (its original's lowest core)
    load = [sum(r[c] for r in reads.values()) for c in range(cores)]
    start = max(load)
    while True:
        b = min(range(cores), key=lambda c: (-load[c], c))  # the busiest core, lowest index on ties
        on_b = sorted((layer for layer in layers if reads[layer.index][b]),
                      key=lambda layer: (-reads[layer.index][b], layer.index))
        why: dict[str, list[str]] = {}
        best: tuple[Any, ...] | None = None
        for layer in on_b:
            i, r = layer.index, replicas[layer.index]
            if layer.positions == 1:
                why.setdefault("one MVM per inference, a copy would not help", []).append(layer.node)
                continue
            if ceil_div(layer.positions, r + 1) >= ceil_div(layer.positions, r):
                why.setdefault("another copy would not cut the MVMs per copy", []).append(layer.node)
                continue
            if i not in near:
                home = min(p.core for p in blocks[i] if p.replica == 0)
                near[i] = [hops(home, c) for c in range(cores)]
            dist = near[i]
            order = tuple(sorted((c for c in range(cores) if c not in held[i]),
                                 key=lambda c: (load[c], dist[c], c)))
            new = _place_copy(packer, layer, r, order, keep=False)
            if new is None:
                why.setdefault("no whole copy fits on the cores not holding the layer", []).append(layer.node)
                continue
            g_new = groups[i] | _read_groups(new)
            r_new = _reads(layer, r + 1, g_new, cores)
            trial = [load[c] - reads[i][c] + r_new[c] for c in range(cores)]
            if _busiest(trial) >= _busiest(load):
                why.setdefault("a copy would not lower the busiest core's reads", []).append(layer.node)
                continue
            key = (_busiest(trial), sorted(trial, reverse=True), sum(p.elements for p in new), i)
            if best is None or key < best[0]:
                best = (key, layer, order)
        if best is None:
            break
        _, layer, order = best
        i = layer.index
        new = _place_copy(packer, layer, replicas[i], order, keep=True) or []  # fitted in its trial: fits again
        blocks[i].extend(new)
        held[i].update(p.core for p in new)
        groups[i] |= _read_groups(new)
        replicas[i] += 1
        old = reads[i]
        reads[i] = _reads(layer, replicas[i], groups[i], cores)
        load = [load[c] - old[c] + reads[i][c] for c in range(cores)]
    reason = "; ".join(f"{text}: {', '.join(nodes)}" for text, nodes in why.items())
    copied = {layer.node: replicas[layer.index] for layer in layers if replicas[layer.index] > 1}
    if not copied:
        notes.append(f"no duplication: the busiest core {b} ({load[b]} crossbar reads per input bit-plane) "
                     f"cannot be relieved ({reason})")
    else:
        notes.append(f"duplicated {', '.join(f'{k} ×{v}' for k, v in copied.items())}: the busiest core's crossbar "
                     f"reads per input bit-plane {start} → {load[b]}; stopped at core {b} ({reason})")
    return replicas

