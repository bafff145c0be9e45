"""The reference executor: whole graphs against onnxruntime, batch rebasing, input checks,
``collect``, stateful (NIR) graphs over time, ``run_batched``, MobileNet V1 speed and MACs."""

from __future__ import annotations

import math
import time

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwmap.errors import DataError, GraphError, UnsupportedOpError
from hwmap.execute import is_stateful, run, run_batched
from hwmap.graph import Graph, Node, Tensor
from hwmap.ops import get_op

RNG = np.random.default_rng(7)


def rand(*shape: int, lo: float = -1.0, hi: float = 1.0) -> np.ndarray:
    return RNG.uniform(lo, hi, size=shape).astype(np.float32)


def graph_from(nodes: list[Node], inputs: dict[str, tuple[int, ...]], outputs: list[str], name: str = "g") -> Graph:
    """A validated graph whose tensor shapes come from the ops' own inference."""
    tensors = {k: Tensor(k, s) for k, s in inputs.items()}
    for n in nodes:
        shapes = get_op(n.op).infer(n, [tensors[t].shape for t in n.inputs])
        for t, s in zip(n.outputs, shapes):
            tensors[t] = Tensor(t, s)
    return Graph(name, list(inputs), outputs, nodes, tensors).validate()


W1, B1, W2, B2 = rand(4, 2, 3, 3), rand(4), rand(5, 36), rand(5)


def small_cnn() -> Graph:
    """Conv -> Relu -> MaxPool -> Reshape([1, -1], as parsed at batch 1) -> Gemm."""
    return graph_from([
        Node("conv", "Conv", ["x"], ["c"], {"pads": [1, 1, 1, 1]}, {"W": W1, "B": B1}),
        Node("relu", "Relu", ["c"], ["r"]),
        Node("pool", "MaxPool", ["r"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
        Node("flat", "Reshape", ["p"], ["f"], {}, {"shape": np.array([1, -1], np.int64)}),
        Node("fc", "Gemm", ["f"], ["y"], {"transB": 1}, {"B": W2, "C": B2}),
    ], {"x": (1, 2, 6, 6)}, ["y"])


def small_cnn_onnxruntime(x: np.ndarray) -> np.ndarray:
    """The same network in onnxruntime with a symbolic batch (Reshape [0, -1])."""
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "s"], ["f"]),
             helper.make_node("Gemm", ["f", "w2", "b2"], ["y"], transB=1)]
    inits = [numpy_helper.from_array(a, k) for k, a in
             {"w1": W1, "b1": B1, "w2": W2, "b2": B2, "s": np.array([0, -1], np.int64)}.items()]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)], ir_version=8)
    return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("n", [1, 3])
def test_run_matches_onnxruntime_at_any_batch(n):
    g = small_cnn()
    x = rand(n, 2, 6, 6)
    y = run(g, {"x": x})
    assert list(y) == ["y"] and y["y"].shape == (n, 5) and y["y"].dtype == np.float32
    np.testing.assert_allclose(y["y"], small_cnn_onnxruntime(x), rtol=1e-5, atol=1e-5)


def test_batch_rebasing_leaves_the_graph_alone():
    g = small_cnn()
    run(g, {"x": rand(4, 2, 6, 6)})
    assert g.node("flat").params["shape"].tolist() == [1, -1]


def test_graph_declared_at_batch_two_runs_at_batch_five():
    nodes = [Node("flat", "Reshape", ["x"], ["f"], {}, {"shape": np.array([2, 12], np.int64)}),
             Node("sm", "Softmax", ["f"], ["y"], {"axis": -1})]
    g = graph_from(nodes, {"x": (2, 3, 4)}, ["y"])
    x = rand(5, 3, 4)
    y = run(g, {"x": x})["y"]
    e = np.exp(x.reshape(5, 12).astype(np.float64))
    np.testing.assert_allclose(y, e / e.sum(1, keepdims=True), rtol=1e-6)


def test_collect_returns_every_tensor():
    g = small_cnn()
    out = run(g, {"x": rand(2, 2, 6, 6)}, collect=True)
    assert set(out) == set(g.tensors)
    for name, t in g.tensors.items():
        assert out[name].shape == (2, *t.shape[1:]), name
    np.testing.assert_array_equal(out["r"], np.maximum(out["c"], 0))


def test_runs_are_deterministic():
    g = small_cnn()
    x = rand(3, 2, 6, 6)
    assert run(g, {"x": x})["y"].tobytes() == run(g, {"x": x.copy()})["y"].tobytes()


def test_bad_inputs_raise_data_errors_naming_input_and_shapes():
    g = small_cnn()
    with pytest.raises(DataError, match=r"missing input 'x'"):
        run(g, {})
    with pytest.raises(DataError, match=r"input 'x' has shape \[2, 3, 6, 6\], the graph expects \[N, 2, 6, 6\]"):
        run(g, {"x": rand(2, 3, 6, 6)})
    with pytest.raises(DataError, match=r"input 'x' has shape \[2, 6, 6\]"):
        run(g, {"x": rand(2, 6, 6)})
    with pytest.raises(DataError, match=r"unknown input 'z'"):
        run(g, {"x": rand(1, 2, 6, 6), "z": rand(1)})
    with pytest.raises(DataError, match="non-numeric"):
        run(g, {"x": np.full((1, 2, 6, 6), "a")})
    two = graph_from([Node("add", "Add", ["a", "b"], ["y"])], {"a": (1, 3), "b": (1, 3)}, ["y"])
    with pytest.raises(DataError, match="all inputs share N"):
        run(two, {"a": rand(2, 3), "b": rand(3, 3)})


def test_unknown_op_and_failing_node():
    g = small_cnn()
    g.nodes[1].op = "Frobnicate"
    with pytest.raises(UnsupportedOpError, match="Frobnicate"):
        run(g, {"x": rand(1, 2, 6, 6)})
    g = small_cnn()
    g.nodes[3].params["shape"] = np.array([1, 7, -1], np.int64)  # not a valid reshape of 36 elements
    with pytest.raises(GraphError, match="node 'flat'.*cannot reshape"):
        run(g, {"x": rand(1, 2, 6, 6)})


def test_run_batched_concatenates():
    g = small_cnn()
    x = rand(11, 2, 6, 6)
    seen = []
    y = run_batched(g, x, batch_size=4, progress=lambda done, total: seen.append((done, total)))
    np.testing.assert_allclose(y["y"], run(g, {"x": x})["y"], rtol=1e-6, atol=1e-6)
    assert seen == [(4, 11), (8, 11), (11, 11)]
    two = graph_from([Node("add", "Add", ["a", "b"], ["y"])], {"a": (1, 3), "b": (1, 3)}, ["y"])
    with pytest.raises(DataError, match="one input"):
        run_batched(two, x)


# -- stateful graphs -----------------------------------------------------------------------
def snn() -> tuple[Graph, dict[str, np.ndarray]]:
    w = rand(4, 3, lo=0, hi=2)
    p = {"tau": np.full(4, 0.02, np.float32), "r": np.ones(4, np.float32), "v_leak": np.zeros(4, np.float32),
         "v_threshold": np.full(4, 0.05, np.float32)}
    g = graph_from([
        Node("fc", "Gemm", ["x"], ["i"], {"transB": 1}, {"B": w}),
        Node("lif", "LIF", ["i"], ["s"], {"dt": 1e-3}, p),
        Node("delay", "Delay", ["s"], ["y"], {"dt": 1e-3}, {"delay": np.full(4, 2e-3, np.float32)}),
    ], {"x": (1, 3)}, ["y"])
    return g, {"w": w, **p}


def test_stateful_graph_runs_over_time():
    g, p = snn()
    assert is_stateful(g) and not is_stateful(small_cnn())
    n, steps = 2, 25
    x = rand(n, steps, 3, lo=0, hi=1)
    out = run(g, {"x": x}, collect=True)
    assert out["y"].shape == (n, steps, 4) and out["i"].shape == (n, steps, 4)
    v, spikes = np.zeros((n, 4)), []
    for t in range(steps):
        i = x[:, t].astype(np.float64) @ p["w"].T.astype(np.float64)
        v = v + 1e-3 / 0.02 * (-v + i)
        z = v > np.float32(0.05)
        v = np.where(z, 0.0, v)
        spikes.append(z)
    spikes = np.stack(spikes, axis=1).astype(np.float32)
    np.testing.assert_array_equal(out["s"], spikes)
    assert 0 < spikes.mean() < 1
    np.testing.assert_array_equal(out["y"][:, 2:], spikes[:, :-2])  # Delay: 2 steps
    np.testing.assert_array_equal(out["y"][:, :2], 0)
    assert run(g, {"x": x})["y"].tobytes() == out["y"].tobytes()


def test_stateful_inputs_need_a_time_axis():
    g, _ = snn()
    with pytest.raises(DataError, match=r"input 'x' has shape \[2, 3\], the graph expects \[N, T, 3\]"):
        run(g, {"x": rand(2, 3)})


# -- MobileNet V1: speed and the published MAC count ---------------------------------------
def mobilenet_v1(res: int) -> Graph:
    """Stem 3->32 stride 2, 13 depthwise-separable blocks, GAP, FC 1024->1000 (REFERENCES.md)."""
    rng = np.random.default_rng(0)
    blocks = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]
    nodes: list[Node] = []
    cur = "x"

    def conv(name: str, cin: int, cout: int, k: int, s: int, g: int) -> None:
        nonlocal cur
        w = (rng.standard_normal((cout, cin // g, k, k)) * math.sqrt(2 / (cin // g * k * k))).astype(np.float32)
        attrs = {"strides": [s, s], "pads": [k // 2] * 4, "group": g, "dilations": [1, 1], "kernel_shape": [k, k]}
        nodes.extend([Node(name, "Conv", [cur], [name], attrs, {"W": w}),
                      Node(name + "_relu", "Relu", [name], [name + "_r"])])
        cur = name + "_r"

    conv("stem", 3, 32, 3, 2, 1)
    c = 32
    for i, (co, s) in enumerate(blocks):
        conv(f"dw{i}", c, c, 3, s, c)
        conv(f"pw{i}", c, co, 1, 1, 1)
        c = co
    nodes += [Node("gap", "GlobalAveragePool", [cur], ["gap"]), Node("flat", "Flatten", ["gap"], ["flat"]),
              Node("fc", "Gemm", ["flat"], ["y"], {"transB": 1},
                   {"B": (rng.standard_normal((1000, c)) * 0.03).astype(np.float32), "C": np.zeros(1000, np.float32)})]
    return graph_from(nodes, {"x": (1, 3, res, res)}, ["y"], "mobilenet_v1")


def test_mobilenet_v1_macs_and_speed():
    g = mobilenet_v1(224)
    macs = sum(get_op(n.op).macs(n, [g.tensors[t].shape for t in n.inputs], [g.tensors[t].shape for t in n.outputs])
               for n in g.nodes if get_op(n.op).macs)
    assert macs == 568_740_352  # REFERENCES.md, conv + fc convention
    weights = sum(n.params["W"].size for n in g.nodes if n.op == "Conv") + g.node("fc").params["B"].size
    assert weights == 4_209_088  # conv + fc weights (REFERENCES.md)
    x = rand(1, 3, 224, 224)
    start = time.perf_counter()
    y = run(g, {"x": x})["y"]
    elapsed = time.perf_counter() - start
    assert y.shape == (1, 1000) and np.isfinite(y).all()
    assert elapsed < 10.0, f"MobileNet V1 at 224x224 took {elapsed:.1f} s"


def test_mobilenet_v1_matches_torch():
    import torch
    import torch.nn.functional as F

    g = mobilenet_v1(32)
    x = rand(2, 3, 32, 32)
    y = run(g, {"x": x})["y"]
    h = torch.from_numpy(x).double()
    for n in g.nodes:
        if n.op == "Conv":
            h = F.conv2d(h, torch.from_numpy(n.params["W"]).double(), stride=n.attrs["strides"],
                         padding=n.attrs["pads"][:2], groups=n.attrs["group"])
        elif n.op == "Relu":
            h = F.relu(h)
        elif n.op == "GlobalAveragePool":
            h = h.mean((2, 3), keepdim=True)
        elif n.op == "Flatten":
            h = h.flatten(1)
        else:
            h = h @ torch.from_numpy(n.params["B"]).double().T
    np.testing.assert_allclose(y, h.numpy(), rtol=1e-5, atol=1e-5)
