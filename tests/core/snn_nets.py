"""Small spiking networks for the tests of tests/core/test_snn_*.py: a graph built from a list
of nodes (shapes from the ops' own inference) and a feed-forward stack of Gemm + neuron
layers with random weights."""

from __future__ import annotations

from typing import Any

import numpy as np

from hwmap.graph import Graph, Node, Tensor
from hwmap.ops import get_op


def graph_from(nodes: list[Node], inputs: dict[str, tuple[int, ...]], outputs: list[str], name: str = "g",
               meta: dict[str, Any] | None = None) -> Graph:
    """A validated graph whose tensor shapes come from the ops' own inference."""
    tensors = {k: Tensor(k, s) for k, s in inputs.items()}
    for n in nodes:
        shapes = get_op(n.op).infer(n, [tensors[t].shape for t in n.inputs])
        for t, s in zip(n.outputs, shapes):
            tensors[t] = Tensor(t, s)
    return Graph(name, list(inputs), outputs, nodes, tensors, meta or {}).validate()


def random_weights(rng: np.random.Generator, sizes: list[int], scale: float) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(W, b)`` per layer, ``W`` shaped out×in (torch Linear), float32, He-like spread."""
    out = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        w = rng.normal(0, scale / np.sqrt(fan_in), size=(fan_out, fan_in)).astype(np.float32)
        b = rng.normal(0, scale * 0.1, size=fan_out).astype(np.float32)
        out.append((w, b))
    return out


def layer_stack(weights: list[tuple[np.ndarray, np.ndarray]], neurons: list[tuple[str, dict[str, Any],
                dict[str, Any]]], dt: float) -> Graph:
    """``x → Gemm → neuron → Gemm → neuron ...``: ``neurons[i]`` is ``(op, params, attrs)`` of
    layer ``i``; every layer's spikes are graph outputs (``s0``, ``s1``, ...)."""
    nodes: list[Node] = []
    prev = "x"
    for i, ((w, b), (op, params, attrs)) in enumerate(zip(weights, neurons)):
        nodes.append(Node(f"fc{i}", "Gemm", [prev], [f"c{i}"], {"transB": 1}, {"B": w, "C": b}))
        nodes.append(Node(f"n{i}", op, [f"c{i}"], [f"s{i}"], {"dt": dt, **attrs},
                          {k: np.asarray(v, np.float32) for k, v in params.items()}))
        prev = f"s{i}"
    return graph_from(nodes, {"x": (1, weights[0][0].shape[1])}, [f"s{i}" for i in range(len(weights))],
                      meta={"dt": dt})


def currents(spikes: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """What hwmap's Gemm gives a layer each step: the float64 product, rounded once to float32."""
    return (spikes.astype(np.float64) @ w.astype(np.float64).T + b.astype(np.float64)).astype(np.float32)
