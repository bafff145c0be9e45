"""Top-1 agreement with onnxruntime on plain-torch convnets a user might bring
(hidden_convnets.py), the simulation compared with onnxruntime on the model's
``torch.onnx.export`` and with hwmap's shared fake-quantized reference of the same legalized
graph, which carries the 8-bit weight and activation rounding but no ADC: what is left
between the two is what the converters cost. 360 inputs, calibrated on the first 90, scored
on the last 270.

* The trained convnets (trained on the digits' training split) on the digits' test images:
  what a user's trained model gets, on every preset.
* The seeded random-weight convnets with balanced classes on U(0, 1) images with a U(0, 2) gain
  per image and channel: a stress test whose class scores differ by a few tenths of a
  percent. 8-bit activations cannot resolve that (the fake-quantized reference itself stays
  below 0.98), so on analog_imc:default the simulation is held to that reference.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import hwmap
from hwmap import ParseOptions, load_data, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap_analog_imc import plugin, simulator

HERE = Path(__file__).resolve().parent
CALIBRATION = 90
INPUT_SHAPE = (1, 3, 16, 16)  # the convnets' input, as hidden_convnets.py builds them
PRESETS = ("default", "chapter-fig3.13", "isaac-like")


def _onnx(net: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.onnx.export(net, (torch.zeros(INPUT_SHAPE),), buf, dynamo=False,  # type: ignore[arg-type]
                      opset_version=17, input_names=["input"], output_names=["output"])
    return buf.getvalue()


def _agreement(tmp_path: Path, graph: hwmap.Graph, onnx_model: bytes, x: np.ndarray,
               target_ref: str) -> tuple[float, float, np.ndarray]:
    """(top-1 agreement of the simulation, of the fake-quantized reference) with onnxruntime
    on ``x[CALIBRATION:]``, and the simulation's scores."""
    import onnxruntime as ort

    target = load_target(target_ref)
    target.calibration = x[:CALIBRATION]
    legal = plugin.hwmap_legalize(graph, target)
    plugin.hwmap_emit(plugin.hwmap_map(legal.graph, target), target, tmp_path).write_manifest()
    scored = x[CALIBRATION:]
    sim = simulator.simulate(hwmap.Artifacts.read(tmp_path), target, {"input": scored}).outputs["output"]
    fq = run(legal.graph, {"input": scored}, quantized=True)["output"]
    sess = ort.InferenceSession(onnx_model, providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"input": scored[i:i + 1]})[0] for i in range(len(scored))])
    assert np.bincount(ref.argmax(1)).max() < len(ref) / 2  # no class takes half: agreement is not a constant's
    return float(np.mean(sim.argmax(1) == ref.argmax(1))), float(np.mean(fq.argmax(1) == ref.argmax(1))), sim


def agreement(tmp_path: Path, factory: str, target_ref: str) -> tuple[float, float]:
    """A seeded random convnet, loaded as ``hidden_convnets.py:FACTORY`` through hwmap's torch frontend."""
    from hwmap.frontends.torch import load_factory

    rng = np.random.default_rng(0)
    x = rng.random((360, *INPUT_SHAPE[1:]), dtype=np.float32)
    x *= rng.uniform(0.0, 2.0, (360, INPUT_SHAPE[1], 1, 1)).astype(np.float32)
    spec = f"{HERE / 'hidden_convnets.py'}:{factory}"
    graph = load_model(spec, ParseOptions(input_shape=INPUT_SHAPE))
    f = load_factory(spec)
    sim, fq, _ = _agreement(tmp_path, graph, _onnx(getattr(f.module, f.name)()), x, target_ref)
    return sim, fq


@pytest.fixture(scope="module")
def trained() -> dict[str, tuple[hwmap.Graph, bytes]]:
    """Each trained convnet (trained once here) as hwmap's graph of the module and its ONNX export."""
    from hwmap.frontends.torch import graph_from_module, load_factory

    out = {}
    for name in ("trained_plain_convnet", "trained_residual_convnet"):
        f = load_factory(f"{HERE / 'hidden_convnets.py'}:{name}")
        net = getattr(f.module, f.name)()
        out[name] = (graph_from_module(net, name=name, options=ParseOptions(input_shape=INPUT_SHAPE)), _onnx(net))
    return out


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("factory", ["trained_plain_convnet", "trained_residual_convnet"])
def test_trained_convnets_agree_on_every_preset(tmp_path: Path, trained: dict[str, tuple[hwmap.Graph, bytes]],
                                                factory: str, preset: str) -> None:
    """The digits' 360 test images (zoo:digits) enlarged to the convnets' input: the first 90
    calibrate, the last 270 are scored; the simulation agrees with onnxruntime on at least 98 %
    of them and classifies them about as well as the float model (98–99 %)."""
    from hwmap.frontends.torch import load_factory

    data = load_data("zoo:digits")
    x = load_factory(f"{HERE / 'hidden_convnets.py'}:digits16").module.digits16(data.x)
    graph, onnx_model = trained[factory]
    sim, fq, scores = _agreement(tmp_path, graph, onnx_model, x, f"analog_imc:{preset}")
    assert sim >= 0.98 and fq >= 0.98
    assert np.mean(scores.argmax(1) == data.y[CALIBRATION:]) >= 0.97


@pytest.mark.parametrize("factory", ["plain_convnet", "residual_convnet"])
def test_isaac_like_sixteen_bits_agree(tmp_path: Path, factory: str) -> None:
    sim, fq = agreement(tmp_path, factory, "analog_imc:isaac-like")
    assert sim >= 0.98 and fq >= 0.98


@pytest.mark.parametrize(("factory", "top1", "top1_fq"), [("plain_convnet", 0.9778, 0.9815),
                                                          ("residual_convnet", 0.9519, 0.9593)])
def test_default_is_as_good_as_its_eight_bit_quantization(tmp_path: Path, factory: str, top1: float,
                                                          top1_fq: float) -> None:
    """analog_imc:default (8-bit weights and activations, differential 4-bit cells, 1-bit
    DACs, 8-bit ADCs whose shifts are 0–1 here): the simulation is within two samples of
    the fake-quantized reference; these random nets' class scores differ by a few tenths of
    a percent of their size (balanced, they sit near the decision boundaries), which 8-bit
    activations cannot always resolve, so neither reaches 0.98 on residual_convnet (on 2,000
    further images the reference agrees 0.975 / 0.957 under every per-tensor clipping rule
    tried; 9-bit activations give 0.989 here: see calibrate.py)."""
    sim, fq = agreement(tmp_path, factory, "analog_imc:default")
    assert sim == pytest.approx(top1, abs=1 / 270) and fq == pytest.approx(top1_fq, abs=1 / 270)
    assert abs(sim - fq) < 2.5 / 270  # two samples at most
