"""The KPI record: completeness check, JSON round trip, the columns every comparison shows."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hwmap import Assumption, Bottleneck, Fidelity, KPIs, LayerCost, Provenance
from hwmap.kpi import HEADLINE_KPIS, KPI_COLUMNS


def complete() -> KPIs:
    layers = [LayerCost("conv1", "Conv", latency_s=4e-5, cycles=4000, energy_j={"compute": 5e-9, "memory": 4e-9},
                        ops=16000),
              LayerCost("fc", "Gemm", latency_s=2.66e-5, cycles=2656, energy_j={"compute": 3e-9, "memory": 3.4e-9},
                        ops=9600)]
    return KPIs(target="toy_cpu", config="toy-default", model="zoo:digits_cnn", latency_s=6.66e-5,
                throughput_inf_per_s=15015.0, energy_per_inference_j=1.54e-8, power_w=2.31e-4,
                weight_memory_bytes=3932, activation_memory_bytes=1024, ops_per_inference=25600, ops_kind="MAC",
                utilization=0.962, resources={"layers": 6, "cycles": 6656},
                fidelity=Fidelity("top1_agreement", 1.0, 360, {"bit_exact": 0.0}), accuracy=0.978,
                layers=layers, bottleneck=Bottleneck("layers run one at a time; conv1 is the longest", "MAC unit",
                                                     "conv1"),
                energy_breakdown={"compute": 8e-9, "memory": 7.4e-9},
                provenance=Provenance(kpis={k: "modelled" for k in HEADLINE_KPIS}),
                assumptions={"mac_pj": Assumption(0.23, "pJ", "Horowitz, ISSCC 2014")})


def test_the_columns_are_those_of_the_design() -> None:
    assert KPI_COLUMNS == ["target", "config", "model", "fits", "violations", "latency_s", "throughput_inf_per_s",
                           "energy_per_inference_j", "power_w", "weight_memory_bytes", "activation_memory_bytes",
                           "ops_per_inference", "ops_kind", "utilization", "resources", "fidelity", "accuracy",
                           "reference_accuracy", "layers", "bottleneck", "energy_breakdown", "provenance",
                           "assumptions", "sensitivity"]


def test_a_complete_record_has_no_problems() -> None:
    assert complete().check() == []
    k = complete()
    k.ops_kind = "SynOp"
    k.utilization = 0.0
    k.energy_per_inference_j = 0  # an int zero is a number too
    k.energy_breakdown = {"compute": 0}
    k.layers = [LayerCost("conv1", energy_j={})]
    assert k.check() == []


@pytest.mark.parametrize("field", ["latency_s", "throughput_inf_per_s", "energy_per_inference_j", "power_w",
                                   "weight_memory_bytes", "activation_memory_bytes", "ops_per_inference",
                                   "utilization"])
def test_each_missing_figure_is_named(field: str) -> None:
    k = complete()
    setattr(k, field, None)
    assert k.check() == [f"{field} missing"]


@pytest.mark.parametrize("value", [-1.0, math.nan, math.inf, "fast"])
def test_bad_numbers_are_named(value: object) -> None:
    k = complete()
    k.latency_s = value  # type: ignore[assignment]
    assert k.check() == [f"latency_s = {value!r} is not a finite non-negative number"]


def test_utilization_above_one_ops_kind_and_assumptions() -> None:
    k = complete()
    k.utilization = 1.5
    k.ops_kind = None
    k.assumptions = {}
    assert k.check() == ["ops_kind None is neither 'MAC' nor 'SynOp'", "utilization 1.5 outside 0..1",
                         "assumptions empty: say which constants and models the estimate used"]


def test_not_fitting_records() -> None:
    k = KPIs.not_fitting("toy_cpu", "toy-small", "zoo:digits_cnn", ["weight_memory: 3,932 > 1,024 bytes"])
    assert (k.fits, k.latency_s, k.fidelity) == (False, None, None)
    assert k.check() == []
    assert KPIs(fits=False).check() == ["fits is false but no violation is named"]


def test_json_round_trip_is_exact_and_deterministic() -> None:
    k = complete()
    k.resources["per_core"] = np.array([1, 2, 3])
    k.resources["peak"] = np.float32(0.5)
    text = k.dumps()
    assert text == k.dumps()
    d = json.loads(text)
    assert list(d) == sorted(d)
    assert d["resources"]["per_core"] == [1, 2, 3] and d["resources"]["peak"] == 0.5
    back = KPIs.from_json(d)
    assert isinstance(back.fidelity, Fidelity) and back.fidelity == k.fidelity
    assert back.latency_s == k.latency_s and back.dumps() == text
    # unknown keys (a newer hwmap's record) are ignored
    assert KPIs.from_json({**d, "future_column": 1}).dumps() == text


def test_not_serializable_values_are_an_error() -> None:
    k = complete()
    k.assumptions["callback"] = Assumption(object(), "", "a test")
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        k.dumps()
