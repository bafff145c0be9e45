"""zoo:digits_snn on digital_snn:default: the conformance suite, and the accuracy of the
bit-accurate simulator against the float network on zoo:digits."""

from __future__ import annotations

from pathlib import Path

from hwmap.config import load_target
from hwmap.data import load_data
from hwmap.flow import compile_model
from hwmap.testing import assert_conforms


def test_digits_snn_conforms(tmp_path: Path) -> None:
    assert_conforms("digital_snn", model="zoo:digits_snn", data="zoo:digits", tmp_path=tmp_path)


def test_digits_snn_accuracy_on_the_device_within_two_points(tmp_path: Path) -> None:
    r = compile_model("zoo:digits_snn", load_target("digital_snn:default"), tmp_path / "c",
                      data=load_data("zoo:digits"))
    k = r.kpis
    # measured: 0.959 on the device, 0.967 for the float network, top-1 agreement 0.974 (270 scored)
    assert k.reference_accuracy is not None and k.accuracy is not None
    assert k.accuracy >= k.reference_accuracy - 0.02
    assert k.fidelity is not None and k.fidelity.value >= 0.95
    res = k.resources
    assert (res["input_channels_used"], res["hidden_neurons_used"], res["output_neurons_used"]) == (64, 128, 10)
    assert res["lag_steps"] == 1 and res["steps_per_inference"] == 9
    assert {x.name for x in k.layers} == {"lif1", "fc2"} and not k.check()
    assert k.energy_breakdown["compute"] > 0 and k.provenance.kpis["energy_per_inference_j"] == "simulated"
