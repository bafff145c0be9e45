"""The fused epilogue (hwmap_analog_imc.epilogue): a layer's dequantization, clamping
post-ops and hold on its output grid in one compiled pass, against the three unfused stages
the simulator runs with ``collect`` (LayerBase.dequantize, hwmap's reference semantics of
each post-op, Simulator._hold): the same bits on every layer of MobileNet V1, the depthwise
test model (Clip as ReLU6, Relu, no post-op, bias or none) and random accumulations at the
edges of the grid; and the layers it must leave to the unfused stages."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pytest

from hwmap import Node, ParseOptions, QuantAnnotation, load_model
from hwmap.frontends.onnx import graph_from_onnx
from hwmap_analog_imc import simulator
from hwmap_analog_imc.crossbar import LayerBase
from hwmap_analog_imc.epilogue import Epilogue
from hwmap_analog_imc.program import Program

from test_fold_kernel import depthwise_model, program_of, same_bits


def unfused(sim: simulator.Simulator, i: int, acc: np.ndarray) -> np.ndarray:
    """Layer ``i``'s output from ``acc`` through the unfused stages (the simulator's own)."""
    lay = sim.layers[i]
    y = lay.dequantize(acc)
    for po in sim._postops[i]:
        assert not po.extra
        y = po.op([y])[0]
    return sim._hold(lay.rec.output, y)


def check_program(program: Program, x: np.ndarray) -> tuple[int, int]:
    """Every layer with an epilogue: fused against unfused on its input in the simulation of
    ``x``, and on accumulations spread far past the output grid, and the codes it hands the
    folded layer reading its output against that layer's own; the simulator's outputs with
    fusion and hand-over and without (``collect``). Returns how many layers had an
    epilogue, and how many handed codes over."""
    sim = simulator.Simulator(program)
    name = next(t.name for t in program.tensors if t.flags & 1)
    ref_out, _, env = sim.execute({name: x}, collect=True)  # collect: the unfused stages everywhere
    out, _, _ = sim.execute({name: x})
    assert ref_out.keys() == out.keys() and all(same_bits(out[k], ref_out[k]) for k in out)
    rng = np.random.default_rng(0)
    fused = handed = 0
    for i, (lay, epi) in enumerate(zip(sim.layers, sim.epilogues)):
        if epi is None:
            continue
        fused += 1
        acc = lay.run(env[program.tensors[lay.rec.input].name])[0]
        assert same_bits(fused_out(epi, acc), unfused(sim, i, acc)), lay.rec.name
        assert same_bits(fused_out(epi, acc), env[program.tensors[lay.rec.output].name]), lay.rec.name
        wide = np.ascontiguousarray(np.rint(acc.transpose(0, 1, 3, 2) * rng.uniform(-40, 40, acc.shape[:2] + (1, 1))
                                            ).astype(np.float64)).transpose(0, 1, 3, 2)
        assert same_bits(fused_out(epi, wide), unfused(sim, i, wide)), lay.rec.name  # clamps and both grid ends
        for reader in sim.layers:  # the codes handed to a folded layer reading the output: its own codes of it
            if reader.rec.input != lay.rec.output or getattr(reader, "fold", None) is None:
                continue
            lut = epi.handoff(functools.partial(reader.fold.codes_of, reader))
            assert lut is not None
            held, codes = epi.run(wide, lut)
            assert codes is not None and np.array_equal(codes.reshape(held.shape), reader.fold.codes_of(reader, held))
            handed += 1
    return fused, handed


def fused_out(epi: Epilogue, acc: np.ndarray) -> np.ndarray:
    out = epi.run(acc)
    assert out is not None and out[1] is None
    return out[0]


def test_mobilenet_v1_every_convolution_fused_and_bit_identical(tmp_path: Path) -> None:
    graph = load_model("zoo:mobilenet_v1", ParseOptions(input_shape=(1, 3, 32, 32)))
    program = program_of(tmp_path, graph)
    x = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    fused, handed = check_program(program, x)
    assert fused == len(program.layers) - 1  # all but the classifier (a Gemm)
    assert handed == len(program.layers) - 2  # to every next layer (the classifier reads the pooled tensor)


@pytest.mark.parametrize("seed", [3, 4])
def test_depthwise_model_clip_relu_and_none_bit_identical(tmp_path: Path, seed: int) -> None:
    graph = graph_from_onnx(depthwise_model(seed), name="depthwise", options=ParseOptions())
    program = program_of(tmp_path, graph)
    sim = simulator.Simulator(program)
    clamps = [tuple(zip(e.lo.tolist(), e.hi.tolist())) for e in sim.epilogues if e is not None]
    assert ((0.0, 6.0),) in clamps and ((0.0, float("inf")),) in clamps and () in clamps
    x = 4 * np.random.default_rng(seed).random((3, 6, 13, 17), dtype=np.float32) - 2
    fused, handed = check_program(program, x)
    assert fused == 4 and handed == 4  # the graph output is float: the last layer keeps the stages


class _Layer(LayerBase):
    """A layer record's stand-in: what Epilogue.of reads."""

    def __init__(self, scale: np.ndarray, bias: np.ndarray | None) -> None:
        class Rec:
            kernel = (3, 3)
            groups, filters = 1, scale.size
        self.rec = Rec()  # type: ignore[assignment]
        self.scale = scale.reshape(1, 1, -1)
        self.bias = None if bias is None else bias.reshape(1, 1, -1)
        self.out_shape = (2, 3)


def test_what_the_epilogue_leaves_to_the_unfused_stages() -> None:
    """No quantized output, per-axis quantization, an op that is not a clamp, a clamp bound
    that is a tensor, NaN or an array, and scales so large a dequantized value could
    overflow float32: no epilogue."""
    q = QuantAnnotation(np.float64(0.05), np.float64(3), 8, False)
    lay = _Layer(np.full(4, 1e-3), np.zeros(4))
    relu = Node("r", "Relu", ["x"], ["y"], {}, {})
    assert Epilogue.of(lay, [(relu, 0)], q) is not None
    assert Epilogue.of(lay, [(relu, 0)], None) is None
    per_axis = QuantAnnotation(np.full(4, 0.05), np.zeros(4), 8, False, 1)
    assert Epilogue.of(lay, [], per_axis) is None
    assert Epilogue.of(lay, [(Node("s", "Sigmoid", ["x"], ["y"], {}, {}), 0)], q) is None
    assert Epilogue.of(lay, [(relu, 1)], q) is None
    for bad in (np.array(np.nan, dtype=np.float32), np.zeros(2, dtype=np.float32)):
        clip = Node("c", "Clip", ["x"], ["y"], {}, {"min": bad})
        assert Epilogue.of(lay, [(clip, 0)], q) is None
    assert Epilogue.of(_Layer(np.full(4, 1e30), None), [], q) is None
    assert Epilogue.of(_Layer(np.full(4, np.inf), None), [], q) is None
    clip6 = Node("c", "Clip", ["x"], ["y"], {}, {"min": np.array(0, dtype=np.float32),
                                                  "max": np.array(6, dtype=np.float32)})
    epi = Epilogue.of(lay, [(clip6, 0)], q)
    assert epi is not None and epi.lo.tolist() == [0.0] and epi.hi.tolist() == [6.0]
    assert epi.run(np.zeros((1, 1, 4, 6))) is None  # accumulations not filter-major


def test_clamps_inside_the_grid_against_hwmaps_reference_semantics() -> None:
    """Clip(0.25, 0.5) then Relu on a grid reaching past both bounds, then no post-op at
    all, on random accumulations with a bias: the fused pass against the reference ops
    (``hwmap.ops``) and ``QuantAnnotation.fake_quantize``, with no simulator code between."""
    from hwmap.ops import get_op

    rng = np.random.default_rng(5)
    lay = _Layer(rng.uniform(1e-4, 1e-2, 4), rng.uniform(-1, 1, 4))
    q = QuantAnnotation(np.float64(0.01), np.float64(3), 8, False)
    clip = Node("c", "Clip", ["x"], ["y"], {}, {"min": np.array(0.25, dtype=np.float32),
                                                 "max": np.array(0.5, dtype=np.float32)})
    relu = Node("r", "Relu", ["x"], ["y"], {}, {})
    acc = np.ascontiguousarray(rng.integers(-3000, 3000, (2, 1, 4, 6)).astype(np.float64)).transpose(0, 1, 3, 2)
    for post in ([clip, relu], []):
        epi = Epilogue.of(lay, [(node, 0) for node in post], q)
        assert epi is not None
        y = LayerBase.dequantize(lay, acc)
        for node in post:
            y = get_op(node.op).evaluate(node, [y])[0]
        ref = q.fake_quantize(y)
        assert same_bits(fused_out(epi, acc), ref)
        assert (0.25 <= ref.min() and ref.max() <= 0.5) if post else (ref.min() < 0.25 and ref.max() > 0.5)


def test_codes_handed_over_through_any_table() -> None:
    """A table that is not a shift of the output codes (a next layer on another grid) is
    looked up code by code; a shift is added: either way ``lut[q − q_min]`` of each held
    value's code ``q``."""
    rng = np.random.default_rng(6)
    lay = _Layer(rng.uniform(1e-4, 1e-2, 4), None)
    q = QuantAnnotation(np.float64(0.01), np.float64(3), 8, False)
    epi = Epilogue.of(lay, [], q)
    assert epi is not None
    acc = np.ascontiguousarray(rng.integers(-9000, 9000, (2, 1, 4, 6)).astype(np.float64)).transpose(0, 1, 3, 2)
    for lut in (rng.permutation(256).astype(np.int32), np.arange(7, 263, dtype=np.int32)):
        held, codes = epi.run(acc, lut)
        assert codes is not None
        code = np.rint(held.astype(np.float64) / 0.01).astype(np.int64) + 3  # held = 0.01·(q − 3), q in 0..255
        assert code.min() == 0 and code.max() == 255
        assert np.array_equal(codes.reshape(held.shape), lut[code])
