"""Quantized PyTorch models to ONNX, with their quantizers kept as QDQ or QONNX nodes.

A model quantized for training (fixed point, learned step size; :mod:`hwmap.nn`) computes its
quantizers in eval mode through ``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine``: ``q = clamp(round(x / s) + z, qmin, qmax)``,
``y = (q - z) · s``. :func:`export_onnx` writes such a model as ONNX in one of two forms, both
of which hwmap's ONNX frontend reads back into the same quantization annotations
(:class:`hwmap.QuantAnnotation`: scale, zero point, bits, signedness, axis):

* ``"qdq"`` — standard ONNX ``QuantizeLinear``/``DequantizeLinear`` pairs, through PyTorch's
  own exporter (TorchScript, ``dynamo=False``). ONNX's codes are 8-bit here: PyTorch exports
  only the code ranges (0, 255), (-128, 127) and (0, 127) (the last as a ``Clip`` on the
  codes); any other range is refused with a :class:`~hwmap.errors.ModelError` naming it.
* ``"qonnx"`` — QONNX ``Quant`` nodes (domain ``qonnx.custom_op.general``; inputs x, scale,
  zeropt, bitwidth; attributes signed, narrow, rounding_mode ``ROUND``; qonnx
  docs/qonnx-custom-ops/quant_op.md), for any bit width from 2 to 32: the code range
  ``[qmin, qmax]`` must be a whole signed (``[-2^(b-1), 2^(b-1)-1]``, or narrow
  ``[-2^(b-1)+1, 2^(b-1)-1]``) or unsigned (``[0, 2^b-1]``) range. QONNX rounds
  ``x / s + z`` where torch rounds ``x / s`` and adds ``z``; the two agree because torch's
  zero point is an integer. Round half to even in both (``torch.round``, ``np.round``).

Brevitas models export to QONNX with brevitas's own ``brevitas.export.export_qonnx``.
"""

from __future__ import annotations

import io
import warnings
from typing import Any, Sequence

import torch

from ..errors import ModelError

__all__ = ["export_onnx", "FORMATS", "QONNX_DOMAIN"]

FORMATS = ("qdq", "qonnx")
QONNX_DOMAIN = "qonnx.custom_op.general"
_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear need opset 13


def export_onnx(model: torch.nn.Module, example: torch.Tensor | Sequence[torch.Tensor], *, fmt: str = "qdq",
                input_names: Sequence[str] = ("x",), output_names: Sequence[str] = ("y",),
                dynamic_batch: bool = True, opset: int = _OPSET) -> bytes:
    """The serialized ONNX model of ``model`` (put in eval mode) traced on ``example``, its
    fake-quantizers as ``fmt`` (``"qdq"`` or ``"qonnx"``, see the module docstring).

    Raises :class:`~hwmap.errors.ModelError` (one line, naming the quantizer's range) for a
    quantizer the format cannot hold, and for an unknown ``fmt``."""
    if fmt not in FORMATS:
        raise ModelError(f"unknown export format {fmt!r} (known: {', '.join(FORMATS)})", where="export")
    if opset < _OPSET:
        raise ModelError(f"opset {opset} is below {_OPSET}, the first with per-axis QuantizeLinear", where="export")
    args = (example,) if isinstance(example, torch.Tensor) else tuple(example)
    axes = {n: {0: "batch"} for n in [*input_names, *output_names]} if dynamic_batch else None
    buf = io.BytesIO()
    kwargs: dict[str, Any] = {}
    if fmt == "qonnx":
        kwargs["custom_opsets"] = {QONNX_DOMAIN: 1}
    was_training = model.training
    model.eval()
    try:
        with warnings.catch_warnings(), _qonnx_symbolics(fmt == "qonnx"):
            warnings.simplefilter("ignore")
            torch.onnx.export(model, args, buf,  # type: ignore[arg-type]  # a file-like object is accepted
                              dynamo=False, opset_version=opset, input_names=list(input_names),
                              output_names=list(output_names), dynamic_axes=axes, **kwargs)
    except torch.onnx.errors.SymbolicValueError as e:
        first = str(e).splitlines()[0].split("  [Caused by")[0]
        raise ModelError(f"cannot export as {fmt}: {first}"
                         + ("; export as fmt='qonnx' for other bit widths" if fmt == "qdq" else ""),
                         where="export") from None
    finally:
        model.train(was_training)
    return buf.getvalue()


class _qonnx_symbolics:
    """While active (and ``enabled``), torch's two fake-quantize ops export as QONNX ``Quant``."""

    _OPS = ("aten::fake_quantize_per_tensor_affine", "aten::fake_quantize_per_channel_affine")

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def __enter__(self) -> None:
        if self.enabled:
            torch.onnx.register_custom_op_symbolic(self._OPS[0], _per_tensor_symbolic, _OPSET)
            torch.onnx.register_custom_op_symbolic(self._OPS[1], _per_channel_symbolic, _OPSET)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            for op in self._OPS:
                torch.onnx.unregister_custom_op_symbolic(op, _OPSET)


def _quant_bits(qmin: int, qmax: int) -> tuple[int, bool, bool]:
    """``(bits, signed, narrow)`` of a code range, or a SymbolicValueError-free ModelError."""
    for bits in range(2, 33):
        if (qmin, qmax) == (0, 2**bits - 1):
            return bits, False, False
        if (qmin, qmax) == (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1):
            return bits, True, False
        if (qmin, qmax) == (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1):
            return bits, True, True
    raise ModelError(f"cannot export as qonnx: quantizer code range ({qmin}, {qmax}) is not a whole signed, "
                     "narrow signed or unsigned range of 2 to 32 bits", where="export")


def _float_const(g: Any, v: Any, shape: list[int] | None) -> Any:
    """``v`` (a Python number or a traced tensor) as a float32 tensor, reshaped to ``shape``."""
    from torch.onnx import symbolic_helper as sh

    if sh._is_value(v):  # a traced tensor (a constant, a buffer, a detached parameter): folded at export
        out = g.op("Cast", v, to_i=1)  # TensorProto.FLOAT
    else:
        out = g.op("Constant", value_t=torch.tensor(v, dtype=torch.float32))
    if shape is not None:
        out = g.op("Reshape", out, g.op("Constant", value_t=torch.tensor(shape, dtype=torch.int64)))
    return out


def _quant(g: Any, x: Any, scale: Any, zero: Any, qmin: Any, qmax: Any, shape: list[int] | None) -> Any:
    from torch.onnx import symbolic_helper as sh

    bits, signed, narrow = _quant_bits(int(sh._get_const(qmin, "i", "quant_min")),
                                       int(sh._get_const(qmax, "i", "quant_max")))
    out = g.op(f"{QONNX_DOMAIN}::Quant", x, _float_const(g, scale, shape), _float_const(g, zero, shape),
               g.op("Constant", value_t=torch.tensor(float(bits), dtype=torch.float32)),
               signed_i=int(signed), narrow_i=int(narrow), rounding_mode_s="ROUND")
    out.setType(x.type())  # shaped like its input: what the exporter needs to go on (a Conv's kernel)
    return out


def _per_tensor_symbolic(g: Any, x: Any, scale: Any, zero: Any, qmin: Any = -128, qmax: Any = 127) -> Any:
    return _quant(g, x, scale, zero, qmin, qmax, None)


def _per_channel_symbolic(g: Any, x: Any, scale: Any, zero: Any, axis: Any, qmin: Any = -128,
                          qmax: Any = 127) -> Any:
    from torch.onnx import symbolic_helper as sh

    rank = sh._get_tensor_rank(x)
    if rank is None:
        raise ModelError("cannot export as qonnx: a per-channel quantizer's input has unknown rank", where="export")
    a = int(sh._get_const(axis, "i", "axis")) % rank
    shape = [-1 if i == a else 1 for i in range(rank)]
    return _quant(g, x, scale, zero, qmin, qmax, shape)
