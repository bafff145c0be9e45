"""The analog IMC simulator: runs an emitted program, read back from disk, on a batch of inputs.

Nothing comes from the mapping or the graph: the simulator reads ``program.bin`` (see
:mod:`~hwmap_analog_imc.program`) and executes its records in dataflow order. Like an
onnxruntime ``InferenceSession``, :class:`Simulator` splits the work in two:
:meth:`Simulator.load` reads and decodes the program once and prepares every layer (weight
matrices, im2col index plans, ADC scales, noisy cells); :meth:`Simulator.run` runs inferences.
:func:`simulate` is both, for the flow (which reads the artifacts from disk on every call).

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

An ACCUM's destination core, and the NOC records, say where this work happens and what moves
between cores (a copy finishing its filters on its own core, partial sums only for filters
split over cores); they enter the activity (``noc_bits``, ``noc_bit_hops``, ``cycle_time_s``),
not the values computed.

Digital ops run with the same reference semantics. Without noise and with an ADC that never
rounds (shift 0), the crossbar result is exactly ``Σ q_x·q_w``: the simulator then equals the
reference model with fake-quantized inputs and weights up to float32 rounding.

How it is computed (noise off). Everything in steps 2–4 is integer arithmetic, and integer
sums held in floats are exact, in any order, while every partial sum stays below 2^24
(float32) or 2^53 (float64); :class:`FastLayer` checks those bounds for each layer when the
program is loaded and, where they hold, reorders the work for speed without changing one
bit of the result:

* a column ``j`` of a block whose ADC provably neither rounds nor clips (every active plane
  has shift 0 and ``max digit × Σ_r G[r, j] ≤ 2^adc_bits − 1``) is *transparent*: its planes
  add up to ``u``, so all transparent columns, the ``xsum`` correction and the ACCUM offsets
  of a layer fold into one integer weight matrix and one GEMM on the codes ``u``;
* the other (*rounding*) columns of the blocks that share word lines are one GEMM on the
  digit planes; ``k`` planes are packed into one float (``d_p + 2^b·d_q + ...``, ``2^b`` above
  any column sum, ``b·k ≤ 24``) and split again exactly after the GEMM (floor of a power-of-
  two scaling, and a subtraction), which divides the GEMM's work by ``k``; the ADC and the
  shift-and-add then run on cache-sized chunks of the column sums;
* the im2col unrolling is one gather with an index plan made at load time (a 1×1
  convolution and a Gemm / MatMul need none: BLAS takes their input as it is), and the DAC
  activity comes from per-input-element digit counts and the multiplicity of each element
  in each READ.

What remains is arithmetic: ``planes/k`` GEMM rows per input vector on every rounding
column, against one multiply-add per weight for a float runtime (:meth:`Simulator.work`
counts both; ``bench/analog_imc.py`` prints them).

A layer whose bounds do not hold, and every layer with device noise on, runs the
straightforward per-block kernel (:class:`LayerKernel`: batched per plane and column, as the
chip reads).

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

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Union

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

import hwmap
from hwmap import DataError, GraphError, HwmapError, Node, TargetError
from hwmap.ops import get_op

from .hardware import NoiseConfig
from .noise import noisy_levels
from .program import FLAG_INPUT, FLAG_OUTPUT, NONE, AccumRec, LayerRec, Program, ReadRec, read_program

__all__ = ["PROGRAM_FILE", "Simulator", "simulate", "run_program", "adc_error_bound", "input_codes",
           "LayerKernel", "FastLayer"]

PROGRAM_FILE = "program.bin"
#: Bytes of working arrays one simulation slice may hold; larger batches run in slices.
_SLICE_BYTES = 256 * 2**20
#: Integers below these are exact in float32 / float64, and so are sums that stay below.
_F32_EXACT = 2**24
_F64_EXACT = 2**53
#: Elements of one chunk of ADC work: elementwise passes run ~2.5× faster in cache than
#: from memory.
_CHUNK = 2**19
#: Positions a GEMM chunk keeps at least (fewer make BLAS markedly slower).
_CHUNK_GEMM_ROWS = 256
#: Plane-column multiply-adds below which a layer's digit planes are not packed.
_PACK_WORK = 2**21


def simulate(artifacts: hwmap.Artifacts, target: hwmap.Target, inputs: Mapping[str, np.ndarray]) -> hwmap.Simulation:
    """Run the program in ``artifacts.directory`` on ``inputs`` (graph input name -> batch-first
    array): :meth:`Simulator.load` then :meth:`Simulator.run`. The device noise model is
    applied when ``target.config.noise.enabled``."""
    return Simulator.load(artifacts, target).run(inputs)


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
        except (ValueError, IndexError, TypeError, ZeroDivisionError) as e:
            raise GraphError(f"evaluation failed: {e}", where=f"node {self.node.name!r} ({self.node.op})") from None


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

    Construction prepares every layer once (:class:`FastLayer` with noise off, else
    :class:`LayerKernel` with the noisy cells drawn once), the digital and post-op nodes and
    the activity that does not depend on the data; :meth:`run` then only computes. Runs are
    independent and give identical results (a session keeps nothing from one run to the
    next but Reshape nodes rebased to a batch size)."""

    def __init__(self, program: Program, noise: NoiseConfig | None = None) -> None:
        self.program = program
        self.noise = noise
        self._names = [t.name for t in program.tensors]
        index = _ScheduleIndex.of(program)
        self._layers = [_prepare_layer(program, i, noise, index) for i in range(len(program.layers))]
        self._postops: list[list[_PostOp]] = [[] for _ in program.layers]
        for po in program.postops:
            node = _node(po.name, po.op, po.attrs, [f"in{j}" for j in range(len(po.extra) + 1)], ["out"],
                         po.params, program)
            self._postops[po.layer].append(_PostOp(_Op.of(node), po.extra, po.position))
        steps = sorted([(lay.order, 0, i) for i, lay in enumerate(program.layers)]
                       + [(d.order, 1, i) for i, d in enumerate(program.digital)])
        self._steps: list[tuple[int, int]] = [(kind, i) for _, kind, i in steps]
        self._digital = [self._prepare_digital(i) for i in range(len(program.digital))]
        self._rebased: dict[tuple[int, int], _Op] = {}
        self._outputs = [(i, t.name) for i, t in enumerate(program.tensors) if t.flags & FLAG_OUTPUT]
        self._step = self._slice_samples()
        self._static = _static_activity(program)

    @classmethod
    def load(cls, artifacts: hwmap.Artifacts, target: hwmap.Target) -> "Simulator":
        """Read ``program.bin`` from ``artifacts.directory`` and prepare it; device noise
        when ``target.config.noise.enabled``."""
        name = str(artifacts.manifest.get("program", PROGRAM_FILE))
        program = read_program(Path(artifacts.directory) / name)
        noise_cfg = getattr(target.config, "noise", None)
        noise = noise_cfg if isinstance(noise_cfg, NoiseConfig) and noise_cfg.enabled else None
        return cls(program, noise)

    @property
    def layers(self) -> list[Union["FastLayer", "_ReferenceLayer"]]:
        """The prepared kernel of every crossbar layer, in program order."""
        return list(self._layers)

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

    def run(self, inputs: Mapping[str, np.ndarray]) -> hwmap.Simulation:
        """Outputs and activity of one batch (graph input name -> batch-first array)."""
        outputs, activity, _ = self.execute(inputs)
        return hwmap.Simulation(outputs, activity)

    def execute(self, inputs: Mapping[str, np.ndarray], *, collect: bool = False
                ) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, np.ndarray]]:
        """As :func:`run_program`: outputs, activity and (with ``collect``) every tensor."""
        program = self.program
        arrays, n = _check_inputs(program, inputs)
        counts: list[Any] = [0] * len(program.layers)  # nonzero DAC digits per READ, per layer
        clipped = [0] * len(program.layers)
        parts: list[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = []
        for start in range(0, n, self._step):
            part = {t: a[start:start + self._step] for t, a in arrays.items()}
            parts.append(self._forward(part, counts, clipped, collect))
        if len(parts) == 1:
            outputs = {k: np.ascontiguousarray(v) for k, v in parts[0][0].items()}
            collected = {k: np.ascontiguousarray(v) for k, v in parts[0][1].items()}
        else:
            outputs = {k: np.concatenate([p[0][k] for p in parts], axis=0) for k in parts[0][0]}
            collected = {k: np.concatenate([p[1][k] for p in parts], axis=0) for k in parts[0][1]}
        return outputs, _activity(self._static, program, n, counts, clipped), collected

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
        """Samples per slice: the reference kernels' budget (so noisy runs slice as they always
        did), and each fast layer's working arrays within ``_SLICE_BYTES``."""
        ref = [lay.kernel for lay in self._layers if isinstance(lay, _ReferenceLayer)]
        step = _slice_samples(self.program, ref) if ref else _SLICE_BYTES
        fast = max((lay.bytes_per_sample for lay in self._layers if isinstance(lay, FastLayer)), default=1)
        return max(1, min(step, _SLICE_BYTES // max(1, fast)))

    # -- execution
    def _forward(self, inputs: dict[int, np.ndarray], counts: list[Any], clipped: list[int],
                 collect: bool) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """One slice of samples through every step; adds to ``counts`` and ``clipped``."""
        names = self._names
        env: dict[int, np.ndarray] = dict(inputs)
        extra: dict[str, np.ndarray] = {}
        n = next(iter(inputs.values())).shape[0] if inputs else 1
        for kind, i in self._steps:
            if kind == 1:
                d = self._digital[i]
                op = self._rebased_op(i, n) if d.rebase and n != self.program.config.batch else d.op
                res = op([_get(env, t, names, op.node.name) for t in d.inputs])
                if len(res) != len(d.outputs):
                    raise TargetError(f"gave {len(res)} outputs for {len(d.outputs)}",
                                      where=f"digital op {op.node.name!r}")
                env.update(zip(d.outputs, res))
                continue
            layer = self._layers[i]
            rec = layer.rec
            acc, clip, nz = layer.run(_get(env, rec.input, names, rec.name))
            clipped[i] += clip
            counts[i] = counts[i] + nz
            y = layer.dequantize(acc)
            if collect:
                extra[f"{rec.name}/acc"] = y
            for po in self._postops[i]:
                operands = [_get(env, t, names, po.op.node.name) for t in po.extra]
                operands.insert(po.position, y)
                y = po.op(operands)[0]
            env[rec.output] = y
        missing = [name for i, name in self._outputs if i not in env]
        if missing:
            raise TargetError(f"graph output {missing[0]!r} is produced by no instruction")
        if collect:
            extra.update({names[t]: v for t, v in env.items()})
        return {name: env[i] for i, name in self._outputs}, extra

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


def _prepare_layer(program: Program, layer_id: int, noise: NoiseConfig | None,
                   index: _ScheduleIndex) -> Union["FastLayer", "_ReferenceLayer"]:
    """The fast exact kernel with noise off where its bounds hold, else the reference one."""
    if noise is None:
        try:
            return FastLayer(program, layer_id, index)
        except _NotExact:
            pass
    return _ReferenceLayer(program, layer_id, noise, index)


# ------------------------------------------------------------------------------ layer common
class _LayerBase:
    """What both layer kernels share: the output scales and the dequantization."""

    rec: LayerRec

    def _init_common(self, program: Program, rec: LayerRec) -> None:
        self.rec = rec
        g, f = rec.groups, rec.filters
        self.scale = (rec.in_scale * program.const(rec.w_scale).astype(np.float64)).reshape(g, 1, f)
        self.bias = None if rec.bias == NONE else program.const(rec.bias).astype(np.float64).reshape(g, 1, f)
        x = program.tensors[rec.input].shape
        self.out_shape = tuple(rec.out_spatial) if rec.kernel else tuple(x[1:-1])

    def dequantize(self, acc: np.ndarray) -> np.ndarray:
        """``s_x·s_w[c]·acc + bias[c]`` (float64, then float32) of accumulations ``(N, G, P,
        F)``, laid out as the compute op's output (C-contiguous)."""
        n, g, p, f = acc.shape
        y = np.multiply(acc, self.scale)
        if self.bias is not None:
            y += self.bias
        if not self.rec.kernel:  # Gemm / MatMul: (N, *leading axes, F), one group
            return y.reshape(n, *self.out_shape, g * f).astype(np.float32)
        out = np.empty((n, g, f, p), dtype=np.float32)
        np.copyto(out, y.transpose(0, 1, 3, 2))
        return out.reshape(n, g * f, *self.out_shape)


@dataclass
class _ScheduleIndex:
    """The schedule sorted out once: each layer's READs (in schedule order) and every
    block's ACCUM."""

    reads: list[list[ReadRec]]
    accum: dict[int, AccumRec]

    @classmethod
    def of(cls, program: Program) -> "_ScheduleIndex":
        reads: list[list[ReadRec]] = [[] for _ in program.layers]
        accum: dict[int, AccumRec] = {}
        for ins in program.schedule:
            if isinstance(ins, ReadRec):
                reads[ins.layer].append(ins)
            else:
                accum[ins.block] = ins
        return cls(reads, accum)


def _layer_reads(program: Program, layer_id: int, index: _ScheduleIndex | None = None
                 ) -> tuple[list[ReadRec], dict[int, AccumRec]]:
    """The layer's READs in schedule order and every block's ACCUM; a block read twice, by
    another layer's READ, or never accumulated is a :class:`hwmap.TargetError`."""
    index = index or _ScheduleIndex.of(program)
    rec = program.layers[layer_id]
    reads, accum = index.reads[layer_id], index.accum
    seen: set[int] = set()
    for r in reads:
        for b in r.blocks:
            if b in seen or program.blocks[b].layer != layer_id:
                raise TargetError(f"block {b} is read twice or by another layer's READ", where=rec.name)
            if b not in accum:
                raise TargetError(f"block {b} is read but never accumulated (no ACCUM)", where=rec.name)
            seen.add(b)
    return reads, accum


def _check_cover(rec: LayerRec, pieces: list[tuple[np.ndarray, int, int, int, int, int, int]]) -> None:
    """Every (group, row, filter) of every position computed exactly once by the pieces
    ``(groups, row_start, row_count, filter_start, filter_count, pos_start, pos_count)``."""
    cover = np.zeros((rec.groups, rec.rows, rec.filters), dtype=np.int64)
    pos = np.zeros(rec.positions, dtype=np.int64)
    for groups, r0, rc, f0, fc, p0, pc in pieces:
        cover[groups, r0:r0 + rc, f0:f0 + fc] += pc
        pos[p0:p0 + pc] += len(groups) * rc * fc
    if (cover != rec.positions).any() or (pos != rec.groups * rec.rows * rec.filters).any():
        raise TargetError("the READ instructions do not cover every weight for every input vector exactly once",
                          where=rec.name)


def _max_digits(rec: LayerRec, dac: int) -> np.ndarray:
    """The largest DAC digit each plane can carry (0 for a plane no code reaches)."""
    umax = rec.in_qmax - rec.in_qmin
    return np.array([min(2**dac - 1, umax >> (p * dac)) for p in range(rec.planes)], dtype=np.int64)


# ------------------------------------------------------------------------------ fast layer
class _NotExact(Exception):
    """A layer whose integer sums could leave the exact range of floats (see FastLayer)."""


@dataclass
class _Segment:
    """Positions ``pos`` of a layer and the integer weights of their transparent columns."""

    pos: slice
    weights: np.ndarray  # (G, rows, filters): transparent columns and xsum corrections
    offsets: np.ndarray  # (G, 1, filters): the ACCUM offsets


@dataclass
class _Unit:
    """The rounding columns of blocks that share word lines (rows and input vectors), over
    a run of groups with the same blocks: one GEMM on the packed digit planes. Columns are
    slice-major (column ``j·F_u + f`` is slice ``j`` of the unit's filter ``f``)."""

    groups: slice
    pos: slice
    rows: slice
    filters: slice | np.ndarray  # the unit's filters, in column order
    levels: np.ndarray  # (G_u, rows, r·F_u) cell levels of the r rounding slices
    inv: float | np.ndarray  # 2^−shift: one number, or (k, J, 1, G_u, 1, r, F_u) per packing slot
    weight: np.ndarray | None  # None when every column's shift is the same for all planes,
    #                            else (k, J, 1, G_u, 1, r, F_u) = 2^(p·dac + shift)
    plane_w: np.ndarray  # (k·J,): 2^(p·dac) of the plane in each slot, 0 for an empty slot
    fac: np.ndarray  # (G_u, 1, r, F_u) float64: coef, times 2^shift when weight is None
    can_clip: bool
    wide_sum: bool  # the plane sum needs float64 (only with per-plane shifts)


@dataclass
class _Part:
    """One filter range of a block set: its blocks' data stacked over the set's groups."""

    filter_start: int
    filter_count: int
    cells: np.ndarray  # (n_groups, rows, filter_count·cols_per_filter) uint8 levels
    shifts: np.ndarray  # (n_groups, planes, cols_per_filter) ADC shifts
    offsets: np.ndarray  # (n_groups, filter_count) int64 ACCUM offsets
    xsum: np.ndarray  # (n_groups, 1, 1) int64 ACCUM xsum factors
    colmax: np.ndarray  # (n_groups, cols_per_filter): the largest level sum of each slice


@dataclass
class _BlockSet:
    """Blocks of one layer that read the same rows and positions, with the same filter
    ranges, in each of ``groups``."""

    row_start: int
    row_count: int
    pos_start: int
    pos_count: int
    groups: np.ndarray  # sorted group numbers
    parts: list[_Part]
    rounding: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # slices that round


class FastLayer(_LayerBase):
    """One crossbar layer prepared for exact, reordered execution (noise off; see the module
    docstring, "How it is computed"). Raises :class:`_NotExact` at construction when an
    integer bound fails; :func:`_prepare_layer` then uses the reference kernel."""

    def __init__(self, program: Program, layer_id: int, index: _ScheduleIndex | None = None) -> None:
        cfg = program.config
        rec = program.layers[layer_id]
        reads, accum = _layer_reads(program, layer_id, index)
        self._init_common(program, rec)
        self.dac = cfg.dac_bits
        self.amax = float(2**cfg.adc_bits - 1)
        self.dmax = _max_digits(rec, self.dac)
        self.active = np.flatnonzero(self.dmax)
        self.umax = rec.in_qmax - rec.in_qmin
        self.pad_code = rec.in_zero_point - rec.in_qmin  # the code of 0 (padding), and z − q_min
        self.coef = program.const(rec.coef).astype(np.int64)
        # the reference kernel's ADC arithmetic type, kept so the rounding is the same
        big = rec.rows * int(self.dmax.max(initial=0)) * (2**cfg.bits_per_cell - 1)
        self.adc_dtype = np.float32 if big < _F32_EXACT else np.float64
        sets = self._block_sets(program, reads, accum)
        _check_cover(rec, [(bs.groups, bs.row_start, bs.row_count, p.filter_start, p.filter_count, bs.pos_start,
                            bs.pos_count) for bs in sets for p in bs.parts])
        for bs in sets:
            bs.rounding = self._rounding_slices(bs)
        self.segments = self._segments(reads, sets)
        units = [(bs, run) for bs in sets if bs.rounding.size for run in _runs(bs.groups)]
        self._pack(units)
        self._rounding_bound = 0.0
        self.units = [self._unit(bs, run) for bs, run in units]
        if self.exact_bound + self._rounding_bound >= _F64_EXACT:  # the accumulations themselves
            raise _NotExact(rec.name)
        self._input_plan(program)
        self._activity_plan(program, reads)

    # -- preparation
    def _block_sets(self, program: Program, reads: list[ReadRec], accum: dict[int, AccumRec]) -> list[_BlockSet]:
        """The layer's blocks as block sets, their data stacked over groups."""
        rows: dict[tuple[int, int, int, int, int], list[int]] = {}
        for r in reads:
            for b in r.blocks:
                blk = program.blocks[b]
                rows.setdefault((blk.group, blk.row_start, blk.row_count, r.pos_start, r.pos_count), []).append(b)
        keyed: dict[tuple[Any, ...], list[tuple[int, list[int]]]] = {}
        for (g, r0, rc, p0, pc), bl in rows.items():
            bl.sort(key=lambda b: program.blocks[b].filter_start)
            fr = tuple((program.blocks[b].filter_start, program.blocks[b].filter_count) for b in bl)
            keyed.setdefault((r0, rc, p0, pc, fr), []).append((g, bl))
        cpf = self.rec.cols_per_filter
        sets = []
        for (r0, rc, p0, pc, fr), members in keyed.items():
            members.sort()
            parts = []
            for i, (f0, fc) in enumerate(fr):
                ids = [bl[i] for _, bl in members]
                offsets = [program.const(accum[b].offset) for b in ids]
                if any(o.shape != (fc,) for o in offsets):
                    raise TargetError(f"ACCUM offsets of blocks {ids} do not have {fc} filters", where=self.rec.name)
                cells = np.stack([program.weights[b].cells for b in ids])
                colmax = cells.sum(axis=1, dtype=np.int64).reshape(len(ids), fc, cpf).max(axis=1)
                parts.append(_Part(f0, fc, cells, np.stack([program.adc[b].shifts for b in ids]).astype(np.int64),
                                   np.stack(offsets).astype(np.int64),
                                   np.array([accum[b].xsum_factor for b in ids], dtype=np.int64).reshape(-1, 1, 1),
                                   colmax))
            sets.append(_BlockSet(r0, rc, p0, pc, np.array([g for g, _ in members], dtype=np.int64), parts))
        return sets

    def _rounding_slices(self, bs: _BlockSet) -> np.ndarray:
        """The slices (columns of a filter) some block of the set rounds: a slice is
        transparent in a block when every active plane has shift 0 and its largest column
        sum, ``max digit × Σ_r G``, is within the ADC range."""
        rounds = np.zeros(self.rec.cols_per_filter, dtype=bool)
        for p in bs.parts:
            shifts = p.shifts[:, self.active]  # (n_groups, active planes, cpf)
            fits = self.dmax[self.active, None] * p.colmax[:, None, :] <= self.amax
            rounds |= ~((shifts == 0) & fits).all(axis=1).all(axis=0)
        return np.flatnonzero(rounds)

    def _segments(self, reads: list[ReadRec], sets: list[_BlockSet]) -> list[_Segment]:
        """Per run of positions read by the same blocks, the transparent slices and xsum
        corrections as one integer matrix, and the summed ACCUM offsets."""
        rec = self.rec
        cuts = sorted({0, rec.positions} | {r.pos_start for r in reads} | {r.pos_start + r.pos_count for r in reads})
        segs = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
        mats = {s: np.zeros((rec.groups, rec.rows, rec.filters), dtype=np.int64) for s in segs}
        offs = {s: np.zeros((rec.groups, 1, rec.filters), dtype=np.int64) for s in segs}
        cpf = rec.cols_per_filter
        for bs in sets:
            keep = np.ones(cpf, dtype=bool)
            keep[bs.rounding] = False
            rows = slice(bs.row_start, bs.row_start + bs.row_count)
            inside = [s for s in segs if bs.pos_start <= s[0] and s[1] <= bs.pos_start + bs.pos_count]
            for p in bs.parts:
                cells = p.cells.reshape(len(bs.groups), bs.row_count, p.filter_count, cpf)[..., keep]
                w = (cells * self.coef[keep]).sum(axis=3) + p.xsum
                fs = slice(p.filter_start, p.filter_start + p.filter_count)
                for s in inside:
                    mats[s][bs.groups, rows, fs] += w
                    offs[s][bs.groups, 0, fs] += p.offsets
        bound = max(int((self.umax * np.abs(mats[s]).sum(axis=1) + np.abs(offs[s][:, 0])).max()) for s in segs)
        if bound >= _F64_EXACT:
            raise _NotExact(rec.name)
        self.exact_dtype = np.float32 if bound < _F32_EXACT else np.float64
        self.exact_bound = float(bound)
        return [_Segment(slice(*s), mats[s].astype(self.exact_dtype), offs[s].astype(self.exact_dtype)) for s in segs]

    def _pack(self, units: list[tuple[_BlockSet, slice]]) -> None:
        """How many planes share one float of the rounding GEMM's input: ``k`` planes of
        ``b`` bits (``2^b`` above the largest column sum of a rounding slice, ``b·k ≤ 24``
        in float32, 53 in float64) in each of ``J`` rows; and the table of every code's
        packed digits. Layers with little rounding work do not pack (unpacking costs more
        numpy calls than the smaller GEMM saves)."""
        top = int(self.dmax.max(initial=0))
        smax = max((top * int(p.colmax[run][:, bs.rounding].max(initial=0)) for bs, run in units for p in bs.parts),
                   default=0)
        self.bits = max(1, smax.bit_length())
        if self.bits > 53:
            raise _NotExact(self.rec.name)
        self.gemm_dtype: type = np.float32 if self.bits <= 24 else np.float64
        width = 24 if self.gemm_dtype == np.float32 else 53
        work = sum((run.stop - run.start) * bs.pos_count * bs.row_count * sum(p.filter_count for p in bs.parts)
                   * bs.rounding.size for bs, run in units) * len(self.active)
        self.k = max(1, min(len(self.active), width // self.bits)) if work >= _PACK_WORK else 1
        self.rows_packed = -(-len(self.active) // self.k) if units else 0
        self.lut = _packed_digits(self.umax, self.dac, tuple(self.active.tolist()) if units else (), self.k,
                                  self.bits, np.dtype(self.gemm_dtype).char)

    def _unit(self, bs: _BlockSet, run: slice) -> _Unit:
        """The groups ``run`` (indices into ``bs.groups``) of a block set as a rounding unit:
        its rounding slices' cells, per-slot ADC scales, plane weights and slice factors; and
        the bounds that keep its sums exact."""
        cpf, rounding = self.rec.cols_per_filter, bs.rounding
        r, gu, rc = rounding.size, run.stop - run.start, bs.row_count
        filt = np.concatenate([np.arange(p.filter_start, p.filter_start + p.filter_count) for p in bs.parts])
        nf = filt.size
        levels = np.zeros((gu, rc, r, nf), dtype=self.gemm_dtype)
        shift = np.zeros((gu, self.rec.planes, r, nf), dtype=np.int64)
        can_clip = False
        f = 0
        for p in bs.parts:
            fc = p.filter_count
            levels[..., f:f + fc] = p.cells[run].reshape(gu, rc, fc, cpf)[..., rounding].transpose(0, 1, 3, 2)
            sh = p.shifts[run][:, :, rounding]  # (G_u, planes, r)
            shift[..., f:f + fc] = sh[..., None]
            worst = self.dmax[self.active, None] * p.colmax[run][:, None, rounding]  # (G_u, active, r)
            can_clip |= bool((np.floor(worst / np.ldexp(1.0, sh[:, self.active]) + 0.5) > self.amax).any())
            f += fc
        k, rows = self.k, self.rows_packed
        inv = np.ones((k, rows, 1, gu, 1, r, nf), dtype=np.float64)
        weight = np.zeros_like(inv)
        plane_w = np.zeros((k, rows), dtype=np.float64)
        for q, plane in enumerate(self.active):
            inv[q % k, q // k, 0, :, 0] = np.ldexp(1.0, -shift[:, plane])
            weight[q % k, q // k, 0, :, 0] = np.ldexp(1.0, plane * self.dac + shift[:, plane])
            plane_w[q % k, q // k] = np.ldexp(1.0, plane * self.dac)
        coef = self.coef[rounding].astype(np.float64)
        top = self.amax * weight.sum(axis=(0, 1))  # (1, G_u, 1, r, F_u): per column, over planes
        bound = float((top * np.abs(coef)[:, None]).sum(axis=-2).max(initial=0.0))
        if bound >= _F64_EXACT:
            raise _NotExact(self.rec.name)
        self._rounding_bound += bound
        limit = _F32_EXACT if self.adc_dtype == np.float32 else _F64_EXACT
        act = shift[:, self.active]  # (G_u, active planes, r, F_u)
        uniform = bool((act == act[:, :1]).all()) and self.amax * plane_w.sum() < limit
        fac = np.broadcast_to(coef[:, None], (gu, 1, r, nf)).copy()
        if uniform:
            fac *= np.ldexp(1.0, act[:, :1])
        flat_inv = inv.reshape(-1)
        groups = bs.groups[run]
        fsel: slice | np.ndarray = (slice(int(filt[0]), int(filt[-1]) + 1)
                                    if np.array_equal(filt, np.arange(filt[0], filt[-1] + 1)) else filt)
        return _Unit(slice(int(groups[0]), int(groups[-1]) + 1), slice(bs.pos_start, bs.pos_start + bs.pos_count),
                     slice(bs.row_start, bs.row_start + rc), fsel, levels.reshape(gu, rc, r * nf),
                     float(flat_inv[0]) if (flat_inv == flat_inv[0]).all() else inv.astype(self.adc_dtype),
                     None if uniform else weight.astype(self.adc_dtype), plane_w.reshape(-1).astype(self.adc_dtype),
                     fac, can_clip, float(top.max(initial=0)) >= limit)

    def _input_plan(self, program: Program) -> None:
        """How the input vectors are formed from one group's input of ``size`` codes
        (``(C/G)·Π spatial``, channel-major; for Gemm / MatMul the positions' rows):
        ``"direct"`` (Gemm / MatMul: the rows are the vectors), ``"transpose"`` (a 1×1
        convolution with stride 1 and no padding: the vectors are the columns of the
        ``(C/G, positions)`` input, a transposed view BLAS takes as it is), or ``"gather"``
        (im2col: ``idx[position, row]`` into the input laid out one channel per row, each
        row ending with a padding slot)."""
        rec = self.rec
        shape = program.tensors[rec.input].shape
        if not rec.kernel:
            self.mode, self.idx, self.channels = "direct", None, 1
            self.group_size = rec.positions * rec.rows
            return
        cg, sp = shape[1] // rec.groups, tuple(shape[2:])
        self.group_size, self.channels = cg * math.prod(sp), cg
        if (all(k == 1 for k in rec.kernel) and all(s == 1 for s in rec.strides)
                and not any(rec.pads_begin) and not any(rec.pads_end)):
            self.mode, self.idx = "transpose", None
            return
        hw = math.prod(sp)
        grid = np.full([s + b + e for s, b, e in zip(sp, rec.pads_begin, rec.pads_end)], hw, dtype=np.intp)
        grid[tuple(slice(b, b + s) for s, b in zip(sp, rec.pads_begin))] = np.arange(hw).reshape(sp)
        span = [(k - 1) * d + 1 for k, d in zip(rec.kernel, rec.dilations)]
        win = sliding_window_view(grid, span)[tuple(slice(0, (o - 1) * st + 1, st) for o, st in
                                                    zip(rec.out_spatial, rec.strides))]
        win = win[(Ellipsis,) + tuple(slice(None, None, d) for d in rec.dilations)].reshape(rec.positions, -1)
        offsets = np.arange(cg, dtype=np.intp)[None, :, None] * (hw + 1)
        self.mode = "gather"
        self.idx = (offsets + win[:, None, :]).reshape(rec.positions, rec.rows)

    def _multiplicity(self, positions: slice, rows: slice) -> tuple[np.ndarray, float]:
        """How often each input element (``size``, channel-major) and the padding appear in
        the given positions and rows of the input vectors."""
        rec = self.rec
        if self.mode != "gather":
            shape = (rec.rows, rec.positions) if self.mode == "transpose" else (rec.positions, rec.rows)
            mult = np.zeros(shape, dtype=np.float64)
            (mult.T if self.mode == "transpose" else mult)[positions, rows] = 1.0
            return mult.reshape(-1), 0.0
        assert self.idx is not None  # mode "gather" always has its index
        slots = np.bincount(self.idx[positions, rows].ravel(), minlength=self.group_size + self.channels)
        slots = slots.reshape(self.channels, -1).astype(np.float64)
        return slots[:, :-1].reshape(-1), float(slots[:, -1].sum())

    def _activity_plan(self, program: Program, reads: list[ReadRec]) -> None:
        """Per distinct READ geometry (rows, positions), how often each input element (and
        the padding) is driven; per READ its geometry and group. Nonzero digits per code."""
        rec = self.rec
        self.nzlut = _nonzero_digit_counts(self.umax, self.dac, rec.planes)
        geoms: dict[tuple[int, int, int, int], int] = {}
        self.geoms: list[tuple[np.ndarray | None, np.ndarray, float]] = []
        for r in reads:
            key = (r.row_start, r.row_count, r.pos_start, r.pos_count)
            if key in geoms:
                continue
            geoms[key] = len(self.geoms)
            mult, pad = self._multiplicity(slice(r.pos_start, r.pos_start + r.pos_count),
                                           slice(r.row_start, r.row_start + r.row_count))
            elems = np.flatnonzero(mult)
            whole = elems.size == self.group_size
            self.geoms.append((None if whole else elems, mult if whole else mult[elems], pad))
        self.read_geom = np.array([geoms[(r.row_start, r.row_count, r.pos_start, r.pos_count)] for r in reads],
                                  dtype=np.int64)
        self.read_group = np.array([r.group for r in reads], dtype=np.int64)
        item = np.dtype(self.gemm_dtype).itemsize
        vectors = rec.groups * rec.positions
        planes = self.k * self.rows_packed * max((u.levels.shape[2] for u in self.units), default=0)
        self.bytes_per_sample = (vectors * ((1 + self.rows_packed) * rec.rows * item + rec.filters * 16 + planes * 6)
                                 + rec.groups * self.group_size * (8 * 4 + (1 + self.rows_packed) * item))

    def work(self) -> tuple[int, int]:
        """Multiply-adds per sample of the exact GEMMs and of the rounding GEMMs."""
        rec = self.rec
        exact = sum(rec.groups * (s.pos.stop - s.pos.start) * rec.rows * rec.filters for s in self.segments)
        rounding = sum(self.rows_packed * u.levels.shape[0] * (u.pos.stop - u.pos.start) * u.levels.shape[1]
                       * u.levels.shape[2] for u in self.units)
        return exact, rounding

    # -- execution
    def run(self, x: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        """Integer accumulations ``(N, G, positions, filters)`` of input ``x``, the number of
        ADC conversions that clipped, and the nonzero digits each READ drove."""
        rec = self.rec
        n = x.shape[0]
        # the DAC codes clip(round(x/s) + z, q_min, q_max) − q_min, as clip(round(x/s),
        # q_min − z, q_max − z) + (z − q_min): the same integers, one pass fewer
        t = np.divide(x, rec.in_scale, dtype=np.float64).reshape(n, rec.groups, self.group_size)
        np.rint(t, out=t)
        np.clip(t, rec.in_qmin - rec.in_zero_point, rec.in_qmax - rec.in_zero_point, out=t)
        codes = np.empty(t.shape, dtype=np.intp)
        np.add(t, self.pad_code, out=codes, casting="unsafe")
        # (a NaN has no code: its garbage index is clamped by the table look-ups, as the
        # reference kernel turns it into garbage digits; graph inputs are checked for NaN)
        counts = self._digit_counts(codes)
        ops = self._operands(t, codes)
        acc = self._exact(ops[0])
        clipped = 0
        for unit in self.units:
            clipped += self._rounding(unit, ops, acc)
        return acc, clipped, counts

    def _operands(self, t: np.ndarray, codes: np.ndarray) -> np.ndarray:
        """``(1 + J, N, G, positions, rows)``: the input vectors' codes and packed digit
        planes (a view of the input for ``direct`` and ``transpose``, else gathered)."""
        rec = self.rec
        n, g, size = t.shape
        rows = 1 + self.rows_packed
        if self.mode == "gather":  # one channel per row, then its padding slot
            assert self.idx is not None
            table = np.empty((rows, n, g, self.channels, size // self.channels + 1), dtype=self.gemm_dtype)
            np.add(t.reshape(n, g, self.channels, -1), self.pad_code, out=table[0, ..., :-1])
            table[0, ..., -1] = self.pad_code
            if self.rows_packed:
                per_channel = codes.reshape(n, g, self.channels, -1)
                table[1:, ..., :-1] = np.take(self.lut, per_channel, axis=1, mode="clip")
                table[1:, ..., -1] = self.lut[:, self.pad_code, None, None, None]
            return np.take(table.reshape(rows, n, g, -1), self.idx, axis=3)
        table = np.empty((rows, n, g, size), dtype=self.gemm_dtype)
        np.add(t, self.pad_code, out=table[0])
        if self.rows_packed:
            table[1:] = np.take(self.lut, codes, axis=1, mode="clip")
        if self.mode == "transpose":
            return table.reshape(-1, n, g, rec.rows, rec.positions).swapaxes(3, 4)
        return table.reshape(-1, n, g, rec.positions, rec.rows)

    def _exact(self, u: np.ndarray) -> np.ndarray:
        """The transparent columns and xsum corrections (one GEMM per segment of positions)
        plus the ACCUM offsets."""
        rec = self.rec
        n, g, p, rows = u.shape
        if u.dtype != self.exact_dtype:
            u = u.astype(self.exact_dtype)
        if len(self.segments) == 1 and not self.units:
            s = self.segments[0]
            y = np.matmul(u[0, 0], s.weights[0])[None, None] if n == 1 and g == 1 else np.matmul(u, s.weights)
            y += s.offsets
            return y
        acc = np.empty((n, g, p, rec.filters), dtype=np.float64)
        for s in self.segments:
            if n == 1 and g == 1 and s.pos == slice(0, p):
                acc[0, 0] = np.matmul(u[0, 0], s.weights[0])
            else:
                acc[:, :, s.pos] = np.matmul(u[:, :, s.pos], s.weights)
            acc[:, :, s.pos] += s.offsets
        return acc

    def _rounding(self, unit: _Unit, ops: np.ndarray, acc: np.ndarray) -> int:
        """Add one unit's rounding columns to ``acc``: GEMMs on the packed planes, then the
        ADC work in chunks whose plane arrays stay cache-sized (the GEMM runs per chunk of
        positions too when chunks keep at least ``_CHUNK_GEMM_ROWS`` positions, so its output
        is still in cache). Returns the conversions that clipped."""
        d = ops[1:, :, unit.groups, unit.pos, unit.rows]  # (J, N, G_u, pc, rc)
        rows, n, gu, pc, rc = d.shape
        per_pos = self.k * rows * n * gu * unit.levels.shape[2]  # plane-array elements per position
        pcc = -(-pc // -(-per_pos * pc // _CHUNK))  # even chunks of at most _CHUNK elements
        clipped = 0
        if pcc < pc and pcc >= _CHUNK_GEMM_ROWS:
            for a in range(0, pc, pcc):
                clipped += self._convert(unit, np.matmul(d[..., a:a + pcc, :], unit.levels), a, acc)
            return clipped
        if gu == 1 and n == 1 and self.mode != "transpose" and ops.shape[2] == 1 and pc == ops.shape[3]:
            sums = np.matmul(d.reshape(rows * pc, rc), unit.levels[0]).reshape(rows, 1, 1, pc, -1)  # one GEMM
        else:
            sums = np.matmul(d, unit.levels)  # (J, N, G_u, pc, r·F_u)
        for a in range(0, pc, pcc):
            clipped += self._convert(unit, sums[..., a:a + pcc, :], a, acc)
        return clipped

    def _convert(self, unit: _Unit, sums: np.ndarray, a: int, acc: np.ndarray) -> int:
        """The column sums ``(J, N, G_u, p, r·F_u)`` of a unit's positions ``a..a+p``, in
        chunks of filters: unpack the planes, convert (ADC), shift and add over planes and
        slices into ``acc``. Returns the conversions that clipped."""
        k, rows = self.k, self.rows_packed
        r = unit.fac.shape[2]
        _, n, gu, p, cols = sums.shape
        nf = cols // r
        sums = sums.reshape(rows, n, gu, p, r, nf)
        fcc = -(-nf // -(-k * rows * n * gu * p * cols // _CHUNK))
        clipped = 0
        for f0 in range(0, nf, fcc):
            f1 = min(f0 + fcc, nf)
            planes = self._unpack(sums[..., f0:f1])  # (k, J, N, G_u, p, r, f)
            planes *= unit.inv if isinstance(unit.inv, float) else unit.inv[..., f0:f1]  # the ADC ...
            planes += 0.5
            np.floor(planes, out=planes)  # ... floor(S/2^shift + 1/2) ...
            if unit.can_clip and planes.max(initial=0.0) > self.amax:  # ... clipped at 2^adc_bits − 1
                clipped += int(np.count_nonzero(planes > self.amax))
                np.minimum(planes, self.amax, out=planes)
            if unit.weight is None:  # Σ_p 2^(p·dac)·code_p; the shift is in fac
                wsum = np.matmul(unit.plane_w, planes.reshape(k * rows, -1)).reshape(planes.shape[2:])
            else:
                planes *= unit.weight[..., f0:f1]
                wsum = planes.sum(axis=(0, 1), dtype=np.float64 if unit.wide_sum else None)
            fac = unit.fac[..., f0:f1]
            y = np.multiply(wsum[..., 0, :], fac[:, :, 0], dtype=np.float64)
            for j in range(1, r):
                y += wsum[..., j, :] * fac[:, :, j]
            filters = (slice(unit.filters.start + f0, unit.filters.start + f1)
                       if isinstance(unit.filters, slice) else unit.filters[f0:f1])
            acc[:, unit.groups, unit.pos.start + a:unit.pos.start + a + p, filters] += y
        return clipped

    def _unpack(self, sums: np.ndarray) -> np.ndarray:
        """The ``k`` planes packed in each of ``sums``: plane i = floor(rest / 2^(b·i)),
        rest −= that·2^(b·i) (exact: integers and powers of two; np.divmod gives the same
        numbers through a much slower fmod). ``(k,) + sums.shape`` in the ADC's type."""
        k = self.k
        if k == 1:
            return sums[None].astype(self.adc_dtype, copy=False)  # a view: sums is not needed after
        planes = np.empty((k,) + sums.shape, dtype=self.adc_dtype)
        rest = sums
        for i in range(k - 1, 0, -1):
            step = float(2 ** (self.bits * i))
            np.multiply(rest, 1.0 / step, out=planes[i])
            np.floor(planes[i], out=planes[i])
            # planes[0] holds the rest after the first step: then a temporary is needed
            low = np.multiply(planes[i], -step, out=None if i < k - 1 else planes[0])
            np.add(rest, low, out=planes[0])
            rest = planes[0]
        return planes

    def _digit_counts(self, codes: np.ndarray) -> np.ndarray:
        """Nonzero digits each READ drives: digit counts of the input codes weighted by how
        often each element appears in the READ's rows and positions (exact integers)."""
        n = codes.shape[0]
        pcs = np.take(self.nzlut, codes, mode="clip")  # (N, G, size)
        pad = n * float(self.nzlut[self.pad_code])
        per_geom = np.empty((len(self.geoms), self.rec.groups), dtype=np.float64)
        for i, (elems, mult, pad_mult) in enumerate(self.geoms):
            sub = pcs if elems is None else pcs[:, :, elems]
            per_geom[i] = np.matmul(sub, mult).sum(axis=0) + pad * pad_mult
        return per_geom[self.read_geom, self.read_group].astype(np.int64)


@functools.lru_cache(maxsize=64)
def _packed_digits(umax: int, dac: int, active: tuple[int, ...], k: int, bits: int, dtype: str) -> np.ndarray:
    """``(J, umax + 1)``: for every code, its active planes' DAC digits packed ``k`` to a
    row, ``2^bits`` apart (shared, read-only)."""
    codes = np.arange(umax + 1, dtype=np.int64)
    lut = np.zeros((-(-len(active) // k), codes.size), dtype=np.float64)
    for q, p in enumerate(active):
        lut[q // k] += ((codes >> (p * dac)) & (2**dac - 1)) * float(2 ** (bits * (q % k)))
    lut = lut.astype(dtype)
    lut.flags.writeable = False
    return lut


@functools.lru_cache(maxsize=64)
def _nonzero_digit_counts(umax: int, dac: int, planes: int) -> np.ndarray:
    """For every code ``0..umax``, how many of its ``planes`` DAC digits are nonzero
    (float64; shared, read-only)."""
    codes = np.arange(umax + 1, dtype=np.int64)
    counts = np.zeros(codes.size, dtype=np.float64)
    for p in range(planes):
        counts += ((codes >> (p * dac)) & (2**dac - 1)) != 0
    counts.flags.writeable = False
    return counts


def _runs(groups: np.ndarray) -> list[slice]:
    """Maximal runs of consecutive numbers in sorted ``groups``, as index slices."""
    breaks = np.flatnonzero(np.diff(groups) != 1) + 1
    bounds = [0, *breaks.tolist(), len(groups)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


# ------------------------------------------------------------------------------ reference layer
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
    """One crossbar layer decoded from a program: its blocks stacked for batched execution,
    per plane and column as the chip reads (the kernel for device noise, for the ADC
    calibration of the emitter, and for layers :class:`FastLayer` cannot prove exact).

    A stack whose ADCs provably neither round nor clip (every shift 0, and the largest column
    sum the cells allow, ``max digit × Σ_r G``, within ``2^adc_bits − 1``; noise off) is
    computed as one integer matmul with the shift-and-added weights: the same numbers as the
    per-plane, per-column path, without its cost."""

    def __init__(self, program: Program, layer_id: int, noise: NoiseConfig | None = None,
                 index: _ScheduleIndex | None = None) -> None:
        cfg = program.config
        self.rec = rec = program.layers[layer_id]
        self.dac = cfg.dac_bits
        self.amax = float(2**cfg.adc_bits - 1)
        self.reads, accum = _layer_reads(program, layer_id, index)
        coef = program.const(rec.coef).astype(np.float64)
        cpf = rec.cols_per_filter
        max_level = 2**cfg.bits_per_cell - 1
        dmax = int(_max_digits(rec, self.dac).max(initial=0))
        # column sums are exact integers in float32 below 2^24; larger arrays need float64
        self.dtype = np.float32 if rec.rows * dmax * max_level < _F32_EXACT else np.float64
        keyed: dict[tuple[int, ...], list[tuple[int, ReadRec]]] = {}
        for r in self.reads:
            for b in r.blocks:
                blk = program.blocks[b]
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
        _check_cover(rec, [(s.groups, s.row_start, s.row_count, s.filter_start, s.filter_count, s.pos_start,
                            s.pos_count) for s in self.stacks])

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


class _ReferenceLayer(_LayerBase):
    """A :class:`LayerKernel` behind the session's layer interface (noise on, or a layer
    whose integer bounds :class:`FastLayer` cannot prove)."""

    def __init__(self, program: Program, layer_id: int, noise: NoiseConfig | None, index: _ScheduleIndex) -> None:
        self.kernel = LayerKernel(program, layer_id, noise, index)
        self._init_common(program, self.kernel.rec)
        self.dac = program.config.dac_bits

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
        digits = _nonzero_digits(u, rec.planes, self.dac)
        counts = np.array([int(digits[r.group, :, r.pos_start:r.pos_start + r.pos_count,
                                      r.row_start:r.row_start + r.row_count].sum(dtype=np.int64))
                           for r in self.kernel.reads], dtype=np.int64)
        return acc.transpose(1, 0, 2, 3), clipped, counts


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


# ------------------------------------------------------------------------------ nodes and inputs
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


# ------------------------------------------------------------------------------ activity
@dataclass
class _StaticActivity:
    """The activity that depends on the program only (per inference)."""

    mvms: dict[str, int]
    adc: dict[str, int]
    cells: dict[str, int]
    cycles: list[float]
    noc_bits: int
    noc_bit_hops: int


def _static_activity(program: Program) -> _StaticActivity:
    """MVMs, ADC conversions and cell reads per layer, and the time of every computation
    cycle (the slowest core's reads, one after another, plus the cycle's NoC transfers)."""
    cfg = program.config
    mvms: dict[str, int] = {lay.name: 0 for lay in program.layers}
    adc: dict[str, int] = dict(mvms)
    cells: dict[str, int] = dict(mvms)
    reads = [ins for ins in program.schedule if isinstance(ins, ReadRec)]
    pairs = [(k, program.blocks[b]) for k, r in enumerate(reads) for b in r.blocks]  # (READ, block)
    owner = np.array([k for k, _ in pairs], dtype=np.int64)
    width = np.array([b.filter_count * program.layers[b.layer].cols_per_filter for _, b in pairs], dtype=np.int64)
    start = np.array([b.elem_col * cfg.element_cols for _, b in pairs], dtype=np.int64)
    height = np.array([b.row_count for _, b in pairs], dtype=np.int64)
    loads = _adc_loads(owner, start, width, cfg.columns_per_adc, len(reads)).tolist()
    ncols = np.bincount(owner, weights=width, minlength=len(reads)).astype(np.int64).tolist()
    ncells = np.bincount(owner, weights=width * height, minlength=len(reads)).astype(np.int64).tolist()
    core_time: dict[tuple[int, int], float] = {}
    for r, load, nc, ce in zip(reads, loads, ncols, ncells):
        lay = program.layers[r.layer]
        n = r.pos_count * lay.planes
        mvms[lay.name] += n
        adc[lay.name] += n * nc
        cells[lay.name] += n * ce
        t = cfg.read_pulse_s + load * cfg.adc_conversion_s
        core_time[(r.cycle, r.core)] = core_time.get((r.cycle, r.core), 0.0) + n * t
    cycles = [0.0] * cfg.computation_cycles
    for (c, _), t in core_time.items():
        cycles[c] = max(cycles[c], t)
    for tr in program.noc:
        bits = tr.bytes * 8
        clk = tr.hops * cfg.hop_latency_cycles + math.ceil(bits / cfg.link_width_bits)
        if tr.cycle < len(cycles):
            cycles[tr.cycle] += clk / cfg.clock_hz
    return _StaticActivity(mvms, adc, cells, cycles, int(sum(t.bytes * 8 for t in program.noc)),
                           int(sum(t.bytes * 8 * t.hops for t in program.noc)))


def _adc_loads(owner: np.ndarray, start: np.ndarray, width: np.ndarray, per_adc: int, n_reads: int) -> np.ndarray:
    """Per READ, the most columns one ADC converts: block ``i`` of READ ``owner[i]`` has
    columns ``start[i] .. start[i] + width[i]``, ADC ``a`` serves columns ``a·per_adc ..``."""
    first = start // per_adc
    count = np.maximum(0, (start + width - 1) // per_adc - first + 1)  # ADCs each block touches
    pair = np.repeat(np.arange(owner.size), count)
    a = first[pair] + np.arange(pair.size) - np.repeat(np.cumsum(count) - count, count)
    cols = np.minimum(start[pair] + width[pair], (a + 1) * per_adc) - np.maximum(start[pair], a * per_adc)
    if not pair.size:
        return np.zeros(n_reads, dtype=np.int64)
    span = int(a.max()) + 1
    per = np.bincount(owner[pair] * span + a, weights=cols, minlength=n_reads * span)
    return per.reshape(n_reads, span).max(axis=1).astype(np.int64)


def _activity(static: _StaticActivity, program: Program, n: int, counts: list[Any], clipped: list[int]
              ) -> dict[str, Any]:
    """The activity dict: the static part, and per inference the DAC conversions (per
    layer, its READs' nonzero digits summed one READ after the other, as the digital logic
    counts) and the clipped conversions."""
    dac: dict[str, float] = {}
    for lay, c in zip(program.layers, counts):
        dac[lay.name] = _sum_in_order(np.asarray(c, dtype=np.int64).reshape(-1), n)
    return {
        "samples": n,
        "mvms": dict(static.mvms),
        "adc_conversions": dict(static.adc),
        "dac_conversions": dac,
        "cell_reads": dict(static.cells),
        "adc_clipped": {lay.name: float(clipped[i]) / n for i, lay in enumerate(program.layers)},
        "cycle_time_s": list(static.cycles),
        "noc_bits": static.noc_bits,
        "noc_bit_hops": static.noc_bit_hops,
    }


def _sum_in_order(values: np.ndarray, n: int) -> float:
    """``Σ_k values[k]/n`` accumulated left to right in float64 (a fixed order: the same
    bits however many READs there are)."""
    if values.size > 64:
        return float(np.add.accumulate(values / n)[-1])
    total = 0.0
    for v in values.tolist():
        total += v / n
    return total
