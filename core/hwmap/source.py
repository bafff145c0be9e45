"""Model sources: from a path, a ``zoo:NAME`` or a Python factory to a Graph.

``load_model`` resolves zoo names, then asks every ``hwmap_parse`` implementation in turn
(the core's ONNX, PyTorch and NIR frontends first, then any plugin's) until one takes it.
A Python factory is ``package.module:factory`` (an importable module; a bare
``mynet:make`` also finds ``mynet.py`` in the working directory, searched after the
installed packages) or ``path/to/file.py:factory``.

Unknown ops
-----------
By default a model using an op hwmap does not know is refused
(:class:`~hwmap.errors.UnsupportedOpError`). With ``ParseOptions(allow_unknown=True)``
(what ``hwmap profile`` uses) the ONNX frontend keeps such nodes as *unknown nodes*: the
node keeps its op name, attributes and constant operands, and its outputs the shapes ONNX
shape inference gives them. Nodes whose inputs then have no known shape are unknown too.
They are listed in ``graph.meta["unknown_nodes"]`` (see :func:`unknown_nodes`); such a graph
is for profiling only: :meth:`Graph.validate` and the reference executor refuse it, naming
the first unknown op, and :func:`require_known` refuses it naming every one.

:class:`ParseOptions` and the unknown-node helpers live in :mod:`hwmap.parsing` (what the
frontends import; they are re-exported here): this module resolves a model reference and
sits above the frontends.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from .errors import ModelError
from .graph import Graph
from .parsing import (MAX_DIM, UNKNOWN_NODES_KEY, ParseOptions, UnknownNode, check_input_shape, require_known,
                      unknown_nodes, validate_known)

__all__ = ["ParseOptions", "UnknownNode", "load_model", "unknown_nodes", "require_known", "validate_known",
           "check_input_shape", "UNKNOWN_NODES_KEY", "MAX_DIM"]


def load_model(source: str, options: ParseOptions | None = None) -> Graph:
    """Parse ``source`` into a validated Graph, or raise :class:`ModelError` naming it.

    With ``options.allow_unknown`` the graph may hold unknown nodes (module docstring);
    otherwise an op hwmap does not know raises :class:`UnsupportedOpError`.
    """
    from .frontends.torch import FILE_SPEC_PATTERN
    from .registry import get_registry

    options = options or ParseOptions()
    if options.input_shape is not None:
        options = dataclasses.replace(options, input_shape=check_input_shape(options.input_shape, source))
    if source.startswith("zoo:"):
        from . import zoo

        graph = zoo.load_graph(source[4:], options)  # validated by the ONNX frontend
    else:
        is_file_spec = FILE_SPEC_PATTERN.match(source) is not None and not Path(source).exists()
        looks_like_path = "/" in source or "\\" in source or Path(source).suffix != "" and ":" not in source
        if looks_like_path and not is_file_spec and not Path(source).exists():
            raise ModelError("no such file", where=source)
        parsed = get_registry().parse(source, options)
        if parsed is None:
            raise _not_parsed(source)
        graph = validate_known(parsed)
    if not options.allow_unknown:
        require_known(graph, "a model parsed without allow_unknown")
    return graph


def _not_parsed(source: str) -> ModelError:
    """The error for a source no frontend took."""
    path = Path(source)
    if path.suffix == ".py":
        return ModelError("a Python file needs the name of its factory: FILE.py:FUNCTION, e.g. "
                          f"{source}:make (a function returning a torch.nn.Module)", where=source)
    if path.exists():
        return ModelError(f"no frontend reads files of type {path.suffix or '(no extension)'!r} "
                          "(known: .onnx, .nir, a saved graph's folder, FILE.py:factory, package.module:factory)", where=source)
    return ModelError("not a file, a zoo:NAME, a FILE.py:factory or a package.module:factory spec", where=source)
