"""The reference executor: whole graphs against onnxruntime, batch rebasing, input checks,
``collect``, stateful (NIR) graphs over time, ``run_batched``, MobileNet V1 speed and MACs,
and quantized runs (annotations applied) against onnxruntime on a QDQ model, per tensor and
per axis, through fused nodes and over time."""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from hwmap.errors import DataError, GraphError, UnsupportedOpError
from hwmap.execute import is_stateful, run, run_batched
from hwmap.frontends.onnx import graph_from_onnx
from hwmap.graph import Graph, Node, QuantAnnotation, Tensor
from hwmap.ops import get_op
from hwmap.passes.fusion import FuseComputeWithPostOps
from hwmap.source import ParseOptions

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
    """Stem 3->32 stride 2, 13 depthwise-separable blocks, GAP, FC 1024->1000 (Howard et al.,
    "MobileNets", 2017, Table 1)."""
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


def test_mobilenet_v1_macs_and_a_full_size_run():
    g = mobilenet_v1(224)
    macs = sum(get_op(n.op).macs(n, [g.tensors[t].shape for t in n.inputs], [g.tensors[t].shape for t in n.outputs])
               for n in g.nodes if get_op(n.op).macs)
    assert macs == 568_740_352  # Howard et al. 2017, Table 8: 569 M mult-adds (conv + fc)
    weights = sum(n.params["W"].size for n in g.nodes if n.op == "Conv") + g.node("fc").params["B"].size
    assert weights == 4_209_088  # Howard et al. 2017, Table 8: 4.2 M parameters (conv + fc weights)
    x = rand(1, 3, 224, 224)
    y = run(g, {"x": x})["y"]  # its speed is measured in bench/, never by a timed test
    assert y.shape == (1, 1000) and np.isfinite(y).all()


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


# -- quantized runs -------------------------------------------------------------------------------
def half_step_margin(values: np.ndarray, scale: np.ndarray | float) -> float:
    """How far (in quantization steps) the closest of ``values / scale`` is from a rounding
    boundary: a comparison with exact equality after rounding is sound when this is not tiny."""
    v = np.asarray(values, dtype=np.float64) / np.asarray(scale, dtype=np.float64)
    return float(np.min(np.abs(np.abs(v - np.floor(v)) - 0.5)))


QX = (0.02, 128)  # input: uint8, per tensor
QW = np.array([0.004, 0.006, 0.008, 0.01], np.float32)  # conv weights: int8, per output channel
QC = np.array([0.05, 0.04, 0.06, 0.03], np.float32)  # conv output: int8, per channel (axis 1)
QM = np.array([0.02, 0.03, 0.025, 0.015], np.float32)  # Mul constant: int8, per channel
QY = 0.047  # output: int8, per tensor


def qdq_model() -> onnx.ModelProto:
    """x -QDQ-> Conv(W, B dequantized) -QDQ per channel-> Mul(dequantized constant) -> Relu -QDQ-> y.

    Batch 3; the ONNX frontend folds every quantizer into an annotation."""
    rng = np.random.default_rng(11)
    consts = {
        "x_s": np.float32(QX[0]), "x_z": np.uint8(QX[1]),
        "wq": rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8), "w_s": QW, "w_z": np.zeros(4, np.int8),
        "bq": rng.integers(-300, 300, 4).astype(np.int32), "b_s": (QW * QX[0]).astype(np.float32),
        "c_s": QC, "c_z": np.zeros(4, np.int8),
        "mq": rng.integers(-127, 128, (4, 1, 1)).astype(np.int8), "m_s": QM, "m_z": np.zeros(4, np.int8),
        "y_s": np.float32(QY), "y_z": np.int8(0),
    }
    def qdq(x: str, out: str, q: str, **axis: int) -> list[onnx.NodeProto]:
        """QuantizeLinear then DequantizeLinear of activation ``x`` with ``q``'s scale and zero point."""
        return [helper.make_node("QuantizeLinear", [x, f"{q}_s", f"{q}_z"], [f"{q}q"], name=f"q_{q}", **axis),
                helper.make_node("DequantizeLinear", [f"{q}q", f"{q}_s", f"{q}_z"], [out], name=f"dq_{q}", **axis)]

    nodes = [
        *qdq("x", "xdq", "x"),
        helper.make_node("DequantizeLinear", ["wq", "w_s", "w_z"], ["w"], name="dq_w", axis=0),
        helper.make_node("DequantizeLinear", ["bq", "b_s"], ["b"], name="dq_b", axis=0),
        helper.make_node("Conv", ["xdq", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        *qdq("c", "cdq", "c", axis=1),
        helper.make_node("DequantizeLinear", ["mq", "m_s", "m_z"], ["m"], name="dq_m", axis=0),
        helper.make_node("Mul", ["cdq", "m"], ["mm"], name="mul"),
        helper.make_node("Relu", ["mm"], ["r"], name="relu"),
        *qdq("r", "y", "y"),
    ]
    g = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4, 5, 5])],
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in consts.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def qdq_onnxruntime(m: onnx.ModelProto, x: np.ndarray, *extra: str) -> dict[str, np.ndarray]:
    """The model's output (and the named intermediates) in onnxruntime, without graph
    optimizations, so QDQ pairs run as written instead of as fused integer kernels."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    for name in extra:
        m.graph.output.append(helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = ["y", *extra]
    return dict(zip(names, sess.run(names, {"x": x})))


def qdq_graph() -> Graph:
    return graph_from_onnx(qdq_model(), name="qdq", options=ParseOptions())


QDQ_X = np.random.default_rng(12).uniform(-2.4, 2.6, (3, 2, 5, 5)).astype(np.float32)


def test_qdq_model_parses_into_annotations_per_tensor_and_per_axis():
    g = qdq_graph()
    assert [n.op for n in g.nodes] == ["Conv", "Mul", "Relu"]
    assert g.tensors["x"].quant.axis is None and g.tensors["y"].quant.axis is None
    assert g.tensors["c"].quant.axis == 1 and g.tensors["c"].quant.scale.shape == (4,)
    assert g.node("conv").param_quant["W"].axis == 0 and g.node("mul").param_quant["B"].axis == 0


def test_quantized_run_matches_onnxruntime_on_a_qdq_model():
    m, g = qdq_model(), qdq_graph()
    ref = qdq_onnxruntime(m, QDQ_X, "c", "r")
    # every value quantized lies clear of a rounding boundary, so both must round alike
    assert half_step_margin(QDQ_X, QX[0]) > 1e-4
    assert half_step_margin(ref["c"], QC[None, :, None, None]) > 1e-4
    assert half_step_margin(ref["r"], QY) > 1e-4
    y = run(g, {"x": QDQ_X}, quantized=True)["y"]
    assert y.dtype == np.float32 and y.shape == (3, 4, 5, 5)
    np.testing.assert_array_equal(y, ref["y"])
    # not a coincidence: the float run (annotations ignored) is off the output grid
    plain = run(g, {"x": QDQ_X})["y"]
    assert np.mean(plain != ref["y"]) > 0.4
    assert np.max(np.abs(plain - ref["y"])) > QY / 2


def test_quantized_false_ignores_annotations():
    g = qdq_graph()
    stripped = g.copy()
    for t in stripped.tensors.values():
        t.quant = None
    for n in stripped.nodes:
        n.param_quant = {}
    plain = run(g, {"x": QDQ_X})
    assert plain["y"].tobytes() == run(g, {"x": QDQ_X}, quantized=False)["y"].tobytes()
    assert plain["y"].tobytes() == run(stripped, {"x": QDQ_X})["y"].tobytes()
    # and a graph without annotations runs the same either way
    assert run(stripped, {"x": QDQ_X}, quantized=True)["y"].tobytes() == plain["y"].tobytes()
    x = rand(2, 2, 6, 6)
    assert run(small_cnn(), {"x": x}, quantized=True)["y"].tobytes() == run(small_cnn(), {"x": x})["y"].tobytes()


def test_quantized_params_and_tensors_per_axis_and_per_tensor():
    """Against an independent numpy restatement of ``real = scale * (clip(round(x / scale) +
    zp) - zp)``: a 4-bit narrow per-row weight, an 8-bit asymmetric input, a 6-bit per-column
    output, and an unannotated bias left alone."""
    rng = np.random.default_rng(5)
    w, c = rng.normal(0, 0.5, (5, 6)).astype(np.float32), rng.normal(0, 0.1, 5).astype(np.float32)
    ws = np.abs(w).max(axis=1) / 7
    sy = np.array([0.05, 0.1, 0.08, 0.06, 0.07])
    g = graph_from([Node("fc", "Gemm", ["x"], ["y"], {"transB": 1}, {"B": w, "C": c},
                         {"B": QuantAnnotation(ws, np.zeros(5), 4, True, axis=0, narrow=True)})], {"x": (1, 6)}, ["y"])
    g.tensors["x"].quant = QuantAnnotation(0.03, 100, 8, False)
    g.tensors["y"].quant = QuantAnnotation(sy, np.zeros(5), 6, True, axis=1)
    x = rng.uniform(-3, 5, (7, 6)).astype(np.float32)  # partly beyond the input's range [-3.0, 4.65]
    xq = (np.clip(np.round(x / 0.03) + 100, 0, 255) - 100) * 0.03
    wq = np.clip(np.round(w / ws[:, None]), -7, 7) * ws[:, None]
    pre = xq.astype(np.float32) @ wq.astype(np.float32).T + c
    assert half_step_margin(x, 0.03) > 1e-3 and half_step_margin(pre, sy) > 1e-4
    want = np.clip(np.round(pre / sy), -32, 31) * sy
    assert np.any(np.abs(x) > 4.65) and np.any(np.abs(np.round(pre / sy)) > 31)  # clipping is exercised
    y = run(g, {"x": x}, quantized=True)["y"]
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=0)
    assert g.node("fc").params["B"].tobytes() == w.tobytes()  # the graph itself is left alone


def test_quantized_run_through_a_fused_node():
    """Conv → Mul → Relu fused into one FusedConv: the conv result's per-axis annotation (an
    intermediate inside the fused node) and a post-op parameter's annotation still apply."""
    g = qdq_graph()
    g.node("mul").param_quant["B"] = QuantAnnotation(0.5, 0, 3, True)  # coarser than the model's, off its grid
    fused, changed = FuseComputeWithPostOps().apply(g)
    assert changed and [n.op for n in fused.nodes] == ["FusedConv"]
    assert [s.name for s in fused.nodes[0].fused] == ["conv", "mul", "relu"] and "c" in fused.tensors
    want = run(g, {"x": QDQ_X}, quantized=True)["y"]
    got = run(fused, {"x": QDQ_X}, quantized=True, collect=True)
    assert got["y"].tobytes() == want.tobytes()
    assert set(got) == set(run(fused, {"x": QDQ_X}, collect=True)) == {"x", "y"}  # intermediates stay private
    # each annotation inside the fused node changes the result, so each is applied
    no_c = fused.copy()
    no_c.tensors["c"].quant = None
    no_m = fused.copy()
    no_m.nodes[0].fused[1].param_quant = {}
    for other in (no_c, no_m):
        assert run(other, {"x": QDQ_X}, quantized=True)["y"].tobytes() != want.tobytes()
    # the float run of the fused node is the float run of the original
    np.testing.assert_allclose(run(fused, {"x": QDQ_X})["y"], run(g, {"x": QDQ_X})["y"], rtol=1e-6, atol=1e-6)


def test_quantized_run_of_a_stateful_graph_quantizes_every_step():
    g, _ = snn()
    g.tensors["x"].quant = QuantAnnotation(0.25, 0, 2, False)  # 2-bit input: 0, .25, .5, .75
    # its own generator: the last check needs an input whose quantization changes a spike,
    # which a draw from the module's shared generator (order-dependent) need not give
    x = np.random.default_rng(0).uniform(0, 1, size=(8, 20, 3)).astype(np.float32)
    xq = np.clip(np.round(x / 0.25), 0, 3) * 0.25
    got = run(g, {"x": x}, quantized=True)
    assert got["y"].tobytes() == run(g, {"x": xq.astype(np.float32)})["y"].tobytes()
    assert got["y"].tobytes() != run(g, {"x": x})["y"].tobytes()
