"""``hwmap explore``: everything checked first, then the study run and its results written.

Order matters for "nothing half-done": the space file (every key and value against its
target's schema), the objectives against the data, the output folder, the model and the
data are checked before the storage is opened; a ``--scheduler`` is reached before the study
is created; only then do trials run. ``-o DIR`` holds the SQLite study (``study.db``, unless
``--storage`` names another database), ``trials.csv`` and ``trials.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data import check_labels, load_data
from ..dataset import Dataset
from ..errors import ConfigError, DataError
from ..files import check_output_dir, remove_stale, write_text_atomic
from ..flow import data_digest, model_inputs, split_data
from ..graph import Graph
from ..progress import NullProgress, Progress
from ..source import ParseOptions, load_model, require_known
from .objectives import DATA_COLUMNS
from .results import Results, collect, to_csv, to_json
from .runner import DaskExecutor, Executor, InlineExecutor, ProgressLine, RunSummary, run_trials
from .space import Space, read_space
from .study import open_storage, open_study, safe_url, study_name

__all__ = ["Exploration", "explore", "OWN_FILES", "MAX_TRIALS", "CONNECT_TIMEOUT_S"]

#: What ``-o DIR`` may hold: hwmap's own files (the SQLite study and its journals, the trials).
OWN_FILES = ("study.db", "study.db-journal", "study.db-wal", "study.db-shm", "trials.csv", "trials.json")
#: The most trials one exploration may ask for.
MAX_TRIALS = 1_000_000
#: local worker processes per processor at most (a LocalCluster larger than that only thrashes)
MAX_WORKERS_PER_CPU = 4
#: How long to try reaching a ``--scheduler`` before giving up, in seconds.
CONNECT_TIMEOUT_S = 10.0


@dataclass
class Exploration:
    """A finished run: the results (every trial of the study), what this run did, the study's
    storage as shown to users, and the files written."""

    results: Results
    summary: RunSummary
    total: int
    written: list[Path]


def _foreign(extra: tuple[str, ...]) -> Any:
    def foreign(d: Path) -> list[str]:
        from ..files import TEMP_PREFIX

        return [e for e in sorted(os.listdir(d)) if e not in OWN_FILES and e not in extra
                and not e.startswith(TEMP_PREFIX)]
    return foreign


def _check_columns(space: Space, data: Dataset | None) -> None:
    for c in space.columns():
        if c in DATA_COLUMNS and data is None:
            raise ConfigError(f"{c!r} is measured by simulating the artifacts on scored samples: it needs --data",
                              where=space.where)
        if c in ("accuracy", "reference_accuracy") and data is not None and data.y is None:
            raise DataError(f"{c!r} needs labels: the data has no y", where=data.name)


def _reference(graph: Graph, data: Dataset, calibrate: int | None) -> dict[str, Any]:
    from ..execute import run_batched

    _, scored = split_data(data, calibrate)
    inputs = model_inputs(graph, scored)
    return run_batched(graph, inputs[graph.inputs[0]])


def explore(model: str, space_file: str, *, data: str | None = None, calibrate: int | None = None,
            trials: int = 50, timeout: float | None = None, workers: int | None = None,
            scheduler: str | None = None, storage: str | None = None, outdir: str | None = None,
            options: ParseOptions | None = None, plot_name: str | None = None, quiet: bool = False,
            progress: Progress | None = None, overrides: list[str] | None = None) -> Exploration:
    """Run (or resume) the exploration of ``model`` over ``space_file`` until its study holds
    ``trials`` trials (the space's size at most) or ``timeout`` seconds have passed.
    ``workers``: a LocalCluster of that many worker processes (default: this machine's
    cores; 0 runs the trials in this process); ``scheduler``: an existing Dask cluster;
    ``overrides``: ``--set`` items applied to every target's config."""
    prog = progress or NullProgress()
    if not 1 <= trials <= MAX_TRIALS:
        raise DataError(f"--trials {trials}: must be from 1 to {MAX_TRIALS}")
    if timeout is not None and not timeout > 0:
        raise DataError(f"--timeout {timeout}: must be a positive number of seconds")
    if workers is not None and workers < 0:
        raise DataError(f"--workers {workers}: must be 0 (this process) or more worker processes")
    most = MAX_WORKERS_PER_CPU * (os.cpu_count() or 1)
    if workers is not None and workers > most:
        raise DataError(f"--workers {workers}: at most {most} local worker processes on this machine "
                        f"({MAX_WORKERS_PER_CPU} per processor); for more, start a Dask cluster and pass --scheduler")
    if storage is None and outdir is None:
        raise DataError("explore keeps its study in a database: give -o DIR (the SQLite file study.db in it) "
                        "or --storage URL")
    space = read_space(space_file, overrides or [])
    dataset = load_data(data) if data else None
    _check_columns(space, dataset)
    out = check_output_dir(outdir, _foreign((plot_name,) if plot_name else ())) if outdir is not None else None
    with prog.stage(f"parsing {model}"):
        graph = require_known(load_model(model, options), "exploring targets")
    reference = None
    if dataset is not None:
        check_labels(dataset, graph)
        model_inputs(graph, split_data(dataset, calibrate)[1])  # the data fits the model
    executor: Executor | None = DaskExecutor(0, scheduler, CONNECT_TIMEOUT_S) if scheduler else None
    try:
        rdb = open_storage(storage) if storage else None  # a URL that cannot be opened: DIR is not created
        if out is not None:
            out.mkdir(exist_ok=True)
            remove_stale(out)
        url = storage or f"sqlite:///{(out or Path('.')).resolve() / 'study.db'}"
        rdb = rdb or open_storage(url)
        if dataset is not None:
            with prog.stage("running the reference model on the scored samples"):
                reference = _reference(graph, dataset, calibrate)
        name = study_name(space, graph.digest(), data_digest(dataset) if dataset is not None else None, calibrate)
        handle = open_study(rdb, name, space)
        size = space.size()
        total = min(trials, size) if size is not None else trials
        if executor is None:
            executor = InlineExecutor() if workers == 0 else DaskExecutor(workers or os.cpu_count() or 1)
        executor.share(graph, dataset, reference, model)
        summary = run_trials(handle, executor, total, calibrate=calibrate, timeout=timeout,
                             progress=ProgressLine(quiet=quiet))
    finally:
        if executor is not None:
            executor.close()
    results = collect(handle, safe_url(url))
    written = []
    if out is not None:
        for fname, text in (("trials.csv", to_csv(results)), ("trials.json", to_json(results))):
            write_text_atomic(out / fname, text)
            written.append(out / fname)
    return Exploration(results, summary, total, written)
