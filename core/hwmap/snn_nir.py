"""A converted spiking graph (:func:`hwmap.passes.snn_convert.convert_to_snn`) as NIR, and what
NIR cannot say of it.

NIR (Pedersen et al., "Neuromorphic intermediate representation", Nat. Commun. 15, 8122,
2024) describes continuous-time primitives joined by edges, several edges into a node being
summed. A converted graph maps onto it as follows:

==================  ============================================================================
hwmap               NIR
==================  ============================================================================
Conv (2-D)          ``Conv2d`` (weight, bias, stride, padding, dilation, groups)
Gemm                ``Affine`` (``alpha`` and ``beta`` folded into weight and bias)
MatMul (2-D ``B``)  ``Linear`` (weight ``Bᵀ``)
Mul by a constant   ``Scale`` (the constant broadcast to one sample)
Add, Sum            edges: NIR sums what arrives at a node
IF                  ``IF`` with ``r``, ``v_threshold`` and ``v_reset = 0``
Flatten, Reshape    ``Flatten`` (a reshape that flattens the sample; others are refused)
AveragePool         ``AvgPool2d`` (without padding, or counting the padding as torch does)
GlobalAveragePool   ``AvgPool2d`` over the whole feature map
Identity, Dropout   an edge
==================  ============================================================================

What NIR cannot say is **lost** on export and listed by :func:`to_nir` (the CLI prints it on
one line); each IF node's ``metadata`` and the graph's ``metadata`` record it under
``hwmap_*`` keys, which NIR readers ignore:

* **reset by subtraction**: NIR's ``IF`` sets ``v_reset`` after a spike, so an NIR
  simulator resets to 0 where hwmap subtracts the threshold (Rueckauer et al., Front.
  Neurosci. 11:682, 2017, eq. 2b);
* **the initial membrane potential** ``v_init``: NIR states start at 0;
* **the encoder** (its encoding, time steps and seed; for the rate and Poisson encoders the
  input scale before it): the NIR graph takes one input frame per time step, which the
  user must make;
* **the readout**: the NIR output is the last layer's per-step current (or spikes); the
  mean (or the count) over the steps is the user's to take;
* **the time step**: NIR carries none; the converted neurons integrate once per step of
  ``dt`` seconds with ``r = 1/dt`` (read the file back with ``--dt`` at that value).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import ModelError
from .graph import Graph, Node

__all__ = ["to_nir", "write_nir"]


def _f32(a: Any) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32))


class _Exporter:
    def __init__(self, graph: Graph) -> None:
        import nir

        self.nir = nir
        self.g = graph
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.srcs: dict[str, list[str]] = {}  # tensor -> the NIR nodes whose sum it is
        self.lost: list[str] = []
        self.meta: dict[str, Any] = {}

    def fail(self, n: Node, message: str) -> ModelError:
        return ModelError(f"node {n.name!r} ({n.op}): {message}", where="NIR export")

    def sample(self, t: str) -> tuple[int, ...]:
        return tuple(self.g.tensors[t].shape[1:])

    def add(self, n: Node, node: Any) -> None:
        if n.name in ("input", "output") or n.name in self.nodes:
            raise self.fail(n, "its name is taken in the NIR graph")
        self.nodes[n.name] = node
        for s in self.srcs.get(n.inputs[0], []):
            self.edges.append((s, n.name))
        self.srcs[n.outputs[0]] = [n.name]

    def run(self) -> tuple[Any, list[str]]:
        nir = self.nir
        g = self.g
        if len(g.inputs) != 1:
            raise ModelError(f"graph {g.name!r} has {len(g.inputs)} inputs; NIR export takes one", where="NIR export")
        inp = g.inputs[0]
        self.nodes["input"] = nir.Input(input_type={"input": np.array(self.sample(inp))})
        self.srcs[inp] = ["input"]
        for n in g.nodes:
            self.node(n)
        outs = [self.srcs.get(o) for o in g.outputs]
        if len(g.outputs) != 1 or not outs[0]:
            raise ModelError(f"graph {g.name!r} must have one output computed from its input", where="NIR export")
        self.nodes["output"] = nir.Output(output_type={"output": np.array(self.sample(g.outputs[0]))})
        self.edges += [(s, "output") for s in outs[0] or []]
        self.edges = list(dict.fromkeys(self.edges))
        graph = nir.NIRGraph(nodes=self.nodes, edges=self.edges, metadata=self.meta)
        return graph, self.lost

    def node(self, n: Node) -> None:  # noqa: C901 - one branch per op, as the table says
        nir = self.nir
        op = n.op
        if op == "Encoder":
            attrs = {k: n.attrs[k] for k in ("encoding", "timesteps", "seed") if k in n.attrs}
            self.meta["hwmap_encoder"] = attrs
            how = ", ".join(f"{k} {v}" for k, v in attrs.items())
            self.lost.append(f"the encoder ({how}): the NIR graph takes one input frame per time step")
            self.srcs[n.outputs[0]] = self.srcs[n.inputs[0]]
        elif op == "Readout":
            mode = n.attrs.get("mode", "membrane")
            self.meta["hwmap_readout"] = {"mode": mode}
            what = "mean over the steps" if mode == "membrane" else "spike count over the steps"
            self.lost.append(f"the readout ({mode}: the {what}): the NIR output is per step")
            self.srcs[n.outputs[0]] = self.srcs[n.inputs[0]]
        elif op in ("Identity", "Dropout"):
            self.srcs[n.outputs[0]] = self.srcs[n.inputs[0]]
        elif op in ("Add", "Sum"):
            if n.params:
                raise self.fail(n, "an addition of a constant has no NIR node")
            self.srcs[n.outputs[0]] = [s for t in n.inputs for s in self.srcs[t]]
        elif op == "Mul" and n.inputs and n.inputs[0] == self.g.inputs[0] and self._feeds_encoder(n):
            self.meta["hwmap_input_scale"] = float(np.asarray(n.params["B"]).reshape(-1)[0])
            self.lost.append("the input scale before the encoder (multiply the data by "
                             f"{self.meta['hwmap_input_scale']:.6g} before encoding it)")
            self.srcs[n.outputs[0]] = self.srcs[n.inputs[0]]
        elif op == "Mul":
            k = "B" if "B" in n.params else "A"
            if len(n.inputs) != 1 or k not in n.params:
                raise self.fail(n, "a product of two tensors has no NIR node")
            self.add(n, nir.Scale(scale=_f32(np.broadcast_to(n.params[k], self.sample(n.outputs[0])))))
        elif op == "Conv":
            self.add(n, self._conv(n))
        elif op == "Gemm":
            if len(n.inputs) != 1 or "B" not in n.params or int(n.attrs.get("transA", 0)):
                raise self.fail(n, "only x·W with constant weights has an NIR node")
            w = n.params["B"].astype(np.float64) * float(n.attrs.get("alpha", 1.0))
            w = w if int(n.attrs.get("transB", 0)) else w.T
            b = n.params.get("C", np.zeros(w.shape[0])).astype(np.float64) * float(n.attrs.get("beta", 1.0))
            self.add(n, nir.Affine(weight=_f32(w), bias=_f32(np.broadcast_to(b, (w.shape[0],)))))
        elif op == "MatMul":
            if len(n.inputs) != 1 or "B" not in n.params or n.params["B"].ndim != 2:
                raise self.fail(n, "only x·W with a constant 2-D W has an NIR node")
            self.add(n, nir.Linear(weight=_f32(n.params["B"].T)))
        elif op == "IF":
            self.add(n, self._if(n))
        elif op in ("Flatten", "Reshape"):
            x, y = self.sample(n.inputs[0]), self.sample(n.outputs[0])
            if len(y) != 1:
                raise self.fail(n, f"a reshape from {list(x)} to {list(y)} per sample is not a flatten")
            self.add(n, nir.Flatten(input_type={"input": np.array(x)}, start_dim=0, end_dim=-1))
        elif op == "GlobalAveragePool":
            x = self.sample(n.inputs[0])
            if len(x) != 3:
                raise self.fail(n, "only 2-D pooling has an NIR node")
            self.add(n, nir.AvgPool2d(kernel_size=np.array(x[1:]), stride=np.array(x[1:]), padding=np.array([0, 0])))
        elif op == "AveragePool":
            self.add(n, self._avgpool(n))
        else:
            raise self.fail(n, "has no NIR node")

    def _feeds_encoder(self, n: Node) -> bool:
        return any(m.op == "Encoder" and n.outputs[0] in m.inputs for m in self.g.nodes)

    def _conv(self, n: Node) -> Any:
        w = n.params.get("W")
        if w is None or w.ndim != 4 or len(n.inputs) != 1:
            raise self.fail(n, "only 2-D convolutions with constant weights have an NIR node")
        pads = [int(p) for p in n.attrs.get("pads", [0, 0, 0, 0])]
        if pads[:2] != pads[2:] or n.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
            raise self.fail(n, "asymmetric padding has no NIR form")
        x = self.sample(n.inputs[0])
        return self.nir.Conv2d(input_shape=(x[1], x[2]), weight=_f32(w),
                               stride=tuple(int(s) for s in n.attrs.get("strides", [1, 1])),
                               padding=tuple(pads[:2]), dilation=tuple(int(d) for d in n.attrs.get("dilations", [1, 1])),
                               groups=int(n.attrs.get("group", 1)),
                               bias=_f32(n.params.get("B", np.zeros(w.shape[0]))))

    def _avgpool(self, n: Node) -> Any:
        kernel = [int(k) for k in n.attrs.get("kernel_shape", [])]
        if len(kernel) != 2 or int(n.attrs.get("ceil_mode", 0)):
            raise self.fail(n, "only 2-D pooling without ceil_mode has an NIR node")
        pads = [int(p) for p in n.attrs.get("pads", [0, 0, 0, 0])]
        if pads[:2] != pads[2:] or (any(pads) and not int(n.attrs.get("count_include_pad", 0))):
            raise self.fail(n, "padding that is asymmetric or not counted has no NIR form (NIR's AvgPool2d counts "
                               "the zero padding, as torch does)")
        strides = [int(s) for s in n.attrs.get("strides", kernel)]
        return self.nir.AvgPool2d(kernel_size=np.array(kernel), stride=np.array(strides), padding=np.array(pads[:2]))

    def _if(self, n: Node) -> Any:
        from .ops.neuron import feature_param, neuron_settings

        shape = self.sample(n.outputs[0])
        reset, _ = neuron_settings(n)
        r, th = feature_param(n, "r", shape), feature_param(n, "v_threshold", shape)
        v_reset = feature_param(n, "v_reset", shape, 0.0)
        v_init = feature_param(n, "v_init", shape, 0.0)
        meta: dict[str, Any] = {}
        if reset == "subtract":
            meta["hwmap_reset"] = "subtract"
            self._lose("reset by subtraction (NIR's IF resets to v_reset = 0 after a spike)")
        if np.any(v_init != 0):
            meta["hwmap_v_init"] = float(v_init.reshape(-1)[0]) if np.all(v_init == v_init.reshape(-1)[0]) \
                else v_init.tolist()
            self._lose("the initial membrane potential v_init (NIR starts at 0)")
        dt = float(n.attrs.get("dt", 1.0))
        self.meta["hwmap_dt"] = dt
        self._lose(f"the time step dt = {dt:g} s (NIR carries none: read the file back with --dt {dt:g})")
        # NIR's IF integrates dv/dt = r·I; hwmap's steps v += dt·r·I: the same r at that dt.
        return self.nir.IF(r=_f32(r), v_threshold=_f32(th), v_reset=_f32(v_reset), metadata=meta)

    def _lose(self, what: str) -> None:
        if what not in self.lost:
            self.lost.append(what)


def to_nir(graph: Graph) -> tuple[Any, list[str]]:
    """``(nir.NIRGraph, lost)``: ``graph`` as NIR and, in words, what NIR cannot say of it
    (see the module docstring). A :class:`~hwmap.errors.ModelError` names the node for an
    op NIR has no node for."""
    return _Exporter(graph).run()


def write_nir(graph: Graph, path: str | Path) -> list[str]:
    """Write ``graph`` as an NIR file at ``path`` (through a temporary file renamed into
    place); returns what was lost (:func:`to_nir`)."""
    import nir

    from .files import write_atomic

    nirgraph, lost = to_nir(graph)
    write_atomic(Path(path), lambda tmp: nir.write(tmp, nirgraph))
    return lost
