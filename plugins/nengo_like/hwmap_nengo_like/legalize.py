"""legalize: an ANN handed to the target is converted by the core's conversion pass
(:func:`hwmap.convert_to_snn` with the ``[conversion]`` table and the calibration samples),
then described as a NEF network (:mod:`.ann`) and placed on the cores (:mod:`.mapper`): what
cannot be converted, described or placed comes back as named diagnostics, all at once."""

from __future__ import annotations

from hwmap import Diagnostic, Graph, HwmapError, Legalized, Target, convert_to_snn

from .ann import describe
from .hardware import NengoLikeConfig
from .mapper import place

__all__ = ["legalize"]


def legalize(graph: Graph, target: Target) -> Legalized:
    cfg = target.config_as(NengoLikeConfig)
    if not any(n.op == "Relu" for n in graph.nodes):
        return Legalized(graph, [Diagnostic("unsupported", "the target takes ReLU networks (ANNs) and converts them; "
                                            "this graph has no Relu to become neurons")])
    try:
        conv = convert_to_snn(graph, target.calibration, cfg.conversion)
    except HwmapError as e:
        return Legalized(graph, [Diagnostic("conversion", str(e))])
    d, diags = describe(conv.graph, cfg.neurons.type, cfg.neurons.rate_scale, cfg.neurons.output_synapse_tau_s)
    notes = list(conv.notes)
    if d is not None:
        diags += place(d, cfg.substrate)[0]
    return Legalized(conv.graph, diags, notes)
