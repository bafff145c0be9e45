"""Spiking networks trained with surrogate gradients in PyTorch, exported through NIR.

The chapter's Section 3.2.4: a spike is ``S(V_mem) = H(V_mem - V_th)`` (eq. 3.1); for
training, the backward pass uses the derivative of the ReLU-shaped surrogate
``Ŝ = max(V_mem - V_th, 0)`` (eq. 3.2), ``dS/dV ≡ [V_mem > V_th]`` (eq. 3.3), or SuperSpike's
fast sigmoid (Zenke & Ganguli, Neural Comput. 30(6), 2018). Time constants and thresholds
are trainable.

* :class:`LIF` — LIF neurons with hwmap's discrete-time semantics (NIR's LIF, forward
  Euler), reset to zero or by subtraction, optional recurrent weights
  (:mod:`hwmap.nn.lif`);
* :func:`spike`, :func:`surrogate`, :func:`surrogate_grad` (:mod:`hwmap.nn.surrogates`);
* :class:`SNN` — Linear / Conv2d / Flatten / LIF layers over ``(N, T, *features)``;
  :func:`to_nir` and :func:`to_graph` export it as a ``nir.NIRGraph`` and as hwmap's neutral
  graph, which hwmap's executor runs spike for spike like the torch module
  (:mod:`hwmap.nn.network`);
* :class:`LayerSpec`, :func:`build_nir`, :func:`graph_from_layers` — the torch-free half of
  the export (:mod:`hwmap.nn.nirbuild`).

Hardware-aware training for zero-skipping targets (the chapter's Section 3.3):

* :class:`FixedPointQuantizer` (eq. 3.9–3.11) and :class:`LSQQuantizer` (learned step size,
  eq. 3.12–3.14, clipped or the delta layer's unclipped mixed-precision form), and
  :class:`QuantConv2d` / :class:`QuantLinear` with quantized weights (:mod:`hwmap.nn.quant`);
* :class:`TemporalDelta` and :class:`DeltaNet`: the temporal delta layer, its sparsity
  penalty (eq. 3.15) and delta inference (eq. 3.6–3.8) (:mod:`hwmap.nn.delta`);
* :class:`SparsityMeter`, :func:`measure_sparsity`: spatial and temporal activation sparsity
  per layer on data (:mod:`hwmap.nn.meters`).

PyTorch is optional (``pip install hwmap[torch]``): ``import hwmap.nn`` always works, and
only using a torch name without PyTorch raises an :class:`ImportError` that says so.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .lif import LIF
    from .network import DEAD, SNN, to_graph, to_nir
    from .nirbuild import LayerSpec, build_nir, graph_from_layers
    from .surrogates import SURROGATES, spike, surrogate, surrogate_grad
    from .quant import FixedPointQuantizer, LSQQuantizer, QuantConv2d, QuantLinear
    from .delta import DeltaNet, TemporalDelta
    from .meters import LayerSparsity, SparsityMeter, measure_sparsity

__all__ = ["LIF", "SNN", "DEAD", "to_nir", "to_graph", "SURROGATES", "spike", "surrogate", "surrogate_grad",
           "LayerSpec", "build_nir", "graph_from_layers", "FixedPointQuantizer", "LSQQuantizer", "QuantConv2d",
           "QuantLinear", "DeltaNet", "TemporalDelta", "LayerSparsity", "SparsityMeter", "measure_sparsity"]

_TORCH_NAMES = {"LIF": "lif", "SNN": "network", "DEAD": "network", "to_nir": "network", "to_graph": "network",
                "SURROGATES": "surrogates", "spike": "surrogates", "surrogate": "surrogates",
                "surrogate_grad": "surrogates", "FixedPointQuantizer": "quant", "LSQQuantizer": "quant",
                "QuantConv2d": "quant", "QuantLinear": "quant", "DeltaNet": "delta", "TemporalDelta": "delta",
                "LayerSparsity": "meters", "SparsityMeter": "meters", "measure_sparsity": "meters"}
_PLAIN_NAMES = {"LayerSpec": "nirbuild", "build_nir": "nirbuild", "graph_from_layers": "nirbuild"}


def __getattr__(name: str) -> Any:
    if name in _PLAIN_NAMES:
        return getattr(importlib.import_module(f"{__name__}.{_PLAIN_NAMES[name]}"), name)
    if name not in _TORCH_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ImportError(f"hwmap.nn.{name} needs PyTorch, which is not installed: pip install 'hwmap[torch]'") from None
    return getattr(importlib.import_module(f"{__name__}.{_TORCH_NAMES[name]}"), name)
