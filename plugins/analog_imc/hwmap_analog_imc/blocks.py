"""Blocks and chip geometry: what the mapper's strategies have in common.

A :class:`Placement` is one block (a row tile × a run of filters of one group of one
layer) on one core in one computation cycle, as an element rectangle; :class:`Geom` is the
chip as the strategies see it (cores × an element grid of ``element_rows × element_cols``
cells). Used by :mod:`.mapper` (greedy, statistics), :mod:`.packer` and :mod:`.duplicate`.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import Blueprint
from .layers import CrossbarLayer

__all__ = ["Placement", "Geom", "ceil_div", "copy_positions", "row_tiles"]


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


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` in integers."""
    return -(-a // b)


@dataclass(frozen=True)
class Geom:
    """The chip as the strategies see it: ``cores`` cores of ``gr × gc`` elements of ``er × ec`` cells."""

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
    def of(cls, bp: Blueprint) -> "Geom":
        c0 = bp.cores[0]
        return cls(len(bp.cores), c0.grid_rows, c0.grid_cols, bp.element_rows, bp.element_cols)


def row_tiles(layer: CrossbarLayer, g: Geom) -> list[tuple[int, int]]:
    """(row_start, row_count) tiles of at most one crossbar's rows; full tiles first, so the
    tallest blocks come first and only the last tile has a ragged element row."""
    return [(r, min(g.rows, layer.rows - r)) for r in range(0, layer.rows, g.rows)]


def copy_positions(positions: int, replicas: int, replica: int) -> tuple[int, int]:
    """(first position, count) copy ``replica`` of ``replicas`` computes: copy ``k`` takes
    positions ``k·⌈P/R⌉ ..`` (the last copies possibly fewer or none)."""
    per = -(-positions // replicas)
    start = replica * per
    return start, max(0, min(positions, start + per) - start)
