"""ANN-to-SNN conversion: a ReLU network becomes integrate-and-fire neurons run over time steps.

The rate-based conversion of Rueckauer, Lungu, Hu, Pfeiffer and Liu, "Conversion of
continuous-valued deep networks to efficient event-driven networks for image
classification", Front. Neurosci. 11:682, 2017 (*Rueckauer 2017* below). A ReLU activation
``a = max(0, W x + b)`` is approximated by the firing rate of an integrate-and-fire (IF)
neuron driven by the same weighted input:

* **Neurons.** Every ``Relu`` becomes an ``IF`` node (:mod:`hwmap.ops.neuron`) with ``dt`` =
  :attr:`ConversionSettings.dt` (the time one step stands for, 1 ms by default: it matters
  to a target that runs in real time, not to the arithmetic) and ``r = 1/dt``, so that the
  membrane integrates exactly the layer's input current each step (``v += dt·r·I``),
  threshold ``θ = 1``, **reset by subtraction** (``v -= θ`` after a spike, Rueckauer 2017
  eq. 2b: the charge above the threshold is kept, so no input is lost) and the membrane
  starting at **half the threshold**, ``v(0) = θ/2``. Driven by a constant current ``z ∈ [0,
  θ]`` per step, such a neuron fires ``⌈T z/θ − 1/2⌉`` times in ``T`` steps (the spike
  condition is strict, ``v > θ``): the rate *rounds* ``z`` to the nearest multiple of
  ``θ/T`` where ``v(0) = 0`` would floor it. Bu, Ding, Yu and Huang show that ``θ/2`` is the
  initial potential minimizing the expected conversion error ("Optimized potential
  initialization for low-latency spiking neural networks", AAAI 2022); at ``T = 4`` it is
  what keeps the converted network near the ANN.
* **Normalization** (Rueckauer 2017, "Parameter normalization": the robust normalization).
  The scale ``λ`` of a layer is the ``p``-th percentile of its activations on the
  calibration samples (the non-zero ones, as the authors' SNN toolbox does: a mostly silent
  layer would otherwise get a scale of 0); ``p`` is :attr:`ConversionSettings.percentile`,
  99.9 by default (a high percentile instead of the maximum is their robust normalization;
  99.9 is the value spikingjelly's ann2snn examples use). With
  :attr:`ConversionSettings.normalization` = ``"channel"`` (the default) each channel of a
  feature map (a convolution's output) gets its own ``λ``, the channel-wise normalization of
  Kim, Park, Na and Yoon ("Spiking-YOLO: spiking neural network for energy-efficient object
  detection", AAAI 2020): a channel whose activations are small is not quantized on the
  scale of the layer's largest; ``"layer"`` is Rueckauer 2017's one ``λ`` per layer. A fully
  connected layer keeps one ``λ`` either way: each of its neurons sees one value per
  calibration sample, too few for a percentile. The weights are scaled and the thresholds
  stay at 1: ``W_l ← W_l · λ_{l-1} / λ_l`` and ``b_l ← b_l / λ_l`` (per input and output
  channel), so a neuron's rate approximates ``a / λ_l`` clipped to [0, 1] (activations above
  ``λ_l`` saturate). ``λ_0`` is 1 for direct encoding (the input is fed as is) and the
  percentile of the calibration inputs for the rate and Poisson encoders, whose spike rates
  are the inputs clipped to [0, 1] (the inputs are divided by ``λ_0`` before the encoder).
  ``percentile = "auto"`` converts with each of :data:`AUTO_PERCENTILES` and keeps the one
  whose readout is closest to the ANN's outputs (mean squared error) on the *calibration*
  samples, at the configured time steps and encoding.
* **Biases** are constant input currents (Rueckauer 2017, "Converting biases"): ``b_l /
  λ_l`` is added at every time step, spread evenly over the ``T`` steps rather than given
  once.
* **Input** (:attr:`ConversionSettings.encoding`): an ``Encoder`` node turns the static
  input into one tensor per step. ``direct`` feeds the analog input to the first layer at
  every step (Rueckauer 2017, "Analog input to first hidden layer": the first hidden layer
  integrates analog currents); ``rate`` gives deterministic regular spikes at rate ``clip(x,
  0, 1)``; ``poisson`` Bernoulli spikes with that probability per step (seeded,
  reproducible).
* **Readout** (:attr:`ConversionSettings.readout`): the last layer has no neuron. With
  ``membrane`` (the default) a ``Readout`` node averages its input current over the steps (a
  non-leaky integrator divided by ``T``), and the last layer is scaled by ``λ_{L-1}`` only
  (``W_L ← W_L · λ_{L-1}``, ``b_L`` unscaled), so the readout sits on the ANN's logit scale
  and its arg-max compares with the ANN's directly. With ``spike_count`` the last layer gets
  IF neurons too (``λ_L`` from its positive outputs) and the readout counts their spikes (0
  to ``T`` per class; ties go to the first class).
* **Linear ops stay linear**: convolutions, fully connected layers (Gemm, MatMul with a
  constant operand), multiplications by constants, additions (residual connections),
  concatenation, average and global average pooling, flatten, reshape, transpose. Batch
  normalization is folded into the Conv or Gemm before it first
  (:class:`~hwmap.passes.FoldBatchNorm`). Where a tensor's scale differs from the one its
  reader needs (a residual shortcut joins a branch normalized by another ``λ``), a ``Mul``
  by the ratio of the two scales is inserted on that edge (a per-channel gain).
* **Refused**, by name: max pooling (an IF neuron's rate cannot take a maximum; with
  :attr:`ConversionSettings.max_pool` = ``"average"`` it is replaced by average pooling of
  the same window, which changes the network: the calibration runs the replaced one),
  activations without a spiking counterpart (Sigmoid, Tanh, Softmax, LeakyRelu...), any op
  this pass does not know, and graphs that already hold neurons.

The result is an *encoded graph* (:func:`hwmap.execute.is_encoded`): it takes the ANN's
static input and gives outputs shaped like the ANN's. The calibration uses the samples it
is given and nothing else; ``hwmap convert`` and the flow give it the calibration part of
``--data`` only (:func:`hwmap.flow.split_data`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable

import numpy as np

from ..errors import DataError, GraphError
from ..graph import Graph, Node
from .base import run_passes
from .bn_fold import FoldBatchNorm
from .const_fold import FoldConstants
from .snn_scales import ScaleBuilder
from .snn_settings import (AUTO_PERCENTILES, ENCODINGS, IF_THRESHOLD, IF_V_INIT, JOIN_OPS, LINEAR_OPS, MAX_POOL,
                           NO_SPIKING_COUNTERPART, NORMALIZATIONS, READOUTS, STEP_DT, WEIGHTED_OPS, Conversion,
                           ConversionSettings, LayerScale, check_timesteps)

__all__ = [
    "ConversionSettings", "Conversion", "LayerScale", "convert_to_snn", "ENCODINGS", "READOUTS", "MAX_POOL",
    "NORMALIZATIONS", "AUTO_PERCENTILES", "WEIGHTED_OPS", "LINEAR_OPS", "JOIN_OPS", "NO_SPIKING_COUNTERPART",
    "IF_THRESHOLD", "IF_V_INIT", "STEP_DT", "check_timesteps",
]

_MAX_POOLS = {"MaxPool": "AveragePool", "GlobalMaxPool": "GlobalAveragePool"}

# -- the pass ----------------------------------------------------------------------------------
def convert_to_snn(graph: Graph, calibration: np.ndarray | None, config: Any = None, *,
                   timesteps: int | None = None) -> Conversion:
    """Convert the ReLU network ``graph`` into an encoded spiking graph.

    ``calibration``: samples batch first, shaped like the graph's one input (the
    calibration part of the data only: scored samples must never choose a scale).
    ``config``: :class:`ConversionSettings`, a :class:`hwmap.ConversionConfig` (a target's
    ``[conversion]`` table) or ``None`` for the defaults; ``timesteps`` overrides its
    ``timesteps``. ``graph`` is left untouched.
    Raises :class:`~hwmap.errors.GraphError` naming the node for anything that cannot be
    converted, :class:`~hwmap.errors.DataError` for calibration data that does not fit or a
    time-step count below 1.
    """
    config = ConversionSettings.of(config)
    if timesteps is not None:
        config = replace(config, timesteps=check_timesteps(timesteps))
    where = f"graph {graph.name!r}"
    if len(graph.inputs) != 1:
        raise GraphError(f"the conversion takes graphs with one input; this one has {len(graph.inputs)} "
                         f"({', '.join(graph.inputs)})", where=where)
    x = _check_calibration(graph, calibration)
    notes: list[str] = []
    ann = _prepare(graph, config, notes)
    acts = _activations(ann, x)
    if config.percentile != "auto":
        return ScaleBuilder(ann, acts, x, config, float(config.percentile), list(notes)).build()
    errors: dict[str, float] = {}
    best: Conversion | None = None
    best_err = math.inf
    reference = {o: acts[o].astype(np.float64) for o in ann.outputs}
    for p in AUTO_PERCENTILES:
        conv = ScaleBuilder(ann, acts, x, config, p, list(notes)).build()
        out = _EVALUATE(conv.graph, x)
        err = float(np.mean([np.mean((out[o].astype(np.float64) - reference[o]) ** 2) for o in ann.outputs]))
        errors[f"{p:g}"] = err
        if err <= best_err:  # ties go to the larger percentile (less clipping)
            best, best_err = conv, err
    assert best is not None
    best.auto = errors
    best.notes.append(f"percentile {best.percentile:g} chosen on the {len(x)} calibration samples: the readout's "
                      f"mean squared error to the ANN's outputs was {best_err:.4g} (candidates: "
                      + ", ".join(f"{k}: {v:.4g}" for k, v in errors.items()) + ")")
    best.graph.meta["conversion"] = best.to_json()
    return best


def _activations(ann: Graph, x: np.ndarray, batch_size: int = 64) -> dict[str, np.ndarray]:
    """The ANN's ReLU outputs and graph outputs on the calibration samples, run in slices
    (only what the scales need is kept)."""
    from ..execute import run

    keep = [n.outputs[0] for n in ann.nodes if n.op == "Relu"] + list(ann.outputs)
    parts: dict[str, list[np.ndarray]] = {t: [] for t in keep}
    for start in range(0, len(x), batch_size):
        out = run(ann, {ann.inputs[0]: x[start:start + batch_size]}, collect=True)
        for t in keep:
            parts[t].append(out[t])
    return {t: np.concatenate(v, axis=0) for t, v in parts.items()}


def _run_encoded(graph: Graph, x: np.ndarray) -> dict[str, np.ndarray]:
    from ..execute import run_batched

    return run_batched(graph, x)


#: How ``percentile = "auto"`` runs a candidate on the calibration samples.
_EVALUATE: Callable[[Graph, np.ndarray], dict[str, np.ndarray]] = _run_encoded



def _check_calibration(graph: Graph, calibration: np.ndarray | None) -> np.ndarray:
    name = graph.inputs[0]
    if calibration is None or np.asarray(calibration).ndim == 0 or len(calibration) == 0:
        raise DataError("the conversion needs calibration samples to set each layer's scale: pass --data (its "
                        "first --calibrate samples calibrate; --calibrate 0 leaves none)")
    x = np.asarray(calibration)
    want = graph.tensor(name).shape
    if x.ndim != len(want) or tuple(x.shape[1:]) != tuple(want[1:]):
        raise DataError(f"calibration samples of shape {list(x.shape[1:])} do not fit input {name!r} of shape "
                        f"{list(want[1:])}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
        raise DataError(f"calibration samples have non-numeric dtype {x.dtype}")
    x = x.astype(np.float32, copy=False)
    if not np.all(np.isfinite(x)):
        raise DataError("calibration samples hold NaN or infinite values")
    return x


def _prepare(graph: Graph, config: ConversionSettings, notes: list[str]) -> Graph:
    """The ANN as it will be converted: constants folded, batch norm folded, max pooling
    replaced (or refused); every op checked."""
    from ..ops import get_op

    for n in graph.nodes:
        if get_op(n.op, where=f"node {n.name!r}").step is not None:
            raise GraphError(f"already spiking (node {n.name!r} is a {n.op}): only ANNs are converted",
                             where=f"graph {graph.name!r}")
    bns = [n.name for n in graph.nodes if n.op == "BatchNormalization"]
    g = run_passes(graph, [FoldConstants(), FoldBatchNorm()])
    left = {n.name for n in g.nodes if n.op == "BatchNormalization"}
    folded = [b for b in bns if b not in left]
    if folded:
        notes.append(f"folded {len(folded)} batch normalization{'s' if len(folded) > 1 else ''} into the layer "
                     f"before: {', '.join(folded)}")
    g.nodes = [_replace_max_pool(n, config, notes) if n.op in _MAX_POOLS else n for n in g.nodes]
    for n in g.nodes:
        _check_op(n)
    return g.validate()


def _replace_max_pool(n: Node, config: ConversionSettings, notes: list[str]) -> Node:
    at = f"node {n.name!r} ({n.op})"
    if config.max_pool == "refuse":
        raise GraphError("max pooling has no spiking counterpart (an IF neuron's rate cannot take a maximum); "
                         "set conversion.max_pool = \"average\" to replace it by average pooling of the same window",
                         where=at)
    if any(int(d) != 1 for d in n.attrs.get("dilations", [])):
        raise GraphError("dilated max pooling has no average-pooling replacement", where=at)
    op = _MAX_POOLS[n.op]
    attrs = {k: v for k, v in n.attrs.items() if k in ("kernel_shape", "strides", "pads", "ceil_mode", "auto_pad")}
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    notes.append(f"replaced max pooling {n.name!r} by average pooling of the same window (max_pool = 'average')")
    return Node(n.name, op, list(n.inputs), list(n.outputs[:1]), attrs)


def _check_op(n: Node) -> None:
    at = f"node {n.name!r} ({n.op})"
    if n.op in NO_SPIKING_COUNTERPART:
        raise GraphError("no spiking counterpart: the conversion turns Relu into integrate-and-fire neurons and "
                         "keeps linear ops linear; retrain with Relu", where=at)
    if n.op == "BatchNormalization":
        raise GraphError("batch normalization that cannot be folded into a Conv or Gemm (it must follow one that "
                         "nothing else reads, with constant statistics)", where=at)
    if n.op == "Relu" or n.op in LINEAR_OPS:
        if n.op == "Transpose" and list(n.attrs.get("perm", [-1]))[:1] != [0]:
            raise GraphError("a transpose that moves the batch axis is not converted", where=at)
        return
    if n.op in WEIGHTED_OPS:
        if len(n.inputs) != 1:
            raise GraphError(f"{n.op} of {len(n.inputs)} tensors: the conversion needs its weights constant",
                             where=at)
        if n.op == "Gemm" and ("A" in n.params or int(n.attrs.get("transA", 0))):
            raise GraphError("Gemm with a constant or transposed A is not converted", where=at)
        if n.op == "MatMul" and "A" in n.params:
            raise GraphError("MatMul with a constant A is not converted (the weights must be B)", where=at)
        return
    if n.op in JOIN_OPS:
        if n.op in ("Concat", "Sum") and n.params:
            raise GraphError(f"{n.op} of a constant is not converted", where=at)
        return
    raise GraphError("not converted to a spiking network: the conversion handles Relu, "
                     f"{', '.join(WEIGHTED_OPS + JOIN_OPS + LINEAR_OPS)}, and folds BatchNormalization", where=at)
