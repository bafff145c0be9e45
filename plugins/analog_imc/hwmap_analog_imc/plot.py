"""The mapping picture, in the style of the chapter's Fig. 3.13.

Two parts, one PNG:

* **Crossbars** of the first computation cycles, one panel per core laid out as the cores sit
  on the mesh (``mesh_cols`` panels across, a band of ``mesh_rows`` per cycle; a core that
  holds nothing in that cycle is an empty, titled frame). A panel draws the core's crossbar in
  cell coordinates (rows = word lines down, columns = bit lines across, ticks at element
  boundaries), its element grid as thin lines (each element ``element_rows × element_cols``
  cells, the black rectangles of Fig. 3.13), each block's allocated elements lightly filled in
  its layer's colour and the cells its weights occupy filled solid. Copies made by the
  ``duplicated`` mapper are hatched and labelled ``name #k`` (copy ``k`` of the layer).
  At most :data:`MAX_PANELS` panels: as many whole cycles as fit while the bands stay at most
  about twice as tall as wide (at least the first cycle).
* **Every computation cycle** at once, when there are several cycles or cores: a cycles ×
  cores table (rows labelled by cycle, columns by core) whose shade is the share of the core's
  cells in use and whose text names the layer holding most of them (``*``: the core holds a
  duplicated copy), so a 33-cycle MobileNet shows all 33 cycles.

:func:`plot_mapping` returns the :class:`Picture` it drew (figure size, panels, cycles), what
the tests check instead of pixels. matplotlib is imported on use, with the Agg backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwmap import TargetError

from .hardware import Blueprint
from .layers import CrossbarLayer
from .mapper import MapResult, Placement

__all__ = ["plot_mapping", "picture_layout", "Picture", "MAX_PANELS"]

MAX_PANELS = 16
_LEGEND_MAX = 24
_LEGEND_W = 1.8
_ROW_IN, _TABLE_MAX_IN = 0.2, 12.0  # inches per cycle row of the summary table, and at most in all
_GAP_IN, _TOP_IN, _BOTTOM_IN = 0.5, 0.8, 0.45  # between panel rows, above (the title), below


def _ratios(n_rows: int, ph: float, summary: int) -> list[float]:
    """Heights (inches) of the rows of panels and of the summary table."""
    return [ph] * n_rows + ([_row_in(summary) * summary + 0.4] if summary else [])


def _row_in(cycles: int) -> float:
    return min(_ROW_IN, _TABLE_MAX_IN / max(1, cycles))


@dataclass(frozen=True)
class Picture:
    """What a mapping picture shows: ``figsize`` (inches); ``panels``: (cycle, core, panel row,
    panel column) of every crossbar panel; ``detail_cycles``: the cycles drawn as crossbars;
    ``summary_cycles``: the cycles of the all-cycles table (empty when one cycle on one core);
    ``copies``: duplicated blocks (copy ≥ 1) drawn hatched."""

    figsize: tuple[float, float]
    panels: tuple[tuple[int, int, int, int], ...]
    detail_cycles: tuple[int, ...]
    summary_cycles: tuple[int, ...]
    copies: int


def _panel_size(blueprint: Blueprint) -> tuple[float, float]:
    """Inches of one crossbar panel, keeping the crossbar's aspect (within 1:4)."""
    gr, gc = blueprint.cores[0].grid_rows, blueprint.cores[0].grid_cols
    height, width = gr * blueprint.element_rows, gc * blueprint.element_cols
    scale = 2.6 / max(height, width)
    return max(1.3, width * scale), max(1.3, height * scale)


def picture_layout(result: MapResult, blueprint: Blueprint) -> Picture:
    """Where everything goes (see the module docstring), without drawing."""
    cycles = max(1, result.computation_cycles)
    mesh_cols, mesh_rows = blueprint.mesh_cols, blueprint.mesh_rows
    per_cycle = mesh_cols * mesh_rows
    # whole cycles while the panels fit MAX_PANELS and stay at most about twice as tall as wide
    n_detail = max(1, min(cycles, MAX_PANELS // per_cycle, (2 * mesh_cols) // mesh_rows))
    panels = tuple((c, core.index, c * mesh_rows + core.mesh_xy[1], core.mesh_xy[0])
                   for c in range(n_detail) for core in blueprint.cores)
    summary = tuple(range(cycles)) if cycles > 1 or len(blueprint.cores) > 1 else ()
    pw, ph = _panel_size(blueprint)
    width = max(7.0, mesh_cols * (pw + 0.45) + _LEGEND_W, 0.55 * len(blueprint.cores) + 1.5 + _LEGEND_W)
    ratios = _ratios(n_detail * mesh_rows, ph, len(summary))
    height = sum(ratios) + _GAP_IN * (len(ratios) - 1) + _TOP_IN + _BOTTOM_IN
    copies = sum(1 for p in result.placements if p.replica > 0 and p.cycle < n_detail)
    return Picture((round(width, 2), round(height, 2)), panels, tuple(range(n_detail)), summary, copies)


def _label(p: Placement, lay: CrossbarLayer, copies: int) -> str:
    return f"{lay.node} #{p.replica}" if copies > 1 else lay.node


def plot_mapping(result: MapResult, layers: list[CrossbarLayer], blueprint: Blueprint, path: Path) -> Picture:
    """Write the PNG of ``result`` to ``path`` (parent folders created) and return its layout.

    The PNG carries no software or time stamp, so the same mapping gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_index = {layer.index: layer for layer in layers}
    missing = sorted({p.layer for p in result.placements} - set(by_index))
    if missing:
        raise TargetError(f"the mapping places layers {missing} that are not in the layer list", where=str(path))
    pic = picture_layout(result, blueprint)
    cmap = plt.get_cmap("tab20")
    layer_ids = sorted({p.layer for p in result.placements})
    colour = {lid: cmap(i % 20) for i, lid in enumerate(layer_ids)}
    blocks: dict[tuple[int, int], list[Placement]] = {}
    for p in result.placements:
        blocks.setdefault((p.cycle, p.core), []).append(p)
    pw, ph = _panel_size(blueprint)
    n_rows = len(pic.detail_cycles) * blueprint.mesh_rows
    ratios = _ratios(n_rows, ph, len(pic.summary_cycles))
    fig = plt.figure(figsize=pic.figsize)
    try:
        grid = fig.add_gridspec(len(ratios), blueprint.mesh_cols, height_ratios=ratios,
                                left=0.07, right=1 - _LEGEND_W / pic.figsize[0], top=1 - _TOP_IN / pic.figsize[1],
                                bottom=_BOTTOM_IN / pic.figsize[1], hspace=_GAP_IN / (sum(ratios) / len(ratios)),
                                wspace=0.35)
        for cycle, core, row, col in pic.panels:
            ax = fig.add_subplot(grid[row, col])
            _crossbar(ax, blocks.get((cycle, core), []), blueprint, by_index, colour, result.replicas)
            busy = "" if (cycle, core) in blocks else " (idle)"
            ax.set_title(f"cycle {cycle}, core {core}{busy}", fontsize=7)
        if pic.summary_cycles:
            _summary(fig.add_subplot(grid[n_rows, :]), result, blueprint, by_index)
        handles = _legend(layer_ids, colour, by_index, any(r > 1 for r in result.replicas.values()))
        if handles:
            fig.legend(handles=handles, loc="center left", fontsize=6, frameon=False,
                       bbox_to_anchor=(1 - (_LEGEND_W - 0.1) / pic.figsize[0], 0.5))
        shown = len(pic.detail_cycles)
        more = f"; crossbars of cycles 0–{shown - 1} of {result.computation_cycles}" \
            if shown < result.computation_cycles else ""
        fig.suptitle(
            f"{result.strategy}: {result.elements_used} elements used / {result.elements_allocated} allocated / "
            f"lower bound {result.elements_lower_bound} ({blueprint.element_rows}×{blueprint.element_cols}-cell "
            f"elements)\n{result.computation_cycles} computation cycles (bound "
            f"{result.computation_cycles_lower_bound}), {result.cores_used} cores used (bound "
            f"{result.cores_lower_bound}){more}", fontsize=8)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
    return pic


def _crossbar(ax: Any, placed: list[Placement], bp: Blueprint, by_index: dict[int, CrossbarLayer],
              colour: dict[int, Any], replicas: dict[int, int]) -> None:
    """One core's crossbar in one cycle: element grid, blocks, labels, labelled axes."""
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Rectangle

    er, ec = bp.element_rows, bp.element_cols
    gr, gc = bp.cores[0].grid_rows, bp.cores[0].grid_cols
    height, width = gr * er, gc * ec
    lines = [[(0, y * er), (width, y * er)] for y in range(gr + 1)] + \
        [[(x * ec, 0), (x * ec, height)] for x in range(gc + 1)]
    ax.add_collection(LineCollection(lines, colors="0.6", linewidths=0.25))
    alloc, used = [], []
    labels: dict[tuple[int, int], tuple[int, float, float]] = {}  # (layer, copy) -> (area, x, y)
    for p in placed:
        c = colour[p.layer]
        x0, y0 = p.elem_col * ec, p.elem_row * er
        rect = Rectangle((x0, y0), p.elem_cols * ec, p.elem_rows * er, facecolor=(*c[:3], 0.3), edgecolor="black",
                         linewidth=0.5, hatch="////" if p.replica else None)
        if p.replica:
            ax.add_patch(rect)  # a collection draws one hatch for all its patches
        else:
            alloc.append(rect)
        used.append(Rectangle((x0, y0), p.filter_count * by_index[p.layer].cols_per_filter, p.row_count,
                              facecolor=c, edgecolor="none", alpha=0.6 if p.replica else 1.0))
        area = p.elem_cols * p.elem_rows
        key = (p.layer, p.replica)
        if key not in labels or area > labels[key][0]:
            labels[key] = (area, x0 + p.elem_cols * ec / 2, y0 + p.elem_rows * er / 2)
    ax.add_collection(PatchCollection(alloc, match_original=True))
    ax.add_collection(PatchCollection(used, match_original=True))
    for (lid, rep), (_, cx, cy) in sorted(labels.items()):
        copy = next(p for p in placed if p.layer == lid and p.replica == rep)
        ax.text(cx, cy, _label(copy, by_index[lid], replicas.get(lid, 1)), ha="center", va="center", fontsize=5,
                clip_on=True)
    ax.set_xlim(0, width)
    ax.set_ylim(height, 0)  # row 0 at the top, as a crossbar is drawn
    ax.set_aspect("equal")
    step_r, step_c = max(1, math.ceil(gr / 4)), max(1, math.ceil(gc / 4))
    ax.set_yticks([y * er for y in range(0, gr + 1, step_r)])
    ax.set_xticks([x * ec for x in range(0, gc + 1, step_c)])
    ax.set_ylabel("rows", fontsize=6, labelpad=1)
    ax.set_xlabel("columns", fontsize=6, labelpad=1)
    ax.tick_params(labelsize=5, length=2, pad=1)


def _summary(ax: Any, result: MapResult, bp: Blueprint, by_index: dict[int, CrossbarLayer]) -> None:
    """Every (cycle, core): the share of its cells in use (shade) and its main layer (text)."""
    import numpy as np

    cycles, cores = max(1, result.computation_cycles), len(bp.cores)
    cells = bp.elements_per_core * bp.element_cells
    share = np.zeros((cycles, cores))
    main: dict[tuple[int, int], dict[int, int]] = {}
    copy: set[tuple[int, int]] = set()
    for p in result.placements:
        n = p.row_count * p.filter_count * by_index[p.layer].cols_per_filter
        share[p.cycle, p.core] += n / cells
        per = main.setdefault((p.cycle, p.core), {})
        per[p.layer] = per.get(p.layer, 0) + n
        if p.replica:
            copy.add((p.cycle, p.core))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for (c, k), per in sorted(main.items()) if _row_in(cycles) >= 0.12 else ():
        lid = max(sorted(per), key=lambda i: per[i])
        text = by_index[lid].node[:12] + ("*" if (c, k) in copy else "")
        ax.text(k, c, text, ha="center", va="center", fontsize=4.5, color="black" if share[c, k] < 0.6 else "white")
    ax.set_xticks(range(cores), [f"core {k}" for k in range(cores)], fontsize=5)
    step = max(1, math.ceil(cycles / 40))
    ax.set_yticks(range(0, cycles, step), [f"cycle {c}" for c in range(0, cycles, step)], fontsize=5)
    ax.tick_params(length=0, pad=1)
    ax.set_title(f"all {cycles} computation cycles × {cores} cores: share of cells used (shade), the layer using most "
                 "(text; * holds a duplicated copy)", fontsize=6)


def _legend(layer_ids: list[int], colour: dict[int, Any], by_index: dict[int, CrossbarLayer], copies: bool
            ) -> list[Any]:
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=colour[lid], label=by_index[lid].node) for lid in layer_ids[:_LEGEND_MAX]]
    if len(layer_ids) > _LEGEND_MAX:
        handles.append(Patch(facecolor="white", label=f"+{len(layer_ids) - _LEGEND_MAX} more layers"))
    if copies:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="////", label="duplicated copy (#k ≥ 1)"))
    return handles
