"""Compiled (numba) loops of the simulator's step: the input current, the neuron updates and
the synapse filters, element by element with the floating-point operations of the numpy code
they replace (:mod:`.neurons`, :mod:`.synapses`, :mod:`.simulator`), in the same order.

Bit-identical by construction, not by tolerance:

* no ``fastmath``: LLVM then neither reassociates nor contracts ``a*b + c`` into a fused
  multiply-add, so every ``+``, ``-``, ``*``, ``/`` rounds as numpy's element-wise loop does;
* ``np.maximum(a, b)`` / ``np.minimum(a, b)`` keep numpy's rules: NaN from either operand,
  otherwise the second operand on ties (``maximum(-0.0, 0.0)`` is ``+0.0``): :func:`_max`,
  :func:`_min`;
* the transcendental functions (``expm1``, ``log1p``, ``exp``, ``tanh``) are *not* computed
  here: numpy evaluates them with its own SIMD code (SVML on AVX-512 machines), which differs
  from the C library numba calls in the last bit for 0.7 % (``expm1``) to 28 % (``tanh``) of
  arguments (measured on this machine, 2 million uniform arguments each). The kernels gather
  the arguments that need one, numpy evaluates them on the gathered array (an element-wise
  function: the same bits whatever the array), and the next kernel goes on with the results
  (the ``*_a`` / ``*_b`` / ``*_c`` phases).

Arrays are flat (``batch × neurons``, C order); ``f = b·n + i`` is sample ``b``'s neuron ``i``.
The input current of neuron ``i`` (:func:`current`, a pass of its own: the loops after it
read ``J``) is ``mode`` 0: ``bias``; 1: the
population's 1-D decoded input ``x[b]`` times its scaled encoder, plus ``bias`` (numpy's
``x @ encT`` with an inner dimension of 1 is one product, accumulated onto 0.0); 2: ``x``
already projected on the encoders (numpy's matrix product, for more dimensions), plus
``bias``; then, with ``has_n``, plus ``gain · neurons`` (a connection into the neurons).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

__all__ = ["lif_a", "lif_b", "lif_c", "current", "spiking_relu", "relu_rate", "regular", "lifrate_a", "lifrate_b",
           "lowpass"]

# no fastmath (see above); x/0 as numpy (inf or NaN, no exception); compiled code cached on disk
_jit: Any = njit(cache=True, nogil=True, error_model="numpy")  # Any: numba's stubs do not type the decorated loops


@njit(inline="always")
def _max(a: float, b: float) -> float:
    """``np.maximum(a, b)``: NaN from either, else the larger, the second on ties."""
    if a != a or a > b:
        return a
    return b


@njit(inline="always")
def _min(a: float, b: float) -> float:
    """``np.minimum(a, b)``: NaN from either, else the smaller, the second on ties."""
    if a != a or a < b:
        return a
    return b


@_jit
def current(n: int, mode: int, x: np.ndarray, e: np.ndarray, bias: np.ndarray, has_n: int, gain: np.ndarray,
            nin: np.ndarray, J: np.ndarray) -> None:
    """The input current of every neuron into ``J`` (the first pass of every step)."""
    for b in range(J.size // n):  # one loop per case, each simple enough for LLVM to vectorize
        o = b * n
        if mode == 1:
            xb = x[b]
            for i in range(n):
                J[o + i] = (0.0 + xb * e[i]) + bias[i]
        elif mode == 2:
            for i in range(n):
                J[o + i] = x[o + i] + bias[i]
        else:
            for i in range(n):
                J[o + i] = bias[i]
        if has_n:
            for i in range(n):
                J[o + i] = J[o + i] + gain[i] * nin[o + i]


@njit(inline="always")
def _lif_end(v: float, j: float, min_v: float) -> tuple[bool, float, float]:
    """After the membrane update: spiked (``v > 1``), the new voltage (0 after a spike, else
    clipped at ``min_voltage``) and the argument of the spike-time ``log1p``. Scalars only: a
    call passing arrays would count references on every neuron (numba's reference counting),
which made the loop 50 times slower."""
    if v > 1.0:
        return True, 0.0, -(v - 1.0) / (j - 1.0)
    return False, _max(v, min_v), 0.0


@_jit
def lif_a(n: int, mode: int, x: np.ndarray, e: np.ndarray, bias: np.ndarray, has_n: int, gain: np.ndarray,
          nin: np.ndarray, J: np.ndarray, voltage: np.ndarray, rt: np.ndarray, out: np.ndarray, dt: float,
          tau_rc: float, amp_dt: float, min_v: float, c_dt: float, c_0: float, mask: np.ndarray,
          part_idx: np.ndarray, part_arg: np.ndarray, spk_idx: np.ndarray, spk_arg: np.ndarray) -> tuple[int, int]:
    """LIF (``LIF._step_flat``), first phase: the current ``J`` (:func:`current`, the first
    eight arguments); ``refractory_time -= dt``; the membrane ``v -= (J - v)·expm1(-delta_t/
    tau_rc)`` with ``delta_t = clip(dt - rt, 0, dt)`` where the factor is one of the constants
    ``c_dt`` (``delta_t = dt``, which covers ``rt <= 0``) and ``c_0`` (``delta_t = 0``,
    refractory all step); the others (refractory during part of the step, or NaN) keep their
    voltage and have ``-delta_t/tau_rc`` gathered into ``part_arg``; spikes detected, their
    ``log1p`` arguments gathered into ``spk_arg``. How many of each.

    Two passes: the first without branches or scattered stores (LLVM vectorizes it; spiking and
    refractory neurons are scattered at random, and a loop branching on them ran at a tenth
    of the speed), writing the new state (a spiking neuron keeps its new voltage until the
    second pass) and a ``mask`` (1: spiked, 2: partly refractory); the second gathers the
    indices, writing every iteration and advancing the counts by the mask, then the arguments
    of the gathered neurons (``delta_t`` again from ``refractory_time``; no array of every
    neuron's arguments: the step's memory traffic counts)."""
    current(n, mode, x, e, bias, has_n, gain, nin, J)
    for f in range(J.size):
        r = rt[f] - dt
        rt[f] = r
        # clip(dt - r, 0, dt) is dt where r <= 0 and 0 where r >= dt; the others (and NaN) are
        # gathered, even where dt - r rounds to dt (numpy's expm1 gives c_dt for them as well)
        full = r <= 0.0
        part = not full and not r >= dt
        j, v = J[f], voltage[f]
        vn = v - (j - v) * (c_dt if full else c_0)
        spiked = vn > 1.0 and not part
        out[f] = amp_dt if spiked else 0.0
        voltage[f] = v if part else vn if spiked else _max(vn, min_v)
        mask[f] = np.uint8(spiked) | (np.uint8(part) << np.uint8(1))
    npart = 0
    ns = 0
    for f in range(J.size):
        m = mask[f]
        part_idx[npart] = f
        npart += m >> 1
        spk_idx[ns] = f
        ns += m & 1
    for k in range(npart):
        part_arg[k] = -_min(_max(dt - rt[part_idx[k]], 0.0), dt) / tau_rc
    for k in range(ns):
        f = spk_idx[k]
        spk_arg[k] = -(voltage[f] - 1.0) / (J[f] - 1.0)
        voltage[f] = 0.0
    return npart, ns


@_jit
def lif_b(npart: int, part_idx: np.ndarray, factor: np.ndarray, J: np.ndarray, voltage: np.ndarray,
          out: np.ndarray, amp_dt: float, min_v: float, spk_idx: np.ndarray, spk_arg: np.ndarray, ns: int) -> int:
    """LIF, second phase: the membrane of the neurons refractory during part of the step, with
    their ``expm1`` (``factor``, by numpy); the number of spikes."""
    for k in range(npart):
        f = part_idx[k]
        j, v = J[f], voltage[f]
        spiked, voltage[f], arg = _lif_end(v - (j - v) * factor[k], j, min_v)
        out[f] = amp_dt if spiked else 0.0
        if spiked:
            spk_idx[ns], spk_arg[ns] = f, arg
            ns += 1
    return ns


@_jit
def lif_c(ns: int, spk_idx: np.ndarray, log1p: np.ndarray, rt: np.ndarray, dt: float, tau_rc: float,
          tau_ref: float) -> None:
    """LIF, last phase: the refractory period of the neurons that spiked, lengthened by the
    time left in the step after the threshold crossing (``log1p`` by numpy)."""
    for k in range(ns):
        rt[spk_idx[k]] = tau_ref + (dt + tau_rc * log1p[k])


@_jit
def spiking_relu(J: np.ndarray, voltage: np.ndarray, out: np.ndarray, dt: float, amp_dt: float) -> None:
    """SpikingRectifiedLinear: ``v += max(J, 0)·dt``; ``floor(v)`` spikes of ``amp_dt``; ``v -= floor(v)``."""
    for f in range(J.size):
        v = voltage[f] + _max(J[f], 0.0) * dt
        n_spikes = np.floor(v)
        out[f] = amp_dt * n_spikes
        voltage[f] = v - n_spikes


@_jit
def regular(rate: np.ndarray, voltage: np.ndarray, out: np.ndarray, dt: float, amp_dt: float) -> None:
    """RegularSpiking around any rate: ``v += dt·rate``; ``floor(v)`` spikes; ``v -= floor(v)``."""
    for f in range(rate.size):
        v = voltage[f] + dt * rate[f]
        n_spikes = np.floor(v)
        out[f] = amp_dt * n_spikes
        voltage[f] = v - n_spikes


@_jit
def relu_rate(J: np.ndarray, out: np.ndarray, amplitude: float) -> None:
    """RectifiedLinear: ``amplitude · max(0, J)``."""
    for f in range(J.size):
        out[f] = amplitude * _max(0.0, J[f])


@_jit
def lifrate_a(J: np.ndarray, rate: np.ndarray, pos_idx: np.ndarray, pos_arg: np.ndarray) -> int:
    """LIFRate, first phase: ``j = J - 1``; the rate 0 where ``j <= 0`` (or NaN), ``1/j``
    gathered for the others (their ``log1p`` by numpy); how many."""
    npos = 0
    for f in range(J.size):
        j = J[f] - 1.0
        rate[f] = 0.0
        if j > 0.0:
            pos_idx[npos] = f
            pos_arg[npos] = 1.0 / j
            npos += 1
    return npos


@_jit
def lifrate_b(npos: int, pos_idx: np.ndarray, log1p: np.ndarray, rate: np.ndarray, amplitude: float,
              tau_ref: float, tau_rc: float) -> None:
    """LIFRate, second phase: ``amplitude / (tau_ref + tau_rc·log1p(1/j))``."""
    for k in range(npos):
        rate[pos_idx[k]] = amplitude / (tau_ref + tau_rc * log1p[k])


@_jit
def lowpass(X: np.ndarray, u: np.ndarray, a: float, b: float) -> None:
    """A first-order filter without feed-through (``FilterStep`` ``onex``): ``X = a·X``, then
    ``X += b·u``."""
    for f in range(X.size):
        X[f] = X[f] * a + b * u[f]
