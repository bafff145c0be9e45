"""The ONNX frontend's conversion: bytes or a ``ModelProto`` into a validated Graph (the
steps are listed in :mod:`hwmap.frontends.onnx`). Imported only when an ONNX model is
parsed: ``import onnx`` alone takes about a second."""


from __future__ import annotations

import warnings
from pathlib import Path

import onnx

from ..errors import GraphError, HwmapError, ModelError
from ..graph import Graph
from ..parsing import UNKNOWN_NODES_KEY, ParseOptions, validate_known
from ._onnx_nodes import Converter
from ._onnx_quant import QONNX_DOMAINS
from ..safeio import read_file
from ._onnx_read import (MIN_OPSET, check_external_data, check_node_count, check_opset, collect_types,
                         default_opset, fix_input_shapes, has_external_data, infer_shapes, one_line, onnx_call,
                         read_model, upgrade_opset)

__all__ = ["parse_file", "graph_from_onnx", "MIN_OPSET", "QONNX_DOMAINS"]


# ---------------------------------------------------------------------------------------
# entry points
# ---------------------------------------------------------------------------------------
def parse_file(source: str, options: ParseOptions) -> Graph:
    """Read the ``.onnx`` file ``source`` and convert it."""
    path = Path(source)
    data = read_file(path, what="file", error=ModelError)
    return graph_from_onnx(data, name=path.stem, options=options, base_dir=path.parent, where=source)


def graph_from_onnx(
    model: onnx.ModelProto | bytes,
    *,
    name: str,
    options: ParseOptions,
    base_dir: Path | None = None,
    where: str | None = None,
) -> Graph:
    """Convert an ONNX model (a ``ModelProto`` or its serialized bytes) into a validated Graph.

    ``name`` names the graph unless ``options.name`` is set; ``base_dir`` is the folder
    external data files must live in (a model with external data and no ``base_dir`` is
    refused); ``where`` is what error messages name (default: the model's name). The
    caller's ``ModelProto`` is not modified.
    """
    where = where or f"ONNX model {name!r}"
    proto = read_model(model, where)
    check_node_count(proto, where)
    check_opset(proto, where)
    check_external_data(proto, base_dir, where)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if base_dir is not None and has_external_data(proto):
            onnx_call(lambda: onnx.load_external_data_for_model(proto, str(base_dir)),
                       "cannot load external data", where)
        # After loading: the checker would otherwise look for external files relative to
        # the working directory.
        onnx_call(lambda: onnx.checker.check_model(proto, full_check=False), "ONNX checker rejected the model", where)
        proto, original_opset = upgrade_opset(proto, where)
        fix_input_shapes(proto, options, where)
        inferred = infer_shapes(proto)
    shapes, dtypes = collect_types(inferred)
    try:
        converter = Converter(proto, shapes, dtypes, where, allow_unknown=options.allow_unknown)
        graph = converter.run(options.name or name)
    except HwmapError:
        raise
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError, MemoryError) as e:
        # A malformed model that got past the checker (inconsistent tensor data, ...).
        raise ModelError(f"cannot convert: {type(e).__name__}: {one_line(e)}", where=where) from None
    graph.meta = {
        "source_format": "onnx",
        "opset": default_opset(proto),
        "producer": f"{proto.producer_name} {proto.producer_version}".strip(),
    }
    if original_opset != graph.meta["opset"]:
        graph.meta["converted_from_opset"] = original_opset
    unknown = converter.unknown_nodes()
    if unknown:
        graph.meta[UNKNOWN_NODES_KEY] = unknown
    graph.check_shapes(error=ModelError, where=where).check_memory(error=ModelError, where=where)
    graph.check_params(error=ModelError, where=where)
    try:
        return validate_known(graph)
    except GraphError as e:
        raise ModelError(f"converted graph is inconsistent: {e}", where=where) from None
    except (ValueError, TypeError, IndexError, KeyError, ArithmeticError) as e:
        # an op's shape inference choking on a malformed (but ONNX-checked) model
        raise ModelError(f"converted graph is inconsistent: {type(e).__name__}: {one_line(e)}",
                         where=where) from None
