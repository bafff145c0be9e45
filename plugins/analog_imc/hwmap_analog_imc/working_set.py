"""Buffer working sets of an analog IMC mapping: a convolution's line buffer and what a core
holds per computation cycle (the KPI record's ``activation_memory_bytes`` and the buffer
warning of :mod:`.assumptions`)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hwmap import Node

from .schedule import distinct_rows

if TYPE_CHECKING:
    from .estimate import CostModel

__all__ = ["conv_fill_fraction", "buffer_bytes"]


def conv_fill_fraction(node: Node, in_shape: tuple[int, ...]) -> float:
    """Share of a 2-D convolution's input that must exist before its first output: its line
    buffer ``((K_h−1)·W + K_w)`` of ``H·W`` (padded sizes, dilated kernel); 1 otherwise."""
    if len(in_shape) != 4:
        return 1.0
    w = node.params.get("W")
    kernel = node.attrs.get("kernel_shape") or (list(w.shape[2:]) if w is not None else None)
    if not kernel or len(kernel) != 2:
        return 1.0
    dil = node.attrs.get("dilations") or [1, 1]
    pads = node.attrs.get("pads") or [0, 0, 0, 0]
    kh, kw = ((int(k) - 1) * int(d) + 1 for k, d in zip(kernel, dil))
    h = in_shape[2] + int(pads[0]) + int(pads[2])
    wd = in_shape[3] + int(pads[1]) + int(pads[3])
    return min(1.0, ((kh - 1) * wd + kw) / max(1, h * wd))


def buffer_bytes(model: CostModel) -> tuple[int, int, int]:
    """Largest (input + output) buffer working set over (cycle, core), and its two parts.

    Input: a convolution's line buffer ``((K_h−1)·W + K_w)·C_in`` (what ISAAC's inter-layer
    pipeline buffers, Shafiee et al., ISCA 2016), a fully connected layer's input vector,
    times the share of the layer's rows the core holds, at ``input_bits``; output: one
    output vector of the filters the core holds."""
    hw = model.hw
    need: dict[tuple[int, int], list[float]] = {}
    for lay in model.m.layers:
        node = model.g.node(lay.node)
        in_shape = model.g.tensor(node.inputs[0]).shape
        if node.op.endswith("Conv") and len(in_shape) == 4:
            window = conv_fill_fraction(node, in_shape) * _padded_area(node, in_shape) * in_shape[1]
        else:
            window = lay.groups * lay.rows
        tiles: dict[tuple[int, int], set[tuple[int, int, int]]] = {}
        outs: dict[tuple[int, int], float] = {}
        for p in model.blocks[lay.node]:
            slot = (p.cycle, p.core)
            tiles.setdefault(slot, set()).add((p.group, p.row_start, p.row_count))
            outs[slot] = outs.get(slot, 0.0) + p.filter_count * model._out_width(lay, p)
        for slot, t in tiles.items():
            share = distinct_rows(t) / (lay.groups * lay.rows)
            cur = need.setdefault(slot, [0.0, 0.0])
            cur[0] += window * share * hw.input_bits
            cur[1] += outs[slot]
    if not need:
        return 0, 0, 0
    best = max(sorted(need), key=lambda s: need[s][0] + need[s][1])
    i, o = (math.ceil(b / 8) for b in need[best])
    worst_in = max(math.ceil(v[0] / 8) for v in need.values())
    worst_out = max(math.ceil(v[1] / 8) for v in need.values())
    return i + o, worst_in, worst_out


def _padded_area(node: Node, in_shape: tuple[int, ...]) -> int:
    pads = node.attrs.get("pads") or [0, 0, 0, 0]
    return (in_shape[2] + int(pads[0]) + int(pads[2])) * (in_shape[3] + int(pads[1]) + int(pads[3]))
