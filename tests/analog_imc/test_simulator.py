"""The analog IMC simulator against references no one here wrote (onnxruntime, hwmap's
reference ops with fake-quantized operands): exactness without ADC rounding, the per-layer
error bound with it, end-to-end fidelity on the zoo (conv, depthwise, Gemm, residual add;
random and trained weights), ≥ 99 % top-1 on digits, activity, device noise, bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import hwmap
from hwmap import DataError, Graph, ParseOptions, TargetError, load_model
from hwmap.config import load_target
from hwmap.frontends.onnx import graph_from_onnx
from hwmap.ops import get_op
from hwmap.ops.fused import plan
from hwmap.zoo import load_data, load_onnx
from hwmap_analog_imc import emit, plugin, simulator
from hwmap_analog_imc.legalize import legalize, weight_slot
from hwmap_analog_imc.program import read_program

RESNET_SHAPE = (1, 3, 16, 16)


# ------------------------------------------------------------------------------ helpers
def depthwise_model(seed: int = 7) -> onnx.ModelProto:
    """conv 3→8 + ReLU, depthwise 3×3/2 (group 8) + ReLU, pointwise 8→16 + ReLU, global pool,
    Reshape (constant target starting with the batch), Gemm 16→5: seeded random weights."""
    rng = np.random.default_rng(seed)

    def init(name: str, shape: tuple[int, ...], scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("c1w", (8, 3, 3, 3), 0.4), init("c1b", (8,), 0.1), init("dww", (8, 1, 3, 3), 0.5),
             init("dwb", (8,), 0.1), init("pww", (16, 8, 1, 1), 0.4), init("fcw", (5, 16), 0.5), init("fcb", (5,), 0.1),
             numpy_helper.from_array(np.array([1, 16], dtype=np.int64), "shape")]
    nodes = [
        helper.make_node("Conv", ["input", "c1w", "c1b"], ["a"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["a1"], name="relu1"),
        helper.make_node("Conv", ["a1", "dww", "dwb"], ["b"], name="dw", group=8, strides=[2, 2], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["b"], ["b1"], name="relu2"),
        helper.make_node("Conv", ["b1", "pww"], ["c"], name="pw"),
        helper.make_node("Relu", ["c"], ["c1"], name="relu3"),
        helper.make_node("GlobalAveragePool", ["c1"], ["d"], name="pool"),
        helper.make_node("Reshape", ["d", "shape"], ["e"], name="reshape"),
        helper.make_node("Gemm", ["e", "fcw", "fcb"], ["output"], name="fc", transB=1),
    ]
    g = helper.make_graph(nodes, "depthwise",
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 12, 12])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def matmul_model(seed: int = 11) -> onnx.ModelProto:
    """MatMul of a (1, 4, 6) input by a 6×5 constant (4 positions) + bias + ReLU, Reshape to
    (1, 20), Gemm with transB 0, alpha 0.5, beta 2: seeded random weights."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("w", (6, 5)), ("b", (5,)), ("g", (20, 3)), ("c", (3,)))]
    inits.append(numpy_helper.from_array(np.array([1, 20], dtype=np.int64), "shape"))
    nodes = [
        helper.make_node("MatMul", ["input", "w"], ["a"], name="mm"),
        helper.make_node("Add", ["a", "b"], ["a1"], name="bias"),
        helper.make_node("Relu", ["a1"], ["a2"], name="relu"),
        helper.make_node("Reshape", ["a2", "shape"], ["r"], name="reshape"),
        helper.make_node("Gemm", ["r", "g", "c"], ["output"], name="fc", alpha=0.5, beta=2.0),
    ]
    g = helper.make_graph(nodes, "matmul", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4, 6])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def conv1d_model(seed: int = 13) -> onnx.ModelProto:
    """1-D convolutions: 2→4, kernel 3, stride 2, dilation 2, padding 1 + ReLU; then 4→4
    grouped by 2, kernel 2: seeded random weights."""
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.5).astype(np.float32), n)
             for n, s in (("w1", (4, 2, 3)), ("b1", (4,)), ("w2", (4, 2, 2)))]
    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["a"], name="c1", strides=[2], pads=[1, 1], dilations=[2]),
        helper.make_node("Relu", ["a"], ["a1"], name="relu"),
        helper.make_node("Conv", ["a1", "w2"], ["output"], name="c2", group=2),
    ]
    g = helper.make_graph(nodes, "conv1d", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 2, 15])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 4, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def zoo(name: str) -> tuple[Graph, onnx.ModelProto]:
    shape = RESNET_SHAPE if name == "resnet_small" else None
    if name in ("depthwise", "matmul", "conv1d"):
        model = {"depthwise": depthwise_model, "matmul": matmul_model, "conv1d": conv1d_model}[name]()
        return graph_from_onnx(model, name=name, options=ParseOptions()), model
    return load_model(f"zoo:{name}", ParseOptions(input_shape=shape)), load_onnx(name, shape)


def inputs_for(graph: Graph, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).random((n, *graph.tensor(graph.inputs[0]).shape[1:]), dtype=np.float32)


def compile_to(tmp: Path, graph: Graph, preset: str = "default", overrides: tuple[str, ...] = (),
               calibration: np.ndarray | None = None) -> tuple[hwmap.Target, hwmap.Legalized, hwmap.Artifacts]:
    """legalize → map → emit, as the flow does; the artifacts are read back from disk."""
    target = load_target(f"analog_imc:{preset}", list(overrides))
    target.calibration = calibration
    legal = legalize(graph, target)
    assert legal.fits, legal.violations
    mapping = plugin.hwmap_map(legal.graph, target)
    emit.write_program(mapping, target, tmp).write_manifest()
    return target, legal, hwmap.Artifacts.read(tmp)


def onnxruntime_outputs(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])


# ------------------------------------------------------------------------------ exactness
@pytest.mark.parametrize("name", ["chapter_cnn", "digits_mlp", "resnet_small", "depthwise", "matmul", "conv1d"])
def test_without_adc_rounding_equals_fake_quantized_reference(tmp_path: Path, name: str) -> None:
    """A 16-bit ADC never rounds a column sum here (shift 0): the crossbar result is exactly
    Σ q_x·q_w, and every tensor the program declares quantized is held on its grid, so the
    simulation is hwmap's shared quantized reference (``hwmap.execute.run(...,
    quantized=True)``): bit for bit on every quantized tensor, up to float32 rounding on the
    others (a layer's float32 output before it is re-quantized, the graph output)."""
    from hwmap.execute import run

    graph, _ = zoo(name)
    x = inputs_for(graph, 6)
    target, legal, art = compile_to(tmp_path, graph, overrides=("hardware.adc_bits=16",), calibration=x)
    program = read_program(art.path("program.bin"))
    assert all(not a.shifts.any() for a in program.adc)
    _, _, env = simulator.run_program(program, {graph.inputs[0]: x}, collect=True)
    ref = run(legal.graph, {graph.inputs[0]: x}, quantized=True, collect=True)
    quantized = 0
    for t in program.tensors:
        out, want = env[t.name], ref[t.name]
        assert out.shape == want.shape and out.dtype == np.float32, t.name
        if t.flags & 4:
            assert _same_bits(out, want), t.name
            quantized += 1
        else:
            assert np.max(np.abs(out - want)) <= 1e-6 * max(1.0, float(np.max(np.abs(want)))) * 4, t.name
    assert quantized and all(program.tensors[lay.input].flags & 4 for lay in program.layers)


def test_resnet_tensors_are_on_their_grids(tmp_path: Path) -> None:
    """Issue 12: on resnet_small every tensor the program declares 8-bit quantized (layer
    outputs, the ReLUs after the residual adds, the flattened pool) holds values on its grid
    — ``scale·(q − zero_point)`` with an integer code ``q`` in range — as the hardware
    would hold them, not a float up to half a step off."""
    graph, _ = zoo("resnet_small")
    x = inputs_for(graph, 4)
    _, _, art = compile_to(tmp_path, graph, calibration=x)
    program = read_program(art.path("program.bin"))
    _, _, env = simulator.run_program(program, {graph.inputs[0]: x}, collect=True)
    checked = 0
    for t in program.tensors:
        if not t.flags & 4:
            continue
        assert t.q_bits == 8
        scale, zero = float(program.const(t.q_scale).reshape(-1)[0]), float(program.const(t.q_zero_point).reshape(-1)[0])
        code = env[t.name].astype(np.float64) / scale + zero
        assert np.all(np.abs(code - np.round(code)) <= 1e-3), t.name
        lo, hi = (-128 + t.q_narrow, 127) if t.q_signed else (0, 255 - t.q_narrow)
        assert code.min() >= lo - 1e-3 and code.max() <= hi + 1e-3, t.name
        checked += 1
    digital_out = {o for d in program.digital for o in d.outputs}
    assert checked >= 6 and any(program.tensors[o].flags & 4 for o in digital_out)


def _layer_bound_check(program, legal: Graph, env: dict[str, np.ndarray]) -> int:
    """Check every crossbar layer against the error bound of the simulator's docstring, on
    the inputs the simulation fed it; return how many output values were checked."""
    checked = 0
    for lid, rec in enumerate(program.layers):
        node = legal.node(rec.name)
        compute = plan(node).compute if node.op.startswith("Fused") else node
        slot = weight_slot(node)
        x = env[program.tensors[rec.input].name].astype(np.float64)
        qx = legal.tensor(node.inputs[0]).quant
        xhat = qx.dequantize(qx.quantize(x))
        w = compute.params[slot].astype(np.float64)
        what = node.param_quant[slot].dequantize(node.param_quant[slot].quantize(w))
        opdef = get_op(compute.op)

        def lin(a: np.ndarray, weights: np.ndarray) -> np.ndarray:
            """The layer's linear map (no bias) with ``weights``, on ``a``."""
            c = compute.copy()
            c.params = {slot: weights}
            return opdef.evaluate(c, [a])[0].astype(np.float64)

        y_float = opdef.evaluate(compute, [x.astype(np.float32)])[0].astype(np.float64)
        # Σ|x̂−x|·|ŵ| + Σ|x|·|ŵ−w|: the same linear map on absolute values, without bias
        bound = lin(np.abs(xhat - x), np.abs(what)) + lin(np.abs(x), np.abs(what - w))
        adc = simulator.adc_error_bound(program, lid)
        adc = adc.reshape((1, -1) + (1,) * (y_float.ndim - 2)) if rec.kernel else adc
        y = env[f"{rec.name}/acc"].astype(np.float64)
        slack = 1e-6 * (np.abs(y_float) + 1.0)  # float32 rounding of the simulated value
        assert np.all(np.abs(y - y_float) <= bound + adc + slack), rec.name
        checked += y.size
    return checked


def test_error_bound_per_layer_analytic_full_scale(tmp_path: Path) -> None:
    """Without calibration the ADC full scale is the worst case: nothing clips and every
    layer stays within input + weight + ADC rounding (resnet_small: conv, residual add)."""
    graph, _ = zoo("resnet_small")
    x = inputs_for(graph, 4)
    target, legal, art = compile_to(tmp_path, graph)
    program = read_program(art.path("program.bin"))
    assert any(a.shifts.any() for a in program.adc)  # the default 8-bit ADC does round here
    _, activity, env = simulator.run_program(program, {graph.inputs[0]: x}, collect=True)
    assert not any(activity["adc_clipped"].values())
    assert _layer_bound_check(program, legal.graph, env) > 0


def test_error_bound_per_layer_calibrated_full_scale(tmp_path: Path) -> None:
    """Calibrated on the data it then runs (digits_cnn, trained): tighter full scales, still
    within the bound wherever no conversion clipped."""
    graph, _ = zoo("digits_cnn")
    x = load_data("digits").x[:64]
    _, legal, art = compile_to(tmp_path, graph, calibration=x)
    program = read_program(art.path("program.bin"))
    assert program.config.adc_calibration == 1
    _, activity, env = simulator.run_program(program, {graph.inputs[0]: x}, collect=True)
    assert not any(activity["adc_clipped"].values())
    _layer_bound_check(program, legal.graph, env)


# ------------------------------------------------------------------------------ onnxruntime
@pytest.mark.parametrize(("name", "rel"), [("chapter_cnn", 0.05), ("digits_mlp", 0.05), ("digits_cnn", 0.05),
                                           ("resnet_small", 0.08), ("depthwise", 0.05), ("matmul", 0.05),
                                           ("conv1d", 0.05)])
def test_matches_onnxruntime_on_the_zoo(tmp_path: Path, name: str, rel: float) -> None:
    """Default preset (8-bit everything, bit-serial inputs, calibrated ADC) against
    onnxruntime on the original model: small error, and the same top-1 for classifiers."""
    graph, model = zoo(name)
    x = load_data("digits").x[:32] if name.startswith("digits") else inputs_for(graph, 8)
    target, _, art = compile_to(tmp_path, graph, calibration=x)
    out = simulator.simulate(art, target, {graph.inputs[0]: x}).outputs[graph.outputs[0]]
    ref = onnxruntime_outputs(model, x)
    assert out.shape == ref.shape
    assert np.max(np.abs(out - ref)) <= rel * np.max(np.abs(ref))
    if ref.ndim == 2 and name not in ("depthwise", "matmul"):
        assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9


def test_digits_cnn_top1_agreement_on_all_of_digits(tmp_path: Path) -> None:
    """Issue 3: digits_cnn on the default preset, calibrated on zoo:digits, agrees with
    onnxruntime on at least 99 % of the 360 samples."""
    graph, model = zoo("digits_cnn")
    data = load_data("digits")
    target, _, art = compile_to(tmp_path, graph, calibration=data.x)
    out = simulator.simulate(art, target, {graph.inputs[0]: data.x}).outputs[graph.outputs[0]]
    sess = ort.InferenceSession(load_onnx("digits_cnn", (len(data.x), 1, 8, 8)).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"input": data.x})[0]
    assert len(out) == 360
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.99


# ------------------------------------------------------------------------------ activity
def test_activity_counts(tmp_path: Path) -> None:
    """MVMs, ADC conversions and cell reads follow from the placements; DAC conversions are
    the nonzero input bits driven (digits_mlp: fc1's inputs are the image's 8-bit codes)."""
    graph, _ = zoo("digits_mlp")
    x = load_data("digits").x[:20]
    small = ("hardware.cores=2", "hardware.crossbar_rows=32", "hardware.crossbar_cols=64", "mapper.strategy=\"greedy\"")
    target, legal, art = compile_to(tmp_path, graph, overrides=small, calibration=x)
    program = read_program(art.path("program.bin"))
    act = simulator.simulate(art, target, {graph.inputs[0]: x}).activity
    assert act["samples"] == 20
    for lid, rec in enumerate(program.layers):
        blocks = [b for b in program.blocks if b.layer == lid]
        reads = {(b.cycle, b.core, b.group, b.row_start, b.elem_row) for b in blocks}
        assert act["mvms"][rec.name] == len(reads) * rec.planes * rec.positions
        assert act["adc_conversions"][rec.name] == sum(b.filter_count * rec.cols_per_filter for b in blocks) * \
            rec.planes * rec.positions
        assert act["cell_reads"][rec.name] == sum(b.row_count * b.filter_count * rec.cols_per_filter
                                                  for b in blocks) * rec.planes * rec.positions
    # fc1 reads the flattened image: each read drives the set bits of its rows' 8-bit codes
    fc1 = program.layers[0]
    q = legal.graph.tensor(legal.graph.node(fc1.name).inputs[0]).quant
    codes = q.quantize(x.reshape(20, -1)).astype(np.uint8)  # unsigned 8-bit: the image is never negative
    bits = np.unpackbits(codes[..., None], axis=-1).sum(axis=(0, 2)) / 20
    reads = {(b.cycle, b.core, b.row_start, b.row_count, b.elem_row) for b in program.blocks if b.layer == 0}
    assert len({r[2] for r in reads}) == 2 and len(reads) > 2  # two row tiles, spilled over cores
    expect = sum(bits[r0:r0 + rc].sum() for _, _, r0, rc, _ in reads)
    assert act["dac_conversions"][fc1.name] == pytest.approx(expect)
    assert len(act["cycle_time_s"]) == program.config.computation_cycles >= 2
    assert all(t > 0 for t in act["cycle_time_s"])
    assert act["noc_bits"] == sum(t.bytes * 8 for t in program.noc) > 0


# ------------------------------------------------------------------------------ noise
def test_noise_is_seeded_and_degrades_with_drift(tmp_path: Path) -> None:
    graph, model = zoo("digits_cnn")
    x = load_data("digits").x[:120]
    ref = onnxruntime_outputs(model, x)
    base, _, art = compile_to(tmp_path, graph, calibration=x)
    quiet = [simulator.simulate(art, base, {graph.inputs[0]: x}).outputs["output"] for _ in range(2)]
    assert np.array_equal(quiet[0], quiet[1])  # noise off: exact repeatability

    def noisy(**noise: object) -> np.ndarray:
        t = load_target("analog_imc:default", ["noise.enabled=true"] + [f"noise.{k}={v}" for k, v in noise.items()])
        return simulator.simulate(art, t, {graph.inputs[0]: x}).outputs["output"]

    a, b = noisy(seed=3), noisy(seed=3)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, noisy(seed=4))
    assert not np.array_equal(a, quiet[0])
    err = [np.mean(np.abs(noisy(seed=3, t_inference_s=t) - ref)) for t in (20.0, 3600.0, 3.15e7)]
    assert err[0] < err[1] < err[2]


# ------------------------------------------------------------------------------ disk, batch, bad input
def test_runs_from_disk_only_and_any_batch(tmp_path: Path) -> None:
    """The artifacts alone (moved away from where they were written) give the same result;
    one sample at a time equals the whole batch (a constant Reshape target is rebased)."""
    graph, model = zoo("depthwise")
    x = inputs_for(graph, 5)
    target, _, art = compile_to(tmp_path / "a", graph, calibration=x)
    whole = simulator.simulate(art, target, {"input": x}).outputs["output"]
    shutil.move(str(tmp_path / "a"), str(tmp_path / "b"))
    moved = simulator.simulate(hwmap.Artifacts.read(tmp_path / "b"), target, {"input": x}).outputs["output"]
    assert np.array_equal(whole, moved)
    one = np.concatenate([simulator.simulate(hwmap.Artifacts.read(tmp_path / "b"), target,
                                             {"input": x[i:i + 1]}).outputs["output"] for i in range(5)])
    assert np.array_equal(whole, one)
    assert np.max(np.abs(whole - onnxruntime_outputs(model, x))) <= 0.05 * np.max(np.abs(whole))


def test_bad_inputs_and_corrupt_program(tmp_path: Path) -> None:
    graph, _ = zoo("digits_mlp")
    target, _, art = compile_to(tmp_path, graph)
    good = inputs_for(graph, 2)
    nan = good.copy()
    nan[1, 0, 2, 3] = np.nan
    for bad, what in (({}, "missing input"), ({"input": good, "other": good}, "unknown input"),
                      ({"input": good[:, :, :4]}, "shape"), ({"input": np.zeros((0, 1, 8, 8))}, "shape"),
                      ({"input": nan}, "NaN")):
        with pytest.raises(DataError, match=what):
            simulator.simulate(art, target, bad)
    data = bytearray(art.path("program.bin").read_bytes())
    data[len(data) // 2] ^= 0x40
    art.path("program.bin").write_bytes(bytes(data))
    with pytest.raises(TargetError, match="checksum"):
        simulator.simulate(art, target, {"input": good})


def test_pcm_noise_model_follows_the_published_formulas() -> None:
    """aihwkit PCMLikeNoiseModel (Nandakumar et al., ICECS 2019): σ = 0.26348 + 1.9650·ĝ −
    1.1731·ĝ² µS at g_max 25 µS, drift (t / 20 s)^−ν; the sampled cells have that spread, in
    level units."""
    from hwmap_analog_imc.hardware import NoiseConfig
    from hwmap_analog_imc.noise import drift_factor, noisy_levels, programming_sigma_us

    assert programming_sigma_us(np.array([0.0, 1.0]), 25.0) == pytest.approx([0.26348, 1.05538])
    assert drift_factor(20.0, 0.06) == 1.0 and drift_factor(2000.0, 0.06) == pytest.approx(100 ** -0.06)
    levels = np.full((400, 500), 10, dtype=np.uint8)  # ĝ = 10/15
    got = noisy_levels(levels, 15, NoiseConfig(enabled=True, seed=5), block=0)
    sigma_levels = programming_sigma_us(np.array(10 / 15), 25.0) / 25.0 * 15
    assert got.mean() == pytest.approx(10, abs=0.01) and got.std() == pytest.approx(sigma_levels, rel=0.02)
    drifted = noisy_levels(levels, 15, NoiseConfig(enabled=True, seed=5, t_inference_s=2000.0), block=0)
    np.testing.assert_allclose(drifted, got * 100 ** -0.06, rtol=1e-5)
    assert not np.array_equal(got, noisy_levels(levels, 15, NoiseConfig(enabled=True, seed=5), block=1))


# ------------------------------------------------------------------------------ a straightforward executor
def straightforward_codes(lay, x: np.ndarray) -> np.ndarray:
    """DAC codes ``(G, N, positions, rows)`` int64 by the documented formula, unrolled one
    kernel offset at a time (rows C_in-major, then the kernel offsets)."""
    q = np.clip(np.round(x.astype(np.float64) / lay.in_scale) + lay.in_zero_point, lay.in_qmin, lay.in_qmax)
    u = (q - lay.in_qmin).astype(np.int64)
    n = len(u)
    if not lay.kernel:
        return u.reshape(1, n, lay.positions, lay.rows)
    pad = [(0, 0), (0, 0)] + list(zip(lay.pads_begin, lay.pads_end))
    u = np.pad(u, pad, constant_values=lay.in_zero_point - lay.in_qmin)
    c = u.shape[1]
    cols = np.zeros((n, c, *lay.out_spatial, *lay.kernel), dtype=np.int64)
    for k in np.ndindex(*lay.kernel):
        window = tuple(slice(kk * d, kk * d + (o - 1) * s + 1, s)
                       for kk, d, o, s in zip(k, lay.dilations, lay.out_spatial, lay.strides))
        cols[(slice(None), slice(None)) + (slice(None),) * len(k) + k] = u[(slice(None), slice(None)) + window]
    g = lay.groups
    cols = cols.reshape(n, g, c // g, lay.positions, -1)  # (N, G, C/G, P, K)
    return cols.transpose(1, 0, 3, 2, 4).reshape(g, n, lay.positions, lay.rows)


def straightforward_run(program, x: np.ndarray) -> tuple[np.ndarray, dict]:
    """The program on ``x`` without any of the simulator's shortcuts: per READ, block, DAC
    plane and column, integer column sums and the ADC as integer arithmetic
    (``(S + 2^(s−1)) >> s``, clipped), shift-and-add in int64, then ACCUM, dequantization
    and the post-ops and digital ops with hwmap's reference ops. Noise off. Returns the
    first graph output and the activity (the counts, DAC conversions summed READ by READ)."""
    from hwmap_analog_imc.program import FLAG_INPUT, FLAG_OUTPUT, NONE, AccumRec, ReadRec

    cfg = program.config
    names = [t.name for t in program.tensors]
    n = len(x)
    x_id = next(i for i, t in enumerate(program.tensors) if t.flags & FLAG_INPUT)
    env = {x_id: on_grid(program, x_id, x.astype(np.float32))}
    accum = {a.block: a for a in program.schedule if isinstance(a, AccumRec)}
    amax = 2**cfg.adc_bits - 1
    act = {"mvms": {}, "adc_conversions": {}, "cell_reads": {}, "dac_conversions": {}, "adc_clipped": {}}
    time_of: dict[tuple[int, int], float] = {}

    def node(rec, inputs, outputs):
        import json
        return hwmap.Node(rec.name, rec.op, inputs, outputs, json.loads(rec.attrs),
                          {slot: program.const(r) for slot, r in rec.params})

    steps = sorted([(lay.order, 0, i) for i, lay in enumerate(program.layers)]
                   + [(d.order, 1, i) for i, d in enumerate(program.digital)])
    for _, kind, i in steps:
        if kind == 1:
            d = program.digital[i]
            nd = node(d, [names[t] for t in d.inputs], [names[t] for t in d.outputs])
            if nd.op == "Reshape" and n != cfg.batch and int(nd.params["shape"][0]) == cfg.batch:
                nd.params = {**nd.params, "shape": np.concatenate([[n], nd.params["shape"][1:]])}
            fixed = any(program.tensors[t].flags & 4 for t in d.outputs)  # computes on exact values
            args = [env[t].astype(np.float64) if fixed else env[t] for t in d.inputs]
            res = get_op(nd.op).evaluate(nd, args)
            env.update((t, on_grid(program, t, v) if fixed else v) for t, v in zip(d.outputs, res))
            continue
        lay = program.layers[i]
        u = straightforward_codes(lay, env[lay.input])
        coef = program.const(lay.coef).astype(np.int64)
        cpf = lay.cols_per_filter
        acc = np.zeros((lay.groups, n, lay.positions, lay.filters), dtype=np.int64)
        mvms = adc = cells = clipped = 0
        dac = 0.0
        for r in (s for s in program.schedule if isinstance(s, ReadRec) and s.layer == i):
            sub = u[r.group, :, r.pos_start:r.pos_start + r.pos_count, r.row_start:r.row_start + r.row_count]
            digits = [(sub >> (p * cfg.dac_bits)) & (2**cfg.dac_bits - 1) for p in range(lay.planes)]
            dac += float(sum(int(np.count_nonzero(dg)) for dg in digits)) / n
            mvms += r.pos_count * lay.planes
            cols = []
            for b in r.blocks:
                blk, a = program.blocks[b], accum[b]
                levels = program.weights[b].cells.astype(np.float64)
                fc = blk.filter_count
                y = np.zeros((n, r.pos_count, fc), dtype=np.int64)
                for p, dg in enumerate(digits):
                    s_sum = (dg.astype(np.float64) @ levels).astype(np.int64)  # exact: small integers
                    shift = np.tile(program.adc[b].shifts[p].astype(np.int64), fc)
                    half = np.where(shift > 0, 1 << np.maximum(shift - 1, 0), 0)
                    code = (s_sum + half) >> shift
                    clipped += int(np.count_nonzero(code > amax))
                    code = np.minimum(code, amax)
                    y += ((code << shift) * np.tile(coef, fc) << (p * cfg.dac_bits)).reshape(n, -1, fc, cpf).sum(3)
                y += program.const(a.offset).astype(np.int64) + a.xsum_factor * sub.sum(axis=2, keepdims=True)
                acc[blk.group, :, r.pos_start:r.pos_start + r.pos_count, blk.filter_start:blk.filter_start + fc] += y
                cols.append(np.arange(blk.elem_col * cfg.element_cols, blk.elem_col * cfg.element_cols + fc * cpf))
                cells += r.pos_count * lay.planes * blk.row_count * fc * cpf
            col = np.concatenate(cols)
            adc += r.pos_count * lay.planes * col.size
            load = int(np.bincount(col // cfg.columns_per_adc).max())
            key = (r.cycle, r.core)
            time_of[key] = time_of.get(key, 0.0) + r.pos_count * lay.planes * (
                cfg.read_pulse_s + load * cfg.adc_conversion_s)
        g, f = lay.groups, lay.filters
        yq = acc.transpose(1, 2, 0, 3).reshape(n, lay.positions, g * f).astype(np.float64)
        yq = yq * (lay.in_scale * program.const(lay.w_scale).astype(np.float64))
        if lay.bias != NONE:
            yq = yq + program.const(lay.bias).astype(np.float64)
        shape = program.tensors[lay.input].shape
        yq = (yq.transpose(0, 2, 1).reshape(n, g * f, *lay.out_spatial) if lay.kernel
              else yq.reshape(n, *shape[1:-1], g * f)).astype(np.float32)
        for po in (p for p in program.postops if p.layer == i):
            nd = node(po, [f"in{j}" for j in range(len(po.extra) + 1)], ["out"])
            operands = [env[t] for t in po.extra]
            operands.insert(po.position, yq)
            yq = get_op(nd.op).evaluate(nd, operands)[0]
        env[lay.output] = on_grid(program, lay.output, yq)
        act["mvms"][lay.name], act["adc_conversions"][lay.name], act["cell_reads"][lay.name] = mvms, adc, cells
        act["dac_conversions"][lay.name], act["adc_clipped"][lay.name] = dac, clipped / n
    cycles = [0.0] * cfg.computation_cycles
    for (c, _), t in time_of.items():
        cycles[c] = max(cycles[c], t)
    for tr in program.noc:
        cycles[tr.cycle] += (tr.hops * cfg.hop_latency_cycles + -(-tr.bytes * 8 // cfg.link_width_bits)) / cfg.clock_hz
    act["cycle_time_s"] = cycles
    out = next(i for i, t in enumerate(program.tensors) if t.flags & FLAG_OUTPUT)
    return env[out], act


def on_grid(program, t: int, v: np.ndarray) -> np.ndarray:
    """Tensor ``t`` as its TENSORS record declares it held: ``s·(q − z)``, ``q =
    clip(round_half_even(v/s) + z, q_min, q_max)`` (float32), or ``v`` when not quantized."""
    rec = program.tensors[t]
    if not rec.flags & 4:
        return v
    s, z = (program.const(r).astype(np.float64).reshape(-1) for r in (rec.q_scale, rec.q_zero_point))
    if rec.flags & 8:  # per axis
        shape = [1] * v.ndim
        shape[rec.q_axis % v.ndim] = -1
        s, z = s.reshape(shape), z.reshape(shape)
    b = rec.q_bits
    lo, hi = (-(2 ** (b - 1)) + rec.q_narrow, 2 ** (b - 1) - 1) if rec.q_signed else (0, 2**b - 1 - rec.q_narrow)
    q = np.clip(np.round(v.astype(np.float64) / s) + z, lo, hi)
    return ((q - z) * s).astype(np.float32)


def _same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


STRAIGHTFORWARD_CASES = {
    # name: (model, preset, overrides, calibration samples (None: analytic full scale), samples
    # run); see case_inputs for the inputs
    "digits_cnn-calibrated-on-4": ("digits_cnn", "default", (), 4, 6),
    "matmul-signed": ("matmul", "default", ("hardware.adc_bits=6",), 6, 4),
    "conv1d-signed-offset-encoding": ("conv1d", "default", ('hardware.weight_encoding="offset"',), 6, 3),
    "depthwise-signed": ("depthwise", "default", ("hardware.adc_bits=6",), 4, 2),
    "resnet-saturated": ("resnet_small", "default", (), None, 1),
    "resnet-row-tiles-packed": ("resnet_small", "default", (), None, 2),
    "resnet-duplicated": ("resnet_small", "default", ('mapper.strategy="duplicated"',), 4, 2),
    "resnet-isaac-offset": ("resnet_small", "isaac-like", (), 4, 1),
    "depthwise-5bit-adc": ("depthwise", "default", ("hardware.adc_bits=5",), 4, 3),
    "matmul": ("matmul", "default", (), 6, 4),
    "conv1d-3bit-dac": ("conv1d", "default", ("hardware.dac_bits=3", "hardware.adc_bits=6"), 6, 5),
    "chapter-8bit-dac": ("chapter_cnn", "chapter-fig3.13", (), 2, 2),
}


def case_inputs(case: str, graph: Graph) -> np.ndarray:
    """Samples for a case: zoo:digits, else seeded uniform in [0, 1); "-signed": in [-1, 1)
    (a zero point above q_min: nonzero ACCUM offsets); "-saturated": far above the input
    range (every DAC digit 1: column sums reach their bound, the top of a packed field)."""
    if case.startswith("digits"):
        return load_data("digits").x
    x = inputs_for(graph, 12, seed=4)
    return 2 * x - 1 if "-signed" in case else x + 100 if "-saturated" in case else x


@pytest.fixture(params=["as-tuned", "small-chunks-always-packed"])
def tuning(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The simulator as tuned, and with every rounding layer packed and the ADC work and
    GEMMs cut into many small chunks (the same numbers, through every loop)."""
    if request.param != "as-tuned":
        monkeypatch.setattr(simulator, "_PACK_WORK", 0)
        monkeypatch.setattr(simulator, "_CHUNK", 2**10)
        monkeypatch.setattr(simulator, "_CHUNK_GEMM_ROWS", 4)
    return request.param


@pytest.mark.parametrize("case", sorted(STRAIGHTFORWARD_CASES))
def test_simulator_equals_straightforward_executor_bit_for_bit(tmp_path: Path, case: str, tuning: str) -> None:
    """The simulator's reordered arithmetic (transparent slices folded into one GEMM,
    packed planes, chunked ADC, im2col plans) against a per-plane, per-column executor
    written from the module docstring: the same bits for outputs, and the same activity."""
    model, preset, overrides, cal, runs = STRAIGHTFORWARD_CASES[case]
    graph, _ = zoo(model)
    data = case_inputs(case, graph)
    _, _, art = compile_to(tmp_path, graph, preset, overrides, None if cal is None else data[:cal])
    x = data[-runs:]
    sim = simulator.simulate(art, load_target(f"analog_imc:{preset}", list(overrides)), {graph.inputs[0]: x})
    ref, act = straightforward_run(read_program(art.path("program.bin")), x)
    assert _same_bits(sim.outputs[graph.outputs[0]], ref)
    for key, value in act.items():
        assert sim.activity[key] == value, key
    assert sim.activity["samples"] == runs


def test_the_comparison_exercises_every_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cases above cover what they should: packed planes (two, and more when every
    layer packs) and unpacked ones, units with per-plane shifts and with offsets, clipping
    conversions, transposed, gathered and direct inputs, several position segments, float64
    exact GEMMs."""
    seen: set[str] = set()
    for case, (model, preset, overrides, cal, runs) in sorted(STRAIGHTFORWARD_CASES.items()):
        graph, _ = zoo(model)
        data = case_inputs(case, graph)
        _, _, art = compile_to(tmp_path / case, graph, preset, overrides, None if cal is None else data[:cal])
        sim = simulator.Simulator(read_program(art.path("program.bin")))
        act = sim.run({graph.inputs[0]: data[-runs:]}).activity
        for lay in sim.layers:
            assert isinstance(lay, simulator.FastLayer), (case, lay.rec.name)
            seen |= {f"mode:{lay.mode}", f"k>1:{lay.k > 1}", f"exact:{lay.exact_dtype.__name__}"}
            seen |= {"segments>1"} if len(lay.segments) > 1 else set()
            seen |= {f"per-plane shifts:{u.weight is not None}" for u in lay.units}
            seen |= {"offsets with units"} if lay.units and any(seg.offsets.any() for seg in lay.segments) else set()
        seen |= {"clipped"} if any(act["adc_clipped"].values()) else set()
        monkeypatch.setattr(simulator, "_PACK_WORK", 0)
        seen |= {"k>2"} if any(lay.k > 2 for lay in simulator.Simulator(sim.program).layers) else set()
        monkeypatch.undo()
    assert seen >= {"mode:gather", "mode:transpose", "mode:direct", "k>1:True", "k>1:False", "exact:float32",
                    "exact:float64", "segments>1", "per-plane shifts:True", "per-plane shifts:False", "clipped",
                    "offsets with units", "k>2"}, seen


def test_a_layer_whose_sums_could_leave_float_exactness_runs_the_reference_kernel(tmp_path: Path) -> None:
    """An ADC shift of 60 makes the shift-and-add weights 2^60 and more: no float bound
    holds, so that layer runs the per-plane kernel, with the same results as the
    straightforward executor."""
    from hwmap_analog_imc.program import AdcRec

    graph, _ = zoo("digits_cnn")
    x = load_data("digits").x[:3]
    _, _, art = compile_to(tmp_path, graph)
    program = read_program(art.path("program.bin"))
    b = next(i for i, blk in enumerate(program.blocks) if blk.layer == 1)
    shifts = program.adc[b].shifts.copy()
    shifts[0, 0] = 60
    program.adc[b] = AdcRec(b, program.adc[b].adc_bits, shifts)
    sim = simulator.Simulator(program)
    assert [type(lay).__name__ for lay in sim.layers] == ["FastLayer", "_ReferenceLayer", "FastLayer"]
    out = sim.run({"input": x})
    ref, act = straightforward_run(program, x)
    assert _same_bits(out.outputs["output"], ref)
    assert out.activity["dac_conversions"] == act["dac_conversions"]


def test_progress_after_every_slice_and_at_the_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """simulate() tells target.report_progress after each slice of samples; slicing changes
    neither the outputs nor the activity."""
    graph, _ = zoo("digits_cnn")
    x = inputs_for(graph, 23)
    target, _, art = compile_to(tmp_path, graph, calibration=x)
    whole = simulator.simulate(art, target, {"input": x})
    per_sample = max(lay.bytes_per_sample for lay in simulator.Simulator.load(art, target).layers)
    monkeypatch.setattr(simulator, "_SLICE_BYTES", 5 * per_sample)  # 5 samples a slice
    calls: list[tuple[int, int]] = []
    target.progress = lambda done, total: calls.append((done, total))
    sliced = simulator.simulate(art, target, {"input": x})
    assert calls == [(5, 23), (10, 23), (15, 23), (20, 23), (23, 23)]
    assert _same_bits(sliced.outputs["output"], whole.outputs["output"])
    assert sliced.activity == whole.activity
    calls.clear()
    monkeypatch.undo()
    simulator.simulate(art, target, {"input": x})
    assert calls == [(23, 23)]  # one slice: one report, at the end


def test_session_load_then_run_equals_simulate(tmp_path: Path) -> None:
    """Simulator.load reads and prepares once; every run equals a fresh simulate(), with
    noise off and on (the noisy cells are drawn once, at load)."""
    graph, _ = zoo("resnet_small")
    x = inputs_for(graph, 3)
    target, _, art = compile_to(tmp_path, graph, calibration=x)
    noisy = load_target("analog_imc:default", ["noise.enabled=true", "noise.seed=2"])
    for t in (target, noisy):
        session = simulator.Simulator.load(art, t)
        assert all(isinstance(lay, simulator.FastLayer) == (t is target) for lay in session.layers)
        runs = [session.run({"input": x}) for _ in range(2)] + [simulator.simulate(art, t, {"input": x})]
        for r in runs[1:]:
            assert _same_bits(r.outputs["output"], runs[0].outputs["output"])
            assert r.activity == runs[0].activity
    w = simulator.Simulator.load(art, target).work()
    assert w["model"] > 0 and w["exact"] == w["model"] and w["rounding"] > 0


def funnel_program(program):
    """``program`` with the version-1 dataflow: every partial sum goes to its layer's home
    core (PSUM transfers from the blocks elsewhere), which finishes the whole output tensor
    and sends all of it to every other core that reads it; digital ops send their outputs
    whole likewise. Written here from the format's documentation, not from the emitter."""
    from dataclasses import replace

    from hwmap_analog_imc.program import AccumRec, ReadRec, TransferRec

    cfg = program.config
    mesh = cfg.mesh_cols

    def hops(a: int, b: int) -> int:
        return abs(a % mesh - b % mesh) + abs(a // mesh - b // mesh)

    noc: list = []
    reads = {b: r for r in program.schedule if isinstance(r, ReadRec) for b in r.blocks}
    for ins in program.schedule:
        if isinstance(ins, AccumRec):
            blk = program.blocks[ins.block]
            lay = program.layers[blk.layer]
            if blk.core != lay.home_core:
                r = reads[ins.block]
                bits = cfg.input_bits + cfg.weight_bits + max(1, int(np.ceil(np.log2(max(lay.rows, 2))))) + 1
                noc.append(TransferRec(blk.cycle, blk.core, lay.home_core, hops(blk.core, lay.home_core), lay.output,
                                       1, 1 if lay.kernel else 2, blk.group * lay.filters + blk.filter_start,
                                       blk.filter_count, r.pos_start, r.pos_count,
                                       -(-blk.filter_count * r.pos_count * bits // 8)))
    made = {lay.output: (lay.home_core, max(b.cycle for b in program.blocks if b.layer == i))
            for i, lay in enumerate(program.layers)}
    made.update({t: (d.core, d.cycle) for d in program.digital for t in d.outputs})
    readers: dict[tuple[int, int], int] = {}  # (tensor, core) -> first cycle it is read there
    for r in (ins for ins in program.schedule if isinstance(ins, ReadRec)):
        key = (program.layers[r.layer].input, r.core)
        readers[key] = min(readers.get(key, r.cycle), r.cycle)
    for d in program.digital:
        for t in d.inputs:
            readers[(t, d.core)] = min(readers.get((t, d.core), d.cycle), d.cycle)
    for po in program.postops:
        lay = program.layers[po.layer]
        cycle = max(b.cycle for b in program.blocks if b.layer == po.layer)
        for t in po.extra:
            readers[(t, lay.home_core)] = min(readers.get((t, lay.home_core), cycle), cycle)
    for (t, core), cycle in sorted(readers.items()):
        if t in made and made[t][0] != core:
            rec = program.tensors[t]
            size = int(np.prod(rec.shape[1:]))
            bits = rec.q_bits if rec.flags & 4 else cfg.input_bits
            noc.append(TransferRec(cycle, made[t][0], core, hops(made[t][0], core), t, 0, 0, 0, 1, 0, size,
                                   -(-size * bits // 8)))
    schedule = [replace(ins, dst_core=program.layers[program.blocks[ins.block].layer].home_core)
                if isinstance(ins, AccumRec) else ins for ins in program.schedule]
    return replace(program, schedule=schedule, noc=noc)


def test_duplicated_dataflow_same_outputs_less_traffic() -> None:
    """Copies finishing their outputs locally change where work happens and what moves, not
    what is computed: a duplicated resnet_small on 16 cores gives bit for bit the outputs of
    the same program with every partial sum sent to its layer's home core and whole tensors
    sent on from there (the version-1 dataflow, :func:`funnel_program`), which the
    simulator runs only with its NOC records; and it moves fewer bits and bit-hops."""
    graph = load_model("zoo:resnet_small")
    x = np.random.default_rng(3).random((2, *graph.tensor(graph.inputs[0]).shape[1:]), dtype=np.float32)
    t = load_target("analog_imc:default", ["hardware.cores=16", "mapper.strategy=duplicated"])
    program, _ = emit.build_program(plugin.hwmap_map(legalize(graph, t).graph, t))
    assert max(lay.replicas for lay in program.layers) > 1
    out, act, _ = simulator.run_program(program, {graph.inputs[0]: x})
    assert act["noc_bits"] == sum(tr.bytes * 8 for tr in program.noc) > 0
    assert act["noc_bit_hops"] == sum(tr.bytes * 8 * tr.hops for tr in program.noc)
    local = [ins for ins in program.schedule if hasattr(ins, "dst_core") and ins.dst_core == ins.core]
    assert len(local) > len({lay.home_core for lay in program.layers})  # copies finish on their own cores
    funnel = funnel_program(program).check("funnel")
    out_f, act_f, _ = simulator.run_program(funnel, {graph.inputs[0]: x})
    for k in out:
        assert out[k].tobytes() == out_f[k].tobytes()
    assert act["noc_bits"] < act_f["noc_bits"] and act["noc_bit_hops"] < act_f["noc_bit_hops"]
    from dataclasses import replace

    with pytest.raises(TargetError, match="waits for"):  # the funnel's partial sums do not move by themselves
        simulator.run_program(replace(funnel, noc=[]), {graph.inputs[0]: x})
