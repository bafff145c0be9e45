"""Post-training calibration for the analog IMC legalization: activation ranges and bias correction.

Two standard post-training quantization steps (Nagel et al., "A White Paper on Neural
Network Quantization", arXiv 2106.08295, 2021: MSE-based range setting and bias correction;
the bias correction of Nagel et al., "Data-Free Quantization Through Weight Equalization
and Bias Correction", ICCV 2019; both are defaults of Sony's Model Compression Toolkit,
``QuantizationConfig(activation_error_method=MSE, weights_bias_correction=True)``), run on
the float reference model's activations over the calibration samples:

* **Range setting by minimum mean-squared error.** A tensor's clipping value ``c`` is the one,
  among ``c_k = max|x|·2^(−k/16)``, ``k = 0 ..`` :data:`CLIP_CANDIDATES` − 1, that minimizes
  ``mean((x − Q_c(x))²)`` over the calibration values (at most :data:`RANGE_VALUES` per
  tensor, evenly strided over every chunk), ``Q_c`` the ``bits``-bit grid of scale
  ``c / q_max`` the tensor will hold; ties go to the larger ``c``. Max-abs (``k = 0``) spends
  a whole 8-bit grid on a few outliers: a ReLU output's maximum is several times its RMS.
  A tensor whose only readers are ``Relu`` nodes is calibrated on ``max(x, 0)``: its
  negative values all read as 0, so it is held unsigned, the negative half of a signed grid
  being codes no reader can tell apart (a residual Add before its ReLU: the adder saturates
  at 0, which the ReLU then leaves alone).
* **Bias correction of weight rounding.** Rounding a filter's weights shifts its output by
  ``Σ_r (ŵ_r − w_r)·x_r``, whose mean over the data is not zero when the inputs' mean is not
  (after a ReLU it never is): a constant error per output channel that a deep network
  accumulates. The expected shift, measured on the float activations of the calibration
  samples (at most :data:`BIAS_POSITIONS` output vectors per layer), is subtracted from the
  layer's bias. The bias is added per filter by the digital periphery after the ADCs
  anyway (IBM's 64-core PCM chip applies a per-column affine correction there, Le Gallo
  et al., Nat. Electron. 2023), so the hardware does the same work; layers without a bias
  are left as they are (a bias would be one more digital add per output).

Measured and not adopted (top-1 agreement with onnxruntime on the 270 scored samples of
tests/analog_imc, analog_imc:default; 1/270 = 0.0037, so one or two samples either way are
within the scatter of these random-weight nets):

* **Empirical bias correction** (Nagel et al., ICCV 2019, and the white paper above):
  layer by layer in topological order, the mean difference per output channel between the
  pre-activation of the fake-quantized network (earlier layers already corrected) and of
  the float one, taken off the bias. It does catch the mean shift activation clipping makes
  (0.2–0.5 % of the channel means' size on the hidden residual net, beyond two standard
  errors on 81–100 % of a layer's channels), but with MSE clipping it gave plain / residual
  convnet 0.9778 / 0.9444 (this module: 0.9778 / 0.9519), zoo:resnet_small 16×16 seeds
  0 / 1 0.9889 / 0.9926 (0.9926 / 0.9963), zoo:digits_cnn 0.9963 (1.0). With max-abs
  ranges: 0.9778 / 0.9593, resnet_small 0.9889 / 1.0, but on the chapter core with
  differential weights the maximum relative error of seed 0 rose from 0.019 to 0.029.
* **Clipping for the next layer's output**: each crossbar input's ``c`` chosen to minimize
  the mean-squared error of its readers' outputs: with empirical bias correction 0.9815 /
  0.9630 and resnet_small 0.9926 / 0.9926, but zoo:resnet_small on the chapter core as drawn
  fell 0.9148 → 0.9074 and 0.9481 → 0.9259; with weight-only bias correction resnet_small
  seed 0 fell to 0.9556 (the mean shift of the activations' clipping left uncorrected).

Neither reaches 0.98 on the residual convnet: its fake-quantized reference is itself at
0.941–0.959 under every variant (0.959 here), its errors spread over all tensors. What the
reference itself gets (no ADC; plain / residual convnet; 2,000 further images of the same
kind unless said, where the sampling scatter is ±0.004):

* **Per-tensor clipping rules**: minimum MSE (this module) 0.975 / 0.957, max-abs 0.980 /
  0.961, the 99.99th percentile of |x| 0.981 / 0.958, the 99.9th 0.966 / 0.955; calibrating
  on 1,000 images instead of 90: 0.975 / 0.954.
* **Per-channel activation scales** (minimum MSE or max-abs per channel): 0.976–0.977 /
  0.975. Not adopted even so: a crossbar's rows share the DACs' one input grid, so a scale
  per input channel would have to be folded into the weights before their rounding, which
  the shared reference does not describe.
* **More activation bits** (270 images): 9 bits 0.978 / 0.989, 10 bits 0.978 / 0.985, 12 bits
  0.985 / 0.996; float activations with 8-bit weights 0.981 / 0.996. The plain convnet's
  limit is its 8-bit weights, the residual convnet's its 8-bit activations: a hardware
  choice (``hardware.input_bits``), not a calibration one.

The same two networks trained on the digits (tests/analog_imc/hidden_convnets.py) agree
0.99–1.0 on every preset: their classes are separated by more than 8 bits resolve.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from hwmap import Node, QuantAnnotation
from hwmap.ops import get_op
from hwmap.ops.fused import plan

__all__ = ["RANGE_VALUES", "CLIP_CANDIDATES", "BIAS_POSITIONS", "SCALE_BITS", "RangeStats", "clip_candidates",
           "mse_clip", "short_scale", "BiasShift", "bias_slot"]

#: Values per tensor the range search looks at, at most (evenly strided over the data).
RANGE_VALUES = 2**16
#: Clipping candidates ``max·2^(−k/16)``: down to ``max/15.4``, well below any 8-bit optimum.
CLIP_CANDIDATES = 64
#: Output vectors (samples × positions) per layer the bias correction averages, at most.
BIAS_POSITIONS = 2**16
#: Significant bits of a scale: the digital periphery multiplies by a fixed-point mantissa
#: and shifts (the "quantized multiplier" of integer-only inference, Jacob et al., CVPR 2018).
#: With 8-bit codes, ``q·s`` is then exact in float32 and a layer's ``Σ q_x·s_x·q_w·s_w``
#: exact in float64, so the crossbar's integer sum and the float reference give the same bits.
SCALE_BITS = 12


def short_scale(scale: np.ndarray) -> np.ndarray:
    """``scale`` rounded up to :data:`SCALE_BITS` significant bits (up: codes never grow)."""
    s = np.asarray(scale, dtype=np.float64)
    mant, exp = np.frexp(s)
    return np.ldexp(np.ceil(np.ldexp(mant, SCALE_BITS)), exp - SCALE_BITS)


def clip_candidates(top: float) -> np.ndarray:
    """``top·2^(−k/16)`` for ``k = 0 ..`` :data:`CLIP_CANDIDATES` − 1, largest first."""
    return top * np.exp2(-np.arange(CLIP_CANDIDATES, dtype=np.float64) / 16.0)


def mse_clip(values: np.ndarray, qmax: int, signed: bool) -> float:
    """The clipping value minimizing the mean-squared error of ``values`` on a grid of
    ``q_max`` steps per side (``[0, q_max]``, or ``[−q_max, q_max]`` when ``signed``);
    0.0 when every value is 0."""
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    top = float(np.max(np.abs(v))) if v.size else 0.0
    if top <= 0.0:
        return 0.0
    lo = -qmax if signed else 0
    best, best_err = top, math.inf
    for c in clip_candidates(top):
        s = c / qmax
        err = float(np.mean(np.square(np.clip(np.round(v / s), lo, qmax) * s - v)))
        if err < best_err:
            best, best_err = float(c), err
    return best


@dataclass
class RangeStats:
    """What calibration keeps of one tensor: its extremes and an evenly strided sample."""

    rectify: bool = False  # calibrate max(x, 0): the tensor's only readers are ReLUs
    lo: float = math.inf
    kept: list[np.ndarray] = field(default_factory=list)

    def add(self, x: np.ndarray, quota: int) -> None:
        """Take one chunk of the tensor's values, keeping about ``quota`` of them."""
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        if self.rectify:
            v = np.maximum(v, 0.0)
        if v.size == 0:
            return
        self.lo = min(self.lo, float(v.min()))
        step = max(1, -(-v.size // max(1, quota)))
        # the extremes always stay: the candidates start at max |x|
        self.kept.append(np.concatenate([v[::step], [v.min(), v.max()]]))

    def annotation(self, bits: int) -> QuantAnnotation:
        """Unsigned with zero point 0 when never negative, else signed symmetric (narrow);
        scale ``c / q_max`` with ``c`` from :func:`mse_clip` (1.0 for an all-zero tensor)."""
        unsigned = self.lo >= 0.0
        qmax = 2**bits - 1 if unsigned else 2 ** (bits - 1) - 1
        values = np.concatenate(self.kept) if self.kept else np.zeros(1)
        c = mse_clip(values, qmax, signed=not unsigned)
        scale = short_scale(np.asarray(c / qmax if c > 0 else 1.0))
        return QuantAnnotation(scale, np.asarray(0.0), bits, signed=not unsigned, narrow=not unsigned)


def _compute(node: Node) -> Node:
    return plan(node).compute if node.op.startswith("Fused") else node


def bias_slot(node: Node) -> str | None:
    """The param a crossbar node's per-output-channel bias is in (``B`` of a Conv, ``C`` of a
    Gemm with ``beta ≠ 0`` and one value per output), or None when it has none."""
    compute = _compute(node)
    if compute.op == "Conv":
        return "B" if "B" in node.params else None
    if compute.op == "Gemm" and "C" in node.params and float(node.attrs.get("beta", 1.0)) != 0.0:
        b = node.params["B"]
        outputs = b.shape[0] if int(node.attrs.get("transB", 0)) else b.shape[-1]
        return "C" if node.params["C"].size == outputs else None
    return None


class BiasShift:
    """The mean output shift weight rounding causes in one crossbar node (see the module
    docstring), accumulated over calibration chunks of its float input."""

    def __init__(self, node: Node, weight: str) -> None:
        self.node, self.slot = node, bias_slot(node)
        compute = _compute(node)
        w = np.asarray(node.params[weight], dtype=np.float64)
        delta = node.param_quant[weight].fake_quantize(w) - w
        self._delta_node = compute.copy()
        self._delta_node.params = {weight: delta}  # no bias: the shift is linear in x
        self._evaluate = get_op(compute.op, where=f"node {node.name!r}").evaluate
        self._axis = 1 if compute.op == "Conv" else -1
        self.total: np.ndarray | None = None
        self.count = 0

    def add(self, x: np.ndarray) -> None:
        """Accumulate the shift over the samples of ``x`` (batch first) it still needs."""
        if self.slot is None or self.count >= BIAS_POSITIONS or self._evaluate is None:
            return
        per_sample = max(1, math.prod(x.shape[1:]) // max(1, x.shape[1])) if self._axis == 1 else 1
        take = max(1, -(-(BIAS_POSITIONS - self.count) // per_sample))
        y = np.moveaxis(np.asarray(self._evaluate(self._delta_node, [x[:take]])[0], dtype=np.float64), self._axis, -1)
        y = y.reshape(-1, y.shape[-1])
        self.total = y.sum(axis=0) if self.total is None else self.total + y.sum(axis=0)
        self.count += y.shape[0]

    def apply(self) -> bool:
        """Subtract the mean shift from the node's bias; whether anything was corrected."""
        if self.slot is None or self.total is None or not self.count:
            return False
        shift = self.total / self.count
        if self.slot == "C":
            shift = shift / float(self.node.attrs.get("beta", 1.0))
        old = self.node.params[self.slot]
        new = (np.asarray(old, dtype=np.float64).reshape(-1) - shift).astype(old.dtype).reshape(old.shape)
        self.node.params[self.slot] = new
        if self.node.fused:  # keep the original compute node's record in step
            self.node.fused[0].params[self.slot] = new.copy()
        return True
