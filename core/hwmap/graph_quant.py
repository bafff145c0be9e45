"""The quantization annotation of the graph (:mod:`hwmap.graph`): a tensor's or parameter's
affine integer grid, ``real = scale * (q - zero_point)``, and the codes of values on it
(quantize, dequantize, fake-quantize), as QONNX and ONNX's QDQ pairs state them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

__all__ = ["QuantAnnotation"]


@dataclass
class QuantAnnotation:
    """Affine quantization: ``real = scale * (q - zero_point)``, ``q`` on ``bits`` bits.

    ``scale`` and ``zero_point`` are scalars (per tensor) or 1-D along ``axis`` (per axis).
    ``narrow`` excludes the most negative code (symmetric range, as QONNX ``narrow``).
    ``bipolar``: the two codes -1 and +1 (QONNX ``BipolarQuant``, a binarized network's
    weights and activations): ``q = +1`` where ``x >= 0``, else ``-1``; ``bits`` is 1,
    ``signed`` true and ``zero_point`` 0, so that ``real = scale * q``.
    ``input_scale`` (QONNX ``Trunc``, a power-of-two requantization): ``x`` is first rounded
    to codes of ``input_scale``, then those codes to codes of ``scale`` (``scale /
    input_scale`` a power of two): ``q = round(round(x / input_scale) · input_scale / scale)``,
    both half to even, exactly as the codes are, whatever float rounding ``x`` carries.
    """

    scale: np.ndarray
    zero_point: np.ndarray
    bits: int
    signed: bool
    axis: int | None = None
    narrow: bool = False
    bipolar: bool = False
    input_scale: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scale = np.asarray(self.scale, dtype=np.float64)
        self.zero_point = np.asarray(self.zero_point, dtype=np.float64)
        if self.input_scale is not None:
            self.input_scale = np.asarray(self.input_scale, dtype=np.float64)

    @property
    def qmin(self) -> int:
        if self.bipolar:
            return -1
        if self.signed:
            return -(2 ** (self.bits - 1)) + (1 if self.narrow else 0)
        return 0

    @property
    def qmax(self) -> int:
        if self.bipolar:
            return 1
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1 - (1 if self.narrow else 0)

    def _broadcast(self, a: np.ndarray, ndim: int) -> np.ndarray:
        if a.ndim == 0 or self.axis is None:
            return a
        shape = [1] * ndim
        shape[self.axis % ndim] = a.size
        return a.reshape(shape)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        """Integer codes (as float64) of ``x``, rounded half to even and clipped."""
        x = np.asarray(x, dtype=np.float64)
        if self.bipolar:  # the scale is positive: the sign of x / scale is the sign of x
            return np.where(x >= 0, 1.0, -1.0)
        s = self._broadcast(self.scale, x.ndim)
        z = self._broadcast(self.zero_point, x.ndim)
        if self.input_scale is not None:
            s_in = self._broadcast(self.input_scale, x.ndim)
            return np.clip(np.round(np.round(x / s_in) * (s_in / s)) + z, self.qmin, self.qmax)
        return np.clip(np.round(x / s) + z, self.qmin, self.qmax)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        q = np.asarray(q, dtype=np.float64)
        s = self._broadcast(self.scale, q.ndim)
        z = self._broadcast(self.zero_point, q.ndim)
        return (q - z) * s

    def fake_quantize(self, x: np.ndarray) -> np.ndarray:
        return self.dequantize(self.quantize(x)).astype(np.asarray(x).dtype, copy=False)

    def copy(self) -> "QuantAnnotation":
        """An equal annotation with its own arrays."""
        return replace(self, scale=self.scale.copy(), zero_point=self.zero_point.copy(),
                       input_scale=None if self.input_scale is None else self.input_scale.copy())

    def to_json(self) -> dict[str, Any]:
        d = {
            "scale": _array_to_json(self.scale),
            "zero_point": _array_to_json(self.zero_point),
            "bits": self.bits,
            "signed": self.signed,
            "axis": self.axis,
            "narrow": self.narrow,
        }
        if self.bipolar:  # only when set: graphs without it are written as before
            d["bipolar"] = True
        if self.input_scale is not None:
            d["input_scale"] = _array_to_json(self.input_scale)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "QuantAnnotation":
        return cls(
            scale=_array_from_json(d["scale"]),
            zero_point=_array_from_json(d["zero_point"]),
            bits=int(d["bits"]),
            signed=bool(d["signed"]),
            axis=d.get("axis"),
            narrow=bool(d.get("narrow", False)),
            bipolar=bool(d.get("bipolar", False)),
            input_scale=_array_from_json(d["input_scale"]) if d.get("input_scale") is not None else None,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, QuantAnnotation):
            return NotImplemented
        return (
            np.array_equal(self.scale, other.scale)
            and np.array_equal(self.zero_point, other.zero_point)
            and (self.bits, self.signed, self.axis, self.narrow, self.bipolar)
            == (other.bits, other.signed, other.axis, other.narrow, other.bipolar)
            and _same_optional(self.input_scale, other.input_scale)
        )


def _same_optional(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return a is None and b is None or a is not None and b is not None and np.array_equal(a, b)


def _array_to_json(a: np.ndarray) -> Any:
    a = np.asarray(a, dtype=np.float64)
    return {"shape": list(a.shape), "data": [float(x) for x in a.ravel()]}


def _array_from_json(d: Any) -> np.ndarray:
    if isinstance(d, dict):
        return np.asarray(d["data"], dtype=np.float64).reshape(d["shape"])
    return np.asarray(d, dtype=np.float64)
