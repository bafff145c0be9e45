"""Quantization in ONNX models into hwmap :class:`~hwmap.graph.QuantAnnotation` s.

Quantizers are folded away during the ONNX frontend's node pass; what they did is kept as an
annotation (:mod:`hwmap.graph`: quantization is an annotation, parameters hold dequantized floats):

- ONNX ``QuantizeLinear``/``DequantizeLinear`` (QDQ) with constant scale and zero point:
  QuantizeLinear of a constant gives its integer codes, DequantizeLinear of a constant a
  dequantized float constant remembering its quantization, and a QuantizeLinear on an
  activation read only by matching DequantizeLinears disappears with them, its annotation
  moving onto the tensor consumers read. :func:`quantize_linear` and :func:`dequantize_const`
  return ``False`` for anything else, which then stays an ordinary node.
- QONNX ``Quant``/``IntQuant`` (:data:`QONNX_DOMAINS`): on a constant, the fake-quantized value
  with its annotation; on an activation, an annotation on the tensor. :func:`qonnx_quant`
  always folds; a QONNX quantizer hwmap cannot represent is a :class:`~hwmap.errors.ModelError`.
- QONNX ``BipolarQuant`` (inputs x, scale; ``y = scale`` where ``x >= 0``, else ``-scale``;
  qonnx docs/qonnx-custom-ops/bipolarquant_v1.md): likewise, as a ``bipolar`` annotation
  (:func:`qonnx_bipolar_quant`).
- QONNX ``Trunc`` version 2 (inputs x, scale, zeropt, input_bit_width, output_scale,
  output_bit_width; qonnx docs/qonnx-custom-ops/trunc_v2.md; brevitas's ``TruncAvgPool2d``
  exports it): ``round(x / scale)`` codes requantized to ``output_scale = scale · 2^k``, as
  one annotation on its output whose ``input_scale`` is the node's scale (:func:`qonnx_trunc`).
  Exact where the annotations' rounding is the node's, so only ``rounding_mode`` ROUND is
  read; FLOOR (the default) and the other modes, a non-zero zero point, an output scale that
  is not a power of two times the scale, and version 1 (five inputs, whose output keeps the
  input scale) are refused naming the node.

Every function works on the conversion's :class:`~hwmap.frontends._onnx_builder.GraphBuilder`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from ..errors import ModelError
from ..graph import Node, QuantAnnotation
from ._onnx_builder import Const, GraphBuilder, copy_quant
from ._onnx_read import DEFAULT_DOMAINS, attr_value, one_line

#: Domains of the QONNX custom ops (FINN used the second one before QONNX split off).
QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
# Quantized element types: (bits, signed). Codes of these types dequantize to real values.
_QTYPES = {
    "int8": (8, True), "uint8": (8, False), "int16": (16, True), "uint16": (16, False),
    "int4": (4, True), "uint4": (4, False), "int32": (32, True),
}


# ---------------------------------------------------------------------------------------
# scale, zero point and rounding
# ---------------------------------------------------------------------------------------
def _per_axis(scale: np.ndarray, zero_point: np.ndarray, ndim: int | None, what: str,
              where: str) -> tuple[np.ndarray, np.ndarray, int | None]:
    """Scale and zero point as scalars (per tensor) or 1-D along one axis of the data.

    QONNX allows any broadcastable shape (e.g. ``(C, 1, 1, 1)`` for conv weights); the
    annotation keeps the one axis along which they vary.
    """
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zero_point, dtype=np.float64)
    if s.size == 1 and z.size == 1:
        return s.reshape(()), z.reshape(()), None
    try:
        b = np.broadcast_shapes(s.shape, z.shape)
    except ValueError:
        raise ModelError(f"{what}: scale {list(s.shape)} and zero point {list(z.shape)} do not broadcast",
                         where=where) from None
    varying = [i for i, d in enumerate(b) if d != 1]
    rank = ndim if ndim is not None else len(b)
    if len(varying) != 1 or len(b) > rank:
        raise ModelError(f"{what}: scale of shape {list(s.shape)} is neither per tensor nor per axis", where=where)
    axis = rank - len(b) + varying[0]
    return np.broadcast_to(s, b).reshape(-1).copy(), np.broadcast_to(z, b).reshape(-1).copy(), axis


def _round(x: np.ndarray, mode: str, what: str, where: str) -> np.ndarray:
    """QONNX rounding modes (qonnx docs/qonnx-custom-ops/intquant_v1.md, "Rounding modes")."""
    m = mode.upper()
    if m == "ROUND":  # half to even
        return np.round(x)
    if m == "CEIL":
        return np.ceil(x)
    if m == "FLOOR":
        return np.floor(x)
    if m == "UP":  # away from zero
        return np.sign(x) * np.ceil(np.abs(x))
    if m in ("DOWN", "ROUND_TO_ZERO"):
        return np.trunc(x)
    if m == "HALF_UP":
        return np.sign(x) * np.floor(np.abs(x) + 0.5)
    if m == "HALF_DOWN":
        return np.sign(x) * np.ceil(np.abs(x) - 0.5)
    raise ModelError(f"{what}: unknown rounding_mode {mode!r} (ROUND, CEIL, FLOOR, UP, DOWN, HALF_UP, HALF_DOWN)",
                     where=where)


def _qonnx_fake_quant(x: np.ndarray, scale: np.ndarray, zeropt: np.ndarray, q: QuantAnnotation, mode: str,
                      what: str, where: str) -> np.ndarray:
    """QONNX ``IntQuant``: ``y = (round(clip(x / scale + zeropt, qmin, qmax)) - zeropt) * scale``.

    Clipping comes before rounding, as in the QONNX reference implementation
    (qonnx ``custom_op/general/intquant.py``, ``int_quant``); the bounds are integers, so
    the order does not change the result for the round-to-nearest modes.
    """
    s = np.asarray(scale, dtype=np.float64)
    z = np.asarray(zeropt, dtype=np.float64)
    y = np.asarray(x, dtype=np.float64) / s + z
    y = _round(np.clip(y, q.qmin, q.qmax), mode, what, where)
    return ((y - z) * s).astype(x.dtype if x.dtype.kind == "f" else np.float32)


def _check_scale(gb: GraphBuilder, scale: np.ndarray, what: str) -> None:
    """Refuse a scale that is zero, negative or not finite, naming the first such value:
    ``x / scale`` would be infinite, or flip the order of the codes."""
    s = np.asarray(scale, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero(~(np.isfinite(s) & (s > 0)))
    if bad.size:
        at = f" (element {int(bad[0])} of {s.size})" if s.size > 1 else ""
        raise gb.err(f"{what}: scale must be positive and finite, got {float(s[bad[0]])!r}{at}")


# ---------------------------------------------------------------------------------------
# ONNX QDQ
# ---------------------------------------------------------------------------------------
def _qparams(gb: GraphBuilder, n: onnx.NodeProto, quantized_dtype: str | None, ndim: int | None,
             what: str) -> QuantAnnotation | None:
    """The annotation of a QuantizeLinear/DequantizeLinear node with constant scale and
    zero point, or ``None`` when it cannot be folded (then the node stays a node)."""
    scale = gb.const(n.input[1]) if len(n.input) > 1 else None
    zp = gb.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if scale is None or (len(n.input) > 2 and n.input[2] and zp is None):
        return None
    attrs = {a.name: a for a in n.attribute}
    if "block_size" in attrs and attrs["block_size"].i != 0:
        return None  # blocked quantization (opset 21) has no per-tensor/per-axis form
    qdtype = str(zp.value.dtype) if zp is not None else quantized_dtype
    if qdtype not in _QTYPES:
        return None
    bits, signed = _QTYPES[qdtype]
    s = np.asarray(scale.value, dtype=np.float64)
    z = np.asarray(zp.value, dtype=np.float64) if zp is not None else np.zeros_like(s)
    if s.ndim > 1 or z.shape != s.shape:
        return None
    _check_scale(gb, s, what)
    axis = None
    if s.ndim == 1:
        axis = int(attrs["axis"].i) if "axis" in attrs else 1
        if ndim is not None:
            if not -ndim <= axis < ndim:
                raise gb.err(f"{what}: axis {axis} out of range for a rank-{ndim} tensor")
            axis %= ndim
    return QuantAnnotation(s, z, bits, signed, axis, narrow=False)


def quantize_linear(gb: GraphBuilder, n: onnx.NodeProto, name: str) -> bool:
    """QuantizeLinear of a constant (its integer codes become the constant) or of an activation
    whose every reader is a DequantizeLinear with the same parameters (all of them are folded
    into an annotation); ``False`` when the node stays a node."""
    what = f"node {name!r} (QuantizeLinear)"
    if not n.input or not n.input[0] or not n.output:
        return False
    x = gb.resolve(n.input[0])
    out = n.output[0]
    attrs = {a.name: a for a in n.attribute}
    q_np: Any = np.dtype(np.uint8)  # ONNX default when there is no zero point
    if "output_dtype" in attrs and attrs["output_dtype"].i:
        try:
            q_np = np.dtype(helper.tensor_dtype_to_np_dtype(attrs["output_dtype"].i))
        except Exception:
            return False
    qdtype = str(q_np)
    xc = gb.consts.get(x)
    ndim = xc.value.ndim if xc is not None else (len(gb.shapes[x]) if x in gb.shapes else None)
    q = _qparams(gb, n, qdtype, ndim, what)
    if q is None:
        return False
    if xc is not None:  # a float weight quantized at parse time: keep its integer codes
        zp = gb.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
        dt = zp.value.dtype if zp is not None else q_np
        codes = q.quantize(xc.value)
        gb.consts[out] = Const(codes.astype(dt))
        return True
    # An activation: fold when every reader of the codes is a matching DequantizeLinear (or a
    # Clip of the codes to a narrower whole range, read only by such: PyTorch's (0, 127) export).
    if out in gb.output_set:
        return False
    dqs = gb.consumers.get(out, [])
    nodes = gb.g.node
    full = q  # what a matching DequantizeLinear reads the codes as
    clipped = _clipped_codes(gb, out, dqs, q)
    if clipped is not None:
        clip_index, q = clipped
        gb.skip.add(clip_index)
        out = nodes[clip_index].output[0]
        dqs = gb.consumers.get(out, [])
    for j in dqs:
        d = nodes[j]
        if d.op_type != "DequantizeLinear" or d.domain not in DEFAULT_DOMAINS or d.input[0] != out \
                or not d.output:
            return False
        dq = _qparams(gb, d, qdtype, ndim, what)
        if dq is None or dq != full:
            return False
    if not dqs:
        return False
    gb.skip.update(dqs)
    _fold_activation_quant(gb, x, [nodes[j].output[0] for j in dqs], q, name, keep_out_name=False)
    return True


def _clipped_codes(gb: GraphBuilder, codes: str, readers: list[int], q: QuantAnnotation
                   ) -> tuple[int, QuantAnnotation] | None:
    """When the only reader of ``codes`` is a Clip with constant integer bounds that cut the
    code range to a whole narrower one (unsigned ``[0, 2^b-1]``, signed ``[-2^(b-1),
    2^(b-1)-1]`` or narrow ``[-2^(b-1)+1, 2^(b-1)-1]``), its index and the annotation at ``b``
    bits; else ``None``."""
    if len(readers) != 1:
        return None
    c = gb.g.node[readers[0]]
    if c.op_type != "Clip" or c.domain not in DEFAULT_DOMAINS or not c.input or c.input[0] != codes \
            or len(c.output) != 1 or c.output[0] in gb.output_set:
        return None
    bounds = []
    for i, default in ((1, q.qmin), (2, q.qmax)):
        if len(c.input) <= i or not c.input[i]:
            bounds.append(default)
            continue
        b = gb.const(c.input[i])
        if b is None or b.value.size != 1:
            return None
        bounds.append(int(np.asarray(b.value).reshape(())))
    lo, hi = max(bounds[0], q.qmin), min(bounds[1], q.qmax)
    for bits in range(2, q.bits + 1):
        for signed, narrow, rng in ((False, False, (0, 2**bits - 1)),
                                    (True, False, (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)),
                                    (True, True, (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1))):
            if (lo, hi) == rng and signed == q.signed:
                return readers[0], replace(q, bits=bits, narrow=narrow)
    return None


def dequantize_const(gb: GraphBuilder, n: onnx.NodeProto, name: str) -> bool:
    """DequantizeLinear of a constant (weights, biases): a dequantized float constant
    that remembers its quantization."""
    what = f"node {name!r} (DequantizeLinear)"
    if not n.input or not n.input[0] or not n.output:
        return False
    xc = gb.const(n.input[0])
    if xc is None:
        return False
    q = _qparams(gb, n, str(xc.value.dtype), xc.value.ndim, what)
    if q is None:
        return False
    zp = gb.const(n.input[2]) if len(n.input) > 2 and n.input[2] else None
    if zp is not None and zp.value.dtype != xc.value.dtype:
        raise gb.err(f"{what}: zero point type {zp.value.dtype} differs from data type {xc.value.dtype}")
    scale = gb.const(n.input[1])
    assert scale is not None  # _qparams gave an annotation, so the scale is a constant
    # ONNX: the output has the scale's type; numpy lacks bfloat16, so that becomes float32.
    out_dt = scale.value.dtype if scale.value.dtype.name in ("float16", "float32", "float64") \
        else np.dtype(np.float32)
    try:
        value = q.dequantize(xc.value.astype(np.int64)).astype(out_dt)
    except ValueError as e:
        raise gb.err(f"{what}: scale does not match the data: {one_line(e)}") from None
    gb.consts[n.output[0]] = Const(value, q)
    return True


# ---------------------------------------------------------------------------------------
# QONNX
# ---------------------------------------------------------------------------------------
def qonnx_quant(gb: GraphBuilder, n: onnx.NodeProto, name: str) -> None:
    """QONNX ``Quant``/``IntQuant`` (inputs x, scale, zeropt, bitwidth; attributes signed,
    narrow, rounding_mode; qonnx docs/qonnx-custom-ops/intquant_v1.md)."""
    op = f"{n.domain}:{n.op_type}"
    what = f"node {name!r} ({op})"
    if len(n.input) != 4 or not all(n.input) or len(n.output) != 1:
        raise gb.err(f"{what}: expects inputs (x, scale, zeropt, bitwidth) and one output")
    scale, zeropt, bitwidth = (gb.const(t) for t in n.input[1:])
    if scale is None or zeropt is None or bitwidth is None:
        raise gb.err(f"{what}: scale, zeropt and bitwidth must be constants")
    attrs: dict[str, Any] = {}
    for a in n.attribute:
        kind, value = attr_value(a, what, gb.where)
        attrs[a.name] = value
    signed = bool(attrs.get("signed", 1))
    narrow = bool(attrs.get("narrow", 0))
    mode = str(attrs.get("rounding_mode", "ROUND"))
    bw = np.asarray(bitwidth.value, dtype=np.float64)
    if bw.size != 1 or not np.isfinite(bw).all() or float(bw.reshape(())) != int(bw.reshape(())):
        shown = bw.ravel()[0].item() if bw.size == 1 else bw.ravel()[:4].tolist()
        raise gb.err(f"{what}: bitwidth must be one integer from 2 to 32, got {shown!r}")
    bits = int(bw.reshape(()))
    if bits < 2:
        raise gb.err(f"{what}: bitwidth must be one integer from 2 to 32, got {bits} "
                     "(a 1-bit quantizer is QONNX BipolarQuant)")
    if bits > 32:
        raise gb.err(f"{what}: bitwidth {bits} is above 32")
    x = gb.resolve(n.input[0])
    out = n.output[0]
    xc = gb.consts.get(x)
    ndim = xc.value.ndim if xc is not None else (len(gb.shapes[x]) if x in gb.shapes else None)
    s, z, axis = _per_axis(scale.value, zeropt.value, ndim, what, gb.where)
    _check_scale(gb, s, what)
    q = QuantAnnotation(s, z, bits, signed, axis, narrow)
    _round(np.zeros(1), mode, what, gb.where)  # reject an unknown rounding mode early
    if xc is not None:
        try:
            value = _qonnx_fake_quant(xc.value, scale.value, zeropt.value, q, mode, what, gb.where)
        except ValueError as e:
            raise gb.err(f"{what}: scale/zeropt do not broadcast to the data: {one_line(e)}") from None
        gb.consts[out] = Const(value, q)
        return
    if x not in gb.tensors:
        raise gb.err(f"{what}: input {x!r} is not produced by any node")
    if mode.upper() != "ROUND":  # a weight is quantized here, at parse time; an activation at run time
        raise gb.err(f"{what}: rounding_mode {mode!r} on an activation: hwmap's annotations round half to even, "
                     "so only ROUND is read there")
    _fold_activation_quant(gb, x, [out], q, name, keep_out_name=True)


def qonnx_bipolar_quant(gb: GraphBuilder, n: onnx.NodeProto, name: str) -> None:
    """QONNX ``BipolarQuant`` (inputs x, scale): a ``bipolar`` annotation, codes -1 and +1."""
    what = f"node {name!r} ({n.domain}:{n.op_type})"
    if len(n.input) != 2 or not all(n.input) or len(n.output) != 1:
        raise gb.err(f"{what}: expects inputs (x, scale) and one output")
    scale = gb.const(n.input[1])
    if scale is None:
        raise gb.err(f"{what}: scale must be a constant")
    x = gb.resolve(n.input[0])
    xc = gb.consts.get(x)
    ndim = xc.value.ndim if xc is not None else (len(gb.shapes[x]) if x in gb.shapes else None)
    s, _, axis = _per_axis(scale.value, np.zeros(1), ndim, what, gb.where)
    _check_scale(gb, s, what)
    q = QuantAnnotation(s, np.zeros_like(s), 1, True, axis, bipolar=True)
    if xc is not None:
        try:
            signs = np.where(np.asarray(xc.value) >= 0, 1.0, -1.0)
            value = (signs * np.asarray(scale.value, dtype=np.float64)).astype(
                xc.value.dtype if xc.value.dtype.kind == "f" else np.float32)
        except ValueError as e:
            raise gb.err(f"{what}: scale does not broadcast to the data: {one_line(e)}") from None
        gb.consts[n.output[0]] = Const(value, q)
        return
    if x not in gb.tensors:
        raise gb.err(f"{what}: input {x!r} is not produced by any node")
    _fold_activation_quant(gb, x, [n.output[0]], q, name, keep_out_name=True)


def _bit_width(gb: GraphBuilder, c: Const, what: str, name: str) -> int:
    """One integer bit width from 2 to 32, or a ModelError naming the value."""
    bw = np.asarray(c.value, dtype=np.float64)
    if bw.size != 1 or not np.isfinite(bw).all() or float(bw.reshape(())) != int(bw.reshape(())):
        shown = bw.ravel()[0].item() if bw.size == 1 else bw.ravel()[:4].tolist()
        raise gb.err(f"{what}: {name} must be one integer from 2 to 32, got {shown!r}")
    bits = int(bw.reshape(()))
    if not 2 <= bits <= 32:
        raise gb.err(f"{what}: {name} must be one integer from 2 to 32, got {bits}")
    return bits


def qonnx_trunc(gb: GraphBuilder, n: onnx.NodeProto, name: str) -> None:
    """QONNX ``Trunc`` v2 on an activation: an annotation with ``input_scale`` (see the
    module docstring)."""
    what = f"node {name!r} ({n.domain}:{n.op_type})"
    if len(n.input) == 5:
        raise gb.err(f"{what}: Trunc version 1 (5 inputs) keeps the input scale on truncated codes; "
                     "only version 2 (6 inputs, with the output scale) is read")
    if len(n.input) != 6 or not all(n.input) or len(n.output) != 1:
        raise gb.err(f"{what}: expects inputs (x, scale, zeropt, input_bit_width, output_scale, "
                     "output_bit_width) and one output")
    consts = [gb.const(t) for t in n.input[1:]]
    if any(c is None for c in consts):
        raise gb.err(f"{what}: scale, zeropt, bit widths and output scale must be constants")
    scale, zeropt, in_bw, out_scale, out_bw = (c for c in consts if c is not None)
    attrs = {a.name: attr_value(a, what, gb.where)[1] for a in n.attribute}
    mode = attrs.get("rounding_mode", "FLOOR")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    if mode.upper() != "ROUND":
        raise gb.err(f"{what}: rounding_mode {mode!r}: hwmap's annotations round half to even, so only ROUND "
                     "is read")
    signed, narrow = bool(attrs.get("signed", 1)), bool(attrs.get("narrow", 0))
    _bit_width(gb, in_bw, what, "input_bit_width")  # checked; the codes are not clipped to it (as QONNX)
    out_bits = _bit_width(gb, out_bw, what, "output_bit_width")
    x = gb.resolve(n.input[0])
    if x in gb.consts or x not in gb.tensors:
        raise gb.err(f"{what}: its input must be an activation computed by the graph")
    ndim = len(gb.shapes[x]) if x in gb.shapes else None
    s, z, axis = _per_axis(scale.value, zeropt.value, ndim, what, gb.where)
    so, _, axis_o = _per_axis(out_scale.value, np.zeros(1), ndim, what, gb.where)
    _check_scale(gb, s, what)
    _check_scale(gb, so, what)
    if np.any(z != 0):
        raise gb.err(f"{what}: zero point {z.ravel()[:4].tolist()}: only a zero zero point is read")
    if s.shape != so.shape and s.size != 1 and so.size != 1 or (axis is not None and axis_o not in (None, axis)):
        raise gb.err(f"{what}: scale and output scale vary along different axes")
    ratio = so / s
    if not np.array_equal(ratio, 2.0 ** np.round(np.log2(ratio))):
        raise gb.err(f"{what}: output scale {so.ravel()[:4].tolist()} is not the scale "
                     f"{s.ravel()[:4].tolist()} times a power of two")
    n_ax = axis if axis is not None else axis_o
    shape = np.broadcast_shapes(s.shape, so.shape)
    q = QuantAnnotation(np.broadcast_to(so, shape).copy(), np.zeros(shape), out_bits, bool(signed), n_ax,
                        bool(narrow), input_scale=np.broadcast_to(s, shape).copy())
    _fold_activation_quant(gb, x, [n.output[0]], q, name, keep_out_name=True)


# ---------------------------------------------------------------------------------------
# activation quantization
# ---------------------------------------------------------------------------------------
def _fold_activation_quant(gb: GraphBuilder, x: str, outs: Sequence[str], q: QuantAnnotation, name: str,
                           keep_out_name: bool) -> None:
    """Remove a quantizer on activation ``x`` whose (fake-quantized) results are ``outs``
    and put its annotation on the tensor consumers now read.

    When nothing else reads ``x`` and it is not a graph output, the annotation goes on
    ``x`` itself (QDQ) or on the quantizer's output name, which the producer of ``x``
    then produces (QONNX, ``keep_out_name``). When ``x`` is also read unquantized
    elsewhere, an Identity node carries the annotation so the two stay distinct.
    """
    gb.readers[x] = gb.readers.get(x, 0) - 1  # the quantizer no longer reads x
    exclusive = gb.readers[x] == 0 and x not in gb.output_set
    out_is_output = [o for o in outs if o in gb.output_set]
    if exclusive and (keep_out_name or out_is_output) and x in gb.producer:
        canon = out_is_output[0] if out_is_output else outs[0]
        gb.rename_output(x, canon)
    elif exclusive and not out_is_output:
        canon = x
    else:
        canon = out_is_output[0] if out_is_output else outs[0]
        node = Node(name, "Identity", [x], [canon])  # takes the quantizer's (reserved) name
        gb.check_supported(node, "Identity")
        gb.declare_like(canon, x)
        gb.add_node(node)
        gb.readers[x] = gb.readers.get(x, 0) + 1
    gb.tensors[canon].quant = q
    for o in outs:
        if o == canon:
            continue
        if o in gb.output_set:
            node = Node(gb.unique(f"{name}_{o}"), "Identity", [canon], [o])
            gb.check_supported(node, "Identity")
            gb.declare_like(o, canon)
            gb.tensors[o].quant = copy_quant(q)
            gb.add_node(node)
            gb.readers[canon] = gb.readers.get(canon, 0) + 1
        else:
            gb.set_alias(o, canon, None)
