"""Every design rule with a network that breaks it: the rule is named, the node and the
numbers are in the message, and all violations of a network come back at once."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap.config import load_target
from hwmap.graph import Node
from hwmap_digital_snn import plugin

from dsnn_nets import feed_forward, gemm, graph_from, lif


def _violations(graph, preset: str = "digital_snn:default", sets: list[str] | None = None) -> list[str]:
    legal = plugin.hwmap_legalize(graph, load_target(preset, sets or []))
    return [str(v) for v in legal.violations]


def _one(rule: str, graph, **kw) -> str:
    got = [v for v in _violations(graph, **kw) if v.startswith(rule)]
    assert got, f"no {rule} violation in {_violations(graph, **kw)}"
    return got[0]


def test_a_network_that_fits_has_no_violation() -> None:
    assert _violations(feed_forward([16, 32, 8]), "digital_snn:xylo-audio2") == []


def test_input_channels() -> None:
    assert "takes 20 input channels; the device has 16" in _one("input_channels", feed_forward([20, 8, 4]),
                                                                preset="digital_snn:xylo-audio2")


def test_hidden_neurons() -> None:
    msg = _one("hidden_neurons", feed_forward([16, 300, 250, 8]), preset="digital_snn:xylo-imu")
    assert "needs 550 hidden neurons (lif0 300, lif1 250); the device has 496" in msg


def test_output_neurons() -> None:
    assert "needs 9 output neurons; the device has 8" in _one("output_neurons", feed_forward([16, 32, 9]),
                                                              preset="digital_snn:xylo-audio2")


def test_fan_in_and_pruning_to_it() -> None:
    graph = feed_forward([16, 40, 40, 8])
    msg = _one("fan_in", graph, preset="digital_snn:xylo-audio2")
    assert "at node 'lif1'" in msg and "40 of 40 neurons have a recurrent fan-in above 32 (the largest 40)" in msg
    assert _violations(graph, "digital_snn:xylo-audio2", ["mapping.prune_to_fan_in=true"]) == []
    t = load_target("digital_snn:xylo-audio2", ["mapping.prune_to_fan_in=true"])
    t.calibration = np.random.default_rng(0).integers(0, 2, (8, 20, 16)).astype(np.float32)
    legal = plugin.hwmap_legalize(graph, t)
    note = next(n for n in legal.notes if n.startswith("pruned"))
    assert "pruned 320 recurrent weights to a fan-in of 32" in note and "relative RMS change" in note
    w = next(n for n in legal.graph.nodes if n.name == "fc1").params["B"]
    assert (np.count_nonzero(w, axis=1) <= 32).all()


def test_synapses_per_neuron() -> None:
    """A population whose weights reach a second synapse on a one-synapse device."""
    from hwmap_digital_snn.drc import check
    from hwmap_digital_snn.hardware import DigitalSNNConfig
    from hwmap_digital_snn.network import extract

    net, _ = extract(feed_forward([16, 32, 32, 8]))
    assert net is not None
    net.projections[1].synapse = 1
    cfg = load_target("digital_snn:xylo-imu").config_as(DigitalSNNConfig)
    assert any(d.rule == "synapses" and "uses 2 synapses per neuron; the device's hidden neurons have 1"
               in d.message for d in check(net, cfg.hardware))
    cfg2 = load_target("digital_snn:xylo-audio2").config_as(DigitalSNNConfig)
    assert not [d for d in check(net, cfg2.hardware) if d.rule == "synapses"]


def test_one_dt() -> None:
    g = feed_forward([16, 32, 8])
    g.nodes[3].attrs["dt"] = 2e-3
    assert "use 2: 0.001 s, 0.002 s" in _one("one_dt", g)


def test_input_goes_first_through_a_weight() -> None:
    rng = np.random.default_rng(0)
    g = graph_from([lif("lif0", "x", "s0", 16, rng), gemm("fc", "s0", "c", 16, 8, rng), lif("out", "c", "s", 8, rng)],
                   {"x": (1, 16)}, ["s"])
    assert "at node 'lif0'" in _one("input_through_weight", g)


def test_outputs_come_directly_from_neurons() -> None:
    rng = np.random.default_rng(0)
    g = graph_from([gemm("fc0", "x", "c0", 16, 32, rng), lif("lif0", "c0", "s0", 32, rng),
                    gemm("fc1", "s0", "c1", 32, 8, rng)], {"x": (1, 16)}, ["c1"])
    assert "comes from Gemm node 'fc1'" in _one("output_from_neurons", g)


def test_output_neurons_not_recurrent() -> None:
    from hwmap_digital_snn.drc import check
    from hwmap_digital_snn.hardware import DigitalSNNConfig
    from hwmap_digital_snn.network import Projection, extract

    net, _ = extract(feed_forward([16, 32, 8]))
    assert net is not None
    net.projections.append(Projection("rec_out", "lif1", "lif1", np.ones((8, 8))))
    found = check(net, DigitalSNNConfig().hardware)
    assert any(d.rule == "output_not_recurrent" and d.node == "rec_out" for d in found)


def test_no_two_weights_in_a_row() -> None:
    rng = np.random.default_rng(0)
    g = graph_from([gemm("fc0", "x", "c0", 16, 32, rng), gemm("fc1", "c0", "c1", 32, 32, rng),
                    lif("lif0", "c1", "s0", 32, rng), gemm("fc2", "s0", "c2", 32, 8, rng), lif("out", "c2", "s", 8, rng)],
                   {"x": (1, 16)}, ["s"])
    assert "weights 'fc0' feed weights 'fc1' directly" in _one("consecutive_weights", g)


def test_time_constants_representable() -> None:
    g = feed_forward([16, 32, 8], params={"tau": np.full(32, 5e-4)})  # tau < dt: no bit-shift decay
    assert "at node 'lif0'" in _one("time_constants", g)


def test_at_least_two_neuron_layers() -> None:
    assert "one neuron layer" in _one("two_neuron_layers", feed_forward([16, 8]))


def test_every_violation_at_once() -> None:
    g = feed_forward([20, 1100, 9])
    g.nodes[1].attrs["dt"] = 2e-3
    rules = {v.split(" ")[0].split(":")[0] for v in _violations(g, "digital_snn:xylo-audio2")}
    assert {"input_channels", "hidden_neurons", "output_neurons", "one_dt"} <= rules


def test_unsupported_op() -> None:
    rng = np.random.default_rng(0)
    g = graph_from([gemm("fc0", "x", "c0", 16, 32, rng), Node("relu", "Relu", ["c0"], ["r0"], {}, {}),
                    lif("lif0", "r0", "s0", 32, rng), gemm("fc1", "s0", "c1", 32, 8, rng), lif("out", "c1", "s", 8, rng)],
                   {"x": (1, 16)}, ["s"])
    assert "the device has no Relu" in _one("unsupported_op", g)


@pytest.mark.parametrize("preset", ["digital_snn:default", "digital_snn:xylo-audio2", "digital_snn:xylo-imu"])
def test_presets_load(preset: str) -> None:
    assert load_target(preset).kind == "digital_snn"
