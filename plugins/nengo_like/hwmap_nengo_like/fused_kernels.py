"""The fused run loop (numba): many steps of a network of LIF populations, node outputs given
in advance, probes and Lowpass links, in one compiled call (:mod:`.fused` builds its tables).

The LIF step (:func:`_lif`) is one vectorized pass over all neurons with nengo's formulas,
each neuron's membrane factor ``expm1(-delta_t/tau_rc)`` chosen per neuron: the constant
``expm1(-dt/tau_rc)`` outside the refractory period, none within it, and, for the step in
which the period ends part way, a factor computed when the neuron spiked (the
``refractory_time`` that step will see is found by the same subtractions of ``dt``, bit for
bit). Only the spiking neurons (about one in ten a step) are then gathered, for the
``log1p`` of their spike time.

Not bit-identical to the numpy reference step, by choice: ``expm1`` / ``log1p`` are Taylor
series evaluated on contiguous arrays (:func:`_series`, vectorized; the C library's functions,
which numba calls, beyond their range), where numpy evaluates them with its own SIMD code
(SVML on AVX-512 machines); they differ by a few ulps for some arguments. The
matrix-vector products are loops over the non-zero entries of the pre object's output (the
spikes of a population: a few per step), summed in another order than numpy's BLAS. The
differences stay at the rounding level (``tests/nengo_like/test_compiled.py`` states the
tolerance); no ``fastmath``, so nothing is reassociated or fused into an FMA within a formula.

Every buffer is flat; the tables give offsets into it:

* ``sig``: the outputs of every object and the state ``X`` of every filtered link (its
  delayed output, read by its post object at the next step);
* ``wt``: every link's transposed weights (``pre × post``, C order) at ``l_w``;
* ``par``: per population, its scaled encoders (``n × dims``), bias and gain at ``p_enc``,
  ``p_bias``, ``p_gain``; ``st``: its voltage and refractory time at ``p_v``, ``p_rt``;
* per step ``j``: ``nodes[j]`` holds the node outputs (copied to ``sig`` where the order
  reaches the node), ``rec[j]`` receives the probes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from llvmlite import binding as llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["run"]

_jit: Any = njit(cache=True, nogil=True, error_model="numpy")


@njit(inline="always")
def _matvec(li: int, sig: np.ndarray, wt: np.ndarray, l_pre: np.ndarray, l_npre: np.ndarray, l_npost: np.ndarray,
            l_w: np.ndarray, l_q: np.ndarray, act: np.ndarray, nact: np.ndarray, p_cnt: np.ndarray,
            acc: np.ndarray, a0: int) -> None:
    """``acc[a0:a0+m] +=`` link ``li``'s pre output times its weights (``npre × m`` at ``l_w``):
    over the spikes of the pre population ``l_q`` (their indices at ``act[p_cnt[q]:]``, ``nact[q]``
    of them: a few per step), or, from a node (``l_q`` -1), over its non-zero outputs."""
    p0, w0, m, q = l_pre[li], l_w[li], l_npost[li], l_q[li]
    if q >= 0 and m == 1:  # a decoded scalar: four partial sums (the adds not one chain)
        c0, na = p_cnt[q], nact[q]
        s0 = s1 = s2 = s3 = 0.0
        k = 0
        while k + 4 <= na:
            f0, f1, f2, f3 = act[c0 + k], act[c0 + k + 1], act[c0 + k + 2], act[c0 + k + 3]
            s0 += wt[w0 + f0] * sig[p0 + f0]
            s1 += wt[w0 + f1] * sig[p0 + f1]
            s2 += wt[w0 + f2] * sig[p0 + f2]
            s3 += wt[w0 + f3] * sig[p0 + f3]
            k += 4
        while k < na:
            f = act[c0 + k]
            s0 += wt[w0 + f] * sig[p0 + f]
            k += 1
        acc[a0] += (s0 + s1) + (s2 + s3)
        return
    if q >= 0:
        c0 = p_cnt[q]
        for k in range(nact[q]):
            f = act[c0 + k]
            s = sig[p0 + f]
            r = w0 + f * m
            for i in range(m):
                acc[a0 + i] += wt[r + i] * s
        return
    for f in range(l_npre[li]):
        s = sig[p0 + f]
        if s != 0.0:
            r = w0 + f * m
            for i in range(m):
                acc[a0 + i] += wt[r + i] * s


@njit(inline="always")
def _accumulate(li: int, sig: np.ndarray, wt: np.ndarray, l_pre: np.ndarray, l_npre: np.ndarray,
                l_npost: np.ndarray, l_w: np.ndarray, l_q: np.ndarray, act: np.ndarray, nact: np.ndarray,
                p_cnt: np.ndarray, l_filt: np.ndarray, l_x: np.ndarray, acc: np.ndarray, a0: int) -> None:
    """``acc[a0:a0+post] +=`` what link ``li`` delivers this step: its filter state (the
    one-step delay), or its weights times the pre object's output."""
    if l_filt[li]:
        x0 = l_x[li]
        for k in range(l_npost[li]):
            acc[a0 + k] += sig[x0 + k]
    else:
        _matvec(li, sig, wt, l_pre, l_npre, l_npost, l_w, l_q, act, nact, p_cnt, acc, a0)


#: Whether the host has AVX-512 (``vpcompressd``): there the spiking neurons' indices are
#: stored 16 flags at a time (:func:`_compress16`); elsewhere LLVM would expand that into
#: a branch per flag, and one branch-free store per neuron is faster.
_COMPRESS = "avx512f" in llvm.get_host_cpu_features().flatten()


def _compress16_typer(typingctx: Any, out: Any, pos: Any, mask: Any, f0: Any) -> Any:
    """``out[pos:pos + k] = f0 + t`` for the ``t < 16`` where ``mask[f0 + t] != 0``, in order
    (LLVM's ``masked.compressstore``: one ``vpcompressd`` with AVX-512); returns ``k``."""
    def codegen(context: Any, builder: Any, sig: Any, args: Any) -> Any:
        out_a = context.make_array(sig.args[0])(context, builder, args[0])
        mask_a = context.make_array(sig.args[2])(context, builder, args[2])
        pos, f0 = args[1], args[3]
        i32, v16i8, v16i32 = ir.IntType(32), ir.VectorType(ir.IntType(8), 16), ir.VectorType(ir.IntType(32), 16)
        flags = builder.load(builder.bitcast(builder.gep(mask_a.data, [f0]), v16i8.as_pointer()), align=1)
        flags = builder.icmp_unsigned("!=", flags, ir.Constant(v16i8, [0] * 16))
        first = builder.insert_element(ir.Constant(v16i32, ir.Undefined), builder.trunc(f0, i32), ir.Constant(i32, 0))
        first = builder.shuffle_vector(first, ir.Constant(v16i32, ir.Undefined), ir.Constant(v16i32, [0] * 16))
        fnty = ir.FunctionType(ir.VoidType(), [v16i32, i32.as_pointer(), ir.VectorType(ir.IntType(1), 16)])
        store = cgutils.get_or_insert_function(builder.module, fnty, "llvm.masked.compressstore.v16i32")
        builder.call(store, [builder.add(first, ir.Constant(v16i32, list(range(16)))),
                             builder.gep(out_a.data, [pos]), flags])
        return builder.zext(builder.ctpop(builder.bitcast(flags, ir.IntType(16))), ir.IntType(64))
    if not (isinstance(out, types.Array) and out.dtype == types.int32 and isinstance(mask, types.Array)
            and mask.dtype == types.uint8 and out.layout == mask.layout == "C"):
        return None  # typing fails: the store is of 32-bit indices, the flags are bytes
    return types.int64(out, pos, mask, f0), codegen


_compress16: Any = intrinsic(_compress16_typer)

#: Taylor coefficients, highest power first, of ``expm1(x) = x + x²/2! + ... + x¹³/13!`` and
#: ``log1p(x) = x - x²/2 + ... + x¹⁷/17``, for ``|x| <= SERIES_MAX``: the first term left out is
#: below 1e-17 of the sum (``expm1``: (1/16)¹³/14! ≈ 2e-27; ``log1p``: (1/16)¹⁷/18 ≈ 1e-22), so
#: the Horner evaluation (a few rounding errors of one ulp) decides the accuracy.
_EXPM1 = np.array([1.0 / math.factorial(k) for k in range(13, 0, -1)])
_LOG1P = np.array([(-1.0) ** (k + 1) / k for k in range(17, 0, -1)])
SERIES_MAX = 1.0 / 16.0


@njit(inline="always")
def _series(m: int, x: np.ndarray, out: np.ndarray, c: np.ndarray, exp: bool) -> None:
    """``out[k] = x[k] · Σ c[i] x[k]^(n-1-i)`` (Horner), the series ``c`` of ``expm1`` (``exp``)
    or ``log1p`` on ``x[:m]``: a loop without calls, which LLVM vectorizes (the C library's
    functions, called one argument at a time, cost about 4 ns each, and a step of 10,000
    neurons calls them some 2,500 times); then, where ``|x| > SERIES_MAX`` (rare: a step
    longer than a sixteenth of ``tau_rc``, a voltage far over threshold; flagged in the same
    loop), the C library's."""
    nc = c.size
    big = False
    for k in range(m):
        xk = x[k]
        p = c[0]
        for i in range(1, nc):
            p = p * xk + c[i]
        out[k] = p * xk
        big |= not abs(xk) <= SERIES_MAX
    if big:
        for k in range(m):
            xk = x[k]
            if not abs(xk) <= SERIES_MAX:
                out[k] = math.expm1(xk) if exp else math.log1p(xk)


@njit(inline="always")
def _part_step(r: float, dt: float, left: int) -> float:
    """The ``refractory_time`` the step ending a neuron's refractory period sees, from its
    ``r`` now: the same subtractions of ``dt`` the steps will make (bit for bit), at most
    ``left`` of them (none later in this call)."""
    r = r - dt
    i = 1
    while r >= dt and i < left:
        r = r - dt
        i += 1
    return r


@njit(inline="always")
def _part_factor(m: int, r: np.ndarray, dt: float, tau_rc: float, res: np.ndarray) -> None:
    """``res[:m]``: from ``r[:m]``, the ``refractory_time`` of the step in which a neuron's
    refractory period ends within the step (:func:`_part_step`), its membrane factor
    ``expm1(-delta_t/tau_rc)`` with nengo's ``delta_t = clip(dt - refractory_time, 0, dt)``.
    ``r`` is overwritten. Where the period ends on a step boundary the factor is never read."""
    for k in range(m):
        r[k] = -min(max(dt - r[k], 0.0), dt) / tau_rc
    _series(m, r, res, _EXPM1, True)


@njit(inline="always")
def _lif(n: int, v: np.ndarray, rt: np.ndarray, pf: np.ndarray, o: np.ndarray, dt: float, tau_rc: float,
         tau_ref: float, min_v: float, amp_dt: float, c_dt: float, mask: np.ndarray, sidx: np.ndarray, nprev: int,
         left: int, g: np.ndarray, x0: float, e: np.ndarray, b: np.ndarray) -> int:
    """nengo's LIF step on flat views.

    1. One branch-free pass over all ``n`` neurons (LLVM vectorizes it), each with its
       membrane factor ``expm1(-delta_t/tau_rc)``: the constant ``c_dt = expm1(-dt/tau_rc)``
       out of the refractory period, the voltage kept within it, and, in the step where the
       period ends, ``pf[f]``, computed when the neuron spiked (:func:`_part_factor`). The
       spiking neurons (voltage kept over 1 for their spike time) are flagged in ``mask``.
    2. Their indices into ``sidx``, 16 flags at a time (:func:`_compress16`; elsewhere one
       store per neuron, the count advanced by the flag: no branch to mispredict); their voltage and current gathered into contiguous rows of ``g``,
       the ``log1p`` of the time left (:func:`_series`, vectorized), scattered back: refractory
       time, voltage 0, output, and the factor ``pf`` of the step ending their new period.

    The current is ``J = (0 + x0·e) + b``: a 1-D decoded input ``x0`` times the scaled
    encoders ``e`` plus the bias ``b``, or, given ``x0 = 0``, ``e`` zeros and ``b`` the current
    already computed; not stored (recomputed for the spiking neurons, the same operations).
    The output ``o`` is written where it changes only: zeroed at the last step's spikes
    (``sidx[:nprev]``, on entry), ``amp_dt`` at this step's. ``left``: the steps this call
    still runs, this one included. Returns the number of spikes."""
    for k in range(nprev):
        o[sidx[k]] = 0.0
    for f in range(n):
        j = (0.0 + x0 * e[f]) + b[f]
        r = rt[f] - dt
        rt[f] = r
        full = r <= 0.0
        part = not full and not r >= dt
        vv = v[f]
        fac = c_dt if full else pf[f]
        vn = vv - (j - vv) * fac if full or part else vv
        spiked = vn > 1.0
        vm = vn if vn > min_v or vn != vn else min_v
        v[f] = vn if spiked else vm
        mask[f] = np.uint8(spiked)
    ns = 0
    nb = n // 16 if _COMPRESS else 0
    for q in range(nb):
        ns += _compress16(sidx, ns, mask, 16 * q)
    for f in range(16 * nb, n):  # every iteration stores; the count advances by the flag
        sidx[ns] = f
        ns += mask[f]
    sv, sj, arg, res = g[0], g[1], g[2], g[3]
    for k in range(ns):
        f = sidx[k]
        sv[k] = v[f]
        sj[k] = (0.0 + x0 * e[f]) + b[f]
    for k in range(ns):
        arg[k] = -(sv[k] - 1.0) / (sj[k] - 1.0)
    _series(ns, arg, res, _LOG1P, False)
    for k in range(ns):
        f = sidx[k]
        r = tau_ref + (dt + tau_rc * res[k])
        rt[f] = r
        v[f] = 0.0
        o[f] = amp_dt
        sv[k] = _part_step(r, dt, left - 1)
    _part_factor(ns, sv, dt, tau_rc, sj)
    for k in range(ns):
        pf[sidx[k]] = sj[k]
    return ns


@_jit
def run(steps: int, dt: float, nodes: np.ndarray, rec: np.ndarray, sig: np.ndarray, wt: np.ndarray,
        par: np.ndarray, st: np.ndarray, ops: np.ndarray, n_off: np.ndarray, n_size: np.ndarray,
        n_node: np.ndarray,
        p_n: np.ndarray, p_dims: np.ndarray, p_out: np.ndarray, p_enc: np.ndarray, p_bias: np.ndarray,
        p_gain: np.ndarray, p_v: np.ndarray, p_rt: np.ndarray, p_f: np.ndarray, p_dec: np.ndarray,
        p_neu: np.ndarray, pr_ptr: np.ndarray, pr_off: np.ndarray, links_in: np.ndarray,
        l_pre: np.ndarray, l_npre: np.ndarray, l_npost: np.ndarray, l_w: np.ndarray, l_filt: np.ndarray,
        l_x: np.ndarray, l_a: np.ndarray, l_b: np.ndarray, l_fanout: np.ndarray, l_unit: np.ndarray,
        l_q: np.ndarray, count: int, spikes: np.ndarray, p_cnt: np.ndarray, act: np.ndarray, nact: np.ndarray,
        synops: np.ndarray) -> None:
    """``steps`` steps. ``ops[i] = (kind, index)`` in the simulator's order: kind 0 steps
    population ``index``, kind 1 copies node ``index``'s output (``n_off``/``n_size`` in
    ``sig``, ``n_node`` in ``nodes[j]``). ``p_dec``/``p_neu``/``pr_ptr`` are ``(start, stop)``
    ranges in ``links_in`` (a population's links into its decoded input and into its
    neurons; a probe's links, ``pr_off`` its place in ``rec[j]``). ``p_f`` per population:
    ``tau_rc, tau_ref, min_voltage, amplitude/dt, expm1(-dt/tau_rc), dt/amplitude``; its
    spiking neurons of the step at ``act[p_cnt]`` (``nact`` of them; ``l_q``: the pre
    population of a link, -1 for a node). With ``count``, spikes per neuron into ``spikes``
    (at ``p_cnt``) and synaptic operations per link into ``synops`` (``l_fanout``: per link,
    the offset of its per-pre fan-out in ``par``; ``l_unit``: the output of one spike of the
    pre population, 0 for nodes)."""
    nmax = 1
    dmax = 1
    for p in range(p_n.size):
        nmax = max(nmax, p_n[p])
        dmax = max(dmax, p_dims[p])
    J = np.zeros(nmax)
    nin = np.zeros(nmax)
    x = np.zeros(dmax)
    mask = np.zeros(nmax, np.uint8)
    g = np.zeros((4, nmax))  # gathered voltages, currents, arguments, results
    # per neuron, the membrane factor of the step ending its refractory period within the step
    pf = np.zeros(st.size // 2)
    for q in range(p_n.size):
        n = p_n[q]
        rtq = st[p_rt[q]:p_rt[q] + n]
        for f in range(n):
            g[0, f] = _part_step(rtq[f], dt, steps)
        _part_factor(n, g[0], dt, p_f[q, 0], pf[p_cnt[q]:p_cnt[q] + n])
    zero = np.zeros(nmax)
    u = np.zeros(max(1, l_npost.max()) if l_npost.size else 1)
    for j in range(steps):
        for oi in range(ops.shape[0]):
            kind, q = ops[oi, 0], ops[oi, 1]
            if kind == 1:
                o0, c0 = n_off[q], n_node[q]
                for k in range(n_size[q]):
                    sig[o0 + k] = nodes[j, c0 + k]
                continue
            n, dims = p_n[q], p_dims[q]
            for d in range(dims):
                x[d] = 0.0
            for li in links_in[p_dec[q, 0]:p_dec[q, 1]]:
                _accumulate(li, sig, wt, l_pre, l_npre, l_npost, l_w, l_q, act, nact, p_cnt, l_filt, l_x, x, 0)
            # slices, not offsets into the buffers: LLVM vectorizes the loops over them
            e, bias, gain = par[p_enc[q]:p_enc[q] + n * dims], par[p_bias[q]:p_bias[q] + n], par[p_gain[q]:p_gain[q] + n]
            neu = p_neu[q, 1] > p_neu[q, 0]
            direct = dims == 1 and not neu  # the current computed in the LIF loop
            if dims == 1 and neu:  # one product per neuron
                x0 = x[0]
                for f in range(n):
                    J[f] = (0.0 + x0 * e[f]) + bias[f]
            elif dims != 1:
                for f in range(n):
                    acc = 0.0
                    for d in range(dims):
                        acc += x[d] * e[f * dims + d]
                    J[f] = acc + bias[f]
            if neu:
                for f in range(n):
                    nin[f] = 0.0
                for li in links_in[p_neu[q, 0]:p_neu[q, 1]]:
                    _accumulate(li, sig, wt, l_pre, l_npre, l_npost, l_w, l_q, act, nact, p_cnt, l_filt, l_x, nin, 0)
                for f in range(n):
                    J[f] = J[f] + gain[f] * nin[f]
            o0, c0 = p_out[q], p_cnt[q]
            nact[q] = _lif(n, st[p_v[q]:p_v[q] + n], st[p_rt[q]:p_rt[q] + n], pf[c0:c0 + n], sig[o0:o0 + n], dt,
                           p_f[q, 0], p_f[q, 1], p_f[q, 2], p_f[q, 3], p_f[q, 4], mask, act[c0:c0 + n], nact[q],
                           steps - j, g, x[0] if direct else 0.0, e if direct else zero[:n], bias if direct else J[:n])
            if count:
                for k in range(nact[q]):
                    f = act[c0 + k]
                    spikes[c0 + f] += abs(sig[o0 + f]) * p_f[q, 5]
        r = rec[j]
        for h in range(pr_off.size):
            a0 = pr_off[h]
            for li in links_in[pr_ptr[h, 0]:pr_ptr[h, 1]]:
                _accumulate(li, sig, wt, l_pre, l_npre, l_npost, l_w, l_q, act, nact, p_cnt, l_filt, l_x, r, a0)
        for li in range(l_filt.size):
            if count and l_q[li] >= 0:
                s = 0.0
                q, p0, fo = l_q[li], l_pre[li], l_fanout[li]
                for k in range(nact[q]):
                    f = act[p_cnt[q] + k]
                    s += abs(sig[p0 + f]) * (dt / l_unit[li]) * par[fo + f]
                synops[li] += s
            if not l_filt[li]:
                continue
            m, x0, a, b = l_npost[li], l_x[li], l_a[li], l_b[li]
            for k in range(m):
                u[k] = 0.0
            _matvec(li, sig, wt, l_pre, l_npre, l_npost, l_w, l_q, act, nact, p_cnt, u, 0)
            for k in range(m):  # FilterStep "onex": X = a·X, then X += b·u
                sig[x0 + k] = sig[x0 + k] * a + b * u[k]
