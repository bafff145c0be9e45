"""Elementwise ops: arithmetic with numpy broadcasting, activations, Softmax, Clip, Dropout.

Semantics are the ONNX operator definitions (https://onnx.ai/onnx/operators/). Floating
inputs are computed in float64 and rounded once to float32, so each result is the correctly
rounded float32 of the exact formula (for +, -, *, / this equals float32 arithmetic).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, float_like, norm_axis, shape_of

__all__ = ["broadcast", "erf"]


def broadcast(node: Any, *shapes: Shape) -> Shape:
    """The numpy/ONNX multidirectional broadcast of ``shapes``, or a GraphError naming them."""
    try:
        return tuple(int(d) for d in np.broadcast_shapes(*[tuple(s) for s in shapes]))
    except ValueError:
        raise fail(node, f"operand shapes {[list(s) for s in shapes]} do not broadcast") from None


try:  # scipy is not a dependency of the core; use it when present, else the exact math.erf
    from scipy.special import erf as _erf_impl
except ImportError:  # pragma: no cover - depends on the environment
    _erf_impl = np.vectorize(math.erf, otypes=[np.float64])


def erf(x: np.ndarray) -> np.ndarray:
    """The error function in float64."""
    return np.asarray(_erf_impl(np.asarray(x, dtype=np.float64)), dtype=np.float64)


# -- unary ---------------------------------------------------------------------------------
def _identity_infer(slot: str) -> Callable[[Any, Sequence[Shape]], list[Shape]]:
    def infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
        return [shape_of(bind(node, shapes, (slot,))[slot])]
    return infer


def _unary(name: str, slot: str, fn: Callable[[np.ndarray, Any], np.ndarray], *, int_ok: bool = False,
           doc: str = "") -> None:
    """Register a one-operand op ``y = fn(x, node)``; ``int_ok`` keeps integer inputs integer."""
    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        x = np.asarray(bind(node, inputs, (slot,))[slot])
        if float_like(x):
            with np.errstate(all="ignore"):
                return [as_f32(fn(x.astype(np.float64), node))]
        if int_ok:
            return [np.asarray(fn(x, node)).astype(x.dtype)]
        raise fail(node, f"{name} of a {x.dtype} tensor is not supported (floating point only)")
    register_op(OpDef(name, (slot,), _identity_infer(slot), evaluate, category="elementwise", doc=doc))


def _softmax(x: np.ndarray, node: Any) -> np.ndarray:
    axis = norm_axis(node, int(node.attrs.get("axis", -1)), x.ndim)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _gelu(x: np.ndarray, node: Any) -> np.ndarray:
    if node.attrs.get("approximate", "none") == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    return 0.5 * x * (1.0 + erf(x / math.sqrt(2.0)))


_unary("Relu", "X", lambda x, n: np.maximum(x, 0), int_ok=True)
_unary("LeakyRelu", "X", lambda x, n: np.where(x >= 0, x, float(n.attrs.get("alpha", 0.01)) * x))
_unary("Sigmoid", "X", lambda x, n: 1.0 / (1.0 + np.exp(-x)))
_unary("Tanh", "input", lambda x, n: np.tanh(x))
_unary("Softmax", "input", _softmax, doc="ONNX Softmax (opset 13: along one axis, default -1).")
_unary("HardSigmoid", "X", lambda x, n: np.clip(float(n.attrs.get("alpha", 0.2)) * x
                                                 + float(n.attrs.get("beta", 0.5)), 0.0, 1.0))
_unary("HardSwish", "X", lambda x, n: x * np.clip(x / 6.0 + 0.5, 0.0, 1.0))
_unary("Exp", "input", lambda x, n: np.exp(x))
_unary("Log", "input", lambda x, n: np.log(x))
_unary("Sqrt", "X", lambda x, n: np.sqrt(x))
_unary("Reciprocal", "X", lambda x, n: 1.0 / x)
_unary("Neg", "X", lambda x, n: -x, int_ok=True)
_unary("Abs", "X", lambda x, n: np.abs(x), int_ok=True)
_unary("Erf", "input", lambda x, n: erf(x))
_unary("Elu", "X", lambda x, n: np.where(x >= 0, x, float(n.attrs.get("alpha", 1.0)) * np.expm1(x)))
_unary("Gelu", "X", _gelu, doc="ONNX Gelu (opset 20), approximate 'none' (erf) or 'tanh'.")


def _identity_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(bind(node, inputs, ("input",))["input"]).copy()]


register_op(OpDef("Identity", ("input",), _identity_infer("input"), _identity_eval, category="elementwise"))


# -- Clip, Dropout -------------------------------------------------------------------------
def _clip_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("input", "min", "max"))
    x = np.asarray(ops["input"])
    # opset < 11 carried the bounds as attributes
    lo = ops["min"] if ops["min"] is not None else node.attrs.get("min")
    hi = ops["max"] if ops["max"] is not None else node.attrs.get("max")
    y = x
    if lo is not None:
        y = np.maximum(y, np.asarray(lo, dtype=x.dtype))
    if hi is not None:
        y = np.minimum(y, np.asarray(hi, dtype=x.dtype))
    return [as_f32(y) if float_like(x) else y]


register_op(OpDef("Clip", ("input", "min", "max"), _identity_infer("input"), _clip_eval, category="elementwise",
                  doc="ONNX Clip; bounds from the min/max operands or (opset < 11) attributes."))


def _dropout_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("data", "ratio", "training_mode"))["data"])
    return [x] * max(1, len(node.outputs))


def _dropout_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("data", "ratio", "training_mode"))
    if ops["training_mode"] is not None and bool(np.asarray(ops["training_mode"]).reshape(-1)[0]):
        raise fail(node, "Dropout in training mode is not supported (inference graphs only)")
    x = np.asarray(ops["data"]).copy()
    out = [x]
    if len(node.outputs) > 1:  # the mask keeps every element at inference
        out.append(np.ones(x.shape, dtype=bool))
    return out


register_op(OpDef("Dropout", ("data", "ratio", "training_mode"), _dropout_infer, _dropout_eval,
                  category="elementwise", doc="ONNX Dropout at inference: the identity (mask all true)."))


# -- binary --------------------------------------------------------------------------------
def _binary_infer(slots: tuple[str, str]) -> Callable[[Any, Sequence[Shape]], list[Shape]]:
    def infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
        ops = bind(node, shapes, slots, required=2)
        return [broadcast(node, shape_of(ops[slots[0]]), shape_of(ops[slots[1]]))]
    return infer


def _int_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # ONNX integer Div truncates toward zero (C semantics), numpy's // floors
    q = np.abs(a) // np.abs(b)
    return np.where((a < 0) ^ (b < 0), -q, q)


def _binary(name: str, slots: tuple[str, str], fn: Callable[[np.ndarray, np.ndarray], np.ndarray],
            int_fn: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> None:
    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        ops = bind(node, inputs, slots, required=2)
        a, b = np.asarray(ops[slots[0]]), np.asarray(ops[slots[1]])
        broadcast(node, a.shape, b.shape)
        if float_like(a) or float_like(b):
            with np.errstate(all="ignore"):
                return [as_f32(fn(a.astype(np.float64), b.astype(np.float64)))]
        return [np.asarray((int_fn or fn)(a, b)).astype(np.result_type(a, b))]
    register_op(OpDef(name, slots, _binary_infer(slots), evaluate, category="elementwise",
                      doc=f"ONNX {name} with multidirectional (numpy) broadcasting."))


_binary("Add", ("A", "B"), np.add)
_binary("Sub", ("A", "B"), np.subtract)
_binary("Mul", ("A", "B"), np.multiply)
_binary("Div", ("A", "B"), np.divide, _int_div)
_binary("Pow", ("X", "Y"), np.power)


# -- variadic ------------------------------------------------------------------------------
def _variadic_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    if node.params:
        raise fail(node, f"variadic {node.op} takes every operand as a tensor (use Constant nodes), "
                         f"found params {sorted(node.params)}")
    if not shapes:
        raise fail(node, f"{node.op} needs at least one input")
    return [broadcast(node, *shapes)]


def _variadic(name: str, reduce: Callable[[list[np.ndarray]], np.ndarray]) -> None:
    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        arrays = [np.asarray(a) for a in inputs]
        _variadic_infer(node, [a.shape for a in arrays])
        if any(float_like(a) for a in arrays):
            return [as_f32(reduce([a.astype(np.float64) for a in arrays]))]
        return [np.asarray(reduce(arrays)).astype(np.result_type(*arrays))]
    register_op(OpDef(name, ("data_0",), _variadic_infer, evaluate, category="elementwise", variadic=True,
                      doc=f"ONNX {name} over any number of broadcast operands."))


def _fold(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> Callable[[list[np.ndarray]], np.ndarray]:
    def reduce(arrays: list[np.ndarray]) -> np.ndarray:
        out = arrays[0]
        for a in arrays[1:]:
            out = fn(out, a)
        return np.broadcast_to(out, np.broadcast_shapes(*[a.shape for a in arrays])).copy()
    return reduce


_variadic("Sum", _fold(np.add))
_variadic("Max", _fold(np.maximum))
_variadic("Min", _fold(np.minimum))
_variadic("Mean", lambda arrays: _fold(np.add)(arrays) / len(arrays))
