"""What skipping zero or unchanged inputs means on the analog crossbars.

A crossbar computes a whole matrix-vector product at once, so zero operands are not MACs it
can leave out one by one; what a zero input spares, it spares already: with measured
activity the estimate counts DAC conversions only for non-zero input bits and cell reads in
proportion (an undriven row draws no current), so the headline energy already holds that
saving. The ADC conversions, digital post-ops and read time are per MVM and stay.

With a sparsity measurement (``hwmap compile --data``, :mod:`hwmap.sparsity` on the legalized,
quantized graph) the estimate states, per layer and in total (``resources``, in the names
every target uses, and a sentence in ``assumptions``), how many of the layer's MACs have a zero operand (the share a digital
zero-skipping engine, e.g. Cnvlutin, Albericio et al., ISCA 2016, would not compute) and how
many an operand unchanged from the previous frame (what feeding the crossbar the temporal
delta layer's changes would turn into zero inputs, the chapter's Section 3.3). No energy is
attached to either: the first is already in the headline, the second would need the delta
encoding this target does not model.
"""

from __future__ import annotations

from typing import Any

from hwmap import KPIs
from hwmap.sparsity import SkipSavings, record_skip_savings

__all__ = ["add_skipping"]


def add_skipping(kpis: KPIs, activity: dict[str, Any] | None) -> None:
    """Add the zero and unchanged operand MACs to ``kpis`` (:func:`hwmap.sparsity.record_skip_savings`:
    ``resources.zero_operand_macs``, ``unchanged_operand_macs``; no energy, see the module
    docstring), or say that they were not measured."""
    record_skip_savings(kpis, activity, describe=_describe, source=(
        "measured on the legalized graph (hwmap.sparsity); Cnvlutin (Albericio et al., ISCA 2016); the chapter, "
        "Section 3.3 (temporal delta layer)"))


def _describe(s: SkipSavings) -> str:
    return (f"{s.text()}; zero inputs already draw no DAC conversion or cell current in the energy above "
            "(measured); ADC conversions and read time are per MVM and not skipped; unchanged operands would "
            "become zero inputs only with a delta encoding, not modelled")
