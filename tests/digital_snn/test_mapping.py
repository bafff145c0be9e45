"""Folding feed-forward, residual and recurrent networks into the one population (the
chapter's Fig. 3.15), checked spike for spike against the layer-by-layer integer reference
(:mod:`dsnn_nets`): the simulator runs the folded W_in, W_rec and W_out read back from the
bitstream; the reference runs each layer's own blocks with an explicit one-step Delay
between layers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwmap.config import load_target
from hwmap.execute import run
from hwmap_digital_snn import plugin
from hwmap_digital_snn.mapper import depths, map_network
from hwmap_digital_snn.network import Projection, extract
from hwmap_digital_snn.simulator import load, run_program

from dsnn_nets import events, feed_forward, reference_graph, reference_numpy, residual


def _compile(graph, tmp_path: Path, preset: str = "digital_snn:default", sets: list[str] | None = None):
    t = load_target(preset, sets or [])
    legal = plugin.hwmap_legalize(graph, t)
    assert legal.fits, legal.violations
    m = plugin.hwmap_map(legal.graph, t)
    art = plugin.hwmap_emit(m, t, tmp_path)
    return m, load(art)


@pytest.mark.parametrize("build, lag", [(lambda: feed_forward([6, 12, 10, 4]), 2), (residual, 3)])
def test_folded_network_equals_the_layer_by_layer_reference(build, lag, tmp_path: Path) -> None:
    graph = build()
    m, p = _compile(graph, tmp_path)
    assert p.lag == lag and [x.depth for x in p.layers if x.output] == [lag]
    x = events(np.random.default_rng(1), 5, 60, p.n_in)
    ours = run_program(p, x.astype(np.float64), 60, 5)
    ref = run(reference_graph(p), {"x": x})
    out = next(x_.name for x_ in p.layers if x_.output)
    np.testing.assert_array_equal(ours.out_spikes, ref[f"{out}.s"])
    hidden = sum(ref[f"{x_.name}.s"].sum() for x_ in p.layers if not x_.output)
    assert ours.hidden_spikes.sum() == hidden
    assert ours.out_spikes.any() and max(ref[f"{x_.name}.s"].max() for x_ in p.layers) >= 2, "weak check"


def test_residual_bypass_is_a_block_of_w_rec_with_one_step_lag(tmp_path: Path) -> None:
    m, p = _compile(residual(), tmp_path)
    lay = {x.name: x for x in p.layers}
    assert [(x.name, x.depth) for x in p.layers] == [("lif0", 0), ("lif1", 1), ("lif2", 2), ("lif3", 3)]
    # the bypass lif0 -> lif2 and the main path lif1 -> lif2 both sit in W_rec
    a, b, c = lay["lif0"], lay["lif1"], lay["lif2"]
    assert np.any(p.w_rec[a.start:a.stop, c.start:c.stop]) and np.any(p.w_rec[b.start:b.stop, c.start:c.stop])
    assert not np.any(p.w_rec[c.start:c.stop, :])  # lif2 drives only the output
    assert m.to_json()["lag_steps"] == 3


def test_recurrent_population_equals_the_numpy_reference(tmp_path: Path) -> None:
    """A recurrent block (lif0 onto itself) and a lif1 -> lif0 feedback: W_rec above and on
    its diagonal; the reference delivers every recurrent spike one step later."""
    from hwmap_digital_snn.hardware import DigitalSNNConfig

    graph = feed_forward([6, 12, 10, 4], seed=3)
    net, diags = extract(graph)
    assert net is not None
    rng = np.random.default_rng(4)
    net.projections.append(Projection("rec0", "lif0", "lif0", rng.normal(0, 0.4, (12, 12))))
    net.projections.append(Projection("back", "lif1", "lif0", rng.normal(0, 0.4, (12, 10))))
    assert depths(net)["lif0"] == 0  # recurrent weights do not deepen a layer
    cfg = DigitalSNNConfig()
    m = map_network(graph, net, cfg.hardware, per_neuron=True, calibration=None)
    p = m.program
    lay = {x.name: x for x in p.layers}
    assert np.any(p.w_rec[lay["lif0"].start:lay["lif0"].stop, lay["lif0"].start:lay["lif0"].stop])
    assert np.any(p.w_rec[lay["lif1"].start:lay["lif1"].stop, lay["lif0"].start:lay["lif0"].stop])
    x = events(rng, 4, 50, p.n_in)
    ours = run_program(p, x.astype(np.float64), 50, 4)
    np.testing.assert_array_equal(ours.out_spikes, reference_numpy(p, x))
    assert ours.out_spikes.any()


def test_the_two_references_agree(tmp_path: Path) -> None:
    _, p = _compile(residual(seed=2), tmp_path)
    x = events(np.random.default_rng(5), 3, 40, p.n_in)
    out = next(x_.name for x_ in p.layers if x_.output)
    np.testing.assert_array_equal(run(reference_graph(p), {"x": x})[f"{out}.s"], reference_numpy(p, x))


def test_multiplicative_decay_device(tmp_path: Path) -> None:
    """The multiplicative decay form maps and simulates; its decays are finer than bit shifts."""
    graph = feed_forward([6, 12, 4], seed=1)
    _, p = _compile(graph, tmp_path, sets=['hardware.decay="multiplicative"', "hardware.decay_bits=8"])
    assert p.decay == "multiplicative" and len(set(p.hid_dmem.tolist())) > 3
    x = events(np.random.default_rng(0), 2, 30, p.n_in)
    assert run_program(p, x.astype(np.float64), 30, 2).hidden_spikes.sum() > 0


@pytest.mark.parametrize("fraction", [0.0, 1.0])
def test_dense_and_event_driven_sums_agree(fraction: float, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The simulator's two ways of forming the weighted sums (whole matrix, or the rows of the
    sources that fired) give the same spikes."""
    from hwmap_digital_snn import simulator

    _, p = _compile(residual(seed=1), tmp_path)
    x = events(np.random.default_rng(2), 4, 40, p.n_in)
    monkeypatch.setattr(simulator, "SPARSE_FRACTION", fraction)
    ours = run_program(p, x.astype(np.float64), 40, 4, "numpy")
    np.testing.assert_array_equal(ours.out_spikes, reference_numpy(p, x))
