"""Benchmark: the pipelined_dnn target on MobileNet V1 at three multiplier budgets.

For ``zoo:mobilenet_v1`` (224×224, 568,740,352 MACs) on ``pipelined_dnn:default`` with
``hardware.multipliers`` = 256, 1024 and 4096, printed beside the goals of issue 10:

* **FPS / balanced bound**: the frame rate from the cycle simulation's measured initiation
  interval, ``f / II_sim``, over ``f·R/ΣW``. Goals: ≥ 0.90 at 256, ≥ 0.95 at 1024 and 4096
  (DNeuro's demo: 0.876);
* **simulated / estimated II**: the cycle simulation's initiation interval over the
  analytic ``max over layers of cycles``. Goal: within 5 %;
* **tuning time**: listing the templates' options, the parallelism tuner, the buffer tuner
  and the final cycle simulation — the map stage — wall time, best of ``--repeat``. Goal:
  under 2 s (the tuner alone is printed too);
* the tuner's result against the exhaustive optimum is checked by the tests on small
  networks (it is exact with one resource); here it is printed how many options it chose
  from.

Legalization (BN folding, calibration on one seeded sample) runs once, outside the timing.
Exit code 0 whatever the numbers: this prints, it does not judge.

    python bench/pipelined_dnn.py [--repeat 3] [--budgets 256,1024,4096]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--budgets", default="256,1024,4096")
    ap.add_argument("--model", default="zoo:mobilenet_v1")
    args = ap.parse_args()

    from hwmap import load_model
    from hwmap.config import load_target
    from hwmap_pipelined_dnn.legalize import legalize
    from hwmap_pipelined_dnn.mapping import map_graph
    from hwmap_pipelined_dnn.templates import Context, options
    from hwmap_pipelined_dnn.tuner import tune

    graph = load_model(args.model)
    t0 = time.perf_counter()
    legal = legalize(graph, load_target("pipelined_dnn:default"))
    print(f"{args.model}: legalized in {time.perf_counter() - t0:.1f} s "
          f"({'fits' if legal.fits else 'does not fit'})")
    goals = {256: 0.90, 1024: 0.95, 4096: 0.95}
    print(f"{'budget':>7} {'used':>6} {'FPS':>9} {'bound':>9} {'FPS/bound':>10} {'goal':>5} "
          f"{'II est':>9} {'II sim':>9} {'sim/est':>8} {'map s':>7} {'tuner s':>8} {'options':>8}")
    for r in (int(b) for b in args.budgets.split(",")):
        target = load_target(f"pipelined_dnn:default@hardware.multipliers={r}")
        best, m = float("inf"), None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            m = map_graph(legal.graph, target)
            best = min(best, time.perf_counter() - t0)
        assert m is not None
        hw = m.cfg.hardware
        ctx = Context(hw.weight_bits, hw.memory_block_bits, hw.input_pixels_per_cycle)
        opts = [options(s, ctx) for s in m.specs]
        t_tune = float("inf")
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            tune(m.specs, opts, {"multipliers": r, "memory_blocks": 0}, clock_hz=hw.clock_hz)
            t_tune = min(t_tune, time.perf_counter() - t0)
        fps = hw.clock_hz / m.sim.ii
        bound = m.balanced_bound_fps
        print(f"{r:>7} {m.tuned.used['multipliers']:>6} {fps:>9.2f} {bound:>9.2f} {fps / bound:>10.4f} "
              f"{goals.get(r, 0):>5.2f} {m.analytic_ii:>9,} {m.sim.ii:>9,.0f} {m.sim.ii / m.analytic_ii:>8.4f} "
              f"{best:>7.2f} {t_tune:>8.3f} {sum(len(o) for o in opts):>8,}")


if __name__ == "__main__":
    main()
