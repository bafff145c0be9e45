"""A throw-away spiking target for the tests: its config carries the ``[conversion]`` table
(:class:`hwmap.ConversionConfig`), its legalize converts the ANN it is given with
``target.calibration``, its artifacts are the saved converted graph and its simulator runs
them with hwmap's executor. Only what a spiking plugin would do with the public API."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from hwmap import (Artifacts, ConfigSection, ConversionConfig, Graph, KPIs, Legalized, Mapping, Register, Simulation,
                   Target, TargetConfig, constant, convert_to_snn, hookimpl)

KIND = "spiking_toy"


class Hardware(ConfigSection):
    step_s: float = constant(1e-3, "s", "assumed: one millisecond per time step", gt=0)


class SpikingToyConfig(TargetConfig):
    hardware: Hardware = Hardware()
    conversion: ConversionConfig = ConversionConfig()


class _Plugin:
    @hookimpl
    def hwmap_register_targets(self, register: Register) -> None:
        register(kind=KIND, config=SpikingToyConfig, description="throw-away spiking target converting ANNs",
                 presets={"default": Path(__file__).parent / "spiking_toy_presets" / "default.toml"})

    @hookimpl
    def hwmap_legalize(self, graph: Graph, target: Target) -> Legalized:
        from hwmap.execute import is_encoded

        if is_encoded(graph):  # converted already (hwmap convert -o): taken as it is
            return Legalized(graph, [])
        cfg = target.config_as(SpikingToyConfig)
        conv = convert_to_snn(graph, target.calibration, cfg.conversion)
        return Legalized(conv.graph, [], notes=conv.notes)

    @hookimpl
    def hwmap_map(self, graph: Graph, target: Target) -> Mapping:
        return Mapping(graph)

    @hookimpl
    def hwmap_emit(self, mapping: Mapping, target: Target, outdir: Path) -> Artifacts:
        mapping.graph.save(outdir)
        return Artifacts(outdir, ["graph.json", "params.npz"])

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Target, inputs: dict[str, np.ndarray]) -> Simulation:
        from hwmap.execute import run_batched

        graph = Graph.load(artifacts.directory)
        x = next(iter(inputs.values()))
        return Simulation(run_batched(graph, x), {"samples": len(x)})

    @hookimpl
    def hwmap_estimate(self, mapping: Mapping, target: Target, activity: Any) -> KPIs:
        cfg = target.config_as(SpikingToyConfig)
        latency = cfg.conversion.timesteps * cfg.hardware.step_s
        return KPIs(latency_s=latency, throughput_inf_per_s=1 / latency, energy_per_inference_j=0.0, power_w=0.0,
                    weight_memory_bytes=0, activation_memory_bytes=0, ops_per_inference=0, ops_kind="SynOp",
                    utilization=0.0, assumptions=dict(target.constants()))


plugin: Any = _Plugin()
__all__ = ["KIND", "plugin", "SpikingToyConfig", "BaseModel"]
