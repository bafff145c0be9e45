"""The fidelity analog_imc claims at registration, measured as the claim states it: the
simulated outputs against the float reference model (``hwmap.execute.run``), calibrated on
the first 90 samples of zoo:digits and scored on the last 270."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import hwmap
from hwmap import load_data, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap.registry import get_registry
from hwmap_analog_imc import plugin, simulator

CALIBRATION = 90


def simulate_against_reference(tmp_path: Path, model: str, preset: str, x: np.ndarray,
                               calibration: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """legalize → map → emit (calibrated on ``calibration``) → simulate ``x``; and the float
    reference model's outputs on ``x``."""
    graph = load_model(model)
    target = load_target(f"analog_imc:{preset}")
    target.calibration = calibration
    legal = plugin.hwmap_legalize(graph, target)
    plugin.hwmap_emit(plugin.hwmap_map(legal.graph, target), target, tmp_path).write_manifest()
    sim = simulator.simulate(hwmap.Artifacts.read(tmp_path), target, {graph.inputs[0]: x})
    out = graph.outputs[0]
    return sim.outputs[out], run(graph, {graph.inputs[0]: x})[out]


def max_rel_error(sim: np.ndarray, ref: np.ndarray) -> float:
    """max |sim − ref| / max |ref| (the claim's ``max_rel_error``)."""
    return float(np.max(np.abs(sim.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def test_the_claim_registered() -> None:
    claim = get_registry().spec("analog_imc").fidelity
    assert claim is plugin.FIDELITY
    assert claim.top1_agreement == 0.99 and claim.max_rel_error is None and not claim.bit_exact


@pytest.mark.parametrize(("model", "preset", "top1", "rel"), [
    ("zoo:digits_cnn", "default", 1.0, 0.0102),
    ("zoo:digits_mlp", "default", 1.0, 0.0053),
    ("zoo:digits_cnn", "chapter-fig3.13", 0.9963, 0.0327),
])
def test_top1_claim_holds_on_held_out_digits(tmp_path: Path, model: str, preset: str, top1: float,
                                             rel: float) -> None:
    """Top-1 agreement at least the claim's 0.99 on the 270 samples calibration did not see;
    the measured values (in the claim's comment) pinned, so a change that loses accuracy shows."""
    x = np.ascontiguousarray(load_data("zoo:digits").x, dtype=np.float32)
    assert len(x) == 360
    sim, ref = simulate_against_reference(tmp_path, model, preset, x[CALIBRATION:], x[:CALIBRATION])
    agreement = float(np.mean(sim.argmax(1) == ref.argmax(1)))
    assert agreement >= plugin.FIDELITY.top1_agreement
    assert agreement == pytest.approx(top1, abs=1 / 270)
    assert max_rel_error(sim, ref) == pytest.approx(rel, abs=0.001)
    assert not np.array_equal(sim, ref)  # ADC and weight rounding: no bit-exactness to claim


def test_chapter_cnn_relative_error_is_why_none_is_claimed(tmp_path: Path) -> None:
    """zoo:chapter_cnn on the chapter's one core (8-bit cells read by 8-bit ADCs), seeded
    U(0, 1) inputs: a few percent typically, but ADC conversions that clip on inputs the
    calibration did not see set the maximum (seed 0: 0.17 from 3 samples, seed 4: 0.39)."""
    errors = []
    for seed in (0, 4):
        x = np.random.default_rng(seed).random((360, 1, 13, 64), dtype=np.float32)
        sim, ref = simulate_against_reference(tmp_path / str(seed), "zoo:chapter_cnn", "chapter-fig3.13",
                                              x[CALIBRATION:], x[:CALIBRATION])
        errors.append(max_rel_error(sim, ref))
        per_sample = np.abs(sim - ref).reshape(len(x) - CALIBRATION, -1).max(1) / np.max(np.abs(ref))
        errors.append(float(np.median(per_sample)))
    assert errors[0] == pytest.approx(0.1726, abs=0.001) and errors[2] == pytest.approx(0.3903, abs=0.001)
    assert errors[1] < 0.05 and errors[3] < 0.05  # the typical sample stays close


def resnet_small_against_onnxruntime(tmp_path: Path, target_ref: str, seed: int) -> tuple[float, float]:
    """zoo:resnet_small at 16×16 on ``target_ref``, 360 seeded U(0, 1) images, calibrated on
    the first 90 and scored on the last 270 against onnxruntime: (top-1 agreement, max
    relative error)."""
    import onnxruntime as ort

    from hwmap import ParseOptions
    from hwmap.zoo import load_onnx

    shape = (1, 3, 16, 16)
    x = np.random.default_rng(seed).random((360, 3, 16, 16), dtype=np.float32)
    graph = load_model("zoo:resnet_small", ParseOptions(input_shape=shape))
    target = load_target(target_ref)
    target.calibration = x[:CALIBRATION]
    legal = plugin.hwmap_legalize(graph, target)
    plugin.hwmap_emit(plugin.hwmap_map(legal.graph, target), target, tmp_path).write_manifest()
    sim = simulator.simulate(hwmap.Artifacts.read(tmp_path), target, {"input": x[CALIBRATION:]}).outputs["output"]
    sess = ort.InferenceSession(load_onnx("resnet_small", shape).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    ref = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(CALIBRATION, len(x))])
    return float(np.mean(sim.argmax(1) == ref.argmax(1))), max_rel_error(sim, ref)


#: The chapter's core with signed weights as G+/G− cell pairs and columns read in row groups
#: of one element (16 rows): both compiler choices its cells and shift-and-add allow.
CHAPTER_FINE = "analog_imc:chapter-fig3.13@hardware.weight_encoding=\"differential\"@mapper.conversion_rows=16"


@pytest.mark.parametrize(("target_ref", "seed", "top1"), [
    ("analog_imc:default", 0, 0.9926), ("analog_imc:default", 1, 0.9963),
    (CHAPTER_FINE, 0, 0.9926), (CHAPTER_FINE, 1, 0.9926),
])
def test_resnet_small_top1(tmp_path: Path, target_ref: str, seed: int, top1: float) -> None:
    """Issue 12's goal, top-1 agreement at least 0.98 against onnxruntime, on a residual
    convnet with seeded weights. Random images through random weights give logits whose
    spread over samples is a tenth of their size, so every quantization step counts:
    max-abs calibration without bias correction gave 0.948 and 0.978 on these seeds on
    analog_imc:default (0.940–0.981 over four); per-tensor minimum-MSE clipping, unsigned
    residual sums and bias correction give the pinned values. On the chapter's core (8-bit
    cells, DACs and ADCs) the pinned values need differential weights and 16-row groups:
    the fake-quantized reference's own agreement, 0.9926 (see the next test for why)."""
    agreement, rel = resnet_small_against_onnxruntime(tmp_path, target_ref, seed)
    assert agreement >= 0.98
    assert agreement == pytest.approx(top1, abs=1 / 270)
    assert rel < 0.025


@pytest.mark.parametrize(("seed", "whole", "grouped"), [(0, 0.9148, 0.9667), (1, 0.9481, 0.9852)])
def test_resnet_small_on_the_chapter_core_as_drawn(tmp_path: Path, seed: int, whole: float, grouped: float) -> None:
    """analog_imc:chapter-fig3.13 as Fig. 3.13 draws it, one offset-encoded 8-bit cell per
    weight: a column sum ``Σ u·(w + 128)`` is mostly the offset ``128·Σ u``, and the 8-bit
    ADC's 255 steps span its largest value, so the ADC rounding costs 2–9 % of a layer's
    output spread (bench/analog_fidelity.py layers; activation rounding: 0.3–1.8 %). Reading
    16-row groups halves that (shifts 12–13 → 10–11) but stays short of 0.98 on seed 0;
    the differential pairs of the test above cut the column sums ~4×."""
    a_whole, _ = resnet_small_against_onnxruntime(tmp_path / "whole", "analog_imc:chapter-fig3.13", seed)
    a_grouped, _ = resnet_small_against_onnxruntime(
        tmp_path / "grouped", "analog_imc:chapter-fig3.13@mapper.conversion_rows=16", seed)
    assert a_whole == pytest.approx(whole, abs=1 / 270)
    assert a_grouped == pytest.approx(grouped, abs=1 / 270)
    assert a_grouped > a_whole
