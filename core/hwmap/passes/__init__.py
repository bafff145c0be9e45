"""Reusable graph passes: small named rewrites run to a fixed point.

Each pass is an object with a ``name`` and ``apply(graph) -> (new_graph, changed)`` that
never mutates its input (QONNX style); :func:`run_passes` applies a list of them until
nothing changes. Targets compose their legalization from these (a spiking target given an
ANN calls :func:`convert_to_snn` with ``target.calibration`` and the ``[conversion]`` table
of its config, a :class:`hwmap.ConversionConfig`); :class:`QuantizeFixedPoint` is the
chapter's post-training fixed-point quantization (eq. 3.9–3.11) of weights and activations::

    from hwmap.passes import FoldConstants, FoldBatchNorm, FuseComputeWithPostOps, run_passes
    g = run_passes(graph, [FoldConstants(), FoldBatchNorm(), FuseComputeWithPostOps()])
"""

from .base import (
    Pass,
    constant_value,
    prune_tensors,
    remove_orphan_constants,
    run_passes,
    single_consumer,
    slot_of_input,
    unique_node_name,
)
from .bn_fold import FoldBatchNorm
from .const_fold import FoldConstants
from .encode import encode_graph
from .fixed_point import (
    FixedPoint,
    QuantizeFixedPoint,
    fixed_point_annotation,
    fixed_point_format,
    fixed_point_quantize,
)
from .fusion import COMPUTE_OPS, DEFAULT_POST_OPS, FuseComputeWithPostOps
from .snn_convert import ENCODINGS, READOUTS, Conversion, ConversionSettings, convert_to_snn

__all__ = [
    "COMPUTE_OPS", "Conversion", "ConversionSettings", "DEFAULT_POST_OPS", "ENCODINGS", "FoldBatchNorm",
    "FoldConstants", "FixedPoint", "FuseComputeWithPostOps", "Pass", "QuantizeFixedPoint", "fixed_point_annotation",
    "fixed_point_format", "fixed_point_quantize", "constant_value", "convert_to_snn", "encode_graph", "prune_tensors",
    "READOUTS", "remove_orphan_constants", "run_passes", "single_consumer", "slot_of_input", "unique_node_name",
]
