"""The device's description: the TOML schema of a single-population digital SNN device.

The chapter's Section 3.4.6 (Fig. 3.14) describes the device: at most ``n_in`` input
channels, ``n_hid`` hidden LIF neurons in one population with recurrent weights ``W_rec``,
at most ``n_out`` output neurons, ``n_syn`` synaptic inputs (synaptic states) per hidden
neuron, sparse recurrent weights with a maximum fan-in ``fan_in`` per neuron, of which only
the non-zero ones are stored, linearised into a memory block of ``fan_in × n_hid`` words.
SynSense's Xylo chips are this device; the numbers of the Xylo presets come from Rockpool's
sources (its mapper's limits, its simulator's arithmetic, its cycle model and its memory
map) and the papers cited at each value.

Every field is declared with :func:`hwmap.constant`: its unit and the source of its default
(``"assumed: <reason>"`` where nothing published backs it). The defaults are those of the
``digital_snn:default`` preset: a generic device of the chapter's figure sized for the zoo's
digits networks. The sources cited:

* the chapter: "Tools and Methodologies for Training, Profiling, and Mapping a Neural
  Network on a Hardware Target" (ANDANTE), Section 3.4.6, Figs. 3.14-3.15;
* Rockpool: Muir, Bauer, Weidel, Rockpool documentation and source (Zenodo,
  doi:10.5281/zenodo.3773845), version 3.1 (``rockpool.devices.xylo``);
* Davies et al., "Loihi: A Neuromorphic Manycore Processor with On-Chip Learning", IEEE
  Micro 38(1), 2018, Table 2 (energy per synaptic operation and per neuron update);
* Bos and Muir, "Micro-power spoken keyword spotting on Xylo Audio 2", arXiv:2406.15112, 2024.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from hwmap import ConfigSection, ConversionConfig, TargetConfig, constant
from hwmap.ops.time import MAX_TIMESTEPS

__all__ = ["HardwareConfig", "EnergyConfig", "MappingConfig", "DeviceConversionConfig", "DigitalSNNConfig", "CHAPTER", "ROCKPOOL",
           "LOIHI", "MAX_NEURONS", "MAX_FAN_IN"]

CHAPTER = "the chapter (ANDANTE), Section 3.4.6, Fig. 3.14"
ROCKPOOL = "Rockpool 3.1 (doi:10.5281/zenodo.3773845)"
LOIHI = "Davies et al., IEEE Micro 38(1), 2018 (Loihi), Table 2"

#: Bounds that keep a config buildable in bounded memory (the simulator holds dense
#: ``n_in × n_hid`` and ``n_hid × n_hid`` integer matrices).
MAX_NEURONS = 1 << 14
MAX_FAN_IN = 1 << 14


class HardwareConfig(ConfigSection):
    n_in: int = constant(64, "", "assumed: the 64 pixels of the zoo's 8×8 digits, one channel each", ge=1,
                         le=MAX_NEURONS, description="input channels N_in")
    n_hid: int = constant(1024, "", "assumed: room for zoo:digits_cnn converted (768 neurons) in one population",
                          ge=1, le=MAX_NEURONS, description="hidden neurons N_hid in the one population")
    n_out: int = constant(16, "", "assumed: the zoo's 10 classes with room to spare", ge=1, le=MAX_NEURONS,
                          description="output (readout) neurons N_out")
    n_syn: int = constant(2, "", f"{ROCKPOOL}: Xylo Audio 2 hidden neurons have two synaptic states", ge=1, le=4,
                          description="synaptic inputs (states) N_syn per hidden neuron")
    fan_in: int = constant(128, "", "assumed: above the 72 inputs of zoo:digits_cnn's second convolution",
                           ge=1, le=MAX_FAN_IN,
                           description="maximum fan-in N_F of a hidden neuron in the sparse recurrent memory "
                                       "(N_F × N_hid words)")
    weight_bits: int = constant(8, "bit", f"{ROCKPOOL}: Xylo weights are int8", ge=2, le=16,
                                description="signed weight width")
    max_weight_shift: int = constant(7, "bit", f"{ROCKPOOL}: XyloSim weight_shift_in/rec/out, a left shift of "
                                     "each weight matrix", ge=0, le=15,
                                     description="largest left shift of a weight matrix")
    threshold_bits: int = constant(16, "bit", f"{ROCKPOOL}: Xylo thresholds are 16-bit", ge=2, le=31,
                                   description="signed threshold width")
    bias_bits: int = constant(16, "bit", f"{ROCKPOOL}: Xylo biases are 16-bit", ge=2, le=31,
                              description="signed bias width")
    state_bits: int = constant(16, "bit", "Bos and Muir, arXiv:2406.15112, 2024: neuron and synapse state "
                               "quantised to 16 bit", ge=4, le=31,
                               description="width of the saturating synaptic-current and membrane states")
    decay: Literal["bitshift", "multiplicative"] = constant(
        "bitshift", "", f"{ROCKPOOL}: Xylo decays a state a by a - (a >> dash)",
        description="decay form: a - (a >> dash), or a - ((a * m) >> decay_bits)")
    decay_bits: int = constant(4, "bit", f"{ROCKPOOL}: Xylo's dash parameters are 4-bit (0 to 15)", ge=1, le=16,
                               description="width of a decay parameter (dash, or the multiplier m)")
    hidden_spikes_per_step: int = constant(31, "", f"{ROCKPOOL}: LIFBitshiftTorch max_spikes_per_dt = 31",
                                           ge=1, le=2**15, description="spikes a hidden neuron may emit per step")
    output_spikes_per_step: int = constant(1, "", f"{ROCKPOOL}: Xylo readout neurons spike at most once per step",
                                           ge=1, le=2**15, description="spikes an output neuron may emit per step")
    input_events_per_step: int = constant(15, "", f"{ROCKPOOL}: XyloSamna.evolve: up to 15 input events per "
                                          "channel per bin", ge=1, le=2**15,
                                          description="input events a channel takes per step")
    alias_targets: int = constant(1, "", f"{ROCKPOOL}: a Xylo hidden neuron has one alias target "
                                  "(ReservoirNeuron.alias_target, set by syns61201 config_from_specification from "
                                  "the first entry of its aliases list; the syns63300 cycle model reads the same "
                                  "field)", ge=0, le=MAX_NEURONS,
                                  description="alias targets a hidden neuron may have (neuron aliasing: its spikes "
                                              "also count as the target's; 0: no aliasing)")
    dt_s: float = constant(1e-3, "s", f"{ROCKPOOL}: XyloSim's default dt of 1 ms", gt=0, le=10.0,
                           description="time step of a network that gives none")
    clock_hz: float = constant(50e6, "Hz", f"{ROCKPOOL}: the Xylo Audio power tutorial's highest main clock, 50 MHz",
                               gt=0, le=1e10, description="core clock")
    cycles_per_input_synop: float = constant(3.5, "cycles", f"{ROCKPOOL}: syns61201 cycles_model input_loop_cycles",
                                             ge=0, le=1e6, description="cycles per input synaptic operation")
    cycles_per_hidden_synop: float = constant(7.0, "cycles", f"{ROCKPOOL}: syns61201 cycles_model "
                                              "hidden_update_cycles", ge=0, le=1e6,
                                              description="cycles per recurrent synaptic operation")
    cycles_per_output_synop: float = constant(8.0, "cycles", f"{ROCKPOOL}: syns61201 cycles_model "
                                              "output_isyn_update_cycles", ge=0, le=1e6,
                                              description="cycles per output synaptic operation")
    cycles_per_hidden_neuron: float = constant(19.0, "cycles", f"{ROCKPOOL}: syns61201 cycles_model "
                                               "fixed_hidden_neuron_cycles", ge=0, le=1e6,
                                               description="cycles per hidden neuron update")
    cycles_per_alias: float = constant(1.0, "cycles", f"{ROCKPOOL}: syns61201 cycles_model, the hidden "
                                       "spiking stage's one cycle per alias source (max(hidden_spk_prob, "
                                       "is_alias_target_prob) * is_alias_source_prob * 1)", ge=0, le=1e6,
                                       description="cycles per alias pair whose source spikes in a step")
    cycles_per_output_neuron: float = constant(12.0, "cycles", f"{ROCKPOOL}: syns61201 cycles_model "
                                               "fixed_output_neuron_spk_cycles", ge=0, le=1e6,
                                               description="cycles per output neuron update")

    @model_validator(mode="after")
    def _bounds(self) -> "HardwareConfig":
        if self.decay == "bitshift" and 2**self.decay_bits - 1 < 1:
            raise ValueError("hardware.decay_bits must allow a dash of at least 1")
        if self.fan_in > self.n_hid + self.n_in:
            raise ValueError(f"hardware.fan_in = {self.fan_in} exceeds n_hid + n_in = {self.n_hid + self.n_in}: "
                             "no neuron can have more inputs")
        return self


class EnergyConfig(ConfigSection):
    synop_pj: float = constant(23.6, "pJ", f"{LOIHI}: energy per synaptic spike operation", ge=0, le=1e6,
                               description="energy of one synaptic operation (one weight added to one state)")
    neuron_update_pj: float = constant(52.0, "pJ", f"{LOIHI}: neuron update (active)", ge=0, le=1e6,
                                       description="energy of one neuron update in one step")
    static_w: float = constant(0.0, "W", "assumed: leakage not modelled (0 W); the presets set their own",
                               ge=0, le=100.0, description="static power of the device")


class MappingConfig(ConfigSection):
    quantization: Literal["global", "per_neuron"] = constant(
        "per_neuron", "", "assumed: one scale per neuron (its threshold sets it) loses the least precision",
        description="weight scale of a population: one for all its neurons, or one per neuron")
    prune_to_fan_in: bool = constant(False, "", "hwmap digital_snn convention: never change weights unless asked",
                                     description="magnitude-prune the recurrent fan-in of each neuron to fan_in")
    flush_steps: int = constant(3, "steps", "hwmap digital_snn: measured on zoo:digits_cnn converted (rate, 16 steps): "
                                "the outputs' relative RMS error against the ANN 0.147 with 0 steps, 0.049 with 3 "
                                "(the converted graph's own: 0.041; the synaptic residue halves each step)", ge=0, le=64,
                                description="steps a rate-coded network (a converted ANN) runs after its input and "
                                            "lag, for the charge in the synaptic states to reach the readout")


_CONVERSION = "hwmap digital_snn"


class DeviceConversionConfig(ConversionConfig):
    """The ``[conversion]`` table (:class:`hwmap.ConversionConfig`) with the device's defaults:
    spikes in (the device takes input events: ``rate``, one event per spike) and enough
    time steps for rate spikes to carry the input (docs/snn.md: rate needs 8 steps or more
    to match direct encoding)."""

    timesteps: int = constant(16, "steps", f"{_CONVERSION}: zoo:digits_cnn converted with rate spikes runs on "
                              "digital_snn:default within 2 points of the ANN at 16 steps "
                              "(tests/digital_snn/test_digits_cnn.py)", ge=1, le=MAX_TIMESTEPS,
                              description="time steps each inference runs for")
    encoding: Literal["direct", "rate", "poisson"] = constant(
        "rate", "", f"{_CONVERSION}: the device takes input events; deterministic rate spikes are one event each "
        "(direct input would be graded event counts, Poisson spikes add sampling noise: docs/snn.md)",
        description="how the static input becomes per-step input: direct (graded values, fed as round(x * scale) "
                    "events per step), rate (deterministic regular spikes) or poisson (Bernoulli spikes)")


class DigitalSNNConfig(TargetConfig):
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)
    energy: EnergyConfig = Field(default_factory=EnergyConfig)
    mapping: MappingConfig = Field(default_factory=MappingConfig)
    conversion: DeviceConversionConfig = Field(default_factory=DeviceConversionConfig)
