"""Benchmark: the nengo_like Simulator against nengo's reference simulator (issue 11, "Goals").

One ensemble of 10,000 LIF neurons (1-D, seed 0) driven by a 1 Hz sine through a 5 ms
Lowpass, its decoded output probed through a 10 ms Lowpass, run for 1 s at dt = 1 ms.
Printed for both: build time (``Simulator(...)``: for nengo its decoder solve on 20,000
evaluation points; for nengo_like the same regularized least squares (``LstsqL2Fast``) on
every 20th evaluation point, then map, emit and read back) and simulation time
(``sim.run(1.0)``, wall and CPU time: the CPU time of the process is less disturbed by other
load on the machine), and the RMSE of the decoded sine (after the first 50 ms). Goals: build and
simulation at least 10× faster, RMSE within 5 % of nengo's. Prints; does not judge.

The machine is shared: ``--repeat R`` runs both R times, alternating, and prints the medians
and the load average beside every run. nengo's build with its default 20,000 evaluation
points takes minutes; ``--nengo-eval-points`` gives it fewer (its simulation does not depend
on them; the build ratio and RMSE printed then are not the goal's). ``--backend numpy`` runs
nengo_like's reference step instead of the compiled one.

    python bench/nengo_like.py [--neurons 10000] [--repeat 1] [--backend numba] [--nengo-eval-points N] [--skip-nengo]
"""

from __future__ import annotations

import argparse
import os
import time
from typing import Any

import numpy as np


def one(lib: Any, n: int, fast: bool, backend: str = "numba", eval_points: int | None = None) -> dict[str, float]:
    with lib.Network(seed=0) as net:
        u = lib.Node(lambda t: np.sin(2 * np.pi * t))
        a = lib.Ensemble(n, 1) if eval_points is None else lib.Ensemble(n, 1, n_eval_points=eval_points)
        lib.Connection(u, a, synapse=0.005)
        kw = {"solver": lib.solvers.LstsqL2Fast(stride=20)} if fast else {}
        p = lib.Probe(a, synapse=0.01, **kw)
    t0 = time.perf_counter()
    # 10 of the loihi preset's 128 cores; the default has 16 of 256
    extra = {"target": "nengo_like:loihi", "backend": backend} if fast else {}
    sim = lib.Simulator(net, dt=0.001, progress_bar=False, **extra)
    build = time.perf_counter() - t0
    # OpenBLAS's worker threads spin for a while after the build's matrix products (about
    # 2^28 cycles, its THREAD_TIMEOUT default) and count in the process's CPU time: let them
    # go idle before the run is timed, for both simulators alike
    time.sleep(0.5)
    t0, c0 = time.perf_counter(), time.process_time()
    sim.run(1.0)
    run, cpu = time.perf_counter() - t0, time.process_time() - c0
    t = sim.trange()
    err = float(np.sqrt(np.mean((sim.data[p][50:, 0] - np.sin(2 * np.pi * t[50:])) ** 2)))
    sim.close()
    return {"build_s": build, "run_s": run, "run_cpu_s": cpu, "rmse": err}


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.median([r[k] for r in runs])) for k in runs[0]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, alternating; medians printed")
    ap.add_argument("--backend", default="numba", choices=["numba", "numpy"], help="nengo_like's step")
    ap.add_argument("--nengo-eval-points", type=int, default=None,
                    help="nengo's n_eval_points (default its own, 20,000 here: minutes of build); the run "
                         "does not depend on it, the build ratio and the RMSE do")
    ap.add_argument("--skip-nengo", action="store_true", help="only hwmap_nengo_like (nengo takes minutes)")
    args = ap.parse_args()
    import hwmap_nengo_like

    nengo: Any = None
    if not args.skip_nengo:
        import nengo
    mine, ref = [], []
    loads = []
    for i in range(args.repeat):  # alternating: a change of the machine's load falls on both
        mine.append(one(hwmap_nengo_like, args.neurons, True, args.backend))
        print(f"nengo_like [{i + 1}]: build {mine[-1]['build_s']:.2f} s, run {mine[-1]['run_s']:.3f} s "
              f"(CPU {mine[-1]['run_cpu_s']:.3f} s), "
              f"RMSE {mine[-1]['rmse']:.4f}  (load {os.getloadavg()[0]:.2f})", flush=True)
        loads.append(os.getloadavg()[0])
        if nengo is not None:
            ref.append(one(nengo, args.neurons, False, eval_points=args.nengo_eval_points))
            print(f"nengo      [{i + 1}]: build {ref[-1]['build_s']:.2f} s, run {ref[-1]['run_s']:.3f} s "
                  f"(CPU {ref[-1]['run_cpu_s']:.3f} s), "
                  f"RMSE {ref[-1]['rmse']:.4f}  (load {os.getloadavg()[0]:.2f})", flush=True)
    m = _median(mine)
    print(f"nengo_like ({args.backend}, median of {len(mine)}): build {m['build_s']:.2f} s, run {m['run_s']:.3f} s (CPU {m['run_cpu_s']:.3f} s), "
          f"RMSE {m['rmse']:.4f}; {1e9 * m['run_s'] / (args.neurons * 1000):.2f} ns per neuron-step wall "
          f"({1e9 * m['run_cpu_s'] / (args.neurons * 1000):.2f} CPU); load {min(loads):.2f}-{max(loads):.2f}")
    if not ref:
        return
    r = _median(ref)
    print(f"nengo      (median of {len(ref)}): build {r['build_s']:.2f} s, run {r['run_s']:.3f} s (CPU {r['run_cpu_s']:.3f} s), "
          f"RMSE {r['rmse']:.4f}")
    print("per pair (nengo / nengo_like): run " + ", ".join(f"{b['run_s'] / a['run_s']:.1f}x" for a, b in zip(mine, ref)) +
          "; CPU " + ", ".join(f"{b['run_cpu_s'] / a['run_cpu_s']:.1f}x" for a, b in zip(mine, ref)))
    note = "" if args.nengo_eval_points is None else \
        f" (nengo on {args.nengo_eval_points} evaluation points: not the goal's)"
    print(f"speed-up:   build {r['build_s'] / m['build_s']:.1f}x (goal 10x){note}, run {r['run_s'] / m['run_s']:.1f}x "
          f"(CPU time {r['run_cpu_s'] / m['run_cpu_s']:.1f}x; goal 10x); RMSE ratio {m['rmse'] / r['rmse']:.3f} (goal <= 1.05){note}")


if __name__ == "__main__":
    main()
