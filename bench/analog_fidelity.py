"""Fidelity of analog_imc against onnxruntime: top-1 agreement per model × preset, and where
the error of one run comes from, layer by layer.

    .venv/bin/python bench/analog_fidelity.py table [--seeds 0 1] [--models ...] [--presets ...]
    .venv/bin/python bench/analog_fidelity.py layers MODEL PRESET [--seed 0]

Each run: ``N = 360`` inputs (zoo:digits for the digits models and, enlarged to 3×16×16, for the
trained torch convnets; else seeded U(0, 1) images at the model's input shape, for the random torch
convnets times a U(0, 2) gain per image and channel), legalize → map → emit with the first 90 as calibration data →
simulate the last 270; the reference is onnxruntime on the ONNX model (for the torch convnets
in tests/analog_imc/hidden_convnets.py, their ``torch.onnx.export``). Printed per run: top-1 agreement of the simulation with
onnxruntime, and of hwmap's shared fake-quantized reference of the same legalized graph
(``hwmap.execute.run(..., quantized=True)``: weight and activation quantization, no ADC) —
the difference between the two is what the ADCs cost.

``layers`` prints, per crossbar layer, on the quantized reference's own input to that layer
(so earlier layers' errors do not count), in the layer's output units (RMS over all outputs):
the ADC rounding error (every conversion rounded, none clipped), the ADC clipping error
(the rest), the activation quantization error of the output grid (step/√12), and the
signal's standard deviation.
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

import hwmap
from hwmap import ParseOptions, load_data, load_model
from hwmap.config import load_target
from hwmap.execute import run
from hwmap_analog_imc import plugin, simulator
from hwmap_analog_imc.crossbar import LayerKernel, input_codes
from hwmap_analog_imc.program import AdcRec, read_program

CALIBRATION = 90
SAMPLES = 360
MODELS = {  # name: (source, input shape or None for the zoo default, data)
    "digits_mlp": ("zoo:digits_mlp", None, "digits"),
    "digits_cnn": ("zoo:digits_cnn", None, "digits"),
    "chapter_cnn": ("zoo:chapter_cnn", None, "uniform"),
    "resnet_small": ("zoo:resnet_small", (1, 3, 16, 16), "uniform"),
    "mobilenet_v1": ("zoo:mobilenet_v1", (1, 3, 32, 32), "uniform"),
    "residual_convnet": ("torch", (1, 3, 16, 16), "gain"),
    "plain_convnet": ("torch", (1, 3, 16, 16), "gain"),
    "trained_residual_convnet": ("torch", (1, 3, 16, 16), "digits16"),
    "trained_plain_convnet": ("torch", (1, 3, 16, 16), "digits16"),
}
#: The plain-torch convnets a user might bring (seeded random weights, or trained on the
#: digits): factories in this file.
CONVNETS = Path(__file__).resolve().parents[1] / "tests" / "analog_imc" / "hidden_convnets.py"
PRESETS = ("default", "chapter-fig3.13", "isaac-like")


def model_and_onnx(name: str) -> tuple[hwmap.Graph, bytes, tuple[int, ...]]:
    """The graph, its ONNX bytes (the onnxruntime reference) and the input shape."""
    source, shape, _ = MODELS[name]
    if source == "torch":
        import torch

        from hwmap.frontends.torch import graph_from_module, load_factory

        assert shape is not None
        factory = load_factory(f"{CONVNETS}:{name}")
        net = getattr(factory.module, factory.name)()
        graph = graph_from_module(net, name=name, options=ParseOptions(input_shape=shape))
        buf = io.BytesIO()
        torch.onnx.export(net, (torch.zeros(shape),), buf, dynamo=False,  # type: ignore[arg-type]
                          opset_version=17,
                          input_names=["input"], output_names=["output"])
        return graph, buf.getvalue(), shape
    from hwmap.zoo import load_onnx

    zoo = source.split(":", 1)[1]
    graph = load_model(source, ParseOptions(input_shape=shape) if shape else None)
    onnx_model = load_onnx(zoo, shape)
    in_shape = tuple(int(d) for d in graph.tensor(graph.inputs[0]).shape)
    return graph, onnx_model.SerializeToString(), in_shape


def inputs_for(name: str, shape: tuple[int, ...], seed: int) -> np.ndarray:
    if MODELS[name][2] in ("digits", "digits16"):
        x = np.ascontiguousarray(load_data("zoo:digits").x, dtype=np.float32)
        if MODELS[name][2] == "digits16":  # the trained convnets' 3×16×16 input
            from hwmap.frontends.torch import load_factory

            x = load_factory(f"{CONVNETS}:digits16").module.digits16(x)
        return x[np.random.default_rng(seed).permutation(len(x))] if seed else x
    rng = np.random.default_rng(seed)
    x = rng.random((SAMPLES, *shape[1:]), dtype=np.float32)
    if MODELS[name][2] == "gain":  # each image and channel its own brightness, U(0, 2)
        x *= rng.uniform(0.0, 2.0, (SAMPLES, shape[1]) + (1,) * (len(shape) - 2)).astype(np.float32)
    return x


def onnxruntime_outputs(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def _total(v: Any) -> int:
    return int(sum(v.values())) if isinstance(v, dict) else int(v)


def compile_run(name: str, preset: str, seed: int, outdir: Path, sets: dict[str, Any] | None = None
                ) -> dict[str, Any]:
    graph, onnx_bytes, shape = model_and_onnx(name)
    x = inputs_for(name, shape, seed)
    target = load_target(f"analog_imc:{preset}", [f"{k}={v}" for k, v in (sets or {}).items()])
    target.calibration = x[:CALIBRATION]
    legal = plugin.hwmap_legalize(graph, target)
    plugin.hwmap_emit(plugin.hwmap_map(legal.graph, target), target, outdir).write_manifest()
    scored = x[CALIBRATION:]
    sim = simulator.simulate(hwmap.Artifacts.read(outdir), target, {graph.inputs[0]: scored})
    out = graph.outputs[0]
    ref = onnxruntime_outputs(onnx_bytes, scored).reshape(len(scored), -1)
    fq = run(legal.graph, {graph.inputs[0]: scored}, quantized=True)[out].reshape(len(scored), -1)
    y = sim.outputs[out].reshape(len(scored), -1)
    return {"top1": float(np.mean(y.argmax(1) == ref.argmax(1))),
            "top1_fq": float(np.mean(fq.argmax(1) == ref.argmax(1))),
            "clipped": _total(sim.activity["adc_clipped"]), "conversions": _total(sim.activity["adc_conversions"]),
            "legal": legal.graph, "x": x, "outdir": outdir}


def table(args: argparse.Namespace) -> None:
    print(f"{'model':14s} {'preset':16s} seed  top1(sim) top1(fake-quant) clipped/conv  s")
    for name in args.models:
        for preset in args.presets:
            for seed in args.seeds:
                t0 = time.perf_counter()
                with tempfile.TemporaryDirectory() as d:
                    r = compile_run(name, preset, seed, Path(d), args.sets)
                print(f"{name:14s} {preset:16s} {seed:4d}  {r['top1']:.4f}    {r['top1_fq']:.4f}"
                      f"          {r['clipped'] / max(1, r['conversions']):.2e}  {time.perf_counter() - t0:5.1f}",
                      flush=True)


def column_gain(program: Any, kernel: LayerKernel, u: np.ndarray) -> float:
    """Mean over the layer's columns of how many shifts lower a column's own range would be
    than its block's (the ADC bits per-column full scales would gain on these inputs)."""
    top = 2.0**program.config.adc_bits - 1
    gains = []
    planes, cpf = kernel.rec.planes, kernel.rec.cols_per_filter
    for s in kernel.stacks:
        sub = u[s.groups][:, :, :, s.row_start:s.row_start + s.row_count].reshape(len(s.blocks), -1, s.row_count)
        sh = (kernel.dac * np.arange(planes)).reshape(1, planes, 1, 1)
        d = ((sub[:, None] >> sh) & (2**kernel.dac - 1)).astype(np.float64).reshape(len(s.blocks), -1, s.row_count)
        cols = np.matmul(d, s.levels.astype(np.float64)).reshape(len(s.blocks), planes, -1, s.filter_count, cpf)
        own = np.ceil(np.log2(np.maximum(cols.max(axis=2) / top, 1.0)))  # (nb, planes, fc, cpf)
        block = np.stack([program.adc[b].shifts for b in s.blocks]).astype(np.float64)[:, :, None, :]
        gains.append((block - own).reshape(-1))
    return float(np.mean(np.concatenate(gains)))


def layers(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        r = compile_run(args.model, args.preset, args.seed, Path(d), args.sets)
        program = read_program(Path(d) / "program.bin")
    print(f"{args.model} on {args.preset}, seed {args.seed}: top-1 {r['top1']:.4f} (fake-quantized reference "
          f"{r['top1_fq']:.4f})")
    legal, x = r["legal"], r["x"][CALIBRATION:CALIBRATION + 64]
    env = run(legal, {legal.inputs[0]: x}, quantized=True, collect=True)
    exact = replace(program, config=replace(program.config, adc_bits=40))
    exact.adc = [AdcRec(a.block, 40, np.zeros_like(a.shifts)) for a in program.adc]
    print(f"{'layer':28s} rows  shift(max)  adc_round  adc_clip   act_q     signal_sd  clipped  column_gain")
    for lid, lay in enumerate(program.layers):
        u = input_codes(lay, env[program.tensors[lay.input].name])
        k_adc, k_exact = LayerKernel(program, lid), LayerKernel(exact, lid)
        acc, clipped = k_adc.run(u)
        k_adc.amax = np.inf
        rounded, _ = k_adc.run(u)
        ref, _ = k_exact.run(u)
        scale = (lay.in_scale * program.const(lay.w_scale).astype(np.float64)).reshape(lay.groups, 1, 1, lay.filters)
        rms = lambda e: float(np.sqrt(np.mean(np.square(e * scale))))  # noqa: E731
        out = program.tensors[lay.output]
        act = float(np.max(program.const(out.q_scale))) / np.sqrt(12) if out.q_bits else 0.0
        shifts = max(int(program.adc[b].shifts.max()) for b, blk in enumerate(program.blocks) if blk.layer == lid)
        sd = float(np.std(ref * scale))
        print(f"{lay.name[:28]:28s} {lay.rows:4d}  {shifts:5d}      {rms(rounded - ref):.2e}  {rms(acc - rounded):.2e}"
              f"  {act:.2e}  {sd:.2e}  {clipped:7d}  {column_gain(program, k_adc, u):.2f}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("table")
    t.add_argument("--models", nargs="+", default=list(MODELS))
    t.add_argument("--presets", nargs="+", default=list(PRESETS))
    t.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    lay = sub.add_parser("layers")
    lay.add_argument("model")
    lay.add_argument("preset")
    lay.add_argument("--seed", type=int, default=0)
    for p in (t, lay):
        p.add_argument("--set", dest="sets", nargs="*", default=[], help="section.key=value overrides (TOML values, as --set)")
    args = ap.parse_args(argv)
    args.sets = dict(kv.split("=", 1) for kv in args.sets)
    table(args) if args.cmd == "table" else layers(args)


if __name__ == "__main__":
    main()
