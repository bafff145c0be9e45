"""Saved hwmap graphs: a folder holding ``graph.json`` and ``params.npz`` as
:meth:`hwmap.graph.Graph.save` writes them (``hwmap convert -o DIR`` does), read back exactly.

The source is the folder, or its ``graph.json``. Everything in it is checked before use
(:meth:`hwmap.graph.Graph.load`: regular files only, sizes and nesting bounded, the schema,
every array's shape and dtype). A saved graph's shapes are fixed: ``--input-shape`` must
repeat them (the batch may differ, the executor runs any batch), and ``--dt`` cannot change
the ``dt`` its neurons carry.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import GraphError, ModelError
from ..graph import Graph
from ..hookspecs import hookimpl
from ..parsing import ParseOptions

__all__ = ["GRAPH_FILE", "is_saved_graph", "read_saved_graph"]

GRAPH_FILE = "graph.json"


def is_saved_graph(source: str) -> bool:
    """Whether ``source`` names a saved graph: a folder with ``graph.json``, or that file."""
    path = Path(source)
    return (path.is_dir() and (path / GRAPH_FILE).exists()) or (path.name == GRAPH_FILE and path.is_file())


def read_saved_graph(source: str, options: ParseOptions) -> Graph:
    """The saved graph at ``source``, named ``options.name`` if given; a :class:`ModelError`
    naming the file for anything wrong in it."""
    path = Path(source)
    folder = path if path.is_dir() else path.parent
    try:
        graph = Graph.load(folder)
    except GraphError as e:
        raise ModelError(str(e)) from None  # names the file already
    if options.input_shape is not None and graph.inputs:
        declared = graph.tensor(graph.inputs[0]).shape
        if tuple(options.input_shape[1:]) != tuple(declared[1:]):
            raise ModelError(f"--input-shape {list(options.input_shape)}: a saved graph's input "
                             f"{graph.inputs[0]!r} is {list(declared)} (only the batch may differ)", where=source)
    if options.dt is not None and graph.meta.get("dt") not in (None, options.dt):
        raise ModelError(f"--dt {options.dt}: the saved graph's neurons run at dt = {graph.meta['dt']} s",
                         where=source)
    if options.name:
        graph.name = options.name
    return graph


@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Read saved graphs; ``None`` for anything else."""
    return read_saved_graph(source, options) if is_saved_graph(source) else None
