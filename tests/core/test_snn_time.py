"""Encoder and Readout (hwmap.ops.time) and how the executor runs an encoded graph: static data
in, the steps inside, a static result shaped like the ANN's output out."""

from __future__ import annotations

import numpy as np
import pytest

from hwmap.errors import DataError, GraphError
from hwmap.execute import encoded_steps, has_time_axis, is_encoded, run, run_batched
from hwmap.graph import Node

from snn_nets import graph_from


def encoder(encoding: str, timesteps: int, **attrs: object) -> Node:
    return Node("enc", "Encoder", ["x"], ["e"], {"encoding": encoding, "timesteps": timesteps, **attrs}, {})


def encoded_net(encoding: str = "direct", timesteps: int = 8, mode: str = "membrane", n_in: int = 5,
                seed: int = 0) -> tuple:
    """x → Encoder → Gemm → IF (reset by subtraction) → Gemm → Readout → out (static)."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.6, (7, n_in)).astype(np.float32)
    w2 = rng.normal(0, 0.6, (3, 7)).astype(np.float32)
    nodes = [
        encoder(encoding, timesteps),
        Node("fc1", "Gemm", ["e"], ["c1"], {"transB": 1}, {"B": w1}),
        Node("if1", "IF", ["c1"], ["s1"], {"dt": 1.0, "reset": "subtract"},
             {"r": np.float32(1), "v_threshold": np.float32(1), "v_init": np.float32(0.5)}),
        Node("fc2", "Gemm", ["s1"], ["c2"], {"transB": 1}, {"B": w2}),
        Node("ro", "Readout", ["c2"], ["out"], {"mode": mode}, {}),
    ]
    return graph_from(nodes, {"x": (1, n_in)}, ["out"]), w1, w2


def frames(encoding: str, x: np.ndarray, timesteps: int, **attrs: object) -> np.ndarray:
    g = graph_from([encoder(encoding, timesteps, **attrs)], {"x": (1, *x.shape[1:])}, ["e"])
    return run(g, {"x": x})["e"]


def test_direct_repeats_the_input_every_step():
    x = np.random.default_rng(1).normal(size=(4, 6)).astype(np.float32)
    e = frames("direct", x, 5)
    assert e.shape == (4, 5, 6) and np.array_equal(e, np.repeat(x[:, None], 5, axis=1))


def test_rate_spikes_regularly_floor_of_t_times_p():
    x = np.array([[0.0, 0.25, 0.5, 1.0, 1.7, -0.3, 0.75]], np.float32)
    e = frames("rate", x, 8)
    assert set(np.unique(e)) <= {0.0, 1.0}
    assert e[0].sum(axis=0).tolist() == [0, 2, 4, 8, 8, 0, 6]
    assert e[0, :, 2].tolist() == [0, 1, 0, 1, 0, 1, 0, 1]  # p = 0.5: every other step


def test_poisson_rate_is_p_and_a_sample_is_encoded_alike_in_any_batch():
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(6, 50)).astype(np.float32)
    e = frames("poisson", x, 400, seed=3)
    assert set(np.unique(e)) <= {0.0, 1.0}
    assert abs(e.mean(axis=1) - x).max() < 0.12  # 400 Bernoulli draws: sd <= 0.025
    # the same sample, alone or in another batch, in another position: the same spikes
    alone = frames("poisson", x[4:5], 400, seed=3)
    assert np.array_equal(alone[0], e[4])
    swapped = frames("poisson", x[::-1].copy(), 400, seed=3)
    assert np.array_equal(swapped[::-1], e)
    assert not np.array_equal(frames("poisson", x, 400, seed=4), e)


def test_encoded_graph_takes_static_data_and_gives_static_output():
    g, w1, w2 = encoded_net(timesteps=6)
    assert is_encoded(g) and not has_time_axis(g) and encoded_steps(g) == 6
    x = np.random.default_rng(3).uniform(size=(9, 5)).astype(np.float32)
    out = run(g, {"x": x})["out"]
    assert out.shape == (9, 3)
    # the same by hand: IF with reset by subtraction from v = 0.5, the mean of fc2's output
    v = np.full((9, 7), 0.5)
    acc = np.zeros((9, 3))
    c1 = (x.astype(np.float64) @ w1.T.astype(np.float64)).astype(np.float32)
    for _ in range(6):
        v = v + c1
        s = (v > 1).astype(np.float64)
        v = v - s
        acc += (s @ w2.T.astype(np.float64)).astype(np.float32)
    np.testing.assert_allclose(out, acc / 6, rtol=1e-6, atol=1e-6)
    # spike counts: the sum instead of the mean
    g2, _, _ = encoded_net(timesteps=6, mode="spike_count")
    np.testing.assert_allclose(run(g2, {"x": x})["out"], acc, rtol=1e-6, atol=1e-6)


def test_collect_gives_per_step_tensors_with_t_and_static_ones_without():
    g, _, _ = encoded_net(timesteps=4)
    x = np.random.default_rng(4).uniform(size=(3, 5)).astype(np.float32)
    values = run(g, {"x": x}, collect=True)
    assert values["x"].shape == (3, 5) and values["e"].shape == (3, 4, 5)
    assert values["s1"].shape == (3, 4, 7) and values["out"].shape == (3, 3)
    np.testing.assert_array_equal(values["out"], run(g, {"x": x})["out"])


def test_batching_does_not_change_an_encoded_graph():
    g, _, _ = encoded_net("poisson", timesteps=10)
    x = np.random.default_rng(5).uniform(size=(11, 5)).astype(np.float32)
    np.testing.assert_array_equal(run_batched(g, x, batch_size=3)["out"], run(g, {"x": x})["out"])


def test_static_data_is_required():
    g, _, _ = encoded_net()
    with pytest.raises(DataError, match=r"expects \[N, 5\]"):
        run(g, {"x": np.zeros((2, 8, 5), np.float32)})


def test_nodes_after_the_readout_run_once_on_its_result():
    g0, _, _ = encoded_net(timesteps=3)
    nodes = [*g0.nodes, Node("sm", "Softmax", ["out"], ["p"], {"axis": 1}, {})]
    g = graph_from(nodes, {"x": (1, 5)}, ["p"])
    x = np.random.default_rng(6).uniform(size=(4, 5)).astype(np.float32)
    logits = run(g0, {"x": x})["out"].astype(np.float64)
    ref = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(run(g, {"x": x})["p"], ref / ref.sum(1, keepdims=True), rtol=1e-5)


@pytest.mark.parametrize("attrs, message", [
    ({"encoding": "spiky", "timesteps": 4}, "attribute 'encoding' = 'spiky': must be one of"),
    ({"encoding": "rate", "timesteps": 0}, "attribute 'timesteps' = 0: must be an integer from 1"),
    ({"encoding": "rate"}, "attribute 'timesteps' is missing"),
    ({"encoding": "poisson", "timesteps": 2, "seed": -1}, "attribute 'seed' = -1"),
])
def test_bad_encoder_settings_are_refused_naming_the_node(attrs, message):
    with pytest.raises(GraphError, match=message) as e:
        graph_from([Node("enc", "Encoder", ["x"], ["e"], attrs, {})], {"x": (1, 3)}, ["e"])
    assert "node 'enc' (Encoder)" in str(e.value)


def test_misplaced_time_nodes_are_refused_naming_the_node():
    x = np.zeros((2, 4), np.float32)
    lif = Node("lif", "LIF", ["x"], ["s"], {"dt": 1.0},
               {"tau": np.float32(2), "r": np.float32(1), "v_leak": np.float32(0), "v_threshold": np.float32(1)})
    cases = [
        ([lif, encoder("direct", 3).__class__("enc", "Encoder", ["s"], ["e"], {"timesteps": 3}, {})],
         "node 'lif' (LIF): a stateful op before any Encoder"),
        ([Node("ro", "Readout", ["x"], ["o"], {}, {}), encoder("direct", 2)], "node 'ro' (Readout): a Readout's input"),
        ([encoder("direct", 2), Node("e2", "Encoder", ["e"], ["f"], {"timesteps": 2}, {})],
         "node 'e2' (Encoder): an Encoder's input must be static"),
        ([encoder("direct", 2), Node("e2", "Encoder", ["x"], ["f"], {"timesteps": 3}, {})],
         "Encoders disagree on the number of time steps"),
    ]
    for nodes, message in cases:
        g = graph_from(nodes, {"x": (1, 4)}, [nodes[-1].outputs[0]])
        with pytest.raises(GraphError, match=message.replace("(", r"\(").replace(")", r"\)")):
            run(g, {"x": x})


def test_a_target_that_takes_spikes_only_refuses_a_direct_encoder(tmp_path):
    """``encodings`` at registration: an encoded graph whose Encoder is ``direct`` does not fit
    a target that takes ``rate`` and ``poisson`` only; nothing is written."""
    import hwmap
    from hwmap.errors import DoesNotFitError
    from hwmap.flow import compile_model
    from hwmap.target import Target, TargetConfig
    from hwmap.testing import registered

    class SpikesOnly:
        @hwmap.hookimpl
        def hwmap_register_targets(self, register):
            register(kind="spikes_only", config=TargetConfig, description="takes spikes", encodings=("rate", "poisson"))

    with registered(SpikesOnly()) as reg:
        spec = reg.spec("spikes_only")
        assert spec.encodings == ("rate", "poisson")
        target = Target(spec, TargetConfig(), "spikes_only:test", "test")
        with pytest.raises(DoesNotFitError, match="encoding at node 'encode_input': 'spikes_only:test' takes rate, "
                                                  "poisson encoded input, not 'direct'"):
            compile_model("zoo:digits_snn", target, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_encodings_at_registration_are_checked():
    import hwmap
    from hwmap.errors import PluginError
    from hwmap.target import TargetConfig
    from hwmap.testing import registered

    class Bad:
        @hwmap.hookimpl
        def hwmap_register_targets(self, register):
            register(kind="bad", config=TargetConfig, description="x", encodings=("morse",))

    with pytest.raises(PluginError, match="encodings for kind 'bad' must be a sequence of direct, rate, poisson"):
        with registered(Bad()):
            pass


def test_the_profile_counts_every_step_of_an_encoded_graph():
    """MACs per inference of zoo:digits_snn: its two layers run 8 times (8 · (64·128 + 128·10));
    the encoder counts its steps in data volume; the readout's result is once per inference."""
    import hwmap
    from hwmap.profile import profile
    from hwmap.profile_table import summary

    prof = profile(hwmap.load_model("zoo:digits_snn"))
    rows = {r.name: r for r in prof.rows}
    assert (rows["fc1"].steps, rows["fc1"].macs, rows["fc2"].macs) == (8, 8 * 64 * 128, 8 * 128 * 10)
    assert rows["encode_input"].data_volume == 8 * 64 and rows["readout_output"].steps == 1
    assert rows["readout_output"].data_volume == 10 and prof.totals.macs == 8 * (64 * 128 + 128 * 10)
    assert "8 time steps per inference" in summary(prof)
