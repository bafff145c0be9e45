"""Benchmark: the nengo_like Simulator against nengo's reference simulator (issue 11, "Goals").

One ensemble of 10,000 LIF neurons (1-D, seed 0) driven by a 1 Hz sine through a 5 ms
Lowpass, its decoded output probed through a 10 ms Lowpass, run for 1 s at dt = 1 ms.
Printed for both: build time (``Simulator(...)``: for nengo its decoder solve on 20,000
evaluation points; for nengo_like the same regularized least squares (``LstsqL2Fast``) on
every 20th evaluation point, then map, emit and read back) and simulation time
(``sim.run(1.0)``), and the RMSE of the decoded sine (after the first 50 ms). Goals: build and
simulation at least 10× faster, RMSE within 5 % of nengo's. Prints; does not judge.

    python bench/nengo_like.py [--neurons 10000] [--skip-nengo]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np


def one(lib: Any, n: int, fast: bool) -> dict[str, float]:
    with lib.Network(seed=0) as net:
        u = lib.Node(lambda t: np.sin(2 * np.pi * t))
        a = lib.Ensemble(n, 1)
        lib.Connection(u, a, synapse=0.005)
        kw = {"solver": lib.solvers.LstsqL2Fast(stride=20)} if fast else {}
        p = lib.Probe(a, synapse=0.01, **kw)
    t0 = time.perf_counter()
    extra = {"target": "nengo_like:loihi"} if fast else {}  # 10 of its 128 cores; the default has 16 of 256
    sim = lib.Simulator(net, dt=0.001, progress_bar=False, **extra)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    sim.run(1.0)
    run = time.perf_counter() - t0
    t = sim.trange()
    err = float(np.sqrt(np.mean((sim.data[p][50:, 0] - np.sin(2 * np.pi * t[50:])) ** 2)))
    sim.close()
    return {"build_s": build, "run_s": run, "rmse": err}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=10000)
    ap.add_argument("--skip-nengo", action="store_true", help="only hwmap_nengo_like (nengo takes minutes)")
    args = ap.parse_args()
    import hwmap_nengo_like

    mine = one(hwmap_nengo_like, args.neurons, True)
    print(f"nengo_like: build {mine['build_s']:.2f} s, run {mine['run_s']:.3f} s, RMSE {mine['rmse']:.4f}")
    if args.skip_nengo:
        return
    import nengo

    ref = one(nengo, args.neurons, False)
    print(f"nengo:      build {ref['build_s']:.2f} s, run {ref['run_s']:.3f} s, RMSE {ref['rmse']:.4f}")
    print(f"speed-up:   build {ref['build_s'] / mine['build_s']:.1f}x (goal 10x), run "
          f"{ref['run_s'] / mine['run_s']:.1f}x (goal 10x); RMSE ratio {mine['rmse'] / ref['rmse']:.3f} (goal <= 1.05)")


if __name__ == "__main__":
    main()
