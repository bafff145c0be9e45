"""The settings and results of the ANN-to-SNN conversion (:mod:`hwmap.passes.snn_convert`
explains each setting): the constants it uses, :class:`ConversionSettings`,
:class:`LayerScale` and :class:`Conversion`."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import DataError
from ..graph import Graph
from ..ops.time import MAX_TIMESTEPS

__all__ = [
    "ConversionSettings", "Conversion", "LayerScale", "check_timesteps", "ENCODINGS", "READOUTS", "MAX_POOL",
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

def check_timesteps(t: Any) -> int:
    """``t`` as a number of time steps (an integer from 1 to the Encoder's limit), else a
    :class:`DataError`."""
    if isinstance(t, bool) or not isinstance(t, (int, np.integer)) or t < 1:
        raise DataError(f"time steps {t!r}: must be an integer of at least 1")
    if t > MAX_TIMESTEPS:
        raise DataError(f"time steps {t!r}: at most {MAX_TIMESTEPS}")
    return int(t)



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
