"""``LIFBitshift``, the Xylo family's integer neuron: its rules by hand, its checks, and bit for
bit against ``xylosim`` (the C++ simulator Rockpool's ``XyloSim`` wraps) on an input →
hidden → readout network with random int8 weights over 80 steps."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap.errors import GraphError
from hwmap.execute import run
from hwmap.graph import Node
from hwmap.ops import get_op
from hwmap.ops.bitshift import bitshift_decay

from snn_nets import graph_from


def bitshift(name: str, inp: str, out: str, **params: object) -> Node:
    attrs = {k: params.pop(k) for k in ("syn_bits", "mem_bits", "max_spikes") if k in params}
    return Node(name, "LIFBitshift", [inp], [out], attrs, {k: np.asarray(v, np.float32) for k, v in params.items()})


def test_decay_rounds_down_and_a_positive_state_always_loses_one():
    a = np.array([100, 94, 1, 3, -1, -21, 0, 54])
    d = np.array([4, 4, 1, 1, 1, 4, 3, 6])
    # 100 - 6; 94 - 5; 1 - max(0, 1); 3 - 1; -1 - (-1); -21 - (-2); 0; 54 - max(0, 1)
    assert bitshift_decay(a, d).tolist() == [94, 89, 0, 2, 0, -19, 0, 53]


def test_one_neuron_by_hand():
    node = bitshift("n", "x", "y", dash_syn=[2], dash_mem=[1], threshold=[10], bias=[1], max_spikes=2)
    opdef = get_op("LIFBitshift")
    state, out = None, []
    for x in [20, 0, 0, 40, 0]:
        (y,), state = opdef.step(node, [np.array([[x]], np.float32)], state)
        out.append((int(y[0, 0]), int(state["i"][0, 0]), int(state["v"][0, 0])))
    # i: 20-5=15 | v: 0+15+1=16 -> 1 spike, 6
    # i: 15-3=12 | v: 6-3+12+1=16 -> 1 spike, 6
    # i: 12-3=9  | v: 6-3+9+1=13 -> 1 spike, 3
    # i: 9+40=49, 49-12=37 | v: 3-1+37+1=40 -> 4 spikes capped at 2, 20
    # i: 37-9=28 | v: 20-10+28+1=39 -> 2 spikes (3 capped), 19
    assert out == [(1, 15, 6), (1, 12, 6), (1, 9, 3), (2, 37, 20), (2, 28, 19)]


def test_states_saturate_to_their_bits():
    node = bitshift("n", "x", "y", dash_syn=[7], dash_mem=[9], threshold=[500], syn_bits=8, mem_bits=10)
    opdef = get_op("LIFBitshift")
    state = None
    for _ in range(5):  # v: -127, -253, -379, -505, then -631 saturates
        _, state = opdef.step(node, [np.array([[-500]], np.float32)], state)
    assert int(state["i"][0, 0]) == -128 + 1 and int(state["v"][0, 0]) == -512  # -128 >> 7 = -1


@pytest.mark.parametrize("params, message", [
    ({"dash_syn": [16], "dash_mem": [1], "threshold": [5]}, "'dash_syn' holds 16.0: must be whole numbers from 0 to 15"),
    ({"dash_syn": [1], "dash_mem": [1.5], "threshold": [5]}, "'dash_mem' holds 1.5"),
    ({"dash_syn": [1], "dash_mem": [1], "threshold": [0]}, "'threshold' holds 0.0: must be whole numbers from 1"),
    ({"dash_syn": [1], "dash_mem": [1], "threshold": [5], "max_spikes": 0}, "'max_spikes' = 0"),
    ({"dash_syn": [1], "dash_mem": [1]}, "parameter 'threshold' is missing"),
])
def test_bad_parameters_are_refused_naming_the_node(params, message):
    with pytest.raises(GraphError, match=message) as e:
        get_op("LIFBitshift").infer(bitshift("hid", "x", "y", **params), [(1, 1)])
    assert "node 'hid' (LIFBitshift)" in str(e.value)


def test_fractional_input_is_refused():
    node = bitshift("hid", "x", "y", dash_syn=[1], dash_mem=[1], threshold=[5])
    with pytest.raises(GraphError, match="integer synaptic input.*0.5"):
        get_op("LIFBitshift").step(node, [np.array([[0.5]], np.float32)], None)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_xylosim_bit_for_bit(seed):
    """Input spike counts → int8 weights → hidden LIFBitshift (up to 31 spikes per step) →
    one-step Delay → int8 weights → readout LIFBitshift (one spike per step), against
    xylosim's XyloLayer with the same weights (no recurrence, one synapse per neuron). Xylo's
    readout integrates the hidden spikes of the step before (its pipeline): the Delay. The input stays small enough that
    no partial sum of a step's input events saturates, where xylosim and the op agree by
    construction (the module docstring says why); the membranes do saturate."""
    xylosim = pytest.importorskip("xylosim.v2")
    rng = np.random.default_rng(seed)
    n_in, n_hid, n_out, steps, batch = 6, 10, 4, 80, 3
    w_in = rng.integers(-128, 128, (n_in, n_hid))
    w_out = rng.integers(-128, 128, (n_hid, n_out))
    hid = {"dash_syn": rng.integers(0, 8, n_hid), "dash_mem": rng.integers(0, 8, n_hid),
           "threshold": rng.integers(20, 400, n_hid), "bias": rng.integers(-40, 40, n_hid)}
    out = {"dash_syn": rng.integers(0, 6, n_out), "dash_mem": rng.integers(0, 6, n_out),
           "threshold": rng.integers(50, 2000, n_out)}
    x = rng.integers(0, 4, (batch, steps, n_in))

    graph = graph_from([
        Node("w_in", "Gemm", ["x"], ["c_hid"], {}, {"B": w_in.astype(np.float32)}),
        bitshift("hidden", "c_hid", "s_hid", **hid),
        Node("pipeline", "Delay", ["s_hid"], ["s_late"], {"dt": 1.0}, {"delay": np.ones(n_hid, np.float32)}),
        Node("w_out", "Gemm", ["s_late"], ["c_out"], {}, {"B": w_out.astype(np.float32)}),
        bitshift("readout", "c_out", "s_out", max_spikes=1, **out),
    ], {"x": (1, n_in)}, ["s_hid", "s_out"])
    ours = run(graph, {"x": x.astype(np.float32)})

    def synapses(w: np.ndarray) -> list[list]:
        return [[xylosim.XyloSynapse(int(j), 0, int(row[j])) for j in np.flatnonzero(row)] for row in w]

    # xylosim keeps references to the synapse lists: they must outlive the layer
    wiring = (synapses(w_in), [[] for _ in range(n_hid)], synapses(w_out), [[] for _ in range(n_hid)])
    layer = xylosim.XyloLayer(
        *wiring,
        hid["threshold"].tolist(), out["threshold"].tolist(), True, hid["bias"].tolist(), [0] * n_out, 0, 0, 0,
        hid["dash_mem"].tolist(), out["dash_mem"].tolist(), [[int(d), 0] for d in hid["dash_syn"]],
        [[int(d)] for d in out["dash_syn"]], "hwmap-test")
    saturated = 0
    for b in range(batch):
        layer.reset_all()
        spikes_out = np.array(layer.evolve(x[b].tolist()))
        isyn = np.array(layer.rec_i_syn).T
        # the premise: no partial sum of one step's input events can leave the 16-bit range
        assert np.abs(isyn).max() + np.abs(w_in).sum(axis=0).max() * 3 < 2**15
        saturated += int((np.abs(np.array(layer.rec_v_mem)) == 2**15).sum())
        np.testing.assert_array_equal(ours["s_hid"][b], np.array(layer.rec_recurrent_spikes), err_msg=f"sample {b}")
        np.testing.assert_array_equal(ours["s_out"][b], spikes_out, err_msg=f"sample {b}")
    assert ours["s_hid"].max() >= 2 and ours["s_out"].any(), "no multiple spikes or no readout spike: weak check"
    assert saturated, "no membrane saturated: the check would not cover saturation"
