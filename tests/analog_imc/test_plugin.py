"""analog_imc plugin wiring: registration and presets, config errors, the chapter's example
through the whole flow, digital-node placement, the mapping picture, the conformance suite."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hwmap import ConfigError, DoesNotFitError, load_model
from hwmap.config import load_target
from hwmap.flow import compile_model
from hwmap.registry import get_registry
from hwmap.testing import assert_conforms
from hwmap_analog_imc import plugin
from hwmap_analog_imc.hardware import AnalogIMCConfig


def test_registered_with_its_presets() -> None:
    spec = get_registry().spec("analog_imc")
    assert spec.config_model is AnalogIMCConfig and spec.description
    assert set(spec.presets) == {"default", "chapter-fig3.13", "isaac-like"}
    assert get_registry().owners["analog_imc"] is plugin
    for name in spec.presets:
        t = load_target(f"analog_imc:{name}")
        assert t.kind == "analog_imc" and isinstance(t.config, AnalogIMCConfig)
    chapter = load_target("analog_imc:chapter-fig3.13").config
    assert (chapter.hardware.cores, chapter.hardware.element_rows, chapter.hardware.element_cols) == (1, 16, 4)
    isaac = load_target("analog_imc:isaac-like").config
    assert (isaac.hardware.crossbar_rows, isaac.energy.adc_pj_per_conversion) == (128, 1.56)


@pytest.mark.parametrize(("override", "key"), [
    ("hardware.element_rows=5", "hardware.element_rows"),
    ("hardware.element_cols=3", "hardware.element_cols"),
    ("hardware.cores=0", "hardware.cores"),
    ("mapper.strategy=\"best\"", "mapper.strategy"),
])
def test_bad_configs_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_target("analog_imc:chapter-fig3.13", [override])
    assert key in str(err.value)


def test_chapter_example_end_to_end(tmp_path: Path) -> None:
    res = compile_model("zoo:chapter_cnn", load_target("analog_imc:chapter-fig3.13"), tmp_path / "out")
    r = res.kpis.resources
    assert (r["cores_used"], r["elements_used"], r["elements_allocated"], r["computation_cycles"]) == (1, 22, 22, 1)
    assert r["element_utilization"] == 1.0
    assert (r["cores_lower_bound"], r["elements_lower_bound"], r["computation_cycles_lower_bound"]) == (1, 22, 1)
    per_layer = {lm.node: lm.elements for lm in res.mapping.result.layers}
    assert per_layer == {"conv1_fused": 4, "conv2": 18}
    assert res.kpis.check() == [] and res.kpis.target == "analog_imc"
    mapping = json.loads((tmp_path / "out" / "mapping.json").read_text())
    assert any("synthetic U(0,1)" in n for n in mapping["notes"])
    assert "synthetic U(0,1)" in res.kpis.assumptions["calibration"].value


def test_unsupported_model_lists_every_node() -> None:
    from test_legalize import gemm_graph

    with pytest.raises(DoesNotFitError) as err:
        compile_model(gemm_graph(["Exp", "Erf"]), load_target("analog_imc:default"), None)
    assert len(err.value.violations) == 2
    assert "exp0" in str(err.value) and "erf1" in str(err.value)


def test_digital_nodes_run_on_the_core_of_their_producer() -> None:
    t = load_target("analog_imc:default", ["hardware.crossbar_rows=64", "hardware.crossbar_cols=64"])
    leg = plugin.hwmap_legalize(load_model("zoo:resnet_small"), t)
    m = plugin.hwmap_map(leg.graph, t)
    assert m.result.cores_used > 1
    home = {}
    for p in m.result.placements:
        if p.replica == 0:
            home.setdefault(m.layers[p.layer].node, p.core)
    core_of = {}
    for node in leg.graph.nodes:
        core = home[node.name] if node.name in home else m.digital[node.name]
        if node.name not in home:
            producers = [core_of[t] for t in node.inputs if t in core_of]
            assert core == (producers[0] if producers else 0), node.name
        for out in node.outputs:
            core_of[out] = core
    assert set(m.digital) == {n.name for n in leg.graph.nodes} - set(home)
    assert {m.digital[n] for n in ("s1_add", "s2_add", "s3_add", "pool", "flatten")} <= set(range(8))


def test_strategy_override_reaches_the_mapper() -> None:
    t = load_target("analog_imc:chapter-fig3.13", ["mapper.strategy=\"packed\""])
    m = plugin.hwmap_map(plugin.hwmap_legalize(load_model("zoo:chapter_cnn"), t).graph, t)
    assert m.result.strategy == "packed" and m.result.elements_used == 22


def test_plot_mapping_from_the_plugin(tmp_path: Path) -> None:
    t = load_target("analog_imc:chapter-fig3.13")
    m = plugin.hwmap_map(plugin.hwmap_legalize(load_model("zoo:chapter_cnn"), t).graph, t)
    plugin.plot_mapping(m, t, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_analog_imc_conforms(tmp_path: Path) -> None:
    assert_conforms("analog_imc", model="zoo:chapter_cnn", tmp_path=tmp_path)


def test_analog_imc_conforms_to_its_own_claim_on_labelled_data(tmp_path: Path) -> None:
    """The suite checks the registered FidelityClaim (top-1 at least 0.99) on a classifier."""
    from hwmap.registry import get_registry

    assert get_registry().spec("analog_imc").fidelity.top1_agreement == 0.99
    assert_conforms("analog_imc", model="zoo:digits_cnn", data="zoo:digits", tmp_path=tmp_path)


@pytest.mark.parametrize(("model", "preset", "sets"), [
    ("zoo:digits_cnn", "isaac-like", []),
    ("zoo:resnet_small", "default", ["hardware.cores=2", "hardware.crossbar_rows=64", "hardware.crossbar_cols=64",
                                     'mapper.strategy="greedy"']),
])
def test_analytic_counts_agree_with_the_simulator(model: str, preset: str, sets: list[str]) -> None:
    """The estimate's counts come from the mapping; the simulator's from the emitted program it
    executes: two independent derivations that must agree where no data dependence enters."""
    import numpy as np

    from hwmap import Dataset
    from hwmap_analog_imc.estimate import estimate

    g = load_model(model)
    x = np.random.default_rng(0).random((4, *g.tensor(g.inputs[0]).shape[1:]), dtype=np.float32)
    t = load_target(f"analog_imc:{preset}", sets)
    res = compile_model(g, t, None, data=Dataset(x, None, "random"))  # 1 calibrates, 3 are scored
    measured = res.simulation.activity
    analytic = estimate(res.mapping, t, None).resources
    assert {k: float(v) for k, v in measured["mvms"].items()} == analytic["mvms_per_layer"]
    assert sum(measured["adc_conversions"].values()) == analytic["adc_conversions"]
    assert sum(measured["cell_reads"].values()) == analytic["cell_reads"]
    assert measured["noc_bits"] == analytic["noc_bits"]
    # zero input bits are not driven: the measured DAC conversions are fewer, and used
    assert sum(measured["dac_conversions"].values()) < analytic["dac_conversions"]
    assert res.kpis.resources["dac_conversions"] == pytest.approx(sum(measured["dac_conversions"].values()))
    assert res.kpis.assumptions["activity"].value.startswith("measured by the simulator on 3 samples")
    assert res.kpis.check() == []
