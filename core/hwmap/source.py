"""Model sources: from a path, a ``zoo:NAME`` or a ``package.module:factory`` to a Graph.

``load_model`` resolves zoo names, then asks every ``hwmap_parse`` implementation in turn
(the core's ONNX, PyTorch and NIR frontends first, then any plugin's) until one takes it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ModelError
from .graph import Graph

__all__ = ["ParseOptions", "load_model"]


@dataclass
class ParseOptions:
    """Options for frontends. ``input_shape`` is needed by the PyTorch frontend (batch
    first, e.g. ``(1, 3, 224, 224)``); ``batch`` fixes a symbolic batch dimension; ``dt``
    is the time step for NIR graphs (seconds). ``extra`` holds frontend-specific options."""

    input_shape: tuple[int, ...] | None = None
    batch: int = 1
    dt: float | None = None
    name: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def load_model(source: str, options: ParseOptions | None = None) -> Graph:
    """Parse ``source`` into a validated Graph, or raise :class:`ModelError` naming it."""
    from .registry import get_registry

    options = options or ParseOptions()
    if source.startswith("zoo:"):
        from . import zoo

        return zoo.load_graph(source[4:], options)
    looks_like_path = "/" in source or "\\" in source or Path(source).suffix != "" and ":" not in source
    if looks_like_path and not Path(source).exists():
        raise ModelError("no such file", where=source)
    graph = get_registry().parse(source, options)
    if graph is None:
        if Path(source).exists():
            raise ModelError(f"no frontend reads files of type {Path(source).suffix or '(no extension)'!r} "
                             "(known: .onnx, .nir, package.module:factory)", where=source)
        raise ModelError("not a file, a zoo:NAME, or a package.module:factory spec", where=source)
    return graph.validate()
