"""The folded kernel (hwmap_analog_imc.fold_kernel) against FastLayer's numpy path, layer by
layer: the same accumulations, the same dequantized bits, the same ADC clipping count and
DAC activity, on every layer of the zoo's MobileNet V1 (small input), digits_cnn,
resnet_small and random layers with edge cases; and the layers it must leave to the numpy
path (ADC that can clip, multi-bit DAC digits, shifts above 8, device noise). End to end,
tests/analog_imc/test_simulator.py compares the simulator (which runs this kernel) with an
executor written from the crossbar docstring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import hwmap
from hwmap import ParseOptions, load_model
from hwmap.config import load_target
from hwmap.frontends.onnx import graph_from_onnx
from hwmap_analog_imc import emit, plugin, simulator
from hwmap_analog_imc.crossbar import LayerBase
from hwmap_analog_imc.fast_layer import FastLayer
from hwmap_analog_imc.hardware import NoiseConfig
from hwmap_analog_imc.legalize import legalize
from hwmap_analog_imc.program import AdcRec, Program, read_program


def program_of(tmp: Path, graph: hwmap.Graph, preset: str = "default", overrides: tuple[str, ...] = (),
               calibration: np.ndarray | None = None) -> Program:
    """legalize → map → emit, then the program read back from disk."""
    target = load_target(f"analog_imc:{preset}", list(overrides))
    target.calibration = calibration
    legal = legalize(graph, target)
    assert legal.fits, legal.violations
    emit.write_program(plugin.hwmap_map(legal.graph, target), target, tmp).write_manifest()
    return read_program(hwmap.Artifacts.read(tmp).path("program.bin"))


def layer_inputs(program: Program, x: np.ndarray) -> tuple[simulator.Simulator, dict[str, np.ndarray]]:
    sim = simulator.Simulator(program)
    name = next(t.name for t in program.tensors if t.flags & 1)
    _, _, env = sim.execute({name: x}, collect=True)
    return sim, env


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def check_layers(program: Program, x: np.ndarray) -> list[FastLayer]:
    """Every FastLayer of ``program``: folded against numpy path on its own input in the
    simulation of ``x``. Returns the layers that took the folded kernel."""
    sim, env = layer_inputs(program, x)
    folded = []
    for lay in sim.layers:
        if not isinstance(lay, FastLayer):
            continue
        xin = env[program.tensors[lay.rec.input].name]
        acc, clipped, counts = lay.run(xin)
        ref_acc, ref_clipped, ref_counts = lay.run_numpy(xin)
        assert np.array_equal(acc, ref_acc), lay.rec.name
        assert clipped == ref_clipped, lay.rec.name
        assert np.array_equal(counts, ref_counts), lay.rec.name
        assert same_bits(lay.dequantize(acc), LayerBase.dequantize(lay, ref_acc)), lay.rec.name
        if lay.fold is not None:
            folded.append(lay)
    return folded


def test_mobilenet_v1_every_layer_folded_and_bit_identical(tmp_path: Path) -> None:
    """All 28 layers of MobileNet V1 (input 32×32: the same weights and ADC shifts as at
    224×224) take the folded kernel, rounding columns and all, with the same bits; random
    inputs and inputs far above the range (every digit 1: the largest column sums)."""
    graph = load_model("zoo:mobilenet_v1", ParseOptions(input_shape=(1, 3, 32, 32)))
    program = program_of(tmp_path, graph)
    x = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
    folded = check_layers(program, np.concatenate([x, x[:1] + 100]))
    assert len(folded) == len(program.layers) == 28
    assert sum(bool(lay.fold.units) for lay in folded if lay.fold) >= 12  # the pointwise layers round
    assert any(lay.fold.geom2d is not None for lay in folded if lay.fold)  # depthwise: direct convolution
    assert any(u.pc <= 2 for lay in folded if lay.fold for u in lay.fold.units)  # the classifier: few positions
    assert all(u.nibble for lay in folded if lay.fold for u in lay.fold.units)  # shifts ≤ 3: 3-bit counters
    work = simulator.Simulator(program).work()
    assert work["exact"] == work["model"] and work["rounding"] == 0  # one GEMM at the model's MACs


@pytest.mark.parametrize(("name", "shape", "overrides"), [
    ("digits_cnn", None, ()),
    ("resnet_small", (1, 3, 16, 16), ()),
    ("resnet_small", (1, 3, 16, 16), ('hardware.weight_encoding="offset"',)),
    ("resnet_small", (1, 3, 16, 16), ("hardware.adc_bits=12",)),  # shift 0 everywhere: nothing rounds
])
def test_zoo_layers_bit_identical(tmp_path: Path, name: str, shape: tuple[int, ...] | None,
                                  overrides: tuple[str, ...]) -> None:
    graph = load_model(f"zoo:{name}", ParseOptions(input_shape=shape))
    program = program_of(tmp_path, graph, overrides=overrides)
    x = np.random.default_rng(3).random((3, *graph.tensor(graph.inputs[0]).shape[1:]), dtype=np.float32)
    folded = check_layers(program, 2 * x - 1)
    assert folded, name
    if "hardware.adc_bits=12" in overrides:
        assert not any(lay.fold.units for lay in folded if lay.fold)


def random_model(seed: int) -> onnx.ModelProto:
    """Conv 5→12 (3×3, stride 2, dilation 2, asymmetric pads) + ReLU, grouped conv (4 groups,
    3 filters each, 1×3) + ReLU, pointwise 12→40, Flatten, Gemm → 7: seeded random weights."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    inits = [init("w1", (12, 5, 3, 3)), init("b1", (12,)), init("w2", (12, 3, 1, 3)), init("w3", (40, 12, 1, 1)),
             init("w4", (7, 40 * 4 * 4))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["a"], strides=[2, 2], dilations=[2, 2], pads=[2, 1, 1, 2]),
        helper.make_node("Relu", ["a"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["g2"], group=4, pads=[0, 1, 0, 1]),
        helper.make_node("Relu", ["g2"], ["g3"]),
        helper.make_node("Conv", ["g3", "w3"], ["c"]),
        helper.make_node("Flatten", ["c"], ["d"]),
        helper.make_node("Gemm", ["d", "w4"], ["output"], transB=1),
    ]
    g = helper.make_graph(nodes, "random", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 5, 9, 9])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 7])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def random_program(tmp: Path, seed: int, overrides: tuple[str, ...] = (), calibration: int | None = None
                   ) -> tuple[Program, np.ndarray]:
    graph = graph_from_onnx(random_model(seed), name="random", options=ParseOptions())
    x = 2 * np.random.default_rng(seed).random((4, 5, 9, 9), dtype=np.float32) - 1
    return program_of(tmp, graph, overrides=overrides, calibration=None if calibration is None else x[:calibration]), x


@pytest.mark.parametrize("seed", [1, 2])
def test_random_layers_with_per_plane_shifts_up_to_eight(tmp_path: Path, seed: int) -> None:
    """Random layers whose ADC shifts are raised at random per plane and column (0..8 above
    the emitter's: never clipping, every remainder width the byte counters handle)."""
    program, x = random_program(tmp_path, seed)
    rng = np.random.default_rng(seed)
    for b, rec in enumerate(program.adc):
        shifts = np.minimum(rec.shifts.astype(np.int64) + rng.integers(0, 9, rec.shifts.shape), 8)
        program.adc[b] = AdcRec(b, rec.adc_bits, shifts.astype(rec.shifts.dtype))
    folded = check_layers(program, x)
    assert len(folded) == len(program.layers)
    units = [u for lay in folded if lay.fold for u in lay.fold.units]
    assert any((u.mask == 255).any() for u in units)  # a shift of 8: the whole byte counter
    assert any(not u.nibble for u in units)  # shifts above 3: byte counters


def test_layers_the_folded_kernel_leaves_to_the_numpy_path(tmp_path: Path) -> None:
    """An ADC that can clip (shifts calibrated on one sample), 3-bit DAC digits, a shift of
    9: the numpy path runs them (and the folded ones still agree); device noise: the
    reference kernel, no FastLayer at all."""
    program, x = random_program(tmp_path / "clip", 1, ("hardware.adc_bits=4",), calibration=1)
    sim = simulator.Simulator(program)
    clipping = [lay for lay in sim.layers if isinstance(lay, FastLayer) and any(u.can_clip for u in lay.units)]
    assert clipping and all(lay.fold is None for lay in clipping)
    assert any(sim.run({"input": x}).activity["adc_clipped"].values())
    check_layers(program, x)

    program, x = random_program(tmp_path / "dac3", 1, ("hardware.dac_bits=3", "hardware.adc_bits=6"))
    assert check_layers(program, x) == []

    program, x = random_program(tmp_path / "shift9", 2)
    rec = program.adc[0]
    shifts = rec.shifts.copy()
    shifts[0, 0] = 9
    program.adc[0] = AdcRec(0, rec.adc_bits, shifts)
    layer = program.blocks[0].layer
    sim = simulator.Simulator(program)
    assert isinstance(sim.layers[layer], FastLayer) and sim.layers[layer].fold is None
    check_layers(program, x)

    noisy = simulator.Simulator(program, NoiseConfig(enabled=True))
    assert not any(isinstance(lay, FastLayer) for lay in noisy.layers)


def test_an_input_without_a_code_takes_the_numpy_path(tmp_path: Path) -> None:
    """NaN reaching a layer (an op that made it) has no DAC code: the folded kernel hands
    the layer to the numpy path, which treats it as before."""
    program, x = random_program(tmp_path, 1)
    lay = next(lay for lay in simulator.Simulator(program).layers if isinstance(lay, FastLayer) and lay.fold)
    bad = np.full((1, *program.tensors[lay.rec.input].shape[1:]), np.nan, dtype=np.float32)
    assert lay.fold.run(lay, bad) is None
    with np.errstate(all="ignore"):
        acc, _, counts = lay.run(bad)
        ref, _, ref_counts = lay.run_numpy(bad)
    assert same_bits(acc, ref) and np.array_equal(counts, ref_counts)


def depthwise_model(seed: int) -> onnx.ModelProto:
    """Depthwise 3×3 convolutions of every geometry the direct kernel splits differently:
    stride 1 on an odd 13×17 input (+ ReLU6 as Clip), stride 2 on odd and even sizes (+ Relu),
    dilation 2, asymmetric pads, a depth multiplier of 2, and stride (2, 1); seeded weights."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.5).astype(np.float32), name)

    inits = [init("w1", (6, 1, 3, 3)), init("bias1", (6,)), init("w2", (6, 1, 3, 3)), init("w3", (6, 1, 3, 3)),
             init("w4", (12, 1, 3, 3)), init("w5", (12, 1, 3, 3)),
             numpy_helper.from_array(np.array(0.0, dtype=np.float32), "lo"),
             numpy_helper.from_array(np.array(6.0, dtype=np.float32), "hi")]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "bias1"], ["a"], group=6, pads=[1, 1, 1, 1]),
        helper.make_node("Clip", ["a", "lo", "hi"], ["a1"]),
        helper.make_node("Conv", ["a1", "w2"], ["b"], group=6, strides=[2, 2], pads=[1, 1, 1, 1]),  # 13×17 → 7×9
        helper.make_node("Relu", ["b"], ["b1"]),
        helper.make_node("Conv", ["b1", "w3"], ["c"], group=6, dilations=[2, 2], pads=[2, 1, 2, 3]),  # 7×9 → 7×9
        helper.make_node("Conv", ["c", "w4"], ["d"], group=6, strides=[2, 2], pads=[0, 1, 1, 0]),  # 12 channels
        helper.make_node("Relu", ["d"], ["d1"]),
        helper.make_node("Conv", ["d1", "w5"], ["output"], group=12, strides=[2, 1], pads=[1, 1, 1, 1]),
    ]
    g = helper.make_graph(nodes, "depthwise",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 6, 13, 17])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 12, 2, 4])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.mark.parametrize("seed", [3, 4])
def test_depthwise_geometries_bit_identical(tmp_path: Path, seed: int) -> None:
    """Every depthwise layer takes the direct 3×3 kernel (unit strides on the flattened
    rows, other strides on the plane split by phase) with the numpy path's bits, and the
    simulator's outputs are those of onnxruntime's model up to its quantization."""
    graph = graph_from_onnx(depthwise_model(seed), name="depthwise", options=ParseOptions())
    program = program_of(tmp_path, graph)
    x = 3 * np.random.default_rng(seed).random((3, 6, 13, 17), dtype=np.float32) - 1
    folded = check_layers(program, x)
    assert len(folded) == len(program.layers) == 5
    assert all(lay.fold is not None and lay.fold.geom2d is not None for lay in folded)
    strides = {tuple(lay.rec.strides) for lay in folded}
    assert {(1, 1), (2, 2), (2, 1)} <= strides
