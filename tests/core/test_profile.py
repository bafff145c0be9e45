"""The profiler against the published MobileNet V1 figures (Howard et al., "MobileNets",
2017, Table 1; chapter Section 3.5, Figs. 3.16-3.18), measured sparsity against
onnxruntime's own activations, and models with ops hwmap does not know."""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap import ConfigError, DataError, ParseOptions
from hwmap.profile import group_layers, profile


@pytest.fixture(scope="module")
def mobilenet() -> hwmap.Graph:
    return hwmap.load_model("zoo:mobilenet_v1")


@pytest.fixture(scope="module")
def mobilenet_720p() -> hwmap.Graph:
    return hwmap.load_model("zoo:mobilenet_v1", ParseOptions(input_shape=(1, 3, 720, 1280)))


# -- MobileNet V1 at 224×224 -------------------------------------------------------------
def test_mobilenet_counts_match_reference(mobilenet: hwmap.Graph) -> None:
    p = profile(mobilenet)
    assert p.totals.macs == 568_740_352
    assert p.totals.weights == 4_209_088
    assert p.totals.params == 4_231_976
    assert p.settings.macs == "conv_fc"


def test_mobilenet_layers_as_the_chapter_counts_them(mobilenet: hwmap.Graph) -> None:
    p = profile(mobilenet)
    # stem conv + 13 × (depthwise, pointwise) + pool + fc
    assert [r.kind for r in p.rows] == ["conv"] + ["depthwise", "pointwise"] * 13 + ["globalaveragepool", "fc"]
    assert [r.index for r in p.rows] == list(range(1, 30))
    assert p.rows[0].name == "conv0" and p.rows[2].name == "pw1" and p.rows[-1].name == "fc"
    # BN and ReLU join their conv; the flatten joins the pool
    assert p.row("dw1").nodes == ["dw1", "dw1_bn", "dw1_relu"]
    assert p.row("dw1").post_ops == ["BatchNormalization", "Relu"]
    assert p.row("pool").post_ops == ["Flatten"] and p.row("pool").weights == 0
    # chapter: "layers 1, 4, 8 and 24 have a stride of 2" (and 12: block 6's depthwise)
    assert [r.index for r in p.rows if r.stride and max(r.stride) == 2] == [1, 4, 8, 12, 24]
    # the largest activation is the first pointwise output, 64 × 112 × 112
    assert p.totals.peak_data_volume_layer == "pw1"
    assert p.totals.peak_data_volume == p.row("pw1").output_elements == 802_816
    assert p.row("pw1").data_volume_rel == pytest.approx(802_816 / (3 * 224 * 224))
    # per-row counts: depthwise 3×3×C weights, pointwise C_in×C_out, BN γ and β as params
    assert p.row("dw2").weights == 64 * 9 and p.row("dw2").params == 64 * 9 + 2 * 64
    assert p.row("pw13").weights == 1024 * 1024 and p.row("fc").params == 1024 * 1000 + 1000
    assert p.row("pw1").macs == 64 * 32 * 112 * 112 and p.row("dw1").macs == 32 * 9 * 112 * 112
    assert p.row("pw1").input_elements == 32 * 112 * 112


def test_mobilenet_mac_conventions(mobilenet: hwmap.Graph) -> None:
    fv = profile(mobilenet, macs="fvcore")
    assert fv.totals.macs == 578_875_904  # fvcore adds BN at 2/element (and the pool)
    everything = profile(mobilenet, macs="all")
    bn_relu = sum(r.output_elements for r in everything.rows if r.weights and r.kind != "fc")
    # "all": BN as one multiply-add and ReLU as one op per element, the pool's 1024×7×7 inputs
    assert everything.totals.macs == 568_740_352 + 2 * bn_relu + 1024 * 49
    with pytest.raises(ConfigError, match="MAC convention"):
        profile(mobilenet, macs="thop")


def test_mobilenet_720p_bandwidth(mobilenet_720p: hwmap.Graph) -> None:
    p = profile(mobilenet_720p, fps=30, act_bits=4, input_bits=8)
    assert p.totals.macs / 1e9 == pytest.approx(10.46, abs=0.01)
    assert p.totals.macs_per_s / 1e9 == pytest.approx(313.8, abs=0.1)
    assert p.input.bandwidth_bps / 1e6 == pytest.approx(663.6, abs=0.1)
    assert p.input.elements == 3 * 720 * 1280
    assert p.totals.peak_bandwidth_layer == "pw1"
    assert p.row("pw1").bandwidth_bps / 1e6 == pytest.approx(1769.5, abs=0.1)
    assert p.row("pw1").bandwidth_bps == 64 * 360 * 640 * 4 * 30
    # counter-intuitive, as the chapter says: data volume peaks early, parameters late
    n = len(p.rows)
    assert p.rows.index(p.row(p.totals.peak_data_volume_layer)) < n // 4
    assert p.rows.index(p.row(p.totals.peak_params_layer)) > 3 * n // 4
    # every one of layers 1-7 moves more data than any layer from 13 on
    assert min(r.data_volume_rel for r in p.rows[:7]) > max(r.data_volume_rel for r in p.rows[12:])
    assert sum(r.data_volume for r in p.rows[:n // 2]) > 3 * sum(r.data_volume for r in p.rows[n // 2:])
    assert sum(r.params for r in p.rows[:n // 2]) < sum(r.params for r in p.rows[n // 2:]) / 10
    assert p.row("fc").weight_bytes == 1024 * 1000  # 8-bit weights


# -- grouping ----------------------------------------------------------------------------
def test_fused_graph_profiles_like_the_unfused_one(digits_cnn: hwmap.Graph) -> None:
    from hwmap.passes.fusion import FuseComputeWithPostOps

    fused, changed = FuseComputeWithPostOps().apply(digits_cnn)
    assert changed and any(n.op.startswith("Fused") for n in fused.nodes)
    for convention in ("conv_fc", "fvcore", "all"):
        a, b = profile(digits_cnn, macs=convention), profile(fused, macs=convention)
        keys = ("kind", "weights", "params", "macs", "input_elements", "output_elements", "stride")
        assert [[getattr(r, k) for k in keys] for r in a.rows] == [[getattr(r, k) for k in keys] for r in b.rows]


def test_residual_add_joins_a_row_and_every_node_is_in_one_row() -> None:
    g = hwmap.load_model("zoo:resnet_small")
    groups = group_layers(g)
    names = [m.name for grp in groups for m in grp.members]
    assert sorted(names) == sorted(n.name for n in g.nodes if n.op != "Constant")
    p = profile(g)
    assert all(r.op in ("Conv", "Gemm", "GlobalAveragePool") for r in p.rows), [r.op for r in p.rows]
    assert any("Add" in r.post_ops for r in p.rows)


def _branchy_onnx(path: Path) -> Path:
    """input ×2 → conv 3×3 → relu → (maxpool 3×3 | sigmoid) → add: every grouping rule."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, dtype=np.float32), "two")
    nodes = [
        helper.make_node("Mul", ["input", "two"], ["scaled"], name="scale"),
        helper.make_node("Conv", ["scaled", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["m"], name="pool", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["r"], ["s"], name="sig"),
        helper.make_node("Add", ["m", "s"], ["output"], name="add"),
    ]
    graph = helper.make_graph(nodes, "branchy",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6, 6])],
                              initializer=[w, two])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_grouping_rules_and_mac_conventions(tmp_path: Path) -> None:
    g = hwmap.load_model(str(_branchy_onnx(tmp_path / "b.onnx")))
    p = profile(g, macs="all")
    # an element-wise node on the graph input forms its own row; ReLU joins the conv; the
    # ReLU output has two readers, so both branches are rows; the Add joins the later one
    assert [(r.name, r.post_ops) for r in p.rows] == [
        ("scale", []), ("conv", ["Relu"]), ("pool", []), ("sig", ["Add"])]
    e = 4 * 36
    assert [r.macs for r in p.rows] == [2 * 36, e * 2 * 9 + e, e * 9, e + e]
    assert [r.params for r in p.rows] == [1, 72, 0, 0]
    assert [r.macs for r in profile(g).rows] == [0, e * 18, 0, 0]
    assert [r.macs for r in profile(g, macs="fvcore").rows] == [0, e * 18, 0, 0]
    assert p.row("sig").input_elements == e and p.row("conv").stride == [1, 1]


def test_quantization_annotations_set_bit_widths(digits_cnn: hwmap.Graph) -> None:
    """Mixed precision: an annotated tensor or weight keeps its own bit width."""
    from hwmap import QuantAnnotation

    g = digits_cnn.copy()
    base = profile(g, act_bits=8, weight_bits=8)
    conv1 = base.row("conv1")
    g.tensors[conv1.output].quant = QuantAnnotation(np.float64(0.1), np.float64(0), bits=4, signed=False)
    g.node("conv1").param_quant["W"] = QuantAnnotation(np.float64(0.01), np.float64(0), bits=2, signed=True)
    q = profile(g, act_bits=8, weight_bits=8)
    assert q.row("conv1").act_bits == 4 and q.row("conv1").bandwidth_bps == conv1.bandwidth_bps / 2
    assert q.row("conv1").weight_bits == 2 and q.row("conv1").weight_bytes == math.ceil(72 * 2 / 8)
    assert q.row("conv2").bandwidth_bps == base.row("conv2").bandwidth_bps


# -- sparsity against onnxruntime ------------------------------------------------------------
def test_activation_sparsity_matches_onnxruntime(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    ort = pytest.importorskip("onnxruntime")
    import onnx

    from hwmap.zoo import load_onnx

    n = 32
    p = profile(digits_cnn, data=digits_x, max_samples=n)
    assert p.settings.samples == n
    relu_rows = [r for r in p.rows if "Relu" in r.post_ops]
    assert len(relu_rows) == 2
    model = load_onnx("digits_cnn", (n, 1, 8, 8))
    for r in p.rows:  # expose each row's output so onnxruntime reports it
        if r.output not in [o.name for o in model.graph.output]:
            model.graph.output.append(onnx.ValueInfoProto(name=r.output))
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {"input": digits_x[:n]})))
    ref["input"] = digits_x[:n]
    for r in p.rows:
        y = ref[r.output].reshape(n, -1).astype(np.float64)
        assert r.activation_sparsity == pytest.approx(np.mean(y == 0), abs=1e-6), r.name
        # temporal: on 8-bit codes whose step is the tensor's largest magnitude over 255 (127
        # for a signed one); float32 rounding may differ in the last bit between engines
        codes = np.round(y / (np.abs(y).max() / (127 if (y < 0).any() else 255)))
        assert r.temporal_sparsity == pytest.approx(np.mean(codes[1:] == codes[:-1]), abs=0.01), r.name
        x_in = ref[r.input].reshape(n, -1)
        assert r.input_sparsity == pytest.approx(np.mean(x_in == 0), abs=1e-6), r.name
    # MACs whose operand is zero: every fc MAC reads one input element, all equally often
    fc = p.row("fc")
    assert fc.zero_operand_macs == round(fc.macs * np.mean(ref[fc.input] == 0))
    assert p.totals.zero_operand_macs == sum(r.zero_operand_macs for r in p.rows)
    assert 0 < p.totals.zero_operand_macs < p.totals.macs
    for r in relu_rows:
        assert 0.0 < r.activation_sparsity < 1.0
    assert 0.0 < p.totals.activation_sparsity < 1.0


def test_temporal_sparsity_of_a_still_input_is_one(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    still = np.repeat(digits_x[:1], 5, axis=0)
    p = profile(digits_cnn, data=still)
    assert all(r.temporal_sparsity == 1.0 for r in p.rows)
    assert p.totals.temporal_sparsity == 1.0
    moving = profile(digits_cnn, data=digits_x[:5])
    assert all(r.temporal_sparsity < 1.0 for r in moving.rows)


def test_stateful_graph_takes_time_steps_as_frames() -> None:
    """A NIR graph with LIF neurons runs over (N, T, features): every step is a frame."""
    nir = pytest.importorskip("nir")
    from hwmap.frontends.nir import graph_from_nir

    rng = np.random.default_rng(0)
    lif = dict(tau=np.full(8, 0.01), r=np.ones(8), v_leak=np.zeros(8), v_threshold=np.ones(8))
    g = graph_from_nir(nir.NIRGraph(
        nodes={"input": nir.Input(input_type=np.array([4])),
               "fc": nir.Affine(weight=rng.standard_normal((8, 4)), bias=np.zeros(8)),
               "lif": nir.LIF(**lif), "output": nir.Output(output_type=np.array([8]))},
        edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")]), name="snn", options=ParseOptions(dt=1e-3))
    p = profile(g, data=np.zeros((2, 5, 4), dtype=np.float32))
    assert [(r.name, r.post_ops) for r in p.rows] == [("fc", ["LIF"])]
    assert p.rows[0].activation_sparsity == 1.0 and p.rows[0].temporal_sparsity == 1.0
    spikes = profile(g, data=(rng.random((2, 20, 4)) < 0.5).astype(np.float32) * 5)
    assert 0.0 < spikes.rows[0].activation_sparsity < 1.0
    with pytest.raises(DataError, match=r"\(N, T, 4\)"):
        profile(g, data=np.zeros((2, 4), dtype=np.float32))


def test_no_data_no_sparsity(digits_cnn: hwmap.Graph) -> None:
    p = profile(digits_cnn)
    assert p.settings.samples is None
    assert all(r.activation_sparsity is None and r.temporal_sparsity is None for r in p.rows)
    assert p.totals.activation_sparsity is None


def test_bad_data_and_settings(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    with pytest.raises(DataError, match=r"samples have shape \[64\]"):
        profile(digits_cnn, data=digits_x.reshape(len(digits_x), 64))
    with pytest.raises(DataError, match="non-numeric"):
        profile(digits_cnn, data=np.array([["a"] * 64]).reshape(1, 1, 8, 8))
    with pytest.raises(DataError, match="at least 1 sample"):
        profile(digits_cnn, data=digits_x[:0])
    for kwargs in ({"fps": 0}, {"fps": float("nan")}, {"act_bits": 0}, {"weight_bits": 2.5}, {"max_samples": 0}):
        with pytest.raises(ConfigError):
            profile(digits_cnn, **kwargs)


# -- outputs -----------------------------------------------------------------------------
def test_json_is_deterministic_and_complete(digits_cnn: hwmap.Graph, digits_x: np.ndarray) -> None:
    a = profile(digits_cnn, data=digits_x, max_samples=8).to_json()
    b = profile(hwmap.load_model("zoo:digits_cnn"), data=digits_x, max_samples=8).to_json()
    assert json.dumps(a) == json.dumps(b)
    assert a["totals"]["macs"] == sum(layer["macs"] for layer in a["layers"])
    assert a["format"] == "hwmap.profile" and a["settings"]["samples"] == 8
    json.dumps(a, allow_nan=False)  # plain JSON types only


def test_csv_and_table(mobilenet: hwmap.Graph) -> None:
    from rich.console import Console

    p = profile(mobilenet, act_bits=4)
    lines = p.to_csv().splitlines()
    assert len(lines) == 1 + len(p.rows)
    header = lines[0].split(",")
    assert header[:3] == ["index", "name", "op"]
    pw1 = dict(zip(header, lines[3].split(",")))
    assert pw1["name"] == "pw1" and int(pw1["macs"]) == 25_690_112 and pw1["activation_sparsity"] == ""
    console = Console(record=True, width=200)
    p.render(console)
    text = console.export_text()
    assert "pw1" in text and "Mbit/s" in text and "568.7 M" in text


def test_plot_writes_a_png(mobilenet: hwmap.Graph, tmp_path: Path) -> None:
    p = profile(mobilenet)
    out = p.plot(tmp_path / "sub" / "profile.png")
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert p.plot(tmp_path / "again.png").read_bytes() == data  # no timestamp in the file
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(hwmap.HwmapError, match="cannot write the plot"):
        p.plot(tmp_path / "file" / "profile.png")


def test_profile_is_not_fooled_by_batch() -> None:
    """Counts are per sample: a batch of 4 gives the same rows as a batch of 1."""
    one = profile(hwmap.load_model("zoo:digits_cnn"))
    four = profile(hwmap.load_model("zoo:digits_cnn", ParseOptions(batch=4)))
    assert [(r.macs, r.params, r.output_elements) for r in one.rows] == \
        [(r.macs, r.params, r.output_elements) for r in four.rows]
    assert math.isclose(one.input.bandwidth_bps, four.input.bandwidth_bps)


# -- unknown ops -------------------------------------------------------------------------
def _unknown_onnx(path: Path) -> Path:
    """conv → relu → Hardmax → Resize ×2 → custom op → conv → relu → Add(·, sigmoid(input
    upsampled)): ONNX knows the shapes up to the custom op, not after it (but the output's)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 2, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal((4, 4, 3, 3)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("Hardmax", ["r"], ["h"], name="hm", axis=1),
        helper.make_node("Relu", ["h"], ["h2"], name="relu_after_hm"),
        helper.make_node("Resize", ["h2", "", "scales"], ["u"], name="up", mode="nearest"),
        helper.make_node("Frobnicate", ["u"], ["f"], name="custom", domain="com.example"),
        helper.make_node("Conv", ["f", "w2"], ["c2"], name="conv2", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c2"], ["output"], name="relu2"),
    ]
    graph = helper.make_graph(nodes, "unknowns",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 6, 6])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 12, 12])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("com.example", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_unknown_ops_are_rows_that_are_not_counted(tmp_path: Path) -> None:
    g = hwmap.load_model(str(_unknown_onnx(tmp_path / "u.onnx")), ParseOptions(allow_unknown=True))
    p = profile(g, macs="all")
    assert [(r.name, r.kind, r.unknown) for r in p.rows] == [
        ("conv", "conv", False), ("hm", "unknown", True), ("relu_after_hm", "relu", False),
        ("up", "unknown", True), ("custom", "unknown", True), ("conv2", "unknown", True), ("relu2", "unknown", True)]
    conv, hm, relu, up, custom, conv2, relu2 = p.rows
    assert conv.macs == 144 * 18 + 144 and conv.params == 72 and conv.post_ops == ["Relu"]
    assert relu.macs == 144 and relu.note is None  # a ReLU after an unknown op is counted, in a row of its own
    for r in (hm, up, custom, conv2, relu2):
        assert (r.macs, r.weights, r.params, r.weight_bytes) == (None, None, None, None)
    # shapes from ONNX shape inference where it had them, None where not
    assert (hm.output_shape, hm.output_elements, hm.bandwidth_bps) == ([1, 4, 6, 6], 144, 144 * 8 * 30.0)
    assert up.output_shape == [1, 4, 12, 12] and up.data_volume_rel == 576 / 72
    assert (custom.input_elements, custom.output_shape, custom.output_elements, custom.bandwidth_bps) == \
        (576, None, None, None)
    assert conv2.input_elements is None and conv2.stride == [1, 1] and relu2.output_elements == 576
    assert hm.note == "op 'Hardmax' is not known to hwmap"
    assert conv2.note == "the shape of its input 'f' is unknown (it follows an unknown op)"
    t = p.totals
    assert (t.layers, t.macs, t.params, t.weights) == (7, conv.macs + relu.macs, 72, 72)
    assert t.uncounted_nodes == 5 and t.unknown_ops == ["Hardmax", "Resize", "com.example:Frobnicate"]
    assert (t.peak_data_volume_layer, t.peak_data_volume) == ("up", 576)
    assert p.warnings == [
        "node 'hm' (Hardmax): op 'Hardmax' is not known to hwmap: not counted (no MACs, no parameters)",
        "node 'up' (Resize): op 'Resize' is not known to hwmap: not counted (no MACs, no parameters)",
        "node 'custom' (com.example:Frobnicate): op 'com.example:Frobnicate' is not known to hwmap: not counted "
        "(no MACs, no parameters)",
        "2 node(s) after them read tensors of unknown shape and are not counted either: conv2 (Conv), relu2 (Relu)"]


def test_unknown_rows_in_json_csv_table_and_plot(tmp_path: Path) -> None:
    from rich.console import Console

    g = hwmap.load_model(str(_unknown_onnx(tmp_path / "u.onnx")), ParseOptions(allow_unknown=True))
    p = profile(g)
    d = p.to_json()
    json.dumps(d, allow_nan=False)
    layers = {layer["name"]: layer for layer in d["layers"]}
    assert layers["hm"]["unknown"] is True and layers["hm"]["macs"] is None and layers["conv"]["unknown"] is False
    assert d["totals"]["uncounted_nodes"] == 5 and d["warnings"] == p.warnings
    rows = {r["name"]: r for r in csv.DictReader(io.StringIO(p.to_csv()))}
    assert rows["hm"]["unknown"] == "True" and rows["hm"]["macs"] == "" and rows["conv"]["macs"] == "2592"
    console = Console(record=True, width=220)
    p.render(console)
    text = console.export_text()
    hm_line = next(line for line in text.splitlines() if " hm " in line)
    assert "unknown (Hardmax)" in hm_line and hm_line.count("?") == 2  # params and MACs
    custom_line = next(line for line in text.splitlines() if " custom " in line)
    assert custom_line.count("?") == 5  # params, MACs, output, data volume, bandwidth
    assert "5 node(s) not counted" in " ".join(text.split()) and "com.example:Frobnicate" in text
    assert p.plot(tmp_path / "u.png").read_bytes()[:4] == b"\x89PNG"


def test_sparsity_cannot_be_measured_through_an_unknown_op(tmp_path: Path) -> None:
    g = hwmap.load_model(str(_unknown_onnx(tmp_path / "u.onnx")), ParseOptions(allow_unknown=True))
    with pytest.raises(hwmap.UnsupportedOpError, match=r"measuring sparsity with data \(--data\) needs every op "
                                                       r"known to hwmap; 3 node\(s\) .*hm \(Hardmax\)"):
        profile(g, data=np.zeros((2, 2, 6, 6), np.float32))


def test_a_graph_without_unknown_nodes_has_no_warnings(digits_cnn: hwmap.Graph) -> None:
    p = profile(digits_cnn)
    assert p.warnings == [] and p.totals.uncounted_nodes == 0 and p.totals.unknown_ops == []
    assert not any(r.unknown for r in p.rows) and "not counted" not in p.summary()
