"""Peer test: the simulator equals Rockpool's XyloSim (the ``xylosim`` package's XyloLayer,
the C++ simulator Rockpool's ``syns61201.XyloSim`` wraps) spike for spike on the same
quantized network, on the xylo-audio2 preset: two hidden layers folded into W_in, W_rec and
W_out, both synaptic states of the hidden neurons in use, weight shifts, biases. Inputs stay
small enough that no partial sum of one step's input events leaves the 16-bit range (where
XyloSim, which saturates after each event, and one saturation of the sum agree by
construction: :mod:`hwmap_digital_snn.simulator`)."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap.config import load_target
from hwmap_digital_snn import plugin
from hwmap_digital_snn.simulator import run_program

from dsnn_nets import feed_forward

xylosim = pytest.importorskip("xylosim.v2")


def xylo_layer(p):
    """A XyloLayer holding program ``p``; keep the returned wiring alive with the layer."""
    def synapses(w3: np.ndarray) -> list[list]:
        return [[xylosim.XyloSynapse(int(j), int(k), int(w3[i, j, k])) for j, k in zip(*np.nonzero(w3[i]))]
                for i in range(w3.shape[0])]
    wiring = (synapses(p.w_in), synapses(p.w_rec), synapses(p.w_out[:, :, None]), [[] for _ in range(p.n_hid)])
    dsyn = [[int(a), int(b)] for a, b in (p.hid_dsyn if p.n_syn == 2 else np.repeat(p.hid_dsyn, 2, axis=1))]
    layer = xylosim.XyloLayer(*wiring, p.hid_threshold.tolist(), p.out_threshold.tolist(), True,
                              p.hid_bias.tolist(), p.out_bias.tolist(), p.shift_in, p.shift_rec, p.shift_out,
                              p.hid_dmem.tolist(), p.out_dmem.tolist(), dsyn, [[int(d)] for d in p.out_dsyn],
                              "hwmap-digital-snn")
    return layer, wiring


def _program(seed: int):
    t = load_target("digital_snn:xylo-audio2")
    g = feed_forward([16, 24, 20, 8], seed=seed)
    legal = plugin.hwmap_legalize(g, t)
    assert legal.fits, legal.violations
    p = plugin.hwmap_map(legal.graph, t).program
    rng = np.random.default_rng(seed)
    # use the second synaptic state too: a copy of the weights, sign-flipped, with its own decay
    p.n_syn = 2
    p.w_in = np.concatenate([p.w_in, -(p.w_in // 2)], axis=2)
    p.w_rec = np.concatenate([p.w_rec, -(p.w_rec // 3)], axis=2)
    p.hid_dsyn = np.concatenate([p.hid_dsyn, rng.integers(1, 6, (p.n_hid, 1))], axis=1)
    p.shift_rec = 1
    return p


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spike_for_spike_against_xylosim(seed: int) -> None:
    p = _program(seed)
    rng = np.random.default_rng(10 + seed)
    batch, steps = 3, 100
    x = rng.integers(0, 3, (batch, steps, p.n_in))
    ours = run_program(p, x.astype(np.float64), steps, batch)
    layer, wiring = xylo_layer(p)
    hidden_total = 0
    for b in range(batch):
        layer.reset_all()
        out = np.array(layer.evolve(x[b].tolist()))
        isyn = np.abs(np.array(layer.rec_i_syn)).max()
        assert isyn + np.abs(p.w_in).sum(axis=(0, 2)).max() * 2 < 2**15  # the premise (docstring)
        np.testing.assert_array_equal(ours.out_spikes[b], out, err_msg=f"sample {b}")
        hidden_total += int(np.array(layer.rec_recurrent_spikes).sum())
    assert hidden_total == int(ours.hidden_spikes.sum())
    assert ours.out_spikes.any() and hidden_total > 0, "no spikes: weak check"
