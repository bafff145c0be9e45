"""What an exploration optimizes: objectives (KPI columns with a direction) and constraints
(``"accuracy >= 0.95"``), and how a KPI record's column is read.

A column is a numeric field of the KPI record (:mod:`hwmap.kpi`): the headline figures,
``accuracy``, ``reference_accuracy``, ``fidelity`` (its value), or one kind of
``energy_breakdown.KIND``. Constraints follow optuna's convention: a trial is feasible when
every value :meth:`Constraint.violation` gives is at most 0.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..kpi import ENERGY_KINDS, HEADLINE_KPIS

__all__ = ["Objective", "Constraint", "COLUMNS", "DATA_COLUMNS", "kpi_value", "parse_objectives",
           "parse_constraints", "DIRECTIONS"]

#: The KPI columns an objective or a constraint may name.
COLUMNS = (*HEADLINE_KPIS, "accuracy", "reference_accuracy", "fidelity",
           *(f"energy_breakdown.{k}" for k in ENERGY_KINDS))
#: Columns only a run with ``--data`` fills (the artifacts are simulated on scored samples).
DATA_COLUMNS = ("accuracy", "reference_accuracy", "fidelity")
#: How a direction may be written -> optuna's name for it.
DIRECTIONS = {"minimize": "minimize", "min": "minimize", "maximize": "maximize", "max": "maximize"}
_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=)\s*(\S+)\s*$")


def kpi_value(record: Mapping[str, Any], column: str) -> float | None:
    """The number in ``column`` of a KPI record (as JSON), or ``None`` if it has none."""
    if column == "fidelity":
        fid = record.get("fidelity")
        v = fid.get("value") if isinstance(fid, dict) else None
    elif column.startswith("energy_breakdown."):
        breakdown = record.get("energy_breakdown") or {}
        v = breakdown.get(column.split(".", 1)[1], 0.0 if breakdown else None)
    else:
        v = record.get(column)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


@dataclass(frozen=True)
class Objective:
    """A KPI column and whether less (``minimize``) or more (``maximize``) is better."""

    column: str
    direction: str

    @property
    def sign(self) -> float:
        """+1 to minimize, −1 to maximize: ``sign * value`` is always to be minimized."""
        return 1.0 if self.direction == "minimize" else -1.0


@dataclass(frozen=True)
class Constraint:
    """``column >= bound`` or ``column <= bound``."""

    column: str
    op: str
    bound: float

    def violation(self, value: float) -> float:
        """How far ``value`` is outside the bound (at most 0: satisfied)."""
        return self.bound - value if self.op == ">=" else value - self.bound

    def __str__(self) -> str:
        return f"{self.column} {self.op} {self.bound:g}"


def _check_column(column: str, what: str, where: str) -> None:
    if column not in COLUMNS:
        import difflib

        close = difflib.get_close_matches(column, COLUMNS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{what} {column!r} is not a KPI column{hint}; columns: {', '.join(COLUMNS)}", where=where)


def parse_objectives(raw: Any, where: str) -> list[Objective]:
    """The ``[objectives]`` table: ``COLUMN = "minimize" | "maximize"``, in file order."""
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("[objectives] must be a table of KPI columns, each \"minimize\" or \"maximize\", e.g. "
                          "energy_per_inference_j = \"minimize\"", where=where)
    out = []
    for column, direction in raw.items():
        _check_column(column, "objective", where)
        if not isinstance(direction, str) or direction.lower() not in DIRECTIONS:
            raise ConfigError(f"objective {column!r} = {direction!r}: the direction must be \"minimize\" or "
                              "\"maximize\"", where=where)
        out.append(Objective(column, DIRECTIONS[direction.lower()]))
    return out


def parse_constraints(raw: Any, where: str) -> list[Constraint]:
    """``constraints = ["accuracy >= 0.95", "latency_s <= 1e-3"]``."""
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise ConfigError("constraints must be a list of strings such as \"accuracy >= 0.95\"", where=where)
    out = []
    for text in raw:
        m = _CONSTRAINT.match(text)
        if m is None:
            raise ConfigError(f"constraint {text!r}: expected COLUMN >= NUMBER or COLUMN <= NUMBER", where=where)
        column, op, bound = m.groups()
        _check_column(column, f"constraint {text!r}: column", where)
        try:
            value = float(bound)
        except ValueError:
            raise ConfigError(f"constraint {text!r}: {bound!r} is not a number", where=where) from None
        if not math.isfinite(value):
            raise ConfigError(f"constraint {text!r}: the bound must be finite", where=where)
        out.append(Constraint(column, op, value))
    return out
