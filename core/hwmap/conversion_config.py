"""The ``[conversion]`` table of a spiking target's config: how the ANN-to-SNN conversion
(:func:`hwmap.convert_to_snn`, :mod:`hwmap.passes.snn_convert`) is set, with each default's
unit and source. A spiking plugin puts ``conversion: ConversionConfig = ConversionConfig()``
in its config model; ``--set conversion.timesteps=4`` then works in every command, and
``hwmap convert --set KEY=VALUE`` validates its settings with the same model.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Union

from pydantic import field_validator

from .constants import constant
from .ops.time import MAX_TIMESTEPS
from .target import ConfigSection

__all__ = ["ConversionConfig"]

_SOURCE = "Rueckauer et al., Front. Neurosci. 11:682, 2017"


class ConversionConfig(ConfigSection):
    """The ``[conversion]`` table of a spiking target's config: how an ANN handed to it is
    converted (:mod:`hwmap.passes.snn_convert` explains each setting; it takes this table as
    it takes :class:`~hwmap.passes.snn_convert.ConversionSettings`).
    ``--set conversion.timesteps=4`` overrides a value like any other."""

    timesteps: int = constant(8, "steps", "hwmap's default: zoo:digits_cnn converted with direct encoding is "
                              "within 0.5 points of the ANN at 8 steps (docs/snn.md)", ge=1, le=MAX_TIMESTEPS,
                              description="time steps each inference runs for")
    encoding: Literal["direct", "rate", "poisson"] = constant(
        "direct", "", f"{_SOURCE}, analog input to the first hidden layer at every step",
        description="how the static input becomes per-step input: direct (the analog values every step), rate "
                    "(deterministic regular spikes at rate clip(x, 0, 1)) or poisson (Bernoulli spikes)")
    percentile: Union[float, Literal["auto"]] = constant(
        99.9, "%", f"{_SOURCE}, parameter normalization: robust normalization by a high percentile of the "
        "activations instead of their maximum; 99.9 as in spikingjelly's ann2snn examples",
        description="each scale λ is this percentile of the non-zero activations on the calibration samples "
                    "(100: their maximum); auto: the one of 95, 98, 99, 99.5, 99.9, 99.99, 100 whose readout is "
                    "closest to the ANN's outputs on the calibration samples")
    normalization: Literal["channel", "layer"] = constant(
        "channel", "", "Kim et al., AAAI 2020 (Spiking-YOLO): channel-wise normalization",
        description="one scale λ per channel of a feature map, or one per layer (fully connected layers have one "
                    "either way)")
    readout: Literal["membrane", "spike_count"] = constant(
        "membrane", "", "hwmap's default: the mean input current of the last layer, on the ANN's logit scale",
        description="membrane: the last layer's input current averaged over the steps; spike_count: the last "
                    "layer spikes too and its spikes are counted")
    max_pool: Literal["refuse", "average"] = constant(
        "refuse", "", f"{_SOURCE}, spiking max-pooling: a rate-coded IF neuron cannot take a maximum",
        description="refuse a network with max pooling, or replace it by average pooling of the same window")
    seed: int = constant(0, "", "hwmap's default", ge=0, le=2**63 - 1,
                         description="seed of the poisson encoder (with the sample's content and the step)")
    dt: float = constant(1e-3, "s", "assumed: one millisecond per step, the step of zoo:digits_snn", gt=0,
                         description="the time one step stands for (the neurons' dt; their r is 1/dt, so each step "
                                     "integrates the layer's input once): what a target running in real time takes "
                                     "per step")

    @field_validator("percentile")
    @classmethod
    def _percentile_range(cls, v: Any) -> Any:
        if isinstance(v, str):
            return v
        if isinstance(v, bool) or not math.isfinite(v) or not 0 < v <= 100:
            raise ValueError("must be a number in (0, 100] or \"auto\"")
        return v
