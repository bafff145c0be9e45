"""The model zoo: valid ONNX that onnxruntime runs, the published sizes, trained accuracy,
reproducible training, deterministic builds, and errors that name what is wrong."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

import hwmap
from hwmap import zoo
from hwmap.errors import DataError, ModelError
from hwmap.source import ParseOptions

ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
F = torch.nn.functional

ROOT = Path(__file__).resolve().parents[2]
NAMES = ["chapter_cnn", "mobilenet_v1", "resnet_small", "digits_mlp", "digits_cnn"]
OUTPUT_SHAPES = {
    "chapter_cnn": (1, 8, 3, 29),  # chapter Fig. 3.13: 3×29×8
    "mobilenet_v1": (1, 1000),
    "resnet_small": (1, 10),
    "digits_mlp": (1, 10),
    "digits_cnn": (1, 10),
}
HAVE_ONNX_FRONTEND = importlib.util.find_spec("hwmap.frontends.onnx") is not None


@pytest.fixture(scope="module")
def models() -> dict[str, onnx.ModelProto]:
    return {name: zoo.load_onnx(name) for name in NAMES}


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run(None, {"input": x})[0]


def inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i).copy() for i in model.graph.initializer}


def inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    m = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    return {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
            for v in list(m.graph.value_info) + list(m.graph.output)}


def test_listing() -> None:
    assert [m.name for m in zoo.list_models()] == NAMES + ["digits_snn"]  # built through NIR: test_zoo_snn.py
    assert zoo.list_data() == ["digits"]
    for m in zoo.list_models():
        assert m.input_shape[0] == 1 and m.description


@pytest.mark.parametrize("name", NAMES)
def test_valid_onnx_runs_in_onnxruntime(models: dict[str, onnx.ModelProto], name: str) -> None:
    model = models[name]
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    shape = next(m.input_shape for m in zoo.list_models() if m.name == name)
    assert inferred_shapes(model)["output"] == OUTPUT_SHAPES[name]
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    y = run(model, x)
    assert y.shape == OUTPUT_SHAPES[name]
    assert np.isfinite(y).all() and y.std() > 1e-3  # seeded or trained: outputs vary


@pytest.mark.parametrize("name", NAMES)
def test_build_is_deterministic(models: dict[str, onnx.ModelProto], name: str) -> None:
    assert zoo.load_onnx(name).SerializeToString() == models[name].SerializeToString()


def test_chapter_cnn_is_figure_3_13(models: dict[str, onnx.ModelProto]) -> None:
    m = models["chapter_cnn"]
    w = inits(m)
    assert w["conv1.W"].shape == (16, 1, 4, 4) and w["conv1.B"].shape == (16,)
    assert w["conv2.W"].shape == (8, 16, 3, 3) and w["conv2.B"].shape == (8,)
    shapes = inferred_shapes(m)
    assert shapes["conv1"] == (1, 16, 5, 31)
    assert shapes["output"] == (1, 8, 3, 29)
    # peer check with torch: stride 2 then stride 1, no padding, ReLU between
    x = np.random.default_rng(2).standard_normal((1, 1, 13, 64)).astype(np.float32)
    t = {k: torch.from_numpy(v) for k, v in w.items()}
    ref = F.conv2d(F.relu(F.conv2d(torch.from_numpy(x), t["conv1.W"], t["conv1.B"], stride=2)),
                   t["conv2.W"], t["conv2.B"])
    np.testing.assert_allclose(run(m, x), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_mobilenet_v1_sizes(models: dict[str, onnx.ModelProto]) -> None:
    m = models["mobilenet_v1"]
    w = inits(m)
    ops = [n.op_type for n in m.graph.node]
    assert ops.count("Conv") == 27 and ops.count("BatchNormalization") == 27 and ops.count("Gemm") == 1
    weight_slots = [n.input[1] for n in m.graph.node if n.op_type in ("Conv", "Gemm")]
    assert all(len(n.input) == 2 for n in m.graph.node if n.op_type == "Conv")  # no conv bias
    # Howard et al., arXiv:1704.04861, 2017: 569 M mult-adds, 4.2 M parameters
    assert sum(w[k].size for k in weight_slots) == 4_209_088
    bn_affine = sum(w[n.input[i]].size for n in m.graph.node if n.op_type == "BatchNormalization" for i in (1, 2))
    assert sum(w[k].size for k in weight_slots) + bn_affine + w["fc.B"].size == 4_231_976
    strides = {n.name: list(n.attribute[[a.name for a in n.attribute].index("strides")].ints)
               for n in m.graph.node if n.op_type == "Conv"}
    assert [i for i in range(1, 14) if strides[f"dw{i}"] == [2, 2]] == [2, 4, 6, 12]
    shapes = inferred_shapes(m)
    assert shapes["pw1"] == (1, 64, 112, 112)  # the largest activation: 802,816 elements
    assert shapes["pw13_relu"] == (1, 1024, 7, 7)


def test_mobilenet_v1_at_720p() -> None:
    m = zoo.load_onnx("mobilenet_v1", (1, 3, 720, 1280))
    shapes = inferred_shapes(m)
    assert shapes["conv0"] == (1, 32, 360, 640) and shapes["pw1"] == (1, 64, 360, 640)
    assert shapes["pw13_relu"] == (1, 1024, 23, 40) and shapes["output"] == (1, 1000)
    assert run(m, np.zeros((1, 3, 720, 1280), np.float32)).shape == (1, 1000)


def test_resnet_small_residual_wiring(models: dict[str, onnx.ModelProto]) -> None:
    m = models["resnet_small"]
    w = {k: torch.from_numpy(v) for k, v in inits(m).items()}
    assert [n.name for n in m.graph.node if n.op_type == "Add"] == ["s1_add", "s2_add", "s3_add"]
    assert "s1_proj" not in w and w["s2_proj.W"].shape == (32, 16, 1, 1) and w["s3_proj.W"].shape == (64, 32, 1, 1)

    def bn(x: "torch.Tensor", p: str) -> "torch.Tensor":
        return F.batch_norm(x, w[f"{p}.input_mean"], w[f"{p}.input_var"], w[f"{p}.scale"], w[f"{p}.B"], eps=1e-5)

    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)).astype(np.float32)
    h = F.relu(bn(F.conv2d(torch.from_numpy(x), w["stem.W"], padding=1), "stem_bn"))
    for s, stride in ((1, 1), (2, 2), (3, 2)):
        y = F.relu(bn(F.conv2d(h, w[f"s{s}_conv1.W"], stride=stride, padding=1), f"s{s}_conv1_bn"))
        y = bn(F.conv2d(y, w[f"s{s}_conv2.W"], padding=1), f"s{s}_conv2_bn")
        sc = h if s == 1 else bn(F.conv2d(h, w[f"s{s}_proj.W"], stride=stride), f"s{s}_proj_bn")
        h = F.relu(y + sc)
    ref = F.linear(h.mean((2, 3)), w["fc.W"], w["fc.B"])
    got = run(zoo.load_onnx("resnet_small", (2, 3, 32, 32)), x)
    np.testing.assert_allclose(got, ref.numpy(), rtol=1e-4, atol=1e-4)


def test_digits_data() -> None:
    d = hwmap.load_data("zoo:digits")
    assert d.name == "zoo:digits" and d.x.shape == (360, 1, 8, 8) and d.x.dtype == np.float32
    assert d.y is not None and d.y.dtype == np.int64 and d.y.shape == (360,)
    assert d.x.min() == 0.0 and d.x.max() == 1.0
    assert sorted(np.bincount(d.y)) == [35, 35, 36, 36, 36, 36, 36, 36, 37, 37]  # stratified


@pytest.mark.parametrize("name", ["digits_mlp", "digits_cnn"])
def test_digits_models_accuracy(name: str) -> None:
    d = zoo.load_data("digits")
    logits = run(zoo.load_onnx(name, (len(d), 1, 8, 8)), d.x)
    acc = float((logits.argmax(1) == d.y).mean())
    assert acc >= 0.97, f"{name}: accuracy {acc:.4f} on zoo:digits"
    # the batch-1 model is the same network
    np.testing.assert_allclose(run(zoo.load_onnx(name), d.x[:1]), logits[:1], rtol=1e-5, atol=1e-5)


def test_training_script_reproduces_shipped_weights(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "train_digits.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "digits_cnn" in proc.stdout and "test accuracy" in proc.stdout
    shipped = ROOT / "core" / "hwmap" / "zoo" / "data"
    for name in ("digits_mlp", "digits_cnn"):
        assert (tmp_path / f"{name}.npz").read_bytes() == (shipped / f"{name}.npz").read_bytes(), name
        assert (shipped / f"{name}.npz").stat().st_size < 100_000


def test_nothing_built_at_import() -> None:
    code = ("import sys, hwmap.zoo; "
            "assert not [m for m in sys.modules if m.startswith(('hwmap.zoo.', 'sklearn'))], sorted(sys.modules)")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


# -- errors ---------------------------------------------------------------------------------

def test_unknown_names() -> None:
    with pytest.raises(ModelError, match="no zoo model 'nope'.*known: chapter_cnn, mobilenet_v1"):
        zoo.load_onnx("nope")
    with pytest.raises(ModelError, match="no zoo model"):
        hwmap.load_model("zoo:nope")
    with pytest.raises(DataError, match="no zoo data set 'nope'.*known: digits"):
        hwmap.load_data("zoo:nope")


@pytest.mark.parametrize("name, shape, message", [
    ("chapter_cnn", (1, 1, 13), "must be 4 positive ints"),
    ("chapter_cnn", (1, 1, 0, 64), "must be 4 positive ints"),
    ("chapter_cnn", (1, 1, 13.0, 64), "must be 4 positive ints"),
    ("chapter_cnn", (True, 1, 13, 64), "must be 4 positive ints"),
    ("chapter_cnn", 13, "not a sequence"),
    ("chapter_cnn", (1, 1, 4, 4), "layer 'conv2'.*too small"),
    ("mobilenet_v1", (1, 1, 224, 224), "takes 3 \\(RGB\\)"),
    ("resnet_small", (1, 4, 32, 32), "takes 3 \\(RGB\\)"),
    ("digits_cnn", (1, 1, 16, 16), "N×1×8×8"),
    ("digits_mlp", (1, 3, 8, 8), "N×1×8×8"),
])
def test_bad_input_shapes(name: str, shape: object, message: str) -> None:
    with pytest.raises(ModelError, match=message):
        zoo.load_onnx(name, shape)  # type: ignore[arg-type]


def test_broken_weight_files() -> None:
    from hwmap.zoo.digits import MLP_LAYERS, load_weights

    with pytest.raises(ModelError, match="not installed; run scripts/train_digits.py"):
        load_weights("no_such_model", MLP_LAYERS)
    with pytest.raises(ModelError, match="fc1.W is float32\\[32, 64\\], expected float32\\[64, 32\\]"):
        load_weights("digits_mlp", {**MLP_LAYERS, "fc1.W": (64, 32)})
    with pytest.raises(ModelError, match="no array 'fc3.W'"):
        load_weights("digits_mlp", {**MLP_LAYERS, "fc3.W": (10, 10)})


# -- through the ONNX frontend ----------------------------------------------------------------

needs_frontend = pytest.mark.skipif(not HAVE_ONNX_FRONTEND,
                                    reason="hwmap.frontends.onnx (the ONNX frontend) is not written yet")


@needs_frontend
@pytest.mark.parametrize("name", NAMES)
def test_load_graph(models: dict[str, onnx.ModelProto], name: str) -> None:
    g = hwmap.load_model(f"zoo:{name}")
    assert g.name == f"zoo:{name}"
    default = next(m.input_shape for m in zoo.list_models() if m.name == name)
    assert [g.tensor(t).shape for t in g.inputs] == [default]
    assert [g.tensor(t).shape for t in g.outputs] == [OUTPUT_SHAPES[name]]
    # every initializer became a parameter, nothing else did
    assert sum(a.size for a in g.arrays().values()) == sum(v.size for v in inits(models[name]).values())


@needs_frontend
def test_load_graph_shapes_from_options() -> None:
    g = zoo.load_graph("digits_cnn", ParseOptions(batch=4))
    assert g.tensor(g.inputs[0]).shape == (4, 1, 8, 8) and g.tensor(g.outputs[0]).shape == (4, 10)
    g = zoo.load_graph("mobilenet_v1", ParseOptions(input_shape=(1, 3, 720, 1280)))
    assert g.tensor(g.inputs[0]).shape == (1, 3, 720, 1280) and g.tensor(g.outputs[0]).shape == (1, 1000)
