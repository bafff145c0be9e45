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
    over its read groups); a copy is kept only if it lowers that. Details: :func:`.duplicate.duplicate`.

With ``mapper.conversion_rows`` set (a multiple of the element height), every block taller
than that, whichever strategy placed it, becomes a stack of row groups in the same element
rectangle (:func:`split_rows`): each group is a block of its own, read on its own word lines
and converted on its own, its codes added digitally like a row tile's partial sums. The
elements and cells stay the same; the reads and ADC conversions grow with the groups, and
the ADC step of each group follows its own, smaller, column sums.

Every result carries the lower bounds: elements
``ceil(Σ M·N / element cells)`` (concatenable elements, capacity bound), cores
``min(cores, ceil(elements bound / elements per core))`` and computation cycles
``ceil(elements bound / (cores · elements per core))``.

Everything is integer arithmetic on element rectangles; there is no per-cell array.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from hwmap import ConfigError, DoesNotFitError, TargetError

from .blocks import Geom, Placement, ceil_div, row_tiles
from .duplicate import duplicate
from .hardware import Blueprint
from .layers import CrossbarLayer
from .packer import pack

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


# --------------------------------------------------------------------------- checks


def _check_layers(layers: list[CrossbarLayer], g: Geom) -> None:
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


# --------------------------------------------------------------------------- greedy


def _greedy(layers: list[CrossbarLayer], g: Geom) -> list[Placement]:
    """Chapter Section 3.4.4: fill cores left to right with column strips, spill, wrap."""
    out: list[Placement] = []
    cycle = core = x = 0
    for layer in layers:
        f = layer.cols_per_filter
        for grp in range(layer.groups):
            for r0, rc in row_tiles(layer, g):
                h = ceil_div(rc, g.er)
                f0, left = 0, layer.filters
                while left:
                    fit = (g.gc - x) * g.ec // f
                    if fit == 0:  # not one more filter on this core: the next core, or a new cycle
                        core, x = core + 1, 0
                        if core == g.cores:
                            cycle, core = cycle + 1, 0
                        continue
                    k = min(fit, left)
                    w = ceil_div(k * f, g.ec)
                    out.append(Placement(layer.index, grp, r0, rc, f0, k, cycle, core, 0, x, h, w))
                    x += w
                    f0 += k
                    left -= k
    return out


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


def _result(strategy: str, layers: list[CrossbarLayer], g: Geom, placements: list[Placement],
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
            layer.index, layer.node, r, ceil_div(layer.positions, r), tiles, sum(p.elements for p in blocks),
            sum(p.cells(layer.cols_per_filter) for p in blocks), tuple(sorted({(p.cycle, p.core) for p in blocks}))))
    allocated = sum(p.elements for p in placements)
    cells = sum(p.cells(by_index[p.layer].cols_per_filter) for p in placements)
    slots = {(p.cycle, p.core) for p in placements}
    cycles = 1 + max((p.cycle for p in placements), default=-1)
    lb_el = ceil_div(sum(layer.cells for layer in layers), el_cells)
    in_use = len(slots) * per_core * el_cells
    return MapResult(
        strategy=strategy, placements=tuple(placements), layers=tuple(layer_maps), notes=tuple(notes),
        cores=g.cores, grid_rows=g.gr, grid_cols=g.gc, element_rows=g.er, element_cols=g.ec,
        cores_used=len({c for _, c in slots}), computation_cycles=cycles,
        elements_allocated=allocated,
        # a block's extent is ceil(rows)·ceil(cols) in elements, so each of its elements holds a cell
        elements_used=allocated,
        cells_used=cells,
        element_utilization=cells / (allocated * el_cells) if allocated else 0.0,
        crossbar_utilization=cells / in_use if in_use else 0.0,
        elements_lower_bound=lb_el,
        cores_lower_bound=min(g.cores, ceil_div(lb_el, per_core)),
        computation_cycles_lower_bound=ceil_div(lb_el, g.cores * per_core))


# --------------------------------------------------------------------------- public


def split_rows(placements: list[Placement], rows: int, er: int) -> list[Placement]:
    """Every block taller than ``rows`` (a multiple of the element height ``er``) as a stack of
    row groups of ``rows`` rows in the same element rectangle: each its own block, READ on its
    own word lines and converted on its own, its codes added digitally like a row tile's."""
    if rows <= 0:
        return placements
    out: list[Placement] = []
    for p in placements:
        for r in range(0, p.row_count, rows):
            rc = min(rows, p.row_count - r)
            out.append(replace(p, row_start=p.row_start + r, row_count=rc, elem_row=p.elem_row + r // er,
                               elem_rows=ceil_div(rc, er)))
    return out


def map_layers(layers: list[CrossbarLayer], blueprint: Blueprint, strategy: str, conversion_rows: int = 0
               ) -> MapResult:
    """Map ``layers`` (graph order) onto ``blueprint`` with ``strategy`` (see module docstring).

    A layer larger than the whole chip is spread over several computation cycles. Raises
    :class:`FilterTooWideError` when one filter is wider than a crossbar, :class:`hwmap.ConfigError`
    for an unknown strategy, :class:`hwmap.TargetError` for a malformed layer list."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"mapper.strategy = {strategy!r}; allowed: {', '.join(STRATEGIES)}", where="mapper.strategy")
    g = Geom.of(blueprint)
    _check_layers(layers, g)
    notes: list[str] = []
    replicas = {layer.index: 1 for layer in layers}
    if strategy == "greedy":
        placements = _greedy(layers, g)
    else:
        packer = pack(layers, g)
        if strategy == "duplicated":
            replicas = duplicate(layers, packer, blueprint.hops, notes)
        placements = packer.placements
    if not layers:
        notes.append("no crossbar layers to map")
    placements = split_rows(list(placements), conversion_rows, g.er)
    return _result(strategy, layers, g, list(placements), replicas, notes)


def neurosim_style_elements(layers: list[CrossbarLayer], blueprint: Blueprint) -> int:
    """Elements a NeuroSim-style allocation takes: each layer on its own whole crossbars.

    No two layers share a crossbar (DNN+NeuroSim maps each layer onto its own subarrays). A
    grouped layer's groups are laid along the diagonal of its block-diagonal matrix of
    ``groups·M`` rows × ``groups·N·cols_per_filter`` columns, and only the R×C crossbar tiles
    of that matrix that hold a weight are counted (for ``groups = 1`` this is
    ``ceil(M/R)·ceil(N/C)``, the subarray count of DNN+NeuroSim, Peng et al., IEDM 2019).
    Returned in elements: crossbars × elements per crossbar."""
    g = Geom.of(blueprint)
    _check_layers(layers, g)
    crossbars = 0
    for layer in layers:
        m, n = layer.rows, layer.cols
        for i in range(ceil_div(layer.groups * m, g.rows)):
            g_lo = i * g.rows // m
            g_hi = min(layer.groups - 1, ((i + 1) * g.rows - 1) // m)
            crossbars += ((g_hi + 1) * n - 1) // g.cols - (g_lo * n) // g.cols + 1
    return crossbars * g.gr * g.gc
