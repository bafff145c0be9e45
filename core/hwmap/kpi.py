"""The KPI record: the columns of every comparison (DESIGN.md, "KPI record").

A target's ``hwmap_estimate`` fills the hardware figures and ``assumptions``; the flow fills
``target``, ``config``, ``model``, ``fits``/``violations``, ``fidelity`` and ``accuracy``.
A target that cannot take a model still yields a record: ``fits`` false and the reason in
``violations``, every figure ``None``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = ["KPIs", "Fidelity", "KPI_COLUMNS"]


@dataclass
class Fidelity:
    """Simulated output against the reference model: ``metric`` is ``top1_agreement``
    (fraction of samples with the same arg-max), ``max_abs_error`` or ``bit_exact``."""

    metric: str
    value: float
    samples: int = 0
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class KPIs:
    """One target's estimate for one model. Units are in the names; ``None`` = not known."""

    target: str = ""
    config: str = ""
    model: str = ""
    fits: bool = True
    violations: list[str] = field(default_factory=list)
    latency_s: float | None = None
    throughput_inf_per_s: float | None = None
    energy_per_inference_j: float | None = None
    power_w: float | None = None
    weight_memory_bytes: int | None = None
    activation_memory_bytes: int | None = None
    ops_per_inference: int | None = None
    ops_kind: str | None = None  # "MAC" or "SynOp"
    utilization: float | None = None
    resources: dict[str, Any] = field(default_factory=dict)
    fidelity: Fidelity | None = None
    accuracy: float | None = None
    assumptions: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Problems that make the record incomplete or inconsistent (empty when fine)."""
        problems = []
        if not self.fits:
            if not self.violations:
                problems.append("fits is false but no violation is named")
            return problems
        for name in ("latency_s", "throughput_inf_per_s", "energy_per_inference_j", "power_w",
                     "weight_memory_bytes", "activation_memory_bytes", "ops_per_inference", "utilization"):
            v = getattr(self, name)
            if v is None:
                problems.append(f"{name} missing")
            elif not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                problems.append(f"{name} = {v!r} is not a finite non-negative number")
        if self.ops_kind not in ("MAC", "SynOp"):
            problems.append(f"ops_kind {self.ops_kind!r} is neither 'MAC' nor 'SynOp'")
        if self.utilization is not None and not 0 <= self.utilization <= 1:
            problems.append(f"utilization {self.utilization} outside 0..1")
        if not self.assumptions:
            problems.append("assumptions empty: say which constants and models the estimate used")
        return problems

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        from .jsonio import dumps

        return dumps(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "KPIs":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        fid = d.get("fidelity")
        if isinstance(fid, dict):
            d["fidelity"] = Fidelity(**fid)
        return cls(**d)

    @classmethod
    def not_fitting(cls, target: str, config: str, model: str, reasons: list[str]) -> "KPIs":
        return cls(target=target, config=config, model=model, fits=False, violations=list(reasons))



KPI_COLUMNS = [f.name for f in fields(KPIs)]
