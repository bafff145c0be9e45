"""analog_imc estimate: hand-computed counts, energy and latency on the chapter's example,
monotonicity, reprogramming rounds, lower bounds never beaten, measured activity used."""

from __future__ import annotations

import math

import numpy as np
import pytest

from hwmap import Graph, Node, Tensor, load_model
from hwmap.config import load_target
from hwmap.ops import get_op
from hwmap_analog_imc import plugin
from hwmap_analog_imc.estimate import adc_share, conv_fill_fraction, estimate, replica_positions
from hwmap_analog_imc.mapping import AnalogMapping

_GRAPHS: dict[str, Graph] = {}


def graph(name: str) -> Graph:
    if name not in _GRAPHS:
        _GRAPHS[name] = load_model(name)
    return _GRAPHS[name]


def compile_(model: str, preset: str, *sets: str) -> tuple[AnalogMapping, object]:
    t = load_target(f"analog_imc:{preset}", list(sets))
    leg = plugin.hwmap_legalize(graph(model), t)
    assert leg.fits, leg.violations
    return plugin.hwmap_map(leg.graph, t), t


def test_small_formulas() -> None:
    # ADC groups of 8 columns: a 16-column block from column 0 keeps each ADC busy for 8
    assert adc_share([(0, 16)], 8) == 8
    assert adc_share([(4, 8)], 8) == 4  # straddles two ADCs, 4 columns each
    assert adc_share([(4, 13)], 8) == 8
    assert adc_share([(0, 3), (16, 2), (5, 2)], 8) == 5  # blocks read together share ADC 0
    assert adc_share([], 8) == 0
    assert [replica_positions(10, 3, r) for r in range(3)] == [4, 4, 2]
    assert [replica_positions(5, 4, r) for r in range(4)] == [2, 2, 1, 0]
    conv = Node("c", "Conv", ["x"], ["y"], {"kernel_shape": [3, 3], "pads": [0, 0, 0, 0]},
                {"W": np.zeros((1, 1, 3, 3), np.float32)})
    assert conv_fill_fraction(conv, (1, 1, 5, 31)) == pytest.approx((2 * 31 + 3) / (5 * 31))


def test_chapter_example_by_hand() -> None:
    """zoo:chapter_cnn on chapter-fig3.13: Conv1 (16 rows × 16 columns) computes 5×31 = 155
    positions, Conv2 (144 rows × 8 columns) 3×29 = 87; one 8-bit DAC plane per input."""
    m, t = compile_("zoo:chapter_cnn", "chapter-fig3.13")
    k = estimate(m, t, None)
    r = k.resources
    assert (r["cores_used"], r["elements_used"], r["computation_cycles"]) == (1, 22, 1)
    assert r["mvms_per_layer"] == {"conv1_fused": 155, "conv2": 87}
    assert r["mvms"] == 155 + 87
    assert r["adc_conversions"] == 155 * 16 + 87 * 8
    assert r["dac_conversions"] == 155 * 16 + 87 * 144
    assert r["cell_reads"] == 155 * 16 * 16 + 87 * 144 * 8
    # MACs as executed = the op registry's count (conv + fc convention)
    macs = sum(get_op("Conv").macs(n, [graph("zoo:chapter_cnn").tensor(n.inputs[0]).shape],
                                   [graph("zoo:chapter_cnn").tensor(n.outputs[0]).shape])
               for n in graph("zoo:chapter_cnn").nodes if n.op == "Conv")
    assert k.ops_per_inference == macs == 155 * 16 * 16 + 87 * 144 * 8 and k.ops_kind == "MAC"
    e = r["energy_breakdown_j"]
    assert e["adc"] == pytest.approx(3176 * 1.56e-12)
    # the preset's 8-bit DACs: ISAAC's 1-bit 0.39 pJ doubled per extra bit (binary-weighted)
    assert e["dac"] == pytest.approx(15008 * 0.39e-12 * 2**7)
    assert e["cells"] == pytest.approx(139904 * 1.8e-15)
    assert e["noc"] == 0 and e["programming"] == 0  # one core, one cycle: programmed once
    assert r["programming_one_time_j"] == pytest.approx(22 * 64 * 100e-12)
    assert k.energy_per_inference_j == pytest.approx(sum(e.values()))
    # each read: the 8-bit DACs settle (1 ns × 9/2), 10 ns pulse, 8 conversions of 0.78125 ns
    # (8 columns per ADC); both layers on core 0, one after the other
    read = 4.5e-9 + 10e-9 + 8 * 7.8125e-10
    assert r["latency_per_layer_s"]["conv1_fused"] == pytest.approx(155 * read)
    assert r["latency_per_layer_s"]["conv2"] == pytest.approx(87 * read)
    assert k.latency_s == pytest.approx(242 * read)
    assert k.throughput_inf_per_s == pytest.approx(1 / (242 * read))
    assert k.weight_memory_bytes == 22 * 64  # 8-bit cells
    assert k.utilization == pytest.approx(1408 / (256 * 64))
    assert k.check() == []


def test_bit_serial_inputs_multiply_reads() -> None:
    m, t = compile_("zoo:chapter_cnn", "chapter-fig3.13", "hardware.dac_bits=1")
    r = estimate(m, t, None).resources
    assert r["input_bit_planes"] == 8
    assert r["mvms"] == 8 * 242 and r["adc_conversions"] == 8 * 3176


def test_more_cores_never_slower() -> None:
    for strategy in ("greedy", "packed"):
        latencies = []
        for cores in (1, 2, 4, 8):
            m, t = compile_("zoo:resnet_small", "default", f"hardware.cores={cores}", "hardware.crossbar_rows=64",
                            "hardware.crossbar_cols=64", f'mapper.strategy="{strategy}"')
            latencies.append(estimate(m, t, None).latency_s)
        assert all(b <= a * (1 + 1e-9) for a, b in zip(latencies, latencies[1:])), (strategy, latencies)


def test_adc_energy_constant_scales_only_the_adc_part() -> None:
    m, t = compile_("zoo:digits_cnn", "default")
    base = estimate(m, t, None).resources["energy_breakdown_j"]
    m2, t2 = compile_("zoo:digits_cnn", "default", "energy.adc_pj_per_conversion=3.12")
    doubled = estimate(m2, t2, None).resources["energy_breakdown_j"]
    assert doubled["adc"] == pytest.approx(2 * base["adc"])
    assert {k: v for k, v in doubled.items() if k != "adc"} == {k: v for k, v in base.items() if k != "adc"}


def test_reprogramming_rounds_on_a_model_larger_than_the_chip() -> None:
    m, t = compile_("zoo:resnet_small", "default", "hardware.cores=1", "hardware.crossbar_rows=64",
                    "hardware.crossbar_cols=64", 'mapper.strategy="greedy"')
    k = estimate(m, t, None)
    r = k.resources
    cycles = r["computation_cycles"]
    assert cycles > 1 and cycles >= r["computation_cycles_lower_bound"]
    assert r["programming_rounds_per_inference"] == cycles
    cells = sum(p.cells(m.layers[p.layer].cols_per_filter) for p in m.result.placements)
    assert r["energy_breakdown_j"]["programming"] == pytest.approx(cells * 100e-12)
    assert r["programming_one_time_j"] == 0
    # every cycle is programmed before it runs: latency = Σ (programming + span)
    assert len(r["programming_s_per_cycle"]) == cycles and min(r["programming_s_per_cycle"]) > 0
    assert k.latency_s == pytest.approx(sum(r["programming_s_per_cycle"]) + sum(r["latency_per_cycle_s"]))
    assert k.throughput_inf_per_s == pytest.approx(1 / k.latency_s)
    assert k.check() == []


@pytest.mark.parametrize("strategy", ["greedy", "packed", "duplicated"])
def test_no_achieved_count_below_its_lower_bound(strategy: str) -> None:
    for model, sets in (("zoo:resnet_small", ["hardware.cores=2", "hardware.crossbar_rows=64",
                                              "hardware.crossbar_cols=64"]),
                        ("zoo:digits_cnn", []), ("zoo:chapter_cnn", [])):
        m, t = compile_(model, "default", *sets, f'mapper.strategy="{strategy}"')
        k = estimate(m, t, None)
        r = k.resources
        for name in ("cores", "elements", "computation_cycles"):
            achieved = r[f"{name}_used"] if name != "computation_cycles" else r[name]
            assert achieved >= r[f"{name}_lower_bound"], (model, strategy, name)
        assert r["elements_allocated"] >= r["elements_used"] >= r["elements_lower_bound"]
        assert 0 < r["element_utilization"] <= 1 and 0 < r["crossbar_utilization"] <= 1
        assert k.check() == [], (model, strategy, k.check())


def test_measured_activity_replaces_the_analytic_counts() -> None:
    m, t = compile_("zoo:chapter_cnn", "chapter-fig3.13")
    base = estimate(m, t, None)
    activity = {"samples": 7, "mvms": {"conv1_fused": 155.0, "conv2": 80.0},
                "adc_conversions": {"conv1_fused": 2000.0, "conv2": 600.0},
                "dac_conversions": {"conv1_fused": 1240.0, "conv2": 6264.0},  # half the rows driven
                "cycle_time_s": [5e-6], "noc_bits": 0.0}
    k = estimate(m, t, activity)
    r, e0 = k.resources, base.resources["energy_breakdown_j"]
    assert r["mvms"] == 235 and r["adc_conversions"] == 2600 and r["dac_conversions"] == 7504
    assert r["energy_breakdown_j"]["dac"] == pytest.approx(e0["dac"] / 2)
    assert r["energy_breakdown_j"]["cells"] == pytest.approx(e0["cells"] / 2)  # undriven rows draw nothing
    assert r["energy_breakdown_j"]["adc"] == pytest.approx(2600 * 1.56e-12)
    # Conv2's 7 reads not performed take no time; the simulator's own cycle time is reported
    assert k.latency_s == pytest.approx((155 + 80) * (4.5e-9 + 10e-9 + 8 * 7.8125e-10))
    assert r["simulator_cycle_time_s"] == [5e-6]
    assert k.ops_per_inference == round(155 * 256 + 80 / 87 * 87 * 1152)
    assert "measured by the simulator on 7 samples" in k.assumptions["activity"].value
    assert base.assumptions["activity"].value == "analytic (no --data)"
    assert k.check() == []


def test_assumptions_name_every_constant_and_the_models() -> None:
    m, t = compile_("zoo:digits_cnn", "isaac-like")
    a = estimate(m, t, None).assumptions
    for section in ("hardware", "noc", "energy", "mapper", "noise"):
        for key, value in getattr(t.config, section).model_dump(mode="json").items():
            assert a[f"{section}.{key}"].value == value
    for key in ("model.latency", "model.throughput", "model.energy", "model.programming", "calibration", "activity"):
        assert a[key].value and a[key].source
    assert "synthetic U(0,1)" in a["calibration"].value


def test_graph_without_crossbar_layers() -> None:
    g = Graph("pool", ["x"], ["y"], [Node("p", "GlobalAveragePool", ["x"], ["y"])],
              {"x": Tensor("x", (1, 4, 6, 6)), "y": Tensor("y", (1, 4, 1, 1))}).validate()
    t = load_target("analog_imc:default")
    m = plugin.hwmap_map(plugin.hwmap_legalize(g, t).graph, t)
    k = estimate(m, t, None)
    assert k.check() == [] and k.ops_per_inference == 0 and k.weight_memory_bytes == 0
    assert k.resources["digital_ops"] == 4 * 36
    assert math.isfinite(k.throughput_inf_per_s)


def test_noc_transfers_when_a_model_spans_cores() -> None:
    m, t = compile_("zoo:resnet_small", "default")
    k = estimate(m, t, None)
    assert k.resources["cores_used"] > 1
    assert k.resources["noc_bits"] > 0 and k.resources["energy_breakdown_j"]["noc"] > 0
    # pipelining across cores: never slower than the busiest core, never slower than running
    # every node one after the other
    assert k.resources["bottleneck_s"] <= k.latency_s <= sum(k.resources["latency_per_layer_s"].values()) * (1 + 1e-9)
    assert np.isclose(k.throughput_inf_per_s, 1 / k.resources["bottleneck_s"])


@pytest.mark.parametrize(("model", "sets"), [
    ("zoo:chapter_cnn", ("hardware.cores=16", "mapper.strategy=duplicated")),
    ("zoo:resnet_small", ("hardware.cores=16", "mapper.strategy=duplicated")),
    ("zoo:resnet_small", ("hardware.cores=2", "hardware.crossbar_rows=64", "hardware.crossbar_cols=64")),
])
def test_noc_model_follows_the_emitted_transfers(model: str, sets: tuple[str, ...], tmp_path) -> None:
    """The estimate's NoC bits and bit-hops against a count from the program as written to
    disk and read back: the bits its NOC records move when the simulator runs the
    instruction stream (each record is needed there: the program is refused without any
    one of them, test_program_execution.py), and the hops of an XY route on the CONFIG's
    mesh."""
    from hwmap_analog_imc.emit import PROGRAM_FILE, read_program, write_program
    from hwmap_analog_imc.simulator import Simulator

    m, t = compile_(model, "default", *sets)
    program = read_program(write_program(m, t, tmp_path).path(PROGRAM_FILE))
    moved = Simulator(program).noc_bits_moved
    mesh = program.config.mesh_cols
    bit_hops = 0
    for tr in program.noc:
        hops = abs(tr.src % mesh - tr.dst % mesh) + abs(tr.src // mesh - tr.dst // mesh)
        assert tr.hops == hops
        bit_hops += tr.bytes * 8 * hops
    r = estimate(m, t, None).resources
    assert r["noc_bits"] == moved > 0
    assert r["energy_breakdown_j"]["noc"] == pytest.approx(bit_hops * t.config.energy.noc_pj_per_bit_hop * 1e-12)


def test_copies_do_not_funnel_into_the_home_core() -> None:
    """chapter_cnn on 16 cores, duplicated: copies finish their outputs and read only their
    input rows, so core 0's link is not the bottleneck and throughput beats packed."""
    m_d, t_d = compile_("zoo:chapter_cnn", "default", "hardware.cores=16", "mapper.strategy=duplicated")
    m_p, t_p = compile_("zoo:chapter_cnn", "default", "hardware.cores=16", "mapper.strategy=packed")
    k_d, k_p = estimate(m_d, t_d, None), estimate(m_p, t_p, None)
    assert "NoC link" not in k_d.resources["bottleneck"]
    assert k_d.throughput_inf_per_s > 5 * k_p.throughput_inf_per_s
