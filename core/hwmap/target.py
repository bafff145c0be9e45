"""The records that flow between the core and a target plugin.

A plugin registers a :class:`TargetSpec` (kind, pydantic config model, presets); the core
hands each hook a :class:`Target` (the spec plus a validated config). The stages return
:class:`Legalized`, a :class:`Mapping` subclass of the plugin's, :class:`Artifacts` and a
:class:`Simulation`; ``estimate`` returns a :class:`~hwmap.kpi.KPIs`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, TypeVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from .graph import Graph
from .errors import TargetError
from .jsonio import dumps
from .limits import max_memory

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
class Artifacts:
    """What ``emit`` wrote: the directory and the files in it (relative paths, in the order
    written), plus ``manifest`` facts the simulator needs to find its way (JSON-able).

    A compile directory is input (users share them), so a simulator reads its artifacts
    only through :meth:`open`, :meth:`read_bytes`, :meth:`read_json` or :meth:`load_npz`:
    they open a file only if ``files`` lists it, it is a plain relative path inside
    ``directory`` (no absolute path, no ``..``, no symbolic link on the way) and a regular
    file (no device, FIFO or directory), and only within the memory bound
    (:func:`hwmap.limits.max_memory`) or the smaller ``max_bytes`` the plugin gives.
    Anything else is a :class:`hwmap.TargetError` naming the file (and never quoting it).

    ``graph_sha256`` and ``config_sha256`` are the digests of the parsed graph and the
    effective config the artifacts were compiled from (:meth:`write_manifest` records
    them; ``hwmap simulate`` refuses artifacts whose digests are not those of the compile
    directory's ``graph/`` and ``target.json``).
    """

    directory: Path
    files: list[str]
    manifest: dict[str, Any] = field(default_factory=dict)
    graph_sha256: str | None = None
    config_sha256: str | None = None

    def path(self, name: str) -> Path:
        """Where listed artifact ``name`` is (checked as the class docstring says; it need
        not exist yet)."""
        from .compiledir import artifact_path

        return artifact_path(self, name)

    def open(self, name: str, *, max_bytes: int | None = None) -> IO[bytes]:
        """Listed artifact ``name`` opened for binary reading (a seekable file object)."""
        from .compiledir import open_artifact

        return open_artifact(self, name, max_bytes)

    def read_bytes(self, name: str, *, max_bytes: int | None = None) -> bytes:
        """The bytes of listed artifact ``name``."""
        from .compiledir import read_artifact

        return read_artifact(self, name, max_bytes)

    def read_json(self, name: str, *, max_bytes: int | None = None) -> Any:
        """Listed artifact ``name`` parsed as JSON (UTF-8, nesting and size bounded:
        :func:`hwmap.compiledir.read_json`)."""
        from .compiledir import JSON_EXPANSION, parse_json
        from .errors import TargetError

        limit = max_memory() // JSON_EXPANSION if max_bytes is None else min(max_bytes, max_memory() // JSON_EXPANSION)
        return parse_json(self.read_bytes(name, max_bytes=limit), what="artifact", where=str(self.path(name)),
                          error=TargetError)

    def load_npz(self, name: str) -> dict[str, np.ndarray]:
        """Every array of listed ``.npz`` artifact ``name``, sizes checked from the arrays'
        headers before any is read (:func:`hwmap.safeio.load_npz`)."""
        from .errors import TargetError
        from .safeio import load_npz

        with self.open(name) as f:
            return load_npz(f, where=str(self.path(name)), error=TargetError)

    def write_manifest(self, graph: Graph | None = None, target: "Target | None" = None) -> Path:
        """Write ``artifacts.json``: the files, the manifest and, given the parsed ``graph``
        and the ``target`` the artifacts were compiled for, their digests. A listed name
        that is not a plain relative path inside the directory is a :class:`TargetError`
        (a plugin bug: ``simulate`` would refuse it)."""
        from .compiledir import MANIFEST, config_digest, name_problem
        from .errors import TargetError

        for name in self.files:
            problem = name_problem(name)
            if problem:
                raise TargetError(f"emit listed artifact {str(name)[:80]!r}, which {problem}",
                                  where=str(self.directory))
        if graph is not None:
            self.graph_sha256 = graph.digest()
        if target is not None:
            self.config_sha256 = config_digest(target)
        doc: dict[str, Any] = {"files": self.files, "manifest": self.manifest}
        if self.graph_sha256 is not None:
            doc["graph_sha256"] = self.graph_sha256
        if self.config_sha256 is not None:
            doc["config_sha256"] = self.config_sha256
        p = self.directory / MANIFEST
        p.write_text(dumps(doc))
        return p

    @classmethod
    def read(cls, directory: Path) -> "Artifacts":
        """The artifacts ``directory/artifacts.json`` lists, checked against its schema
        (:func:`hwmap.compiledir.read_manifest`; a :class:`hwmap.DataError` naming it)."""
        from .compiledir import read_manifest

        return read_manifest(Path(directory))


@dataclass
class Simulation:
    """Outputs of running the artifacts, one array per graph output (batch first), and the
    activity the simulator measured (spike counts, MVMs, zero fractions...) for estimate."""

    outputs: dict[str, np.ndarray]
    activity: dict[str, Any] = field(default_factory=dict)
