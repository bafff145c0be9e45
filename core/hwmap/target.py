"""The records that flow between the core and a target plugin.

A plugin registers a :class:`TargetSpec` (kind, pydantic config model, presets); the core
hands each hook a :class:`Target` (the spec plus a validated config). The stages return
:class:`Legalized`, a :class:`Mapping` subclass of the plugin's, :class:`Artifacts` (defined
in :mod:`hwmap.artifacts`, with the checks that guard reading them back) and a
:class:`Simulation`; ``estimate`` returns a :class:`~hwmap.kpi.KPIs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from .artifacts import Artifacts
from .graph import Graph
from .errors import TargetError

if TYPE_CHECKING:
    from .kpi import Assumption

C = TypeVar("C", bound=BaseModel)

__all__ = [
    "TargetConfig",
    "ConfigSection",
    "FidelityClaim",
    "TargetSpec",
    "Target",
    "Diagnostic",
    "Legalized",
    "Mapping",
    "Artifacts",
    "Simulation",
]


#: How every config model validates: unknown keys are errors, values are checked on
#: assignment (a ``--set`` override is checked like the file itself), types are strict (``true``
#: is not 1, ``8.0`` is not 8; an integer is a fine float), and ``inf``/``nan`` are refused.
CONFIG_RULES = ConfigDict(extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False)


class ConfigSection(BaseModel):
    """Base of a config table (``[hardware]``, ``[energy]``...): the same rules as
    :class:`TargetConfig`."""

    model_config = CONFIG_RULES


class TargetConfig(BaseModel):
    """Base of every plugin's config model; its tables derive from :class:`ConfigSection`."""

    model_config = CONFIG_RULES


@dataclass(frozen=True)
class FidelityClaim:
    """What a target promises about its simulated outputs, checked by the conformance suite
    on top of the floor the suite sets for every target (which no claim can lower).

    ``top1_agreement``: at least this share of samples with the reference's arg-max (on
    classifier outputs); ``max_rel_error``: at most this largest absolute error over the
    reference's largest magnitude, per output; ``bit_exact``: outputs identical to the shared
    quantized reference (the legalized graph run by ``hwmap.execute.run(...,
    quantized=True)``, its quantization annotations applied).
    """

    top1_agreement: float | None = None
    max_rel_error: float | None = None
    bit_exact: bool = False


@dataclass(frozen=True)
class TargetSpec:
    """What a plugin provides for one target kind (registered through
    ``hwmap_register_targets``). ``presets`` maps a preset name to its TOML file;
    ``fidelity`` is what the target claims about its simulator (``None``: only the suite's
    floor)."""

    kind: str
    config_model: type[BaseModel]
    description: str
    presets: dict[str, Path] = field(default_factory=dict)
    plugin_name: str = ""
    package: str = ""
    version: str = ""
    fidelity: FidelityClaim | None = None
    #: The encodings of ``Encoder`` nodes (:mod:`hwmap.ops.time`) the target takes: a spiking
    #: device that receives spikes only lists ``("rate", "poisson")``; an encoded graph with
    #: another encoding does not fit it.
    encodings: tuple[str, ...] = ("direct", "rate", "poisson")


@dataclass
class Target:
    """One configured target: the spec, the validated config and where it came from.

    ``calibration`` is the calibration part of the data the flow was given (the first
    ``--calibrate`` samples of ``--data``), or ``None``: legalize may use it to calibrate
    quantization or conversion; it is never scored. ``sources`` maps the dotted path of
    every value the config files or ``--set`` gave to where it came from (see
    :meth:`constants`); ``description`` is the config's one-line description.
    """

    spec: TargetSpec
    config: BaseModel
    name: str
    source: str
    calibration: np.ndarray | None = None
    sources: dict[str, str] = field(default_factory=dict)
    description: str = ""
    progress: Callable[[int, int], None] | None = field(default=None, repr=False, compare=False)

    def report_progress(self, done: int, total: int) -> None:
        """Tell the flow how far a long stage (a simulation over many samples) has come."""
        if self.progress is not None:
            self.progress(done, total)

    @property
    def kind(self) -> str:
        return self.spec.kind

    def config_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, **self.config.model_dump(mode="json")}

    def config_as(self, model: type[C]) -> C:
        """The validated config, typed as the plugin's own model (``target.config_as(MyConfig)``);
        a :class:`~hwmap.errors.TargetError` if it is another model's."""
        if not isinstance(self.config, model):
            raise TargetError(f"target {self.name!r} holds a {type(self.config).__name__} config, not a "
                              f"{model.__name__}")
        return self.config

    def constants(self) -> "dict[str, Assumption]":
        """Every value of the effective config by dotted path, as an
        :class:`~hwmap.kpi.Assumption` with its unit and source: the source the config file
        gave it (``{ value = ..., source = "..." }``), ``--set`` on the command line, or the
        schema field's documented default source (:func:`hwmap.config.constant`).
        ``estimate`` puts these in ``assumptions``."""
        from .constants import config_constants

        return config_constants(self)

    def constant(self, path: str) -> "Assumption":
        """One entry of :meth:`constants` (``"energy.adc_pj_per_conversion"``)."""
        from .constants import config_constants

        found = config_constants(self)
        if path not in found:
            raise KeyError(f"{self.kind} config has no value {path!r}")
        return found[path]


@dataclass(frozen=True)
class Diagnostic:
    """A named design-rule finding: ``rule`` (a stable identifier), the node it concerns
    (or ``None`` for the whole graph), and a message a user can act on."""

    rule: str
    message: str
    node: str | None = None
    severity: str = "error"  # "error" (does not fit) or "warning"

    def __str__(self) -> str:
        at = f" at node {self.node!r}" if self.node else ""
        return f"{self.rule}{at}: {self.message}"


@dataclass
class Legalized:
    """The legalized graph and the design-rule check's findings."""

    graph: Graph
    diagnostics: list[Diagnostic] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def violations(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]

    @property
    def fits(self) -> bool:
        return not self.violations


class Mapping:
    """Base of a plugin's mapping: the legalized graph assigned to hardware resources.

    Subclasses add their own fields and override :meth:`to_json`, which the flow writes to
    ``mapping.json`` (it must be deterministic).
    """

    def __init__(self, graph: Graph) -> None:
        self.graph = graph

    def to_json(self) -> dict[str, Any]:
        return {"graph": self.graph.name}


@dataclass
class Simulation:
    """Outputs of running the artifacts, one array per graph output (batch first), and the
    activity the simulator measured (spike counts, MVMs, zero fractions...) for estimate."""

    outputs: dict[str, np.ndarray]
    activity: dict[str, Any] = field(default_factory=dict)
