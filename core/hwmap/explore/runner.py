"""Where the trials run: Dask distributed workers (a ``LocalCluster`` of this machine's
processes, or an existing cluster by its scheduler's address), or this process.

The client scatters the parsed model, the data and the reference model's outputs to every
worker once; each task then names them, so no worker parses the model or receives it again
per trial. The loop keeps one trial in flight per worker thread and one more queued per worker
(so no worker waits while this process records a result and asks for the next config), asks
the study for the next config as soon as one finishes (so the sampler sees every result it
can), records each
result as it comes, refreshes the in-flight trials' heartbeats, and stops asking once the
budget is reached or the timeout has passed (trials in flight are finished and recorded).
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..errors import DataError
from .evaluate import TrialResult, TrialTask, evaluate
from .pareto import pareto_indices
from .results import fmt_column
from .study import Proposal, StudyHandle, counted, trial_key

__all__ = ["Executor", "InlineExecutor", "DaskExecutor", "run_trials", "RunSummary", "ProgressLine",
           "HEARTBEAT_S"]

#: How often (seconds) the loop wakes to refresh the heartbeats of trials in flight.
HEARTBEAT_S = 5.0
#: How often (seconds) the progress line reads the study's tallies again.
REFRESH_S = 30.0
#: Dask settings of the LocalCluster hwmap starts (its scheduler runs in this process, its
#: workers in their own). Dask's defaults suit interactive work with its dashboard; a trial
#: here is a fraction of a second of one thread, and on the few cores of a workstation the
#: periodic work they set would take the cores the trials need: a statistical profiler in
#: every worker sampling its stack every 10 ms, an event-loop health check every 20 ms in
#: every process, a system monitor (psutil) every 500 ms, the nanny's memory check every
#: 100 ms and work stealing every second (every trial here is queued at the scheduler until a
#: worker is free, so there is nothing to steal). The memory check still runs, once a second.
#: See https://distributed.dask.org/en/stable/configuration.html (distributed.yaml).
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "5s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.scheduler.work-stealing": False,
}


class Executor(Protocol):
    """Runs :func:`hwmap.explore.evaluate.evaluate` on tasks; ``slots`` trials at a time, and
    ``ahead`` more queued so that no worker waits for the next config."""

    slots: int
    ahead: int

    def share(self, graph: Any, data: Any, reference: Any, model: str) -> None: ...
    def submit(self, task: TrialTask) -> Any: ...
    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, TrialResult]]: ...
    def processor_time(self) -> float: ...
    def close(self) -> None: ...


class InlineExecutor:
    """Every trial in this process, one at a time (``--workers 0``)."""

    slots = 1
    ahead = 0

    def __init__(self) -> None:
        self._shared: tuple[Any, Any, Any, str] | None = None
        self._done: dict[int, TrialResult] = {}

    def share(self, graph: Any, data: Any, reference: Any, model: str) -> None:
        self._shared = (graph, data, reference, model)

    def submit(self, task: TrialTask) -> Any:
        assert self._shared is not None
        graph, data, reference, model = self._shared
        self._done[task.number] = evaluate(graph, task, data, reference, model)
        return task.number

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, TrialResult]]:
        return [(h, self._done.pop(h)) for h in handles if h in self._done]

    def processor_time(self) -> float:
        """No worker processes: the trials' time is this process's."""
        return 0.0

    def close(self) -> None:
        pass


class DaskExecutor:
    """Trials on Dask distributed: a ``LocalCluster`` of ``workers`` single-threaded worker
    processes on the loopback interface, or the cluster whose scheduler is at ``scheduler``."""

    def __init__(self, workers: int, scheduler: str | None = None, connect_timeout_s: float = 10.0) -> None:
        from distributed import Client, LocalCluster

        self.cluster: Any = None
        if scheduler:
            try:
                self.client = Client(scheduler, timeout=connect_timeout_s, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as e:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                raise DataError(f"cannot reach the Dask scheduler: {reason}", where=f"--scheduler {scheduler}") \
                    from None
        else:
            import dask

            with dask.config.set(LOCAL_CLUSTER_CONFIG):  # read as the scheduler and workers start
                self.cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                            host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster, set_as_default=False)
        info = self.client.scheduler_info()
        self.slots = max(1, sum(int(w.get("nthreads", 1)) for w in info.get("workers", {}).values()))
        # one task queued per worker: it starts it while this process records the last result
        # and asks for the next config (the messages between processes take a while on a busy machine)
        self.ahead = self.slots
        self._shared: tuple[Any, Any, Any, str] | None = None

    def share(self, graph: Any, data: Any, reference: Any, model: str) -> None:
        def scatter(x: Any) -> Any:
            return None if x is None else self.client.scatter(x, broadcast=True, hash=False)

        self._shared = (scatter(graph), scatter(data), scatter(reference), model)

    def submit(self, task: TrialTask) -> Any:
        assert self._shared is not None
        graph, data, reference, model = self._shared
        return self.client.submit(evaluate, graph, task, data, reference, model, pure=False,
                                  key=f"hwmap-trial-{task.number}-{time.time_ns()}")

    def wait(self, handles: list[Any], timeout: float) -> list[tuple[Any, TrialResult]]:
        from distributed import wait

        try:
            with self.client.as_current():
                done, _ = wait(handles, timeout=timeout, return_when="FIRST_COMPLETED")
        except TimeoutError:
            return []
        out = []
        for f in done:
            try:
                out.append((f, f.result()))
            except Exception as e:  # the worker died or the task could not run: that trial failed
                out.append((f, _lost(f, e)))
        return out

    def processor_time(self) -> float:
        """The worker processes' processor time so far (their trials, messages and upkeep)."""
        return float(sum(self.client.run(time.process_time).values()))

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self.cluster is not None:
                self.cluster.close()


def _lost(future: Any, e: BaseException) -> TrialResult:
    number = int(str(future.key).split("-")[2])
    reason = f"worker error: {type(e).__name__}: {e}".replace("\n", " ")
    return TrialResult(number, "fail", {"fits": False, "violations": [reason]}, reason)


@dataclass
class ProgressLine:
    """One line on stderr per finished trial: done/total, failures, the best value of each
    objective among feasible trials, the Pareto front's size and the ETA. The tallies are read
    from the study once, kept up to date from the trials this run records, and read again
    every :data:`REFRESH_S` seconds (to count other explorations sharing the study) rather
    than per trial."""

    quiet: bool = False
    started: float = field(default_factory=time.perf_counter)
    new: int = 0
    _done: int = 0
    _failed: int = 0
    _feasible: list[list[float]] | None = None
    _read: float = 0.0

    def _load(self, handle: StudyHandle) -> None:
        from optuna.trial import TrialState

        trials = [t for t in handle.trials() if counted(t)]
        self._done = len(trials)
        self._failed = sum(1 for t in trials if t.state == TrialState.FAIL)
        self._feasible = [list(t.values) for t in trials if t.state == TrialState.COMPLETE
                          and all(v <= 0 for v in t.constraints.values())]
        self._read = time.perf_counter()

    def trial(self, handle: StudyHandle, total: int, number: int, state: str,
              feasible: list[float] | None = None) -> None:
        """Trial ``number`` finished in ``state``; ``feasible``: its objective values if it
        is complete and meets the constraints."""
        self.new += 1
        if self.quiet:
            return
        if self._feasible is None or time.perf_counter() - self._read >= REFRESH_S:
            self._load(handle)
        else:
            self._done += 1
            self._failed += state == "fail"
            if feasible is not None:
                self._feasible.append(feasible)
        space, ok = handle.space, self._feasible or []
        best = []
        for k, o in enumerate(space.objectives):
            values = [v[k] for v in ok]
            if values:
                best.append(f"{o.column} {fmt_column(o.column)((min if o.sign > 0 else max)(values))}")
        front = len(pareto_indices([[o.sign * x for o, x in zip(space.objectives, v)] for v in ok])) if ok else 0
        elapsed = time.perf_counter() - self.started
        left = total - self._done
        eta = f", ETA {elapsed / self.new * left:.0f} s" if left > 0 else ""
        print(f"hwmap: explore: {self._done}/{total} trials ({self._failed} failed; trial {number} {state}); best "
              f"{', '.join(best) or 'none yet'}; front {front}{eta}", file=sys.stderr, flush=True)


@dataclass
class RunSummary:
    """What one run added: trials recorded, interrupted trials recovered, whether it stopped
    on the timeout or because the sampler kept repeating held configs; its wall time, this
    process's processor time, the workers' on the trials, and the worker processes' in all
    (the trials, the messages and the upkeep of a Dask worker)."""

    recorded: int = 0
    recovered: list[int] = field(default_factory=list)
    timed_out: bool = False
    exhausted: bool = False
    elapsed_s: float = 0.0
    cpu_s: float = 0.0
    worker_cpu_s: float = 0.0
    workers_process_cpu_s: float = 0.0


def run_trials(handle: StudyHandle, executor: Executor, total: int, *, calibrate: int | None = None,
               timeout: float | None = None, progress: ProgressLine | None = None) -> RunSummary:
    """Run trials until the study counts ``total`` (or the timeout passes)."""
    summary = RunSummary(recovered=handle.recover_interrupted())
    if handle.space.sampler == "grid":
        handle.enqueue_grid(total)
    t0, cpu0, workers0 = time.perf_counter(), time.process_time(), executor.processor_time()
    deadline = t0 + timeout if timeout is not None else None
    in_flight: dict[Any, Proposal] = {}
    keys: dict[Any, str] = {}
    done = handle.done()
    beat = time.perf_counter()
    capacity = executor.slots + executor.ahead
    try:
        while True:
            while (len(in_flight) < capacity and done + len(in_flight) < total and not summary.exhausted
                   and not (deadline is not None and time.perf_counter() >= deadline)):
                proposal = handle.ask(set(keys.values()))
                if proposal is None:
                    summary.exhausted = True
                    break
                target = handle.space.targets[proposal.target]
                task = TrialTask(proposal.trial.number, target.ref, tuple(target.overrides(proposal.values)), calibrate)
                h = executor.submit(task)
                in_flight[h] = proposal
                keys[h] = trial_key(proposal.trial.params)
            if not in_flight:
                break
            finished = executor.wait(list(in_flight), HEARTBEAT_S)
            for h, result in finished:
                proposal = in_flight.pop(h)
                keys.pop(h)
                target = handle.space.targets[proposal.target]
                state, feasible = handle.tell(
                    proposal, result.state, result.kpis, result.error, target.variant(proposal.values),
                    {"values": proposal.values, "legalize_cached": result.legalize_cached,
                     "cpu_s": round(result.seconds, 6)})
                summary.worker_cpu_s += result.seconds
                done += 1
                summary.recorded += 1
                if progress is not None:
                    progress.trial(handle, total, proposal.trial.number, state, feasible)
            if time.perf_counter() - beat >= HEARTBEAT_S:
                handle.heartbeat(p.trial for p in in_flight.values())
                beat = time.perf_counter()
        summary.timed_out = deadline is not None and time.perf_counter() >= deadline and done < total
        summary.workers_process_cpu_s = executor.processor_time() - workers0
    finally:
        for proposal in in_flight.values():  # stopped mid-trial (Ctrl-C, SIGTERM): queue them again
            handle.interrupt(proposal)
        summary.elapsed_s = time.perf_counter() - t0
        summary.cpu_s = time.process_time() - cpu0
    return summary

