"""What a DAC and an ADC cost at the resolution the config asks for.

A config gives the figures of one published *reference* converter (energy per conversion and
conversion time at ``adc_reference_bits`` / ``dac_reference_bits``: ISAAC's 8-bit SAR ADC and
1-bit DACs in the presets) and this module scales them to ``adc_bits`` / ``dac_bits``:

* **ADC energy** — the larger of two bounds, as Murmann's ADC performance survey plots them
  (energy per conversion P/f_s against SNDR): the Walden figure of merit (Walden, "Analog-to-
  digital converter survey and analysis", IEEE JSAC 17(4), 1999), ``E = FoM_W · 2^N``, the
  technology-limited regime, with ``FoM_W = E_ref / 2^N_ref`` of the reference converter; and
  the Schreier figure of merit (Schreier & Temes, "Understanding Delta-Sigma Data
  Converters", 2005), ``FoM_S = SNDR + 10·log10((f_s/2) / P)``, the thermal-noise limit where
  every extra bit costs 4×: ``E = 10^((SNDR − FoM_S)/10) / 2`` with the ideal ``SNDR = 6.02·N +
  1.76`` dB. ``N`` is taken as the ENOB (an ideal converter).
* **ADC conversion time** — a SAR converter samples once and then resolves one bit per
  comparator cycle: ``t = t_ref · (N + 1) / (N_ref + 1)``.
* **DAC energy** — a binary-weighted (capacitive) DAC switches a unit array of ``2^N`` unit
  elements (Saberi, Lotfi, Mafinezhad & Serdijn, "Analysis of power consumption and linearity
  in capacitive digital-to-analog converters used in successive approximation ADCs", IEEE
  TCAS-I 58(8), 2011): ``E = E_ref · 2^(N − N_ref)``. The Accelergy library's ISAAC DAC and ADC
  models scale the same way (×2 energy per bit, time linear in bits).
* **DAC settling** — settling to half an LSB takes ``τ · ln 2^(N+1)``: ``t = t_ref · (N + 1) /
  (N_ref + 1)``.

So a 1-bit DAC's 0.39 pJ (ISAAC) is never charged for an 8-bit DAC: the model charges
``0.39 · 2^7`` = 49.9 pJ, and streaming the same 8-bit input bit-serially costs 8 × 0.39 pJ.
"""

from __future__ import annotations

from dataclasses import dataclass

from .hardware import AnalogIMCConfig

__all__ = ["Converters", "adc_energy_pj", "adc_time_s", "dac_energy_pj", "dac_time_s", "schreier_energy_pj",
           "ideal_sndr_db"]


def ideal_sndr_db(bits: int) -> float:
    """SNDR of an ideal ``bits``-bit quantizer with a full-scale sine input: 6.02·N + 1.76 dB."""
    return 6.02 * bits + 1.76


def schreier_energy_pj(bits: int, fom_s_db: float) -> float:
    """Energy per conversion (pJ) of an ADC on the Schreier bound ``fom_s_db`` at ``bits``:
    ``P / f_s = 10^((SNDR − FoM_S)/10) / 2`` (the bandwidth is f_s / 2)."""
    return 0.5 * 10.0 ** ((ideal_sndr_db(bits) - fom_s_db) / 10.0) * 1e12


def adc_energy_pj(bits: int, ref_pj: float, ref_bits: int, fom_s_db: float) -> float:
    """One ``bits``-bit conversion: max(Walden: ``ref_pj · 2^(bits − ref_bits)``, Schreier bound)."""
    return max(ref_pj * 2.0 ** (bits - ref_bits), schreier_energy_pj(bits, fom_s_db))


def adc_time_s(bits: int, ref_s: float, ref_bits: int) -> float:
    """One SAR conversion of ``bits`` bits: a sampling cycle plus one comparator cycle per bit."""
    return ref_s * (bits + 1) / (ref_bits + 1)


def dac_energy_pj(bits: int, ref_pj: float, ref_bits: int) -> float:
    """One ``bits``-bit conversion of a binary-weighted DAC: ``ref_pj · 2^(bits − ref_bits)``."""
    return ref_pj * 2.0 ** (bits - ref_bits)


def dac_time_s(bits: int, ref_s: float, ref_bits: int) -> float:
    """Settling of a ``bits``-bit DAC to half an LSB: ``ref_s · (bits + 1) / (ref_bits + 1)``."""
    return ref_s * (bits + 1) / (ref_bits + 1)


@dataclass(frozen=True)
class Converters:
    """The converters of a config at its own resolutions: energy per conversion (pJ) and time
    (s) of one ADC conversion, one DAC conversion (one row input, ``dac_bits`` bits), and the
    static power of one core (W: ``static_w_per_core`` plus the leakage of its buffers)."""

    adc_pj: float
    adc_s: float
    dac_pj: float
    dac_s: float
    static_w_per_core: float

    @classmethod
    def of(cls, cfg: AnalogIMCConfig) -> "Converters":
        hw, en = cfg.hardware, cfg.energy
        buffer_mbit = (hw.input_buffer_bytes + hw.output_buffer_bytes) * 8 / 2**20
        return cls(
            adc_energy_pj(hw.adc_bits, en.adc_pj_per_conversion, hw.adc_reference_bits, en.adc_fom_s_db),
            adc_time_s(hw.adc_bits, hw.adc_conversion_s, hw.adc_reference_bits),
            dac_energy_pj(hw.dac_bits, en.dac_pj_per_input, hw.dac_reference_bits),
            dac_time_s(hw.dac_bits, hw.dac_settle_s, hw.dac_reference_bits),
            en.static_w_per_core + en.buffer_leakage_w_per_mbit * buffer_mbit,
        )
