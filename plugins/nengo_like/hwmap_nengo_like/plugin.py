"""The ``nengo_like`` hook implementations: thin wrappers over the stage modules.

legalize → :mod:`.legalize` (the core's conversion, the NEF description, the design rules);
map → :mod:`.ann` and :mod:`.mapper` into an :class:`~.mapper.NEFMapping`; emit → the network
description (:mod:`.description`); simulate → :mod:`.simulator`; estimate → :mod:`.estimate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwmap import (Artifacts, FidelityClaim, Graph, KPIs, Legalized, Mapping, Register, Simulation, Target,
                   TargetError, hookimpl, presets_in)

from .hardware import NengoLikeConfig

__all__ = ["KIND", "FIDELITY", "hwmap_register_targets", "hwmap_legalize", "hwmap_map", "hwmap_emit",
           "hwmap_simulate", "hwmap_estimate", "presets"]

KIND = "nengo_like"
DESCRIPTION = ("NEF / Nengo-style spiking network on a substrate of cores (chapter Section 3.2.5): ANN activations "
               "as ensembles of spiking RectifiedLinear neurons, nengo-compatible object model")
#: Measured: zoo:digits_cnn converted (8 steps, RegularSpiking, direct encoding) on
#: nengo_like:default agrees with the float ANN on 0.985 of the 270 scored zoo:digits
#: samples (tests/nengo_like/test_target.py); 0.95 holds with margin.
FIDELITY = FidelityClaim(top1_agreement=0.95)
FORMAT = "hwmap-nengo-like-network"


def presets() -> dict[str, Path]:
    return presets_in("hwmap_nengo_like")


@hookimpl
def hwmap_register_targets(register: Register) -> None:
    register(kind=KIND, config=NengoLikeConfig, description=DESCRIPTION, presets=presets(), fidelity=FIDELITY)


@hookimpl
def hwmap_legalize(graph: Graph, target: Target) -> Legalized:
    from .legalize import legalize

    return legalize(graph, target)


@hookimpl
def hwmap_map(graph: Graph, target: Target) -> Mapping:
    from .ann import describe
    from .mapper import map_description

    cfg = target.config_as(NengoLikeConfig)
    d, diags = describe(graph, cfg.neurons.type, cfg.neurons.rate_scale, cfg.neurons.output_synapse_tau_s)
    if d is None:
        raise TargetError("the legalized graph does not describe: " + "; ".join(str(x) for x in diags),
                          where=graph.name)
    return map_description(d, target, graph)


@hookimpl
def hwmap_emit(mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
    from .description import VERSION
    from .emit import emit_description

    m = _nef(mapping)
    files = emit_description(m.description, outdir)
    return Artifacts(outdir, files, {"format": FORMAT, "version": VERSION})


@hookimpl
def hwmap_simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    from . import simulator

    return simulator.simulate(artifacts, target, inputs)


@hookimpl
def hwmap_estimate(mapping: Mapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    from .estimate import estimate

    return estimate(_nef(mapping), target, activity)


def _nef(mapping: Mapping) -> Any:
    from .mapper import NEFMapping

    if not isinstance(mapping, NEFMapping):
        raise TargetError(f"expected a nengo_like mapping, got {type(mapping).__name__}")
    return mapping
