"""The NIR frontend's per-primitive converters (:mod:`hwmap.frontends.nir`): each NIR
primitive (Affine, Linear, Scale, Conv1d/2d, SumPool2d/AvgPool2d, Flatten, the neurons,
Delay, Threshold) as an hwmap :class:`~hwmap.graph.Node`, its parameters checked real, finite
and of a shape that broadcasts to what they act on.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..errors import ModelError
from ..graph import Node
from ..limits import check_size
from ..nonfinite import count_nonfinite, describe_nonfinite

if TYPE_CHECKING:
    from .nir import _Builder as Builder

__all__ = ["CONVERTERS", "NEURON_PARAMS", "NEURON_OPS", "STATEFUL"]

# NIR neuron class -> the parameter fields that become params (nir/ir/neuron.py).
NEURON_PARAMS: dict[str, tuple[str, ...]] = {
    "LIF": ("tau", "r", "v_leak", "v_threshold", "v_reset"),
    "CubaLIF": ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in"),
    "IF": ("r", "v_threshold", "v_reset"),
    "LI": ("tau", "r", "v_leak"),
    "CubaLI": ("tau_syn", "tau_mem", "r", "v_leak", "w_in"),
    "I": ("r",),
}
# hwmap op of each NIR neuron class (:mod:`hwmap.ops.neuron`).
NEURON_OPS: dict[str, str] = {**{k: k for k in NEURON_PARAMS}, "I": "Integrator"}
# NIR classes that evolve in time and so need ``dt``.
STATEFUL = frozenset(NEURON_PARAMS) | {"Delay"}


# -- per-primitive converters -----------------------------------------------------------------

Converter = Callable[["Builder", str, Any, tuple[int, ...]], Node]
CONVERTERS: dict[str, Converter] = {}


def _converter(*kinds: str) -> Callable[[Converter], Converter]:
    def deco(fn: Converter) -> Converter:
        for k in kinds:
            CONVERTERS[k] = fn
        return fn
    return deco


def _f32(b: Builder, key: str, pname: str, a: Any) -> np.ndarray:
    """Parameter ``pname`` of NIR node ``key`` as float32, refused unless it is real and finite."""
    what = f"NIR node {key!r}: parameter {pname!r}"
    if np.iscomplexobj(a):
        raise ModelError(f"{what} holds complex numbers", where=b.where)
    try:
        out = np.array(a, dtype=np.float32)
    except (TypeError, ValueError):
        raise ModelError(f"{what} is not numeric", where=b.where) from None
    nans, infs, first = count_nonfinite(out)
    if nans or infs:
        raise ModelError(f"{what} {list(out.shape)} holds {describe_nonfinite(nans, infs)} (the first at flat index "
                         f"{first}); parameters must be finite", where=b.where)
    return out


@_converter("Affine", "Linear")
def _affine(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    w = _f32(b, key, "weight", n.weight)
    if w.ndim != 2:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight of shape {list(w.shape)} is not a matrix",
                         where=b.where)
    if len(x) != 2 or x[1] != w.shape[1]:
        hint = " (insert a Flatten)" if len(x) != 2 else ""
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} takes {w.shape[1]} features "
                         f"but receives shape {list(x[1:])} per sample{hint}", where=b.where)
    params = {"B": w}
    if type(n).__name__ == "Affine":
        params["C"] = _broadcast(b, key, "bias", n.bias, (w.shape[0],))
    return Node(key, "Gemm", [], [], {"alpha": 1.0, "beta": 1.0, "transA": 0, "transB": 1}, params)


@_converter("Scale")
def _scale(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    return Node(key, "Mul", [], [], {}, {"B": _broadcast(b, key, "scale", n.scale, x[1:])})


@_converter("Conv1d", "Conv2d")
def _conv(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    w = _f32(b, key, "weight", n.weight)
    nd = 1 if type(n).__name__ == "Conv1d" else 2
    if w.ndim != nd + 2 or len(x) != nd + 2:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} and input {list(x[1:])} per "
                         f"sample need {nd} spatial axes", where=b.where)
    groups = int(np.asarray(n.groups).reshape(-1)[0])
    if w.shape[1] * groups != x[1]:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: weight {list(w.shape)} with groups={groups} takes "
                         f"{w.shape[1] * groups} channels, input has {x[1]}", where=b.where)
    declared = getattr(n, "input_shape", None)
    if declared is not None and _ints(declared, nd, "input_shape", b, key) != list(x[2:]):
        raise ModelError(f"NIR {type(n).__name__} {key!r}: declared input_shape {_ints(declared, nd, '', b, key)} "
                         f"but receives spatial shape {list(x[2:])}", where=b.where)
    kernel = list(w.shape[2:])
    strides = _ints(n.stride, nd, "stride", b, key)
    dilations = _ints(n.dilation, nd, "dilation", b, key)
    pads = _pads(b, key, n.padding, nd, kernel, strides, dilations)
    attrs = {"kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations, "group": groups}
    bias = _broadcast(b, key, "bias", n.bias, (w.shape[0],))
    return Node(key, "Conv", [], [], attrs, {"W": w, "B": bias})


@_converter("SumPool2d", "AvgPool2d")
def _pool(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    if len(x) != 4:
        raise ModelError(f"NIR {type(n).__name__} {key!r}: needs (C, H, W) per sample, got {list(x[1:])}",
                         where=b.where)
    kernel = _ints(n.kernel_size, 2, "kernel_size", b, key)
    strides = _ints(n.stride, 2, "stride", b, key)
    pads = _pads(b, key, n.padding, 2, kernel, strides, [1, 1])
    attrs: dict[str, Any] = {"kernel_shape": kernel, "strides": strides, "pads": pads}
    if type(n).__name__ == "AvgPool2d":
        # NIR follows torch.nn.AvgPool2d, whose default counts the zero padding.
        attrs.update(count_include_pad=1, ceil_mode=0)
        return Node(key, "AveragePool", [], [], attrs)
    return Node(key, "SumPool2d", [], [], attrs)


@_converter("Flatten")
def _flatten(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    declared = (n.input_type or {}).get("input")
    declared_rank = None if declared is None else int(np.asarray(declared).size)
    start, end = int(n.start_dim), int(n.end_dim)
    if declared_rank == len(x):  # the exporter's dims count the batch axis
        full = _flattened(b, key, x, start, end)
        if full[0] != x[0]:
            raise ModelError(f"NIR Flatten {key!r}: start_dim={start} would flatten the batch axis", where=b.where)
        out = full
    else:
        if declared is not None and [int(d) for d in np.asarray(declared).reshape(-1)] != list(x[1:]):
            raise ModelError(f"NIR Flatten {key!r}: declared input {list(np.asarray(declared).reshape(-1))} but "
                             f"receives {list(x[1:])} per sample", where=b.where)
        out = (x[0],) + _flattened(b, key, x[1:], start, end)
    return Node(key, "Reshape", [], [], {"allowzero": 0}, {"shape": np.array(out, dtype=np.int64)})


@_converter(*NEURON_PARAMS)
def _neuron(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    kind = type(n).__name__
    params: dict[str, np.ndarray] = {}
    for p in NEURON_PARAMS[kind]:
        v = getattr(n, p, None)
        if v is None and p == "v_reset":
            v = 0.0  # NIR's default reset potential
        if v is None:
            raise ModelError(f"NIR {kind} {key!r} has no parameter {p!r}", where=b.where)
        params[p] = _broadcast(b, key, p, v, x[1:])
    return Node(key, NEURON_OPS[kind], [], [], {}, params)


@_converter("Delay")
def _delay(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    delay = _broadcast(b, key, "delay", n.delay, x[1:])
    if b.dt is not None and delay.size:  # a run keeps the last round(delay / dt) inputs
        longest = float(np.max(delay))
        steps = round(longest / b.dt)
        check_size(steps * math.prod(x) * 4, f"NIR Delay {key!r}: the {steps} time steps of inputs of shape "
                   f"{list(x)} it holds (delay {longest} s at dt {b.dt} s)", where=b.where, error=ModelError)
    return Node(key, "Delay", [], [], {}, {"delay": delay})


@_converter("Threshold")
def _threshold(b: Builder, key: str, n: Any, x: tuple[int, ...]) -> Node:
    return Node(key, "Threshold", [], [], {}, {"threshold": _broadcast(b, key, "threshold", n.threshold, x[1:])})


# -- helpers ----------------------------------------------------------------------------------

def _broadcast(b: Builder, key: str, pname: str, value: Any, shape: tuple[int, ...]) -> np.ndarray:
    """``value`` as float32 of ``shape``: scalars and broadcastable arrays are expanded;
    leading length-1 axes beyond the shape's rank (a kept batch axis) are dropped."""
    a = _f32(b, key, pname, value)
    while a.ndim > len(shape) and a.shape[0] == 1:
        a = a[0]
    check_size(math.prod(shape) * 4, f"NIR node {key!r}: parameter {pname!r} broadcast to shape {list(shape)}",
               where=b.where, error=ModelError)
    try:
        return np.ascontiguousarray(np.broadcast_to(a, shape)).copy()
    except ValueError:
        raise ModelError(f"NIR node {key!r}: parameter {pname!r} of shape {list(np.shape(value))} does not "
                         f"broadcast to the shape {list(shape)} it acts on", where=b.where) from None


def _ints(value: Any, n: int, what: str, b: Builder, key: str) -> list[int]:
    """An int or per-axis sequence as ``n`` Python ints."""
    a = np.asarray(value).reshape(-1)
    if a.size == 1:
        a = np.repeat(a, n)
    if a.size != n:
        raise ModelError(f"NIR node {key!r}: {what} {a.tolist()} does not have {n} entries", where=b.where)
    return [int(v) for v in a]


def _pads(b: Builder, key: str, padding: Any, nd: int, kernel: list[int], strides: list[int],
          dilations: list[int]) -> list[int]:
    """ONNX ``pads`` (all begins, then all ends) from NIR padding: int, per-axis or a string.

    ``"same"`` keeps the size at stride 1 with torch's split (the odd pixel at the end)."""
    if isinstance(padding, np.ndarray) and padding.dtype.kind in "SUO" and padding.size == 1:
        padding = padding.item()  # a string read back from HDF5
    if isinstance(padding, bytes):
        padding = padding.decode()
    if isinstance(padding, str):
        if padding == "valid":
            return [0] * (2 * nd)
        if padding != "same":
            raise ModelError(f"NIR node {key!r}: padding {padding!r} is not 'same', 'valid' or integers",
                             where=b.where)
        if any(s != 1 for s in strides):
            raise ModelError(f"NIR node {key!r}: padding 'same' with strides {strides} is ambiguous; "
                             "give explicit padding", where=b.where)
        total = [d * (k - 1) for k, d in zip(kernel, dilations)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    p = _ints(padding, nd, "padding", b, key)
    if any(v < 0 for v in p):
        raise ModelError(f"NIR node {key!r}: negative padding {p}", where=b.where)
    return p + p


def _flattened(b: Builder, key: str, shape: tuple[int, ...], start: int, end: int) -> tuple[int, ...]:
    """torch.flatten's (and NIR's) rule: axes start..end (inclusive, negatives from the end)."""
    r = len(shape)
    s, e = start % r if -r <= start < r else None, end % r if -r <= end < r else None
    if s is None or e is None or s > e:
        raise ModelError(f"NIR Flatten {key!r}: start_dim={start}, end_dim={end} do not fit shape {list(shape)}",
                         where=b.where)
    return tuple(shape[:s]) + (math.prod(shape[s:e + 1]),) + tuple(shape[e + 1:])
