"""Measured sparsity reaches the targets' estimates: ``hwmap compile --data`` measures the
legalized, quantized graph (hwmap.flow.with_sparsity) and the pipelined and analog targets
state, per layer and in total, the MACs (and where it applies the energy) zero-skipping and
change-driven hardware would save, without changing their headline figures."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap import load_data
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.flow import MAX_SPARSITY_SAMPLES, compile_model, model_inputs, split_data
from hwmap.registry import get_registry
from hwmap.sparsity import ACTIVITY_KEY

TARGETS = [("pipelined_dnn", "hwmap_pipelined_dnn"), ("analog_imc", "hwmap_analog_imc")]


@pytest.fixture(scope="module")
def digits():  # type: ignore[no-untyped-def]
    return load_data("zoo:digits")


@pytest.mark.parametrize("kind, package", TARGETS)
def test_estimate_states_what_skipping_would_save(kind: str, package: str, digits) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip(package)
    target = load_target(f"{kind}:default")
    res = compile_model("zoo:digits_cnn", target, None, data=digits)
    k = res.kpis
    text = k.assumptions["sparsity.skipping"].value
    assert "have a zero operand" in text and f"measured on {MAX_SPARSITY_SAMPLES} samples" in text

    # independently: the fc layer reads each input element once per output, so its MACs with a
    # zero operand are its MACs times the zero fraction of its input in the quantized run
    g = res.legalized.graph
    x = next(iter(model_inputs(g, split_data(digits)[1], MAX_SPARSITY_SAMPLES).values()))
    values = run(g, {g.inputs[0]: x}, quantized=True, collect=True)
    fc = next(layer for layer in k.layers if layer.name == "fc")
    zero_fraction = float(np.mean(values[g.node("fc").inputs[0]] == 0))
    assert 0 < zero_fraction < 1
    assert fc.resources["zero_operand_macs"] == pytest.approx(fc.ops * zero_fraction, rel=1e-12)
    measured = [layer for layer in k.layers if "zero_operand_macs" in layer.resources]
    assert {layer.name for layer in measured} == {layer.name for layer in k.layers if layer.ops}
    total = sum(layer.resources["zero_operand_macs"] for layer in measured)
    # one vocabulary for the same quantity on every target (hwmap.sparsity.SKIP_RESOURCES)
    assert k.resources["zero_operand_macs"] == pytest.approx(total, rel=1e-12)
    assert 0 < total < k.ops_per_inference
    unchanged = sum(layer.resources["unchanged_operand_macs"] for layer in measured)
    assert k.resources["unchanged_operand_macs"] == pytest.approx(unchanged, rel=1e-12)
    assert 0 < unchanged < k.ops_per_inference
    assert not {"zero_skipping_saved_macs", "change_driven_saved_macs"} & set(k.resources)
    if kind == "pipelined_dnn":  # compute energy is MACs × mac_pj, so the saving is too
        mac_j = target.config.energy.mac_pj * 1e-12
        assert k.resources["zero_operand_energy_j"] == pytest.approx(total * mac_j, rel=1e-9)
        assert k.resources["unchanged_operand_energy_j"] == pytest.approx(unchanged * mac_j, rel=1e-9)
    else:  # a crossbar's energy does not scale with the MACs it skips: no energy is stated
        assert "zero_operand_energy_j" not in k.resources

    # the headline is the same without the measurement
    assert res.simulation is not None and ACTIVITY_KEY not in res.simulation.activity
    plain = get_registry().call("hwmap_estimate", kind, mapping=res.mapping, target=target,
                                activity=res.simulation.activity)
    for field in ("energy_per_inference_j", "latency_s", "throughput_inf_per_s", "ops_per_inference"):
        assert getattr(plain, field) == getattr(k, field), field
    assert plain.energy_breakdown == k.energy_breakdown
    assert "zero_operand_macs" not in plain.layers[-1].resources


@pytest.mark.parametrize("kind, package", TARGETS)
def test_without_data_the_estimate_says_sparsity_was_not_measured(kind: str, package: str) -> None:
    pytest.importorskip(package)
    res = compile_model("zoo:digits_cnn", load_target(f"{kind}:default"), None)
    assert res.kpis.assumptions["sparsity.skipping"].value.startswith("not measured (no --data)")
