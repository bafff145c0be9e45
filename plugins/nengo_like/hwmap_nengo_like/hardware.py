"""The config schema of the ``nengo_like`` target: a neuromorphic substrate of cores
(chapter Section 3.2.5, Fig. 3.2; the Loihi-like preset after Davies et al., "Loihi: A
Neuromorphic Manycore Processor with On-Chip Learning", IEEE Micro 38(1), 2018).

* ``[substrate]``: cores, and per core the neurons, the synapses (synaptic memory words) and
  the input axons (distinct presynaptic sources) it holds; the weight width the memory stores;
* ``[energy]``: per synaptic operation, per neuron update, per spike routed, static power;
* ``[neurons]``: how the ANN's activations become NEF neurons: the spiking wrapper around the
  rectified-linear rate, the firing-rate scale (1: a neuron at the layer's scale ``λ`` fires
  once per step) and the synapse on the outputs;
* ``[estimate]``: the tolerance of the time-to-accuracy curve;
* ``[conversion]``: the core's ANN-to-SNN conversion (:class:`hwmap.ConversionConfig`).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hwmap import ConfigSection, ConversionConfig, TargetConfig, constant

__all__ = ["SubstrateConfig", "EnergyConfig", "NeuronsConfig", "EstimateConfig", "NengoLikeConfig", "LOIHI",
           "WRAPPERS", "MAX_NEURONS_PER_CORE", "MAX_CORES"]

LOIHI = "Davies et al., IEEE Micro 38(1), 2018 (Loihi)"
#: The neuron types the ANN's activations may become (wrappers of RectifiedLinear, and the
#: integrate-and-fire SpikingRectifiedLinear).
WRAPPERS = ("RegularSpiking", "PoissonSpiking", "StochasticSpiking", "SpikingRectifiedLinear")
MAX_CORES = 1 << 16
MAX_NEURONS_PER_CORE = 1 << 20


class SubstrateConfig(ConfigSection):
    cores: int = constant(16, "", "assumed: a small multi-core chip; zoo:digits_cnn converted needs 5 cores at 256 "
                          "neurons per core", ge=1, le=MAX_CORES, description="cores on the substrate")
    neurons_per_core: int = constant(256, "", "assumed: a quarter of Loihi's 1,024 compartments per core",
                                     ge=1, le=MAX_NEURONS_PER_CORE, description="neurons a core holds")
    synapses_per_core: int = constant(65536, "", "assumed: 64 K synaptic memory words per core, half of Loihi's "
                                      "128 KB at one byte per synapse", ge=1, le=1 << 30,
                                      description="synapses (weights) a core's memory holds")
    axons_per_core: int = constant(4096, "", f"{LOIHI}: 4,096 fan-in axons per core", ge=1, le=1 << 24,
                                   description="distinct presynaptic sources (input axons) a core takes")
    weight_bits: int = constant(8, "bit", f"{LOIHI}: synaptic weights of 1 to 9 bits; 8 assumed", ge=1, le=32,
                                description="bits a stored synapse weight takes")


class EnergyConfig(ConfigSection):
    synop_pj: float = constant(23.6, "pJ", f"{LOIHI}, Table 2: synaptic spike operation", ge=0, le=1e6,
                               description="energy per synaptic operation")
    neuron_update_pj: float = constant(52.0, "pJ", f"{LOIHI}, Table 2: neuron update (active)", ge=0, le=1e6,
                                       description="energy per neuron update per step")
    spike_pj: float = constant(1.7, "pJ", f"{LOIHI}, Table 2: within-tile spike energy", ge=0, le=1e6,
                               description="energy to route one spike")
    static_w: float = constant(0.0, "W", "assumed: leakage not modelled (0 W)", ge=0, le=100.0,
                               description="static power of the substrate")


class NeuronsConfig(ConfigSection):
    type: Literal["RegularSpiking", "PoissonSpiking", "StochasticSpiking", "SpikingRectifiedLinear"] = constant(
        "RegularSpiking", "", "Voelker, Rasmussen and Eliasmith, arXiv:2002.03553, 2020: regular spiking of the "
        "rate type the network was trained with", description="spiking neuron the ANN's ReLUs become (around "
        "RectifiedLinear)")
    rate_scale: float = constant(1.0, "", "hwmap nengo_like convention: a neuron at its layer's scale fires once "
                                 "per step, as the core's IF neurons", gt=0, le=1e4,
                                 description="firing-rate scale: rates multiplied, spike amplitudes divided by it")
    output_synapse_tau_s: float = constant(0.0, "s", "hwmap nengo_like convention: no filter on the readout (the "
                                           "readout averages over the steps)", ge=0, le=10.0,
                                           description="Lowpass time constant on the output connections (0: none)")


class EstimateConfig(ConfigSection):
    tolerance: float = constant(0.01, "", "assumed: within one point of top-1 agreement with the rate network",
                                ge=0, le=1, description="agreement shortfall the time-to-tolerance curve accepts")


class NengoLikeConfig(TargetConfig):
    substrate: SubstrateConfig = Field(default_factory=SubstrateConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    neurons: NeuronsConfig = Field(default_factory=NeuronsConfig)
    estimate: EstimateConfig = Field(default_factory=EstimateConfig)
    conversion: ConversionConfig = Field(default_factory=ConversionConfig)
