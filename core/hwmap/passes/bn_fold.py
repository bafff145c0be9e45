"""Fold an inference-mode BatchNormalization into the Conv or Gemm that feeds it.

BatchNormalization (ONNX, inference) computes per channel ``c``
``y = γ_c (x − μ_c) / √(σ²_c + ε) + β_c``. With ``f_c = γ_c / √(σ²_c + ε)`` and
``x = W∗a + b`` this is ``(f_c W_c)∗a + (b_c − μ_c) f_c + β_c``, so the producer's weights
are scaled per output channel and its bias shifted (Jacob et al., CVPR 2018, sec. 3.2;
the same rewrite as QONNX ``BatchNormToAffine`` followed by absorption into the conv).
"""

from __future__ import annotations

import numpy as np

from ..graph import Graph, Node
from .base import prune_tensors, single_consumer

__all__ = ["FoldBatchNorm"]

_BN_SLOTS = ("scale", "B", "input_mean", "input_var")


class FoldBatchNorm:
    """Fold ``Conv → BatchNormalization`` (any group) and ``Gemm → BatchNormalization``.

    The producer's output must be read by the BN alone and not be a graph output; the BN
    must be in inference form (one output, all four statistics constant). A producer whose
    weights carry a quantization annotation is left alone: folding would change the very
    values the annotation describes. A BN that cannot be folded stays as it is.
    """

    name = "fold-batchnorm"

    def apply(self, graph: Graph) -> tuple[Graph, bool]:
        g = graph.copy()
        consumers = g.consumers()
        drop: set[str] = set()
        changed = False
        for prod in g.nodes:
            if prod.op not in ("Conv", "Gemm") or prod.name in drop or len(prod.outputs) != 1:
                continue
            bn = single_consumer(g, prod.outputs[0], consumers)
            if bn is None or bn.op != "BatchNormalization" or not _foldable(prod, bn):
                continue
            if prod.op == "Conv":
                _fold_into_conv(prod, bn)
            else:
                _fold_into_gemm(prod, bn)
            # The producer takes over the BN's output name, so graph outputs and later
            # readers keep their names.
            prod.outputs = [bn.outputs[0]]
            drop.add(bn.name)
            changed = True
        if changed:
            g.nodes = [n for n in g.nodes if n.name not in drop]
            prune_tensors(g)
        return g, changed


def _foldable(prod: Node, bn: Node) -> bool:
    if len(bn.outputs) != 1 or bn.inputs != prod.outputs or int(bn.attr("training_mode", 0)) != 0:
        return False
    if any(s not in bn.params for s in _BN_SLOTS):
        return False
    # The weight (and bias) must be constants: a single dynamic input, the data.
    weight = "W" if prod.op == "Conv" else "B"
    if weight not in prod.params or len(prod.inputs) != 1:
        return False
    w = prod.params[weight]
    channels = w.shape[0] if prod.op == "Conv" or int(prod.attr("transB", 0)) else w.shape[-1]
    if any(bn.params[s].size not in (1, channels) for s in _BN_SLOTS):
        return False  # statistics that do not match the channels: not ours to reinterpret
    return not any(s in prod.param_quant for s in ("W", "B", "C"))


def _factors(bn: Node) -> tuple[np.ndarray, np.ndarray]:
    """``f = γ/√(σ²+ε)`` and ``shift = β − μ f`` in float64 (rounded once at the end)."""
    eps = float(bn.attr("epsilon", 1e-5))
    gamma, beta = (bn.params[k].astype(np.float64).ravel() for k in ("scale", "B"))
    mean, var = (bn.params[k].astype(np.float64).ravel() for k in ("input_mean", "input_var"))
    f = gamma / np.sqrt(var + eps)
    return f, beta - mean * f


def _fold_into_conv(conv: Node, bn: Node) -> None:
    w = conv.params["W"]
    f, shift = _factors(bn)
    cout = w.shape[0]
    f, shift = np.broadcast_to(f, (cout,)), np.broadcast_to(shift, (cout,))
    b = conv.params["B"].astype(np.float64) if "B" in conv.params else np.zeros(cout)
    conv.params["W"] = (w.astype(np.float64) * f.reshape((cout,) + (1,) * (w.ndim - 1))).astype(w.dtype)
    conv.params["B"] = (b * f + shift).astype(w.dtype)


def _fold_into_gemm(gemm: Node, bn: Node) -> None:
    """``Y = α A·B' + β_g C``; the BN acts on the columns ``n`` of Y (its channel axis 1)."""
    w = gemm.params["B"]
    n_out = w.shape[0] if int(gemm.attr("transB", 0)) else w.shape[1]
    f, shift = _factors(bn)
    f, shift = np.broadcast_to(f, (n_out,)), np.broadcast_to(shift, (n_out,))
    scale = f.reshape(n_out, 1) if int(gemm.attr("transB", 0)) else f.reshape(1, n_out)
    gemm.params["B"] = (w.astype(np.float64) * scale).astype(w.dtype)
    beta_g = float(gemm.attr("beta", 1.0))
    c = gemm.params["C"].astype(np.float64) * beta_g if "C" in gemm.params else np.zeros(n_out)
    # C may be a scalar, (N,), (1, N) or (M, N): scaling along its last axis covers them all.
    gemm.params["C"] = (np.broadcast_to(c, np.broadcast_shapes(c.shape, (n_out,))) * f + shift).astype(w.dtype)
    gemm.attrs["beta"] = 1.0
