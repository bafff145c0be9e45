"""How much a record rests on what was assumed: ``--sensitivity``.

For every numeric config constant whose source is marked "assumed"
(:attr:`hwmap.Assumption.assumed`), the target is legalized, mapped and estimated again with
that constant halved and doubled (integers rounded, at least 1), everything else equal and
with the activity the base simulation measured; each headline KPI is reported as a ratio to
the base record's. A variant the schema refuses (out of range) or that does not fit is
reported as such. Emitting and simulating are not repeated: the simulated activity is the
same input to every variant's estimate.
"""

from __future__ import annotations

import copy
from typing import Any

from .config import validate_config
from .errors import HwmapError
from .graph import Graph
from .kpi import KPIs
from .registry import get_registry
from .report_detail import SENSITIVITY_KPIS
from .target import Target

__all__ = ["sensitivity", "FACTORS"]

#: The factors each assumed constant is multiplied by.
FACTORS = ((0.5, "x0.5"), (2.0, "x2"))


def _variant(target: Target, path: str, value: Any) -> Target:
    body = copy.deepcopy(target.config.model_dump(mode="json"))
    node = body
    parts = path.split(".")
    for p in parts[:-1]:
        node = node[p]
    node[parts[-1]] = value
    config = validate_config(target.spec.config_model, body, f"{target.name} with {path} = {value!r}")
    return Target(spec=target.spec, config=config, name=target.name, source=target.source,
                  calibration=target.calibration, sources={**target.sources, path: "--sensitivity variant"},
                  description=target.description)


def _scaled(value: int | float, factor: float) -> int | float:
    if isinstance(value, int):
        return max(1, round(value * factor))
    return value * factor


def sensitivity(graph: Graph, target: Target, activity: dict[str, Any] | None, base: KPIs) -> dict[str, Any]:
    """``{constant path: {value, unit, source, "x0.5": {kpi: ratio} | {"error": why}, "x2": ...}}``
    for every assumed numeric constant of ``target``'s config; ``graph`` is the parsed model."""
    reg = get_registry()
    out: dict[str, Any] = {}
    for path, a in target.constants().items():
        if not a.assumed or isinstance(a.value, bool) or not isinstance(a.value, (int, float)):
            continue
        row: dict[str, Any] = {"value": a.value, "unit": a.unit, "source": a.source}
        for factor, label in FACTORS:
            value = _scaled(a.value, factor)
            try:
                variant = _variant(target, path, value)
                legal = reg.call("hwmap_legalize", target.kind, graph=graph, target=variant)
                if not legal.fits:
                    row[label] = {"value": value, "error": "does not fit: " + "; ".join(map(str, legal.violations))}
                    continue
                mapping = reg.call("hwmap_map", target.kind, graph=legal.graph, target=variant)
                k: KPIs = reg.call("hwmap_estimate", target.kind, mapping=mapping, target=variant, activity=activity)
            except HwmapError as e:
                row[label] = {"value": value, "error": str(e)}
                continue
            ratios: dict[str, Any] = {"value": value}
            for key, _ in SENSITIVITY_KPIS:
                b, v = getattr(base, key), getattr(k, key)
                ratios[key] = (float(v) / float(b)) if b and v is not None else None
            row[label] = ratios
        out[path] = row
    return out
