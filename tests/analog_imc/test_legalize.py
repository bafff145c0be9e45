"""analog_imc legalization: fusion (chapter Fig. 3.11), the design-rule check (every offending
node named), quantization (per-channel weights, calibrated activations, QDQ kept)."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from hwmap import Graph, Node, ParseOptions, QuantAnnotation, Tensor, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.frontends.onnx import graph_from_onnx
from hwmap_analog_imc.calibrate import short_scale
from hwmap_analog_imc.layers import crossbar_layers
from hwmap_analog_imc.legalize import META_KEY, METHOD, RULES, SYNTHETIC_SAMPLES, legalize, synthetic_samples


def target(preset: str = "chapter-fig3.13", *sets: str, calibration: np.ndarray | None = None):  # noqa: ANN201
    t = load_target(f"analog_imc:{preset}", list(sets))
    t.calibration = calibration
    return t


def gemm_graph(tail_ops: list[str]) -> Graph:
    """input (1, 4) → Gemm (4→3, constant weights) → each of ``tail_ops`` in turn."""
    rng = np.random.default_rng(0)
    nodes = [Node("fc", "Gemm", ["x"], ["h0"], {"transB": 0}, {"B": rng.standard_normal((4, 3)).astype(np.float32)})]
    tensors = {"x": Tensor("x", (1, 4)), "h0": Tensor("h0", (1, 3))}
    for i, op in enumerate(tail_ops):
        nodes.append(Node(f"{op.lower()}{i}", op, [f"h{i}"], [f"h{i + 1}"]))
        tensors[f"h{i + 1}"] = Tensor(f"h{i + 1}", (1, 3))
    return Graph("hand", ["x"], [f"h{len(tail_ops)}"], nodes, tensors).validate()


def snapshot(g: Graph) -> tuple[str, dict[str, bytes]]:
    import json

    return json.dumps(g.to_json(), sort_keys=True), {k: v.tobytes() for k, v in g.arrays().items()}


# -- fusion -------------------------------------------------------------------------------------------
def test_conv_relu_fused_into_one_node_residual_add_kept() -> None:
    leg = legalize(load_model("zoo:chapter_cnn"), target())
    assert leg.fits and [n.op for n in leg.graph.nodes] == ["FusedConv", "Conv"]
    fused = leg.graph.nodes[0]
    assert [(f.name, f.op) for f in fused.fused] == [("conv1", "Conv"), ("relu1", "Relu")]
    # BN folded, residual Adds stay digital nodes with two dynamic operands
    res = legalize(load_model("zoo:resnet_small"), target("default"))
    ops = [n.op for n in res.graph.nodes]
    assert "BatchNormalization" not in ops and ops.count("Add") == 3
    assert all(len(n.inputs) == 2 for n in res.graph.nodes if n.op == "Add")
    assert not any(f.op == "Add" for n in res.graph.nodes for f in n.fused)


def test_legalize_does_not_mutate_its_input() -> None:
    g = load_model("zoo:digits_cnn")
    before = snapshot(g)
    legalize(g, target("default", calibration=np.random.default_rng(1).random((5, 1, 8, 8), dtype=np.float32)))
    assert snapshot(g) == before


# -- design rules -------------------------------------------------------------------------------------
def test_every_unsupported_node_is_named() -> None:
    g = gemm_graph(["Exp", "Relu", "Erf", "Exp"])
    leg = legalize(g, target())
    assert not leg.fits
    bad = [(d.rule, d.node) for d in leg.violations]
    assert bad == [("unsupported_op", "exp0"), ("unsupported_op", "erf2"), ("unsupported_op", "exp3")]
    assert all("Exp" in d.message or "Erf" in d.message for d in leg.violations)
    assert set(d.rule for d in leg.violations) <= set(RULES)


def test_dynamic_matmul_is_a_violation() -> None:
    g = Graph("mm", ["a", "b"], ["y"], [Node("mm", "MatMul", ["a", "b"], ["y"])],
              {"a": Tensor("a", (1, 4, 8)), "b": Tensor("b", (1, 8, 3)), "y": Tensor("y", (1, 4, 3))}).validate()
    leg = legalize(g, target())
    assert [(d.rule, d.node) for d in leg.violations] == [("dynamic_matmul", "mm")]


def test_filter_wider_than_crossbar_named_per_layer() -> None:
    # 16-bit weights in 1-bit cells, differential: 2 × 15 = 30 columns > a 16-column crossbar
    t = target("chapter-fig3.13", "hardware.crossbar_cols=16", "hardware.weight_bits=16", "hardware.bits_per_cell=1",
               'hardware.weight_encoding="differential"', "hardware.columns_per_adc=4")
    leg = legalize(load_model("zoo:chapter_cnn"), t)
    assert [(d.rule, d.node) for d in leg.violations] == [("filter_wider_than_crossbar", "conv1_fused"),
                                                          ("filter_wider_than_crossbar", "conv2")]
    assert "30" in leg.violations[0].message and "16" in leg.violations[0].message


def test_buffer_overflow_checks_one_vector() -> None:
    # Conv2's input vector is 144 rows × 8 bits = 144 bytes; Conv1's 16 bytes
    leg = legalize(load_model("zoo:chapter_cnn"), target("chapter-fig3.13", "hardware.input_buffer_bytes=100"))
    assert [(d.rule, d.node) for d in leg.violations] == [("buffer_overflow", "conv2")]
    assert "144 bytes" in leg.violations[0].message
    assert legalize(load_model("zoo:chapter_cnn"), target("chapter-fig3.13", "hardware.input_buffer_bytes=144")).fits
    # output: Conv1 writes 16 filters × 8 bits = 16 bytes per read
    leg = legalize(load_model("zoo:chapter_cnn"), target("chapter-fig3.13", "hardware.output_buffer_bytes=8"))
    assert [(d.rule, d.node) for d in leg.violations] == [("buffer_overflow", "conv1_fused")]


def test_grouped_conv_is_a_crossbar_layer_per_group() -> None:
    rng = np.random.default_rng(2)
    w = rng.standard_normal((8, 1, 3, 3)).astype(np.float32)  # depthwise over 8 channels
    conv = Node("dw", "Conv", ["x"], ["y"], {"group": 8, "kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                              "strides": [1, 1], "dilations": [1, 1]}, {"W": w})
    g = Graph("dw", ["x"], ["y"], [conv], {"x": Tensor("x", (1, 8, 6, 6)), "y": Tensor("y", (1, 8, 6, 6))}).validate()
    leg = legalize(g, target())
    assert leg.fits
    (layer,) = crossbar_layers(leg.graph, 1)
    assert (layer.groups, layer.rows, layer.filters, layer.positions) == (8, 9, 1, 36)


# -- quantization --------------------------------------------------------------------------------------
def test_weights_get_per_channel_symmetric_annotations() -> None:
    g = load_model("zoo:chapter_cnn")
    leg = legalize(g, target())
    for node in leg.graph.nodes:
        q = node.param_quant["W"]
        w = node.params["W"]
        assert (q.bits, q.signed, q.axis, q.narrow) == (8, True, 0, True)
        # max|W_c| / 127 rounded up to a 12-bit mantissa (the periphery's fixed-point multiplier)
        peak = np.abs(w).reshape(w.shape[0], -1).max(axis=1) / 127
        assert np.all(q.scale >= peak) and np.all(q.scale <= peak * (1 + 2.0**-11))
        mantissa = np.ldexp(np.frexp(q.scale)[0], 12)
        assert np.array_equal(mantissa, np.round(mantissa))
        assert np.all(np.abs(q.quantize(w)) <= 127)
        # params keep the float weights: the emitter quantizes with the annotation
        np.testing.assert_array_equal(w, g.node(node.fused[0].name if node.fused else node.name).params["W"])


def _mse_on_grid(x: np.ndarray, scale: float, signed: bool) -> float:
    """Mean squared error of ``x`` on the 8-bit grid of ``scale`` (hwmap's annotation)."""
    q = QuantAnnotation(np.asarray(scale), np.asarray(0.0), 8, signed=signed, narrow=signed)
    return float(np.mean((q.fake_quantize(x.astype(np.float64)) - x) ** 2))


def test_calibration_on_data_unsigned_after_relu_signed_otherwise() -> None:
    """Activation scales by minimum-MSE clipping: of the clipping values max·2^(−k/16),
    k = 0..63, the one whose 8-bit grid holds the data with the least squared error (brute
    force here on every value: chapter_cnn's tensors are smaller than the values kept)."""
    g = load_model("zoo:chapter_cnn")
    x = (np.random.default_rng(3).standard_normal((20, 1, 13, 64)) * 2).astype(np.float32)
    leg = legalize(g, target(calibration=x))
    assert leg.notes == []
    assert leg.graph.meta[META_KEY]["calibration"] == {"source": "data", "samples": 20, "method": METHOD,
                                                      "tensors": 2, "bias_corrected": 2}
    fused, conv2 = leg.graph.nodes
    relu_out = run(g, {"input": x}, collect=True)[conv2.inputs[0]]
    for tensor, data, signed in ((fused.inputs[0], x, True), (conv2.inputs[0], relu_out, False)):
        q = leg.graph.tensor(tensor).quant
        assert (q.signed, q.narrow, q.bits, float(q.zero_point)) == (signed, signed, 8, 0.0)
        qmax = 127 if signed else 255
        top = float(np.abs(data).max())
        errors = [_mse_on_grid(data, top * 2.0 ** (-k / 16) / qmax, signed) for k in range(64)]
        best = int(np.argmin(errors))
        # the chosen clipping value's scale, rounded up to the periphery's 12-bit mantissa
        assert float(q.scale) == float(short_scale(np.asarray(top * 2.0 ** (-best / 16) / qmax)))
        assert best < 63
        if signed:  # Gaussian inputs: clipping their few outliers pays
            assert best > 0 and errors[best] < errors[0]


def test_tensor_only_relus_read_is_held_unsigned() -> None:
    """resnet_small's residual Adds: their outputs are read by ReLUs only, so they are
    calibrated on max(x, 0) and held unsigned (the adder saturates at 0); the Adds' operands
    (a conv + BN without ReLU) stay signed."""
    g = load_model("zoo:resnet_small", ParseOptions(input_shape=(1, 3, 16, 16)))
    x = np.random.default_rng(0).random((16, 3, 16, 16), dtype=np.float32)
    leg = legalize(g, target("default", calibration=x))
    adds = [n for n in leg.graph.nodes if n.op == "Add"]
    assert len(adds) == 3
    env = run(g, {"input": x}, collect=True)
    for add in adds:
        assert env[add.outputs[0]].min() < 0  # the sums do go negative
        assert not leg.graph.tensor(add.outputs[0]).quant.signed
        assert all(leg.graph.tensor(t).quant.signed for t in add.inputs if env[t].min() < 0)


def _conv_onnx(w: np.ndarray, b: np.ndarray) -> bytes:
    """A 3×3 Conv (pad 1) with weights ``w`` and bias ``b``, as ONNX bytes."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["y"], name="conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 6, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 5, 6, 6])],
                              [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_bias_correction_cancels_the_mean_shift_of_weight_rounding() -> None:
    """onnxruntime runs the float Conv and the Conv with the weights rounded as annotated and
    the bias legalization gives it: on the calibration data (inputs of mean 1, as after a
    ReLU) the mean per output channel agrees to float precision, where the original bias
    leaves the rounding's shift; on other samples of the same distribution the shift shrinks
    too. 4-bit weights make the rounding large."""
    import onnxruntime as ort

    rng = np.random.default_rng(5)
    w = rng.standard_normal((5, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(5).astype(np.float32)
    g = graph_from_onnx(_conv_onnx(w, b), name="conv", options=ParseOptions(input_shape=(1, 4, 6, 6)))
    x = (rng.random((64, 4, 6, 6)) * 2).astype(np.float32)
    leg = legalize(g, target("default", "hardware.weight_bits=4", calibration=x[:32]))
    assert leg.graph.meta[META_KEY]["calibration"]["bias_corrected"] == 1
    (node,) = leg.graph.nodes
    w_hat = node.param_quant["W"].fake_quantize(node.params["W"])
    assert not np.array_equal(node.params["B"], b)

    def channel_means(weights: np.ndarray, bias: np.ndarray, data: np.ndarray) -> np.ndarray:
        sess = ort.InferenceSession(_conv_onnx(weights, bias), providers=["CPUExecutionProvider"])
        return sess.run(None, {"x": data})[0].astype(np.float64).mean(axis=(0, 2, 3))

    for part, tol in ((x[:32], 1e-5), (x[32:], None)):
        want = channel_means(w, b, part)
        before = np.abs(channel_means(w_hat, b, part) - want)
        after = np.abs(channel_means(w_hat, node.params["B"], part) - want)
        if tol is not None:
            assert np.all(after <= tol * (1 + np.abs(want))) and before.max() > 100 * tol
        else:
            assert after.max() < 0.2 * before.max()


def test_calibration_without_data_is_synthetic_and_says_so() -> None:
    leg = legalize(load_model("zoo:chapter_cnn"), target())
    assert any(n.startswith("calibrated on synthetic U(0,1) inputs: pass --data") for n in leg.notes)
    calib = leg.graph.meta[META_KEY]["calibration"]
    assert calib["source"] == "synthetic" and calib["samples"] == SYNTHETIC_SAMPLES
    q = leg.graph.tensor("input").quant
    assert not q.signed and q.scale <= (1 + 2.0**-11) / 255  # U(0,1): max just below 1, 12-bit mantissa
    # deterministic: the same scales twice
    again = legalize(load_model("zoo:chapter_cnn"), target())
    assert snapshot(again.graph) == snapshot(leg.graph)
    # large models get fewer synthetic samples, never none
    assert synthetic_samples(600_000_000) == 1 and synthetic_samples(1000) == SYNTHETIC_SAMPLES


def _qdq_conv_graph() -> Graph:
    rng = np.random.default_rng(2)
    wq = rng.integers(-127, 128, (4, 2, 3, 3)).astype(np.int8)
    consts = {"x_s": np.array(0.05, np.float32), "x_z": np.array(128, np.uint8), "wq": wq,
              "w_s": np.array([0.002, 0.004, 0.006, 0.008], np.float32), "w_z": np.zeros(4, np.int8)}
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"], name="q_in"),
        helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xdq"], name="dq_in"),
        helper.make_node("DequantizeLinear", ["wq", "w_s", "w_z"], ["w"], name="dq_w", axis=0),
        helper.make_node("Conv", ["xdq", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["y"], name="relu"),
    ]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])],
                              initializer=[numpy_helper.from_array(v, k) for k, v in consts.items()])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return graph_from_onnx(m, name="qdq", options=ParseOptions())


def test_qdq_model_keeps_its_quantization() -> None:
    g = _qdq_conv_graph()
    w_before = g.nodes[0].param_quant["W"]
    x_before = g.tensor("x").quant
    assert x_before is not None and w_before.bits == 8
    leg = legalize(g, target("default"))
    assert leg.fits and leg.notes == []
    (fused,) = leg.graph.nodes
    assert fused.op == "FusedConv"
    assert fused.param_quant["W"] == w_before
    assert leg.graph.tensor("x").quant == x_before == QuantAnnotation(np.float32(0.05), 128, 8, False)
    assert leg.graph.meta[META_KEY]["calibration"]["source"] == "model"


def test_model_quantization_wider_than_hardware_is_a_violation() -> None:
    leg = legalize(_qdq_conv_graph(), target("default", "hardware.weight_bits=6", "hardware.input_bits=4"))
    assert sorted(d.rule for d in leg.violations) == ["quantization_exceeds_hardware"] * 2
