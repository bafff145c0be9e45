"""The ``pipelined_dnn`` hook implementations: thin wrappers over the plugin's stage modules.

legalize → :mod:`.legalize`; map → :mod:`.mapping` (selection :mod:`.templates`, tuning
:mod:`.tuner`, buffers :mod:`.buffers`, cycle simulation :mod:`.cyclesim`); emit →
:mod:`.postprocess`; simulate → :mod:`.simulator`; estimate → :mod:`.estimate`.
:func:`plot_mapping` is what ``hwmap compile --plot`` calls. Stage modules are imported on
first use so that loading the plugin (``hwmap targets``) stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwmap import (Artifacts, FidelityClaim, Graph, KPIs, Legalized, Mapping, Register, Simulation, Target,
                   TargetError, hookimpl, presets_in)

from .hardware import PipelinedConfig

__all__ = ["KIND", "FIDELITY", "hwmap_register_targets", "hwmap_legalize", "hwmap_map", "hwmap_emit",
           "hwmap_simulate", "hwmap_estimate", "plot_mapping", "presets"]

KIND = "pipelined_dnn"
DESCRIPTION = ("pipelined dataflow DNN: one engine per layer from a template library, parallelism and buffers "
               "tuned to the budgets (chapter Section 3.5, Fig. 3.20; DNeuro, FINN, hls4ml)")

#: The integer simulator reproduces the quantized reference (the legalized graph with its
#: power-of-two annotations applied) bit for bit: zero mismatches on zoo:digits_cnn,
#: zoo:digits_mlp, zoo:chapter_cnn, zoo:resnet_small and zoo:mobilenet_v1 (at 32×32) in
#: tests/pipelined_dnn/test_pipe_bit_exact.py.
FIDELITY = FidelityClaim(bit_exact=True)


def presets() -> dict[str, Path]:
    """The packaged ``presets/*.toml`` by stem (``default``, ``dneuro-like``)."""
    return presets_in("hwmap_pipelined_dnn")


@hookimpl
def hwmap_register_targets(register: Register) -> None:
    register(kind=KIND, config=PipelinedConfig, description=DESCRIPTION, presets=presets(), fidelity=FIDELITY)


@hookimpl
def hwmap_legalize(graph: Graph, target: Target) -> Legalized:
    from .legalize import legalize

    return legalize(graph, target)


@hookimpl
def hwmap_map(graph: Graph, target: Target) -> Mapping:
    from .mapping import map_graph

    return map_graph(graph, target)


@hookimpl
def hwmap_emit(mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
    from .postprocess import write_program

    return write_program(_pipeline(mapping), target, outdir)


@hookimpl
def hwmap_simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    from .simulator import simulate

    return simulate(artifacts, target, inputs)


@hookimpl
def hwmap_estimate(mapping: Mapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    from .estimate import estimate
    from .skipping import add_skipping

    kpis = estimate(_pipeline(mapping), target, activity)
    add_skipping(kpis, activity)
    return kpis


def plot_mapping(mapping: Mapping, target: Target, path: Path) -> None:
    """``hwmap compile --plot F.png``: cycles per layer and the pipeline's occupancy over time."""
    from .plot import plot_pipeline

    plot_pipeline(_pipeline(mapping), Path(path))


def _pipeline(mapping: Mapping) -> Any:
    from .mapping import PipelineMapping

    if not isinstance(mapping, PipelineMapping):
        raise TargetError(f"expected a pipelined_dnn mapping, got {type(mapping).__name__}")
    return mapping
