"""Integer inference from the emitted files equals the quantized reference bit for bit
(``hwmap.execute.run(legalized, x, quantized=True)``) on the zoo, and the requantizer's
rounding primitives on hand-worked values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hwmap import ParseOptions, load_data, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap_pipelined_dnn.legalize import legalize
from hwmap_pipelined_dnn.mapping import map_graph
from hwmap_pipelined_dnn.postprocess import read_program, write_program
from hwmap_pipelined_dnn.simulator import f32_significand, rne_shift, simulate


def test_rne_shift_hand_worked() -> None:
    v = np.array([5, 6, 7, -5, -6, -7, 12, -12, 3, 0], dtype=np.int64)
    # v / 4 = 1.25 1.5 1.75 -1.25 -1.5 -1.75 3 -3 0.75 0 → half to even: 1 2 2 -1 -2 -2 3 -3 1 0
    assert rne_shift(v, 2).tolist() == [1, 2, 2, -1, -2, -2, 3, -3, 1, 0]
    assert rne_shift(np.array([2, 10, -2, 6]), 2).tolist() == [0, 2, 0, 2]  # 0.5 → 0, 2.5 → 2, -0.5 → 0, 1.5 → 2
    assert rne_shift(np.array([3, -3]), -2).tolist() == [12, -12]
    assert rne_shift(np.array([3, -3]), 0).tolist() == [3, -3]


def test_f32_significand() -> None:
    big = np.array([(1 << 24) + 1, (1 << 24) + 3, -((1 << 25) + 2), 12345], dtype=np.int64)
    assert f32_significand(big).tolist() == [1 << 24, (1 << 24) + 4, -(1 << 25), 12345]


def _check(model: str, x: np.ndarray, tmp_path: Path, preset: str = "pipelined_dnn:default",
           calib: np.ndarray | None = None, options: ParseOptions | None = None) -> None:
    t = load_target(preset)
    t.calibration = calib
    legal = legalize(load_model(model, options), t)
    assert legal.fits, legal.violations
    m = map_graph(legal.graph, t)
    out = tmp_path / "artifacts"
    out.mkdir()
    art = write_program(m, t, out)
    sim = simulate(art, t, {legal.graph.inputs[0]: x})
    ref = run(legal.graph, {legal.graph.inputs[0]: x}, quantized=True)
    for k, r in ref.items():
        s = sim.outputs[k]
        assert s.dtype == r.dtype and s.shape == r.shape
        assert int(np.sum(s != r)) == 0, f"{model}: {int(np.sum(s != r))} of {r.size} values differ"
    assert read_program(art).layers[0].spec.kind == "source"


@pytest.mark.parametrize("model", ["zoo:digits_cnn", "zoo:digits_mlp"])
def test_bit_exact_on_digits(model: str, tmp_path: Path) -> None:
    d = load_data("zoo:digits")
    _check(model, d.x, tmp_path, calib=d.x[:90])


def test_bit_exact_on_digits_with_narrow_formats(tmp_path: Path) -> None:
    d = load_data("zoo:digits")
    _check("zoo:digits_cnn", d.x, tmp_path, preset="pipelined_dnn:default@hardware.weight_bits=4"
                                                   "@hardware.activation_bits=5", calib=d.x[:90])


@pytest.mark.parametrize("model,shape", [("zoo:chapter_cnn", None), ("zoo:resnet_small", None),
                                         ("zoo:mobilenet_v1", (1, 3, 32, 32)), ("zoo:mobilenet_v1", (1, 3, 96, 96))])
def test_bit_exact_on_the_zoo(model: str, shape: tuple[int, ...] | None, tmp_path: Path) -> None:
    opts = ParseOptions(input_shape=shape) if shape else None
    g = load_model(model, opts)
    rng = np.random.default_rng(7)
    n = 6 if shape and shape[2] > 32 else 24  # 96×96: the global pool averages 3×3, not a power of two
    x = rng.random((n, *g.tensor(g.inputs[0]).shape[1:]), dtype=np.float32) * 2 - 0.5
    _check(model, x, tmp_path, calib=x[:4], options=opts)
