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
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Callable

import numpy as np

from ..errors import DataError, GraphError, HwmapError
from ..graph import Graph, Node, Tensor
from ..ops.time import MAX_TIMESTEPS
from .base import prune_tensors, run_passes, unique_node_name
from .bn_fold import FoldBatchNorm
from .const_fold import FoldConstants

__all__ = [
    "ConversionSettings", "Conversion", "LayerScale", "convert_to_snn", "ENCODINGS", "READOUTS", "MAX_POOL",
    "NORMALIZATIONS", "AUTO_PERCENTILES", "WEIGHTED_OPS", "LINEAR_OPS", "JOIN_OPS", "NO_SPIKING_COUNTERPART",
    "IF_THRESHOLD", "IF_V_INIT", "STEP_DT",
]

#: ``Encoder`` encodings, ``Readout`` modes, scale granularities and what to do with max pooling.
ENCODINGS = ("direct", "rate", "poisson")
READOUTS = ("membrane", "spike_count")
NORMALIZATIONS = ("channel", "layer")
MAX_POOL = ("refuse", "average")
#: The percentiles ``percentile = "auto"`` tries (on the calibration samples only).
AUTO_PERCENTILES = (95.0, 98.0, 99.0, 99.5, 99.9, 99.99, 100.0)

#: The converted neurons' threshold and initial membrane potential (θ/2), and the default step (s).
IF_THRESHOLD = 1.0
IF_V_INIT = 0.5 * IF_THRESHOLD
STEP_DT = 1e-3

#: Ops whose constant operand absorbs the scales (``W ← W·σ_in/σ_out``).
WEIGHTED_OPS = ("Conv", "Gemm", "MatMul", "Mul")
#: Ops that move or average values within a channel: a scale passes through them.
LINEAR_OPS = ("Flatten", "Reshape", "AveragePool", "GlobalAveragePool", "Identity", "Dropout", "Transpose",
              "Squeeze", "Unsqueeze")
#: Ops joining several tensors: Add, Sub and Sum need one scale on every input (a constant
#: operand is divided by it); Concat joins the inputs' scales.
JOIN_OPS = ("Add", "Sub", "Sum", "Concat")
#: Activations a rate-coded IF neuron cannot approximate: named in the refusal.
NO_SPIKING_COUNTERPART = ("Sigmoid", "Tanh", "Softmax", "LogSoftmax", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu",
                          "Gelu", "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Clip", "Exp", "Log",
                          "Erf", "Sqrt", "Abs", "Neg", "Sign", "ThresholdedRelu", "Relu6")
_MAX_POOLS = {"MaxPool": "AveragePool", "GlobalMaxPool": "GlobalAveragePool"}
_POOLS = ("AveragePool", "GlobalAveragePool")
_RESHAPES = ("Flatten", "Reshape", "Squeeze", "Unsqueeze")


@dataclass(frozen=True)
class ConversionSettings:
    """How to convert (each setting is explained in the module docstring). Spiking targets
    keep them as the ``[conversion]`` table of their config, :class:`hwmap.ConversionConfig`,
    which :func:`convert_to_snn` takes as well (any object with these attributes does)."""

    timesteps: int = 8
    encoding: str = "direct"
    percentile: float | str = 99.9
    normalization: str = "channel"
    readout: str = "membrane"
    max_pool: str = "refuse"
    seed: int = 0
    dt: float = STEP_DT

    def __post_init__(self) -> None:
        check_timesteps(self.timesteps)
        for name, allowed in (("encoding", ENCODINGS), ("normalization", NORMALIZATIONS), ("readout", READOUTS),
                              ("max_pool", MAX_POOL)):
            if getattr(self, name) not in allowed:
                raise DataError(f"conversion setting {name} = {getattr(self, name)!r}: must be one of "
                                f"{', '.join(map(repr, allowed))}")
        p = self.percentile
        if p != "auto" and (isinstance(p, (bool, str)) or not isinstance(p, (int, float)) or not math.isfinite(p)
                            or not 0 < p <= 100):
            raise DataError(f"conversion setting percentile = {p!r}: must be a number in (0, 100] or 'auto'")
        dt = self.dt
        if isinstance(dt, (bool, str)) or not isinstance(dt, (int, float)) or not math.isfinite(dt) or not dt > 0:
            raise DataError(f"conversion setting dt = {dt!r}: must be a positive number of seconds")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise DataError(f"conversion setting seed = {self.seed!r}: must be an integer from 0 to 2**63 - 1")

    @classmethod
    def of(cls, config: Any) -> "ConversionSettings":
        """``config`` (settings, a :class:`hwmap.ConversionConfig`, any object with the same
        attributes, or ``None`` for the defaults) as settings."""
        if config is None:
            return cls()
        if isinstance(config, cls):
            return config
        return cls(**{f.name: getattr(config, f.name) for f in fields(cls)})

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class LayerScale:
    """The scales ``λ`` of one neuron layer ``node``: one per channel (or one for the layer),
    the ``percentile``-th percentile of the non-zero activations of the ANN tensor it
    replaces on the calibration samples. ``active`` of ``total`` activations were non-zero;
    ``fallback`` channels were never positive and got the layer's scale (or 1)."""

    node: str
    scales: tuple[float, ...]
    active: int
    total: int
    fallback: int = 0

    @property
    def low(self) -> float:
        return min(self.scales)

    @property
    def high(self) -> float:
        return max(self.scales)

    def to_json(self) -> dict[str, Any]:
        return {"node": self.node, "scales": list(self.scales), "min": self.low, "max": self.high,
                "active": self.active, "total": self.total, "fallback_channels": self.fallback}


@dataclass
class Conversion:
    """What :func:`convert_to_snn` made: the encoded ``graph``, the ``scales`` of its neuron
    layers (graph order), the input scale ``λ_0``, the ``percentile`` used (a number also when
    the config said ``"auto"``), the ``notes`` saying what was done (folded, replaced,
    inserted), the ``config``, the names of the ``neurons`` (IF nodes) and, for
    ``"auto"``, each candidate's calibration error (``auto``)."""

    graph: Graph
    scales: list[LayerScale]
    input_scale: float
    percentile: float
    notes: list[str]
    config: ConversionSettings
    calibration_samples: int
    neurons: list[str] = field(default_factory=list)
    auto: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"config": self.config.to_json(), "percentile": self.percentile,
                "input_scale": self.input_scale, "calibration_samples": self.calibration_samples,
                "scales": [s.to_json() for s in self.scales], "neurons": list(self.neurons),
                "notes": list(self.notes), **({"auto_mse": dict(self.auto)} if self.auto else {})}


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
        return _Builder(ann, acts, x, config, float(config.percentile), list(notes)).build()
    errors: dict[str, float] = {}
    best: Conversion | None = None
    best_err = math.inf
    reference = {o: acts[o].astype(np.float64) for o in ann.outputs}
    for p in AUTO_PERCENTILES:
        conv = _Builder(ann, acts, x, config, p, list(notes)).build()
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


def check_timesteps(t: Any) -> int:
    """``t`` as a number of time steps (an integer from 1 to the Encoder's limit), else a
    :class:`DataError`."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
        raise DataError(f"time steps {t!r}: must be an integer of at least 1")
    if t > MAX_TIMESTEPS:
        raise DataError(f"time steps {t!r}: at most {MAX_TIMESTEPS}")
    return int(t)


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


# -- scales: arrays broadcast to a sample (trailing alignment), kept as small as they can be -----------
def _compact(s: Any) -> np.ndarray:
    """``s`` with every axis along which it is constant reduced to size 1, leading size-1
    axes dropped (a scalar when it is constant)."""
    a = np.asarray(s, dtype=np.float64)
    for ax in range(a.ndim):
        if a.shape[ax] > 1 and np.all(a == a.take([0], axis=ax)):
            a = a.take([0], axis=ax)
    while a.ndim and a.shape[0] == 1:
        a = a[0]
    return a


def _channel_vector(s: np.ndarray, sample: tuple[int, ...]) -> np.ndarray | None:
    """``s`` as one value per channel (axis 0 of the sample), or ``None`` if it varies along
    another axis."""
    full = np.broadcast_to(s, sample) if sample else np.asarray(s)
    if not sample:
        return full.reshape(1)
    flat = full.reshape(sample[0], -1)
    if not np.all(flat == flat[:, :1]):
        return None
    return flat[:, 0].copy()


def _per_channel(vec: np.ndarray, rank: int) -> np.ndarray:
    """A channel vector as a sample-shaped scale of ``rank`` axes: ``(C, 1, ..., 1)``."""
    return _compact(vec.reshape((-1,) + (1,) * (rank - 1))) if rank else _compact(vec)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    try:
        x, y = np.broadcast_arrays(a, b)
    except ValueError:
        return False
    return bool(np.allclose(x, y, rtol=1e-12, atol=0.0))


def _percentiles(a: np.ndarray, p: float, per_channel: bool) -> tuple[np.ndarray, int, int]:
    """The ``p``-th percentile of the positive values of ``a`` (batch first), per channel
    (axis 1) or over the tensor (numpy's linear interpolation); how many values were
    positive; how many channels had none (they get the tensor's percentile, or 1)."""
    a = np.asarray(a, dtype=np.float64)
    pos = a[a > 0]
    whole = float(np.percentile(pos, p)) if pos.size else 1.0
    if not per_channel or a.ndim < 2:
        return np.asarray(whole), int(pos.size), int(pos.size == 0)
    per = np.moveaxis(a, 1, 0).reshape(a.shape[1], -1)
    out = np.empty(a.shape[1])
    dead = 0
    for c in range(a.shape[1]):
        v = per[c][per[c] > 0]
        if v.size:
            out[c] = np.percentile(v, p)
        else:
            out[c], dead = whole, dead + 1
    return _per_channel(out, a.ndim - 1), int(pos.size), dead


class _Builder:
    """Scale propagation and the rewrite, for one percentile (one use: :meth:`build`).

    Every tensor ``t`` of the spiking graph stands for the ANN's ``t`` divided by a scale
    ``σ(t)`` (an array broadcast to one sample: a scalar, or one value per channel): a
    neuron layer's spikes have ``σ = λ``, the encoded input ``λ_0``. A backward pass first
    finds the scale each tensor is *needed* at by its first reader that cares (an IF: its
    ``λ``; a graph output: 1; a join or a pass-through op: what its output is needed at;
    a weighted op: none). The forward pass then rewrites each node so that its output has
    the scale needed: a weighted op absorbs ``σ_in/σ_out`` in its weights and ``1/σ_out``
    in its bias; where a tensor's scale is not the one its reader needs (a tensor with
    several readers, or behind an op without weights) a ``Mul`` by ``σ(t)/σ_needed`` is
    inserted on that edge.
    """

    def __init__(self, ann: Graph, acts: dict[str, np.ndarray], x: np.ndarray, config: ConversionSettings,
                 percentile: float, notes: list[str]) -> None:
        self.ann, self.acts, self.x, self.config, self.p, self.notes = ann, acts, x, config, percentile, notes
        self.g = ann.copy()
        self.sigma: dict[str, np.ndarray] = {}
        self.taken: set[str] = {sub.name for n in ann.nodes for sub in n.walk()}
        self.scales: list[LayerScale] = []
        self.neurons: list[str] = []
        self.lam: dict[str, np.ndarray] = {}
        self.out_lam: dict[str, np.ndarray] = {}
        self.spiking_outputs = config.readout == "spike_count"

    def _sample(self, t: str) -> tuple[int, ...]:
        return tuple(self.g.tensors[t].shape[1:])

    def _layer_scale(self, node: str, tensor: str) -> np.ndarray:
        a = self.acts[tensor]
        per_channel = self.config.normalization == "channel" and a.ndim >= 3
        lam, active, dead = _percentiles(a, self.p, per_channel)
        self.scales.append(LayerScale(node, tuple(float(v) for v in lam.ravel()), active, int(a.size), dead))
        if dead and not per_channel or active == 0:
            self.notes.append(f"{node!r} was never positive on the calibration samples: its scale is 1")
        elif dead:
            were = "were" if dead > 1 else "was"
            self.notes.append(f"{node!r}: {dead} of {a.shape[1]} channels {were} never positive on the calibration "
                              "samples and got the layer's scale")
        return lam

    def _needed(self) -> dict[str, np.ndarray | None]:
        """The scale each tensor is needed at by its first reader that cares (backward)."""
        need: dict[str, np.ndarray | None] = {}
        for n in self.ann.nodes:
            if n.op == "Relu":
                self.lam[n.name] = self._layer_scale(n.name, n.outputs[0])
        for o in self.ann.outputs:
            if self.spiking_outputs:
                self.out_lam[o] = self._layer_scale(f"{o}_neurons", o)
            need[o] = self.out_lam.get(o, np.asarray(1.0))
        for n in reversed(self.ann.nodes):
            out = need.get(n.outputs[0]) if n.outputs else None
            wants: list[np.ndarray | None]
            if n.op == "Relu":
                wants = [self.lam[n.name]]
            elif n.op in LINEAR_OPS:
                wants = [None if out is None else self._through(n, out, backward=True)]
            elif n.op == "Concat":
                wants = list(self._split(n, out)) if out is not None else [None] * len(n.inputs)
            elif n.op in JOIN_OPS:
                shape = self.ann.tensors[n.outputs[0]].shape
                wants = [out if self.ann.tensors[t].shape == shape else None for t in n.inputs]
            else:
                wants = [None] * len(n.inputs)
            for t, w in zip(n.inputs, wants):
                if w is not None and need.get(t) is None:
                    need[t] = w
        return need

    def build(self) -> Conversion:
        cfg = self.config
        need = self._needed()
        inp = self.ann.inputs[0]
        lam0 = 1.0
        pre: list[Node] = []
        enc_in = inp
        if cfg.encoding != "direct":
            negative = float(np.mean(self.x < 0))
            if negative > 0:
                self.notes.append(f"{negative:.1%} of the calibration input values are negative: the {cfg.encoding} "
                                  "encoder gives them no spikes")
            lam0 = float(_percentiles(self.x, self.p, False)[0])
            if lam0 != 1.0:
                enc_in = self._fresh_tensor(f"{inp}_scaled", inp)
                pre.append(Node(self._fresh_node("input_scale"), "Mul", [inp], [enc_in],
                                params={"B": np.asarray(1.0 / lam0, dtype=np.float32)}))
                self.notes.append(f"inputs divided by λ_0 = {lam0:.6g} before the {cfg.encoding} encoder")
        encoded = self._fresh_tensor(f"{inp}_encoded", inp)
        attrs: dict[str, Any] = {"encoding": cfg.encoding, "timesteps": int(cfg.timesteps)}
        if cfg.encoding == "poisson":
            attrs["seed"] = int(cfg.seed)
        encoder = Node(self._fresh_node("encoder"), "Encoder", [enc_in], [encoded], attrs)
        self.sigma[encoded] = np.asarray(lam0)
        rename = {inp: encoded}
        body: list[Node] = []
        for n in self.ann.nodes:
            body.extend(self._convert(n, rename, need))
        readouts = self._readouts(body, rename)
        g = self.g
        g.name = f"{self.ann.name}_snn"
        g.nodes = pre + [encoder] + body + readouts
        prune_tensors(g)
        conv = Conversion(g, self.scales, lam0, self.p, self.notes, cfg, int(len(self.x)), self.neurons)
        g.meta = {**{k: v for k, v in g.meta.items() if k != "dt"}, "conversion": conv.to_json()}
        try:
            g.validate()
        except HwmapError as e:  # a graph this pass did not foresee: say where it went wrong
            raise GraphError(f"the converted graph is not well formed: {e}", where=f"graph {self.ann.name!r}") from None
        return conv

    def _readouts(self, body: list[Node], rename: dict[str, str]) -> list[Node]:
        cfg = self.config
        readouts: list[Node] = []
        multi = len(self.ann.outputs) > 1
        for o in self.ann.outputs:
            name = f"readout_{o}" if multi else "readout"
            src = rename.get(o, o)
            if src == o:  # the producer's output becomes the readout's input
                src = self._fresh_tensor(f"{o}_current", o)
                for n in body:
                    n.outputs = [src if t == o else t for t in n.outputs]
                    n.inputs = [src if t == o else t for t in n.inputs]
                self.sigma[src] = self.sigma[o]
            if self.spiking_outputs:
                src = self._rescaled(body, src, self.out_lam[o], f"{o}_neurons")
                spikes = self._fresh_tensor(f"{o}_spikes", o)
                body.append(self._if_node(self._fresh_node(f"{o}_neurons"), src, spikes))
                src = spikes
            else:
                src = self._rescaled(body, src, np.asarray(1.0), name)
            readouts.append(Node(self._fresh_node(name), "Readout", [src], [o], {"mode": cfg.readout}))
        return readouts

    # -- rewriting one node ---------------------------------------------------------------
    def _convert(self, n: Node, rename: dict[str, str], need: dict[str, np.ndarray | None]) -> list[Node]:
        out: list[Node] = []
        inputs = [rename.get(t, t) for t in n.inputs]
        at = f"node {n.name!r} ({n.op})"
        if n.op == "Relu":
            src = self._rescaled(out, inputs[0], self.lam[n.name], n.name)
            out.append(self._if_node(n.name, src, n.outputs[0]))
            self.sigma[n.outputs[0]] = self.lam[n.name]
            return out
        m = n.copy()
        m.outputs = m.outputs[:1]  # Dropout's mask is not converted
        y = m.outputs[0]
        target = need.get(y)
        if n.op in LINEAR_OPS:
            src = inputs[0]
            if target is not None:
                src = self._rescaled(out, src, self._through(n, target, backward=True), n.name)
            elif n.op in _POOLS and _channel_vector(self.sigma[src], self._sample(src)) is None:
                src = self._rescaled(out, src, self._channel_max(src), n.name)
            m.inputs = [src] + inputs[1:]
            self.sigma[y] = self._through(n, self.sigma[src], backward=False)
        elif n.op == "Concat":
            if target is not None:
                m.inputs = [self._rescaled(out, t, w, n.name) for t, w in zip(inputs, self._split(n, target))]
            else:
                m.inputs = inputs
            axis = int(n.attrs.get("axis", 0))
            parts = [np.broadcast_to(self.sigma[t], self._sample(t)) for t in m.inputs]
            self.sigma[y] = _compact(np.concatenate(parts, axis=(axis % (len(parts[0].shape) + 1)) - 1))
        elif n.op in JOIN_OPS:
            common = target if target is not None else self.sigma[inputs[0]]
            m.inputs = [self._rescaled(out, t, common, n.name) for t in inputs]
            for k in list(m.params):  # a constant operand (a bias) is on the ANN's scale
                m.params[k] = _cast(m.params[k].astype(np.float64) / common, m.params[k])
            self.sigma[y] = common
        else:
            self.sigma[y] = self._weighted(m, inputs, target, out, at)
        out.append(m)
        return out

    def _weighted(self, m: Node, inputs: list[str], target: np.ndarray | None, out: list[Node], at: str) -> np.ndarray:
        """Scale ``m``'s weights (in place; a Mul making its input's scale usable may be
        appended to ``out``); returns its output's scale."""
        src = inputs[0]
        y = m.outputs[0]
        ysample = self._sample(y)
        if m.op == "Mul":
            s_out = target if target is not None else np.asarray(1.0)
            m.inputs = [src]
            k = "B" if "B" in m.params else "A"
            gain = _compact(self.sigma[src] / s_out)
            m.params[k] = _cast(m.params[k].astype(np.float64) * gain, m.params[k])
            return s_out
        if m.op == "Conv":
            vec_in = _channel_vector(self.sigma[src], self._sample(src))
            if vec_in is None:
                src = self._rescaled(out, src, self._channel_max(src), m.name)
                vec_in = _channel_vector(self.sigma[src], self._sample(src))
                assert vec_in is not None
        else:  # Gemm, MatMul: the features are the input's last axis
            vec_in = _last_axis_vector(self.sigma[src], self._sample(src))
            if vec_in is None:
                src = self._rescaled(out, src, self._last_axis_max(src), m.name)
                vec_in = _last_axis_vector(self.sigma[src], self._sample(src))
                assert vec_in is not None
        m.inputs = [src]
        want = target if target is not None else np.asarray(1.0)
        if m.op == "Conv":
            vec_out = _channel_vector(want, ysample)
            if vec_out is None:
                vec_out = np.broadcast_to(want, ysample).reshape(ysample[0], -1).max(axis=1)
            _scale_conv(m, vec_in, vec_out)
            return _per_channel(vec_out, len(ysample))
        vec_out = _last_axis_vector(want, ysample) if ysample else np.broadcast_to(want, (1,)).copy()
        if vec_out is None:
            vec_out = np.broadcast_to(want, ysample).reshape(-1, ysample[-1]).max(axis=0)
        if m.op == "Gemm":
            _scale_gemm(m, vec_in, vec_out, at)
        else:
            _scale_matmul(m, vec_in, vec_out, at)
        return _compact(vec_out.reshape((1,) * (len(ysample) - 1) + (-1,))) if ysample else _compact(vec_out)

    def _channel_max(self, t: str) -> np.ndarray:
        sample = self._sample(t)
        full = np.broadcast_to(self.sigma[t], sample)
        return _per_channel(full.reshape(sample[0], -1).max(axis=1), len(sample))

    def _last_axis_max(self, t: str) -> np.ndarray:
        sample = self._sample(t)
        full = np.broadcast_to(self.sigma[t], sample)
        return _compact(full.reshape(-1, sample[-1]).max(axis=0))

    def _through(self, n: Node, s: np.ndarray, *, backward: bool) -> np.ndarray:
        """A scale carried through pass-through node ``n`` (from its input to its output, or
        back): pools and identities keep it; reshapes and transposes move it with the values."""
        if n.op not in _RESHAPES and n.op != "Transpose":
            return s
        src, dst = (n.outputs[0], n.inputs[0]) if backward else (n.inputs[0], n.outputs[0])
        shp_src, shp_dst = tuple(self.ann.tensors[src].shape[1:]), tuple(self.ann.tensors[dst].shape[1:])
        full = np.broadcast_to(s, shp_src)
        if n.op == "Transpose":
            perm = [int(p) - 1 for p in n.attrs.get("perm", [])[1:]]
            if backward:
                perm = list(np.argsort(perm))
            return _compact(np.transpose(full, perm))
        return _compact(full.reshape(shp_dst))

    def _split(self, n: Node, s: np.ndarray) -> list[np.ndarray]:
        """The part of an output scale that falls on each input of Concat ``n``."""
        axis = int(n.attrs.get("axis", 0))
        out_sample = tuple(self.ann.tensors[n.outputs[0]].shape[1:])
        ax = (axis % (len(out_sample) + 1)) - 1
        full = np.broadcast_to(s, out_sample)
        sizes = [self.ann.tensors[t].shape[1:][ax] for t in n.inputs]
        return [_compact(p) for p in np.split(full, np.cumsum(sizes)[:-1], axis=ax)]

    def _if_node(self, name: str, src: str, dst: str) -> Node:
        self.neurons.append(name)
        f32 = np.float32
        dt = float(self.config.dt)
        return Node(name, "IF", [src], [dst], {"dt": dt, "reset": "subtract"},
                    params={"r": np.asarray(1.0 / dt, f32), "v_threshold": np.asarray(IF_THRESHOLD, f32),
                            "v_init": np.asarray(IF_V_INIT, f32)})

    def _rescaled(self, out: list[Node], t: str, wanted: np.ndarray, reader: str) -> str:
        """``t``, or a ``Mul`` of it taking it from its scale to ``wanted`` (appended to ``out``)."""
        have = self.sigma[t]
        if _same(have, wanted):
            return t
        gain = _compact(have / wanted)
        sample = self._sample(t)
        if np.broadcast_shapes(gain.shape, sample) != sample:
            raise GraphError(f"cannot rescale tensor {t!r}: its scale does not broadcast to it",
                             where=f"node {reader!r}")
        dst = self._fresh_tensor(f"{t}_to_{reader}", t)
        name = self._fresh_node(f"{reader}_rescale")
        out.append(Node(name, "Mul", [t], [dst], params={"B": gain.astype(np.float32)}))
        self.sigma[dst] = _compact(np.broadcast_to(wanted, np.broadcast_shapes(have.shape, np.shape(wanted))))
        what = f"by {float(gain):.6g}" if gain.ndim == 0 else f"by per-channel gains in [{gain.min():.6g}, {gain.max():.6g}]"
        self.notes.append(f"inserted {name!r}: {t!r} multiplied {what} for the scale {reader!r} needs")
        return dst

    def _fresh_node(self, base: str) -> str:
        name = unique_node_name(self.g, base, self.taken)
        self.taken.add(name)
        return name

    def _fresh_tensor(self, base: str, like: str) -> str:
        name, i = base, 0
        while name in self.g.tensors:
            i += 1
            name = f"{base}_{i}"
        t = self.g.tensors[like]
        self.g.tensors[name] = Tensor(name, t.shape, t.dtype)
        return name


def _last_axis_vector(s: np.ndarray, sample: tuple[int, ...]) -> np.ndarray | None:
    """``s`` as one value per feature of the sample's last axis, or ``None`` if it varies
    along another axis."""
    if not sample:
        return np.asarray(s, dtype=np.float64).reshape(1)
    full = np.broadcast_to(s, sample).reshape(-1, sample[-1])
    if not np.all(full == full[:1]):
        return None
    return full[0].copy()


def _cast(a: np.ndarray, like: np.ndarray) -> np.ndarray:
    return np.asarray(a, dtype=like.dtype if np.issubdtype(like.dtype, np.floating) else np.float32)


def _scale_conv(m: Node, vec_in: np.ndarray, vec_out: np.ndarray) -> None:
    """``W[o, j] ← W[o, j] · σ_in[c(o, j)] / σ_out[o]`` (``c``: the input channel weight
    ``j`` of group ``o`` reads) and ``B[o] ← B[o] / σ_out[o]``."""
    w = m.params["W"]
    cout, cin_g = w.shape[:2]
    groups = int(m.attrs.get("group", 1))
    vin = np.broadcast_to(vec_in, (cin_g * groups,))
    vout = np.broadcast_to(vec_out, (cout,))
    idx = (np.arange(cout)[:, None] // (cout // groups)) * cin_g + np.arange(cin_g)[None, :]
    gain = vin[idx] / vout[:, None]
    m.params["W"] = _cast(w.astype(np.float64) * gain.reshape(gain.shape + (1,) * (w.ndim - 2)), w)
    if "B" in m.params:
        m.params["B"] = _cast(m.params["B"].astype(np.float64) / vout, m.params["B"])


def _scale_gemm(m: Node, vec_in: np.ndarray, vec_out: np.ndarray, at: str) -> None:
    """``Y = α A·B' + β C``: ``B`` times ``σ_in/σ_out`` along its input and output axes,
    ``C`` over ``σ_out`` along its last axis."""
    if "B" not in m.params:
        raise GraphError("its weights are not constant: the conversion scales them", where=at)
    w = m.params["B"]
    trans = int(m.attrs.get("transB", 0))
    k, n = (w.shape[1], w.shape[0]) if trans else w.shape
    vin, vout = np.broadcast_to(vec_in, (k,)), np.broadcast_to(vec_out, (n,))
    gain = vin[None, :] / vout[:, None] if trans else vin[:, None] / vout[None, :]
    m.params["B"] = _cast(w.astype(np.float64) * gain, w)
    if "C" in m.params:
        c = m.params["C"].astype(np.float64)
        m.params["C"] = _cast(np.broadcast_to(c, np.broadcast_shapes(c.shape, (n,))) / vout, m.params["C"])


def _scale_matmul(m: Node, vec_in: np.ndarray, vec_out: np.ndarray, at: str) -> None:
    """``x @ B``: ``B[..., k, n]`` times ``σ_in[k] / σ_out[n]`` (a 1-D ``B`` has no ``n``)."""
    if "B" not in m.params:
        raise GraphError("its weights are not constant: the conversion scales them", where=at)
    w = m.params["B"]
    if w.ndim == 1:
        gain = np.broadcast_to(vec_in, w.shape) / float(np.broadcast_to(vec_out, (1,))[0])
    else:
        vin = np.broadcast_to(vec_in, (w.shape[-2],))
        vout = np.broadcast_to(vec_out, (w.shape[-1],))
        gain = vin[:, None] / vout[None, :]
    m.params["B"] = _cast(w.astype(np.float64) * gain, w)
