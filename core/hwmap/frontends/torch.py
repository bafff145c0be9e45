"""PyTorch frontend: ``package.module:factory`` returning an ``nn.Module``, plus an input shape.

The module is exported to ONNX in memory with TorchScript-based ``torch.onnx.export``
(``dynamo=False``, opset 17, constant folding on) and read by the ONNX frontend, so a torch
model and its ONNX export give the same graph. torch is imported only when a source of this
form is parsed: the core installs without it (``pip install hwmap[torch]``).
"""

from __future__ import annotations

import importlib
import io
import re
import warnings
from pathlib import Path
from typing import Any

from ..errors import HwmapError, ModelError
from ..graph import Graph
from ..hookspecs import hookimpl
from ..source import ParseOptions

__all__ = ["hwmap_parse", "graph_from_factory", "graph_from_module", "SPEC_PATTERN", "OPSET"]

# A dotted module path, a colon, a Python identifier: ``pkg.models:make_net``.
SPEC_PATTERN = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
OPSET = 17


@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Parse ``package.module:factory`` sources; ``None`` for anything else (paths included)."""
    if source.startswith("zoo:") or not SPEC_PATTERN.match(source) or Path(source).exists():
        return None
    return graph_from_factory(source, options)


def graph_from_factory(spec: str, options: ParseOptions) -> Graph:
    """Import ``module``, call ``factory()`` and parse the module it returns."""
    torch = _import_torch()
    modname, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(modname)
    except Exception as e:  # ImportError, or anything the module raises while importing
        raise ModelError(f"cannot import module {modname!r}: {_one_line(e)}", where=spec) from None
    factory = getattr(module, attr, None)
    if factory is None:
        raise ModelError(f"module {modname!r} has no attribute {attr!r}", where=spec)
    if not callable(factory):
        raise ModelError(f"{attr!r} in module {modname!r} is an object of type {type(factory).__name__}, "
                         "not a callable returning a torch.nn.Module", where=spec)
    try:
        model = factory()
    except Exception as e:
        raise ModelError(f"factory {attr!r} raised {_one_line(e)}", where=spec) from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory {attr!r} returned an object of type {type(model).__name__}, "
                         "not a torch.nn.Module", where=spec)
    return graph_from_module(model, name=spec, options=options)


def graph_from_module(model: Any, *, name: str, options: ParseOptions) -> Graph:
    """Export ``model`` (a ``torch.nn.Module``) at ``options.input_shape`` and parse it.

    The model is put in eval mode (batch norm statistics, no dropout), as inference on a
    target would run it. The graph input is named ``input``; outputs ``output`` (one) or
    ``output_0``, ``output_1``... (several).
    """
    torch = _import_torch()
    shape = _input_shape(options, name)
    model.eval()
    x = torch.zeros(shape)
    try:
        with torch.no_grad():
            y = model(x)
    except Exception as e:
        raise ModelError(f"forward pass on input shape {list(shape)} failed: {_one_line(e)}", where=name) from None
    n_out = len(y) if isinstance(y, (tuple, list)) else 1
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (tracer, constant folding) is not the user's
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=["input"], output_names=output_names)
    except Exception as e:
        raise ModelError(f"torch.onnx.export failed: {_one_line(e)}", where=name) from None
    from .onnx import graph_from_onnx

    return graph_from_onnx(buf.getvalue(), name=options.name or name, options=options)


def _input_shape(options: ParseOptions, where: str) -> tuple[int, ...]:
    shape = options.input_shape
    if shape is None:
        raise ModelError("a PyTorch model needs an input shape: pass --input-shape, e.g. --input-shape 1,3,32,32",
                         where=where)
    try:
        dims = tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise ModelError(f"--input-shape must be integers, got {shape!r}", where=where) from None
    if not dims or any(d <= 0 for d in dims):
        raise ModelError(f"--input-shape must be positive integers, got {list(dims)}", where=where)
    return dims


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError("the PyTorch frontend needs torch: install hwmap[torch]") from None
    return torch


def _one_line(e: BaseException) -> str:
    if isinstance(e, HwmapError):
        return str(e).replace("\n", " ")
    msg = " ".join(str(e).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__
