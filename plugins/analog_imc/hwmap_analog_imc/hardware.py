"""The analog IMC accelerator's description: the TOML schema and the blueprint built from it.

Chapter Section 3.4.3: "When the architectural parser is invoked, it generates a blueprint of
the FSMs, the processing cores and the NoC controller." The config describes a multi-core
chip; each core's crossbar is a grid of small elements (e.g. 16×4 cells) concatenable
through programmable switches; ADCs (each serving several columns), DACs, input/output
buffers; a mesh network-on-chip.

Every field is declared with :func:`hwmap.constant`: its unit and the source of its default
(a paper, a datasheet, the chapter, or ``"assumed: <reason>"`` where nothing backs the value),
so ``hwmap schema analog_imc`` and the KPI record's ``assumptions`` show where each number
comes from. The sources cited:

* ISAAC — Shafiee et al., "ISAAC: A Convolutional Neural Network Accelerator with In-Situ
  Analog Arithmetic in Crossbars", ISCA 2016, Table II;
* Horowitz — M. Horowitz, "Computing's energy problem (and what we can do about it)",
  ISSCC 2014 (45 nm figures);
* Le Gallo 2023 — Le Gallo et al., "A 64-core mixed-signal in-memory compute chip based on
  phase-change memory for deep neural network inference", Nat. Electron. 2023;
* DNN+NeuroSim — Peng et al., the DNN+NeuroSim benchmark framework (read pulse);
* aihwkit — IBM's analog hardware kit, ``PCMLikeNoiseModel``, fitted on PCM measurements by
  Nandakumar et al., ICECS 2019;
* the chapter — "Tools and Methodologies for Training, Profiling, and Mapping a Neural
  Network on a Hardware Target" (ANDANTE), Section 3.4 and Fig. 3.13.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, model_validator

from hwmap import ConfigSection, TargetConfig, constant

__all__ = [
    "HardwareConfig", "NocConfig", "EnergyConfig", "MapperConfig", "NoiseConfig", "ScheduleConfig", "AnalogIMCConfig",
    "Blueprint", "CoreBlueprint", "columns_per_weight", "ISAAC", "HOROWITZ", "LE_GALLO", "NEUROSIM", "AIHWKIT",
    "CHAPTER",
]

#: Short citations the defaults (and the presets' comments) use.
ISAAC = "Shafiee et al., ISCA 2016 (ISAAC), Table II"
HOROWITZ = "Horowitz, ISSCC 2014, 45 nm"
LE_GALLO = "Le Gallo et al., Nat. Electron. 2023"
NEUROSIM = "DNN+NeuroSim (Peng et al., IEDM 2019)"
AIHWKIT = "aihwkit PCMLikeNoiseModel (Nandakumar et al., ICECS 2019)"
CHAPTER = "the chapter (ANDANTE, Section 3.4)"


class _Section(ConfigSection):
    """A table of the config: strict types, no unknown keys, no inf/nan (hwmap.ConfigSection)."""


#: The most crossbar elements a chip may have (cores × elements per core): the mapper and the
#: simulator keep per-element state, so a config beyond this would not build in bounded memory.
MAX_ELEMENTS = 1 << 24


class HardwareConfig(_Section):
    cores: int = constant(4, "", f"assumed: a small multi-core chip ({LE_GALLO} has 64 cores; the presets set their "
                          "own)", ge=1, le=4096, description="processing cores on the chip")
    crossbar_rows: int = constant(256, "", f"{LE_GALLO}: 256×256 cells per core", ge=1, le=8192,
                                  description="rows (word lines, inputs) of one core's crossbar")
    crossbar_cols: int = constant(256, "", f"{LE_GALLO}: 256×256 cells per core", ge=1, le=8192,
                                  description="columns (bit lines, outputs) of one core's crossbar")
    element_rows: int = constant(16, "", "the chapter, Fig. 3.13: elements of 16 × 4 synaptic weights", ge=1, le=8192,
                                 description="rows of one concatenable crossbar element")
    element_cols: int = constant(4, "", "the chapter, Fig. 3.13: elements of 16 × 4 synaptic weights", ge=1, le=8192,
                                 description="columns of one concatenable crossbar element")
    bits_per_cell: int = constant(4, "bit", "assumed: 16-level multi-level cells, between ISAAC's 2-bit cells "
                                  f"({ISAAC}) and one 8-bit cell per weight", ge=1, le=8,
                                  description="levels a cell stores, in bits")
    weight_bits: int = constant(8, "bit", f"assumed: 8-bit weights, the width of the inputs and outputs of {LE_GALLO}",
                                ge=2, le=16, description="weight precision; sliced over columns of bits_per_cell")
    weight_encoding: Literal["differential", "offset"] = constant(
        "differential", "", "aihwkit SinglePairConductanceConverter: a signed weight as a G+/G− conductance pair",
        description="signed weights as a G+/G- column pair, or unsigned with a digital offset")
    input_bits: int = constant(8, "bit", f"{LE_GALLO}: 8-bit inputs", ge=1, le=16,
                               description="activation precision fed to the DACs")
    dac_bits: int = constant(8, "bit", "assumed: a whole input per read (ISAAC streams 1 bit per read instead, "
                             f"{ISAAC})", ge=1, le=16,
                             description="DAC resolution; inputs wider than this are bit-streamed")
    dac_reference_bits: int = constant(1, "bit", f"{ISAAC}: the 1-bit DACs whose energy is energy.dac_pj_per_input",
                                       ge=1, le=16, description="resolution of the reference DAC whose figures "
                                       "(energy.dac_pj_per_input, dac_settle_s) the config gives; scaled to dac_bits")
    dac_settle_s: float = constant(1.0e-9, "s", "assumed: the 1-bit reference DAC drives its row within one 1 GHz "
                                   "clock cycle (the Accelergy library's ISAAC DAC: 1 ns per conversion)", ge=0, le=1.0,
                                   description="settling of the reference DAC; a dac_bits DAC settles in "
                                               "dac_settle_s × (dac_bits + 1) / (dac_reference_bits + 1)")
    adc_bits: int = constant(8, "bit", f"{ISAAC}: 8-bit ADC", ge=1, le=16,
                             description="ADC resolution of one column read-out")
    adc_reference_bits: int = constant(8, "bit", f"{ISAAC}: the 8-bit 1.28 GS/s SAR ADC (after Kull et al., ISSCC "
                                       "2013) whose figures are energy.adc_pj_per_conversion and adc_conversion_s",
                                       ge=1, le=16, description="resolution of the reference ADC whose figures the "
                                       "config gives; scaled to adc_bits")
    columns_per_adc: int = constant(8, "", "assumed: 8 neighbouring columns per ADC (ISAAC time-multiplexes 128 "
                                    f"columns onto one ADC, {ISAAC})", ge=1, le=8192,
                                    description="columns multiplexed onto one ADC")
    input_buffer_bytes: int = constant(65536, "B", f"assumed: 64 KB per core, the size of ISAAC's tile buffer "
                                       f"({ISAAC}: 64 KB eDRAM)", ge=1, le=2**30, description="input buffer per core")
    output_buffer_bytes: int = constant(65536, "B", f"assumed: 64 KB per core, the size of ISAAC's tile buffer "
                                        f"({ISAAC}: 64 KB eDRAM)", ge=1, le=2**30, description="output buffer per core")
    clock_hz: float = constant(1.0e9, "Hz", f"assumed: 1 GHz digital clock ({ISAAC}: 1.2 GHz)", gt=0, le=1e11,
                               description="digital clock of FSMs, buffers and NoC")
    read_pulse_s: float = constant(10e-9, "s", f"{NEUROSIM}: ~10 ns read pulse", ge=0, le=1.0,
                                   description="analog read pulse of one crossbar read")
    adc_conversion_s: float = constant(1.0 / 1.28e9, "s", f"{ISAAC}: ADC at 1.28 GS/s", gt=0, le=1.0,
                                       description="one conversion of the reference ADC (adc_reference_bits); a "
                                                   "SAR ADC of adc_bits takes adc_conversion_s × (adc_bits + 1) / "
                                                   "(adc_reference_bits + 1)")
    program_row_s: float = constant(1.0e-6, "s", "assumed: ~10 write-verify iterations of ~100 ns pulses per row",
                                    ge=0, le=10.0, description="write-verify programming of one crossbar row (its cells in "
                                                      "parallel); paid per computation cycle when weights are "
                                                      "reprogrammed")

    @model_validator(mode="after")
    def _elements_divide_crossbar(self) -> "HardwareConfig":
        if self.crossbar_rows % self.element_rows:
            raise ValueError(f"hardware.element_rows = {self.element_rows} does not divide hardware.crossbar_rows = "
                             f"{self.crossbar_rows}; allowed: a divisor of crossbar_rows")
        if self.crossbar_cols % self.element_cols:
            raise ValueError(f"hardware.element_cols = {self.element_cols} does not divide hardware.crossbar_cols = "
                             f"{self.crossbar_cols}; allowed: a divisor of crossbar_cols")
        if self.columns_per_adc > self.crossbar_cols:
            raise ValueError(f"hardware.columns_per_adc = {self.columns_per_adc} exceeds crossbar_cols = "
                             f"{self.crossbar_cols}")
        elements = self.cores * (self.crossbar_rows // self.element_rows) * (self.crossbar_cols // self.element_cols)
        if elements > MAX_ELEMENTS:
            raise ValueError(f"hardware.cores × (crossbar_rows / element_rows) × (crossbar_cols / element_cols) = "
                             f"{elements:,} crossbar elements; allowed: at most {MAX_ELEMENTS:,}")
        return self


class NocConfig(_Section):
    topology: Literal["mesh"] = constant("mesh", "", "assumed: a 2-D mesh with XY routing, the usual many-core NoC "
                                         f"(ISAAC's tiles sit on a concentrated mesh, {ISAAC})",
                                         description="2-D mesh with XY routing")
    mesh_cols: int = constant(0, "", "hwmap analog_imc convention: 0 = ceil(sqrt(cores)), a near-square mesh", ge=0, le=4096,
                              description="cores per mesh row; 0 = ceil(sqrt(cores))")
    link_width_bits: int = constant(64, "bit", f"assumed: 64-bit links ({ISAAC}: 32-bit c-mesh flits)", ge=1, le=65536,
                                    description="bits per link per clock")
    hop_latency_cycles: int = constant(2, "cycles", "assumed: one router cycle and one link cycle per hop", ge=0, le=10**6,
                                       description="router + link cycles per hop")


class EnergyConfig(_Section):
    adc_pj_per_conversion: float = constant(1.56, "pJ", f"{ISAAC}: 8-bit ADC, 2 mW at 1.28 GS/s", ge=0, le=1e6,
                                            description="one conversion of the reference ADC (hardware."
                                                        "adc_reference_bits); scaled to adc_bits as 2^bits (Walden)")
    adc_fom_s_db: float = constant(167.3, "dB", "Murmann's ADC performance survey 1997-2021 as fitted by the "
                                   "Accelergy ADC plug-in (Andrulis et al.): FoM_S <= 302.7 - 6.46 ln(f_s) dB, "
                                   "167.3 dB at 1.28 GS/s", ge=100, le=200,
                                   description="Schreier figure of merit bounding ADC energy at high resolution "
                                               "(thermal noise: 4x per bit)")
    dac_pj_per_input: float = constant(0.39, "pJ", f"{ISAAC}: 1024 1-bit DACs at 4 mW, one conversion each per "
                                       "100 ns read", ge=0, le=1e6,
                                       description="one conversion of one row input by the reference DAC (hardware."
                                                   "dac_reference_bits); scaled to dac_bits as 2^bits")
    cell_read_fj: float = constant(1.8, "fJ", f"{ISAAC}: 8 arrays of 128×128 cells at 2.4 mW, one read per 100 ns",
                                   ge=0, le=1e9, description="one cell in one crossbar read")
    buffer_pj_per_bit: float = constant(0.156, "pJ", f"{HOROWITZ}: 10 pJ per 64-bit read of an 8 KB SRAM", ge=0, le=1e6,
                                        description="one buffer bit read or written")
    noc_pj_per_bit_hop: float = constant(0.5, "pJ", "assumed: order of magnitude of a short on-chip link plus a "
                                         "router hop", ge=0, le=1e6, description="one bit over one router hop")
    program_pj_per_cell: float = constant(100.0, "pJ", "assumed: order of magnitude of a PCM/RRAM write-verify of "
                                          "one cell", ge=0, le=1e9, description="write-verify programming of one cell")
    digital_pj_per_op: float = constant(0.03, "pJ", f"{HOROWITZ}: 8-bit add 0.03 pJ", ge=0, le=1e6,
                                        description="one digital add or post-op (shift-and-add, accumulation)")
    static_w_per_core: float = constant(
        0.0, "W", "the crossbar's non-volatile cells hold their weights unpowered and SAR ADCs with dynamic comparators "
        "draw no static current (Kull et al., ISSCC 2013); the buffers' leakage is buffer_leakage_w_per_mbit",
        ge=0, le=1e3, description="static power per used core besides its buffers' leakage")
    buffer_leakage_w_per_mbit: float = constant(
        6.0e-6, "W", "Wang et al., IEEE JSSC 2008 (a 65 nm low-power SRAM): 12 µA/Mb leakage at its 0.5 V retention "
        "voltage, a lower bound for active buffers", ge=0, le=1.0,
        description="leakage of one Mibit of buffer SRAM (input_buffer_bytes + output_buffer_bytes per used core)")


class MapperConfig(_Section):
    strategy: Literal["greedy", "packed", "duplicated"] = constant(
        "greedy", "", "the chapter, Section 3.4.5: the layer-by-layer mapping algorithm",
        description="greedy: the chapter's layer-by-layer fill; packed: 2-D packing of blocks; "
                    "duplicated: spare cores replicate early layers")
    conversion_rows: int = constant(
        0, "", "hwmap analog_imc convention: 0 = every row of a block on one bit line and one conversion (the "
        "chapter's Fig. 3.13 blocks)", ge=0, le=8192,
        description="rows summed per ADC conversion, a multiple of hardware.element_rows: a taller block is "
                    "read as stacked row groups, one READ and one conversion per column each, their codes "
                    "added digitally (more conversions, a finer ADC step per row group); 0 = no split")


class NoiseConfig(_Section):
    enabled: bool = constant(False, "", "hwmap analog_imc convention: ideal devices unless noise is asked for",
                             description="apply PCM programming noise and drift in the simulator")
    g_max_us: float = constant(25.0, "µS", f"{AIHWKIT}: g_max = 25 µS, the reference of its programming-noise fit",
                               gt=0, le=1e6, description="maximum conductance")
    drift_nu: float = constant(0.06, "", "assumed: one drift exponent for every cell, inside the 0.049–0.1 range of "
                               f"the mean exponent of {AIHWKIT}", ge=0, le=1.0,
                               description="drift exponent ν in g(t) = g0 (t/t0)^-ν")
    t_inference_s: float = constant(20.0, "s", f"assumed: read at t0 = 20 s after programming, the reference time "
                                    f"of the drift law of {AIHWKIT} (no drift yet)", gt=0, le=1e10,
                                    description="time since programming (t0 = 20 s)")
    seed: int = constant(0, "", "hwmap analog_imc convention: a fixed seed, so a noisy chip is reproducible", ge=0, le=2**32 - 1,
                         description="noise seed (deterministic)")


class ScheduleConfig(_Section):
    batch: int = constant(1, "", "hwmap analog_imc convention: one inference per programming round unless a batch "
                          "is asked for", ge=1, le=2**20,
                          description="inferences run through each computation cycle per programming of its weights "
                                      "(with several cycles)")


class AnalogIMCConfig(TargetConfig):
    # The ignores: without pydantic's mypy plugin, mypy may read a section's fields as
    # required, so it thinks the sections cannot be built without arguments.
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)  # type: ignore[arg-type]
    noc: NocConfig = Field(default_factory=NocConfig)  # type: ignore[arg-type]
    energy: EnergyConfig = Field(default_factory=EnergyConfig)  # type: ignore[arg-type]
    mapper: MapperConfig = Field(default_factory=MapperConfig)  # type: ignore[arg-type]
    noise: NoiseConfig = Field(default_factory=NoiseConfig)  # type: ignore[arg-type]
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _conversion_rows_whole_elements(self) -> "AnalogIMCConfig":
        rows, er = self.mapper.conversion_rows, self.hardware.element_rows
        if rows % er:
            raise ValueError(f"mapper.conversion_rows = {rows} is not a multiple of hardware.element_rows = {er}; "
                             "allowed: 0 or a multiple of element_rows (a row group takes whole elements)")
        return self


def columns_per_weight(hw: HardwareConfig) -> int:
    """Crossbar columns one weight occupies. Differential: a G+/G− column pair per bit slice,
    the magnitude's ``weight_bits − 1`` bits sliced over cells of ``bits_per_cell`` (the sign
    is the pair); offset: all ``weight_bits`` are sliced."""
    if hw.weight_encoding == "differential":
        return 2 * math.ceil((hw.weight_bits - 1) / hw.bits_per_cell)
    return math.ceil(hw.weight_bits / hw.bits_per_cell)


@dataclass(frozen=True)
class CoreBlueprint:
    """One processing core: its crossbar as a grid of elements, its ADCs, its position on
    the mesh, and the FSMs the instructions configure (switch, weight, input, read-out)."""

    index: int
    grid_rows: int
    grid_cols: int
    adcs: int
    mesh_xy: tuple[int, int]

    @property
    def elements(self) -> int:
        return self.grid_rows * self.grid_cols


@dataclass(frozen=True)
class Blueprint:
    """The chip: cores, element geometry, NoC controller geometry."""

    cores: tuple[CoreBlueprint, ...]
    element_rows: int
    element_cols: int
    mesh_cols: int
    mesh_rows: int

    @property
    def element_cells(self) -> int:
        return self.element_rows * self.element_cols

    @property
    def elements_per_core(self) -> int:
        return self.cores[0].elements

    def hops(self, a: int, b: int) -> int:
        """XY-routing hop count between cores ``a`` and ``b`` (0 for the same core)."""
        (xa, ya), (xb, yb) = self.cores[a].mesh_xy, self.cores[b].mesh_xy
        return abs(xa - xb) + abs(ya - yb)

    @classmethod
    def from_config(cls, cfg: AnalogIMCConfig) -> "Blueprint":
        hw = cfg.hardware
        mesh_cols = cfg.noc.mesh_cols or math.ceil(math.sqrt(hw.cores))
        mesh_rows = math.ceil(hw.cores / mesh_cols)
        gr, gc = hw.crossbar_rows // hw.element_rows, hw.crossbar_cols // hw.element_cols
        adcs = math.ceil(hw.crossbar_cols / hw.columns_per_adc)
        cores = tuple(CoreBlueprint(i, gr, gc, adcs, (i % mesh_cols, i // mesh_cols)) for i in range(hw.cores))
        return cls(cores, hw.element_rows, hw.element_cols, mesh_cols, mesh_rows)
