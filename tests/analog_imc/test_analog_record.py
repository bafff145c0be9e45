"""analog_imc KPI record per the contract: per-layer costs, energy by kind summing to the
energy per inference, static energy, the bottleneck in words and by layer (MobileNet V1:
reprogramming), provenance of every headline figure, a source for every assumption."""

from __future__ import annotations

import pytest

from hwmap import Assumption
from hwmap.config import load_target
from hwmap.constants import NO_SOURCE
from hwmap.kpi import ENERGY_KINDS, HEADLINE_KPIS, KPIs
from hwmap_analog_imc.estimate import estimate
from test_estimate import compile_

READ = 4.5e-9 + 10e-9 + 8 * 7.8125e-10  # chapter-fig3.13: 8-bit DACs settle, 10 ns pulse, 8 conversions

SMALL_CHIP = ("hardware.cores=2", "hardware.crossbar_rows=64", "hardware.crossbar_cols=64")
CASES = [
    ("zoo:chapter_cnn", "chapter-fig3.13", ()),
    ("zoo:resnet_small", "default", ()),
    ("zoo:digits_cnn", "isaac-like", ()),
    ("zoo:resnet_small", "default", ("hardware.cores=1", "hardware.crossbar_rows=64", "hardware.crossbar_cols=64",
                                     'mapper.strategy="greedy"')),
    ("zoo:resnet_small", "default", (*SMALL_CHIP, "energy.static_w_per_core=0.02")),
]


def kpis(model: str, preset: str, *sets: str) -> KPIs:
    m, t = compile_(model, preset, *sets)
    return estimate(m, t, None)


@pytest.mark.parametrize(("model", "preset", "sets"), CASES)
def test_energy_kinds_sum_and_the_layers_split_them(model: str, preset: str, sets: tuple[str, ...]) -> None:
    k = kpis(model, preset, *sets)
    assert k.check() == []
    assert list(k.energy_breakdown) == list(ENERGY_KINDS)
    assert sum(k.energy_breakdown.values()) == pytest.approx(k.energy_per_inference_j, rel=1e-12)
    e = k.resources["energy_breakdown_j"]  # the detailed split the kinds are made of
    assert k.energy_breakdown["converters"] == pytest.approx(e["adc"] + e["dac"])
    assert k.energy_breakdown["compute"] == pytest.approx(e["cells"] + e["digital"])
    assert (k.energy_breakdown["memory"], k.energy_breakdown["communication"]) == (e["buffers"], e["noc"])
    assert (k.energy_breakdown["reprogramming"], k.energy_breakdown["static"]) == (e["programming"], e["static"])
    # every event is counted on one node: per kind, the layers add up to the total, never more
    for kind in ENERGY_KINDS:
        assert sum(x.energy_j[kind] for x in k.layers) == pytest.approx(k.energy_breakdown[kind], rel=1e-9,
                                                                         abs=1e-30), kind
    assert sum(x.energy_total_j for x in k.layers) <= k.energy_per_inference_j * (1 + 1e-9)
    assert k.power_w == pytest.approx(k.energy_per_inference_j * k.throughput_inf_per_s)
    # one entry per crossbar layer, in graph order, with its busy time, MACs and resources
    crossbar = list(k.resources["mvms_per_layer"])
    names = [x.name for x in k.layers]
    assert [n for n in names if n in crossbar] == crossbar
    for x in k.layers:
        assert x.latency_s == k.resources["latency_per_layer_s"][x.name]
        assert set(x.energy_j) == set(ENERGY_KINDS)
        assert x.resources["digital_ops"] >= 0 and "computation_cycles" in x.resources
    assert sum(x.ops or 0 for x in k.layers) == pytest.approx(k.resources["macs"])
    assert sum(x.resources.get("cells", 0) for x in k.layers) == k.resources["cells_used"]
    assert sum(x.resources["noc_bits"] for x in k.layers) == pytest.approx(k.resources["noc_bits"])


def test_chapter_layers_by_hand() -> None:
    """zoo:chapter_cnn on chapter-fig3.13: Conv1 (16 rows × 16 one-column filters, 155 reads)
    and Conv2 (144 rows × 8 filters, 87 reads) on core 0, one cycle."""
    k = kpis("zoo:chapter_cnn", "chapter-fig3.13")
    layers = {x.name: x for x in k.layers}
    assert list(layers) == ["conv1_fused", "conv2"]  # the ReLU is fused: one node
    for name, reads, rows, cols, elements in (("conv1_fused", 155, 16, 16, 4), ("conv2", 87, 144, 8, 18)):
        x = layers[name]
        r = x.resources
        assert (r["mvms"], r["adc_conversions"], r["dac_conversions"]) == (reads, reads * cols, reads * rows)
        assert (r["elements"], r["cells"], r["cores"], r["computation_cycles"]) == (elements, rows * cols, [0], [0])
        assert x.latency_s == pytest.approx(reads * READ)
        assert x.ops == reads * rows * cols
        assert x.energy_j["converters"] == pytest.approx(reads * cols * 1.56e-12 + reads * rows * 0.39e-12 * 2**7)
        assert x.energy_j["compute"] == pytest.approx(reads * rows * cols * 1.8e-15 + r["digital_ops"] * 0.03e-12)
        assert x.energy_j["memory"] == pytest.approx(r["buffer_bits"] * 0.156e-12)
        # one core, one cycle: no transfers, programmed once (not per inference); static: the
        # leakage of the core's 4 KB + 4 KB buffers (6 µW per Mibit) over the inference, by busy time
        assert (x.energy_j["communication"], x.energy_j["reprogramming"]) == (0, 0)
        assert x.energy_j["static"] == pytest.approx(6e-6 / 16 * 242 * READ * reads / 242)
    b = k.bottleneck
    assert (b.resource, b.layer) == ("core 0 crossbar reads", "conv1_fused")
    assert "core 0 crossbar reads" in b.description and "'conv1_fused'" in b.description
    assert k.throughput_inf_per_s == pytest.approx(1 / (242 * READ))


def test_static_energy_is_static_power_over_an_inference() -> None:
    """(static_w_per_core + the buffers' leakage) × cores used / throughput joins the energy per
    inference, so power is energy × throughput and exceeds the dynamic power by exactly the
    static power; the layers share it by busy time."""
    base = kpis("zoo:resnet_small", "default", *SMALL_CHIP)
    k = kpis("zoo:resnet_small", "default", *SMALL_CHIP, "energy.static_w_per_core=0.02")
    cores = k.resources["cores_used"]
    leak = 6e-6 * (65536 + 65536) * 8 / 2**20  # the default's 64 KB + 64 KB buffers per core: 1 Mibit
    assert cores == 2 and base.energy_breakdown["static"] == pytest.approx(leak * cores / base.throughput_inf_per_s)
    assert base.resources["static_w"] == pytest.approx(leak * cores)
    assert k.energy_breakdown["static"] == pytest.approx((0.02 + leak) * cores / k.throughput_inf_per_s)
    assert k.power_w - base.power_w == pytest.approx(0.02 * cores)
    no_leak = kpis("zoo:resnet_small", "default", *SMALL_CHIP, "energy.buffer_leakage_w_per_mbit=0")
    assert no_leak.energy_breakdown["static"] == 0
    assert base.power_w - no_leak.power_w == pytest.approx(leak * cores)
    assert {n: v for n, v in k.energy_breakdown.items() if n != "static"} == \
        {n: v for n, v in base.energy_breakdown.items() if n != "static"}
    busy = sum(x.latency_s or 0 for x in k.layers)
    for x in k.layers:
        assert x.energy_j["static"] == pytest.approx(k.energy_breakdown["static"] * (x.latency_s or 0) / busy)


def test_the_bottleneck_names_the_layer_loading_the_busiest_resource() -> None:
    """One cycle: the resource is a core's reads, logic or link, and the layer named is the
    one keeping it busiest; on one core holding every layer with reads as the bound, that is
    the layer with the longest reads."""
    k = kpis("zoo:digits_cnn", "default", "hardware.cores=1", "hardware.columns_per_adc=1")
    assert k.resources["computation_cycles"] == 1 and k.resources["bottleneck"] == "core 0 crossbar reads"
    crossbar = set(k.resources["mvms_per_layer"])
    longest = max((x for x in k.layers if x.name in crossbar), key=lambda x: x.latency_s or 0)
    assert k.bottleneck.layer == longest.name and k.bottleneck.resource == "core 0 crossbar reads"
    assert k.throughput_inf_per_s == pytest.approx(1 / k.resources["bottleneck_s"])
    for model, preset, sets in CASES:
        k = kpis(model, preset, *sets)
        assert k.bottleneck is not None and k.bottleneck.layer in {x.name for x in k.layers}
        assert k.bottleneck.description.strip() and k.bottleneck.layer in k.bottleneck.description


def test_mobilenet_v1_is_bound_by_reprogramming() -> None:
    """zoo:mobilenet_v1 on analog_imc:default (8 cores of 256×256) needs 33 computation
    cycles: every inference rewrites 16.8 M cells (1.68 mJ of 2.22 mJ) and cannot overlap the
    next. The layer programmed most is pw13 (1024 × 1024 weights × 4 columns)."""
    m, t = compile_("zoo:mobilenet_v1", "default")
    k = estimate(m, t, None)
    assert k.check() == []
    r = k.resources
    assert (r["computation_cycles"], r["computation_cycles_lower_bound"], r["cores_used"]) == (33, 33, 8)
    assert k.energy_breakdown["reprogramming"] == pytest.approx(r["cells_used"] * 100e-12)
    assert k.energy_breakdown["reprogramming"] == pytest.approx(1.6836e-3, rel=1e-4)
    assert k.energy_per_inference_j == pytest.approx(2.2168e-3, rel=1e-4)
    assert k.energy_breakdown["reprogramming"] / k.energy_per_inference_j == pytest.approx(0.760, abs=1e-3)
    assert k.latency_s == pytest.approx(0.23651, rel=1e-4)
    assert sum(r["programming_s_per_cycle"]) == pytest.approx(8.448e-3, rel=1e-4)
    assert k.throughput_inf_per_s == pytest.approx(1 / k.latency_s)
    b = k.bottleneck
    programmed = max(k.layers, key=lambda x: x.resources.get("cells", 0))
    assert (b.resource, b.layer) == ("reprogramming", programmed.name) == ("reprogramming", "pw13_fused")
    assert programmed.resources["cells"] == 1024 * 1024 * 4
    assert programmed.energy_j["reprogramming"] == pytest.approx(1024 * 1024 * 4 * 100e-12)
    for words in ("33 computation cycles", "1.68 mJ of 2.22 mJ per inference (76 %)", "8.45 ms of the 237 ms latency (4 %)",
                  "'pw13_fused'",
                  "cannot overlap"):
        assert words in b.description, words


def test_provenance_of_every_headline_figure() -> None:
    k = kpis("zoo:chapter_cnn", "chapter-fig3.13")
    assert set(k.provenance.kpis) == set(HEADLINE_KPIS)
    assert k.provenance.kpis == {
        "latency_s": "modelled", "throughput_inf_per_s": "modelled", "energy_per_inference_j": "modelled",
        "power_w": "modelled", "weight_memory_bytes": "counted", "activation_memory_bytes": "modelled",
        "ops_per_inference": "counted", "utilization": "counted"}
    m, t = compile_("zoo:chapter_cnn", "chapter-fig3.13")
    measured = estimate(m, t, {"samples": 2, "mvms": {"conv1_fused": 155.0, "conv2": 87.0}})
    assert measured.provenance.kpis["ops_per_inference"] == "simulated"
    assert "measured" in measured.assumptions["model.inputs"].value
    partly = estimate(m, t, {"samples": 2, "mvms": {"conv1_fused": 155.0}})  # a layer not measured
    assert partly.provenance.kpis["ops_per_inference"] == "counted"


@pytest.mark.parametrize("preset", ["default", "chapter-fig3.13", "isaac-like"])
def test_every_assumption_has_a_source(preset: str) -> None:
    m, t = compile_("zoo:digits_cnn", preset)
    a = estimate(m, t, None).assumptions
    assert all(isinstance(x, Assumption) for x in a.values())
    for key, x in a.items():
        assert x.source.strip(), key
        assert not x.source.startswith(NO_SOURCE) and "without a source" not in x.source, (key, x.source)
    assert set(t.constants()) <= set(a)
    assert {k for k in a if k.startswith("model.")} >= {
        "model.counts", "model.read_time", "model.latency", "model.throughput", "model.energy", "model.static",
        "model.programming", "model.noc", "model.layers", "model.inputs", "model.converters"}
    assert "ISAAC" in a["model.read_time"].source and "PUMA" in a["model.read_time"].source
    # a value given with --set says so
    m, t = compile_("zoo:digits_cnn", preset, "energy.adc_pj_per_conversion=2.5")
    x = estimate(m, t, None).assumptions["energy.adc_pj_per_conversion"]
    assert (x.value, x.unit, x.source) == (2.5, "pJ", "--set on the command line")


def test_the_record_round_trips_and_is_deterministic() -> None:
    a = kpis("zoo:resnet_small", "default", *SMALL_CHIP)
    b = kpis("zoo:resnet_small", "default", *SMALL_CHIP)
    assert a.dumps() == b.dumps()
    assert KPIs.from_json(a.to_json()).dumps() == a.dumps()
    assert load_target("analog_imc:default").description  # the preset's one line reaches the target
