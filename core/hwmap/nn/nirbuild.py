"""Layer list + float32 arrays -> ``nir.NIRGraph`` -> neutral graph, without PyTorch.

The one place where a spiking network of :mod:`hwmap.nn` becomes NIR (Pedersen et al.,
"Neuromorphic intermediate representation", Nat. Commun. 15, 8122, 2024). The torch
exporter (:func:`hwmap.nn.to_nir`) describes a trained :class:`~hwmap.nn.SNN` as
:class:`LayerSpec` s and arrays and calls :func:`build_nir`; the zoo builds
``zoo:digits_snn`` from its shipped arrays the same way, so the two cannot drift apart.

Arrays are keyed ``<layer>.<slot>`` (float32):

=========  ==========================================================  ===================
kind       arrays                                                      NIR node(s)
=========  ==========================================================  ===================
linear     ``W`` (out, in), ``B`` (out,) if the layer has a bias       ``Affine`` / ``Linear``
conv2d     ``W`` (O, I/groups, kh, kw), ``B`` (O,) if biased           ``Conv2d``
flatten    none; attrs ``start_dim``, ``end_dim`` per sample            ``Flatten``
lif        ``tau`` (s), ``v_threshold``; ``W_rec`` (n, n) if recurrent  ``LIF`` (+ ``Linear``)
=========  ==========================================================  ===================

A LIF layer is NIR's LIF with ``r = 1``, ``v_leak = 0``, ``v_reset = 0``: reset to zero.
Reset by subtraction has no NIR form (NIR's LIF sets ``v_reset`` after a spike), so a layer
with ``reset="subtract"`` is **refused** by name (:class:`~hwmap.errors.ModelError`)
rather than exported as a different network.

A recurrent LIF layer ``L`` is NIR's recurrence pattern: a ``Linear`` node ``L_rec``
holding ``W_rec`` with the edges ``L -> L_rec -> L`` next to the feed-forward edge into
``L`` (NIR sums the edges arriving at a node). Its meaning in discrete time is the
previous step's spikes: ``I[t] = W x[t] + b + W_rec s[t-1]``. hwmap's NIR frontend refuses
cycles today, so :func:`graph_from_layers` of a recurrent network raises its
``ModelError`` ("recurrent NIR graphs are not supported"); the NIR graph itself is valid
for tools that read recurrence.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from ..errors import ModelError

if TYPE_CHECKING:
    from ..graph import Graph

__all__ = ["LayerSpec", "KINDS", "RESETS", "build_nir", "graph_from_layers", "output_shape"]

#: The layer kinds :func:`build_nir` knows.
KINDS = ("linear", "conv2d", "flatten", "lif")
#: LIF resets: ``zero`` (NIR's ``v_reset`` = 0; the core's ``reset="value"``) and
#: ``subtract`` (``v -= v_threshold``; no NIR form, refused on export).
RESETS = ("zero", "subtract")
_RESERVED = ("input", "output")

Shape = tuple[int, ...]


@dataclass(frozen=True)
class LayerSpec:
    """One layer: a ``name`` (its NIR node and the prefix of its arrays), a ``kind`` from
    :data:`KINDS` and the kind's attributes (see the module docstring)."""

    name: str
    kind: str
    attrs: Mapping[str, Any] = field(default_factory=dict)


def _fail(layer: LayerSpec, message: str) -> ModelError:
    return ModelError(f"layer {layer.name!r} ({layer.kind}): {message}", where="NIR export")


def _array(layer: LayerSpec, arrays: Mapping[str, np.ndarray], slot: str, optional: bool = False) -> np.ndarray | None:
    key = f"{layer.name}.{slot}"
    if key not in arrays:
        if optional:
            return None
        raise _fail(layer, f"array {key!r} is missing")
    return np.asarray(arrays[key], dtype=np.float32)


def _pair(value: Any) -> tuple[int, int]:
    v = tuple(int(d) for d in np.asarray(value).reshape(-1))
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


def _conv_out(layer: LayerSpec, x: Shape, w: np.ndarray) -> Shape:
    """Per-sample output of a 2-D convolution (torch.nn.Conv2d's size rule)."""
    a = layer.attrs
    groups = int(a.get("groups", 1))
    if len(x) != 3 or w.ndim != 4 or w.shape[1] * groups != x[0]:
        raise _fail(layer, f"weight {list(w.shape)} (groups {groups}) does not take input {list(x)} per sample")
    stride, dilation = _pair(a.get("stride", 1)), _pair(a.get("dilation", 1))
    padding = a.get("padding", 0)
    if isinstance(padding, str):
        if padding == "same":
            return (w.shape[0], x[1], x[2])
        if padding != "valid":
            raise _fail(layer, f"padding {padding!r} is not 'same', 'valid' or integers")
        padding = 0
    pad = _pair(padding)
    hw = tuple((x[1 + i] + 2 * pad[i] - dilation[i] * (w.shape[2 + i] - 1) - 1) // stride[i] + 1 for i in range(2))
    if min(hw) < 1:
        raise _fail(layer, f"input {list(x)} is too small for kernel {list(w.shape[2:])}")
    return (w.shape[0], *hw)


def _flatten_out(layer: LayerSpec, x: Shape) -> Shape:
    start, end = int(layer.attrs.get("start_dim", 0)), int(layer.attrs.get("end_dim", -1))
    r = len(x)
    s, e = start % r if -r <= start < r else None, end % r if -r <= end < r else None
    if s is None or e is None or s > e:
        raise _fail(layer, f"start_dim={start}, end_dim={end} (per sample) do not fit input {list(x)}")
    return tuple(x[:s]) + (math.prod(x[s:e + 1]),) + tuple(x[e + 1:])


def output_shape(layers: Sequence[LayerSpec], arrays: Mapping[str, np.ndarray], input_shape: Shape) -> Shape:
    """The per-sample output shape of ``layers`` on per-sample input ``input_shape``."""
    shape = tuple(int(d) for d in input_shape)
    for layer in layers:
        shape = _node(layer, arrays, shape)[1]
    return shape


def _lif_node(layer: LayerSpec, arrays: Mapping[str, np.ndarray], x: Shape) -> Any:
    import nir

    reset = layer.attrs.get("reset", "zero")
    if reset not in RESETS:
        raise _fail(layer, f"reset {reset!r} is not one of {', '.join(RESETS)}")
    if reset == "subtract":
        raise _fail(layer, "resets by subtraction (v -= v_threshold), which NIR cannot express: NIR's LIF sets "
                           "v_reset after a spike. Train with reset='zero' to export")
    full = {}
    for slot in ("tau", "v_threshold"):
        a = _array(layer, arrays, slot)
        assert a is not None
        try:
            full[slot] = np.ascontiguousarray(np.broadcast_to(a, x), dtype=np.float32)
        except ValueError:
            raise _fail(layer, f"{slot} of shape {list(a.shape)} does not broadcast to the neurons {list(x)}") from None
    if not np.all(full["tau"] > 0):
        raise _fail(layer, "tau must be positive")
    return nir.LIF(tau=full["tau"], r=np.ones(x, np.float32), v_leak=np.zeros(x, np.float32),
                   v_threshold=full["v_threshold"], v_reset=np.zeros(x, np.float32))


def _node(layer: LayerSpec, arrays: Mapping[str, np.ndarray], x: Shape) -> tuple[Any, Shape]:
    """The NIR node of ``layer`` on per-sample input ``x`` and its per-sample output shape."""
    import nir

    if layer.kind == "linear":
        w, b = _array(layer, arrays, "W"), _array(layer, arrays, "B", optional=True)
        assert w is not None
        if w.ndim != 2 or x != (w.shape[1],):
            raise _fail(layer, f"weight {list(w.shape)} does not take input {list(x)} per sample"
                        + (" (insert a flatten)" if len(x) != 1 else ""))
        node = nir.Linear(weight=w) if b is None else nir.Affine(weight=w, bias=b)
        return node, (w.shape[0],)
    if layer.kind == "conv2d":
        w, b = _array(layer, arrays, "W"), _array(layer, arrays, "B", optional=True)
        assert w is not None
        out = _conv_out(layer, x, w)
        a = layer.attrs
        padding = a.get("padding", 0)
        node = nir.Conv2d(input_shape=(x[1], x[2]), weight=w, stride=_pair(a.get("stride", 1)),
                          padding=padding if isinstance(padding, str) else _pair(padding),
                          dilation=_pair(a.get("dilation", 1)), groups=int(a.get("groups", 1)),
                          bias=np.zeros(w.shape[0], np.float32) if b is None else b)
        return node, out
    if layer.kind == "flatten":
        out = _flatten_out(layer, x)
        return nir.Flatten(input_type={"input": np.array(x)}, start_dim=int(layer.attrs.get("start_dim", 0)),
                           end_dim=int(layer.attrs.get("end_dim", -1))), out
    if layer.kind == "lif":
        return _lif_node(layer, arrays, x), x
    raise _fail(layer, f"kind {layer.kind!r} is not one of {', '.join(KINDS)}")


def build_nir(layers: Sequence[LayerSpec], arrays: Mapping[str, np.ndarray], input_shape: Shape) -> Any:
    """The ``nir.NIRGraph`` of ``layers`` in a chain ``input -> layers -> output``.

    ``input_shape`` is one sample's shape at one time step (no batch, no time axis).
    Raises :class:`~hwmap.errors.ModelError` naming the layer for anything NIR cannot
    say (reset by subtraction), a missing array or a shape that does not fit.
    """
    import nir

    names = [layer.name for layer in layers]
    taken = set(_RESERVED) | {f"{layer.name}_rec" for layer in layers if layer.attrs.get("recurrent", False)}
    for layer in layers:
        if not layer.name or layer.name in taken or names.count(layer.name) > 1:
            raise _fail(layer, f"names must be unique, non-empty and not one of {', '.join(sorted(taken))}")
    shape = tuple(int(d) for d in input_shape)
    nodes: dict[str, Any] = {"input": nir.Input(input_type={"input": np.array(shape)})}
    edges: list[tuple[str, str]] = []
    prev = "input"
    for layer in layers:
        nodes[layer.name], out = _node(layer, arrays, shape)
        edges.append((prev, layer.name))
        if layer.kind == "lif" and layer.attrs.get("recurrent", False):
            w = _array(layer, arrays, "W_rec")
            assert w is not None
            if len(shape) != 1 or w.shape != (shape[0], shape[0]):
                raise _fail(layer, f"recurrent weight {list(w.shape)} must be square over the {list(shape)} neurons")
            rec = f"{layer.name}_rec"
            nodes[rec] = nir.Linear(weight=w)
            edges += [(layer.name, rec), (rec, layer.name)]
        prev, shape = layer.name, out
    nodes["output"] = nir.Output(output_type={"output": np.array(shape)})
    edges.append((prev, "output"))
    return nir.NIRGraph(nodes=nodes, edges=edges)


def graph_from_layers(layers: Sequence[LayerSpec], arrays: Mapping[str, np.ndarray], input_shape: Shape, *,
                      dt: float, batch: int = 1, name: str = "snn") -> "Graph":
    """:func:`build_nir` read by hwmap's NIR frontend into a validated neutral graph.

    ``dt`` (seconds) is the time step of every neuron (the NIR frontend's ``--dt``); the
    graph's input is ``(batch, *input_shape)``, run over time as ``(N, T, *input_shape)``.
    """
    from ..frontends.nir import graph_from_nir
    from ..parsing import ParseOptions

    return graph_from_nir(build_nir(layers, arrays, input_shape), name=name,
                          options=ParseOptions(batch=batch, dt=dt, name=name), where=name)
