"""The ONNX frontend: an ``.onnx`` file (opset 13+) into a neutral :class:`~hwmap.graph.Graph`.

Registered as a built-in ``hwmap_parse`` plugin. The conversion, in order:

1. read and check: the protobuf is parsed, external data is accepted only inside the model's
   own folder, ``onnx.checker`` runs, models older than opset 13 go through the ONNX version
   converter;
2. shapes: a symbolic batch dimension of a graph input is fixed to ``ParseOptions.batch``,
   ONNX shape inference (with data propagation) runs, and hwmap's own op shape inference
   fills what ONNX leaves open;
3. nodes, in the model's (topological) order, in one pass with producer/consumer maps built
   once so the cost is linear in the number of nodes: constant operands go into ``params``
   under their ONNX schema slot name, ONNX attribute defaults are written out, ``auto_pad``
   becomes explicit ``pads``, Identity and inference Dropout disappear, and quantization
   (ONNX ``QuantizeLinear``/``DequantizeLinear``, QONNX ``Quant``/``IntQuant``) becomes
   :class:`~hwmap.graph.QuantAnnotation` s on tensors and parameters;
4. every op is checked against hwmap's op registry; all offenders are reported at once, or,
   with ``ParseOptions.allow_unknown``, kept as unknown nodes with the output shapes ONNX
   shape inference gives them (listed in ``graph.meta["unknown_nodes"]``, see
   :mod:`hwmap.parsing`).

Every failure on bad input is a :class:`~hwmap.errors.ModelError` (or its subclass
:class:`~hwmap.errors.UnsupportedOpError`) whose one-line message names the file and the
tensor or node; no onnx or protobuf exception escapes.

This module is the entry point and imports nothing of onnx until a model is parsed; the work
is done by private modules next to it: ``_onnx_convert`` (the steps in order),
``_onnx_read`` (steps 1 and 2, and decoding tensors and attributes), ``_onnx_builder`` (the
graph under construction), ``_onnx_nodes`` (step 3, the node pass, and 4) and ``_onnx_quant``
(QDQ and QONNX quantization, called from the node pass).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..hookspecs import hookimpl
from ..parsing import ParseOptions

if TYPE_CHECKING:
    import onnx

    from ..graph import Graph

__all__ = ["hwmap_parse", "graph_from_onnx"]  # MIN_OPSET, QONNX_DOMAINS: from _onnx_convert on use


@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> "Graph | None":
    """Parse ``source`` if it is a path ending in ``.onnx``; ``None`` otherwise."""
    if not isinstance(source, str) or not source.lower().endswith(".onnx"):
        return None
    from ._onnx_convert import parse_file

    return parse_file(source, options)


def graph_from_onnx(model: "onnx.ModelProto | bytes", *, name: str, options: ParseOptions,
                    base_dir: Any = None, where: str | None = None) -> "Graph":
    """Convert an ONNX model (a ``ModelProto`` or its serialized bytes) into a validated Graph.

    ``name`` names the graph unless ``options.name`` is set; ``base_dir`` is the folder
    external data files must live in (a model with external data and no ``base_dir`` is
    refused); ``where`` is what error messages name (default: the model's name). The
    caller's ``ModelProto`` is not modified.
    """
    from ._onnx_convert import graph_from_onnx as convert

    return convert(model, name=name, options=options, base_dir=base_dir, where=where)


def __getattr__(name: str) -> Any:
    if name in ("MIN_OPSET", "QONNX_DOMAINS"):
        from . import _onnx_convert

        return getattr(_onnx_convert, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
