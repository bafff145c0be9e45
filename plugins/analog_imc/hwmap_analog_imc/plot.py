"""The mapping picture, in the style of the chapter's Fig. 3.13.

One panel per (computation cycle, core) that holds weights, laid out with a cycle per row
of panels: the core's crossbar drawn in cell coordinates (rows down, columns across, one
cell square), its element grid as thin lines (each element a rectangle of
``element_rows × element_cols`` cells, as the black rectangles of Fig. 3.13), each block's
allocated elements lightly filled in its layer's colour and the cells its weights occupy
filled solid, so the part of an element a block leaves empty shows. At most
:data:`MAX_PANELS` panels are drawn; the title says how many more there are.
matplotlib is imported here, on use, with the Agg backend.
"""

from __future__ import annotations

from pathlib import Path

from hwmap import TargetError

from .hardware import Blueprint
from .layers import CrossbarLayer
from .mapper import MapResult, Placement

__all__ = ["plot_mapping", "MAX_PANELS"]

MAX_PANELS = 16
_PANELS_PER_ROW = 8
_LEGEND_MAX = 24


def _panels(result: MapResult) -> tuple[list[list[tuple[int, int]]], int]:
    """Rows of (cycle, core) panels, a cycle starting a new row; and how many were left out."""
    slots = result.slots
    shown = slots[:MAX_PANELS]
    rows: list[list[tuple[int, int]]] = []
    for slot in shown:
        if not rows or rows[-1][-1][0] != slot[0] or len(rows[-1]) == _PANELS_PER_ROW:
            rows.append([])
        rows[-1].append(slot)
    return rows, len(slots) - len(shown)


def plot_mapping(result: MapResult, layers: list[CrossbarLayer], blueprint: Blueprint, path: Path) -> None:
    """Write the PNG of ``result`` to ``path`` (parent folders created).

    The PNG carries no software or time stamp, so the same mapping gives the same bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import LineCollection, PatchCollection
    from matplotlib.patches import Patch, Rectangle

    by_index = {layer.index: layer for layer in layers}
    missing = sorted({p.layer for p in result.placements} - set(by_index))
    if missing:
        raise TargetError(f"the mapping places layers {missing} that are not in the layer list", where=str(path))
    er, ec = blueprint.element_rows, blueprint.element_cols
    gr, gc = blueprint.cores[0].grid_rows, blueprint.cores[0].grid_cols
    height, width = gr * er, gc * ec
    cmap = plt.get_cmap("tab20")
    layer_ids = sorted({p.layer for p in result.placements})
    colour = {lid: cmap(i % 20) for i, lid in enumerate(layer_ids)}
    rows, hidden = _panels(result)
    ncols = max((len(r) for r in rows), default=1)
    nrows = max(len(rows), 1)
    # panels keep the crossbar's aspect; size them so the figure stays readable
    scale = 3.2 / max(height, width)
    pw, ph = max(2.2, width * scale), max(2.2, height * scale)
    legend_w = 1.6
    fig_w = max(7.0, pw * ncols + legend_w)  # wide enough for the two-line title
    fig, axes = plt.subplots(nrows, ncols, figsize=(fig_w, ph * nrows + 1.3), squeeze=False)
    try:
        blocks: dict[tuple[int, int], list[Placement]] = {}
        for p in result.placements:
            blocks.setdefault((p.cycle, p.core), []).append(p)
        for ax in axes.flat:
            ax.set_axis_off()
        for i, row in enumerate(rows):
            for j, (cycle, core) in enumerate(row):
                ax = axes[i][j]
                ax.set_axis_on()
                grid = [[(0, y * er), (width, y * er)] for y in range(gr + 1)]
                grid += [[(x * ec, 0), (x * ec, height)] for x in range(gc + 1)]
                ax.add_collection(LineCollection(grid, colors="0.55", linewidths=0.3))
                alloc, used = [], []
                labels: dict[int, tuple[int, float, float]] = {}  # layer -> (area, label x, label y)
                for p in blocks[(cycle, core)]:
                    c = colour[p.layer]
                    x0, y0 = p.elem_col * ec, p.elem_row * er
                    alloc.append(Rectangle((x0, y0), p.elem_cols * ec, p.elem_rows * er, facecolor=c, alpha=0.3,
                                           edgecolor="black", linewidth=0.6))
                    cols = p.filter_count * by_index[p.layer].cols_per_filter
                    used.append(Rectangle((x0, y0), cols, p.row_count, facecolor=c, edgecolor="none"))
                    area = p.elem_cols * p.elem_rows
                    if p.layer not in labels or area > labels[p.layer][0]:
                        labels[p.layer] = (area, x0 + p.elem_cols * ec / 2, y0 + p.elem_rows * er / 2)
                ax.add_collection(PatchCollection(alloc, match_original=True))
                ax.add_collection(PatchCollection(used, match_original=True))
                for lid, (_, cx, cy) in sorted(labels.items()):
                    ax.text(cx, cy, by_index[lid].node, ha="center", va="center", fontsize=6, clip_on=True)
                ax.set_xlim(0, width)
                ax.set_ylim(height, 0)  # row 0 at the top, as a crossbar is drawn
                ax.set_aspect("equal")
                ax.set_title(f"cycle {cycle}, core {core}", fontsize=8)
                ax.tick_params(labelsize=6)
        handles = [Patch(facecolor=colour[lid], label=by_index[lid].node) for lid in layer_ids[:_LEGEND_MAX]]
        if len(layer_ids) > _LEGEND_MAX:
            handles.append(Patch(facecolor="white", label=f"+{len(layer_ids) - _LEGEND_MAX} more layers"))
        if handles:
            fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
        more = f" (+{hidden} more core panels)" if hidden else ""
        fig.suptitle(
            f"{result.strategy}: {result.elements_used} elements used / {result.elements_allocated} allocated / "
            f"lower bound {result.elements_lower_bound} ({er}×{ec}-cell elements)\n"
            f"{result.computation_cycles} computation cycles (bound {result.computation_cycles_lower_bound}), "
            f"{result.cores_used} cores used (bound {result.cores_lower_bound}){more}", fontsize=9)
        fig.tight_layout(rect=(0, 0, 1 - legend_w / fig_w, 1 - 0.55 / (ph * nrows + 1.3)))
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png", dpi=110, metadata={"Software": None})
    finally:
        plt.close(fig)
