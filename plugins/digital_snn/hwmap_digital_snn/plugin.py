"""The ``digital_snn`` hook implementations: thin wrappers over the stage modules.

legalize → :mod:`.legalize` (extraction, pruning, design rules, quantization annotations);
map → :mod:`.mapper` into a :class:`~.mapper.DeviceMapping`; emit → the bitstream
(:mod:`.program`); simulate → :mod:`.simulator`; estimate → :mod:`.estimate`. The plugin is
also a frontend: ``hwmap_parse`` reads Rockpool's Xylo specifications saved as
``.xylo.json`` (:mod:`.xylo_json`). Stage modules are imported on first use so that loading
the plugin stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hwmap import (Artifacts, FidelityClaim, Graph, KPIs, Legalized, Mapping, ParseOptions, Register, Simulation,
                   Target, TargetError, hookimpl, presets_in)

from .hardware import DigitalSNNConfig

__all__ = ["KIND", "FIDELITY", "ENCODINGS", "hwmap_register_targets", "hwmap_parse", "hwmap_legalize", "hwmap_map",
           "hwmap_emit", "hwmap_simulate", "hwmap_estimate", "presets", "build_mapping"]

KIND = "digital_snn"
DESCRIPTION = ("single-population digital SNN device (Xylo-like): one recurrent hidden population, sparse "
               "fan-in, integer LIF neurons, bitstream (chapter Section 3.4.6)")
#: Measured on zoo:digits (calibrated on its first 90 samples, scored on the other 270):
#: zoo:digits_snn on digital_snn:default agrees with the float network on 0.974 of the
#: samples (tests/digital_snn/test_digits.py), so 0.95 holds with margin. Not bit-exact
#: against the core's quantized reference: the device filters every input through a
#: synaptic state and subtracts its threshold, which the float graph's ops do not.
FIDELITY = FidelityClaim(top1_agreement=0.95)
#: The encodings of Encoder nodes the device takes: spikes (rate, Poisson) one event each,
#: and a direct (graded) input as several events per channel and step (the device takes up
#: to ``input_events_per_step``: Xylo's input channels take up to 15 events per step).
ENCODINGS = ("direct", "rate", "poisson")
#: The bitstream and the format named in artifacts.json.
BITSTREAM = "program.bin"
FORMAT = "hwmap-digital-snn-bitstream"


def presets() -> dict[str, Path]:
    """The packaged ``presets/*.toml`` by stem (``default``, ``xylo-audio2``, ``xylo-imu``)."""
    return presets_in("hwmap_digital_snn")


@hookimpl
def hwmap_register_targets(register: Register) -> None:
    register(kind=KIND, config=DigitalSNNConfig, description=DESCRIPTION, presets=presets(), fidelity=FIDELITY,
             encodings=ENCODINGS)


@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Rockpool Xylo specifications saved as ``*.xylo.json``; ``None`` for anything else."""
    if not str(source).lower().endswith(".xylo.json"):
        return None
    from .xylo_json import read_xylo_json

    return read_xylo_json(Path(source), options.name)


@hookimpl
def hwmap_legalize(graph: Graph, target: Target) -> Legalized:
    from .legalize import legalize

    return legalize(graph, target)


def build_mapping(graph: Graph, target: Target) -> Mapping:
    """The legalized ``graph`` extracted again and folded onto the device."""
    from .mapper import map_network
    from .network import extract

    cfg = target.config_as(DigitalSNNConfig)
    net, diags = extract(graph)
    if net is None:
        raise TargetError("the legalized graph does not extract: " + "; ".join(str(d) for d in diags),
                          where=graph.name)
    return map_network(graph, net, cfg.hardware, per_neuron=cfg.mapping.quantization == "per_neuron",
                       calibration=target.calibration, flush_steps=cfg.mapping.flush_steps)


@hookimpl
def hwmap_map(graph: Graph, target: Target) -> Mapping:
    return build_mapping(graph, target)


@hookimpl
def hwmap_emit(mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
    from .program import VERSION, write_program

    m = _device(mapping)
    (outdir / BITSTREAM).write_bytes(write_program(m.program))
    return Artifacts(outdir, [BITSTREAM], {"format": FORMAT, "version": VERSION, "inputs": list(m.graph.inputs),
                                           "outputs": list(m.graph.outputs)})


@hookimpl
def hwmap_simulate(artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
    from . import simulator

    return simulator.simulate(artifacts, target, inputs)


@hookimpl
def hwmap_estimate(mapping: Mapping, target: Target, activity: dict[str, Any] | None) -> KPIs:
    from .estimate import estimate

    return estimate(_device(mapping), target, activity)


def _device(mapping: Mapping) -> Any:
    from .mapper import DeviceMapping

    if not isinstance(mapping, DeviceMapping):
        raise TargetError(f"expected a digital_snn mapping, got {type(mapping).__name__}")
    return mapping
