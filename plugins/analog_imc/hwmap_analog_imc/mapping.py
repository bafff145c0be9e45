"""The analog mapping: the legalized graph, its crossbar layers and where each block sits.

This is what ``hwmap_map`` returns and what the emitter turns into instructions. Nodes the
crossbars compute are :class:`~hwmap_analog_imc.layers.CrossbarLayer` s placed by the
mapper; every other node (pooling, reshapes, residual adds, standalone activations) runs on
the digital logic of the core that produced its input, listed in ``digital``.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from hwmap import Graph, Mapping

from .hardware import AnalogIMCConfig, Blueprint
from .layers import CrossbarLayer
from .mapper import MapResult

__all__ = ["AnalogMapping"]


class AnalogMapping(Mapping):
    """``graph``: legalized (fused, quantization-annotated); ``layers``: crossbar layers in
    graph order; ``result``: the mapper's placements and statistics; ``digital``: node name
    -> core index for nodes run by a core's digital logic; ``notes``: what legalization and
    mapping decided that a user should know (calibration source, strategy notes)."""

    def __init__(self, graph: Graph, config: AnalogIMCConfig, blueprint: Blueprint, layers: list[CrossbarLayer],
                 result: MapResult, digital: dict[str, int], notes: list[str] | None = None) -> None:
        super().__init__(graph)
        self.config = config
        self.blueprint = blueprint
        self.layers = layers
        self.result = result
        self.digital = dict(digital)
        self.notes = list(notes or [])

    def layer_of(self, node: str) -> CrossbarLayer:
        for layer in self.layers:
            if layer.node == node:
                return layer
        raise KeyError(node)

    def to_json(self) -> dict[str, Any]:
        return {
            "graph": self.graph.name,
            "layers": [asdict(layer) for layer in self.layers],
            "mapping": self.result.to_json(),
            "digital": dict(sorted(self.digital.items())),
            "notes": self.notes,
        }
