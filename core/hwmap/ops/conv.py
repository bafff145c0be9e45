"""Convolution and pooling: Conv, MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool.

Semantics are the ONNX operator definitions (https://onnx.ai/onnx/operators/), for any
number of spatial axes (1-D and 2-D are the common cases). Conv is computed as im2col (a
strided window view) times the weight matrix, per group, accumulated in float64 and rounded
once to float32.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import EvalFn, OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, shape_of
from ._window import Window, axis_counts, sliding, window

__all__ = ["conv_geometry", "conv_macs"]

# im2col columns are built per slice of the batch so their size stays under this many bytes
_COLS_BUDGET_BYTES = 128 * 2**20


# -- Conv ----------------------------------------------------------------------------------
def conv_geometry(node: Any, x: Shape, w: Shape, b: Shape | None) -> tuple[Window, int]:
    """Check a Conv's operand shapes; return its window geometry and ``group``."""
    if len(x) < 3:
        raise fail(node, f"input X must be (N, C, spatial...), got shape {list(x)}")
    if len(w) != len(x):
        raise fail(node, f"weight W of shape {list(w)} does not match input X of rank {len(x)}")
    group = int(node.attrs.get("group", 1))
    if group < 1 or x[1] != w[1] * group or w[0] % group:
        raise fail(node, f"channels do not match: X has {x[1]} channels, W is {list(w)} with group {group} "
                         f"(needs C_in = W[1] * group and C_out divisible by group)")
    if b is not None and tuple(b) != (w[0],):
        raise fail(node, f"bias B of shape {list(b)} must be ({w[0]},)")
    kernel = node.attrs.get("kernel_shape")
    if kernel is not None and tuple(int(k) for k in kernel) != tuple(w[2:]):
        raise fail(node, f"kernel_shape {list(kernel)} disagrees with weight shape {list(w)}")
    return window(node, x[2:], w[2:]), group


def _conv_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    ops = bind(node, shapes, ("X", "W", "B"), required=2)
    x, w = shape_of(ops["X"]), shape_of(ops["W"])
    geo, _ = conv_geometry(node, x, w, None if ops["B"] is None else shape_of(ops["B"]))
    return [(x[0], w[0], *geo.out)]


def _conv_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("X", "W", "B"), required=2)
    x, w, b = np.asarray(ops["X"]), np.asarray(ops["W"]), ops["B"]
    geo, g = conv_geometry(node, x.shape, w.shape, None if b is None else np.shape(b))
    n, c = x.shape[:2]
    m, cg = w.shape[:2]
    nsp = len(geo.kernel)
    p, k = math.prod(geo.out), math.prod(geo.kernel)
    # weights as (group, Cg*K, M/group): one matrix per group
    wm = w.reshape(g, m // g, cg * k).transpose(0, 2, 1).astype(np.float64)
    chunk = max(1, _COLS_BUDGET_BYTES // max(1, p * c * k * 8))
    pieces = []
    for s in range(0, n, chunk):
        win = sliding(x[s:s + chunk], geo, 0.0)  # (n', C, *out, *k)
        nb = win.shape[0]
        win = win.reshape(nb, g, cg, *geo.out, *geo.kernel)
        # (g, n', *out, Cg, *k): each row of a group's matrix is one output position's window
        order = (1, 0, *range(3, 3 + nsp), 2, *range(3 + nsp, 3 + 2 * nsp))
        cols = np.ascontiguousarray(win.transpose(order), dtype=np.float64).reshape(g, nb * p, cg * k)
        y = np.matmul(cols, wm)  # (g, n'*P, M/g)
        y = y.reshape(g, nb, p, m // g).transpose(1, 0, 3, 2).reshape(nb, m, *geo.out)
        pieces.append(y)
    y = pieces[0] if len(pieces) == 1 else np.concatenate(pieces, axis=0)
    if b is not None:
        y = y + np.asarray(b, dtype=np.float64).reshape(m, *([1] * nsp))
    return [as_f32(y)]


def conv_macs(node: Any, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
    """N·C_out·prod(out spatial)·(C_in/group)·prod(kernel); the bias is not counted.

    The "conv + fc" convention (MobileNet V1 1.0 at 224×224: 568,740,352 MACs, the "569
    million mult-adds" of Howard et al., arXiv:1704.04861, 2017).
    """
    ops = bind(node, in_shapes, ("X", "W", "B"), required=2)
    w = shape_of(ops["W"])
    return int(math.prod(out_shapes[0]) * math.prod(w[1:]))


register_op(OpDef("Conv", ("X", "W", "B"), _conv_infer, _conv_eval, macs=conv_macs, category="compute",
                  doc="ONNX Conv: grouped, dilated, strided, padded; any number of spatial axes."))


# -- pooling -------------------------------------------------------------------------------
def _pool_geometry(node: Any, x: Shape) -> Window:
    if len(x) < 3:
        raise fail(node, f"input X must be (N, C, spatial...), got shape {list(x)}")
    kernel = node.attrs.get("kernel_shape")
    if not kernel:
        raise fail(node, "attribute kernel_shape is required")
    return window(node, x[2:], kernel, ceil_mode=bool(node.attrs.get("ceil_mode", 0)))


def _pool_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("X",))["X"])
    out = (*x[:2], *_pool_geometry(node, x).out)
    return [out] * max(1, len(node.outputs))


def _maxpool_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("X",))["X"])
    if len(node.outputs) > 1:
        raise fail(node, "the MaxPool Indices output is not supported")
    geo = _pool_geometry(node, x.shape)
    fill = -np.inf if np.issubdtype(x.dtype, np.floating) else np.iinfo(x.dtype).min
    win = sliding(x, geo, fill)
    nsp = len(geo.kernel)
    return [as_f32(win.max(axis=tuple(range(-nsp, 0))))]


def _avgpool_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("X",))["X"])
    geo = _pool_geometry(node, x.shape)
    nsp = len(geo.kernel)
    win = sliding(x.astype(np.float64), geo, 0.0)
    total = win.sum(axis=tuple(range(-nsp, 0)))
    include = bool(node.attrs.get("count_include_pad", 0))
    # the counted region is a box, so the divisor is the product of per-axis counts
    div = np.ones(geo.out)
    for a in range(nsp):
        cnt = axis_counts(x.shape[2 + a], geo, a, include).astype(np.float64)
        div = div * cnt.reshape([-1 if i == a else 1 for i in range(nsp)])
    return [as_f32(total / div)]


def _global_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("X",))["X"])
    if len(x) < 3:
        raise fail(node, f"input X must be (N, C, spatial...), got shape {list(x)}")
    return [(*x[:2], *([1] * (len(x) - 2)))]


def _global_eval(reduce: str) -> EvalFn:
    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bind(node, inputs, ("X",))["X"])
        _global_infer(node, [x.shape])
        axes = tuple(range(2, x.ndim))
        if reduce == "mean":
            return [as_f32(x.astype(np.float64).mean(axis=axes, keepdims=True))]
        return [as_f32(x.max(axis=axes, keepdims=True))]
    return evaluate


register_op(OpDef("MaxPool", ("X",), _pool_infer, _maxpool_eval, category="pool",
                  doc="ONNX MaxPool (ceil_mode, dilations, pads); the Indices output is not supported."))
register_op(OpDef("AveragePool", ("X",), _pool_infer, _avgpool_eval, category="pool",
                  doc="ONNX AveragePool with count_include_pad and ceil_mode."))
register_op(OpDef("GlobalAveragePool", ("X",), _global_infer, _global_eval("mean"), category="pool"))
register_op(OpDef("GlobalMaxPool", ("X",), _global_infer, _global_eval("max"), category="pool"))
