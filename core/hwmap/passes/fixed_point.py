"""Fixed-point quantization of weights and activations (the chapter's eq. 3.9–3.11).

Given a bit width ``BW`` and the largest magnitude ``max|x|`` of what is quantized, a
two's-complement fixed-point format spends one bit on the sign, ``I`` bits on the integer
part and the rest on the fraction (Lin, Talathi and Annapureddy, "Fixed point quantization
of deep convolutional networks", ICML 2016; the chapter's Section 3.3.3.3):

* ``I = 1 + floor(log2(max|x|))`` (eq. 3.9; negative when ``max|x| < 1/2``: the fraction
  then has ``-I`` leading bits that are always zero, and the format spends them on
  precision instead);
* ``F = BW - I - 1`` (eq. 3.10);
* ``Q(x) = C(R(x·2^F), -t, t) / 2^F`` (eq. 3.11): scale by ``2^F``, round to the nearest
  integer (half to even, as ``numpy.round`` and ONNX ``QuantizeLinear``), clip, scale back.

The chapter's clip bound is ``t = 2^(BW-1)`` on both sides; the largest code a ``BW``-bit
two's-complement word holds is ``2^(BW-1) - 1``, so this module clips to
``[-2^(BW-1), 2^(BW-1) - 1]``. The two differ only where ``x·2^F`` rounds up to exactly
``2^(BW-1)`` (``x`` within half a step of ``2^I``), which the chapter's bound would store in
a word one bit wider than ``BW``. With this range the quantizer is the affine quantizer of
:class:`~hwmap.graph.QuantAnnotation` with scale ``2^-F``, zero point 0 and ``BW`` signed
bits, which is how the graph pass records it, and how ONNX QDQ (``BW = 8``) stores it.

:class:`QuantizeFixedPoint` is the post-training pass on the neutral graph: it annotates the
weight of every compute node (``param_quant``: Conv/ConvTranspose ``W``, Gemm/MatMul ``B``)
from the weight's own maximum, and the output tensor of every activation node (``quant``)
from the maximum the activation reaches on calibration samples. The reference executor runs
the annotated graph as fixed point (``hwmap.execute.run(..., quantized=True)``). Biases keep
their full precision (they are added to the accumulator, which is wider than ``BW``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError, GraphError
from ..graph import Graph, Node, QuantAnnotation

__all__ = ["FixedPoint", "fixed_point_format", "fixed_point_annotation", "fixed_point_quantize",
           "check_bits", "QuantizeFixedPoint", "WEIGHT_SLOTS", "ACTIVATION_OPS", "MIN_BITS", "MAX_BITS"]

#: One sign bit and at least one more (eq. 3.11's ``t`` is 0 for ``BW <= 1``: nothing left).
MIN_BITS = 2
#: The widest format: a 32-bit accumulator word.
MAX_BITS = 32
#: The constant operand of each compute op that holds its weights.
WEIGHT_SLOTS = {"Conv": "W", "ConvTranspose": "W", "Gemm": "B", "MatMul": "B"}
#: Ops whose output is an activation (what the pass annotates; fused nodes ending in one too).
ACTIVATION_OPS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "Elu", "Gelu", "Clip")


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point format: ``bits`` in all, ``integer_bits`` (eq. 3.9) and ``fraction_bits``
    (eq. 3.10); values are integer multiples of ``scale = 2^-fraction_bits``."""

    bits: int
    integer_bits: int
    fraction_bits: int

    @property
    def scale(self) -> float:
        return math.ldexp(1.0, -self.fraction_bits)

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1))

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1


def check_bits(bits: object, what: str, *, error: type[DataError] | type[GraphError] = DataError,
               where: str | None = None) -> int:
    """``bits`` as an int if it is an integer from :data:`MIN_BITS` to :data:`MAX_BITS`; else
    ``error`` with one line naming ``what`` and the value."""
    if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
        raise error(f"{what} = {bits!r}: must be an integer number of bits", where=where)
    if not MIN_BITS <= int(bits) <= MAX_BITS:
        raise error(f"{what} = {bits}: must be from {MIN_BITS} (a sign bit and one more) to {MAX_BITS}", where=where)
    return int(bits)


def fixed_point_format(max_abs: float, bits: int) -> FixedPoint:
    """The format eq. 3.9–3.10 choose for values up to ``max_abs`` in magnitude on ``bits``.

    ``I = 1 + floor(log2(max_abs))``, computed exactly with ``frexp`` (``max_abs = m·2^e``,
    ``1/2 <= m < 1``, so ``I = e``). An all-zero tensor (``max_abs = 0``) gets ``I = 0``."""
    bits = check_bits(bits, "fixed-point bit width")
    m = float(max_abs)
    if not math.isfinite(m) or m < 0:
        raise DataError(f"the largest magnitude to quantize is {m}: it must be finite")
    integer = math.frexp(m)[1] if m > 0 else 0
    return FixedPoint(bits, integer, bits - integer - 1)


def fixed_point_annotation(max_abs: float, bits: int) -> QuantAnnotation:
    """The :class:`QuantAnnotation` of :func:`fixed_point_format`: scale ``2^-F``, zero point 0,
    ``bits`` signed bits."""
    f = fixed_point_format(max_abs, bits)
    return QuantAnnotation(scale=np.asarray(f.scale), zero_point=np.asarray(0.0), bits=bits, signed=True)


def fixed_point_quantize(x: np.ndarray, bits: int, max_abs: float | None = None) -> np.ndarray:
    """Eq. 3.11 on ``x`` (its own largest magnitude unless ``max_abs`` is given), same dtype."""
    x = np.asarray(x)
    m = float(np.max(np.abs(x))) if max_abs is None and x.size else (max_abs or 0.0)
    f = fixed_point_format(m, bits)
    q = np.clip(np.round(x.astype(np.float64) * math.ldexp(1.0, f.fraction_bits)), f.qmin, f.qmax)
    return (q * f.scale).astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)


def _is_activation(node: Node) -> bool:
    last = node.fused[-1] if node.fused else node
    return last.op in ACTIVATION_OPS


@dataclass
class QuantizeFixedPoint:
    """Post-training fixed-point quantization (eq. 3.9–3.11) as a graph pass.

    ``weight_bits``: annotate every compute node's weight (``None``: leave weights alone);
    ``act_bits``: annotate every activation node's output (``None``: leave activations), its
    range from ``calibration`` (batch-first samples of the graph's one input). ``skip`` names
    nodes to leave unquantized (the chapter keeps the first and last layers at full precision,
    Section 3.3.4.3). The activation ranges are measured with the weights already quantized
    and without activation quantization, so applying the pass twice changes nothing.
    """

    weight_bits: int | None = 8
    act_bits: int | None = 8
    calibration: np.ndarray | None = None
    skip: tuple[str, ...] = field(default_factory=tuple)
    name: str = "quantize_fixed_point"

    def __post_init__(self) -> None:
        if self.weight_bits is not None:
            self.weight_bits = check_bits(self.weight_bits, "fixed-point weight_bits")
        if self.act_bits is not None:
            self.act_bits = check_bits(self.act_bits, "fixed-point act_bits")

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        changed = False
        if self.weight_bits is not None:
            for n in g.nodes:
                for sub in n.walk():
                    slot = WEIGHT_SLOTS.get(sub.op)
                    if sub.name in self.skip or slot is None or slot not in sub.params:
                        continue
                    w = sub.params[slot]
                    q = fixed_point_annotation(float(np.max(np.abs(w))) if w.size else 0.0, self.weight_bits)
                    if sub.param_quant.get(slot) != q:
                        sub.param_quant[slot] = q
                        changed = True
        if self.act_bits is not None:
            targets = [n.outputs[0] for n in g.nodes if _is_activation(n) and n.name not in self.skip]
            if targets:
                for t, m in self._activation_ranges(g, targets).items():
                    q = fixed_point_annotation(m, self.act_bits)
                    if g.tensors[t].quant != q:
                        g.tensors[t].quant = q
                        changed = True
        return g, changed

    def _activation_ranges(self, g: Graph, targets: list[str]) -> dict[str, float]:
        """The largest magnitude of each target tensor on the calibration samples."""
        from ..execute import run

        where = f"graph {g.name!r}"
        if self.calibration is None:
            raise DataError("fixed-point activation quantization needs calibration samples to find each "
                            "activation's range (or act_bits=None to quantize weights only)", where=where)
        if len(g.inputs) != 1:
            raise DataError(f"calibration takes graphs with one input; this one has {len(g.inputs)}", where=where)
        x = np.asarray(self.calibration)
        if not np.issubdtype(x.dtype, np.number) or not np.all(np.isfinite(x)):
            raise DataError("calibration samples must be finite numbers", where=where)
        probe = g.copy()
        for t in targets:
            probe.tensors[t].quant = None
        values = run(probe, {g.inputs[0]: x}, quantized=True, collect=True)
        return {t: float(np.max(np.abs(values[t]))) if values[t].size else 0.0 for t in targets}
