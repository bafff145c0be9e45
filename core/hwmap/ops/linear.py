"""Fully connected ops: Gemm and MatMul (ONNX semantics, float64 accumulation)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, shape_of

__all__ = ["gemm_dims", "matmul_dims"]


# -- Gemm ----------------------------------------------------------------------------------
def gemm_dims(node: Any, a: Shape, b: Shape, c: Shape | None) -> tuple[int, int, int]:
    """``(M, N, K)`` of ``Y = alpha * A' @ B' + beta * C`` after transA/transB, checked."""
    if len(a) != 2 or len(b) != 2:
        raise fail(node, f"Gemm needs 2-D A and B, got {list(a)} and {list(b)}")
    m, ka = (a[1], a[0]) if node.attrs.get("transA", 0) else (a[0], a[1])
    kb, n = (b[1], b[0]) if node.attrs.get("transB", 0) else (b[0], b[1])
    if ka != kb:
        raise fail(node, f"inner dimensions differ: A {list(a)} (transA={node.attrs.get('transA', 0)}) and "
                         f"B {list(b)} (transB={node.attrs.get('transB', 0)})")
    if c is not None:
        try:
            if np.broadcast_shapes(tuple(c), (m, n)) != (m, n):
                raise ValueError
        except ValueError:
            raise fail(node, f"C of shape {list(c)} does not broadcast to ({m}, {n})") from None
    return m, n, ka


def _gemm_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    ops = bind(node, shapes, ("A", "B", "C"), required=2)
    m, n, _ = gemm_dims(node, shape_of(ops["A"]), shape_of(ops["B"]),
                        None if ops["C"] is None else shape_of(ops["C"]))
    return [(m, n)]


def _gemm_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("A", "B", "C"), required=2)
    a, b, c = np.asarray(ops["A"], np.float64), np.asarray(ops["B"], np.float64), ops["C"]
    gemm_dims(node, a.shape, b.shape, None if c is None else np.shape(c))
    if node.attrs.get("transA", 0):
        a = a.T
    if node.attrs.get("transB", 0):
        b = b.T
    y = float(node.attrs.get("alpha", 1.0)) * (a @ b)
    if c is not None:
        y = y + float(node.attrs.get("beta", 1.0)) * np.asarray(c, np.float64)
    return [as_f32(y)]


def _gemm_macs(node: Any, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
    """M·N·K (the bias C and the alpha/beta scalings are not counted)."""
    ops = bind(node, in_shapes, ("A", "B", "C"), required=2)
    m, n, k = gemm_dims(node, shape_of(ops["A"]), shape_of(ops["B"]), None)
    return m * n * k


register_op(OpDef("Gemm", ("A", "B", "C"), _gemm_infer, _gemm_eval, macs=_gemm_macs, category="compute",
                  doc="ONNX Gemm: Y = alpha * A' @ B' + beta * C."))


# -- MatMul --------------------------------------------------------------------------------
def matmul_dims(node: Any, a: Shape, b: Shape) -> tuple[Shape, tuple[int, int, int, int]]:
    """Output shape of numpy ``matmul`` and ``(batch, M, N, K)`` for the MAC count."""
    if not a or not b:
        raise fail(node, f"MatMul operands must have rank >= 1, got {list(a)} and {list(b)}")
    a2 = (1, a[0]) if len(a) == 1 else tuple(a)
    b2 = (b[0], 1) if len(b) == 1 else tuple(b)
    if a2[-1] != b2[-2]:
        raise fail(node, f"inner dimensions differ: A {list(a)} and B {list(b)}")
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise fail(node, f"batch dimensions of A {list(a)} and B {list(b)} do not broadcast") from None
    m, k, n = a2[-2], a2[-1], b2[-1]
    out = (*batch, *((m,) if len(a) > 1 else ()), *((n,) if len(b) > 1 else ()))
    return tuple(int(d) for d in out), (math.prod(batch), m, n, k)


def _matmul_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    ops = bind(node, shapes, ("A", "B"), required=2)
    return [matmul_dims(node, shape_of(ops["A"]), shape_of(ops["B"]))[0]]


def _matmul_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("A", "B"), required=2)
    a, b = np.asarray(ops["A"]), np.asarray(ops["B"])
    matmul_dims(node, a.shape, b.shape)
    if np.issubdtype(a.dtype, np.floating) or np.issubdtype(b.dtype, np.floating):
        return [as_f32(np.matmul(a.astype(np.float64), b.astype(np.float64)))]
    return [np.matmul(a, b)]


def _matmul_macs(node: Any, in_shapes: Sequence[Shape], out_shapes: Sequence[Shape]) -> int:
    """prod(broadcast batch dims)·M·N·K."""
    ops = bind(node, in_shapes, ("A", "B"), required=2)
    batch, m, n, k = matmul_dims(node, shape_of(ops["A"]), shape_of(ops["B"]))[1]
    return batch * m * n * k


register_op(OpDef("MatMul", ("A", "B"), _matmul_infer, _matmul_eval, macs=_matmul_macs, category="compute",
                  doc="ONNX MatMul: numpy matmul semantics with batch broadcasting."))
