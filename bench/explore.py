"""``hwmap explore`` on zoo:digits_cnn over an analog_imc space of 360 configs.

1. The exhaustive front: every config of the space (the grid sampler), its hypervolume the
   reference (reference point: each objective's worst value on the grid × 1.1).
2. The hypervolume reached after 50 trials by the default sampler (NSGA-II, population 10),
   by multivariate TPE (MOTPE) and by random sampling, over several seeds, as a fraction of
   the exhaustive one. Goal: the default at least 0.95 and ahead of random.
3. Trials per second with a Dask LocalCluster of 1 and of 2 worker processes (grid sampler,
   with --data, so each trial compiles and simulates), measured in the same run. Goal: 2
   workers at least 1.7× one. Printed beside it: the processor time per trial of the trial
   itself, of the worker processes in all and of this process (which asks and tells optuna,
   writes the study and runs the Dask scheduler and client); the bound, the same trials in
   1 and in 2 plain processes (no optuna, no Dask: what two processes give on these cores);
   the speed-up the processor times allow; and the machine's load average: other work on
   the same cores lowers the ratio.

Run: ``.venv/bin/python bench/explore.py [--seeds 5] [--trials 50] [--speed-trials 40] [--speed-only]``.
"""

from __future__ import annotations

import argparse
import itertools
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hwmap.explore import explore, hypervolume, read_space
from hwmap.explore.evaluate import TrialTask, evaluate
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
    ap.add_argument("--speed-only", action="store_true", help="only the trials per second (part 3)")
    ap.add_argument("--cold", action="store_true",
                    help="part 3 on the LocalCluster explore starts, its workers not warmed first")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.speed_only:
            fronts(folder, args.seeds, args.trials)
        speed(folder, args.speed_trials, args.cold)
    return 0


def fronts(folder: Path, seeds: int, trials: int) -> None:
    """Parts 1 and 2: the exhaustive front, and the hypervolume each sampler reaches."""
    t0 = time.perf_counter()
    grid = explore(MODEL, _space(folder, "grid", 0), trials=10_000, workers=0, outdir=str(folder / "grid"), quiet=True)
    points = _vectors(grid)
    ref = reference_point(points)
    hv_all = hypervolume(points, ref)
    print(f"exhaustive: {len(grid.results.rows)} configs in {time.perf_counter() - t0:.1f} s, "
          f"front of {len(grid.results.front)}, hypervolume {hv_all:.6g} (reference point {ref.tolist()})")
    early = max(1, trials * 2 // 5)
    print(f"hypervolume after {trials} trials (and after the first {early}) / exhaustive, {seeds} seeds:")
    ratios: dict[str, list[float]] = {}
    early_ratios: dict[str, list[float]] = {}
    for label, sampler in (("nsga2 (default, population 10)", "nsga2"), ("tpe (MOTPE)", "tpe"), ("random", "random")):
        for seed in range(seeds):
            run = explore(MODEL, _space(folder, sampler, seed), trials=trials, workers=0,
                          outdir=str(folder / f"{sampler}-{seed}"), quiet=True)
            ratios.setdefault(label, []).append(hypervolume(_vectors(run), ref) / hv_all)
            early_ratios.setdefault(label, []).append(hypervolume(_vectors(run, early), ref) / hv_all)
        r, e = ratios[label], early_ratios[label]
        print(f"  {label:<32} mean {statistics.mean(r):.4f}  min {min(r):.4f}  max {max(r):.4f}   "
              f"(after {early}: mean {statistics.mean(e):.4f}  min {min(e):.4f})")
    default, rnd = statistics.mean(ratios["nsga2 (default, population 10)"]), statistics.mean(ratios["random"])
    print(f"  default ≥ 0.95 of exhaustive: {'yes' if default >= 0.95 else 'NO'}; ahead of random "
          f"({default:.4f} vs {rnd:.4f}): {'yes' if default > rnd else 'NO'}")


# -- part 3: trials per second ---------------------------------------------------------------------------
_SHARED: dict[str, Any] = {}


def _load() -> None:
    """A plain process's start: the model, the data and the reference outputs, as explore has them."""
    from hwmap.data import load_data
    from hwmap.explore.run import _reference
    from hwmap.source import load_model

    graph = load_model(MODEL, None)
    data = load_data(DATA)
    _SHARED.update(graph=graph, data=data, reference=_reference(graph, data, None))


def _plain_trial(task: TrialTask) -> float:
    """One trial in a plain process (no Dask, no optuna); its processor time."""
    result = evaluate(_SHARED["graph"], task, _SHARED["data"], _SHARED["reference"], MODEL)
    return result.seconds


def _warm(task: TrialTask) -> int:
    """Run ``task`` once in this process (imports, first-call costs), then empty the legalized
    graphs' cache and hold a second, so that each process of the pool takes one of these."""
    from hwmap.explore.evaluate import _CACHE

    if not _SHARED.get("warm"):
        _plain_trial(task)
        _SHARED["warm"] = True
    _CACHE.clear()
    time.sleep(1.0)
    return os.getpid()


def _plain(tasks: list[TrialTask], processes: int) -> tuple[float, float]:
    """The ``tasks`` on a pool of ``processes`` plain processes, each started, loaded and warmed
    beforehand: trials per second, and the processor time per trial."""
    import dask

    warm = TrialTask(-1, tasks[0].ref, (), None)  # the preset itself
    # the environment a Dask nanny starts its worker with (one thread for OpenMP and BLAS)
    environ = {k: str(v) for k, v in dask.config.get("distributed.nanny.pre-spawn-environ").items()}
    saved = {k: os.environ.get(k) for k in environ}
    os.environ.update(environ)
    try:
        with ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                 initializer=_load) as pool:
            while len(set(pool.map(_warm, [warm] * processes))) < processes:
                pass  # until every process is loaded, warm and empty, each taking one
            t0 = time.perf_counter()
            cpu = list(pool.map(_plain_trial, tasks))
            elapsed = time.perf_counter() - t0
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return len(tasks) / elapsed, sum(cpu) / len(cpu)


def _load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _warm_worker(task: TrialTask) -> float:
    """On a Dask worker: what its first trial pays once (the plugins' lazy imports, numba
    among them), by loading the model and running ``task``, the legalized graphs then
    dropped; the processor time it took."""
    t0 = time.process_time()
    _load()
    _warm(task)
    _SHARED.clear()
    return time.process_time() - t0


def _cluster(workers: int, first: TrialTask) -> tuple[Any, list[float]]:
    """A LocalCluster as ``hwmap explore`` starts one, each worker warmed; with the processor
    time each warm-up took."""
    import logging

    import dask
    from distributed import Client, LocalCluster

    from hwmap.explore.runner import LOCAL_CLUSTER_CONFIG

    with dask.config.set(LOCAL_CLUSTER_CONFIG):
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                               dashboard_address=None, silence_logs=logging.ERROR)
    with Client(cluster, set_as_default=False) as client:
        warm = list(client.run(_warm_worker, first).values())
    return cluster, warm


def speed(folder: Path, trials: int, cold: bool = False) -> None:
    """Part 3: trials per second at 1 and 2 Dask workers, and the same trials in 1 and 2 plain
    processes (the bound: what two processes give on this machine's cores with no optuna, no
    Dask and no coordinator), with the processor time per trial on each side."""
    space_file = _space(folder, "grid", 0)
    space = read_space(space_file, [])
    tasks = []
    for n, (index, values) in enumerate(itertools.islice(space.points(), trials)):
        target = space.targets[index]
        tasks.append(TrialTask(n, target.ref, tuple(target.overrides(values)), None))
    state = ("cold workers: each worker's first trial pays its imports" if cold else
             "each worker warmed first: its first trial's imports are start-up")
    print(f"trials per second, grid sampler, {trials} trials with --data {DATA} (start-up excluded; {state}), "
          f"{os.cpu_count()} cores:")
    load_before = _load_average()
    rates, cpu = {}, {}
    for workers in (1, 2):
        cluster, warm = (None, []) if cold else _cluster(workers, TrialTask(-1, tasks[0].ref, (), None))
        try:
            run = explore(MODEL, space_file, data=DATA, trials=trials, workers=workers,
                          scheduler=cluster.scheduler_address if cluster is not None else None,
                          outdir=str(folder / f"speed-{workers}"), quiet=True)
        finally:
            if cluster is not None:
                cluster.close()
        if warm:
            print(f"  warming {workers} worker{'s' if workers > 1 else ''} took "
                  f"{', '.join(f'{w * 1e3:.0f}' for w in warm)} ms of processor time")
        s, n = run.summary, run.summary.recorded
        rates[workers] = n / s.elapsed_s
        cpu[workers] = (s.worker_cpu_s / n, s.workers_process_cpu_s / n, s.cpu_s / n)
        print(f"  {workers} Dask worker{'s' if workers > 1 else ' '}: {rates[workers]:.2f} trials/s ({n} in "
              f"{s.elapsed_s:.1f} s); processor time per trial: {cpu[workers][0] * 1e3:.0f} ms the trial, "
              f"{cpu[workers][1] * 1e3:.0f} ms the worker processes in all, {cpu[workers][2] * 1e3:.1f} ms this "
              "process (optuna and its database, the Dask scheduler and client)")
    plain = {k: _plain(tasks, k) for k in (1, 2)}
    for k, (rate, per) in plain.items():
        print(f"  {k} plain process{'es' if k > 1 else '  '}: {rate:.2f} trials/s; processor time per trial "
              f"{per * 1e3:.0f} ms")
    load_after = _load_average()
    ratio, bound = rates[2] / rates[1], plain[2][0] / plain[1][0]
    w2, p2, c2 = cpu[2]
    share = w2 / (p2 + c2)
    print(f"  2 workers / 1 worker: {ratio:.2f}× (goal ≥ 1.7×)")
    print(f"  bound, the same trials in 2 plain processes / 1: {bound:.2f}× (the trials alone, as they share "
          f"the cores); 2 workers / 1 worker reached {ratio / bound:.2f} of it")
    print(f"  with 2 workers the trials take {share:.3f} of the processor time spent (the rest: the worker "
          f"processes' Dask work and this process): on 2 otherwise idle cores at most {2 * share:.2f}×, "
          f"and {bound * share:.2f}× expected from this run's bound")
    print(f"  load average (1, 5, 15 min) before: {load_before}; after: {load_after} "
          f"(other work on these cores lowers the ratio)")


if __name__ == "__main__":
    sys.exit(main())
