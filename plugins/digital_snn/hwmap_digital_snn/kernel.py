"""The simulator's time loop compiled with numba: the same device step as the numpy path of
:mod:`.simulator` (which stays the reference), in int64 arithmetic, event-driven.

Each sample runs on its own (samples are independent; numba's ``prange`` spreads them over
the cores). Per step: every input channel with events adds ``count × row`` of ``W_in``, every
hidden neuron that spiked the step before adds ``count × row`` of ``W_rec`` and ``W_out``
(each row stored already shifted, as the span from its first to its last non-zero column
when at least a quarter of that span is non-zero, a loop the compiler vectorizes, else as
its non-zero entries alone: :func:`rows`; the sums in int32 when no sum of a step can
leave its range, else int64); then each synapse is
saturated once and decayed, the membrane decayed, summed, saturated, and spikes taken, in
the order of the module docstring of :mod:`.simulator`, neuron by neuron in index order,
each neuron handing its count to its forward alias targets, then the backward ones adding
theirs, as XyloSim does
(:func:`hwmap.ops.bitshift.alias_spikes`, which the numpy path calls). The tests check both paths spike
for spike on random networks, saturation and several spikes per step included.

:data:`AVAILABLE` says whether numba imported; without it (or with ``HWMAP_DSNN_KERNEL=numpy``)
the simulator runs the numpy path and says so in the simulation's activity (``kernel``).
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

__all__ = ["AVAILABLE", "REASON", "run_kernel", "rows", "DENSE_SPAN"]

#: A row is stored as its dense span when at least this fraction of the span is non-zero.
DENSE_SPAN = 0.25

numba: Any = None
try:  # numba is a dependency of the plugin; the numpy path is the fallback
    import numba

    AVAILABLE = os.environ.get("HWMAP_DSNN_KERNEL", "numba") != "numpy"
    REASON = "" if AVAILABLE else "HWMAP_DSNN_KERNEL=numpy"
except Exception as e:  # noqa: BLE001 - any import failure (missing, broken LLVM) means: numpy path
    AVAILABLE = False
    REASON = f"numba does not import ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"


def rows(w: np.ndarray, shift: int, dtype: Any = np.int64) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``w`` (sources × targets…, flattened to sources × columns), each row ``r`` as entries
    ``ptr[r]:ptr[r+1]`` of ``col`` and ``val`` (``w << shift``): its non-zero entries, or
    (``first[r] >= 0``) the dense span of columns ``first[r]...`` (module docstring)."""
    w2 = np.asarray(w, np.int64).reshape(w.shape[0], -1) << shift
    cols, vals, first, counts = [], [], np.full(w2.shape[0], -1, np.int64), np.zeros(w2.shape[0], np.int64)
    for r in range(w2.shape[0]):
        nz = np.flatnonzero(w2[r])
        if not len(nz):
            continue
        lo, hi = int(nz[0]), int(nz[-1]) + 1
        if len(nz) >= DENSE_SPAN * (hi - lo):
            first[r] = lo
            cols.append(np.zeros(0, np.int64))
            vals.append(w2[r, lo:hi])
            counts[r] = hi - lo
        else:
            cols.append(nz)
            vals.append(w2[r, nz])
            counts[r] = len(nz)
    ptr = np.zeros(w2.shape[0] + 1, np.int64)
    np.cumsum(counts, out=ptr[1:])
    col = np.zeros(int(ptr[-1]), np.int64)
    for r in range(w2.shape[0]):  # sparse rows' column indices in place (dense rows leave theirs unused)
        if counts[r] and first[r] < 0:
            col[ptr[r]:ptr[r + 1]] = np.flatnonzero(w2[r])
    val = np.concatenate(vals).astype(dtype) if vals else np.zeros(0, dtype)
    return ptr, col, val, first


def _step_code(py: Any) -> Any:
    """The compiled loop (``py`` is numba's ``njit``/``prange`` pair)."""
    njit, prange = py

    @njit(inline="always")
    def decay(a: int, d: int, mult: bool, bits: int) -> int:
        if mult:
            if a >= 0:
                return a - ((a * d) >> bits)
            return a + (((-a) * d) >> bits)
        k = a >> d
        if a > 0 and k == 0:
            return a - 1
        return a - k

    @njit(inline="always")
    def add_row(x, r, n, ptr, col, val, first):
        a, z = ptr[r], ptr[r + 1]
        f = first[r]
        if f >= 0:
            for q in range(z - a):
                x[f + q] += n * val[a + q]
        else:
            for q in range(a, z):
                x[col[q]] += n * val[q]

    @njit(parallel=True, nogil=True, cache=True)
    def loop(ev, in_ptr, in_col, in_w, in_first, rec_ptr, rec_col, rec_w, rec_first, out_ptr, out_col, out_w,
             out_first, xh_work, xo_work, al_ptr, al_tgt, a_src, n_back,
             h_dsyn, h_dmem, h_thr, h_bias, o_dsyn, o_dmem, o_thr, o_bias,
             n_syn, lo, hi, mult, bits, h_max, o_max,
             out_spikes, out_isyn, in_active, in_events, h_active, h_spikes, o_spikes, a_active):
        batch, steps, n_in = ev.shape
        n_hid = h_dmem.shape[0]
        n_out = o_dmem.shape[0]
        for b in prange(batch):
            i_h = np.zeros(n_hid * n_syn, np.int64)
            v_h = np.zeros(n_hid, np.int64)
            s = np.zeros(n_hid, np.int64)
            s_new = np.zeros(n_hid, np.int64)
            received = np.zeros(n_hid, np.int64)
            back = np.zeros(n_hid, np.int64)
            x_h = xh_work[b]
            i_o = np.zeros(n_out, np.int64)
            v_o = np.zeros(n_out, np.int64)
            x_o = xo_work[b]
            for t in range(steps):
                x_h[:] = 0
                x_o[:] = 0
                for c in range(n_in):
                    e = ev[b, t, c]
                    if e != 0:
                        in_active[b, c] += 1
                        in_events[b, c] += e
                        add_row(x_h, c, e, in_ptr, in_col, in_w, in_first)
                for j in range(n_hid):
                    n = s[j]
                    if n != 0:
                        add_row(x_h, j, n, rec_ptr, rec_col, rec_w, rec_first)
                        add_row(x_o, j, n, out_ptr, out_col, out_w, out_first)
                for j in range(n_hid):
                    total = 0
                    for k in range(n_syn):
                        a = i_h[j * n_syn + k] + x_h[j * n_syn + k]
                        a = min(max(a, lo), hi)
                        a = decay(a, h_dsyn[j, k], mult, bits)
                        i_h[j * n_syn + k] = a
                        total += a
                    v = decay(v_h[j], h_dmem[j], mult, bits) + total + h_bias[j]
                    v = min(max(v, lo), hi)
                    own = v // h_thr[j] if v >= h_thr[j] else 0
                    a = received[j]  # spikes of forward alias sources (lower ids) this step
                    received[j] = 0
                    e = min(own, max(h_max - a, 0))
                    v_h[j] = v - e * h_thr[j]
                    s_new[j] = min(a + e, h_max)
                    if s_new[j] != 0:
                        h_active[b, j] += 1
                        h_spikes[b, j] += s_new[j]
                    for q in range(al_ptr[j], al_ptr[j + 1]):  # neuron aliasing, targets in order
                        tg = al_tgt[q]
                        if tg > j:
                            received[tg] += s_new[j]
                        else:  # backward or self: added after the pass
                            back[tg] += s_new[j]
                if n_back:
                    for j in range(n_hid):
                        if back[j] != 0:
                            old = s_new[j]
                            s_new[j] = min(old + back[j], h_max)
                            back[j] = 0
                            h_spikes[b, j] += s_new[j] - old
                            if old == 0 and s_new[j] != 0:
                                h_active[b, j] += 1
                for q in range(a_src.shape[0]):
                    if s_new[a_src[q]] != 0:
                        a_active[b, q] += 1
                s, s_new = s_new, s
                for o in range(n_out):
                    a = min(max(i_o[o] + x_o[o], lo), hi)
                    a = decay(a, o_dsyn[o], mult, bits)
                    i_o[o] = a
                    v = min(max(decay(v_o[o], o_dmem[o], mult, bits) + a + o_bias[o], lo), hi)
                    n = 0
                    if v >= o_thr[o]:
                        n = min(v // o_thr[o], o_max)
                        v -= n * o_thr[o]
                        o_spikes[b, o] += n
                    v_o[o] = v
                    out_spikes[b, t, o] = n
            for o in range(n_out):
                out_isyn[b, o] = i_o[o]

    return loop


_LOOP: Any = None


def _loop() -> Any:
    global _LOOP
    if _LOOP is None:
        _LOOP = _step_code((numba.njit, numba.prange))
    return _LOOP


def run_kernel(p: Any, events: np.ndarray) -> dict[str, np.ndarray]:
    """Run program ``p`` on event counts ``events`` ``(batch, steps, n_in)`` from the reset
    state; the arrays of :class:`~.simulator.Activity` by field name."""
    ev = np.ascontiguousarray(events, dtype=np.int64)
    batch, steps, n_in = ev.shape
    n_hid, n_out, n_syn = p.n_hid, p.n_out, p.n_syn
    # int32 sums when the largest possible sum of one step fits (every source at its most events or spikes)
    bound = 0
    for w, sh, top in ((p.w_in, p.shift_in, max(int(ev.max(initial=0)), 0)), (p.w_rec, p.shift_rec, p.hidden_spikes)):
        bound += int(np.abs(np.asarray(w, np.int64).reshape(w.shape[0], -1) << sh).sum(axis=0).max(initial=0)) * top
    out_bound = int(np.abs(np.asarray(p.w_out, np.int64) << p.shift_out).sum(axis=0).max(initial=0)) * p.hidden_spikes
    dt = np.int32 if max(bound, out_bound) < 2**31 - 2**17 else np.int64
    ins, recs, outs = rows(p.w_in, p.shift_in, dt), rows(p.w_rec, p.shift_rec, dt), rows(p.w_out, p.shift_out, dt)
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731
    out_spikes = np.zeros((batch, steps, n_out), np.int64)
    out_isyn = np.zeros((batch, n_out), np.int64)
    in_active, in_events = np.zeros((batch, n_in), np.int64), np.zeros((batch, n_in), np.int64)
    h_active, h_spikes = np.zeros((batch, n_hid), np.int64), np.zeros((batch, n_hid), np.int64)
    o_spikes = np.zeros((batch, n_out), np.int64)
    pairs = np.asarray(p.aliases, np.int64).reshape(-1, 2)
    a_active = np.zeros((batch, len(pairs)), np.int64)
    order = np.argsort(pairs[:, 0], kind="stable")  # by source, each source's targets in their order
    al_ptr = np.zeros(n_hid + 1, np.int64)
    np.cumsum(np.bincount(pairs[:, 0], minlength=n_hid), out=al_ptr[1:])
    _loop()(ev, *ins, *recs, *outs, np.zeros((batch, n_hid * n_syn), dt), np.zeros((batch, n_out), dt), al_ptr, i64(pairs[order, 1]), i64(pairs[:, 0]),
            int(np.count_nonzero(pairs[:, 1] <= pairs[:, 0])), i64(p.hid_dsyn.reshape(n_hid, n_syn)), i64(p.hid_dmem), i64(p.hid_threshold),
            i64(p.hid_bias), i64(p.out_dsyn), i64(p.out_dmem), i64(p.out_threshold), i64(p.out_bias), n_syn,
            -(2 ** (p.state_bits - 1)), 2 ** (p.state_bits - 1) - 1, p.decay == "multiplicative", p.decay_bits,
            p.hidden_spikes, p.output_spikes, out_spikes, out_isyn, in_active, in_events, h_active, h_spikes, o_spikes,
            a_active)
    f = lambda a: a.sum(axis=0).astype(np.float64)  # noqa: E731
    return {"out_spikes": out_spikes.astype(np.float32), "out_isyn": out_isyn.astype(np.float64),
            "input_active": f(in_active), "input_events": f(in_events), "hidden_active": f(h_active),
            "hidden_spikes": f(h_spikes), "output_spikes": f(o_spikes), "alias_active": f(a_active)}
