"""One trial of an exploration: the shared model compiled on one config, as a result that
crosses process boundaries (plain JSON values only).

This is what a Dask worker runs. The parsed model, the data and the reference model's outputs
reach it once (scattered by the client) and stay in its memory; legalized graphs are kept
per config in a small cache of the worker process, so a config seen again is not legalized
again. A config the model does not fit, or a plugin that fails, makes a failed trial that
says why; it never raises.
"""

from __future__ import annotations

import json
from collections import OrderedDict
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..config import load_target
from ..dataset import Dataset
from ..errors import DoesNotFitError, HwmapError
from ..flow import compile_model
from ..graph import Graph

__all__ = ["TrialTask", "TrialResult", "evaluate", "LegalizeCache", "CACHE_SIZE"]

#: Legalized graphs a worker process keeps (least recently used dropped first).
CACHE_SIZE = 64


@dataclass(frozen=True)
class TrialTask:
    """What a worker compiles: the trial's number, its config (``ref`` with ``overrides``,
    ``--set`` items) and how the data splits."""

    number: int
    ref: str
    overrides: tuple[str, ...]
    calibrate: int | None = None


@dataclass
class TrialResult:
    """``state`` is ``complete`` or ``fail``; ``kpis`` the KPI record as JSON (a failed trial's
    says why in ``violations``); ``error`` one line for a failed trial; ``seconds`` the worker's
    processor time on it."""

    number: int
    state: str
    kpis: dict[str, Any]
    error: str = ""
    legalize_cached: bool = False
    seconds: float = 0.0


class LegalizeCache(OrderedDict):  # type: ignore[type-arg]
    """Legalized graphs by :func:`hwmap.flow.legalize_key`, at most ``size`` of them."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        super().__init__()
        self.size = size
        self.hits = 0

    def get(self, key: Any, default: Any = None) -> Any:
        if key in self:
            self.move_to_end(key)
            self.hits += 1
            return self[key]
        return default

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.size:
            self.popitem(last=False)


#: The cache of this process (a worker's, or the client's when trials run in-process).
_CACHE = LegalizeCache()


def _record(kind: str, name: str, model: str, reasons: list[str]) -> dict[str, Any]:
    from ..kpi import KPIs

    return json.loads(KPIs.not_fitting(kind, name, model, reasons).dumps())


def evaluate(graph: Graph, task: TrialTask, data: Dataset | None = None,
             reference: dict[str, np.ndarray] | None = None, model: str = "") -> TrialResult:
    """Compile ``graph`` on the task's config (simulating on the scored part of ``data``
    against ``reference`` when given) and return the KPI record, or why it failed."""
    t0 = time.process_time()
    result = _evaluate(graph, task, data, reference, model)
    result.seconds = time.process_time() - t0
    return result


def _evaluate(graph: Graph, task: TrialTask, data: Dataset | None, reference: dict[str, np.ndarray] | None,
              model: str) -> TrialResult:
    kind, name = task.ref.split(":", 1)[0], task.ref
    try:
        # as a variant, REF@KEY=VALUE...: the record is the one compile and compare give for it
        target = load_target("@".join([task.ref, *task.overrides]))
        kind, name = target.kind, target.name
        hits = _CACHE.hits
        res = compile_model(graph, target, None, data=data, calibrate=task.calibrate, reference=reference,
                            legalize_cache=_CACHE)
        res.kpis.model = model or graph.name
        return TrialResult(task.number, "complete", json.loads(res.kpis.dumps()), legalize_cached=_CACHE.hits > hits)
    except DoesNotFitError as e:
        reasons = e.violations or [str(e)]
        return TrialResult(task.number, "fail", _record(kind, name, model, reasons),
                           "does not fit: " + "; ".join(reasons))
    except HwmapError as e:
        return TrialResult(task.number, "fail", _record(kind, name, model, [str(e)]), str(e).replace("\n", " "))
    except Exception as e:  # a plugin bug fails this trial, never the study
        reason = f"plugin error: {type(e).__name__}: {e}".replace("\n", " ")
        return TrialResult(task.number, "fail", _record(kind, name, model, [reason]), reason)
