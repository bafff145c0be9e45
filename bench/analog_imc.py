"""Benchmark: the analog_imc target's compile time, mapping quality and simulator speed.

Printed in one run, each next to its goal (issue 3, "Goals"):

1. Compile time of ``zoo:mobilenet_v1`` and ``zoo:resnet_small`` on ``analog_imc:default``
   (parse → legalize → map → emit → estimate, no data), per stage and in total. Goal:
   MobileNet V1 under 2 s.
2. Elements allocated over the capacity lower bound ``ceil(Σ M·N / element cells)`` on
   MobileNet V1 for the ``greedy`` and ``packed`` mappers, next to a NeuroSim-style
   allocation (every layer on its own whole crossbars, :func:`neurosim_style_elements`).
   Goal: ``packed`` within 5 % of the bound.
3. Simulator time over onnxruntime time for one inference (batch 1) of ``zoo:digits_cnn``,
   ``zoo:resnet_small`` and ``zoo:mobilenet_v1``: ``Simulator.run`` on the emitted artifacts
   against ``onnxruntime.InferenceSession.run`` on the zoo's ONNX model, both sessions built
   beforehand, both on one thread and both at their default threading (see
   :func:`simulator_section`). Goal: within 10×.

Each time is the best (minimum) of ``--repeat`` runs. Exit code 0 whatever the numbers:
this prints, it does not judge.

    python bench/analog_imc.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _timing import best_of



def stage_times(model: str, preset: str, repeat: int) -> dict[str, float]:
    """Best time of each stage of one compile (seconds)."""
    from hwmap import load_model
    from hwmap.config import load_target
    from hwmap.registry import get_registry

    reg = get_registry()
    times: dict[str, float] = {}
    target = load_target(preset)
    times["parse"], graph = best_of(lambda: load_model(model), repeat)
    times["legalize"], legal = best_of(lambda: reg.call("hwmap_legalize", target.kind, graph=graph, target=target),
                                       repeat)
    times["map"], mapping = best_of(lambda: reg.call("hwmap_map", target.kind, graph=legal.graph, target=target),
                                    repeat)

    def emit() -> Any:
        with tempfile.TemporaryDirectory() as d:
            return reg.call("hwmap_emit", target.kind, mapping=mapping, target=target, outdir=Path(d))

    times["emit"], _ = best_of(emit, repeat)
    times["estimate"], _ = best_of(lambda: reg.call("hwmap_estimate", target.kind, mapping=mapping, target=target,
                                                    activity=None), repeat)
    return times


def compile_section(repeat: int) -> None:
    from hwmap.config import load_target
    from hwmap.flow import compile_model

    print("1. compile time on analog_imc:default (no data), best of", repeat)
    for model in ("zoo:mobilenet_v1", "zoo:resnet_small"):
        total, res = best_of(lambda: compile_model(model, load_target("analog_imc:default"), None), repeat)
        stages = stage_times(model, "analog_imc:default", repeat)
        r = res.kpis.resources
        goal = "   goal < 2 s: " + ("met" if total < 2.0 else "NOT met") if model == "zoo:mobilenet_v1" else ""
        print(f"   {model:18s} compile {total:6.2f} s ({', '.join(f'{k} {v:.2f}' for k, v in stages.items())}); "
              f"{r['computation_cycles']} computation cycles on {r['cores_used']} cores{goal}")


def mapping_section() -> None:
    from hwmap import load_model
    from hwmap.config import load_target
    from hwmap.registry import get_registry
    from hwmap_analog_imc.hardware import Blueprint, columns_per_weight
    from hwmap_analog_imc.layers import crossbar_layers
    from hwmap_analog_imc.mapper import map_layers, neurosim_style_elements

    print("2. MobileNet V1 on analog_imc:default: elements allocated / lower bound")
    target = load_target("analog_imc:default")
    legal = get_registry().call("hwmap_legalize", "analog_imc", graph=load_model("zoo:mobilenet_v1"), target=target)
    bp = Blueprint.from_config(target.config)
    layers = crossbar_layers(legal.graph, columns_per_weight(target.config.hardware))
    bound = None
    for strategy in ("greedy", "packed"):
        t0 = time.perf_counter()
        res = map_layers(layers, bp, strategy)
        dt = time.perf_counter() - t0
        bound = res.elements_lower_bound
        ratio = res.elements_allocated / bound
        goal = f"   goal ≤ 1.05: {'met' if ratio <= 1.05 else 'NOT met'}" if strategy == "packed" else ""
        print(f"   {strategy:14s} {res.elements_allocated:8d} / {bound} = {ratio:.4f} "
              f"({res.computation_cycles} cycles, {dt * 1e3:.0f} ms){goal}")
    ns = neurosim_style_elements(layers, bp)
    print(f"   {'NeuroSim-style':14s} {ns:8d} / {bound} = {ns / bound:.4f} (every layer on its own crossbars)")


SIM_MODELS = ("digits_cnn", "resnet_small", "mobilenet_v1")


def simulator_section(repeat: int) -> None:
    """Section 3: one inference of each model, simulator against onnxruntime.

    Both sides are timed as sessions: ``Simulator.load`` (read, decode and prepare
    ``program.bin``) and ``InferenceSession(...)`` are built once, outside the timing; then
    ``Simulator.run`` and ``InferenceSession.run`` each run the same batch-1 input, best of
    ``max(repeat, 10)`` (``repeat`` for MobileNet). Each model is timed twice: both sides on
    one thread (BLAS limited through threadpoolctl, onnxruntime ``intra_op_num_threads=1``)
    and both at their defaults (all cores). Load time and ``simulate()`` (load + run, what
    the flow calls per run) are printed separately, and the simulator's GEMM work per
    inference in multiply-adds against the model's MACs (what onnxruntime computes)."""
    import onnxruntime as ort

    from hwmap import Artifacts
    from hwmap.config import load_target
    from hwmap.flow import compile_model
    from hwmap.zoo import load_onnx
    from hwmap_analog_imc.simulator import Simulator, simulate

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - then only the default threading is compared
        threadpool_limits = None
    print("3. one inference (batch 1): analog_imc simulator run / onnxruntime run (sessions built once); "
          f"numpy BLAS: {_blas()}")
    modes = [("1 thread", 1), ("default threads", 0)] if threadpool_limits else [("default threads", 0)]
    for name in SIM_MODELS:
        target = load_target("analog_imc:default")
        runs = repeat if name == "mobilenet_v1" else max(repeat, 10)
        with tempfile.TemporaryDirectory() as d:
            res = compile_model(f"zoo:{name}", target, Path(d) / "out")
            shape = res.graph.tensor(res.graph.inputs[0]).shape
            x = np.random.default_rng(0).random(shape, dtype=np.float32)
            inputs = {res.graph.inputs[0]: x}
            art = Artifacts.read(Path(d) / "out" / "artifacts")
            t_load, sim = best_of(lambda: Simulator.load(art, target), repeat)
            t_simulate, _ = best_of(lambda: simulate(art, target, inputs), repeat)
        work = sim.work()
        gemm = work["exact"] + work["rounding"]
        print(f"   zoo:{name}: load {t_load * 1e3:.1f} ms, simulate() = load + run {t_simulate * 1e3:.1f} ms; "
              f"GEMM work {gemm / 1e6:.1f} M multiply-adds = {gemm / work['model']:.1f}× the model's "
              f"{work['model'] / 1e6:.2f} M MACs")
        for label, threads in modes:
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = threads
            sess = ort.InferenceSession(load_onnx(name).SerializeToString(), opts, providers=["CPUExecutionProvider"])
            feed = {sess.get_inputs()[0].name: x}
            with threadpool_limits(threads) if threads and threadpool_limits else contextlib.nullcontext():
                sim.run(inputs)  # warm-up, as for onnxruntime
                sess.run(None, feed)
                t_run, _ = best_of(lambda: sim.run(inputs), runs)
                t_ort, _ = best_of(lambda: sess.run(None, feed), max(runs, 20))
            ratio = t_run / t_ort
            print(f"      {label:15s} simulator {_ms(t_run)}, onnxruntime {_ms(t_ort)}: {ratio:7.1f}×   "
                  f"goal ≤ 10×: {'met' if ratio <= 10 else 'NOT met'}")


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def _blas() -> str:
    """The BLAS numpy calls and its kernels (OpenBLAS ``SkylakeX`` is AVX-512, ``Haswell``
    AVX2: about half the GEMM speed, e.g. when ``OPENBLAS_CORETYPE`` pins it)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover
        return "unknown"
    libs = [f"{i.get('internal_api')} {i.get('architecture', '')} ({i.get('num_threads')} threads)".strip()
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return ", ".join(libs) or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    compile_section(args.repeat)
    mapping_section()
    simulator_section(args.repeat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
