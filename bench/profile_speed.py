"""Benchmark: hwmap's profiler against fvcore, and ONNX parse time against model depth.

Measured in the same run, on the same machine:

1. MobileNet V1 (224×224): hwmap's parse + profile of the ONNX model against fvcore's
   ``FlopCountAnalysis(...).total()`` on the same network written in plain torch; the ratio
   hwmap / fvcore is printed. hwmap reports 568,740,352 conv + FC MACs and, under its
   ``fvcore`` convention, fvcore's own total (578,875,904: BN and the pool added); the
   time of ``profile`` alone on the parsed graph is printed too.
2. ``hwmap.load_model`` on synthetic chains of N layers (Conv 3×3 8→8 + Relu, 8×8 maps,
   built with ``onnx.helper``) for N = 50, 200, 800: time per layer for each, and the ratio
   of per-layer time at the largest N over the smallest. Parsing is linear in the number
   of layers when that ratio stays within the tolerance (default 2×): "linear: yes".

Each figure is the best (minimum) of ``--repeat`` runs, the usual way to time code on a
shared machine. Exit code 0 whatever the timings: this prints, it does not judge.

    python bench/profile_speed.py [--repeat 3] [--sizes 50 200 800] [--tolerance 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
from _timing import best_of



# -- 1. MobileNet V1: hwmap profile vs fvcore ----------------------------------------------
def torch_mobilenet_v1():
    """MobileNet V1 1.0 in plain torch (Howard et al., arXiv:1704.04861, 2017)."""
    import torch.nn as nn

    def cbr(cin: int, cout: int, k: int, s: int = 1, g: int = 1) -> nn.Module:
        return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    blocks = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
              (512, 1), (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
    layers, c = [cbr(3, 32, 3, 2)], 32
    for cout, s in blocks:
        layers += [cbr(c, c, 3, s, c), cbr(c, cout, 1)]
        c = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 1000)).eval()


def bench_mobilenet(repeat: int, threads: int, tmp: Path) -> dict[str, float]:
    import torch
    from fvcore.nn import FlopCountAnalysis

    import hwmap
    from hwmap.profile import profile

    torch.set_num_threads(threads)
    model = torch_mobilenet_v1()
    x = torch.randn(1, 3, 224, 224)
    path = tmp / "mobilenet_v1.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False, do_constant_folding=False)
    result: dict[str, int] = {}

    def ours() -> None:
        result["hwmap"] = profile(hwmap.load_model(str(path))).totals.macs

    graph = hwmap.load_model(str(path))

    def ours_profile_only() -> None:
        result["hwmap_fvcore"] = profile(graph, macs="fvcore").totals.macs

    def theirs() -> None:
        fca = FlopCountAnalysis(model, (x,))
        fca.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        result["fvcore"] = int(fca.total())

    t_ours = best_of(ours, repeat)[0]
    t_profile = best_of(ours_profile_only, repeat)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t_fv = best_of(theirs, repeat)[0]
    return {"hwmap_s": t_ours, "hwmap_profile_s": t_profile, "fvcore_s": t_fv, "hwmap_macs": result["hwmap"],
            "hwmap_fvcore_macs": result["hwmap_fvcore"], "fvcore_macs": result["fvcore"]}


# -- 2. parse time of synthetic chains -------------------------------------------------------
def chain_model(layers: int, channels: int = 8, size: int = 8):
    """An ONNX chain of ``layers`` × (Conv 3×3 pad 1, ``channels``→``channels``, + Relu)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "input"
    for i in range(layers):
        w = f"conv{i}.W"
        inits.append(numpy_helper.from_array(
            (rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), w))
        nodes.append(helper.make_node("Conv", [x, w], [f"conv{i}"], name=f"conv{i}", kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x = f"relu{i}"
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, f"chain{layers}",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info(x, TensorProto.FLOAT, shape)], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def bench_parse(sizes: list[int], repeat: int, tmp: Path) -> list[tuple[int, float]]:
    import onnx

    import hwmap

    out = []
    for n in sizes:
        path = tmp / f"chain{n}.onnx"
        onnx.save(chain_model(n), str(path))
        t = best_of(lambda: hwmap.load_model(str(path)), repeat)[0]
        out.append((n, t))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the best is kept (default 3)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50, 200, 800], help="chain lengths (default 50 200 800)")
    ap.add_argument("--tolerance", type=float, default=2.0,
                    help="largest per-layer time ratio (largest/smallest chain) still called linear (default 2)")
    ap.add_argument("--skip-fvcore", action="store_true", help="only the parse benchmark")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads for fvcore's traced forward pass (default 1, as hwmap's numpy code)")
    args = ap.parse_args(argv)
    if args.repeat < 1 or args.threads < 1 or any(n < 1 for n in args.sizes) or args.tolerance < 1:
        ap.error("--repeat, --threads and --sizes must be positive, --tolerance at least 1")

    from rich.console import Console
    from rich.table import Table

    console = Console()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_fvcore:
            r = bench_mobilenet(args.repeat, args.threads, tmp)
            t = Table(title="MobileNet V1 224×224: MAC count time (best of %d)" % args.repeat)
            for c in ("tool", "what", "MACs", "time (ms)"):
                t.add_column(c, justify="left" if c in ("tool", "what") else "right")
            t.add_row("hwmap", "load_model(.onnx) + profile()", f"{r['hwmap_macs']:,}", f"{1e3 * r['hwmap_s']:.1f}")
            t.add_row("hwmap", "profile(graph, macs='fvcore')", f"{r['hwmap_fvcore_macs']:,}",
                      f"{1e3 * r['hwmap_profile_s']:.1f}")
            t.add_row("fvcore 0.1.5", "FlopCountAnalysis(torch).total()", f"{r['fvcore_macs']:,}",
                      f"{1e3 * r['fvcore_s']:.1f}")
            console.print(t)
            console.print(f"hwmap (parse + profile) / fvcore time ratio: {r['hwmap_s'] / r['fvcore_s']:.2f}; "
                          f"same MAC total under the fvcore convention: "
                          f"{'yes' if r['hwmap_fvcore_macs'] == r['fvcore_macs'] else 'NO'}")
        rows = bench_parse(sorted(set(args.sizes)), args.repeat, tmp)
    t = Table(title="hwmap.load_model on Conv3×3+Relu chains (best of %d)" % args.repeat)
    for c in ("layers", "nodes", "parse (ms)", "per layer (ms)"):
        t.add_column(c, justify="right")
    for n, s in rows:
        t.add_row(str(n), str(2 * n), f"{1e3 * s:.1f}", f"{1e3 * s / n:.3f}")
    console.print(t)
    (n0, s0), (n1, s1) = rows[0], rows[-1]
    ratio = (s1 / n1) / (s0 / n0)
    console.print(f"per-layer time {n1} vs {n0} layers: {ratio:.2f}×  linear: "
                  f"{'yes' if ratio <= args.tolerance else 'no'} (tolerance {args.tolerance:g}×)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
