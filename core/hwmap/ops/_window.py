"""Sliding windows over the spatial axes, shared by convolution and pooling.

Output size per spatial axis (ONNX Conv/MaxPool/AveragePool operator docs)::

    out = floor((in + pad_begin + pad_end - ((k - 1) * d + 1)) / s) + 1        (ceil_mode 0)
    out = ceil(...) + 1, minus one if the last window would start in the end padding (ceil_mode 1)

``auto_pad`` SAME_UPPER / SAME_LOWER / VALID are resolved here too, so a hand-built node
works even when no frontend filled ``pads`` in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._operands import fail, ints

__all__ = ["Window", "window", "sliding", "axis_counts"]


@dataclass(frozen=True)
class Window:
    """Resolved geometry of a windowed op over ``len(kernel)`` spatial axes."""

    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]
    # extra end padding a ceil_mode window needs beyond pads_end (never counted as padding)
    extra_end: tuple[int, ...]

    @property
    def dilated(self) -> tuple[int, ...]:
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel, self.dilations))


def window(node: Any, in_spatial: Sequence[int], kernel: Sequence[int], *, ceil_mode: bool = False) -> Window:
    """Resolve strides, dilations, pads (explicit or ``auto_pad``) and the output size."""
    n = len(in_spatial)
    kernel = tuple(int(k) for k in kernel)
    if len(kernel) != n:
        raise fail(node, f"kernel {list(kernel)} has {len(kernel)} axes but the input has {n} spatial axes")
    strides = tuple(ints(node.attrs.get("strides") or [1] * n))
    dilations = tuple(ints(node.attrs.get("dilations") or [1] * n))
    if len(strides) != n or len(dilations) != n:
        raise fail(node, f"strides {list(strides)} / dilations {list(dilations)} do not have {n} entries")
    if min(kernel + strides + dilations, default=1) < 1:
        raise fail(node, f"kernel {list(kernel)}, strides {list(strides)} and dilations {list(dilations)} "
                         "must be positive")
    dk = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    auto = str(node.attrs.get("auto_pad", "NOTSET") or "NOTSET")
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for size, s, k in zip(in_spatial, strides, dk):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            small = total // 2
            begin.append(small if auto == "SAME_UPPER" else total - small)
            end.append(total - begin[-1])
    elif auto in ("NOTSET", "VALID"):
        pads = ints(node.attrs.get("pads") or [0] * (2 * n)) if auto == "NOTSET" else [0] * (2 * n)
        if len(pads) != 2 * n:
            raise fail(node, f"pads {pads} must have {2 * n} entries (all begins, then all ends)")
        begin, end = pads[:n], pads[n:]
    else:
        raise fail(node, f"auto_pad {auto!r} is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID")
    if min(begin + end, default=0) < 0:
        raise fail(node, f"negative pads {begin + end} are not supported")
    out, extra = [], []
    for size, s, k, b, e in zip(in_spatial, strides, dk, begin, end):
        span = size + b + e - k
        if span < 0:
            raise fail(node, f"window {k} is larger than the padded input {size + b + e}")
        if ceil_mode:
            o = -(-span // s) + 1
            # the last window must start inside the input or the begin padding (ONNX, PyTorch)
            if (o - 1) * s >= size + b:
                o -= 1
        else:
            o = span // s + 1
        out.append(o)
        extra.append(max(0, (o - 1) * s + k - (size + b + e)))
    return Window(kernel, strides, dilations, tuple(begin), tuple(end), tuple(out), tuple(extra))


def sliding(x: np.ndarray, w: Window, fill: float) -> np.ndarray:
    """A read-only view of shape ``(N, C, *w.out, *w.kernel)``: the window of each output."""
    n = len(w.kernel)
    widths = [(0, 0)] * (x.ndim - n) + [(b, e + x_) for b, e, x_ in zip(w.pads_begin, w.pads_end, w.extra_end)]
    if any(b or e for b, e in widths):
        x = np.pad(x, widths, mode="constant", constant_values=fill)
    axes = tuple(range(x.ndim - n, x.ndim))
    v = sliding_window_view(x, w.dilated, axis=axes)
    index = tuple([slice(None)] * (x.ndim - n)
                  + [slice(0, (o - 1) * s + 1, s) for o, s in zip(w.out, w.strides)]
                  + [slice(None, None, d) for d in w.dilations])
    return v[index]


def axis_counts(size: int, w: Window, axis: int, include_pad: bool) -> np.ndarray:
    """How many positions of each window along ``axis`` count for an average.

    With ``include_pad`` the explicit padding counts, the ceil_mode overhang does not
    (onnxruntime and PyTorch); without it only the input positions count.
    """
    b, e = w.pads_begin[axis], w.pads_end[axis]
    lo, hi = (-b, size + e) if include_pad else (0, size)
    starts = np.arange(w.out[axis]) * w.strides[axis] - b
    taps = starts[:, None] + np.arange(w.kernel[axis])[None, :] * w.dilations[axis]
    return ((taps >= lo) & (taps < hi)).sum(axis=1)
