"""An exploration's results, read back from its study: one row per trial, the Pareto front,
and their CSV, JSON and terminal forms.

A row is a trial that counts (complete or failed; an interrupted trial is replaced by its
re-run and a set-aside duplicate proposal is no trial of the exploration). The front is
the complete, feasible trials no other such trial dominates (:mod:`hwmap.explore.pareto`),
each shown with the config keys where it differs from its target's own config. Every text
form is deterministic: the same study gives the same bytes.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from ..constants import leaves
from ..jsonio import dumps
from ..kpi import HEADLINE_KPIS
from ..numfmt import MISSING, fmt_bytes, fmt_energy, fmt_fraction, fmt_power, fmt_rate, fmt_time, sig
from .objectives import kpi_value
from .pareto import pareto_indices
from .space import Space
from .study import StudyHandle, counted, info

if TYPE_CHECKING:
    from rich.table import Table

__all__ = ["TrialRow", "Results", "collect", "to_csv", "to_json", "front_table", "fmt_column"]


@dataclass
class TrialRow:
    """One trial: its config (``values`` by config key; ``config`` as ``REF@KEY=VALUE...``),
    its KPI columns, whether it meets the constraints, whether it is on the Pareto front."""

    number: int
    state: str
    target: str
    kind: str
    config: str
    values: dict[str, Any]
    columns: dict[str, float | None]
    feasible: bool
    error: str = ""
    retry_of: int | None = None
    pareto: bool = False
    differences: dict[str, Any] = field(default_factory=dict)
    kpis: dict[str, Any] = field(default_factory=dict)


@dataclass
class Results:
    study: str
    storage: str
    space: Space
    rows: list[TrialRow]

    @property
    def front(self) -> list[TrialRow]:
        return [r for r in self.rows if r.pareto]

    def objective_vectors(self, rows: list[TrialRow]) -> list[list[float]]:
        """Each row's objectives, signed so that less is better."""
        return [[o.sign * float(r.columns[o.column] or 0.0) for o in self.space.objectives] for r in rows]


def _base_values(space: Space) -> list[dict[str, Any]]:
    from ..config import load_target

    return [leaves(load_target(t.ref).config.model_dump(mode="json")) for t in space.targets]


def collect(handle: StudyHandle, storage: str) -> Results:
    """Every counted trial of the study as a row, the Pareto front marked."""
    from optuna.trial import TrialState

    space = handle.space
    labels = {t.label: i for i, t in enumerate(space.targets)}
    base = _base_values(space)
    cols = list(dict.fromkeys([*space.columns(), *HEADLINE_KPIS]))
    rows = []
    for t in sorted((t for t in handle.trials() if counted(t)), key=lambda t: t.number):
        a = info(t)
        kpis = a.get("kpis")
        record: dict[str, Any] = kpis if isinstance(kpis, dict) else {}
        values: dict[str, Any] = a["values"] if isinstance(a.get("values"), dict) else {}
        label = str(a.get("target", space.targets[0].label))
        index = labels.get(label, 0)
        complete = t.state == TrialState.COMPLETE
        feasible = complete and all(v <= 0 for v in t.constraints.values())
        diffs = {k: v for k, v in values.items() if base[index].get(k) != v}
        rows.append(TrialRow(t.number, "complete" if complete else "fail", label, str(a.get("kind", "")),
                             str(a.get("config", "")), values, {c: kpi_value(record, c) for c in cols}, feasible,
                             str(a.get("error", "")), t.user_attrs.get("retry_of"), differences=diffs, kpis=record))
    results = Results(handle.study.study_name, storage, space, rows)
    ok = [r for r in rows if r.feasible]
    for i in pareto_indices(results.objective_vectors(ok)) if ok else []:
        ok[i].pareto = True
    return results


# -- text forms ------------------------------------------------------------------------------------------
def _param_keys(space: Space) -> list[str]:
    return list(dict.fromkeys(p.key for t in space.targets for p in t.params))


def _kpi_columns(results: Results) -> list[str]:
    return list(dict.fromkeys([*results.space.columns(), *HEADLINE_KPIS]))


def to_csv(results: Results) -> str:
    """One row per trial: number, state, target, kind, config, each searched key, the KPI
    columns (objectives and constraints first), feasible, pareto, error."""
    keys = _param_keys(results.space)
    cols = _kpi_columns(results)
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow(["trial", "state", "target", "kind", "config", *keys, *cols, "feasible", "pareto", "error"])
    for r in results.rows:
        w.writerow([r.number, r.state, r.target, r.kind, r.config, *(_cell(r.values.get(k)) for k in keys),
                    *(_cell(r.columns.get(c)) for c in cols), int(r.feasible), int(r.pareto), r.error])
    return out.getvalue()


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return repr(v) if isinstance(v, float) else str(v)


def to_json(results: Results) -> str:
    """The study, the space, every trial with its full KPI record, and the front's trials."""
    space = results.space
    return dumps({
        "study": results.study, "storage": results.storage, "space": space.to_json(),
        "trials": [{"trial": r.number, "state": r.state, "target": r.target, "kind": r.kind, "config": r.config,
                    "values": r.values, "differences": r.differences, "columns": r.columns, "feasible": r.feasible,
                    "pareto": r.pareto, "error": r.error or None, "retry_of": r.retry_of, "kpis": r.kpis}
                   for r in results.rows],
        "pareto": [r.number for r in results.front]})


def fmt_column(column: str) -> Callable[[float | None], str]:
    """How a KPI column's value is written for people."""
    if column.endswith("_s"):
        return fmt_time
    if column.startswith("energy"):
        return fmt_energy
    if column.startswith("throughput"):
        return fmt_rate
    if column == "power_w":
        return fmt_power
    if column.endswith("_bytes"):
        return fmt_bytes
    if column in ("utilization", "accuracy", "reference_accuracy", "fidelity"):
        return fmt_fraction
    return lambda v: MISSING if v is None else sig(float(v))


def front_table(results: Results) -> "Table":
    """The Pareto front: each point's target, the keys where its config differs from the
    target's own, and its objective and constraint columns."""
    from rich.table import Table

    from ..text import markup_escape

    space = results.space
    cols = space.columns()
    done = len(results.rows)
    failed = sum(1 for r in results.rows if r.state == "fail")
    infeasible = sum(1 for r in results.rows if r.state == "complete" and not r.feasible)
    title = (f"Pareto front: {len(results.front)} of {done} trials ({failed} failed"
             + (f", {infeasible} outside the constraints" if space.constraints else "") + ")")
    table = Table(title=title)
    table.add_column("trial", justify="right")
    table.add_column("target")
    table.add_column("config differences")
    for c in cols:
        o = next((o for o in space.objectives if o.column == c), None)
        arrow = "" if o is None else (" ↓" if o.sign > 0 else " ↑")
        table.add_column(markup_escape(c + arrow), justify="right")
    for r in sorted(results.front, key=lambda r: [r.columns[o.column] or 0.0 for o in space.objectives]):
        diffs = " ".join(f"{k}={v}" for k, v in r.differences.items()) or "(as the target's config)"
        table.add_row(str(r.number), markup_escape(r.target), markup_escape(diffs),
                      *(fmt_column(c)(r.columns.get(c)) for c in cols))
    return table
