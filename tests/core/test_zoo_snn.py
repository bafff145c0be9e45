"""zoo:digits_snn: the shipped spiking network reaches 0.95 on zoo:digits in torch and in
hwmap's executor, the two agree spike for spike, its training script reproduces the shipped
weights bit for bit, and its errors name what is wrong."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

import hwmap
from hwmap import DataError, ModelError, ParseOptions
from hwmap import zoo
from hwmap.execute import run
from hwmap.zoo import digits_snn
from hwmap.zoo.digits_snn import ARRAYS, TIMESTEPS, build_digits_snn, encode_digits, load_snn_weights, readout

pytest.importorskip("nir")
ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "train_digits_snn.py"


@pytest.fixture(scope="module")
def digits() -> hwmap.Dataset:
    return hwmap.load_data("zoo:digits")


@pytest.fixture(scope="module")
def executed(digits: hwmap.Dataset) -> dict[str, np.ndarray]:
    """Every tensor of the zoo graph run by hwmap's executor on all of zoo:digits."""
    graph = hwmap.load_model("zoo:digits_snn")
    return run(graph, {graph.inputs[0]: digits.x}, collect=True)


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_digits_snn", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_listed_and_built_through_nir() -> None:
    (m,) = [m for m in zoo.list_models() if m.name == "digits_snn"]
    assert m.input_shape == (1, 1, 8, 8) and "spiking" in m.description
    g = hwmap.load_model("zoo:digits_snn", ParseOptions(batch=4))
    assert g.name == "zoo:digits_snn" and g.meta["dt"] == digits_snn.DT
    assert [(n.name, n.op) for n in g.nodes] == [("encode_input", "Encoder"), ("flatten", "Reshape"), ("fc1", "Gemm"),
                                                ("lif1", "LIF"), ("fc2", "Gemm"), ("readout_output", "Readout")]
    assert g.nodes[0].attrs == {"encoding": "direct", "timesteps": TIMESTEPS} and g.nodes[-1].attrs == {"mode": "membrane"}
    assert g.tensor(g.inputs[0]).shape == (4, 1, 8, 8) and g.tensor(g.outputs[0]).shape == (4, 10)
    w = load_snn_weights()
    lif = g.node("lif1").params
    np.testing.assert_array_equal(lif["tau"], w["lif1.tau"])
    np.testing.assert_array_equal(lif["v_threshold"], w["lif1.v_threshold"])
    assert (lif["r"] == 1).all() and (lif["v_leak"] == 0).all() and (lif["v_reset"] == 0).all()
    assert (w["lif1.tau"] > digits_snn.DT).all() and (w["lif1.v_threshold"] > 0).all()
    assert len(np.unique(w["lif1.tau"])) > 50  # trained per neuron (those that never fire keep 5 ms)
    assert sum(a.size for a in g.arrays().values() if a.dtype == np.float32) >= sum(
        int(np.prod(s)) for s in ARRAYS.values())


def test_accuracy_in_the_executor(digits: hwmap.Dataset, executed: dict[str, np.ndarray]) -> None:
    assert executed["output"].shape == (360, 10) and executed["output.steps"].shape == (360, TIMESTEPS, 10)
    np.testing.assert_allclose(executed["output"], readout(executed["output.steps"]) / TIMESTEPS, rtol=1e-6)
    acc = float((executed["output"].argmax(1) == digits.y).mean())
    assert acc >= 0.95, f"executor accuracy {acc:.4f} on zoo:digits"
    rate = float(executed["lif1"].mean())
    assert 0.03 < rate < 0.5, rate  # a spiking network, not a saturated or silent one


def test_torch_agrees_spike_for_spike(digits: hwmap.Dataset, executed: dict[str, np.ndarray]) -> None:
    """The torch network carrying the shipped float32 numbers: every hidden spike of the 360
    test images over all 8 steps equals the executor's, and so does every prediction."""
    torch = pytest.importorskip("torch")
    net = _script().digits_snn()
    net.load_arrays(load_snn_weights())
    x = torch.from_numpy(encode_digits(digits.x)).double()
    with torch.no_grad():
        hidden = net.layers["lif1"](net.layers["fc1"](net.layers["flatten"](x.flatten(0, 1))).unflatten(0, (360, 8)))
        scores = net(x).sum(1).numpy()
    np.testing.assert_array_equal(hidden.numpy(), executed["lif1"])
    acc = float((scores.argmax(1) == digits.y).mean())
    assert acc >= 0.95, f"torch accuracy {acc:.4f} on zoo:digits"
    np.testing.assert_array_equal(scores.argmax(1), executed["output"].argmax(1))
    np.testing.assert_allclose(scores, readout(executed["output.steps"]), rtol=1e-5, atol=1e-4)


def test_training_script_reproduces_shipped_weights(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    proc = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "digits_snn" in proc.stdout and "(hwmap executor)" in proc.stdout and "360/360" in proc.stdout
    shipped = ROOT / "core" / "hwmap" / "zoo" / "data" / "digits_snn.npz"
    assert (tmp_path / "digits_snn.npz").read_bytes() == shipped.read_bytes()
    assert shipped.stat().st_size < 100_000


def test_encoding_and_readout() -> None:
    x = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    seq = encode_digits(x, 5)
    assert seq.shape == (3, 5, 1, 8, 8) and seq.dtype == np.float32 and seq.flags.c_contiguous
    assert all(np.array_equal(seq[:, t], x) for t in range(5))
    assert encode_digits(x).shape[1] == TIMESTEPS == 8
    y = np.arange(3 * 4 * 10, dtype=np.float32).reshape(3, 4, 10)
    np.testing.assert_array_equal(readout(y), y.sum(axis=1))
    assert (digits_snn.ENCODING, digits_snn.READOUT) == ("direct", "membrane")


@pytest.mark.parametrize("call, error, message", [
    (lambda: encode_digits(np.zeros((2, 64))), DataError, "takes N×1×8×8"),
    (lambda: encode_digits(np.zeros((2, 1, 8, 8)), 0), DataError, "timesteps must be a positive int"),
    (lambda: readout(np.zeros((2, 8, 3))), DataError, "expected \\(N, T, 10\\)"),
    (lambda: zoo.load_onnx("digits_snn"), ModelError, "has no ONNX form"),
    (lambda: hwmap.load_model("zoo:digits_snn", ParseOptions(dt=1e-4)), ModelError, "trained at dt = 0.001 s"),
    (lambda: hwmap.load_model("zoo:digits_snn", ParseOptions(input_shape=(2, 8, 1, 8, 8))), ModelError,
     "must be 4 positive ints"),
    (lambda: hwmap.load_model("zoo:digits_snn", ParseOptions(input_shape=(2, 1, 16, 16))), ModelError,
     "one N×1×8×8 frame per time step"),
    (lambda: build_digits_snn(weights={**load_snn_weights(), "fc2.W": np.zeros((10, 64), np.float32)}), ModelError,
     "layer 'fc2' \\(linear\\): weight \\[10, 64\\] does not take input \\[128\\]"),
])
def test_errors_name_what_is_wrong(call: object, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        call()  # type: ignore[operator]


def test_missing_weights_name_the_script(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(digits_snn.resources, "files", lambda package: tmp_path)
    with pytest.raises(ModelError, match="data/digits_snn.npz are not installed; run scripts/train_digits_snn.py"):
        build_digits_snn()
