"""``LIFBitshift``: the integer leaky integrate-and-fire neuron of SynSense's Xylo family, with
bit-shift decay, as its bit-accurate simulator ``xylosim`` (wrapped by Rockpool's ``XyloSim``)
computes it.

Synaptic current ``i`` and membrane ``v`` are integers. Each step, with ``x`` the integer
synaptic input (the weighted input spikes ``W·s``, computed by the Gemm or Conv before it):

    i = sat_syn(i + x)
    i = i - dec(i, dash_syn)
    v = sat_mem(v - dec(v, dash_mem) + i + bias)
    n = min(floor(v / threshold), max_spikes) where v >= threshold, else 0
    v = v - n * threshold

``dec(a, d)`` is the arithmetic shift ``a >> d`` (rounding toward minus infinity), except that
a positive state whose shift is 0 still loses 1: every state decays to 0, never sticks at a
small positive value. ``sat_syn`` and ``sat_mem`` saturate to signed ``syn_bits`` and
``mem_bits`` integers (16 on Xylo). A neuron emits up to ``max_spikes`` spikes per step
(31 for Xylo's hidden neurons, 1 for its readout neurons) and subtracts a threshold for each.
The decay of ``a`` over one step is ``a * (1 - 2**-dash)`` up to rounding, so ``dash`` acts as
``tau = -dt / ln(1 - 2**-dash)`` (Rockpool's ``bitshift_to_tau``).

Two details of the hardware the graph cannot express: Xylo adds the input events one at a
time and saturates after each, in the order it processes them, while this op adds their sum
``x`` and saturates once (the two agree unless a partial sum leaves the ``syn_bits`` range);
and Xylo's hidden neurons have two synaptic currents, this op one. The tests check the op
bit for bit against ``xylosim`` where its input stays in range.

Parameters (``params``, integers, broadcast to the feature shape like the NIR neurons'):
``dash_mem``, ``dash_syn`` (0 to the state's bits - 1), ``threshold`` (at least 1),
``bias`` (default 0). Attributes: ``syn_bits``, ``mem_bits`` (default 16), ``max_spikes``
(default 31). The input must hold whole numbers; outputs are spike counts (float32), states
are int64 at t=0 (no ``dt``: one step is one hardware time step).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from . import OpDef, Shape, register_op
from ._operands import as_f32, bind, fail, shape_of
from .neuron import feature_param

__all__ = ["BITSHIFT_DEFAULTS", "bitshift_decay"]

#: Attribute defaults: Xylo's 16-bit states and its hidden neurons' 31 spikes per step.
BITSHIFT_DEFAULTS: dict[str, int] = {"syn_bits": 16, "mem_bits": 16, "max_spikes": 31}
_MAX_BITS = 62  # states live in int64 with room for one addition


def bitshift_decay(a: np.ndarray, dash: np.ndarray) -> np.ndarray:
    """``a - dec(a, dash)``: one step of bit-shift decay, a positive value losing at least 1."""
    k = a >> dash
    return a - np.where((a > 0) & (k == 0), 1, k)


def _int_attr(node: Any, name: str, lo: int, hi: int) -> int:
    v = node.attrs.get(name, BITSHIFT_DEFAULTS[name])
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise fail(node, f"attribute {name!r} = {v!r}: must be an integer from {lo} to {hi}")
    return v


def _int_param(node: Any, name: str, features: Shape, lo: int, hi: int, default: float | None = None) -> np.ndarray:
    a = feature_param(node, name, features, default)
    bad = (a != np.round(a)) | (a < lo) | (a > hi)
    if np.any(bad):
        raise fail(node, f"parameter {name!r} holds {float(a[bad].flat[0])!r}: must be whole numbers from {lo} to {hi}")
    return a.astype(np.int64)


def _settings(node: Any, features: Shape) -> dict[str, Any]:
    syn_bits = _int_attr(node, "syn_bits", 2, _MAX_BITS)
    mem_bits = _int_attr(node, "mem_bits", 2, _MAX_BITS)
    mem_hi = 2 ** (mem_bits - 1) - 1
    return {
        "syn": (-(2 ** (syn_bits - 1)), 2 ** (syn_bits - 1) - 1),
        "mem": (-(2 ** (mem_bits - 1)), mem_hi),
        "max_spikes": _int_attr(node, "max_spikes", 1, 2**31 - 1),
        "dash_syn": _int_param(node, "dash_syn", features, 0, syn_bits - 1),
        "dash_mem": _int_param(node, "dash_mem", features, 0, mem_bits - 1),
        "threshold": _int_param(node, "threshold", features, 1, mem_hi),
        "bias": _int_param(node, "bias", features, -mem_hi - 1, mem_hi, 0.0),
    }


def _infer(node: Any, shapes: Sequence[Shape]) -> list[Shape]:
    x = shape_of(bind(node, shapes, ("input",))["input"])
    if len(x) < 1:
        raise fail(node, "input must be batch first")
    _settings(node, x[1:])
    return [x]


def _step(node: Any, inputs: Sequence[np.ndarray], state: Any) -> tuple[list[np.ndarray], Any]:
    x = np.asarray(bind(node, inputs, ("input",))["input"])
    if state is None:
        state = {"shape": x.shape, **_settings(node, x.shape[1:]), "i": np.zeros(x.shape, np.int64),
                 "v": np.zeros(x.shape, np.int64)}
    elif state["shape"] != x.shape:
        raise fail(node, f"input shape {list(x.shape)} changed between steps (was {list(state['shape'])})")
    s = state
    xi = np.rint(x.astype(np.float64))
    if not np.array_equal(xi, x) or np.any(np.abs(xi) > 2.0**_MAX_BITS):
        raise fail(node, "takes integer synaptic input (integer weights times spike counts); got "
                         f"{float(x.flat[int(np.argmax(xi != x))])!r}")
    i = np.clip(s["i"] + xi.astype(np.int64), *s["syn"])
    i = bitshift_decay(i, s["dash_syn"])
    v = np.clip(bitshift_decay(s["v"], s["dash_mem"]) + i + s["bias"], *s["mem"])
    n = np.where(v >= s["threshold"], np.minimum(v // s["threshold"], s["max_spikes"]), 0)
    v = v - n * s["threshold"]
    return [as_f32(n.astype(np.float64))], {**s, "i": i, "v": v}


register_op(OpDef("LIFBitshift", ("input",), _infer, step=_step, category="neuron",
                  doc="Xylo-family integer LIF: bit-shift decay, 16-bit saturating states, up to max_spikes "
                      "spikes per step, reset by subtraction."))
