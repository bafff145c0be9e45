"""Binding a node's operands to its schema slots, shared by every op family.

The graph convention (see :mod:`hwmap.graph`): a constant operand sits in ``Node.params``
under its ONNX schema slot name; the dynamic inputs fill the remaining slots in schema order.
:func:`bind` applies that rule once, for values (``evaluate``) and for shapes (``infer``).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import GraphError

__all__ = ["bind", "where", "fail", "shape_of", "const_of", "as_f32", "float_like", "ints", "norm_axis",
           "require_dt", "int_attr"]


def where(node: Any) -> str:
    """How errors name a node: ``node 'conv1' (Conv)``."""
    return f"node {node.name!r} ({node.op})"


def fail(node: Any, message: str) -> GraphError:
    """A :class:`GraphError` naming ``node``; callers ``raise fail(node, ...)``."""
    return GraphError(message, where=where(node))


def bind(node: Any, dynamic: Sequence[Any], slots: Sequence[str], required: int = 1) -> dict[str, Any]:
    """Map each slot to its operand: the param of that name, else the next dynamic input.

    ``dynamic`` holds arrays (evaluate) or shapes (infer); params are always returned as
    their arrays, so a shape function can still read a constant's values (:func:`const_of`).
    The first ``required`` slots must be filled; missing optional slots map to ``None``.
    Extra dynamic inputs beyond the free slots are an error.
    """
    out: dict[str, Any] = {}
    it = iter(range(len(dynamic)))
    used = 0
    for slot in slots:
        if slot in node.params:
            out[slot] = node.params[slot]
        else:
            i = next(it, None)
            out[slot] = None if i is None else dynamic[i]
            used += i is not None
    if used < len(dynamic):
        raise fail(node, f"{len(dynamic)} dynamic inputs but only {used} free operand slots "
                         f"(slots {list(slots)}, params {sorted(node.params)})")
    for slot in slots[:required]:
        if out[slot] is None:
            raise fail(node, f"operand {slot!r} is missing: neither a param nor a dynamic input")
    return out


def shape_of(value: Any) -> tuple[int, ...]:
    """Shape of a bound operand: an array's shape, or the shape tuple itself."""
    if isinstance(value, np.ndarray):
        return tuple(int(d) for d in value.shape)
    return tuple(int(d) for d in value)


def const_of(value: Any) -> np.ndarray | None:
    """The array of a bound operand when it is a constant param (in ``infer``), else ``None``."""
    return value if isinstance(value, np.ndarray) else None


def float_like(a: np.ndarray) -> bool:
    return np.issubdtype(np.asarray(a).dtype, np.floating)


def as_f32(a: Any) -> np.ndarray:
    """Floating results are float32 (the graph's activation type); others keep their type."""
    a = np.asarray(a)
    if np.issubdtype(a.dtype, np.floating) and a.dtype != np.float32:
        return a.astype(np.float32)
    return a


def ints(value: Any) -> list[int]:
    """A constant operand or attribute as a list of Python ints."""
    return [int(v) for v in np.asarray(value).reshape(-1)]


def norm_axis(node: Any, axis: int, rank: int, *, extra: int = 0) -> int:
    """Resolve a possibly negative ``axis`` against ``rank`` (+``extra`` for Unsqueeze-like ops)."""
    r = rank + extra
    if not -r <= axis < r:
        raise fail(node, f"axis {axis} is out of range for rank {r}")
    return axis % r if r else 0


def require_dt(node: Any) -> float:
    """The time step of a discrete-time (NIR) node, in seconds."""
    dt = node.attrs.get("dt")
    if not isinstance(dt, (int, float)) or isinstance(dt, bool) or not dt > 0:
        raise fail(node, f"needs a positive time step attribute 'dt' in seconds, got {dt!r}")
    return float(dt)


def int_attr(node: Any, name: str, default: int | None, lo: int, hi: int) -> int:
    """Integer attribute ``name`` of ``node`` (``default`` when absent) within ``lo..hi``; a
    :class:`GraphError` naming the node when missing, not an integer, or out of range."""
    v = node.attrs.get(name, default)
    if v is None:
        raise fail(node, f"attribute {name!r} is missing")
    if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
        raise fail(node, f"attribute {name!r} = {v!r}: must be an integer from {lo} to {hi}")
    return v
