"""Converters cost what their resolution costs: ADC energy on the Walden bound below the
Schreier (thermal-noise) bound, SAR conversion time in bit cycles, binary-weighted DAC energy
and half-LSB settling; sweeping adc_bits and dac_bits on zoo:digits_cnn moves energy and
latency as those formulas say (written out here, not taken from the plugin)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import hwmap
from hwmap.config import load_target
from hwmap_analog_imc import emit
from hwmap_analog_imc.converters import adc_energy_pj, adc_time_s, dac_energy_pj, schreier_energy_pj
from hwmap_analog_imc.estimate import estimate
from hwmap_analog_imc.program import load_program
from test_estimate import compile_

ISAAC_ADC_PJ, ISAAC_ADC_S, ISAAC_DAC_PJ = 1.56, 1 / 1.28e9, 0.39  # ISAAC, ISCA 2016, Table II
FOM_S_DB = 167.3  # Murmann's survey as fitted by the Accelergy ADC plug-in, at 1.28 GS/s


def adc_pj(bits: int) -> float:
    """max(Walden with ISAAC's 8-bit point, Schreier: P/f_s = 10^((6.02 N + 1.76 − FoM_S)/10) / 2)."""
    walden = ISAAC_ADC_PJ / 256 * 2**bits
    schreier = 10 ** ((6.02 * bits + 1.76 - FOM_S_DB) / 10) / 2 * 1e12
    return max(walden, schreier)


def test_converter_formulas_at_published_points() -> None:
    # ISAAC's own converter is the reference: 1.56 pJ and 0.78 ns at 8 bits, FoM_W 6.1 fJ/step
    assert adc_energy_pj(8, 1.56, 8, FOM_S_DB) == pytest.approx(1.56)
    assert adc_time_s(8, ISAAC_ADC_S, 8) == pytest.approx(ISAAC_ADC_S)
    assert 1.56e-12 / 2**8 == pytest.approx(6.1e-15, rel=0.01)
    # below 9 bits the Walden term dominates, from 9 bits on the thermal bound (4x per bit)
    assert schreier_energy_pj(8, FOM_S_DB) < 1.56 and 2 * 1.56 < schreier_energy_pj(9, FOM_S_DB)
    for bits in range(9, 13):
        assert adc_energy_pj(bits + 1, 1.56, 8, FOM_S_DB) / adc_energy_pj(bits, 1.56, 8, FOM_S_DB) == \
            pytest.approx(10 ** 0.602)
    assert adc_energy_pj(4, 1.56, 8, FOM_S_DB) == pytest.approx(1.56 / 16)
    # a 12-bit conversion at GS/s rates costs hundreds of pJ on the survey's envelope
    assert 100 < adc_energy_pj(12, 1.56, 8, FOM_S_DB) < 500
    # SAR: one sampling cycle plus one comparator cycle per bit
    assert adc_time_s(4, ISAAC_ADC_S, 8) == pytest.approx(ISAAC_ADC_S * 5 / 9)
    # the 1-bit DAC's 0.39 pJ is not an 8-bit DAC's: ×2 per bit
    assert dac_energy_pj(8, ISAAC_DAC_PJ, 1) == pytest.approx(49.92)
    assert dac_energy_pj(1, ISAAC_DAC_PJ, 1) == pytest.approx(0.39)


def _sweep(key: str, values: range, *sets: str) -> dict[int, hwmap.KPIs]:
    out = {}
    for v in values:
        m, t = compile_("zoo:digits_cnn", "default", *sets, f"hardware.{key}={v}")
        out[v] = estimate(m, t, None)
    return out


def test_adc_bits_sweep_moves_energy_and_latency_as_the_model_says() -> None:
    """adc_bits 4..12: the ADC energy follows E(N) / E(8) of the formula exactly, nothing else
    changes, so the energy rises monotonically; on one core bound by its reads, the read time
    grows by (ΔN) bit cycles per conversion: linear in N."""
    k = _sweep("adc_bits", range(4, 13), "hardware.cores=1", "hardware.columns_per_adc=1")
    ref = k[8].resources["energy_breakdown_j"]
    for n, x in k.items():
        e = x.resources["energy_breakdown_j"]
        assert e["adc"] == pytest.approx(ref["adc"] * adc_pj(n) / adc_pj(8), rel=1e-9)
        assert {t: v for t, v in e.items() if t not in ("adc", "static")} == \
            {t: v for t, v in ref.items() if t not in ("adc", "static")}
        assert x.resources["bottleneck"] == "core 0 crossbar reads"
    bits = sorted(k)
    energy = [k[n].energy_per_inference_j for n in bits]
    latency = [k[n].latency_s for n in bits]
    assert all(a < b for a, b in zip(energy, energy[1:]))
    assert all(a < b for a, b in zip(latency, latency[1:]))
    reads = [k[n].resources["bottleneck_s"] for n in bits]
    for n, r in zip(bits, reads):
        assert (r - reads[0]) / (reads[-1] - reads[0]) == pytest.approx((n - 4) / 8, rel=1e-9)
    # 12 bits cost 2400x the 4-bit conversions: Walden 2^4 below, Schreier 4^4 above 8 bits
    assert k[12].resources["energy_breakdown_j"]["adc"] / k[4].resources["energy_breakdown_j"]["adc"] == \
        pytest.approx(adc_pj(12) / adc_pj(4)) == pytest.approx(2400, rel=0.01)


def test_dac_bits_sweep_moves_energy_and_latency_as_the_model_says() -> None:
    """dac_bits 1..8 with 8-bit inputs: B = ceil(8 / d) bit-planes. DAC energy ∝ B · 2^(d−1),
    ADC conversions ∝ B, and each read waits (d + 1)/2 ns for the DACs to settle."""
    k = _sweep("dac_bits", range(1, 9), "hardware.cores=1", "hardware.columns_per_adc=1")
    ref = k[1].resources["energy_breakdown_j"]
    per_read = {}
    for d, x in k.items():
        planes = math.ceil(8 / d)
        assert x.resources["input_bit_planes"] == planes
        e = x.resources["energy_breakdown_j"]
        assert e["dac"] == pytest.approx(ref["dac"] * planes * 2 ** (d - 1) / 8, rel=1e-9)
        assert e["adc"] == pytest.approx(ref["adc"] * planes / 8, rel=1e-9)
        assert x.resources["bottleneck"] == "core 0 crossbar reads"
        per_read[d] = x.resources["bottleneck_s"] / planes
    # the DAC term never falls with resolution: 8 bits in one plane cost 16x eight 1-bit planes
    dac = [k[d].resources["energy_breakdown_j"]["dac"] for d in sorted(k)]
    assert all(a <= b for a, b in zip(dac, dac[1:])) and dac[-1] == pytest.approx(16 * dac[0])
    for d in k:  # settling (d + 1) / 2 ns per read: per-plane read time affine in d
        assert (per_read[d] - per_read[1]) / (per_read[8] - per_read[1]) == pytest.approx((d - 1) / 7, rel=1e-9)
    # fewer planes are faster although each settles longer
    lat = [k[d].latency_s for d in (1, 2, 4, 8)]
    assert all(a > b for a, b in zip(lat, lat[1:]))


def test_the_emitted_program_times_its_converters(tmp_path: Path) -> None:
    """The program the simulator runs carries the conversion time at adc_bits and the read's
    fixed time including the DACs' settling, so its cycle times follow the same model."""
    m, t = compile_("zoo:digits_cnn", "default", "hardware.adc_bits=12", "hardware.dac_bits=4")
    emit.write_program(m, t, tmp_path).write_manifest()
    cfg = load_program(hwmap.Artifacts.read(tmp_path)).config
    assert cfg.adc_conversion_s == pytest.approx(ISAAC_ADC_S * 13 / 9)
    assert cfg.read_pulse_s == pytest.approx(10e-9 + 1e-9 * 5 / 2)


def test_chapter_preset_pays_an_8_bit_dac() -> None:
    t = load_target("analog_imc:chapter-fig3.13")
    assert t.constants()["hardware.dac_bits"].value == 8
    m, t = compile_("zoo:chapter_cnn", "chapter-fig3.13")
    k = estimate(m, t, None)
    assert k.resources["converters"]["dac_pj_per_conversion"] == pytest.approx(0.39 * 2**7)
    assert k.resources["energy_breakdown_j"]["dac"] == pytest.approx(k.resources["dac_conversions"] * 49.92e-12)
