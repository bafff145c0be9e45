"""Simulate the emitted pipeline: integer inference and the cycle-level pipeline.

(a) **Integer inference** reads only the emitted files (:func:`~.postprocess.read_program`)
and runs each engine's arithmetic on integer codes, batch at once:

* the input interface quantizes a frame to its format: ``clip(rne(x·2^F))``;
* a multiplying engine accumulates ``Σ q_x·q_w + q_b`` exactly (int64; zero padding),
  applies its ReLU and requantizes by a per-output-channel shift ``F_in + F_w − F_out``,
  rounding half to even, then clips to the output format. The accumulator passes the
  requantizer as a value with a 24-bit significand (the rounding of the quantized reference,
  whose tensors are float32; with 8-bit operands it acts only on sums of 2^24 or more). An
  engine whose output is a graph output emits its accumulator, scaled;
* an add aligns its two inputs to the finer format, adds, requantizes; an activation
  clamps at zero and requantizes; a max pool compares codes (its output keeps its input's
  format); an average pool sums codes and divides by the window size as IEEE binary64, then
  rounds to binary32 (the quantized reference's arithmetic), before requantizing.

With power-of-two scales every step equals the quantized reference
(``hwmap.execute.run(legalized, x, quantized=True)``) bit for bit: the plugin claims
``FidelityClaim(bit_exact=True)``.

(b) The **cycle simulation** (:mod:`.cyclesim`) of the configured pipeline from the same
files: the measured initiation interval, latency and FIFO occupancy go to the activity.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmap import Artifacts, Simulation, Target, TargetError

from .buffers import output_layers, sim_layers
from .cyclesim import latency as cycle_latency
from .cyclesim import simulate as cycle_simulate
from .postprocess import Program, ProgramLayer, read_program
from .program_checks import batch_for

__all__ = ["simulate", "run_program", "rne_shift", "f32_significand", "SLICE"]

SLICE = 256


def f32_significand(v: np.ndarray) -> np.ndarray:
    """``v`` (int64) rounded to 24 significant bits, half to even (IEEE binary32 rounding)."""
    big = np.abs(v) >= (1 << 24)
    if not np.any(big):
        return v
    return np.where(big, v.astype(np.float32).astype(np.int64), v)


def rne_shift(v: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """``v · 2^−shift`` rounded half to even; a negative shift multiplies exactly."""
    sh = np.broadcast_to(np.asarray(shift, dtype=np.int64), v.shape)
    pos = np.maximum(sh, 0)
    half = np.where(pos > 0, np.left_shift(np.int64(1), np.maximum(pos - 1, 0)), 0)
    odd = np.right_shift(v, pos) & 1
    down = np.right_shift(v + half - (pos > 0) + np.where(pos > 0, odd, 0), pos)
    return np.where(sh > 0, down, np.left_shift(v, np.maximum(-sh, 0)))


def _clip(q: np.ndarray, fmt: dict[str, Any]) -> np.ndarray:
    bits, signed = fmt["bits"], fmt["signed"]
    lo, hi = (-(2 ** (bits - 1)) + 1, 2 ** (bits - 1) - 1) if signed else (0, 2 ** bits - 1)
    return np.clip(q, lo, hi)


def _dequant(q: np.ndarray, frac: np.ndarray | int) -> np.ndarray:
    return (q.astype(np.float64) * np.power(2.0, -np.asarray(frac, dtype=np.float64))).astype(np.float32)


def _channels(a: np.ndarray, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along axis 1 of an ``ndim`` array."""
    return a.reshape([1, -1] + [1] * (ndim - 2))


def _windows(x: np.ndarray, spec: Any, pad_value: int) -> np.ndarray:
    """(N, C, OH, OW, KH, KW) windows of ``x`` (N, C, H, W)."""
    (kh, kw), (sh, sw), (pt, pl, pb, pr) = spec.kernel, spec.stride, spec.pads
    xp = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=pad_value)
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(2, 3))
    oh, ow = spec.out_shape[1], spec.out_shape[2]
    return win[:, :, :oh * sh:sh, :ow * sw:sw]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer product: float64 BLAS while every partial sum stays below 2^53."""
    bound = float(np.max(np.abs(a), initial=0)) * float(np.max(np.sum(np.abs(b), axis=0), initial=0))
    if bound < 2.0 ** 52:
        return np.rint(a.astype(np.float64) @ b.astype(np.float64)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def _accumulate(layer: ProgramLayer, x: np.ndarray) -> np.ndarray:
    spec, w = layer.spec, layer.weights
    assert w is not None
    n = x.shape[0]
    if spec.kind == "fc":
        flat = x.transpose(0, 2, 3, 1).reshape(n, -1) if x.ndim == 4 else x.reshape(n, -1)
        acc = _matmul(flat, w.T)
        return acc.reshape(n, -1, 1, 1)
    win = _windows(x, spec, 0)  # (N, C, OH, OW, KH, KW)
    oh, ow = spec.out_shape[1], spec.out_shape[2]
    if spec.kind == "depthwise":
        acc = np.einsum("ncyxij,cij->ncyx", win.astype(np.int64), w, optimize=True)
        return acc
    cols = win.transpose(0, 2, 3, 4, 5, 1).reshape(n * oh * ow, -1)  # (kh, kw, c) order
    acc = _matmul(cols, w.reshape(w.shape[0], -1).T)
    return acc.reshape(n, oh, ow, -1).transpose(0, 3, 1, 2)


def _compute(layer: ProgramLayer, x: np.ndarray, fin: dict[str, Any]) -> tuple[np.ndarray, Any]:
    """(codes, frac) of a multiplying engine's output; raw accumulator if it has no format."""
    acc = _accumulate(layer, x)
    if layer.bias is not None:
        acc = acc + _channels(layer.bias, acc.ndim)
    assert layer.weight_frac is not None
    k = fin["frac"] + layer.weight_frac  # per output channel
    v = f32_significand(acc)
    if layer.spec.relu:
        v = np.maximum(v, 0)
    out = layer.out_format
    if out is None:
        return v, _channels(k, v.ndim)
    return _clip(rne_shift(v, _channels(k - out["frac"], v.ndim)), out), out["frac"]


def _requant(v: np.ndarray, frac: int, out: dict[str, Any]) -> np.ndarray:
    return _clip(rne_shift(f32_significand(v), frac - out["frac"]), out)


def run_program(prog: Program, x: np.ndarray) -> dict[str, np.ndarray]:
    """Integer inference of ``prog`` on the batch ``x`` (float inputs): the graph outputs."""
    vals: list[tuple[np.ndarray, Any] | None] = [None] * len(prog.layers)
    for layer in prog.layers:
        spec = layer.spec
        if spec.kind == "source":
            fmt = layer.out_format
            assert fmt is not None
            xx = np.asarray(x, dtype=np.float32).astype(np.float64)
            q = _clip(np.round(xx * 2.0 ** fmt["frac"]), fmt).astype(np.int64)
            c, h, w = spec.out_shape
            vals[layer.index] = (q.reshape(q.shape[0], c, h, w), fmt["frac"])
            continue
        ins = []
        for p in layer.inputs:
            v = vals[p]
            assert v is not None
            ins.append(v)
        out = layer.out_format
        if spec.kind in ("conv", "pointwise", "depthwise", "fc"):
            vals[layer.index] = _compute(layer, ins[0][0], layer.in_formats[0])
        elif spec.kind == "add":
            (a, fa), (b, fb) = ins
            f = max(fa, fb)
            s = np.left_shift(a, f - fa) + np.left_shift(b, f - fb)
            assert out is not None
            vals[layer.index] = (_requant(s, f, out), out["frac"])
        elif spec.kind == "activation":
            assert out is not None
            vals[layer.index] = (_requant(np.maximum(ins[0][0], 0), ins[0][1], out), out["frac"])
        elif spec.kind == "pool":
            vals[layer.index] = _pool(layer, ins[0][0], ins[0][1])
        else:
            raise TargetError(f"layer {spec.name!r}: unknown kind {spec.kind!r}")
    result = {}
    for o in prog.outputs:
        v = vals[o["layer"]]
        assert v is not None
        q, frac = v
        result[o["tensor"]] = _dequant(q, frac).reshape(q.shape[0], *o["shape"])
    return result


def _pool(layer: ProgramLayer, x: np.ndarray, frac: int) -> tuple[np.ndarray, Any]:
    spec, out = layer.spec, layer.out_format
    assert out is not None
    if spec.pool == "global_max":
        return x.max(axis=(2, 3), keepdims=True), frac
    if spec.pool == "max":
        return _windows(x, spec, np.iinfo(np.int64).min).max(axis=(4, 5)), frac
    if spec.pool == "global_avg":
        s, cnt = x.sum(axis=(2, 3), keepdims=True), spec.in_shape[1] * spec.in_shape[2]
    else:
        s, cnt = _windows(x, spec, 0).sum(axis=(4, 5)), spec.kernel[0] * spec.kernel[1]
    y = ((s.astype(np.float64) * 2.0 ** -frac) / cnt).astype(np.float32).astype(np.float64)
    return _clip(np.round(y * 2.0 ** out["frac"]).astype(np.int64), out), out["frac"]


def cycle_simulation(prog: Program) -> Any:
    specs = [pl.spec for pl in prog.layers]
    fifo = [[int(d) for d in pl.fifo_depths] for pl in prog.layers]
    outs = output_layers(specs, [o["tensor"] for o in prog.outputs] + [specs[o["layer"]].tensor
                                                                        for o in prog.outputs])
    cycles = [pl.cycles for pl in prog.layers]
    engines = sim_layers(specs, cycles, fifo, prog.pixels_per_cycle)
    res = cycle_simulate(engines, outs, prog.sim_frames, pace=float(max(cycles)), spread=True)
    res.latency = cycle_latency(engines, outs)
    return res


def simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    prog = read_program(artifacts)
    if set(inputs) != {prog.input_tensor}:
        raise TargetError(f"the pipeline takes input {prog.input_tensor!r}, got {sorted(inputs)}")
    x = np.asarray(inputs[prog.input_tensor])
    if list(x.shape[1:]) != prog.input_shape:
        raise TargetError(f"input of shape {list(x.shape[1:])}, the pipeline takes {prog.input_shape}")
    n = int(x.shape[0])
    step = batch_for(prog, SLICE, str(artifacts.path("pipeline.json")))
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, n, step):
        for k, v in run_program(prog, x[start:start + step]).items():
            parts.setdefault(k, []).append(v)
        target.report_progress(min(start + step, n), n)
    outputs = {k: np.concatenate(v) for k, v in parts.items()}
    cyc = cycle_simulation(prog)
    activity = {"samples": n, "simulated_initiation_interval_cycles": cyc.ii, "simulated_latency_cycles": cyc.latency,
                "deadlock": cyc.deadlock, "peak_fifo_occupancy": cyc.occupancy}
    return Simulation(outputs, activity)
