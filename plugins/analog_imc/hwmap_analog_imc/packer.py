"""The skyline packer behind the ``packed`` and ``duplicated`` strategies (see :mod:`.mapper`).

Inside the current computation cycle each core keeps a skyline (per element column, how
deep it is filled from the top); a block goes to the first core with a flat stretch deep
enough for it, best fit; blocks are split by filters (whole elements where possible) or,
when no stretch can take them whole, by rows; only when nothing fits does a new cycle start.
"""

from __future__ import annotations

import math
from typing import Iterator

from .blocks import Geom, Placement, ceil_div, row_tiles
from .layers import CrossbarLayer

__all__ = ["NoRoom", "Packer", "pack"]


class NoRoom(Exception):
    """Raised inside a trial placement (duplication) when the cycle is full."""


_Snapshot = tuple[int, list[list[tuple[int, int, int]]], list[int], list[bool], int]


class Packer:
    """Per-core skylines of the current computation cycle.

    A core's skyline is a list of segments ``(x, width, top)`` covering its element columns
    left to right, neighbours with equal ``top`` merged: columns ``x .. x+width`` are filled
    from element row 0 down to ``top``. Blocks are placed on the skyline (never below a
    hole), which is what keeps the search to a few segments per core."""

    def __init__(self, g: Geom) -> None:
        self.g = g
        self.cycle = 0
        # cores a block may go to, in order of preference: all, by index (greedy/packed); a
        # duplicated copy restricts and reorders them (see :mod:`.duplicate`)
        self.order: tuple[int, ...] = tuple(range(g.cores))
        self.sky: list[list[tuple[int, int, int]]] = []
        self.placements: list[Placement] = []
        self._fresh()

    def _fresh(self) -> None:
        self.sky = [[(0, self.g.gc, 0)] for _ in range(self.g.cores)]
        self.low = [0] * self.g.cores  # lowest top per core: a quick "can anything this tall fit"
        self.full = [False] * self.g.cores

    def snapshot(self) -> _Snapshot:
        # _occupy replaces a core's segment list, never edits it, so the snapshot may alias the lists
        return self.cycle, list(self.sky), list(self.low), list(self.full), len(self.placements)

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
                    if best is None or (-hole, y) > best[0:2]:
                        best = (-hole, y, sx, sw)
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

        With ``new_cycles`` false (a trial copy), a full cycle raises :class:`NoRoom`."""
        g = self.g
        f = layer.cols_per_filter
        wf = ceil_div(f, g.ec)  # element columns one filter needs
        q = g.ec // math.gcd(g.ec, f)  # any multiple of q filters fills whole elements exactly
        work = [(r0, rc, 0, layer.filters)]
        while work:
            r0, rc, f0, fc = work.pop()
            h = ceil_div(rc, g.er)
            spot = self._find(h, wf)
            rows = rc
            if spot is None:
                spot = self._find_partial(wf)
                if spot is None:
                    if not new_cycles:
                        raise NoRoom
                    self._new_cycle()
                    work.append((r0, rc, f0, fc))
                    continue
                # split by rows: the top part fills the deepest free stretch, the rest waits
                rows = (g.gr - spot[3]) * g.er
            core, x, width, y = spot
            kmax = width * g.ec // f
            k = fc if kmax >= fc else (kmax // q * q or kmax)
            w = ceil_div(k * f, g.ec)
            hh = ceil_div(rows, g.er)
            self.placements.append(Placement(layer.index, grp, r0, rows, f0, k, self.cycle, core, y, x, hh, w,
                                             replica))
            self._occupy(core, x, w, y + hh)
            if k < fc:
                work.append((r0, rc, f0 + k, fc - k))
            if rows < rc:  # the rest of these filters' rows next, while the neighbourhood is warm
                work.append((r0 + rows, rc - rows, f0, k))

    def place_layer(self, layer: CrossbarLayer, replica: int = 0, *, new_cycles: bool = True) -> None:
        """All groups and row tiles of ``layer``, tallest tiles first."""
        tiles = row_tiles(layer, self.g)
        order = sorted(range(len(tiles)), key=lambda t: -tiles[t][1])
        for grp in range(layer.groups):
            for t in order:
                self.place(layer, grp, *tiles[t], replica, new_cycles=new_cycles)


def pack(layers: list[CrossbarLayer], g: Geom) -> Packer:
    """The ``packed`` strategy: ``layers`` in order, each whole before the next."""
    packer = Packer(g)
    for layer in layers:
        packer.place_layer(layer)
    return packer

