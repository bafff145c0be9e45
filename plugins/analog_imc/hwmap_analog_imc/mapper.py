"""The mapper: crossbar layers onto the cores' element grids, per computation cycle.

Chapter Section 3.4.4-3.4.5: each layer's filters are unrolled into crossbar columns
(``K·K·C_in/groups`` rows each); the mapper checks how many filters fit on the current core,
spills the rest to the next core, and when every core is used starts again at core 0 in a
new computation cycle (the weights are reprogrammed). A core's crossbar is a grid of small
elements (e.g. 16×4 cells) concatenated through programmable switches, so what a block
occupies is a rectangle of whole elements.

Three strategies (``[mapper] strategy``):

``greedy``
    The chapter's algorithm. Layer by layer (graph order), group by group, row tile by row
    tile; each block is a column strip top-aligned at element row 0, placed to the right of
    what the current core already holds, with as many filters as fit; the rest spill to the
    next core, and after the last core a new computation cycle starts at core 0.
``packed``
    2-D packing. Inside the current cycle, blocks go wherever the cores have room: each
    core keeps a skyline (per element column, how deep it is filled from the top); a block
    goes to the first core that has a flat stretch of columns deep enough for it, on the
    deepest such stretch (best fit, so columns fill to the bottom before fresh columns are
    opened); a block wider than the stretch is split by filters, at multiples of
    ``element_cols / gcd(element_cols, cols_per_filter)`` filters where possible so that no
    element is left part-empty; a block taller than any free stretch is split by rows
    (one more partial sum to accumulate) rather than leaving the cycle's space unused. Only
    when nothing fits does a new cycle start; layers keep their order across cycles.
``duplicated``
    ``packed``, then, if the whole network fits in one cycle, the space left over (and whole
    unused cores) holds extra whole copies of layers, as ISAAC (Shafiee et al., ISCA 2016)
    and NeuroSim replicate early convolutions onto spare arrays so they work in parallel. A
    core performs one crossbar read at a time, so a copy only helps on a core holding no
    other block of its layer: each copy goes to such cores, least loaded first. Which layer
    to copy is chosen by the bottleneck: the busiest core's reads (Σ of positions per copy
    over its read groups); a copy is kept only if it lowers that. Details: ``_duplicate``.

Every result carries the lower bounds (REFERENCES.md, "Tile counts"): elements
``ceil(Σ M·N / element cells)`` (concatenable elements, capacity bound), cores
``min(cores, ceil(elements bound / elements per core))`` and computation cycles
``ceil(elements bound / (cores · elements per core))``.

Everything is integer arithmetic on element rectangles; there is no per-cell array.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Iterator

from hwmap import ConfigError, DoesNotFitError, TargetError

from .hardware import Blueprint
from .layers import CrossbarLayer

__all__ = [
    "STRATEGIES", "Placement", "LayerMap", "MapResult", "FilterTooWideError", "map_layers",
    "neurosim_style_elements",
]

STRATEGIES = ("greedy", "packed", "duplicated")


class FilterTooWideError(DoesNotFitError):
    """One filter needs more crossbar columns than a core has (``cols_per_filter >
    crossbar_cols``): a filter's columns cannot be split over two crossbars, since their
    bit-slice read-outs are recombined in one core. ``rule``, ``node`` and ``message`` are
    what a legalization :class:`hwmap.Diagnostic` needs."""

    rule = "filter_wider_than_crossbar"

    def __init__(self, layer: CrossbarLayer, crossbar_cols: int) -> None:
        self.node = layer.node
        self.message = (f"one filter takes {layer.cols_per_filter} crossbar columns (bit slices × encoding), "
                        f"a core's crossbar has {crossbar_cols}; use more bits per cell or wider crossbars")
        super().__init__(self.message, [f"{self.rule} at node {layer.node!r}: {self.message}"],
                         where=f"layer {layer.node!r}")


@dataclass(frozen=True)
class Placement:
    """One block on one core in one computation cycle.

    Rows ``row_start .. row_start+row_count`` (a row tile) and filters ``filter_start ..
    filter_start+filter_count`` of group ``group`` of layer ``layer`` (a
    :attr:`CrossbarLayer.index`), on core ``core`` in cycle ``cycle``, occupying the element
    rectangle with origin (``elem_row``, ``elem_col``) and extent ``elem_rows × elem_cols``
    = ``ceil(row_count/element_rows) × ceil(filter_count·cols_per_filter/element_cols)``.
    ``replica`` numbers the copies of a duplicated layer (0 for the original)."""

    layer: int
    group: int
    row_start: int
    row_count: int
    filter_start: int
    filter_count: int
    cycle: int
    core: int
    elem_row: int
    elem_col: int
    elem_rows: int
    elem_cols: int
    replica: int = 0

    @property
    def elements(self) -> int:
        return self.elem_rows * self.elem_cols

    def cells(self, cols_per_filter: int) -> int:
        """Weight cells the block holds: ``row_count · filter_count · cols_per_filter``."""
        return self.row_count * self.filter_count * cols_per_filter


_PLACEMENT_FIELDS = tuple(f.name for f in fields(Placement))


@dataclass(frozen=True)
class LayerMap:
    """Where one layer went: its copies, the partial sums its outputs need, its slots.

    ``row_tiles`` is the largest number of blocks any one output (filter) of the layer is
    split over by rows, i.e. how many partial sums are accumulated digitally for it;
    ``slots`` are the (cycle, core) pairs holding any block of the layer (all copies)."""

    layer: int
    node: str
    replicas: int
    positions_per_replica: int
    row_tiles: int
    elements: int
    cells: int
    slots: tuple[tuple[int, int], ...]


@dataclass(frozen=True)
class MapResult:
    """A mapping and its statistics against the lower bounds (see the module docstring).

    ``elements_used`` counts elements holding at least one weight cell; since a block's
    extent is the ceiling of its rows and columns in elements, it equals
    ``elements_allocated`` for every strategy here (the distinction is kept for the KPI
    record). ``crossbar_utilization`` divides the used cells by the cells of the crossbars
    in use: Σ over cycles of (cores used in that cycle × crossbar cells)."""

    strategy: str
    placements: tuple[Placement, ...]
    layers: tuple[LayerMap, ...]
    notes: tuple[str, ...]
    cores: int
    grid_rows: int
    grid_cols: int
    element_rows: int
    element_cols: int
    cores_used: int
    computation_cycles: int
    elements_allocated: int
    elements_used: int
    cells_used: int
    element_utilization: float
    crossbar_utilization: float
    elements_lower_bound: int
    cores_lower_bound: int
    computation_cycles_lower_bound: int

    @property
    def replicas(self) -> dict[int, int]:
        """Copies of each layer (layer index → ≥ 1)."""
        return {lm.layer: lm.replicas for lm in self.layers}

    @property
    def slots(self) -> tuple[tuple[int, int], ...]:
        """Every (cycle, core) pair holding a block, sorted."""
        return tuple(sorted({(p.cycle, p.core) for p in self.placements}))

    def resources(self) -> dict[str, int | float]:
        """The mapping's entries of the KPI record's ``resources`` (issue 3, part 6)."""
        return {k: getattr(self, k) for k in (
            "cores_used", "cores_lower_bound", "elements_used", "elements_allocated", "elements_lower_bound",
            "computation_cycles", "computation_cycles_lower_bound", "element_utilization",
            "crossbar_utilization")}

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, deterministic order; placements as rows under ``placement_fields``."""
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name == "placements":
                out["placement_fields"] = list(_PLACEMENT_FIELDS)
                out["placements"] = [[getattr(p, n) for n in _PLACEMENT_FIELDS] for p in v]
            elif f.name == "layers":
                out["layers"] = [{**asdict(lm), "slots": [list(s) for s in lm.slots]} for lm in v]
            elif f.name == "notes":
                out["notes"] = list(v)
            else:
                out[f.name] = v
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "MapResult":
        """Inverse of :meth:`to_json`; a malformed record raises :class:`hwmap.TargetError`."""
        try:
            names = list(data["placement_fields"])
            placements = tuple(Placement(**dict(zip(names, (int(x) for x in row), strict=True)))
                               for row in data["placements"])
            layers = tuple(LayerMap(**{**lm, "slots": tuple((int(c), int(k)) for c, k in lm["slots"])})
                           for lm in data["layers"])
            rest = {f.name: data[f.name] for f in fields(cls) if f.name not in ("placements", "layers", "notes")}
            return cls(placements=placements, layers=layers, notes=tuple(data["notes"]), **rest)
        except (KeyError, TypeError, ValueError) as exc:
            raise TargetError(f"malformed mapping record: {exc!r}", where="mapping.json") from exc


# --------------------------------------------------------------------------- geometry


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


@dataclass(frozen=True)
class _Geom:
    cores: int
    gr: int  # element rows per core
    gc: int  # element columns per core
    er: int  # cell rows per element
    ec: int  # cell columns per element

    @property
    def rows(self) -> int:
        return self.gr * self.er

    @property
    def cols(self) -> int:
        return self.gc * self.ec

    @classmethod
    def of(cls, bp: Blueprint) -> "_Geom":
        c0 = bp.cores[0]
        return cls(len(bp.cores), c0.grid_rows, c0.grid_cols, bp.element_rows, bp.element_cols)


def _check_layers(layers: list[CrossbarLayer], g: _Geom) -> None:
    seen: set[int] = set()
    for layer in layers:
        if layer.index in seen:
            raise TargetError(f"layer index {layer.index} appears twice in the layer list", where=layer.node)
        seen.add(layer.index)
        for name in ("groups", "rows", "filters", "cols_per_filter", "positions"):
            if getattr(layer, name) < 1:
                raise TargetError(f"{name} = {getattr(layer, name)}, must be ≥ 1", where=f"layer {layer.node!r}")
        if layer.cols_per_filter > g.cols:
            raise FilterTooWideError(layer, g.cols)


def _row_tiles(layer: CrossbarLayer, g: _Geom) -> list[tuple[int, int]]:
    """(row_start, row_count) tiles of at most one crossbar's rows; full tiles first, so the
    tallest blocks come first and only the last tile has a ragged element row."""
    return [(r, min(g.rows, layer.rows - r)) for r in range(0, layer.rows, g.rows)]


# --------------------------------------------------------------------------- greedy


def _greedy(layers: list[CrossbarLayer], g: _Geom) -> list[Placement]:
    """Chapter Section 3.4.4: fill cores left to right with column strips, spill, wrap."""
    out: list[Placement] = []
    cycle = core = x = 0
    for layer in layers:
        f = layer.cols_per_filter
        for grp in range(layer.groups):
            for r0, rc in _row_tiles(layer, g):
                h = _ceil(rc, g.er)
                f0, left = 0, layer.filters
                while left:
                    fit = (g.gc - x) * g.ec // f
                    if fit == 0:  # not one more filter on this core: the next core, or a new cycle
                        core, x = core + 1, 0
                        if core == g.cores:
                            cycle, core = cycle + 1, 0
                        continue
                    k = min(fit, left)
                    w = _ceil(k * f, g.ec)
                    out.append(Placement(layer.index, grp, r0, rc, f0, k, cycle, core, 0, x, h, w))
                    x += w
                    f0 += k
                    left -= k
    return out


# --------------------------------------------------------------------------- packed


class _NoRoom(Exception):
    """Raised inside a trial placement (duplication) when the cycle is full."""


_Snapshot = tuple[int, list[list[tuple[int, int, int]]], list[int], list[bool], int]


class _Packer:
    """Per-core skylines of the current computation cycle.

    A core's skyline is a list of segments ``(x, width, top)`` covering its element columns
    left to right, neighbours with equal ``top`` merged: columns ``x .. x+width`` are filled
    from element row 0 down to ``top``. Blocks are placed on the skyline (never below a
    hole), which is what keeps the search to a few segments per core."""

    def __init__(self, g: _Geom) -> None:
        self.g = g
        self.cycle = 0
        # cores a block may go to, in order of preference: all, by index (greedy/packed); a
        # duplicated copy restricts and reorders them (see _duplicate)
        self.order: tuple[int, ...] = tuple(range(g.cores))
        self.sky: list[list[tuple[int, int, int]]] = []
        self.placements: list[Placement] = []
        self._fresh()

    def _fresh(self) -> None:
        self.sky = [[(0, self.g.gc, 0)] for _ in range(self.g.cores)]
        self.low = [0] * self.g.cores  # lowest top per core: a quick "can anything this tall fit"
        self.full = [False] * self.g.cores

    def snapshot(self) -> _Snapshot:
        return self.cycle, [list(s) for s in self.sky], list(self.low), list(self.full), len(self.placements)

    def restore(self, snap: _Snapshot) -> None:
        self.cycle, self.sky, self.low, self.full, n = snap
        del self.placements[n:]

    # -- search
    def _spans(self, core: int, wf: int) -> Iterator[tuple[int, int, int, int]]:
        """(x, width, y, hole) candidates at least ``wf`` columns wide: single segments
        (hole 0), or, for a segment narrower than one filter, the shortest run of segments
        starting there, placed at their deepest top (hole = element slots lost above it)."""
        segs = self.sky[core]
        n = len(segs)
        for i, (sx, sw, st) in enumerate(segs):
            if sw >= wf:
                yield sx, sw, st, 0
                continue
            width, y, j = sw, st, i
            while width < wf and j + 1 < n:
                j += 1
                width += segs[j][1]
                y = max(y, segs[j][2])
            if width >= wf:
                yield sx, width, y, sum((y - segs[t][2]) * segs[t][1] for t in range(i, j + 1))

    def _find(self, h: int, wf: int) -> tuple[int, int, int, int] | None:
        """Where a block ``h`` elements tall goes: the first core (in ``order``) with room, on its
        deepest flat stretch that still leaves ``h`` rows (best fit); stretches with holes
        only if no core has a flat one. Returns (core, x, width, y) or None."""
        gr = self.g.gr
        for allow_hole in (False, True):
            for c in self.order:
                if self.full[c] or self.low[c] + h > gr:
                    continue
                best: tuple[int, int, int, int] | None = None
                for sx, sw, y, hole in self._spans(c, wf):
                    if (hole > 0) != allow_hole or y + h > gr:
                        continue
                    key = (-hole, y) if allow_hole else (0, y)
                    if best is None or key > best[0:2]:
                        best = (key[0], key[1], sx, sw)
                if best is not None:
                    return c, best[2], best[3], best[1]
        return None

    def _find_partial(self, wf: int) -> tuple[int, int, int, int] | None:
        """The stretch with the most free rows in the cycle (for a block no stretch can take
        whole): (core, x, width, y) or None when no element is left free."""
        best: tuple[int, int, int, int, int] | None = None  # (y, hole, core, x, width)
        for c in self.order:
            if self.full[c]:
                continue
            for sx, sw, y, hole in self._spans(c, wf):
                if y < self.g.gr and (best is None or (y, hole) < best[0:2]):
                    best = (y, hole, c, sx, sw)
        return None if best is None else (best[2], best[3], best[4], best[0])

    # -- update
    def _occupy(self, core: int, x: int, w: int, top: int) -> None:
        out: list[tuple[int, int, int]] = []
        end = x + w
        placed = False
        for sx, sw, st in self.sky[core]:
            se = sx + sw
            if se <= x or sx >= end:
                if sx >= end and not placed:
                    out.append((x, w, top))
                    placed = True
                out.append((sx, sw, st))
                continue
            if sx < x:
                out.append((sx, x - sx, st))
            if not placed:
                out.append((x, w, top))
                placed = True
            if se > end:
                out.append((end, se - end, st))
        if not placed:
            out.append((x, w, top))
        merged: list[tuple[int, int, int]] = []
        for seg in out:
            if merged and merged[-1][2] == seg[2]:
                px, pw, pt = merged[-1]
                merged[-1] = (px, pw + seg[1], pt)
            else:
                merged.append(seg)
        self.sky[core] = merged
        self.low[core] = min(s[2] for s in merged)
        self.full[core] = self.low[core] >= self.g.gr

    def _new_cycle(self) -> None:
        self.cycle += 1
        self._fresh()

    # -- one block
    def place(self, layer: CrossbarLayer, grp: int, r0: int, rc: int, replica: int, *,
              new_cycles: bool = True) -> None:
        """Place rows ``r0 .. r0+rc`` × all filters of group ``grp``, splitting as needed.

        With ``new_cycles`` false (a trial copy), a full cycle raises :class:`_NoRoom`."""
        g = self.g
        f = layer.cols_per_filter
        wf = _ceil(f, g.ec)  # element columns one filter needs
        q = g.ec // math.gcd(g.ec, f)  # any multiple of q filters fills whole elements exactly
        work = [(r0, rc, 0, layer.filters)]
        while work:
            r0, rc, f0, fc = work.pop()
            h = _ceil(rc, g.er)
            spot = self._find(h, wf)
            rows = rc
            if spot is None:
                spot = self._find_partial(wf)
                if spot is None:
                    if not new_cycles:
                        raise _NoRoom
                    self._new_cycle()
                    work.append((r0, rc, f0, fc))
                    continue
                # split by rows: the top part fills the deepest free stretch, the rest waits
                rows = (g.gr - spot[3]) * g.er
            core, x, width, y = spot
            kmax = width * g.ec // f
            k = fc if kmax >= fc else (kmax // q * q or kmax)
            w = _ceil(k * f, g.ec)
            hh = _ceil(rows, g.er)
            self.placements.append(Placement(layer.index, grp, r0, rows, f0, k, self.cycle, core, y, x, hh, w,
                                             replica))
            self._occupy(core, x, w, y + hh)
            if k < fc:
                work.append((r0, rc, f0 + k, fc - k))
            if rows < rc:  # the rest of these filters' rows next, while the neighbourhood is warm
                work.append((r0 + rows, rc - rows, f0, k))

    def place_layer(self, layer: CrossbarLayer, replica: int = 0, *, new_cycles: bool = True) -> None:
        """All groups and row tiles of ``layer``, tallest tiles first."""
        tiles = _row_tiles(layer, self.g)
        order = sorted(range(len(tiles)), key=lambda t: -tiles[t][1])
        for grp in range(layer.groups):
            for t in order:
                self.place(layer, grp, *tiles[t], replica, new_cycles=new_cycles)


def _packed(layers: list[CrossbarLayer], g: _Geom) -> _Packer:
    packer = _Packer(g)
    for layer in layers:
        packer.place_layer(layer)
    return packer


def _copy_positions(positions: int, replicas: int, replica: int) -> int:
    """Positions copy ``replica`` of ``replicas`` computes: copy ``k`` takes positions
    ``k·⌈P/R⌉ ..`` (the emitter's schedule; the estimate's ``replica_positions``)."""
    per = _ceil(positions, replicas)
    return max(0, min(positions, (replica + 1) * per) - replica * per)


_ReadGroup = tuple[int, int, int, int, int, int]  # core, copy, group, row_start, row_count, elem_row


def _read_groups(blocks: list[Placement]) -> set[_ReadGroup]:
    """Blocks read together (one crossbar read per position): same core, copy, group, row tile
    and element row share word lines and input vector (as the emitter's READ records and the
    estimate group them); one computation cycle is assumed (duplication needs one)."""
    return {(p.core, p.replica, p.group, p.row_start, p.row_count, p.elem_row) for p in blocks}


def _reads(layer: CrossbarLayer, copies: int, groups: set[_ReadGroup], cores: int) -> list[int]:
    """Per core, the crossbar reads per input bit-plane ``layer`` costs it: each read group
    performs one read per position of its copy."""
    out = [0] * cores
    for core, replica, *_ in groups:
        out[core] += _copy_positions(layer.positions, copies, replica)
    return out


def _busiest(load: list[int]) -> tuple[int, int]:
    """(most reads on one core, how many cores have that many): smaller is a better balance."""
    top = max(load)
    return top, load.count(top)


def _place_copy(packer: _Packer, layer: CrossbarLayer, replica: int, order: tuple[int, ...], *,
                keep: bool) -> list[Placement] | None:
    """Copy ``replica`` of ``layer`` on the cores ``order`` (in that preference), in the
    current cycle: its blocks, or None when it does not fit whole. Rolled back unless ``keep``."""
    snap = packer.snapshot()
    packer.order = order
    try:
        packer.place_layer(layer, replica, new_cycles=False)
        new: list[Placement] | None = packer.placements[snap[4]:]
    except _NoRoom:
        new = None
    finally:
        packer.order = tuple(range(packer.g.cores))
    if new is None or not keep:
        packer.restore(snap)
    return new


def _duplicate(layers: list[CrossbarLayer], packer: _Packer, hops: Callable[[int, int], int],
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
            if _ceil(layer.positions, r + 1) >= _ceil(layer.positions, r):
                why.setdefault("another copy would not cut the MVMs per copy", []).append(layer.node)
                continue
            home = min(p.core for p in blocks[i] if p.replica == 0)
            held = {p.core for p in blocks[i]}
            order = tuple(sorted((c for c in range(cores) if c not in held),
                                 key=lambda c: (load[c], hops(home, c), c)))
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


# --------------------------------------------------------------------------- statistics


def _row_tiles_of(blocks: list[Placement]) -> int:
    """Most blocks covering one filter of one group (sweep over filter boundaries)."""
    events: dict[int, int] = {}
    for p in blocks:
        events[p.filter_start] = events.get(p.filter_start, 0) + 1
        end = p.filter_start + p.filter_count
        events[end] = events.get(end, 0) - 1
    depth = most = 0
    for k in sorted(events):
        depth += events[k]
        most = max(most, depth)
    return most


def _result(strategy: str, layers: list[CrossbarLayer], g: _Geom, placements: list[Placement],
            replicas: dict[int, int], notes: list[str]) -> MapResult:
    placements.sort(key=lambda p: (p.cycle, p.core, p.layer, p.replica, p.group, p.row_start, p.filter_start))
    by_index = {layer.index: layer for layer in layers}
    el_cells = g.er * g.ec
    per_core = g.gr * g.gc
    per_layer: dict[int, list[Placement]] = {layer.index: [] for layer in layers}
    for p in placements:
        per_layer[p.layer].append(p)
    layer_maps = []
    for layer in layers:
        blocks = per_layer[layer.index]
        by_group: dict[int, list[Placement]] = {}
        for p in blocks:
            if p.replica == 0:
                by_group.setdefault(p.group, []).append(p)
        tiles = max((_row_tiles_of(b) for b in by_group.values()), default=0)
        r = replicas.get(layer.index, 1)
        layer_maps.append(LayerMap(
            layer.index, layer.node, r, _ceil(layer.positions, r), tiles, sum(p.elements for p in blocks),
            sum(p.cells(layer.cols_per_filter) for p in blocks), tuple(sorted({(p.cycle, p.core) for p in blocks}))))
    allocated = sum(p.elements for p in placements)
    cells = sum(p.cells(by_index[p.layer].cols_per_filter) for p in placements)
    slots = {(p.cycle, p.core) for p in placements}
    cycles = 1 + max((p.cycle for p in placements), default=-1)
    lb_el = _ceil(sum(layer.cells for layer in layers), el_cells)
    in_use = len(slots) * per_core * el_cells
    return MapResult(
        strategy=strategy, placements=tuple(placements), layers=tuple(layer_maps), notes=tuple(notes),
        cores=g.cores, grid_rows=g.gr, grid_cols=g.gc, element_rows=g.er, element_cols=g.ec,
        cores_used=len({c for _, c in slots}), computation_cycles=cycles,
        elements_allocated=allocated,
        # a block's extent is ceil(rows)·ceil(cols) in elements, so each of its elements holds a cell
        elements_used=sum(_ceil(p.row_count, g.er) * _ceil(p.filter_count * by_index[p.layer].cols_per_filter, g.ec)
                          for p in placements),
        cells_used=cells,
        element_utilization=cells / (allocated * el_cells) if allocated else 0.0,
        crossbar_utilization=cells / in_use if in_use else 0.0,
        elements_lower_bound=lb_el,
        cores_lower_bound=min(g.cores, _ceil(lb_el, per_core)),
        computation_cycles_lower_bound=_ceil(lb_el, g.cores * per_core))


# --------------------------------------------------------------------------- public


def map_layers(layers: list[CrossbarLayer], blueprint: Blueprint, strategy: str) -> MapResult:
    """Map ``layers`` (graph order) onto ``blueprint`` with ``strategy`` (see module docstring).

    A layer larger than the whole chip is spread over several computation cycles. Raises
    :class:`FilterTooWideError` when one filter is wider than a crossbar, :class:`hwmap.ConfigError`
    for an unknown strategy, :class:`hwmap.TargetError` for a malformed layer list."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"mapper.strategy = {strategy!r}; allowed: {', '.join(STRATEGIES)}", where="mapper.strategy")
    g = _Geom.of(blueprint)
    _check_layers(layers, g)
    notes: list[str] = []
    replicas = {layer.index: 1 for layer in layers}
    if strategy == "greedy":
        placements = _greedy(layers, g)
    else:
        packer = _packed(layers, g)
        if strategy == "duplicated":
            replicas = _duplicate(layers, packer, blueprint.hops, notes)
        placements = packer.placements
    if not layers:
        notes.append("no crossbar layers to map")
    return _result(strategy, layers, g, list(placements), replicas, notes)


def neurosim_style_elements(layers: list[CrossbarLayer], blueprint: Blueprint) -> int:
    """Elements a NeuroSim-style allocation takes: each layer on its own whole crossbars.

    No two layers share a crossbar (DNN+NeuroSim maps each layer onto its own subarrays). A
    grouped layer's groups are laid along the diagonal of its block-diagonal matrix of
    ``groups·M`` rows × ``groups·N·cols_per_filter`` columns, and only the R×C crossbar tiles
    of that matrix that hold a weight are counted (for ``groups = 1`` this is
    ``ceil(M/R)·ceil(N/C)``, REFERENCES.md "Tile counts"). Returned in elements: crossbars ×
    elements per crossbar."""
    g = _Geom.of(blueprint)
    _check_layers(layers, g)
    crossbars = 0
    for layer in layers:
        m, n = layer.rows, layer.cols
        for i in range(_ceil(layer.groups * m, g.rows)):
            g_lo = i * g.rows // m
            g_hi = min(layer.groups - 1, ((i + 1) * g.rows - 1) // m)
            crossbars += ((g_hi + 1) * n - 1) // g.cols - (g_lo * n) // g.cols + 1
    return crossbars * g.gr * g.gc
