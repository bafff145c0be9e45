"""The ``analog_imc`` hook implementations: thin wrappers over the plugin's stage modules.

legalize → :mod:`.legalize`; map → :mod:`.layers` + :mod:`.mapper` into an
:class:`~.mapping.AnalogMapping`; emit → :mod:`.emit`; simulate → :mod:`.simulator`;
estimate → :mod:`.estimate`. :func:`plot_mapping` is what ``hwmap compile --plot`` calls.
Stage modules are imported on first use so that loading the plugin (``hwmap targets``)
stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwmap import (Artifacts, FidelityClaim, Graph, KPIs, Legalized, Mapping, Simulation, Target, TargetError,
                   Register, hookimpl, presets_in)

from .hardware import AnalogIMCConfig, Blueprint, columns_per_weight

__all__ = [
    "KIND", "FIDELITY", "hwmap_register_targets", "hwmap_legalize", "hwmap_map", "hwmap_emit", "hwmap_simulate",
    "hwmap_estimate", "plot_mapping", "presets", "digital_cores",
]

KIND = "analog_imc"
DESCRIPTION = ("multi-core analog in-memory-computing accelerator: crossbars of concatenable elements, "
               "DAC/ADC periphery, mesh NoC (chapter Section 3.4)")

#: What the simulator promises against the float reference model (``hwmap.execute.run``),
#: with calibration data (the flow's ``target.calibration``) and device noise off. Measured
#: on zoo:digits, calibrated on its first 90 samples and scored on the last 270: top-1
#: agreement 1.000 for zoo:digits_cnn and zoo:digits_mlp on analog_imc:default, 0.996 for
#: zoo:digits_cnn on analog_imc:chapter-fig3.13; zoo:resnet_small at 16×16 on seeded U(0, 1) images, same
#: split, 0.989–0.996 over four seeds; so 0.99 holds on the digits. No maximum relative
#: error is claimed: it is a maximum over every output value, and one ADC conversion
#: clipping on a sample the calibration did not see sets it (zoo:chapter_cnn on
#: analog_imc:chapter-fig3.13, seeded U(0, 1) inputs: 0.17 and 0.39 on seeds 0 and 4;
#: analog_imc:default: 0.010 on the digits, 0.013 on zoo:chapter_cnn). Not bit-exact: ADC
#: and weight rounding. Measured by tests/analog_imc/test_analog_fidelity.py.
FIDELITY = FidelityClaim(top1_agreement=0.99)


def presets() -> dict[str, Path]:
    """The packaged ``presets/*.toml``, by stem (``default``, ``chapter-fig3.13``, ``isaac-like``)."""
    return presets_in("hwmap_analog_imc")


@hookimpl
def hwmap_register_targets(register: Register) -> None:
    register(kind=KIND, config=AnalogIMCConfig, description=DESCRIPTION, presets=presets(), fidelity=FIDELITY)


@hookimpl
def hwmap_legalize(graph: Graph, target: Target) -> Legalized:
    from .legalize import legalize

    return legalize(graph, target)


def digital_cores(graph: Graph, layers: list[Any], result: Any) -> dict[str, int]:
    """Core of every node the digital logic runs: the core holding the crossbar layer that
    produced its (first) input, followed through other digital nodes; core 0 for nodes fed
    by graph inputs or constants only. A layer's home core is the core of its first block
    (lowest computation cycle, then core) of its original copy."""
    node_of = {lay.index: lay.node for lay in layers}
    home: dict[str, int] = {}
    for p in result.placements:  # sorted by (cycle, core, ...): the first seen is the home
        if p.replica == 0:
            home.setdefault(node_of[p.layer], p.core)
    core_of_tensor: dict[str, int] = {}
    digital: dict[str, int] = {}
    for node in graph.nodes:
        if node.name in home:
            core = home[node.name]
        else:
            core = next((core_of_tensor[t] for t in node.inputs if t in core_of_tensor), 0)
            digital[node.name] = core
        for t in node.outputs:
            core_of_tensor[t] = core
    return digital


@hookimpl
def hwmap_map(graph: Graph, target: Target) -> Mapping:
    from .layers import crossbar_layers
    from .legalize import META_KEY, SYNTHETIC_NOTE
    from .mapper import map_layers
    from .mapping import AnalogMapping

    cfg = target.config_as(AnalogIMCConfig)
    blueprint = Blueprint.from_config(cfg)
    layers = crossbar_layers(graph, columns_per_weight(cfg.hardware))
    result = map_layers(layers, blueprint, cfg.mapper.strategy, cfg.mapper.conversion_rows)
    notes = list(result.notes)
    calib = graph.meta.get(META_KEY, {}).get("calibration")
    if isinstance(calib, dict) and calib.get("source") == "synthetic":
        notes.insert(0, f"{SYNTHETIC_NOTE} ({calib.get('samples')} seeded samples)")
    return AnalogMapping(graph, cfg, blueprint, layers, result, digital_cores(graph, layers, result), notes)


@hookimpl
def hwmap_emit(mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
    from . import emit

    return emit.write_program(_analog(mapping), target, outdir)


@hookimpl
def hwmap_simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    from . import simulator

    return simulator.simulate(artifacts, target, inputs)


@hookimpl
def hwmap_estimate(mapping: Mapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    from .estimate import estimate
    from .skipping import add_skipping

    kpis = estimate(_analog(mapping), target, activity)
    add_skipping(kpis, activity)
    return kpis


def plot_mapping(mapping: Mapping, target: Target, path: Path) -> None:
    """Draw ``mapping`` as the chapter's Fig. 3.13 (``hwmap compile --plot``)."""
    from .plot import plot_mapping as _plot

    m = _analog(mapping)
    _plot(m.result, m.layers, m.blueprint, Path(path))


def _analog(mapping: Mapping) -> Any:
    from .mapping import AnalogMapping

    if not isinstance(mapping, AnalogMapping):
        raise TargetError(f"expected an analog_imc mapping, got {type(mapping).__name__}")
    return mapping
