"""The toy CPU's configuration schema (the ``[hardware]`` and ``[energy]`` tables)."""

from __future__ import annotations

from pydantic import Field

from hwmap import ConfigSection, TargetConfig, constant

__all__ = ["Hardware", "Energy", "ToyConfig"]


class Hardware(ConfigSection):
    clock_hz: float = Field(100e6, gt=0, le=10e9, description="clock frequency in Hz")
    macs_per_cycle: int = Field(4, ge=1, le=4096, description="8-bit MACs the MAC unit completes per clock")
    sram_bytes: int = Field(256 * 1024, ge=1, le=2**32, description="on-chip SRAM holding every weight, in bytes")


class Energy(ConfigSection):
    """Horowitz, "Computing's energy problem (and what we can do about it)", ISSCC 2014,
    45 nm: 8-bit multiply 0.2 pJ + 8-bit add 0.03 pJ = 0.23 pJ per MAC; a 64-bit read from
    an 8 KB SRAM 10 pJ."""

    mac_pj: float = constant(0.23, "pJ", "Horowitz, ISSCC 2014, 45 nm: 8-bit multiply 0.2 pJ + 8-bit add 0.03 pJ",
                             ge=0, description="energy of one 8-bit MAC")
    sram_read_pj_per_64bit: float = constant(10.0, "pJ", "Horowitz, ISSCC 2014, 45 nm: 64-bit read from an 8 KB SRAM",
                                             ge=0, description="energy of one 64-bit SRAM access")


class ToyConfig(TargetConfig):
    hardware: Hardware = Field(default_factory=Hardware)
    energy: Energy = Field(default_factory=Energy)
