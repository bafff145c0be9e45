"""The nengo_like target: zoo:digits_cnn converted and run on the default preset (the
conformance suite, accuracy against the ANN and the rate network), the mapping's splitting
across cores and its design-rule check, and the nengo-compatible Simulator on the same stages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hwmap_nengo_like as nengo_like
from hwmap.config import load_target
from hwmap.data import load_data
from hwmap.flow import compile_model
from hwmap.testing import assert_conforms
from hwmap_nengo_like.description import Description, Host, Link, Population
from hwmap_nengo_like.mapper import place


def test_digits_cnn_conforms(tmp_path: Path) -> None:
    assert_conforms("nengo_like", model="zoo:digits_cnn", data="zoo:digits", tmp_path=tmp_path)


def test_digits_cnn_accuracy_and_curve(tmp_path: Path) -> None:
    r = compile_model("zoo:digits_cnn", load_target("nengo_like:default"), tmp_path / "c",
                      data=load_data("zoo:digits"))
    k = r.kpis
    assert not k.check()
    # measured: 0.963 spiking, 0.978 ANN, top-1 agreement 0.985 on the 270 scored samples
    assert k.accuracy is not None and k.reference_accuracy is not None
    assert k.accuracy >= k.reference_accuracy - 0.03
    assert k.fidelity is not None and k.fidelity.value >= 0.95
    res = k.resources
    assert res["cores_used"] == 3 and res["neurons"] == 768 and res["steps_per_inference"] == 8
    curve = res["agreement_with_rate_network_by_step"]
    assert len(curve) == 8 and curve[-1] >= 0.95 and curve[0] < curve[-1]
    assert k.latency_s == pytest.approx(8e-3)
    assert {x.name for x in k.layers} == {"relu1", "relu2", "output"}
    assert sum(k.energy_breakdown.values()) == pytest.approx(k.energy_per_inference_j)
    assert all(a.source for a in k.assumptions.values())


def _chain(n: int, fan_in: int) -> Description:
    d = Description("t", 1e-3, 4)
    d.hosts.append(Host("x", "input", 0, fan_in))
    spec = nengo_like.RegularSpiking(nengo_like.RectifiedLinear()).spec()
    d.populations.append(Population("p", n, 0, spec, np.ones(n), np.zeros(n), np.zeros((n, 0))))
    d.links.append(Link("x->p", "x", "p", "neurons", np.ones((n, fan_in))))
    return d


def test_large_population_splits_across_cores() -> None:
    sub = load_target("nengo_like:default").config.substrate  # type: ignore[attr-defined]
    d = _chain(1000, 10)
    diags, per_core = place(d, sub)
    assert not diags
    assert [c[2] - c[1] for c in d.populations[0].cores] == [256, 256, 256, 232]
    assert [c["core"] for c in per_core] == [0, 1, 2, 3]
    # synapse memory splits further: 300 synapses per neuron, 65,536 per core -> 218 neurons
    d = _chain(1000, 300)
    diags, _ = place(d, sub)
    assert not diags and d.populations[0].cores[0][2] == 65536 // 300


def test_design_rule_check_names_every_violation() -> None:
    t = load_target("nengo_like:default@substrate.cores=2@substrate.axons_per_core=100")
    d = _chain(1000, 200)
    diags, _ = place(d, t.config.substrate)  # type: ignore[attr-defined]
    assert {x.rule for x in diags} == {"axons"}
    d = _chain(1000, 10)
    diags, _ = place(d, t.config.substrate)  # type: ignore[attr-defined]
    assert [x.rule for x in diags] == ["cores"] and "needs 4 cores" in diags[0].message


def test_does_not_fit_exit_code(tmp_path: Path) -> None:
    from hwmap.cli import main

    code = main(["compile", "zoo:digits_cnn", "--target", "nengo_like:default@substrate.cores=2", "-o",
                 str(tmp_path / "o")])
    assert code == 1


def test_simulator_runs_the_emitted_description() -> None:
    with nengo_like.Network(seed=1) as net:
        u = nengo_like.Node(lambda t: 0.5)
        a = nengo_like.Ensemble(40, 1)
        nengo_like.Connection(u, a)
        p = nengo_like.Probe(a, synapse=0.01)
    with nengo_like.Simulator(net, dt=0.001, progress_bar=False) as sim:
        sim.run(0.1)
        sim.run(0.1)
        assert sim.artifacts.files == ["network.json", "arrays.npz"]
        assert sim.description.populations[0].cores == [[0, 0, 40]]
        assert sim.data[p].shape == (200, 1) and len(sim.trange()) == 200
        assert abs(sim.data[p][-50:].mean() - 0.5) < 0.05
