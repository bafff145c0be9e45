"""``hwmap explore`` on zoo:digits_cnn over an analog_imc space of 360 configs.

1. The exhaustive front: every config of the space (the grid sampler), its hypervolume the
   reference (reference point: each objective's worst value on the grid × 1.1).
2. The hypervolume reached after 50 trials by the default sampler (NSGA-II, population 10),
   by multivariate TPE (MOTPE) and by random sampling, over several seeds, as a fraction of
   the exhaustive one. Goal: the default at least 0.95 and ahead of random.
3. Trials per second with a Dask LocalCluster of 1 and of 2 worker processes (grid sampler,
   with --data, so each trial compiles and simulates), measured in the same run. Goal: 2
   workers at least 1.7× one. Printed beside it: the processor time per trial in a worker
   and in this process (which asks and tells optuna, writes the study and runs the Dask
   scheduler), the speed-up they allow on this machine's cores, and the machine's load
   (``uptime``): other work on the same cores lowers the ratio.

Run: ``.venv/bin/python bench/explore.py [--seeds 5] [--trials 50] [--speed-trials 40]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hwmap.explore import explore, hypervolume
from hwmap.explore.pareto import reference_point

MODEL = "zoo:digits_cnn"
DATA = "zoo:digits"
SPACE = """
sampler = "{sampler}"
seed = {seed}
{population}

[objectives]
energy_per_inference_j = "minimize"
latency_s = "minimize"

[[targets]]
target = "analog_imc:default"

[targets.space]
"hardware.dac_bits" = [1, 2, 4, 8]
"hardware.columns_per_adc" = [1, 2, 4, 8, 16]
"hardware.crossbar_rows" = [64, 128, 256]
"hardware.bits_per_cell" = [2, 4]
"mapper.strategy" = ["greedy", "packed", "duplicated"]
"""


def _space(folder: Path, sampler: str, seed: int, population: int | None = None) -> str:
    path = folder / f"{sampler}-{seed}-{population}.toml"
    pop = f"population = {population}" if population else ""
    path.write_text(SPACE.format(sampler=sampler, seed=seed, population=pop))
    return str(path)


def _vectors(run, first: int | None = None) -> list[list[float]]:
    """The feasible trials' objective vectors (of the first ``first`` trials only, if given)."""
    rows = [r for r in run.results.rows[:first] if r.feasible]
    return run.results.objective_vectors(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--trials", type=int, default=50)
    ap.add_argument("--speed-trials", type=int, default=40)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        grid = explore(MODEL, _space(folder, "grid", 0), trials=10_000, workers=0, outdir=str(folder / "grid"),
                       quiet=True)
        points = _vectors(grid)
        ref = reference_point(points)
        hv_all = hypervolume(points, ref)
        print(f"exhaustive: {len(grid.results.rows)} configs in {time.perf_counter() - t0:.1f} s, "
              f"front of {len(grid.results.front)}, hypervolume {hv_all:.6g} (reference point {ref.tolist()})")
        early = max(1, args.trials * 2 // 5)
        print(f"hypervolume after {args.trials} trials (and after the first {early}) / exhaustive, "
              f"{args.seeds} seeds:")
        ratios: dict[str, list[float]] = {}
        early_ratios: dict[str, list[float]] = {}
        for label, sampler, pop in (("nsga2 (default, population 10)", "nsga2", None), ("tpe (MOTPE)", "tpe", None),
                                    ("random", "random", None)):
            for seed in range(args.seeds):
                run = explore(MODEL, _space(folder, sampler, seed, pop), trials=args.trials, workers=0,
                              outdir=str(folder / f"{sampler}-{seed}-{pop}"), quiet=True)
                ratios.setdefault(label, []).append(hypervolume(_vectors(run), ref) / hv_all)
                early_ratios.setdefault(label, []).append(hypervolume(_vectors(run, early), ref) / hv_all)
            r, e = ratios[label], early_ratios[label]
            print(f"  {label:<32} mean {statistics.mean(r):.4f}  min {min(r):.4f}  max {max(r):.4f}   "
                  f"(after {early}: mean {statistics.mean(e):.4f}  min {min(e):.4f})")
        default, rnd = statistics.mean(ratios["nsga2 (default, population 10)"]), statistics.mean(ratios["random"])
        print(f"  default ≥ 0.95 of exhaustive: {'yes' if default >= 0.95 else 'NO'}; ahead of random "
              f"({default:.4f} vs {rnd:.4f}): {'yes' if default > rnd else 'NO'}")

        print(f"trials per second, grid sampler, {args.speed_trials} trials with --data {DATA} "
              "(cluster start-up excluded):")
        rates, main_cpu, worker_cpu = {}, {}, {}
        load_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        for workers in (1, 2):
            run = explore(MODEL, _space(folder, "grid", 0), data=DATA, trials=args.speed_trials, workers=workers,
                          outdir=str(folder / f"speed-{workers}"), quiet=True)
            n = run.summary.recorded
            rates[workers] = n / run.summary.elapsed_s
            main_cpu[workers], worker_cpu[workers] = run.summary.cpu_s / n, run.summary.worker_cpu_s / n
            print(f"  {workers} worker{'s' if workers > 1 else ''}: {rates[workers]:.2f} trials/s ({n} trials in "
                  f"{run.summary.elapsed_s:.1f} s; processor time per trial: {worker_cpu[workers] * 1e3:.0f} ms in "
                  f"a worker, {main_cpu[workers] * 1e3:.0f} ms in this process: optuna, its database, the Dask "
                  "scheduler and client)")
        load_after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        w, m = worker_cpu[2], main_cpu[2]
        bound = min(2.0, (os.cpu_count() or 1) * w / (w + m), w / m)
        print(f"  2 workers / 1 worker: {rates[2] / rates[1]:.2f}× (goal ≥ 1.7×) on {os.cpu_count()} cores")
        print(f"  the most two workers can give on {os.cpu_count()} otherwise idle cores, this process's own work "
              f"sharing them: {bound:.2f}×")
        print(f"  machine load (uptime) before: {load_before}")
        print(f"                        after:  {load_after}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
