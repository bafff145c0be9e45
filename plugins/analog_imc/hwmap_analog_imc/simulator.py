"""The analog IMC simulator: runs an emitted program, read back from disk, on a batch of inputs.

Nothing comes from the mapping or the graph: the simulator reads ``program.bin`` (see
:mod:`~hwmap_analog_imc.program`) and executes its records in dataflow order.

A crossbar layer (LAYERS, SWITCHES, WEIGHTS, ADC, SCHEDULE, POSTOPS):

1. **DAC.** The input ``x`` is quantized to ``q = clip(round_half_even(x/s_x) + z, q_min,
   q_max)`` and driven as the unsigned code ``u = q − q_min`` (so the integer value is
   ``v = u + c0``, ``c0 = q_min − z``), bit-serially in ``planes`` digits of ``dac_bits``:
   ``u = Σ_p d_p·2^(p·dac_bits)``. Convolutions are unrolled once per layer (im2col, padding
   with the code of 0), in the row order of the ONNX weight layout.
2. **Crossbar.** Each block's column sums ``S_p[n, col] = Σ_r d_p[n, r]·G[r, col]`` for every
   plane, with ``G`` the programmed cell levels (exact integers in float32 while the sums stay
   below 2^24; with noise on, the noisy conductances in level units).
3. **ADC.** Each column sum is converted with the block's per-plane, per-column shift:
   ``code = min(floor(S/2^shift + 1/2), 2^adc_bits − 1)``, read back as ``code·2^shift``.
4. **Shift and add.** ``Σ_p 2^(p·dac_bits) Σ_j coef_j·code_pj·2^shift_pj`` over the filter's
   columns ``j`` (``coef_j = ±2^(slice·bits_per_cell)``: the differential pair subtracts;
   offset encoding adds all slices), then the ACCUM correction ``offset_f + xsum·Σ_r u_r``
   (``offset_f = c0·Σ_r w_rf``; ``xsum = −o`` for offset encoding), accumulated over the row
   tiles (partial sums) into ``Σ_r v_r·w_rf``.
5. **Dequantize and post-ops.** ``y = s_x·s_w[f]·acc + bias[f]``, then the fused post-ops with
   hwmap's reference semantics (``hwmap.ops.get_op(op).evaluate``).

Digital ops run with the same reference semantics. Without noise and with an ADC that never
rounds (shift 0), the crossbar result is exactly ``Σ q_x·q_w``: the simulator then equals the
reference model with fake-quantized inputs and weights up to float32 rounding.

Error bound (per layer, noise off, no ADC clipping): against the float layer on the same
input ``x``, output channel ``f`` differs by at most ::

    Σ_r |x̂_r − x_r|·|ŵ_rf| + Σ_r |x_r|·|ŵ_rf − w_rf| + s_x·s_w[f]·E_f,
    E_f = Σ_tiles Σ_p 2^(p·dac_bits) Σ_j |coef_j|·e(shift_pj),   e(0) = 0, e(s) = 2^(s−1),

(``x̂ = s_x·v`` and ``ŵ = s_w·w_int`` the quantized values; ``|x̂ − x| ≤ s_x/2`` inside the
quantization range, ``|ŵ − w| ≤ s_w/2``): input rounding, weight rounding and ADC rounding,
each a half step of its own quantizer. :func:`adc_error_bound` gives ``s_x·s_w[f]·E_f``;
``activity["adc_clipped"]`` counts conversions that clipped (then the bound does not hold).

Device noise (``[noise] enabled`` in the target given to :func:`simulate`, off by default):
the cells of every block are replaced by their programmed-and-drifted conductances
(:mod:`~hwmap_analog_imc.noise`, seeded per block), in level units; everything digital
(offset corrections, scales) stays nominal, as on the chip.

Activity per inference: ``mvms`` (analog reads: input vectors × bit-planes per READ),
``adc_conversions`` (reads × columns converted), ``dac_conversions`` (nonzero input digits
driven), ``cell_reads`` (reads × cells of the blocks read), ``adc_clipped``, ``noc_bits`` and
``noc_bit_hops`` (the NOC records), and ``cycle_time_s``: per computation cycle, the slowest
core's reads (each ``read_pulse_s + k·adc_conversion_s``, ``k`` the most columns one ADC
converts; ADC ``a`` serves columns ``a·columns_per_adc ..``, blocks on one core read one
after another) plus the cycle's NoC transfers (one at a time: ``hops·hop_latency +
ceil(bits/link_width)`` clock cycles each).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import hwmap
from hwmap import DataError, GraphError, HwmapError, Node, TargetError
from hwmap.ops import get_op

from .hardware import NoiseConfig
from .noise import noisy_levels
from .program import FLAG_INPUT, FLAG_OUTPUT, NONE, AccumRec, LayerRec, Program, ReadRec, read_program

__all__ = ["PROGRAM_FILE", "simulate", "run_program", "adc_error_bound", "input_codes", "LayerKernel"]

PROGRAM_FILE = "program.bin"
#: Bytes of working arrays one simulation slice may hold; larger batches run in slices.
_SLICE_BYTES = 256 * 2**20


def simulate(artifacts: hwmap.Artifacts, target: hwmap.Target, inputs: Mapping[str, np.ndarray]) -> hwmap.Simulation:
    """Run the program in ``artifacts.directory`` on ``inputs`` (graph input name -> batch-first
    array). The device noise model is applied when ``target.config.noise.enabled``."""
    name = str(artifacts.manifest.get("program", PROGRAM_FILE))
    program = read_program(Path(artifacts.directory) / name)
    noise_cfg = getattr(target.config, "noise", None)
    noise = noise_cfg if isinstance(noise_cfg, NoiseConfig) and noise_cfg.enabled else None
    outputs, activity, _ = run_program(program, inputs, noise=noise)
    return hwmap.Simulation(outputs, activity)


# ------------------------------------------------------------------------------ one layer
def input_codes(layer: LayerRec, x: np.ndarray) -> np.ndarray:
    """The DAC codes ``u = q − q_min`` of ``x`` for ``layer``, unrolled to ``(groups, N,
    positions, rows)`` int32 (im2col for a convolution, padding with the code of 0)."""
    x = np.asarray(x)
    q = np.clip(np.round(x.astype(np.float64) / layer.in_scale) + layer.in_zero_point, layer.in_qmin, layer.in_qmax)
    u = (q - layer.in_qmin).astype(np.int32)
    n = u.shape[0]
    if not layer.kernel:  # Gemm / MatMul: the last axis is the input vector
        return u.reshape(1, n, layer.positions, layer.rows)
    nsp = len(layer.kernel)
    if any(layer.pads_begin) or any(layer.pads_end):
        pad = [(0, 0), (0, 0)] + [(b, e) for b, e in zip(layer.pads_begin, layer.pads_end)]
        u = np.pad(u, pad, mode="constant", constant_values=layer.in_zero_point - layer.in_qmin)
    dilated = [(k - 1) * d + 1 for k, d in zip(layer.kernel, layer.dilations)]
    win = sliding_window_view(u, dilated, axis=tuple(range(2, 2 + nsp)))
    index = (slice(None), slice(None)) + tuple(slice(0, (o - 1) * s + 1, s) for o, s in
                                               zip(layer.out_spatial, layer.strides)) + tuple(
        slice(None, None, d) for d in layer.dilations)
    win = win[index]  # (N, C, *out, *k)
    g = layer.groups
    c = win.shape[1]
    win = win.reshape(n, g, c // g, *layer.out_spatial, *layer.kernel)
    order = (1, 0, *range(3, 3 + nsp), 2, *range(3 + nsp, 3 + 2 * nsp))
    return np.ascontiguousarray(win.transpose(order)).reshape(g, n, layer.positions, layer.rows)


@dataclass
class _Stack:
    """Blocks of one layer with the same rows, filters and positions (different groups):
    computed together as one batched matmul (a depthwise layer is one stack)."""

    blocks: np.ndarray  # block ids
    groups: np.ndarray
    row_start: int
    row_count: int
    filter_start: int
    filter_count: int
    pos_start: int
    pos_count: int
    levels: np.ndarray  # (nb, rows, filter_count·cpf) float32 (float64 for very long columns)
    inv: np.ndarray  # (nb, planes, 1, 1, cpf) float32: 2^-shift
    fac: np.ndarray  # (planes, nb, cpf, 1) float64: 2^shift·coef·2^(p·dac)
    offset: np.ndarray  # (nb, 1, filter_count) float64
    xsum: np.ndarray  # (nb, 1) float64
    exact: np.ndarray | None  # (nb, rows, filter_count) float64 weights when the ADC is transparent


class LayerKernel:
    """One crossbar layer decoded from a program: its blocks stacked for batched execution.

    A stack whose ADCs provably neither round nor clip (every shift 0, and the largest column
    sum the cells allow, ``max digit × Σ_r G``, within ``2^adc_bits − 1``; noise off) is
    computed as one integer matmul with the shift-and-added weights: the same numbers as the
    per-plane, per-column path, without its cost."""

    def __init__(self, program: Program, layer_id: int, noise: NoiseConfig | None = None) -> None:
        cfg = program.config
        self.rec = rec = program.layers[layer_id]
        self.dac = cfg.dac_bits
        self.amax = float(2**cfg.adc_bits - 1)
        self.reads: list[ReadRec] = [i for i in program.schedule if isinstance(i, ReadRec) and i.layer == layer_id]
        accum = {i.block: i for i in program.schedule if isinstance(i, AccumRec)}
        coef = program.const(rec.coef).astype(np.float64)
        cpf = rec.cols_per_filter
        max_level = 2**cfg.bits_per_cell - 1
        umax = rec.in_qmax - rec.in_qmin
        dmax = max(min(2**self.dac - 1, umax >> (p * self.dac)) for p in range(rec.planes))
        # column sums are exact integers in float32 below 2^24; larger arrays need float64
        self.dtype = np.float32 if rec.rows * dmax * max_level < 2**24 else np.float64
        keyed: dict[tuple[int, ...], list[tuple[int, ReadRec]]] = {}
        seen: set[int] = set()
        for r in self.reads:
            for b in r.blocks:
                blk = program.blocks[b]
                if b in seen or blk.layer != layer_id:
                    raise TargetError(f"block {b} is read twice or by another layer's READ", where=rec.name)
                if b not in accum:
                    raise TargetError(f"block {b} is read but never accumulated (no ACCUM)", where=rec.name)
                seen.add(b)
                key = (blk.row_start, blk.row_count, blk.filter_start, blk.filter_count, r.pos_start, r.pos_count)
                keyed.setdefault(key, []).append((b, r))
        self.stacks: list[_Stack] = []
        plane_w = 2.0 ** (self.dac * np.arange(rec.planes, dtype=np.float64))
        for (r0, rc, f0, fc, p0, pc), items in keyed.items():
            ids = np.array([b for b, _ in items], dtype=np.int64)
            cells = np.stack([program.weights[b].cells for b in ids])  # (nb, rc, fc·cpf) uint8
            levels = (np.stack([noisy_levels(program.weights[b].cells, max_level, noise, int(b)) for b in ids])
                      if noise is not None else cells).astype(self.dtype)
            shifts = np.stack([program.adc[b].shifts for b in ids]).astype(np.int64)  # (nb, planes, cpf)
            fac = np.ldexp(1.0, shifts.transpose(1, 0, 2)) * coef[None, None, :] * plane_w[:, None, None]
            offset = np.stack([program.const(accum[b].offset).astype(np.float64) for b in ids])
            if offset.shape != (len(ids), fc):
                raise TargetError(f"ACCUM offsets of blocks {ids.tolist()} do not have {fc} filters", where=rec.name)
            exact = None
            worst = dmax * cells.astype(np.int64).sum(axis=1).max(initial=0)
            if noise is None and not shifts.any() and worst <= self.amax:
                exact = (cells.reshape(len(ids), rc, fc, cpf).astype(np.float64) * coef).sum(axis=3)
            self.stacks.append(_Stack(
                ids, np.array([program.blocks[b].group for b in ids], dtype=np.int64), r0, rc, f0, fc, p0, pc,
                levels, np.ldexp(np.float32(1.0), -shifts).astype(np.float32)[:, :, None, None, :],
                fac[..., None], offset[:, None, :],
                np.array([[accum[b].xsum_factor] for b in ids], dtype=np.float64), exact))
        # every (group, row, filter) of every position computed exactly once
        cover = np.zeros((rec.groups, rec.rows, rec.filters), dtype=np.int64)
        pos = np.zeros(rec.positions, dtype=np.int64)
        for s in self.stacks:
            cover[s.groups, s.row_start:s.row_start + s.row_count, s.filter_start:s.filter_start + s.filter_count] += \
                s.pos_count
            pos[s.pos_start:s.pos_start + s.pos_count] += len(s.blocks) * s.row_count * s.filter_count
        if (cover != rec.positions).any() or (pos != rec.groups * rec.rows * rec.filters).any():
            raise TargetError("the READ instructions do not cover every weight for every input vector exactly once",
                              where=rec.name)

    def _slice(self, u: np.ndarray, s: _Stack) -> np.ndarray:
        """``(nb, N·pos_count, row_count)`` codes of the stack's groups, positions and rows."""
        n = u.shape[1]
        sub = u[s.groups, :, s.pos_start:s.pos_start + s.pos_count, s.row_start:s.row_start + s.row_count]
        return sub.reshape(len(s.blocks), n * s.pos_count, s.row_count)

    def _digits(self, sub: np.ndarray) -> np.ndarray:
        """All bit-planes of ``sub``, stacked along the vectors: ``(nb, planes·m, rows)`` float32."""
        nb, m, rc = sub.shape
        planes = self.rec.planes
        if planes == 1:
            return sub.astype(self.dtype)
        sh = (self.dac * np.arange(planes, dtype=np.int32)).reshape(1, planes, 1, 1)
        d = (sub[:, None] >> sh) & (2**self.dac - 1)
        return d.astype(self.dtype).reshape(nb, planes * m, rc)

    def run(self, u: np.ndarray) -> tuple[np.ndarray, int]:
        """Integer accumulations ``(groups, N, positions, filters)`` of codes ``u`` (from
        :func:`input_codes`) and the number of ADC conversions that clipped."""
        rec = self.rec
        g, n = u.shape[0], u.shape[1]
        planes, cpf = rec.planes, rec.cols_per_filter
        acc = np.zeros((g, n, rec.positions, rec.filters), dtype=np.float64)
        clipped = 0
        for s in self.stacks:
            sub = self._slice(u, s)
            nb, m = sub.shape[0], sub.shape[1]
            if s.exact is not None:  # transparent ADC: Σ_p 2^(p·dac) d_p = u
                y = np.matmul(sub.astype(np.float64), s.exact)
            else:
                cols = np.matmul(self._digits(sub), s.levels).reshape(nb, planes, m, s.filter_count, cpf)
                cols *= s.inv
                cols += 0.5
                np.floor(cols, out=cols)
                if cols.max(initial=0.0) > self.amax:
                    clipped += int(np.count_nonzero(cols > self.amax))
                    np.minimum(cols, self.amax, out=cols)
                y = np.zeros((nb, m * s.filter_count, 1), dtype=np.float64)
                for p in range(planes):
                    y += np.matmul(cols[:, p].reshape(nb, m * s.filter_count, cpf).astype(np.float64), s.fac[p])
                y = y.reshape(nb, m, s.filter_count)
            y += s.offset
            if s.xsum.any():  # offset encoding: the digital logic removes o·Σ u
                y += (s.xsum * sub.sum(axis=2, dtype=np.float64))[:, :, None]
            y = y.reshape(nb, n, s.pos_count, s.filter_count)
            acc[s.groups, :, s.pos_start:s.pos_start + s.pos_count, s.filter_start:s.filter_start + s.filter_count] += y
        return acc, clipped

    def probe(self, u: np.ndarray) -> dict[int, np.ndarray]:
        """Per block, the largest column sum ``(planes, cols_per_filter)`` the codes ``u`` make
        (for ADC full-scale calibration); vectors are all positions of ``u``."""
        rec = self.rec
        out: dict[int, np.ndarray] = {}
        for s in self.stacks:
            sub = u[s.groups][:, :, :, s.row_start:s.row_start + s.row_count].reshape(len(s.blocks), -1, s.row_count)
            m = sub.shape[1]
            cols = np.matmul(self._digits(sub), s.levels).reshape(len(s.blocks), rec.planes, m, -1,
                                                                   rec.cols_per_filter)
            best = cols.max(axis=(2, 3)) if m else np.zeros((len(s.blocks), rec.planes, rec.cols_per_filter))
            for b, v in zip(s.blocks, best):
                out[int(b)] = v.astype(np.float64)
        return out


def adc_error_bound(program: Program, layer_id: int) -> np.ndarray:
    """Largest error the ADC rounding adds to each output channel of a layer (float units):
    ``s_x·s_w[f]·E_f`` of the module docstring (the worst replica's row tiles)."""
    rec = program.layers[layer_id]
    coef = np.abs(program.const(rec.coef).astype(np.float64))
    plane_w = 2.0 ** (program.config.dac_bits * np.arange(rec.planes))
    per: dict[int, np.ndarray] = {}
    for b, blk in enumerate(program.blocks):
        if blk.layer != layer_id:
            continue
        sh = program.adc[b].shifts.astype(np.float64)
        half = np.where(sh > 0, np.ldexp(1.0, (sh - 1).astype(np.int64)), 0.0)
        e = float((plane_w[:, None] * coef[None, :] * half).sum())
        arr = per.setdefault(blk.replica, np.zeros(rec.groups * rec.filters))
        f = blk.group * rec.filters + blk.filter_start
        arr[f:f + blk.filter_count] += e
    worst = np.max(np.stack(list(per.values())), axis=0) if per else np.zeros(rec.groups * rec.filters)
    return worst * rec.in_scale * program.const(rec.w_scale).astype(np.float64)


# ------------------------------------------------------------------------------ the program
def _node(name: str, op: str, attrs: str, inputs: list[str], outputs: list[str],
          params: tuple[tuple[str, int], ...], program: Program) -> Node:
    return Node(name, op, inputs, outputs, json.loads(attrs), {slot: program.const(r) for slot, r in params})


def _evaluate(node: Node, args: list[np.ndarray]) -> list[np.ndarray]:
    opdef = get_op(node.op, where=f"node {node.name!r}")
    if opdef.evaluate is None:
        raise TargetError(f"op {node.op} has no stateless semantics the digital logic could run",
                          where=f"node {node.name!r}")
    try:
        return opdef.evaluate(node, args)
    except HwmapError:
        raise
    except (ValueError, IndexError, TypeError, ZeroDivisionError) as e:
        raise GraphError(f"evaluation failed: {e}", where=f"node {node.name!r} ({node.op})") from None


def _check_inputs(program: Program, inputs: Mapping[str, np.ndarray]) -> tuple[dict[int, np.ndarray], int]:
    if not isinstance(inputs, Mapping):
        raise DataError(f"inputs must map input names to arrays, got {type(inputs).__name__}")
    wanted = {t.name: i for i, t in enumerate(program.tensors) if t.flags & FLAG_INPUT}
    unknown = sorted(set(inputs) - set(wanted))
    if unknown:
        raise DataError(f"unknown input {unknown[0]!r}; the program takes {', '.join(wanted)}")
    out: dict[int, np.ndarray] = {}
    n: int | None = None
    for name, tid in wanted.items():
        if name not in inputs:
            raise DataError(f"missing input {name!r}; the program takes {', '.join(wanted)}")
        a = np.asarray(inputs[name])
        shape = program.tensors[tid].shape
        if a.ndim != len(shape) or tuple(a.shape[1:]) != tuple(shape[1:]) or a.shape[0] < 1:
            raise DataError(f"input {name!r} has shape {list(a.shape)}, the program expects "
                            f"[N, {', '.join(map(str, shape[1:]))}]")
        if not np.issubdtype(a.dtype, np.number):
            raise DataError(f"input {name!r} has non-numeric dtype {a.dtype}")
        if n is not None and a.shape[0] != n:
            raise DataError(f"input {name!r} has {a.shape[0]} samples, the others {n}")
        n = a.shape[0]
        out[tid] = a.astype(np.float32, copy=False)
    return out, n or 1


def _slice_samples(program: Program, kernels: list[LayerKernel]) -> int:
    """Samples per slice so that one layer's working arrays stay under ``_SLICE_BYTES``: its
    codes and accumulators, and per stack the bit-planes (int32 and float32) and column sums."""
    per_sample = 1
    for k in kernels:
        r = k.rec
        layer = r.groups * r.positions * (r.rows * 5 + r.filters * 8)
        cols = [s.filter_count * r.cols_per_filter for s in k.stacks]
        stack = max((len(s.blocks) * s.pos_count * (r.planes * (s.row_count * 8 + c * 4) + s.row_count * 4 + c * 8)
                     for s, c in zip(k.stacks, cols)), default=0)
        per_sample = max(per_sample, layer + stack)
    return max(1, _SLICE_BYTES // per_sample)


def run_program(program: Program, inputs: Mapping[str, np.ndarray], *, noise: NoiseConfig | None = None,
                collect: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Execute ``program`` on ``inputs``; returns (outputs by graph output name, activity, and
    with ``collect`` every tensor by name plus ``"<layer>/acc"``, a layer's dequantized
    result before its post-ops)."""
    arrays, n = _check_inputs(program, inputs)
    kernels = [LayerKernel(program, i, noise) for i in range(len(program.layers))]
    step = _slice_samples(program, kernels)
    outs: dict[str, list[np.ndarray]] = {}
    env_all: dict[str, list[np.ndarray]] = {}
    nz = np.zeros(len(program.schedule), dtype=np.int64)
    clipped = np.zeros(len(program.layers), dtype=np.int64)
    for start in range(0, n, step):
        part = {t: a[start:start + step] for t, a in arrays.items()}
        o, env = _forward(program, kernels, part, nz, clipped, collect)
        for k, v in o.items():
            outs.setdefault(k, []).append(v)
        for k, v in env.items():
            env_all.setdefault(k, []).append(v)
    outputs = {k: np.concatenate(v, axis=0) for k, v in outs.items()}
    collected = {k: np.concatenate(v, axis=0) for k, v in env_all.items()}
    return outputs, _activity(program, n, nz, clipped), collected


def _forward(program: Program, kernels: list[LayerKernel], inputs: dict[int, np.ndarray], nz: np.ndarray,
             clipped: np.ndarray, collect: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    names = [t.name for t in program.tensors]
    env: dict[int, np.ndarray] = dict(inputs)
    extra: dict[str, np.ndarray] = {}
    n = next(iter(inputs.values())).shape[0] if inputs else 1
    batch = program.config.batch
    steps = sorted([(lay.order, 0, i) for i, lay in enumerate(program.layers)]
                   + [(d.order, 1, i) for i, d in enumerate(program.digital)])
    index = {id(ins): k for k, ins in enumerate(program.schedule)}
    for _, kind, i in steps:
        if kind == 1:
            d = program.digital[i]
            node = _node(d.name, d.op, d.attrs, [names[t] for t in d.inputs], [names[t] for t in d.outputs],
                         d.params, program)
            if node.op == "Reshape" and n != batch and "shape" in node.params:
                node = _rebase(node, program, d.inputs, batch, n)
            args = [_get(env, t, names, d.name) for t in d.inputs]
            res = _evaluate(node, args)
            if len(res) != len(d.outputs):
                raise TargetError(f"gave {len(res)} outputs for {len(d.outputs)}", where=f"digital op {d.name!r}")
            env.update(zip(d.outputs, res))
            continue
        k = kernels[i]
        rec = k.rec
        x = _get(env, rec.input, names, rec.name)
        u = input_codes(rec, x)
        acc, clip = k.run(u)
        clipped[i] += clip
        digits = _nonzero_digits(u, rec.planes, program.config.dac_bits)
        for r in k.reads:  # nonzero digits the DACs drive, per READ
            nz[index[id(r)]] += int(digits[r.group, :, r.pos_start:r.pos_start + r.pos_count,
                                           r.row_start:r.row_start + r.row_count].sum(dtype=np.int64))
        y = _dequantize(program, rec, acc, n)
        if collect:
            extra[f"{rec.name}/acc"] = y
        for po in (p for p in program.postops if p.layer == i):
            node = _node(po.name, po.op, po.attrs, [f"in{j}" for j in range(len(po.extra) + 1)], ["out"],
                         po.params, program)
            operands = [_get(env, t, names, po.name) for t in po.extra]
            operands.insert(po.position, y)
            y = _evaluate(node, operands)[0]
        env[rec.output] = y
    outputs = {names[i]: env[i] for i, t in enumerate(program.tensors) if t.flags & FLAG_OUTPUT and i in env}
    missing = [t.name for i, t in enumerate(program.tensors) if t.flags & FLAG_OUTPUT and i not in env]
    if missing:
        raise TargetError(f"graph output {missing[0]!r} is produced by no instruction")
    if collect:
        extra.update({names[t]: v for t, v in env.items()})
    return outputs, extra


def _get(env: dict[int, np.ndarray], t: int, names: list[str], who: str) -> np.ndarray:
    if t not in env:
        raise TargetError(f"reads tensor {names[t]!r} before any instruction produced it", where=who)
    return env[t]


def _rebase(node: Node, program: Program, inputs: tuple[int, ...], batch: int, n: int) -> Node:
    """A constant Reshape target starting with the compiled batch is rebased to ``n`` (as the
    reference executor does), so a program compiled at batch 1 runs any batch."""
    target = node.params["shape"]
    if (target.ndim == 1 and target.size and int(target[0]) == batch and inputs
            and program.tensors[inputs[0]].shape[:1] == (batch,)):
        t = np.array(target, copy=True)
        t[0] = n
        node.params = {**node.params, "shape": t}
    return node


def _nonzero_digits(u: np.ndarray, planes: int, dac: int) -> np.ndarray:
    """How many of each code's ``planes`` DAC digits are nonzero (uint8, shaped like ``u``)."""
    if planes == 1:
        return (u != 0).astype(np.uint8)
    if dac == 1 and hasattr(np, "bitwise_count"):  # numpy >= 2.0: a popcount per code
        return np.bitwise_count(u).astype(np.uint8)
    mask = 2**dac - 1
    out = np.zeros(u.shape, dtype=np.uint8)
    for p in range(planes):
        out += ((u >> (p * dac)) & mask) != 0
    return out


def _dequantize(program: Program, rec: LayerRec, acc: np.ndarray, n: int) -> np.ndarray:
    """``s_x·s_w[c]·acc + bias[c]`` laid out as the compute op's output (float32)."""
    g, _, p, f = acc.shape
    y = acc.transpose(1, 2, 0, 3).reshape(n, p, g * f)
    y = y * (rec.in_scale * program.const(rec.w_scale).astype(np.float64))
    if rec.bias != NONE:
        y = y + program.const(rec.bias).astype(np.float64)
    if rec.kernel:
        y = y.transpose(0, 2, 1).reshape(n, g * f, *rec.out_spatial)
    else:
        y = y.reshape(n, *_compute_shape(program, rec)[1:])
    return y.astype(np.float32)


def _compute_shape(program: Program, rec: LayerRec) -> tuple[int, ...]:
    """Output shape of a Gemm/MatMul layer: the input's leading axes, then the filters."""
    x = program.tensors[rec.input].shape
    return (*x[:-1], rec.groups * rec.filters)


def _activity(program: Program, n: int, nz: np.ndarray, clipped: np.ndarray) -> dict[str, Any]:
    cfg = program.config
    ec, cpa = cfg.element_cols, cfg.columns_per_adc
    mvms: dict[str, int] = {lay.name: 0 for lay in program.layers}
    adc: dict[str, int] = dict(mvms)
    cells: dict[str, int] = dict(mvms)
    dac: dict[str, float] = {k: 0.0 for k in mvms}
    core_time: dict[tuple[int, int], float] = {}
    for k, ins in enumerate(program.schedule):
        if not isinstance(ins, ReadRec):
            continue
        lay = program.layers[ins.layer]
        reads = ins.pos_count * lay.planes
        cols = []
        ncells = 0
        for b in ins.blocks:
            blk = program.blocks[b]
            width = blk.filter_count * lay.cols_per_filter
            cols.append(np.arange(blk.elem_col * ec, blk.elem_col * ec + width))
            ncells += blk.row_count * width
        col = np.concatenate(cols)
        load = int(np.bincount(col // cpa).max()) if col.size else 0
        mvms[lay.name] += reads
        adc[lay.name] += reads * int(col.size)
        cells[lay.name] += reads * ncells
        dac[lay.name] += float(nz[k]) / n
        t = cfg.read_pulse_s + load * cfg.adc_conversion_s
        core_time[(ins.cycle, ins.core)] = core_time.get((ins.cycle, ins.core), 0.0) + reads * t
    cycles = [0.0] * cfg.computation_cycles
    for (c, _), t in core_time.items():
        cycles[c] = max(cycles[c], t)
    for tr in program.noc:
        bits = tr.bytes * 8
        clk = tr.hops * cfg.hop_latency_cycles + math.ceil(bits / cfg.link_width_bits)
        if tr.cycle < len(cycles):
            cycles[tr.cycle] += clk / cfg.clock_hz
    return {
        "samples": n,
        "mvms": mvms,
        "adc_conversions": adc,
        "dac_conversions": dac,
        "cell_reads": cells,
        "adc_clipped": {lay.name: float(clipped[i]) / n for i, lay in enumerate(program.layers)},
        "cycle_time_s": cycles,
        "noc_bits": int(sum(t.bytes * 8 for t in program.noc)),
        "noc_bit_hops": int(sum(t.bytes * 8 * t.hops for t in program.noc)),
    }
