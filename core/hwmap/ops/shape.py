"""Data-movement ops: Flatten, Reshape, Squeeze, Unsqueeze, Transpose, Concat, Pad, Constant,
Shape, Gather, Cast, Slice, Split, Expand (ONNX operator semantics).

Operands that opset 13+ moved from attributes to inputs (Squeeze/Unsqueeze ``axes``, Pad
``pads``, Slice ``starts``/``ends``/..., Split ``split``) are read from the param of that
slot name, or from the attribute of the older opsets. When such an operand is a dynamic
tensor its values are unknown at shape-inference time and ``infer`` returns ``None``.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import bind, const_of, fail, ints, norm_axis, shape_of
from .elementwise import broadcast

__all__ = ["reshape_target", "slice_plan"]


def _values(node: Any, ops: dict[str, Any], slot: str, attr: str | None = None) -> list[int] | None:
    """An int-list operand from its param/dynamic value, else the legacy attribute, else None."""
    v = ops.get(slot)
    if v is not None:
        return ints(v)
    a = node.attrs.get(attr or slot)
    return None if a is None else ints(a)


def _dynamic_unknown(ops: dict[str, Any], *slots: str) -> bool:
    """In ``infer``: a slot bound to a dynamic tensor, whose values are not known yet."""
    return any(ops.get(s) is not None and const_of(ops[s]) is None for s in slots)


# -- Flatten -------------------------------------------------------------------------------
def _flatten_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("input",))["input"])
    axis = int(node.attrs.get("axis", 1))
    if not -len(x) <= axis <= len(x):
        raise fail(node, f"axis {axis} is out of range for rank {len(x)}")
    axis = axis + len(x) if axis < 0 else axis
    return [(math.prod(x[:axis]), math.prod(x[axis:]))]


def _flatten_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    return [x.reshape(_flatten_infer(node, [x.shape])[0])]


register_op(OpDef("Flatten", ("input",), _flatten_infer, _flatten_eval, category="shape"))


# -- Reshape -------------------------------------------------------------------------------
def reshape_target(node: Any, x: Shape, target: Sequence[int]) -> Shape:
    """Resolve ONNX Reshape's ``0`` (copy the input dim, unless ``allowzero``) and ``-1``."""
    allowzero = bool(node.attrs.get("allowzero", 0))
    out = [int(d) for d in target]
    for i, d in enumerate(out):
        if d == 0 and not allowzero:
            if i >= len(x):
                raise fail(node, f"shape {list(target)} copies dim {i} (0) but the input has rank {len(x)}")
            out[i] = x[i]
    if out.count(-1) > 1 or any(d < -1 for d in out):
        raise fail(node, f"shape {list(target)} may hold one -1 and no other negative value")
    total = math.prod(x)
    if -1 in out:
        known = math.prod(d for d in out if d != -1)
        if known == 0 or total % known:
            raise fail(node, f"cannot reshape {list(x)} ({total} elements) into {list(target)}")
        out[out.index(-1)] = total // known
    if math.prod(out) != total:
        raise fail(node, f"cannot reshape {list(x)} ({total} elements) into {list(target)}")
    return tuple(out)


def _reshape_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, ("data", "shape"), required=2)
    if _dynamic_unknown(ops, "shape"):
        return None
    return [reshape_target(node, shape_of(ops["data"]), ints(ops["shape"]))]


def _reshape_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("data", "shape"), required=2)
    x = np.asarray(ops["data"])
    return [x.reshape(reshape_target(node, x.shape, ints(ops["shape"])))]


register_op(OpDef("Reshape", ("data", "shape"), _reshape_infer, _reshape_eval, category="shape"))


# -- Squeeze / Unsqueeze -------------------------------------------------------------------
def _squeeze_shape(node: Any, x: Shape, axes: list[int] | None) -> Shape:
    if axes is None:
        return tuple(d for d in x if d != 1)
    axes_n = {norm_axis(node, a, len(x)) for a in axes}
    for a in axes_n:
        if x[a] != 1:
            raise fail(node, f"cannot squeeze axis {a} of size {x[a]} (shape {list(x)})")
    return tuple(d for i, d in enumerate(x) if i not in axes_n)


def _unsqueeze_shape(node: Any, x: Shape, axes: list[int] | None) -> Shape:
    if axes is None:
        raise fail(node, "Unsqueeze needs axes (an 'axes' param or attribute)")
    rank = len(x) + len(axes)
    axes_n = sorted(norm_axis(node, a, rank) for a in axes)
    if len(set(axes_n)) != len(axes_n):
        raise fail(node, f"axes {axes} repeat an axis")
    it = iter(x)
    return tuple(1 if i in axes_n else next(it) for i in range(rank))


def _axes_op(name: str, fn: Any) -> None:
    def infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
        ops = bind(node, shapes, ("data", "axes"))
        if _dynamic_unknown(ops, "axes"):
            return None
        return [fn(node, shape_of(ops["data"]), _values(node, ops, "axes"))]

    def evaluate(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        ops = bind(node, inputs, ("data", "axes"))
        x = np.asarray(ops["data"])
        return [x.reshape(fn(node, x.shape, _values(node, ops, "axes")))]

    register_op(OpDef(name, ("data", "axes"), infer, evaluate, category="shape",
                      doc=f"ONNX {name}; axes from the 'axes' operand (opset 13) or attribute."))


_axes_op("Squeeze", _squeeze_shape)
_axes_op("Unsqueeze", _unsqueeze_shape)


# -- Transpose -----------------------------------------------------------------------------
def _perm(node: Any, rank: int) -> list[int]:
    perm = node.attrs.get("perm")
    perm = list(range(rank))[::-1] if perm is None else ints(perm)
    if sorted(perm) != list(range(rank)):
        raise fail(node, f"perm {perm} is not a permutation of the {rank} axes")
    return perm


def _transpose_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("data",))["data"])
    return [tuple(x[p] for p in _perm(node, len(x)))]


def _transpose_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("data",))["data"])
    return [np.ascontiguousarray(x.transpose(_perm(node, x.ndim)))]


register_op(OpDef("Transpose", ("data",), _transpose_infer, _transpose_eval, category="shape"))


# -- Concat --------------------------------------------------------------------------------
def _concat_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    if node.params:
        raise fail(node, f"Concat takes every operand as a tensor (use Constant nodes), "
                         f"found params {sorted(node.params)}")
    if not shapes:
        raise fail(node, "Concat needs at least one input")
    if "axis" not in node.attrs:
        raise fail(node, "attribute axis is required")
    shapes = [tuple(s) for s in shapes]
    rank = len(shapes[0])
    axis = norm_axis(node, int(node.attrs["axis"]), rank)
    for s in shapes:
        if len(s) != rank or s[:axis] + s[axis + 1:] != shapes[0][:axis] + shapes[0][axis + 1:]:
            raise fail(node, f"inputs {[list(t) for t in shapes]} differ outside axis {axis}")
    return [shapes[0][:axis] + (sum(s[axis] for s in shapes),) + shapes[0][axis + 1:]]


def _concat_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    arrays = [np.asarray(a) for a in inputs]
    _concat_infer(node, [a.shape for a in arrays])
    axis = norm_axis(node, int(node.attrs["axis"]), arrays[0].ndim)
    return [np.concatenate(arrays, axis=axis)]


register_op(OpDef("Concat", ("inputs",), _concat_infer, _concat_eval, category="shape", variadic=True))


# -- Pad -----------------------------------------------------------------------------------
_PAD_SLOTS = ("data", "pads", "constant_value", "axes")


def _pad_widths(node: Any, ops: dict[str, Any], rank: int) -> list[tuple[int, int]]:
    pads = _values(node, ops, "pads")
    if pads is None:
        raise fail(node, "Pad needs pads (a 'pads' param or attribute)")
    axes = _values(node, ops, "axes")
    axes = list(range(rank)) if axes is None else [norm_axis(node, a, rank) for a in axes]
    if len(pads) != 2 * len(axes):
        raise fail(node, f"pads {pads} must have 2 x {len(axes)} entries (begins, then ends)")
    widths = [(0, 0)] * rank
    for i, a in enumerate(axes):
        widths[a] = (pads[i], pads[i + len(axes)])
    return widths


def _pad_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, _PAD_SLOTS)
    if _dynamic_unknown(ops, "pads", "axes"):
        return None
    x = shape_of(ops["data"])
    out = tuple(d + b + e for d, (b, e) in zip(x, _pad_widths(node, ops, len(x))))
    if min(out, default=0) < 0:
        raise fail(node, f"pads crop more than the input {list(x)} holds")
    return [out]


def _pad_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, _PAD_SLOTS)
    x = np.asarray(ops["data"])
    widths = _pad_widths(node, ops, x.ndim)
    mode = str(node.attrs.get("mode", "constant"))
    modes: dict[str, Literal["constant", "reflect", "edge", "wrap"]] = {
        "constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}
    np_mode = modes.get(mode)
    if np_mode is None:
        raise fail(node, f"pad mode {mode!r} is not one of constant, reflect, edge, wrap")
    # negative pads crop (ONNX): pad the positive part, then slice the negative part off
    pos = [(max(b, 0), max(e, 0)) for b, e in widths]
    kwargs: dict[str, Any] = {}
    if np_mode == "constant":
        value = ops["constant_value"]
        value = node.attrs.get("value", 0) if value is None else np.asarray(value).reshape(-1)[0]
        kwargs["constant_values"] = np.asarray(value, dtype=x.dtype)
    y = np.pad(x, pos, mode=np_mode, **kwargs)
    y = y[tuple(slice(-min(b, 0), y.shape[i] - (-min(e, 0))) for i, (b, e) in enumerate(widths))]
    return [y]


register_op(OpDef("Pad", _PAD_SLOTS, _pad_infer, _pad_eval, category="shape",
                  doc="ONNX Pad: constant, reflect, edge, wrap; negative pads crop."))


# -- Constant ------------------------------------------------------------------------------
def _constant_value(node: Any) -> np.ndarray:
    if "value" in node.params:
        return np.asarray(node.params["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32), ("value_int", np.int64),
                       ("value_ints", np.int64)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype=dtype)
    raise fail(node, "Constant needs a 'value' param")


register_op(OpDef("Constant", (), lambda node, shapes: [tuple(_constant_value(node).shape)],
                  lambda node, inputs: [_constant_value(node).copy()], category="shape"))


# -- Shape ---------------------------------------------------------------------------------
def _shape_range(node: Any, rank: int) -> tuple[int, int]:
    start = int(node.attrs.get("start", 0))
    end = int(node.attrs.get("end", rank))
    start = min(max(start + rank if start < 0 else start, 0), rank)
    end = min(max(end + rank if end < 0 else end, 0), rank)
    return start, end


def _shape_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("data",))["data"])
    start, end = _shape_range(node, len(x))
    return [(max(0, end - start),)]


def _shape_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("data",))["data"])
    start, end = _shape_range(node, x.ndim)
    return [np.asarray(x.shape[start:end], dtype=np.int64)]


register_op(OpDef("Shape", ("data",), _shape_infer, _shape_eval, category="shape"))


# -- Gather --------------------------------------------------------------------------------
def _gather_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    ops = bind(node, shapes, ("data", "indices"), required=2)
    x, idx = shape_of(ops["data"]), shape_of(ops["indices"])
    if not x:
        raise fail(node, "Gather needs data of rank >= 1")
    axis = norm_axis(node, int(node.attrs.get("axis", 0)), len(x))
    return [x[:axis] + idx + x[axis + 1:]]


def _gather_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("data", "indices"), required=2)
    x, idx = np.asarray(ops["data"]), np.asarray(ops["indices"]).astype(np.int64)
    axis = norm_axis(node, int(node.attrs.get("axis", 0)), x.ndim)
    dim = x.shape[axis]
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise fail(node, f"indices {idx.min()}..{idx.max()} out of range for axis {axis} of size {dim}")
    return [np.take(x, np.where(idx < 0, idx + dim, idx), axis=axis)]


register_op(OpDef("Gather", ("data", "indices"), _gather_infer, _gather_eval, category="shape"))


# -- Cast ----------------------------------------------------------------------------------
def _cast_dtype(node: Any) -> np.dtype:
    to = node.attrs.get("to")
    try:
        if isinstance(to, int) and not isinstance(to, bool):
            from onnx.helper import tensor_dtype_to_np_dtype

            return np.dtype(tensor_dtype_to_np_dtype(to))
        return np.dtype(str(to))
    except (KeyError, TypeError, ValueError):
        raise fail(node, f"Cast target type {to!r} is not a known ONNX or numpy type") from None


def _cast_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    return [x.astype(_cast_dtype(node))]


register_op(OpDef("Cast", ("input",), lambda node, shapes: [shape_of(bind(node, shapes, ("input",))["input"])],
                  _cast_eval, category="shape", doc="ONNX Cast; 'to' is a TensorProto type number or numpy name."))


# -- Slice ---------------------------------------------------------------------------------
_SLICE_SLOTS = ("data", "starts", "ends", "axes", "steps")


def slice_plan(node: Any, ops: dict[str, Any], x: Shape) -> tuple[tuple[slice, ...], Shape]:
    """Python slices and the output shape of ONNX Slice (its clamping rules)."""
    starts, ends = _values(node, ops, "starts"), _values(node, ops, "ends")
    if starts is None or ends is None or len(starts) != len(ends):
        raise fail(node, f"Slice needs starts and ends of equal length, got {starts} and {ends}")
    axes = _values(node, ops, "axes") or list(range(len(starts)))
    steps = _values(node, ops, "steps") or [1] * len(starts)
    if not len(axes) == len(steps) == len(starts):
        raise fail(node, f"starts {starts}, ends {ends}, axes {axes}, steps {steps} differ in length")
    index = [slice(None)] * len(x)
    out = list(x)
    for s, e, a, st in zip(starts, ends, axes, steps):
        a = norm_axis(node, a, len(x))
        dim = x[a]
        if st == 0:
            raise fail(node, "Slice step 0 is not allowed")
        s = s + dim if s < 0 else s
        e = e + dim if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), dim), min(max(e, 0), dim)
        else:
            s, e = min(max(s, 0), dim - 1), min(max(e, -1), dim - 1)
        index[a] = slice(s, e if e >= 0 else None, st)
        out[a] = max(0, -(-(e - s) // st))
    return tuple(index), tuple(out)


def _slice_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, _SLICE_SLOTS, required=1)
    if _dynamic_unknown(ops, *_SLICE_SLOTS[1:]):
        return None
    return [slice_plan(node, ops, shape_of(ops["data"]))[1]]


def _slice_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, _SLICE_SLOTS, required=1)
    x = np.asarray(ops["data"])
    index, _ = slice_plan(node, ops, x.shape)
    return [x[index].copy()]


register_op(OpDef("Slice", _SLICE_SLOTS, _slice_infer, _slice_eval, category="shape"))


# -- Split ---------------------------------------------------------------------------------
def _split_sizes(node: Any, ops: dict[str, Any], x: Shape) -> tuple[int, list[int]]:
    axis = norm_axis(node, int(node.attrs.get("axis", 0)), len(x))
    sizes = _values(node, ops, "split")
    n_out = max(1, len(node.outputs))
    if sizes is None:
        n = int(node.attrs.get("num_outputs", n_out))
        chunk = -(-x[axis] // n)  # opset 18: equal chunks, the last one smaller
        sizes = [min(chunk, max(0, x[axis] - i * chunk)) for i in range(n)]
    if len(sizes) != n_out or sum(sizes) != x[axis] or min(sizes) < 0:
        raise fail(node, f"split sizes {sizes} do not cut axis {axis} of size {x[axis]} into {n_out} outputs")
    return axis, sizes


def _split_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, ("input", "split"))
    if _dynamic_unknown(ops, "split"):
        return None
    x = shape_of(ops["input"])
    axis, sizes = _split_sizes(node, ops, x)
    return [x[:axis] + (s,) + x[axis + 1:] for s in sizes]


def _split_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("input", "split"))
    x = np.asarray(ops["input"])
    axis, sizes = _split_sizes(node, ops, x.shape)
    return [p.copy() for p in np.split(x, np.cumsum(sizes)[:-1], axis=axis)]


register_op(OpDef("Split", ("input", "split"), _split_infer, _split_eval, category="shape"))


# -- Expand --------------------------------------------------------------------------------
def _expand_infer(node: Any, shapes: Sequence[Shape]) -> list[Shape] | None:
    ops = bind(node, shapes, ("input", "shape"), required=2)
    if _dynamic_unknown(ops, "shape"):
        return None
    return [broadcast(node, shape_of(ops["input"]), tuple(ints(ops["shape"])))]


def _expand_eval(node: Any, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    ops = bind(node, inputs, ("input", "shape"), required=2)
    x = np.asarray(ops["input"])
    out = broadcast(node, x.shape, tuple(ints(ops["shape"])))
    return [np.broadcast_to(x, out).copy()]


register_op(OpDef("Expand", ("input", "shape"), _expand_infer, _expand_eval, category="shape"))
