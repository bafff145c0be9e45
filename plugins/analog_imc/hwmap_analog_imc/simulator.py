"""The analog IMC simulator: runs an emitted program, read back from disk, on a batch of inputs.

Nothing comes from the mapping or the graph: the simulator reads ``program.bin`` (see
:mod:`~hwmap_analog_imc.program`), checks it against the chip it names
(:mod:`~hwmap_analog_imc.program_placement`) and runs its instruction stream on the cores'
state (:mod:`~hwmap_analog_imc.machine`): PROGRAM writes each core's cells, READ drives the
blocks on its own core with the cells as programmed and the input its core's buffer holds,
ACCUM adds into the partial sums of its destination core, NOC moves data between the
cores' buffers, DIGITAL runs on what its core holds; data not where an instruction needs
it is a :class:`hwmap.TargetError` naming the instruction. That run depends on the program
only, so it happens once, when a session is made; it gives the cells every READ drove and
the order in which the layers and digital ops finished. Like an onnxruntime
``InferenceSession``, :class:`Simulator` splits the work in two: :meth:`Simulator.load`
reads, checks and runs the stream once and prepares every layer from the cells the READs
drove (weight matrices, im2col index plans, ADC scales, noisy cells); :meth:`Simulator.run`
computes the values, a layer at a time in that order. :func:`simulate` is both, for the
flow (which reads the artifacts from disk on every call).

A crossbar layer runs the arithmetic of :mod:`~hwmap_analog_imc.crossbar` (DAC, crossbar, ADC,
shift and add, dequantize, then its fused post-ops): with noise off through the fast exact
kernel (:class:`~hwmap_analog_imc.fast_layer.FastLayer`) where its integer bounds hold, else
through the per-plane, per-column reference kernel
(:class:`~hwmap_analog_imc.crossbar.LayerKernel`); with noise off the two give the same bits.
Where the folded kernel runs a convolution whose post-ops are clamps and whose output is
quantized, its dequantization, post-ops and hold are one compiled pass
(:class:`~hwmap_analog_imc.epilogue.Epilogue`, the same operations in the same order), which
also hands the folded layer reading the output its DAC codes (that layer's own codes of
every value the grid holds, tabulated at load); :meth:`Simulator.execute` with ``collect``
runs the unfused stages instead, and tests compare the two.
Where an ACCUM adds its partial sums does not change their sum; the stream's run checks
that they get there.

Tensors are held as the hardware holds them: a tensor the TENSORS section declares
quantized (``q_scale``, ``q_zero_point``, ``q_bits``, ``q_signed``, ``q_narrow``) is put on its
grid, ``s·(q − z)`` with ``q = clip(round_half_even(x/s) + z, q_min, q_max)``, when it is
made (a graph input as it is loaded, a layer's output after its post-ops, a digital op's
output); a tensor declared without quantization stays float32. A digital op with a quantized
output computes on the exact values of its operands' codes (in float64, which holds every
8-bit code times its scale and their sums exactly enough to round once) and rounds its
result once to the output's grid, as a fixed-point unit with a wide accumulator does.

Digital ops and the post-ops follow hwmap's reference semantics
(``hwmap.ops.get_op(op).evaluate``). Without noise and with an ADC that never rounds (shift
0), the crossbar result is exactly ``Σ q_x·q_w``: the simulator then equals hwmap's shared
quantized reference (``hwmap.execute.run(graph, ..., quantized=True)``) bit for bit on every
quantized tensor, and up to float32 rounding on the others.

Activity per inference (MVMs, ADC and DAC conversions, cell reads, clipped conversions, NoC
traffic, the time of every computation cycle) is :mod:`~hwmap_analog_imc.activity`'s.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np

import hwmap
from hwmap import DataError, GraphError, HwmapError, Node, QuantAnnotation, TargetError
from hwmap.limits import check_size, max_memory
from hwmap.ops import get_op

from .activity import activity_record, static_activity
from .crossbar import LayerBase, LayerKernel, ScheduleIndex, adc_error_bound, input_codes, nonzero_digits
from .epilogue import Epilogue, plan_handoffs
from .fast_layer import FastLayer, NotExact, Tuning
from .hardware import NoiseConfig
from .machine import execute, value_order
from .program import (FLAG_AXIS, FLAG_INPUT, FLAG_OUTPUT, FLAG_QUANT, PROGRAM_FILE, Program, TensorRec,
                      load_program)
from .program_check import footprint

__all__ = ["PROGRAM_FILE", "Simulator", "simulate", "run_program", "adc_error_bound", "input_codes",
           "LayerKernel", "FastLayer"]

#: ``progress(done, total)``: samples simulated so far, of how many.
Progress = Callable[[int, int], None]
#: Bytes of working arrays one simulation slice may hold; larger batches run in slices.
_SLICE_BYTES = 256 * 2**20
#: How the fast kernel cuts its work (:class:`~hwmap_analog_imc.fast_layer.Tuning`), read when
#: a session is made (tests shrink them to run every packing and chunking loop).
_PACK_WORK, _CHUNK, _CHUNK_GEMM_ROWS = Tuning.pack_work, Tuning.chunk, Tuning.chunk_gemm_rows


def simulate(artifacts: hwmap.Artifacts, target: hwmap.Target, inputs: Mapping[str, np.ndarray]) -> hwmap.Simulation:
    """Run the program in ``artifacts.directory`` on ``inputs`` (graph input name -> batch-first
    array): :meth:`Simulator.load` then :meth:`Simulator.run`, telling ``target.report_progress``
    after each slice of samples. The device noise model is applied when
    ``target.config.noise.enabled``."""
    return Simulator.load(artifacts, target).run(inputs, progress=target.report_progress)


def run_program(program: Program, inputs: Mapping[str, np.ndarray], *, noise: NoiseConfig | None = None,
                collect: bool = False) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
    """Execute ``program`` on ``inputs``; returns (outputs by graph output name, activity, and
    with ``collect`` every tensor by name plus ``"<layer>/acc"``, a layer's dequantized
    result before its post-ops)."""
    return Simulator(program, noise).execute(inputs, collect=collect)


# ------------------------------------------------------------------------------ the session
@dataclass
class _Op:
    """A node the digital logic runs (a digital op or a fused post-op) and its reference
    semantics (``hwmap.ops.get_op(op).evaluate``)."""

    node: Node
    evaluate: Callable[[Node, list[np.ndarray]], list[np.ndarray]]

    @classmethod
    def of(cls, node: Node) -> "_Op":
        opdef = get_op(node.op, where=f"node {node.name!r}")
        if opdef.evaluate is None:
            raise TargetError(f"op {node.op} has no stateless semantics the digital logic could run",
                              where=f"node {node.name!r}")
        return cls(node, opdef.evaluate)

    def __call__(self, args: list[np.ndarray]) -> list[np.ndarray]:
        try:
            return self.evaluate(self.node, args)
        except HwmapError:
            raise
        except _EVALUATION_ERRORS as e:
            raise GraphError(f"evaluation failed: {type(e).__name__}: {e}",
                             where=f"node {self.node.name!r} ({self.node.op})") from None


def _quietly(f: Callable[..., Any]) -> Callable[..., Any]:
    """``f`` run with numpy's floating-point warnings off: arithmetic a program drives to
    infinity or NaN (a scale of 1e300) gives that as its result, which the fidelity shows,
    not a warning on stderr beside hwmap's one-line messages."""
    @functools.wraps(f)
    def quiet(*args: Any, **kwargs: Any) -> Any:
        with np.errstate(all="ignore"):
            return f(*args, **kwargs)
    return quiet


#: What an op's reference semantics raise on operands or attributes a program got wrong.
_EVALUATION_ERRORS = (ValueError, IndexError, TypeError, ZeroDivisionError, KeyError, AttributeError, OverflowError,
                      FloatingPointError, RecursionError)


@dataclass
class _PostOp:
    op: _Op
    extra: tuple[int, ...]
    position: int


@dataclass
class _Digital:
    op: _Op
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    rebase: bool  # a constant Reshape target starting with the compiled batch (see _rebased_op)


class Simulator:
    """A program decoded and prepared to run, like an onnxruntime ``InferenceSession``.

    Construction runs the instruction stream on the cores' state once
    (:func:`~hwmap_analog_imc.machine.execute`: a program whose data would not be where an
    instruction needs it is refused here; ``noc_bits_moved`` is what its NOC records moved
    per inference), then prepares every layer from the cells its READs drove
    (:class:`FastLayer` with noise off, else :class:`LayerKernel` with the noisy cells drawn
    once), the digital and post-op nodes and the activity that does not depend on the data;
    :meth:`run` then only computes, the layers in the order the stream finished them. Runs are
    independent and give identical results (a session keeps nothing from one run to the
    next but Reshape nodes rebased to a batch size)."""

    def __init__(self, program: Program, noise: NoiseConfig | None = None, *, where: str | None = None,
                 batch: int = 1) -> None:
        prepare, per_sample = footprint(program, noise is not None)
        check_size(prepare + per_sample, f"simulating the program ({prepare:,} bytes to prepare its layers, "
                   f"{per_sample:,} per sample)", where=where, error=TargetError)
        self.program = program
        self.noise = noise
        self.batch = max(1, int(batch))  # inferences per programming of the computation cycles
        self._names = [t.name for t in program.tensors]
        ran = execute(program)  # where everything is when each instruction runs; the cells READs drive
        self.noc_bits_moved = ran.noc_bits
        view = replace(program, weights=[replace(w, cells=ran.cells[b]) if b in ran.cells else w
                                         for b, w in enumerate(program.weights)])
        index = ScheduleIndex.of(view)
        self._layers = [_prepare_layer(view, i, noise, index) for i in range(len(program.layers))]
        self._quant = [_annotation(program, t) for t in program.tensors]
        self._postops: list[list[_PostOp]] = [[] for _ in program.layers]
        for po in program.postops:
            node = _node(po.name, po.op, po.attrs, [f"in{j}" for j in range(len(po.extra) + 1)], ["out"],
                         po.params, program)
            self._postops[po.layer].append(_PostOp(_Op.of(node), po.extra, po.position))
        #: per layer, its dequantization, clamping post-ops and hold in one compiled pass, or None
        self._epilogues = [Epilogue.of(lay, [(po.op.node, len(po.extra)) for po in pos], self._quant[lay.rec.output])
                           if isinstance(lay, FastLayer) and lay.fold is not None else None
                           for lay, pos in zip(self._layers, self._postops)]
        self._handoff, self._takes_codes = plan_handoffs(self._layers, self._epilogues)
        self._steps = value_order(program, ran.steps)
        self._digital = [self._prepare_digital(i) for i in range(len(program.digital))]
        self._rebased: dict[tuple[int, int], _Op] = {}
        self._outputs = [(i, t.name) for i, t in enumerate(program.tensors) if t.flags & FLAG_OUTPUT]
        self._step = self._slice_samples()
        self._static = static_activity(program)

    @classmethod
    def load(cls, artifacts: hwmap.Artifacts, target: hwmap.Target) -> "Simulator":
        """Read ``program.bin`` through ``artifacts`` (:func:`~hwmap_analog_imc.program.load_program`:
        only a listed, regular file inside the artifacts directory) and prepare it; device
        noise when ``target.config.noise.enabled``."""
        program = load_program(artifacts)
        noise_cfg = getattr(target.config, "noise", None)
        noise = noise_cfg if isinstance(noise_cfg, NoiseConfig) and noise_cfg.enabled else None
        batch = getattr(getattr(target.config, "schedule", None), "batch", 1)
        return cls(program, noise, where=str(artifacts.path(artifacts.manifest.get("program", PROGRAM_FILE))),
                   batch=batch if isinstance(batch, int) else 1)

    @property
    def layers(self) -> list[FastLayer | _ReferenceLayer]:
        """The prepared kernel of every crossbar layer, in program order."""
        return list(self._layers)

    @property
    def epilogues(self) -> list[Epilogue | None]:
        """Per crossbar layer, its fused dequantization, clamps and hold
        (:class:`~hwmap_analog_imc.epilogue.Epilogue`), or None where it keeps the unfused
        stages (which :meth:`execute` with ``collect`` runs for every layer)."""
        return list(self._epilogues)

    def work(self) -> dict[str, int]:
        """Multiply-adds per sample: ``model`` (the layers' MACs, what a float runtime does),
        ``exact`` and ``rounding`` (what the simulator's GEMMs do: the transparent-column
        GEMMs, and the GEMMs on the digit planes of the rounding columns)."""
        out = {"model": 0, "exact": 0, "rounding": 0}
        for lay in self._layers:
            r = lay.rec
            out["model"] += r.groups * r.rows * r.filters * r.positions
            exact, rounding = lay.work()
            out["exact"] += exact
            out["rounding"] += rounding
        return out

    def run(self, inputs: Mapping[str, np.ndarray], *, progress: Progress | None = None) -> hwmap.Simulation:
        """Outputs and activity of one batch (graph input name -> batch-first array);
        ``progress(done, total)`` after each slice of samples."""
        outputs, activity, _ = self.execute(inputs, progress=progress)
        return hwmap.Simulation(outputs, activity)

    def execute(self, inputs: Mapping[str, np.ndarray], *, collect: bool = False, progress: Progress | None = None
                ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
        """As :func:`run_program`: outputs, activity and (with ``collect``) every tensor.
        ``progress(done, total)`` is called after each slice of samples (the last call says
        ``done == total``), so a long simulation shows how far it has come."""
        program = self.program
        arrays, n = _check_inputs(program, inputs)
        counts: list[Any] = [0] * len(program.layers)  # nonzero DAC digits per READ, per layer
        clipped = [0] * len(program.layers)
        parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        for start in range(0, n, self._step):
            part = {t: a[start:start + self._step] for t, a in arrays.items()}
            parts.append(self._forward(part, counts, clipped, collect))
            if progress is not None:
                progress(min(start + self._step, n), n)
        if len(parts) == 1:
            outputs = {k: np.ascontiguousarray(v) for k, v in parts[0][0].items()}
            collected = {k: np.ascontiguousarray(v) for k, v in parts[0][1].items()}
        else:
            outputs = {k: np.concatenate([p[0][k] for p in parts], axis=0) for k in parts[0][0]}
            collected = {k: np.concatenate([p[1][k] for p in parts], axis=0) for k in parts[0][1]}
        return outputs, activity_record(self._static, program, n, counts, clipped, self.batch), collected

    # -- preparation
    def _prepare_digital(self, i: int) -> _Digital:
        program = self.program
        d = program.digital[i]
        node = _node(d.name, d.op, d.attrs, [self._names[t] for t in d.inputs], [self._names[t] for t in d.outputs],
                     d.params, program)
        target = node.params.get("shape") if node.op == "Reshape" else None
        batch = program.config.batch
        rebase = (target is not None and target.ndim == 1 and target.size > 0 and int(target[0]) == batch
                  and bool(d.inputs) and program.tensors[d.inputs[0]].shape[:1] == (batch,))
        return _Digital(_Op.of(node), d.inputs, d.outputs, rebase)

    def _slice_samples(self) -> int:
        """Samples per slice: every layer's working arrays within ``_SLICE_BYTES`` (a quarter
        of the memory bound when that is smaller)."""
        budget = min(_SLICE_BYTES, max_memory() // 4)
        return max(1, budget // max(1, max((lay.bytes_per_sample for lay in self._layers), default=1)))

    # -- execution
    @_quietly
    def _forward(self, inputs: dict[int, np.ndarray], counts: list[Any], clipped: list[int],
                 collect: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One slice of samples through every step; adds to ``counts`` and ``clipped``."""
        names = self._names
        env: dict[int, np.ndarray] = {t: self._hold(t, a) for t, a in inputs.items()}
        handed: dict[int, np.ndarray] = {}  # tensor -> the DAC codes its maker handed to the layer reading it
        extra: dict[str, np.ndarray] = {}
        n = next(iter(inputs.values())).shape[0] if inputs else 1
        for kind, i in self._steps:
            if kind == 1:
                d = self._digital[i]
                op = self._rebased_op(i, n) if d.rebase and n != self.program.config.batch else d.op
                args = [_get(env, t, names, op.node.name) for t in d.inputs]
                fixed = any(self._quant[t] is not None for t in d.outputs)
                res = op([a.astype(np.float64) if fixed and a.dtype == np.float32 else a for a in args])
                if len(res) != len(d.outputs):
                    raise TargetError(f"gave {len(res)} outputs for {len(d.outputs)}",
                                      where=f"digital op {op.node.name!r}")
                env.update((t, self._hold(t, v) if fixed else v) for t, v in zip(d.outputs, res))
                continue
            layer = self._layers[i]
            rec = layer.rec
            x = _get(env, rec.input, names, rec.name)
            given = handed.get(rec.input) if self._takes_codes[i] else None
            acc, clip, nz = layer.run(x) if given is None else layer.run(x, given)
            clipped[i] += clip
            counts[i] = counts[i] + nz
            epilogue = None if collect else self._epilogues[i]
            fused = None if epilogue is None else epilogue.run(acc, self._handoff[i])
            if fused is not None:
                env[rec.output] = fused[0]
                if fused[1] is not None:
                    handed[rec.output] = fused[1]
                continue
            y = layer.dequantize(acc)
            if collect:
                extra[f"{rec.name}/acc"] = y
            for po in self._postops[i]:
                operands = [_get(env, t, names, po.op.node.name) for t in po.extra]
                operands.insert(po.position, y)
                y = po.op(operands)[0]
            env[rec.output] = self._hold(rec.output, y)
        missing = [name for i, name in self._outputs if i not in env]
        if missing:
            raise TargetError(f"graph output {missing[0]!r} is produced by no instruction")
        if collect:
            extra.update({names[t]: v for t, v in env.items()})
        return {name: env[i] for i, name in self._outputs}, extra

    def _hold(self, t: int, value: np.ndarray) -> np.ndarray:
        """Tensor ``t`` as the hardware holds it: on the grid of its declared quantization
        (TENSORS ``q_scale``, ``q_zero_point``, ``q_bits``...), else as computed (float32)."""
        q = self._quant[t]
        if q is None:
            return value.astype(np.float32, copy=False)
        # QuantAnnotation.dequantize(quantize(value)) in place: the same float64 operations
        scale, zero = q.scale, q.zero_point
        if q.axis is not None:
            shape = [1] * value.ndim
            shape[q.axis % value.ndim] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        x = np.divide(value, scale, dtype=np.float64)
        np.rint(x, out=x)
        x += zero
        np.clip(x, q.qmin, q.qmax, out=x)
        x -= zero
        x *= scale
        return x.astype(np.float32)

    def _rebased_op(self, i: int, n: int) -> _Op:
        """The Reshape of digital op ``i`` with its constant target's batch set to ``n`` (as
        the reference executor does), so a program compiled at batch 1 runs any batch."""
        key = (i, n)
        if key not in self._rebased:
            op = self._digital[i].op
            node = op.node.copy()
            t = np.array(node.params["shape"], copy=True)
            t[0] = n
            node.params = {**node.params, "shape": t}
            self._rebased[key] = _Op(node, op.evaluate)
        return self._rebased[key]


# ------------------------------------------------------------------------------ layers
@_quietly
def _prepare_layer(program: Program, layer_id: int, noise: NoiseConfig | None,
                   index: ScheduleIndex) -> FastLayer | _ReferenceLayer:
    """The fast exact kernel with noise off where its bounds hold, else the reference one."""
    if noise is None:
        try:
            return FastLayer(program, layer_id, index, Tuning(_PACK_WORK, _CHUNK, _CHUNK_GEMM_ROWS))
        except NotExact:
            pass
    return _ReferenceLayer(program, layer_id, noise, index)


class _ReferenceLayer(LayerBase):
    """A :class:`LayerKernel` behind the session's layer interface (noise on, or a layer
    whose integer bounds :class:`~hwmap_analog_imc.fast_layer.FastLayer` cannot prove)."""

    def __init__(self, program: Program, layer_id: int, noise: NoiseConfig | None, index: ScheduleIndex) -> None:
        self.kernel = k = LayerKernel(program, layer_id, noise, index)
        self._init_common(program, k.rec)
        r = k.rec
        # working bytes per sample: the layer's codes and accumulators, and per stack the
        # bit-planes (int32 and float32) and column sums
        layer = r.groups * r.positions * (r.rows * 5 + r.filters * 8)
        cols = [s.filter_count * r.cols_per_filter for s in k.stacks]
        stack = max((len(s.blocks) * s.pos_count * (r.planes * (s.row_count * 8 + c * 4) + s.row_count * 4 + c * 8)
                     for s, c in zip(k.stacks, cols)), default=0)
        self.bytes_per_sample = layer + stack

    def work(self) -> tuple[int, int]:
        """As :meth:`FastLayer.work`: transparent stacks, and per plane and column the rest."""
        k = self.kernel
        exact = rounding = 0
        for st in k.stacks:
            macs = len(st.blocks) * st.pos_count * st.row_count * st.filter_count
            if st.exact is not None:
                exact += macs
            else:
                rounding += macs * self.rec.planes * self.rec.cols_per_filter
        return exact, rounding

    def run(self, x: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """As :meth:`FastLayer.run`."""
        rec = self.rec
        u = input_codes(rec, x)
        acc, clipped = self.kernel.run(u)
        digits = nonzero_digits(u, rec.planes, self.kernel.dac)
        counts = np.array([int(digits[r.group, :, r.pos_start:r.pos_start + r.pos_count,
                                      r.row_start:r.row_start + r.row_count].sum(dtype=np.int64))
                           for r in self.kernel.reads], dtype=np.int64)
        return acc.transpose(1, 0, 2, 3), clipped, counts


# ------------------------------------------------------------------------------ nodes and inputs
def _annotation(program: Program, t: TensorRec) -> QuantAnnotation | None:
    """The quantization a TENSORS record declares (None: a float32 tensor)."""
    if not t.flags & FLAG_QUANT:
        return None
    scale, zero = program.const(t.q_scale).reshape(-1), program.const(t.q_zero_point).reshape(-1)
    n = max(scale.size, zero.size)  # 1, or the axis' length (checked when the program is read)
    per_axis = bool(t.flags & FLAG_AXIS) and n > 1
    scale, zero = np.broadcast_to(scale, n).copy(), np.broadcast_to(zero, n).copy()
    return QuantAnnotation(scale if per_axis else scale[0], zero if per_axis else zero[0], t.q_bits,
                           bool(t.q_signed), t.q_axis if per_axis else None, bool(t.q_narrow))


def _node(name: str, op: str, attrs: str, inputs: list[str], outputs: list[str],
          params: tuple[tuple[str, int], ...], program: Program) -> Node:
    return Node(name, op, inputs, outputs, json.loads(attrs), {slot: program.const(r) for slot, r in params})


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
        if a.dtype.kind in "fc" and np.isnan(a).any():
            raise DataError(f"input {name!r} holds NaN, which no DAC code represents")
        if n is not None and a.shape[0] != n:
            raise DataError(f"input {name!r} has {a.shape[0]} samples, the others {n}")
        n = a.shape[0]
        out[tid] = a.astype(np.float32, copy=False)
    return out, n or 1


def _get(env: dict[int, np.ndarray], t: int, names: list[str], who: str) -> np.ndarray:
    if t not in env:
        raise TargetError(f"reads tensor {names[t]!r} before any instruction produced it", where=who)
    return env[t]
