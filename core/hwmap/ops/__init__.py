"""The ops the neutral graph knows: their schema slots, shape inference, reference semantics.

Each op is an :class:`OpDef` registered by name (ONNX names where ONNX has the op, NIR names
for neuromorphic ones). A graph using a name not registered here is rejected with
:class:`~hwmap.errors.UnsupportedOpError`. The families live in their own modules and
register themselves on import.

The sliding-window geometry convolution and pooling share (:class:`Window`, :func:`window`,
:func:`sliding`) is public here too: a target computing windows the way the reference does
imports it from ``hwmap.ops``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UnsupportedOpError
from ._window import Window, sliding, window

__all__ = ["OpDef", "register_op", "get_op", "known_ops", "Shape", "Window", "window", "sliding"]

Shape = tuple[int, ...]
InferFn = Callable[[Any, Sequence[Shape]], "list[Shape] | None"]
EvalFn = Callable[[Any, Sequence[np.ndarray]], "list[np.ndarray]"]
StepFn = Callable[[Any, Sequence[np.ndarray], Any], "tuple[list[np.ndarray], Any]"]
MacsFn = Callable[[Any, Sequence[Shape], Sequence[Shape]], int]


@dataclass(frozen=True)
class OpDef:
    """What hwmap knows about one op.

    ``slots``: the op's input slot names in schema order (the key of a constant operand in
    ``Node.params``); ``variadic`` when the op takes any number of inputs (Concat, Sum).
    ``infer(node, input_shapes)`` returns the output shapes. ``evaluate(node, inputs)``
    computes outputs with numpy (the reference semantics; ONNX's for ONNX ops).
    ``step(node, inputs, state)`` is used instead for stateful ops over discrete time (NIR
    neurons): it returns ``(outputs, new_state)``; ``state`` is ``None`` at t=0.
    ``macs(node, input_shapes, output_shapes)`` counts multiply-accumulates (0 if none).
    ``category``: ``"compute"`` (weights), ``"elementwise"``, ``"pool"``, ``"shape"``
    (data movement only), ``"neuron"``, ``"quant"``, ``"time"`` (Encoder, Readout: where
    a graph's time steps begin and end, :mod:`hwmap.ops.time`).
    """

    name: str
    slots: tuple[str, ...]
    infer: InferFn
    evaluate: EvalFn | None = None
    step: StepFn | None = None
    macs: MacsFn | None = None
    category: str = "elementwise"
    variadic: bool = False
    doc: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, OpDef] = {}


def register_op(opdef: OpDef) -> OpDef:
    if opdef.name in _REGISTRY:
        raise ValueError(f"op {opdef.name!r} registered twice")
    _REGISTRY[opdef.name] = opdef
    return opdef


def get_op(name: str, *, where: str | None = None) -> OpDef:
    _load_families()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedOpError(f"op {name!r} is not known to hwmap (known: {', '.join(sorted(_REGISTRY))})",
                                 where=where) from None


def known_ops() -> list[str]:
    _load_families()
    return sorted(_REGISTRY)


_loaded = False


def _load_families() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
