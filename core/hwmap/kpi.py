"""The KPI record: the columns of every comparison.

A target's ``hwmap_estimate`` fills the hardware figures, ``layers``, ``bottleneck``,
``energy_breakdown``, ``assumptions`` (each an :class:`Assumption`: value, unit, source) and
``provenance.kpis`` (for each figure whether it was ``simulated``, ``modelled`` or
``counted``). The flow fills ``target``, ``config``, ``model``, ``fits``/``violations``,
``fidelity``, ``accuracy``, ``reference_accuracy`` and the rest of ``provenance``
(versions, hashes of model, data and effective config, the calibration/scoring split).
A target that cannot take a model still yields a record: ``fits`` false and the reason in
``violations``, every figure ``None``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

__all__ = [
    "KPIs", "Fidelity", "Assumption", "LayerCost", "Bottleneck", "Provenance", "KPI_COLUMNS", "HEADLINE_KPIS",
    "ENERGY_KINDS", "PROVENANCE_KINDS",
]

#: The kinds energy is split into, in ``energy_breakdown`` and in each layer's ``energy_j``.
ENERGY_KINDS = ("compute", "converters", "memory", "communication", "reprogramming", "static")
#: How a KPI was obtained: by running the emitted artifacts on the target's simulator
#: (``simulated``), by an analytic model with the config's constants (``modelled``), or by
#: counting what the mapping or the emitted artifacts hold (``counted``).
PROVENANCE_KINDS = ("simulated", "modelled", "counted")
#: The figures every fitting record carries (and whose provenance it states).
HEADLINE_KPIS = ("latency_s", "throughput_inf_per_s", "energy_per_inference_j", "power_w", "weight_memory_bytes",
                 "activation_memory_bytes", "ops_per_inference", "utilization")
#: Relative tolerance of the sums the record must satisfy (breakdowns add up to totals).
SUM_RTOL = 1e-6


@dataclass
class Fidelity:
    """Simulated output against the reference model: ``metric`` is ``top1_agreement``
    (fraction of samples with the same arg-max), ``max_abs_error`` or ``bit_exact``."""

    metric: str
    value: float
    samples: int = 0
    detail: dict[str, float] = field(default_factory=dict)


@dataclass
class Assumption:
    """One constant or model an estimate rests on.

    ``value``: the number (or, for a model, a sentence saying what it computes); ``unit``:
    its unit ("" for counts, ratios and models); ``source``: where it comes from — a
    citation (paper with table or figure, datasheet), ``"assumed: <reason>"`` when nothing
    better backs it, or who set it (``"--set on the command line"``, a user's config file).
    """

    value: Any
    unit: str = ""
    source: str = ""

    @property
    def assumed(self) -> bool:
        """Whether the source says the value is an assumption (what ``--sensitivity`` varies)."""
        return self.source.strip().lower().startswith("assumed")


@dataclass
class LayerCost:
    """What one layer (or fused group) costs on the target, per inference.

    ``latency_s``: its time on the target's critical path (or its busy time where layers
    overlap: the plugin says which in ``assumptions``); ``cycles``: clock cycles where the
    target counts them; ``energy_j``: joules by kind (keys from :data:`ENERGY_KINDS`);
    ``ops``: MACs or SynOps it executes; ``resources``: what it occupies (crossbar
    elements, cores, neurons, multipliers, buffer bytes...).
    """

    name: str
    op: str = ""
    latency_s: float | None = None
    cycles: int | None = None
    energy_j: dict[str, float] = field(default_factory=dict)
    ops: float | None = None
    resources: dict[str, Any] = field(default_factory=dict)

    @property
    def energy_total_j(self) -> float:
        return float(sum(self.energy_j.values()))


@dataclass
class Bottleneck:
    """What limits throughput: ``description`` in words (a sentence a user can act on),
    ``resource`` (e.g. "core 3 crossbar reads", "reprogramming", "multipliers") and the
    ``layer`` that loads it most (``None`` when no single layer does)."""

    description: str
    resource: str = ""
    layer: str | None = None


@dataclass
class Provenance:
    """Where the record's figures come from.

    ``kpis``: for each figure, ``simulated``, ``modelled`` or ``counted`` (the plugin fills
    it; the flow adds ``fidelity`` and ``accuracy``). The flow fills ``versions`` (hwmap and
    the plugin's distribution), ``sha256`` of the parsed model, the data and the effective
    config, and ``data``: the data set's name and how many samples calibrated and how many
    were scored.
    """

    kpis: dict[str, str] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    sha256: dict[str, str] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)


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
    reference_accuracy: float | None = None
    layers: list[LayerCost] = field(default_factory=list)
    bottleneck: Bottleneck | None = None
    energy_breakdown: dict[str, float] = field(default_factory=dict)
    provenance: Provenance = field(default_factory=Provenance)
    assumptions: dict[str, Assumption] = field(default_factory=dict)
    sensitivity: dict[str, Any] = field(default_factory=dict)

    def check(self) -> list[str]:
        """Problems that make the record incomplete or inconsistent (empty when fine)."""
        problems = []
        if not self.fits:
            if not self.violations:
                problems.append("fits is false but no violation is named")
            return problems
        for name in HEADLINE_KPIS:
            v = getattr(self, name)
            if v is None:
                problems.append(f"{name} missing")
            elif not _nonneg(v):
                problems.append(f"{name} = {v!r} is not a finite non-negative number")
        if self.ops_kind not in ("MAC", "SynOp"):
            problems.append(f"ops_kind {self.ops_kind!r} is neither 'MAC' nor 'SynOp'")
        if self.utilization is not None and not 0 <= self.utilization <= 1:
            problems.append(f"utilization {self.utilization} outside 0..1")
        problems += self._check_assumptions()
        problems += self._check_provenance()
        problems += self._check_energy()
        if not self.layers:
            problems.append("layers empty: give each layer's (or fused group's) latency or cycles, energy and resources")
        if self.bottleneck is None or not self.bottleneck.description.strip():
            problems.append("bottleneck missing: say what limits throughput, in words and by layer")
        elif self.bottleneck.layer is not None and self.bottleneck.layer not in {x.name for x in self.layers}:
            problems.append(f"bottleneck names layer {self.bottleneck.layer!r}, which is not in layers")
        return problems

    def _check_assumptions(self) -> list[str]:
        if not self.assumptions:
            return ["assumptions empty: say which constants and models the estimate used"]
        out = []
        for key, a in self.assumptions.items():
            if not isinstance(a, Assumption):
                out.append(f"assumption {key!r} is a {type(a).__name__}, not an Assumption(value, unit, source)")
            elif not isinstance(a.source, str) or not a.source.strip():
                out.append(f"assumption {key!r} = {a.value!r} has no source")
        return out

    def _check_provenance(self) -> list[str]:
        out = []
        for name in HEADLINE_KPIS:
            how = self.provenance.kpis.get(name)
            if getattr(self, name) is not None and how not in PROVENANCE_KINDS:
                out.append(f"provenance of {name} is {how!r}, not one of {', '.join(PROVENANCE_KINDS)}")
        for name, how in self.provenance.kpis.items():
            if how not in PROVENANCE_KINDS:
                out.append(f"provenance of {name} is {how!r}, not one of {', '.join(PROVENANCE_KINDS)}")
        return sorted(set(out))

    def _check_energy(self) -> list[str]:
        out = []
        total = self.energy_per_inference_j
        kinds = set(ENERGY_KINDS)
        if not self.energy_breakdown:
            return ["energy_breakdown empty: split the energy per inference by kind "
                    f"({', '.join(ENERGY_KINDS)})"]
        for k, v in self.energy_breakdown.items():
            if k not in kinds:
                out.append(f"energy_breakdown kind {k!r} is not one of {', '.join(ENERGY_KINDS)}")
            elif not _nonneg(v):
                out.append(f"energy_breakdown[{k!r}] = {v!r} is not a finite non-negative number")
        if out or total is None or not _nonneg(total):
            return out
        total = float(total)
        s = float(sum(self.energy_breakdown.values()))
        if not math.isclose(s, total, rel_tol=SUM_RTOL, abs_tol=1e-30):
            out.append(f"energy_breakdown sums to {s!r} J, not energy_per_inference_j = {total!r} J")
        layer_sum = 0.0
        for layer in self.layers:
            for k, v in layer.energy_j.items():
                if k not in kinds:
                    out.append(f"layer {layer.name!r}: energy kind {k!r} is not one of {', '.join(ENERGY_KINDS)}")
                elif not _nonneg(v):
                    out.append(f"layer {layer.name!r}: energy_j[{k!r}] = {v!r} is not a finite non-negative number")
                else:
                    layer_sum += float(v)
            if layer.latency_s is not None and not _nonneg(layer.latency_s):
                out.append(f"layer {layer.name!r}: latency_s = {layer.latency_s!r} is not a finite non-negative number")
        if layer_sum > total * (1 + SUM_RTOL) + 1e-30:
            out.append(f"layers' energies sum to {layer_sum!r} J, more than energy_per_inference_j = {total!r} J")
        return out

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def dumps(self) -> str:
        from .jsonio import dumps

        return dumps(self.to_json())

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "KPIs":
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in d.items() if k in known}
        if isinstance(d.get("fidelity"), dict):
            d["fidelity"] = Fidelity(**d["fidelity"])
        if isinstance(d.get("bottleneck"), dict):
            d["bottleneck"] = Bottleneck(**d["bottleneck"])
        if isinstance(d.get("provenance"), dict):
            d["provenance"] = Provenance(**d["provenance"])
        d["layers"] = [LayerCost(**x) if isinstance(x, dict) else x for x in d.get("layers") or []]
        d["assumptions"] = {k: Assumption(**v) if isinstance(v, dict) and set(v) <= {"value", "unit", "source"}
                            else v for k, v in (d.get("assumptions") or {}).items()}
        return cls(**d)

    @classmethod
    def not_fitting(cls, target: str, config: str, model: str, reasons: list[str]) -> "KPIs":
        return cls(target=target, config=config, model=model, fits=False, violations=list(reasons))


def _nonneg(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0


KPI_COLUMNS = [f.name for f in fields(KPIs)]
