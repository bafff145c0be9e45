"""The analog IMC accelerator's description: the TOML schema and the blueprint built from it.

Chapter Section 3.4.3: "When the architectural parser is invoked, it generates a blueprint of
the FSMs, the processing cores and the NoC controller." The config describes a multi-core
chip; each core's crossbar is a grid of small elements (e.g. 16×4 cells) concatenable
through programmable switches; ADCs (shared by several columns), DACs, input/output buffers;
a mesh network-on-chip. Energy constants are per event; their defaults and sources are in
the presets and in docs (REFERENCES.md, "Analog in-memory computing").
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from hwmap import TargetConfig

__all__ = [
    "HardwareConfig", "NocConfig", "EnergyConfig", "MapperConfig", "NoiseConfig", "AnalogIMCConfig",
    "Blueprint", "CoreBlueprint", "columns_per_weight",
]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class HardwareConfig(_Section):
    cores: int = Field(4, ge=1, description="processing cores on the chip")
    crossbar_rows: int = Field(256, ge=1, description="rows (word lines, inputs) of one core's crossbar")
    crossbar_cols: int = Field(256, ge=1, description="columns (bit lines, outputs) of one core's crossbar")
    element_rows: int = Field(16, ge=1, description="rows of one concatenable crossbar element")
    element_cols: int = Field(4, ge=1, description="columns of one concatenable crossbar element")
    bits_per_cell: int = Field(4, ge=1, le=8, description="levels a cell stores, in bits")
    weight_bits: int = Field(8, ge=2, le=16, description="weight precision; sliced over columns of bits_per_cell")
    weight_encoding: Literal["differential", "offset"] = Field(
        "differential", description="signed weights as a G+/G- column pair, or unsigned with a digital offset")
    input_bits: int = Field(8, ge=1, le=16, description="activation precision fed to the DACs")
    dac_bits: int = Field(8, ge=1, le=16, description="DAC resolution; inputs wider than this are bit-streamed")
    adc_bits: int = Field(8, ge=1, le=16, description="ADC resolution of one column read-out")
    columns_per_adc: int = Field(8, ge=1, description="columns multiplexed onto one ADC")
    input_buffer_bytes: int = Field(65536, ge=1, description="input buffer per core")
    output_buffer_bytes: int = Field(65536, ge=1, description="output buffer per core")
    clock_hz: float = Field(1.0e9, gt=0, description="digital clock of FSMs, buffers and NoC")
    read_pulse_s: float = Field(10e-9, ge=0, description="analog read pulse of one crossbar read, seconds")
    adc_conversion_s: float = Field(1.0 / 1.28e9, gt=0, description="one ADC conversion, seconds; a read takes "
                                    "read_pulse_s + columns_per_adc × adc_conversion_s")
    program_row_s: float = Field(1.0e-6, ge=0, description="write-verify programming of one crossbar row (its "
                                 "cells in parallel), seconds; paid per computation cycle when weights are "
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
        return self


class NocConfig(_Section):
    topology: Literal["mesh"] = Field("mesh", description="2-D mesh with XY routing")
    mesh_cols: int = Field(0, ge=0, description="cores per mesh row; 0 = ceil(sqrt(cores))")
    link_width_bits: int = Field(64, ge=1, description="bits per link per clock")
    hop_latency_cycles: int = Field(2, ge=0, description="router + link cycles per hop")


class EnergyConfig(_Section):
    adc_pj_per_conversion: float = Field(1.56, ge=0, description="ISAAC 8-bit ADC, 1.28 GS/s at 2 mW")
    dac_pj_per_input: float = Field(0.39, ge=0, description="per DAC conversion of one row input (ISAAC: 1024 "
                                    "1-bit DACs at 4 mW, one conversion per 100 ns read)")
    cell_read_fj: float = Field(1.8, ge=0, description="per cell per crossbar read (ISAAC: 8 arrays of 128×128 at "
                                "2.4 mW per 100 ns read)")
    buffer_pj_per_bit: float = Field(0.156, ge=0, description="SRAM buffer access per bit (Horowitz: 10 pJ/64 bit, 8 KB)")
    noc_pj_per_bit_hop: float = Field(0.5, ge=0, description="per bit per router hop")
    program_pj_per_cell: float = Field(100.0, ge=0, description="write-verify programming of one cell")
    digital_pj_per_op: float = Field(0.03, ge=0, description="digital post-op / accumulation (Horowitz 8-bit add)")
    static_w_per_core: float = Field(0.0, ge=0, description="leakage and clocking per active core, watts")


class MapperConfig(_Section):
    strategy: Literal["greedy", "packed", "duplicated"] = Field(
        "greedy", description="greedy: the chapter's layer-by-layer fill; packed: 2-D packing of blocks; "
                              "duplicated: spare cores replicate early layers")


class NoiseConfig(_Section):
    enabled: bool = Field(False, description="apply PCM programming noise and drift in the simulator")
    g_max_us: float = Field(25.0, gt=0, description="maximum conductance, µS (aihwkit PCM model)")
    drift_nu: float = Field(0.06, ge=0, description="drift exponent ν in g(t) = g0 (t/t0)^-ν")
    t_inference_s: float = Field(20.0, gt=0, description="time since programming, seconds (t0 = 20 s)")
    seed: int = Field(0, ge=0, description="noise seed (deterministic)")


class AnalogIMCConfig(TargetConfig):
    # The ignores: without pydantic's mypy plugin, mypy reads ``Field(4, ...)`` (a positional
    # default) as a required field, so it thinks the sections cannot be built without arguments.
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)  # type: ignore[arg-type]
    noc: NocConfig = Field(default_factory=NocConfig)  # type: ignore[arg-type]
    energy: EnergyConfig = Field(default_factory=EnergyConfig)  # type: ignore[arg-type]
    mapper: MapperConfig = Field(default_factory=MapperConfig)  # type: ignore[arg-type]
    noise: NoiseConfig = Field(default_factory=NoiseConfig)  # type: ignore[arg-type]


def columns_per_weight(hw: HardwareConfig) -> int:
    """Crossbar columns one weight occupies (REFERENCES: N = C_out × bit slices × 2 if
    differential). Differential: the sign is the pair, the magnitude's weight_bits − 1 bits
    are sliced over cells of bits_per_cell; offset: all weight_bits are sliced."""
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
