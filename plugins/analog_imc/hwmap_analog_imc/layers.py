"""Crossbar layers: what of a legalized graph the crossbars compute, as weight matrices.

Every Conv/Gemm/MatMul (fused or not) becomes a :class:`CrossbarLayer`: per group an
``M × N`` weight matrix with ``M = K_h·K_w·C_in/groups`` rows (the unrolled filter, im2col
order C_in-major as ONNX lays out W) and ``N = C_out/groups`` filters, each filter taking
``columns_per_weight`` crossbar columns (:func:`~.hardware.columns_per_weight`). ``positions`` is how
many input vectors the layer feeds through its matrix per inference (output pixels of a
convolution, rows of a MatMul), i.e. how many MVMs one block performs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hwmap import Graph, Node

__all__ = ["CrossbarLayer", "crossbar_layers", "CROSSBAR_OPS"]

CROSSBAR_OPS = ("Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul")


@dataclass(frozen=True)
class CrossbarLayer:
    """One layer as the mapper sees it (all counts per inference, batch excluded)."""

    index: int
    node: str
    op: str
    groups: int
    rows: int  # M: rows of one group's matrix
    filters: int  # N: filters (outputs) of one group
    cols_per_filter: int  # crossbar columns one filter takes (bit slices × 2 if differential)
    positions: int  # input vectors per inference = MVMs per block

    @property
    def cols(self) -> int:
        """Crossbar columns of one group's matrix."""
        return self.filters * self.cols_per_filter

    @property
    def cells(self) -> int:
        """Cells the whole layer needs (all groups)."""
        return self.groups * self.rows * self.cols

    @property
    def weights(self) -> int:
        return self.groups * self.rows * self.filters

    def elements_needed(self, element_rows: int, element_cols: int) -> int:
        """``ceil(M/r)·ceil(N/c)`` per group (the subarray count of DNN+NeuroSim, Peng et al., IEDM
        2019, in elements): the layer mapped on its own."""
        return self.groups * math.ceil(self.rows / element_rows) * math.ceil(self.cols / element_cols)


def _compute_node(node: Node) -> Node:
    return node.fused[0] if node.op.startswith("Fused") and node.fused else node


def crossbar_layers(graph: Graph, cols_per_filter: int) -> list[CrossbarLayer]:
    """The crossbar layers of ``graph`` in graph order."""
    layers: list[CrossbarLayer] = []
    for node in graph.nodes:
        if node.op not in CROSSBAR_OPS:
            continue
        comp = _compute_node(node)
        out_shape = graph.tensor(node.outputs[0]).shape
        if comp.op == "Conv":
            w = node.params["W"]
            groups = int(node.attrs.get("group", 1))
            c_out = int(w.shape[0])
            rows = int(math.prod(w.shape[1:]))
            positions = int(math.prod(out_shape[2:]))
        elif comp.op == "Gemm":
            b = node.params["B"]
            trans_b = int(node.attrs.get("transB", 0))
            k, n = (b.shape[1], b.shape[0]) if trans_b else (b.shape[0], b.shape[1])
            groups, rows, c_out = 1, int(k), int(n)
            positions = int(math.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        else:  # MatMul with a constant right operand
            b = node.params["B"]
            groups, rows, c_out = 1, int(b.shape[-2]), int(b.shape[-1])
            positions = int(math.prod(out_shape[1:-1])) if len(out_shape) > 2 else 1
        layers.append(CrossbarLayer(len(layers), node.name, comp.op, groups, rows, c_out // groups,
                                    cols_per_filter, max(positions, 1)))
    return layers
