"""Sparsity meters: how many activations are zero, how many did not change, and how many
multiply-accumulates a zero-skipping or change-driven implementation would not do.

The chapter's profiler reports activation sparsity and the temporal delta layer's view of it
(Sections 3.3 and 3.5, eq. 3.6-3.8): a layer whose input is zero, or equal to the previous
frame's, need not be computed for that element. :func:`measure` runs a graph on
representative data through the reference executor (:func:`hwmap.execute.run`) and counts,
for every tensor and every compute node:

* **spatial sparsity** (``TensorSparsity.zeros``): the fraction of the tensor's elements that
  are exactly zero, over all frames, on the values as executed (fake-quantized where the run
  is ``quantized``);
* **temporal sparsity** (``TensorSparsity.unchanged``): the fraction of the tensor's
  *quantized* elements equal to the previous frame's (what a temporal delta layer does not
  transmit). A tensor with a quantization annotation is compared on its annotation's codes;
  any other on ``act_bits``-bit codes whose step is its largest magnitude over the measured
  data divided by the largest code (``2**act_bits - 1`` for a tensor never negative, else
  ``2**(act_bits-1) - 1``; round half to even), found in a first pass; with ``act_bits=None``
  values are compared exactly;
* per compute node (Conv, Gemm, MatMul with a constant right operand, and their fused forms),
  the fraction of its MACs whose activation operand is zero (``zero_operand_macs``, padding
  included, as the MAC count includes it) or unchanged (``unchanged_operand_macs``, padding
  included), counted exactly: the node is evaluated on the 0/1 indicator of non-zero (of
  changed) operands with unit weights, which gives per output the operands that count.

Frames: data shaped like the graph input, ``(N, *features)``, is a sequence of samples
(consecutive samples are consecutive frames, as in a video fed frame by frame); data shaped
``(N, T, *features)`` for a graph without state is ``N`` sequences of ``T`` frames, compared
within each sequence only; a stateful graph (NIR neurons) takes ``(N, T, *features)`` and
each time step is a frame; in an encoded graph (an ``Encoder``) the tensors computed per step
have a frame per step of each sample. The first frame of a sequence has no predecessor: its
operands count as changed.

The measurement travels to a target's estimate through ``Simulation.activity`` under
:data:`ACTIVITY_KEY` (the flow puts it there, :func:`from_activity` reads it back), where
:func:`skip_savings` turns it into what skipping would save on the target's own layers, and
:func:`record_skip_savings` writes that into the KPI record in the one vocabulary every target
uses (:data:`SKIP_RESOURCES`, :data:`SKIP_ASSUMPTION`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from .errors import DataError, GraphError
from .graph import Graph, Node, QuantAnnotation
from .kpi import Assumption, KPIs
from .ops import get_op

__all__ = ["ACTIVITY_KEY", "TensorSparsity", "NodeSparsity", "SparsityMeasurement", "SkipSavings", "measure",
           "from_activity", "skip_savings", "record_skip_savings", "SKIP_RESOURCES", "SKIP_ASSUMPTION"]

#: The key of ``Simulation.activity`` (and of the estimate hook's ``activity``) holding a
#: :class:`SparsityMeasurement`.
ACTIVITY_KEY = "sparsity"

#: The KPI record's ``resources`` (per inference, over the measured layers) and each measured
#: layer's: the MACs whose activation operand is zero / unchanged from the previous frame (what
#: a zero-skipping / change-driven engine would not compute) and, where a target's energy
#: scales with MACs, the energy of those MACs. The same names as the profiler's columns.
SKIP_RESOURCES = ("zero_operand_macs", "unchanged_operand_macs", "zero_operand_energy_j", "unchanged_operand_energy_j")
#: The key of the KPI record's ``assumptions`` that says what skipping would save, in a sentence.
SKIP_ASSUMPTION = "sparsity.skipping"

#: Bytes of activations one ``run`` call may hold (``collect`` keeps every tensor).
_RUN_BUDGET_BYTES = 64 * 2**20


@dataclass(frozen=True)
class TensorSparsity:
    """One tensor's measured sparsity: ``zeros`` (spatial) and ``unchanged`` (temporal;
    ``None`` with a single frame) as fractions of ``elements`` per frame over ``frames``;
    ``bits`` the code width it was compared at (``None``: compared exactly)."""

    zeros: float
    unchanged: float | None
    frames: int
    elements: int
    bits: int | None


@dataclass(frozen=True)
class NodeSparsity:
    """A compute node's MACs whose activation operand (tensor ``input``) is zero, or
    unchanged from the previous frame, as fractions of all its MACs."""

    input: str
    zero_operand_macs: float
    unchanged_operand_macs: float | None


@dataclass
class SparsityMeasurement:
    """What :func:`measure` found: per tensor and per compute node, over ``samples`` samples
    of ``layout`` (``samples``, ``sequences`` or ``steps``), the graph run ``quantized`` or
    not, unannotated tensors compared at ``act_bits``."""

    samples: int
    layout: str
    quantized: bool
    act_bits: int | None
    tensors: dict[str, TensorSparsity] = field(default_factory=dict)
    nodes: dict[str, NodeSparsity] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types, in a fixed key order."""
        return {"samples": self.samples, "layout": self.layout, "quantized": self.quantized,
                "act_bits": self.act_bits,
                "tensors": {k: vars(v).copy() for k, v in sorted(self.tensors.items())},
                "nodes": {k: vars(v).copy() for k, v in sorted(self.nodes.items())}}


def from_activity(activity: Mapping[str, Any] | None) -> SparsityMeasurement | None:
    """The measurement an estimate hook's ``activity`` carries, or ``None``."""
    m = (activity or {}).get(ACTIVITY_KEY)
    return m if isinstance(m, SparsityMeasurement) else None


@dataclass(frozen=True)
class SkipSavings:
    """What skipping would save on a target's layers, per inference: of the ``macs`` of the
    ``layers`` the measurement covers, those whose operand is zero (``zero_operand_macs``)
    or unchanged (``unchanged_operand_macs``), and the same fractions of the layers' energy
    of the kinds that scale with MACs (``zero_energy_j``, ``unchanged_energy_j``);
    ``unmeasured`` names the layers with MACs the measurement does not cover."""

    macs: float
    zero_operand_macs: float
    unchanged_operand_macs: float | None
    zero_energy_j: float
    unchanged_energy_j: float | None
    layers: tuple[str, ...]
    unmeasured: tuple[str, ...]
    samples: int

    def text(self) -> str:
        """One sentence: the MACs and energy each kind of skipping would save."""
        pct = f" ({self.zero_operand_macs / self.macs:.1%})" if self.macs else ""
        out = f"{self.zero_operand_macs:,.0f} of {self.macs:,.0f} MACs{pct} have a zero operand"
        if self.zero_energy_j:
            out += f" ({self.zero_energy_j:.3g} J)"
        if self.unchanged_operand_macs is not None:
            pct = f" ({self.unchanged_operand_macs / self.macs:.1%})" if self.macs else ""
            out += f"; {self.unchanged_operand_macs:,.0f}{pct} an operand unchanged from the previous frame"
            if self.unchanged_energy_j:
                out += f" ({self.unchanged_energy_j:.3g} J)"
        out += f"; measured on {self.samples} samples over {len(self.layers)} layer(s)"
        if self.unmeasured:
            out += f", not on {', '.join(self.unmeasured)}"
        return out


def skip_savings(kpis: KPIs, activity: Mapping[str, Any] | None, energy_kinds: Iterable[str] = ()) -> SkipSavings | None:
    """What a zero-skipping and a change-driven implementation would save on ``kpis.layers``
    (matched by name to the compute nodes the measurement in ``activity`` covers; a layer's
    MACs are its ``ops``); ``None`` without a measurement. Each covered layer's
    ``resources`` gain ``zero_operand_macs`` and ``unchanged_operand_macs``. Energy: the
    same fractions of the layer's energy of ``energy_kinds`` (e.g. ``("compute",)`` where
    compute energy is MACs times an energy per MAC). The headline figures are not changed."""
    m = from_activity(activity)
    if m is None:
        return None
    kinds = tuple(energy_kinds)
    macs = zero = zero_e = 0.0
    unchanged: float | None = 0.0
    unchanged_e: float | None = 0.0
    covered: list[str] = []
    missing: list[str] = []
    for layer in kpis.layers:
        ops = float(layer.ops or 0.0)
        node = m.nodes.get(layer.name)
        if node is None:
            if ops > 0:
                missing.append(layer.name)
            continue
        covered.append(layer.name)
        energy = sum(float(layer.energy_j.get(k, 0.0)) for k in kinds)
        macs += ops
        zero += ops * node.zero_operand_macs
        zero_e += energy * node.zero_operand_macs
        layer.resources["zero_operand_macs"] = ops * node.zero_operand_macs
        u = node.unchanged_operand_macs
        layer.resources["unchanged_operand_macs"] = None if u is None else ops * u
        if u is None or unchanged is None or unchanged_e is None:
            unchanged = unchanged_e = None
        else:
            unchanged += ops * u
            unchanged_e += energy * u
    return SkipSavings(macs, zero, unchanged, zero_e, unchanged_e, tuple(covered), tuple(missing), m.samples)


def record_skip_savings(kpis: KPIs, activity: Mapping[str, Any] | None, *, describe: Callable[[SkipSavings], str],
                        source: str, energy_kinds: Iterable[str] = (), unmeasured: str = "") -> SkipSavings | None:
    """:func:`skip_savings` on ``kpis``, written into the record: its ``resources`` gain the
    zero and unchanged operand MACs (:data:`SKIP_RESOURCES`; the energies only where
    ``energy_kinds`` is given) and ``assumptions[SKIP_ASSUMPTION]`` the sentence
    ``describe(savings)`` with ``source``. Without a measurement the assumption says
    ``not measured (no --data)``, followed by ``unmeasured`` (what that means on the target),
    and ``None`` is returned. The headline figures are not changed."""
    kinds = tuple(energy_kinds)
    s = skip_savings(kpis, activity, kinds)
    if s is None:
        kpis.assumptions[SKIP_ASSUMPTION] = Assumption(
            "not measured (no --data)" + (f": {unmeasured}" if unmeasured else ""), "", "hwmap.sparsity")
        return None
    zero_macs, unchanged_macs, zero_j, unchanged_j = SKIP_RESOURCES
    kpis.resources[zero_macs] = s.zero_operand_macs
    kpis.resources[unchanged_macs] = s.unchanged_operand_macs
    if kinds:
        kpis.resources[zero_j] = s.zero_energy_j
        kpis.resources[unchanged_j] = s.unchanged_energy_j
    kpis.assumptions[SKIP_ASSUMPTION] = Assumption(describe(s), "", source)
    return s


# -- the meter ---------------------------------------------------------------------------------
def measure(graph: Graph, data: np.ndarray, *, max_samples: int = 256, quantized: bool = False,
            act_bits: int | None = 8, tensors: Iterable[str] | None = None,
            where: str = "sparsity data") -> SparsityMeasurement:
    """Run the first ``max_samples`` samples of ``data`` (for the graph's one input) and
    measure (see the module docstring). ``tensors``: the tensors to report (default: every
    graph input and node output). Raises :class:`DataError` for data that does not fit."""
    from .execute import is_encoded

    if len(graph.inputs) != 1:
        raise DataError(f"measuring sparsity needs a graph with one input, {graph.name!r} has {len(graph.inputs)}",
                        where=where)
    if act_bits is not None and (isinstance(act_bits, bool) or not 1 <= int(act_bits) <= 64):
        raise DataError(f"act_bits must be from 1 to 64, got {act_bits!r}", where=where)
    x, layout = _layout(graph, data, where)
    if layout == "sequences" and is_encoded(graph):
        raise DataError("a graph with an Encoder makes its own time steps: give it samples (N, features...), "
                        f"not sequences {list(x.shape)}", where=where)
    n = min(int(x.shape[0]), max_samples)
    wanted = list(dict.fromkeys(tensors)) if tensors is not None else \
        list(dict.fromkeys([*graph.inputs, *(t for nd in graph.nodes for t in nd.outputs)]))
    for t in wanted:
        graph.tensor(t)  # an unknown name is a GraphError here, not a KeyError later
    counters = {nd.name: fn for nd in graph.nodes if (fn := _operand_counter(nd)) is not None}
    inputs_of = {nd.name: nd.inputs[0] for nd in graph.nodes if nd.name in counters}
    compared = list(dict.fromkeys([*wanted, *inputs_of.values()]))
    quants = {t: q for t in compared if (q := graph.tensors[t].quant) is not None}
    steps: dict[str, float] = {}
    if act_bits is not None and any(t not in quants for t in compared):
        steps = _code_steps(graph, x, n, layout, quantized, [t for t in compared if t not in quants], act_bits)
    acc = {t: _Counts() for t in compared}
    node_acc = {name: _Counts() for name in counters}
    for chunk in _chunks(graph, x, n, layout, quantized):
        framed = {t: chunk.frames(graph, t, quants.get(t), steps.get(t)) for t in compared}
        for t in compared:
            acc[t].add(framed[t])
        for name, counter in counters.items():
            t = inputs_of[name]
            node_acc[name].add_operands(framed[t], counter, graph.tensor(t).shape[1:])
    m = SparsityMeasurement(n, layout, quantized, act_bits)
    for t in wanted:
        c = acc[t]
        bits = quants[t].bits if t in quants else act_bits if t in steps else None
        m.tensors[t] = TensorSparsity(c.zeros / c.elements if c.elements else 0.0,
                                      c.same / c.compared if c.compared else None, c.frames,
                                      c.elements // c.frames if c.frames else 0, bits)
    for name, c in node_acc.items():
        m.nodes[name] = NodeSparsity(inputs_of[name], c.zeros / c.elements if c.elements else 0.0,
                                     c.same / c.compared if c.compared else None)
    return m


def _layout(graph: Graph, data: np.ndarray, where: str) -> tuple[np.ndarray, str]:
    """The data and how its frames are laid out: ``samples``, ``sequences`` or ``steps``."""
    from .execute import has_time_axis

    name = graph.inputs[0]
    want = tuple(graph.tensor(name).shape[1:])
    x = np.asarray(data)
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"data has non-numeric dtype {x.dtype}", where=where)
    feats = ", ".join(map(str, want))
    if has_time_axis(graph):
        if x.ndim != len(want) + 2 or tuple(x.shape[2:]) != want:
            raise DataError(f"samples have shape {list(x.shape[1:])}, input {name!r} of {graph.name!r} takes "
                            f"{list(want)} per step: data must be (N, T, {feats})", where=where)
        layout = "steps"
    elif x.ndim == len(want) + 1 and tuple(x.shape[1:]) == want:
        layout = "samples"
    elif x.ndim == len(want) + 2 and tuple(x.shape[2:]) == want:
        layout = "sequences"
    else:
        raise DataError(f"samples have shape {list(x.shape[1:])}, input {name!r} of {graph.name!r} takes "
                        f"{list(want)}: data must be (N, {feats}) or sequences (N, T, {feats})", where=where)
    if x.shape[0] == 0 or min(x.shape[:2 if layout != "samples" else 1]) == 0:
        raise DataError(f"need at least 1 sample, got data of shape {list(x.shape)}", where=where)
    return x, layout


@dataclass
class _Chunk:
    """One run's collected tensors and how to read them as frames."""

    values: dict[str, np.ndarray]
    samples: int
    layout: str

    def frames(self, graph: Graph, t: str, q: QuantAnnotation | None, step: float | None) -> _Framed:
        """Tensor ``t`` (its values and the codes temporal sparsity compares) as
        ``(sequences, frames, elements)``, and whether its frames continue across samples
        (static data: consecutive samples are consecutive frames)."""
        if t not in self.values:
            raise GraphError(f"execution gave no value for tensor {t!r}", where=f"graph {graph.name!r}")
        v = np.asarray(self.values[t])
        shape = graph.tensor(t).shape
        per_frame = max(1, math.prod(shape[1:]))
        if v.size == 0 or v.size % (self.samples * per_frame):
            raise GraphError(f"tensor {t!r} of shape {list(v.shape)} has no {per_frame} elements per frame of each "
                             f"of {self.samples} samples: its batch axis is not first", where=f"graph {graph.name!r}")
        if q is not None:
            extra = v.ndim - len(shape)  # a time axis after the batch shifts a per-axis annotation's axis
            if q.axis is not None and extra:
                q = replace(q, axis=q.axis % len(shape) + extra)
            codes = q.quantize(v)
        elif step is not None:
            codes = np.round(np.asarray(v, dtype=np.float64) / step)
        else:
            codes = v
        a, c = v.reshape(self.samples, -1, per_frame), codes.reshape(self.samples, -1, per_frame)
        if self.layout == "samples" and a.shape[1] == 1:
            return _Framed(a.reshape(1, self.samples, per_frame), c.reshape(1, self.samples, per_frame), True)
        return _Framed(a, c, False)


@dataclass(frozen=True)
class _Framed:
    values: np.ndarray  # (sequences, frames, elements)
    codes: np.ndarray  # the same, as the codes compared for temporal sparsity
    carry: bool  # frames continue from the previous slice


def _chunks(graph: Graph, x: np.ndarray, n: int, layout: str, quantized: bool) -> Iterable[_Chunk]:
    """Run the samples in slices that keep every collected tensor within the budget."""
    from .execute import encoded_steps, run

    steps = int(x.shape[1]) if layout != "samples" else encoded_steps(graph)
    batch = graph.tensor(graph.inputs[0]).shape[0]
    per_sample = sum(math.prod(t.shape[1:]) if t.shape and t.shape[0] == batch else math.prod(t.shape)
                     for t in graph.tensors.values()) * 8 * steps
    size = max(1, _RUN_BUDGET_BYTES // max(1, per_sample))
    name = graph.inputs[0]
    for start in range(0, n, size):
        k = min(size, n - start)
        part = x[start:start + k]
        if layout == "sequences":
            part = part.reshape(k * part.shape[1], *part.shape[2:])
        yield _Chunk(run(graph, {name: part}, collect=True, quantized=quantized), k, layout)


def _code_steps(graph: Graph, x: np.ndarray, n: int, layout: str, quantized: bool, names: list[str],
                bits: int) -> dict[str, float]:
    """The code step of each unannotated tensor: its largest magnitude over the data over the
    largest code of ``bits`` bits (unsigned where it is never negative)."""
    peak = dict.fromkeys(names, 0.0)
    negative = dict.fromkeys(names, False)
    for chunk in _chunks(graph, x, n, layout, quantized):
        for t in names:
            v = np.asarray(chunk.values[t])
            if v.size:
                peak[t] = max(peak[t], float(np.max(np.abs(v))))
                negative[t] = negative[t] or bool(np.any(v < 0))
    return {t: peak[t] / ((2 ** (bits - 1) - 1 if negative[t] else 2**bits - 1) or 1) for t in names
            if peak[t] > 0 and math.isfinite(peak[t])}


class _Counts:
    """Running counts of one tensor or node: zeros over elements, unchanged over compared."""

    def __init__(self) -> None:
        self.zeros = self.elements = self.same = self.compared = self.frames = 0
        self.prev: np.ndarray | None = None  # the last frame's codes, for frames continuing across slices

    def _changed(self, f: _Framed) -> np.ndarray:
        """Per element of ``f``, whether its code differs from the previous frame's (the
        first frame of a sequence, and of all with nothing before it, counts as changed)."""
        c = f.codes
        changed = np.ones(c.shape, dtype=bool)
        changed[:, 1:] = c[:, 1:] != c[:, :-1]
        if f.carry:
            if self.prev is not None:
                changed[0, 0] = c[0, 0] != self.prev
            self.prev = c[0, -1].copy()
        return changed

    def _first_compared(self, f: _Framed) -> bool:
        return f.carry and self.prev is not None

    def add(self, f: _Framed) -> None:
        """Count a tensor's elements: zeros, and unchanged codes among those with a predecessor."""
        a = f.values
        self.zeros += int(np.count_nonzero(a == 0))
        self.elements += a.size
        self.frames += a.shape[0] * a.shape[1]
        with_prev = self._first_compared(f)
        changed = self._changed(f)
        self.same += int(np.count_nonzero(~changed[:, 1:]))
        self.compared += changed[:, 1:].size
        if with_prev:
            self.same += int(np.count_nonzero(~changed[0, 0]))
            self.compared += changed[0, 0].size

    def add_operands(self, f: _Framed, counter: "_Counter", feature_shape: tuple[int, ...]) -> None:
        """Count a compute node's MACs: those whose operand is zero, and (over every frame,
        first frames counting as changed) those whose operand is unchanged."""
        nonzero, total = counter((f.values != 0).reshape(-1, *feature_shape).astype(np.float64))
        self.zeros += total - nonzero
        self.elements += total
        changed = self._changed(f)
        n_changed, total = counter(changed.reshape(-1, *feature_shape).astype(np.float64))
        self.same += total - n_changed
        self.compared += total


#: ``counter(indicator)`` -> (MACs whose operand indicator is 1, all MACs) on a batch.
_Counter = Callable[[np.ndarray], "tuple[int, int]"]


def _compute_part(node: Node) -> Node:
    """The node that does a node's MACs: itself, or a fused node's compute node."""
    if node.fused:
        from .ops.fused import plan

        return plan(node).compute  # type: ignore[no-any-return]
    return node


def _operand_counter(node: Node) -> _Counter | None:
    """A counter for a Conv/Gemm/MatMul (or their fused forms) with a constant weight and
    its activation as first dynamic input; ``None`` for any other node."""
    comp = _compute_part(node) if node.op in ("FusedConv", "FusedGemm", "FusedMatMul") else node
    if not node.inputs:
        return None
    if comp.op == "Conv" and "W" in comp.params:
        return _conv_counter(comp)
    if comp.op == "Gemm" and "B" in comp.params and "A" not in comp.params:
        w = comp.params["B"]
        m = int(w.shape[0] if comp.attrs.get("transB", 0) else w.shape[1])
        return lambda ind: (int(np.count_nonzero(ind)) * m, ind.size * m)
    if comp.op == "MatMul" and "B" in comp.params and "A" not in comp.params and comp.params["B"].ndim == 2:
        m = int(comp.params["B"].shape[1])
        return lambda ind: (int(np.count_nonzero(ind)) * m, ind.size * m)
    return None


def _conv_counter(conv: Node) -> _Counter:
    """Operands that count in a Conv, through a Conv with unit weights and one output channel
    per group (each of a group's output channels sees the same operands)."""
    w = conv.params["W"]
    group = int(conv.attrs.get("group", 1))
    per_group_out = w.shape[0] // group
    ones = Node(conv.name, "Conv", list(conv.inputs[:1]), list(conv.outputs[:1]), dict(conv.attrs),
                {"W": np.ones((group, *w.shape[1:]), dtype=np.float64)})
    evaluate = get_op("Conv", where=f"node {conv.name!r}").evaluate
    assert evaluate is not None
    window = math.prod(w.shape[1:])

    def count(ind: np.ndarray) -> tuple[int, int]:
        y = evaluate(ones, [ind])[0]
        return int(round(float(np.sum(y)))) * per_group_out, y.size * per_group_out * window

    return count
