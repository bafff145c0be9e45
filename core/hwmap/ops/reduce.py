"""Reductions: ReduceMean, ReduceSum, ReduceMax, ReduceMin (ONNX semantics).

``axes`` comes from the ``axes`` operand (ReduceSum opset 13, the others opset 18) or the
attribute of older opsets; no axes reduces everything unless ``noop_with_empty_axes``.
Category ``"pool"``: a reduction over spatial axes is a global pooling.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, const_of, float_like, ints, norm_axis, shape_of


def _axes(node: Any, ops: dict[str, Any], rank: int) -> tuple[int, ...] | None:
    """The reduced axes, or ``None`` for the identity (empty axes with noop_with_empty_axes)."""
    raw = ops.get("axes")
    axes = ints(raw) if raw is not None else (None if node.attrs.get("axes") is None else ints(node.attrs["axes"]))
    if not axes:
        return None if node.attrs.get("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted({norm_axis(node, a, rank) for a in axes}))


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, ("data", "axes"))
    if ops["axes"] is not None and const_of(ops["axes"]) is None:
        return None  # dynamic axes: values unknown until run time
    x = shape_of(ops["data"])
    axes = _axes(node, ops, len(x))
    if axes is None:
        return [x]
    if node.attrs.get("keepdims", 1):
        return [tuple(1 if i in axes else d for i, d in enumerate(x))]
    return [tuple(d for i, d in enumerate(x) if i not in axes)]


def _reduce(name: str, fn: Callable[..., np.ndarray]) -> None:
    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        ops = bind(node, inputs, ("data", "axes"))
        x = np.asarray(ops["data"])
        axes = _axes(node, ops, x.ndim)
        if axes is None:
            return [x.copy()]
        keep = bool(node.attrs.get("keepdims", 1))
        if float_like(x):
            return [as_f32(fn(x.astype(np.float64), axis=axes, keepdims=keep))]
        return [np.asarray(fn(x, axis=axes, keepdims=keep)).astype(x.dtype)]
    register_op(OpDef(name, ("data", "axes"), _infer, evaluate, category="pool", doc=f"ONNX {name}."))


_reduce("ReduceMean", np.mean)
_reduce("ReduceSum", np.sum)
_reduce("ReduceMax", np.max)
_reduce("ReduceMin", np.min)
