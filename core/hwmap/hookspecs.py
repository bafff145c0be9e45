# mypy: disable-error-code="empty-body"
# (hook specifications are signatures only: pluggy never calls their bodies)
"""The contract between hwmap and its plugins: one pluggy hook per stage.

Plugins implement these with ``from hwmap import hookimpl``. The core's own frontends
(ONNX, PyTorch, NIR) are plugins of ``hwmap_parse`` like anyone else's. Target hooks are
routed: a call for target kind K reaches only the plugin that registered K, so an
implementation never needs to test ``target.kind``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

import numpy as np
import pluggy

if TYPE_CHECKING:
    from pydantic import BaseModel

    from .graph import Graph
    from .kpi import KPIs
    from .parsing import ParseOptions
    from .target import Artifacts, FidelityClaim, Legalized, Mapping, Simulation, Target

class Register(Protocol):
    """The ``register`` callback ``hwmap_register_targets`` receives: call it once per kind."""

    def __call__(self, *, kind: str, config: "type[BaseModel]", description: str,
                 presets: "dict[str, Path] | None" = None, fidelity: "FidelityClaim | None" = None,
                 encodings: "Sequence[str] | None" = None) -> None:
        ...


PROJECT = "hwmap"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def hwmap_register_targets(register: Register) -> None:
    """Declare the target kinds this plugin provides.

    Called once when the plugin is loaded. Call ``register(kind=..., config=...,
    description=..., presets=..., fidelity=...)`` once per kind: ``config`` is a pydantic
    model (subclass :class:`hwmap.TargetConfig`), ``presets`` maps preset names to TOML files
    shipped in the plugin's package (``default`` is the one ``compare`` and ``demo`` use),
    ``fidelity`` an optional :class:`hwmap.FidelityClaim`: what the target promises about its
    simulator beyond the conformance suite's floor (a top-1 agreement, a maximum relative
    error, bit-exactness against the shared quantized reference); ``encodings`` the encodings
    of ``Encoder`` nodes the target takes (default all: ``direct``, ``rate``, ``poisson``; a
    device that receives spikes only passes ``("rate", "poisson")``).
    """


@hookspec(firstresult=True)
def hwmap_parse(source: str, options: "ParseOptions") -> "Graph | None":
    """Turn a model source (a path or a ``package.module:factory`` spec) into a Graph.

    Called by the core for every model it loads; implementations are tried until one
    returns a Graph. Return ``None`` when the source is not yours (wrong extension, wrong
    form) and raise :class:`hwmap.ModelError` when it is yours but cannot be read.
    """


@hookspec(firstresult=True)
def hwmap_legalize(graph: "Graph", target: "Target") -> "Legalized":
    """Rewrite ``graph`` into what ``target`` supports and run its design-rule check.

    Returns a :class:`hwmap.Legalized`: the new graph (fused, folded, quantized, converted)
    and diagnostics. A violation is a named :class:`hwmap.Diagnostic`, never an exception.
    ``target.calibration`` holds input data for quantization calibration, or ``None``.
    """


@hookspec(firstresult=True)
def hwmap_map(graph: "Graph", target: "Target") -> "Mapping":
    """Assign the legalized graph's resources to the target's hardware; return a Mapping."""


@hookspec(firstresult=True)
def hwmap_emit(mapping: "Mapping", target: "Target", outdir: Path) -> "Artifacts":
    """Write the files the hardware would load into ``outdir`` (which exists and is empty).

    The same mapping must give byte-identical files. Return what was written.
    """


@hookspec(firstresult=True)
def hwmap_simulate(artifacts: "Artifacts", target: "Target", inputs: dict[str, np.ndarray]) -> "Simulation":
    """Run the emitted artifacts, read back from ``artifacts.directory`` only, on ``inputs``
    (one batch-first array per graph input) and return outputs and measured activity.

    A simulator that works through the samples in slices calls
    ``target.report_progress(done, total)`` after each (the CLI's progress bar and ETA)."""


@hookspec(firstresult=True)
def hwmap_estimate(mapping: "Mapping", target: "Target", activity: "dict[str, Any] | None") -> "KPIs":
    """Estimate KPIs from the mapping and the config's constants; ``activity`` is what a
    simulation measured (``None`` without data).

    Fill the figures, ``layers`` (per layer or fused group: latency or cycles, energy by
    kind, resources), ``bottleneck``, ``energy_breakdown`` (summing to the energy per
    inference), ``provenance.kpis`` (each figure ``simulated``, ``modelled`` or
    ``counted``) and ``assumptions``: every constant and model used, each an
    :class:`hwmap.Assumption` with value, unit and source (``target.constants()`` gives the
    config's). The core fills ``target``, ``config``, ``model``, ``fidelity``, the
    accuracies and the rest of ``provenance``."""
