"""The PyTorch frontend: ``package.module:factory`` sources, checked against torch itself."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from hwmap import ModelError, ParseOptions, load_model
from hwmap.frontends import torch as torch_frontend

torch = pytest.importorskip("torch")
from hwmap.execute import run  # noqa: E402

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def _models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(HERE))


def _reference(factory: str, x: np.ndarray) -> np.ndarray:
    import torch_models

    model = getattr(torch_models, factory)().eval()
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("factory,shape,ops", [
    ("small_cnn", (1, 3, 8, 8), ["Conv", "Relu", "MaxPool", "Reshape", "Gemm"]),
    ("residual", (2, 4, 6, 6), ["Conv", "Relu", "Conv", "Add", "Relu"]),
    ("mlp", (3, 6), ["Gemm", "Relu", "Gemm", "Sigmoid"]),
])
def test_parse_and_run_matches_torch(factory: str, shape: tuple[int, ...], ops: list[str]) -> None:
    g = load_model(f"torch_models:{factory}", ParseOptions(input_shape=shape))
    assert g.name == f"torch_models:{factory}"
    assert g.inputs == ["input"] and g.outputs == ["output"]
    assert g.tensor("input").shape == shape
    # Eval-mode export: BN is folded by the exporter and the flatten's shape is constant.
    assert [n.op for n in g.nodes] == ops
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    ref = _reference(factory, x)
    assert g.tensor("output").shape == ref.shape
    np.testing.assert_allclose(run(g, {"input": x})["output"], ref, atol=1e-5)


def test_parse_is_deterministic(tmp_path: Path) -> None:
    for d in ("a", "b"):
        load_model("torch_models:small_cnn", ParseOptions(input_shape=(1, 3, 8, 8))).save(tmp_path / d)
    for f in ("graph.json", "params.npz"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


@pytest.mark.parametrize("source,options,message", [
    ("torch_models:mlp", ParseOptions(), "--input-shape"),
    ("torch_models:mlp", ParseOptions(input_shape=(1, 0)), "positive"),
    ("torch_models:mlp", ParseOptions(input_shape=(1, 5)), "forward pass on input shape \\[1, 5\\] failed"),
    ("no_such_module_xyz:make", ParseOptions(input_shape=(1, 2)), "cannot import module 'no_such_module_xyz'"),
    ("torch_models:missing", ParseOptions(input_shape=(1, 2)), "has no attribute 'missing'"),
    ("torch_models:raising", ParseOptions(input_shape=(1, 2)), "raised RuntimeError: weights file is missing"),
    ("torch_models:not_a_module", ParseOptions(input_shape=(1, 2)), "type int, not a torch.nn.Module"),
    ("torch_models:NOT_CALLABLE", ParseOptions(input_shape=(1, 2)), "not a callable"),
])
def test_bad_sources_are_one_line_model_errors(source: str, options: ParseOptions, message: str) -> None:
    with pytest.raises(ModelError, match=message) as info:
        load_model(source, options)
    text = str(info.value)
    assert text.startswith(source + ": ") and "\n" not in text


def test_other_sources_are_not_ours(tmp_path: Path) -> None:
    f = tmp_path / "m.onnx"
    f.write_bytes(b"x")
    for source in (str(f), "zoo:digits_cnn", "model.nir", "a/b:c", "pkg.mod:fn(1)", "pkg.mod"):
        assert torch_frontend.hwmap_parse(source, ParseOptions(input_shape=(1, 2))) is None


def test_missing_torch_is_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # makes ``import torch`` raise ImportError
    with pytest.raises(ModelError, match=r"install hwmap\[torch\]"):
        torch_frontend.hwmap_parse("torch_models:mlp", ParseOptions(input_shape=(1, 6)))


def test_frontend_modules_do_not_import_torch_or_nir() -> None:
    code = ("import sys, hwmap.frontends.torch, hwmap.frontends.nir, hwmap.passes; "
            "print('torch' in sys.modules, 'nir' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
