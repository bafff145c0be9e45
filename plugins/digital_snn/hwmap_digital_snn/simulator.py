"""The bit-accurate simulator: the device's integer arithmetic on the program read back from
the bitstream, vectorized over a batch of inputs, every input starting from the reset state.

One device step, for every sample of the batch (the order Rockpool's XyloSim computes it):

1. input events ``c`` (per channel, at most ``input_events`` per step) and the hidden spike
   counts ``s`` of the step before give each hidden synapse ``x = (c·W_in << shift_in) +
   (s·W_rec << shift_rec)``, and each output neuron ``x = s·W_out << shift_out``;
2. per synapse ``i = sat(i + x)``, then ``i = i - dec(i, d_syn)``;
3. ``v = sat(v - dec(v, d_mem) + sum(i) + bias)``;
4. ``n = min(floor(v / threshold), max_spikes)`` where ``v >= threshold`` (else 0), then
   ``v = v - n * threshold``;
5. neuron aliasing (Xylo's; Rockpool's ``aliases``): with alias pairs ``(source, target)``
   a source's spikes also count as its target's in the same step, as XyloSim counts them
   (:func:`hwmap.ops.bitshift.alias_spikes`: in neuron order, a target of higher index than
   its source emits its own spikes only up to ``max_spikes`` minus what it received, and
   subtracts the thresholds of those alone; targets of lower index or the source itself then
   add the counts of that pass; every count stops at ``max_spikes``). The
   counts after this step are the hidden spikes the step emits: recorded, and delivered
   through ``W_rec`` and ``W_out`` the step after.

``sat`` saturates to signed ``state_bits`` integers. ``dec(a, d)`` is ``a >> d`` (rounding
toward minus infinity) for the bit-shift decay, except that a positive state whose shift is 0
still loses 1 (Xylo's rule, :mod:`hwmap.ops.bitshift`); for the multiplicative decay it is
``sign(a) * ((|a| * m) >> decay_bits)``. The weighted input of a step is added as one sum and
saturated once (Xylo adds the events one at a time and saturates after each: the two differ
only when a partial sum leaves the state range).

All values are whole numbers held in float64 (exact below 2**53; the matrix products in
float32 when every partial sum stays below 2**24), so numpy's BLAS does the weighted sums;
when few sources fire in a step, the rows of those that fired are gathered and summed
instead (the same sums, exactly: integers in floating point add without rounding).

Two implementations of that step: the numpy one below (vectorized over the batch; the
reference) and a compiled numba kernel (:mod:`.kernel`, event-driven per sample, the same
integer arithmetic; the default when numba imports, else the numpy path, named in the
activity's ``kernel``). The tests check that both give identical spikes.

Encoded graphs: the host turns each static sample into input events for ``timesteps`` steps
(direct: ``round(x * input_scale)`` events clipped to the device's range; rate and Poisson:
the graph's own encoder, :mod:`hwmap.ops.time`, one event per spike), runs ``timesteps +
lag`` steps (no input after the first ``timesteps``) and reads out: the mean or sum of the
output spikes of the last ``timesteps`` steps, or the integrator's synaptic current after
the last step, times the output scale plus the offset. Native SNNs take event counts
``(N, T, n_in)`` and give the output spikes of every step, ``(N, T, n_out)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from hwmap import Artifacts, DataError, Node, Simulation, Target, TargetError
from hwmap.ops.bitshift import alias_spikes

from .program import Program, read_program

__all__ = ["simulate", "run_program", "Activity", "BITSTREAM", "SLICE", "default_kernel"]

BITSTREAM = "program.bin"
#: Samples simulated at once.
SLICE = 64
#: Below this fraction of sources firing in a step, the weighted sums gather the rows of the
#: sources that fired instead of multiplying the whole matrix (measured: 4x faster at 5 %
#: activity on a 500 × 492 block, slower above about 10 %).
SPARSE_FRACTION = 0.07


@dataclass
class Activity:
    """What one batch did: output spikes per step, the output synaptic current after the
    last step, and for each input channel and neuron the steps it fired in (over the batch)
    and its spikes."""

    out_spikes: np.ndarray
    out_isyn: np.ndarray
    input_active: np.ndarray
    input_events: np.ndarray
    hidden_active: np.ndarray
    hidden_spikes: np.ndarray
    output_spikes: np.ndarray
    #: Per alias pair, the steps (over the batch) its source's count was non-zero after aliasing.
    alias_active: np.ndarray = field(default_factory=lambda: np.zeros(0))


class _Matrix:
    """A weight matrix restricted to its non-zero rows and columns, multiplied in float32
    when that is exact (every partial sum below 2**24), else float64."""

    def __init__(self, w: np.ndarray, shift: int, max_count: int) -> None:
        w2 = np.asarray(w, np.float64).reshape(w.shape[0], -1) * float(2**shift)
        self.rows = np.flatnonzero(np.any(w2 != 0, axis=1))
        self.cols = np.flatnonzero(np.any(w2 != 0, axis=0))
        sub = w2[np.ix_(self.rows, self.cols)]
        bound = float(np.abs(sub).sum(axis=0).max(initial=0)) * max_count
        self.dtype = np.float32 if bound < 2**24 else np.float64
        self.w = np.ascontiguousarray(sub, dtype=self.dtype)
        self.full = self.rows.size == w2.shape[0]
        self.out_size = w2.shape[1]
        self.empty = self.rows.size == 0 or self.cols.size == 0

    def apply(self, x: np.ndarray, out: np.ndarray) -> None:
        """``out += x @ W`` on the stored rows and columns (out is float64, batch × columns)."""
        if self.empty:
            return
        xs = x if self.full else x[:, self.rows]
        b, j = np.nonzero(xs)
        if len(b) < SPARSE_FRACTION * xs.size:
            # event-driven: only the rows of the sources that fired, summed per sample
            if not len(b):
                return
            contrib = np.multiply(self.w[j], xs[b, j].astype(self.dtype)[:, None])
            starts = np.flatnonzero(np.r_[True, b[1:] != b[:-1]])
            prod = np.zeros((xs.shape[0], self.w.shape[1]), self.dtype)
            prod[b[starts]] = np.add.reduceat(contrib, starts, axis=0)
        else:
            prod = np.matmul(xs.astype(self.dtype, copy=False), self.w)
        if self.cols.size == self.out_size:
            out += prod
        else:
            out[:, self.cols] += prod


def _decay(a: np.ndarray, d: np.ndarray, multiplicative: bool, bits: int, pow2: np.ndarray) -> np.ndarray:
    """``a - dec(a, d)`` (module docstring); ``pow2`` is ``2.0 ** -d`` (bit shift) or
    ``d / 2**bits`` (multiplicative), precomputed."""
    if multiplicative:
        return a - np.sign(a) * np.floor(np.abs(a) * pow2)
    k = np.floor(a * pow2)
    return a - np.where((a > 0) & (k == 0), 1.0, k)


def default_kernel() -> str:
    """``"numba"`` when the compiled kernel is available, else ``"numpy"``."""
    from .kernel import AVAILABLE

    return "numba" if AVAILABLE else "numpy"


def run_program(p: Program, events: Callable[[int], np.ndarray] | np.ndarray, steps: int, batch: int,
                kernel: str | None = None) -> Activity:
    """Run ``steps`` device steps on ``batch`` samples from the reset state. ``events`` is
    ``(batch, steps, n_in)`` event counts, or a function of the step giving ``(batch, n_in)``.
    ``kernel``: ``"numpy"`` (the reference), ``"numba"`` (compiled), or ``None`` for
    :func:`default_kernel`."""
    kernel = kernel or default_kernel()
    if kernel == "numba":
        from .kernel import run_kernel

        ev = np.stack([np.asarray(events(t), np.float64) for t in range(steps)], axis=1) if callable(events) \
            else np.asarray(events)[:, :steps]
        return Activity(**run_kernel(p, np.rint(ev).astype(np.int64).reshape(batch, steps, p.n_in)))
    if kernel != "numpy":
        raise ValueError(f"kernel {kernel!r}: numpy or numba")
    lo, hi = -float(2 ** (p.state_bits - 1)), float(2 ** (p.state_bits - 1) - 1)
    mult = p.decay == "multiplicative"

    def pw(d: np.ndarray) -> np.ndarray:
        d = np.asarray(d, np.float64)
        return d / 2**p.decay_bits if mult else 2.0 ** -d

    n_hid, n_out, n_syn = p.n_hid, p.n_out, p.n_syn
    m_in = _Matrix(p.w_in, p.shift_in, p.input_events)
    m_rec = _Matrix(p.w_rec, p.shift_rec, p.hidden_spikes)
    m_out = _Matrix(p.w_out, p.shift_out, p.hidden_spikes)
    hd_syn, hd_mem, od_syn, od_mem = pw(p.hid_dsyn.reshape(1, n_hid * n_syn)), pw(p.hid_dmem), pw(p.out_dsyn), \
        pw(p.out_dmem)
    h_thr, h_bias = p.hid_threshold.astype(np.float64), p.hid_bias.astype(np.float64)
    o_thr, o_bias = p.out_threshold.astype(np.float64), p.out_bias.astype(np.float64)
    h_max, o_max = float(p.hidden_spikes), float(p.output_spikes)
    i_h = np.zeros((batch, n_hid * n_syn))
    v_h = np.zeros((batch, n_hid))
    i_o = np.zeros((batch, n_out))
    v_o = np.zeros((batch, n_out))
    s = np.zeros((batch, n_hid))
    out_spikes = np.zeros((batch, steps, n_out), np.float32)
    in_active = np.zeros(p.n_in)
    in_events = np.zeros(p.n_in)
    h_active = np.zeros(n_hid)
    h_spikes = np.zeros(n_hid)
    o_spikes = np.zeros(n_out)
    x_h = np.empty((batch, n_hid * n_syn))
    x_o = np.empty((batch, n_out))
    a_src = np.asarray(p.aliases, np.int64).reshape(-1, 2)[:, 0]
    a_active = np.zeros(len(a_src))
    for t in range(steps):
        c = np.asarray(events(t) if callable(events) else events[:, t], np.float64)
        in_active += np.count_nonzero(c, axis=0)
        in_events += c.sum(axis=0)
        x_h.fill(0.0)
        m_in.apply(c, x_h)
        m_rec.apply(s, x_h)
        x_o.fill(0.0)
        m_out.apply(s, x_o)
        # hidden neurons
        np.clip(i_h + x_h, lo, hi, out=i_h)
        i_h = _decay(i_h, p.hid_dsyn, mult, p.decay_bits, hd_syn)
        isum = i_h if n_syn == 1 else i_h.reshape(batch, n_hid, n_syn).sum(axis=2)
        v_h = np.clip(_decay(v_h, p.hid_dmem, mult, p.decay_bits, hd_mem) + isum + h_bias, lo, hi)
        if len(a_src):
            s, emitted = alias_spikes(np.where(v_h >= h_thr, np.floor(v_h / h_thr), 0.0), p.aliases, h_max)
            v_h -= emitted * h_thr
            a_active += np.count_nonzero(s[:, a_src], axis=0)
        else:
            s = np.where(v_h >= h_thr, np.minimum(np.floor(v_h / h_thr), h_max), 0.0)
            v_h -= s * h_thr
        # output neurons
        i_o = _decay(np.clip(i_o + x_o, lo, hi), p.out_dsyn, mult, p.decay_bits, od_syn)
        v_o = np.clip(_decay(v_o, p.out_dmem, mult, p.decay_bits, od_mem) + i_o + o_bias, lo, hi)
        o = np.where(v_o >= o_thr, np.minimum(np.floor(v_o / o_thr), o_max), 0.0)
        v_o -= o * o_thr
        out_spikes[:, t] = o
        h_active += np.count_nonzero(s, axis=0)
        h_spikes += s.sum(axis=0)
        o_spikes += o.sum(axis=0)
    return Activity(out_spikes, i_o, in_active, in_events, h_active, h_spikes, o_spikes, a_active)


def load(artifacts: Artifacts) -> Program:
    """The program of the artifacts' bitstream (read through ``artifacts`` only)."""
    return read_program(artifacts.read_bytes(BITSTREAM), str(artifacts.path(BITSTREAM)))


def _encoder(p: Program, x: np.ndarray) -> Callable[[int], np.ndarray]:
    """Input events per step of the static samples ``x`` (module docstring)."""
    batch = x.shape[0]
    flat = x.reshape(batch, -1).astype(np.float64)
    if flat.shape[1] != p.n_in:
        raise DataError(f"samples of {flat.shape[1]} features; the program takes {p.n_in} input channels")
    zero = np.zeros((batch, p.n_in))
    if p.encoding == "direct":
        ev = np.clip(np.rint(flat * p.input_scale), 0, p.input_events)
        return lambda t: ev if t < p.timesteps else zero
    from hwmap.ops import get_op

    node = Node("device_input", "Encoder", ["x"], ["frames"],
                {"encoding": p.encoding, "timesteps": p.timesteps, **({"seed": p.seed} if p.encoding == "poisson"
                                                                      else {})}, {})
    step = get_op("Encoder").step
    assert step is not None
    state: list[Any] = [None]
    xs = x.astype(np.float32)

    def frame(t: int) -> np.ndarray:
        if t >= p.timesteps:
            return zero
        (y,), state[0] = step(node, [xs], state[0])
        return np.clip(np.asarray(y, np.float64).reshape(batch, -1), 0, p.input_events)
    return frame


def simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    """Run the bitstream on ``inputs`` (the graph's one input), in slices of :data:`SLICE`."""
    p = load(artifacts)
    names = artifacts.manifest.get("outputs") if isinstance(artifacts.manifest, dict) else None
    if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
        raise TargetError("artifacts.json names no output of the program", where=str(artifacts.directory))
    if len(inputs) != 1:
        raise DataError(f"the device takes one input; got {len(inputs)}")
    x = np.asarray(next(iter(inputs.values())))
    n = int(x.shape[0])
    outs = []
    totals: dict[str, Any] = {}
    for a in range(0, n, SLICE):
        xb = x[a:a + SLICE]
        out, act = _run_slice(p, xb)
        outs.append(out)
        for k, v in (("input_active", act.input_active), ("input_events", act.input_events),
                     ("hidden_active", act.hidden_active), ("hidden_spikes", act.hidden_spikes),
                     ("output_spikes", act.output_spikes), ("alias_active", act.alias_active)):
            totals[k] = totals.get(k, 0) + v
        target.report_progress(min(a + SLICE, n), n)
    output = np.concatenate(outs) if outs else np.zeros((0,), np.float32)
    steps = (p.timesteps + p.lag) if p.encoding != "events" else (int(x.shape[1]) if x.ndim > 1 else 0)
    from .kernel import REASON

    kernel = default_kernel()
    activity = {"samples": n, "steps": steps, "kernel": kernel + (f" ({REASON})" if REASON else ""),
                **{k: [float(u) for u in np.asarray(v).ravel()]
                                                 for k, v in sorted(totals.items())}}
    return Simulation({names[0]: output}, activity)


def _run_slice(p: Program, x: np.ndarray) -> tuple[np.ndarray, Activity]:
    batch = x.shape[0]
    if p.encoding == "events":
        if x.ndim != 3 or x.shape[2] != p.n_in:
            raise DataError(f"input of shape {list(x.shape)}: the device takes event counts (batch, time steps, "
                            f"{p.n_in} channels)")
        xi = np.asarray(x, np.float64)
        if not np.array_equal(xi, np.rint(xi)) or xi.min(initial=0) < 0 or xi.max(initial=0) > p.input_events:
            raise DataError(f"input holds values that are not event counts from 0 to {p.input_events} per channel "
                            "and step")
        act = run_program(p, xi, x.shape[1], batch)
        return act.out_spikes, act
    steps = p.timesteps + p.lag
    act = run_program(p, _encoder(p, x), steps, batch)
    if p.readout == "integrator":
        raw = act.out_isyn
    else:
        raw = act.out_spikes[:, p.lag:p.lag + p.timesteps].astype(np.float64).sum(axis=1)
    out = raw * p.out_scale + p.out_offset
    return out.astype(np.float32), act
