"""BatchNormalization at inference (ONNX BatchNormalization, ``training_mode`` 0).

``Y = scale * (X - input_mean) / sqrt(input_var + epsilon) + B``, the four parameters
per channel along axis 1.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, shape_of

_SLOTS = ("X", "scale", "B", "input_mean", "input_var")


def _check(node: Any, ops: dict[str, Any]) -> Shape:
    x = shape_of(ops["X"])
    if len(x) < 2:
        raise fail(node, f"input X must be (N, C, ...), got shape {list(x)}")
    if node.attrs.get("training_mode", 0):
        raise fail(node, "BatchNormalization in training mode is not supported (inference graphs only)")
    for slot in _SLOTS[1:]:
        if shape_of(ops[slot]) != (x[1],):
            raise fail(node, f"{slot} has shape {list(shape_of(ops[slot]))}, expected ({x[1]},) for {x[1]} channels")
    return x


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    ops = bind(node, shapes, _SLOTS, required=5)
    if len(node.outputs) > 1:
        raise fail(node, "only the Y output of BatchNormalization is supported (inference)")
    return [_check(node, ops)]


def _eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, _SLOTS, required=5)
    x = np.asarray(ops["X"], dtype=np.float64)
    _check(node, {**ops, "X": x.shape})
    shape = (x.shape[1],) + (1,) * (x.ndim - 2)
    p = {k: np.asarray(ops[k], dtype=np.float64).reshape(shape) for k in _SLOTS[1:]}
    eps = float(node.attrs.get("epsilon", 1e-5))
    y = p["scale"] * (x - p["input_mean"]) / np.sqrt(p["input_var"] + eps) + p["B"]
    return [as_f32(y)]


register_op(OpDef("BatchNormalization", _SLOTS, _infer, _eval, category="norm",
                  doc="ONNX BatchNormalization, inference mode; not counted as MACs (conv + fc convention)."))
