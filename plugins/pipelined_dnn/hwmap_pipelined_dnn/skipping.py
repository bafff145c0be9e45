"""What zero-skipping or change-driven engines would save on this pipeline.

The pipeline's engines (:mod:`.templates`) compute every MAC of every frame, zero or not: its
headline figures stay as modelled. With a sparsity measurement (``hwmap compile --data``:
the flow runs the legalized, quantized graph on the scored samples, :mod:`hwmap.sparsity`),
the estimate also states per layer and in total (``resources``, in the names every target
uses, and a sentence in ``assumptions``) the MACs whose activation operand is zero (what a
zero-skipping engine would not compute, as in Cnvlutin, Albericio et al., ISCA 2016, which
skips zero activations) or unchanged from the previous frame (what a change-driven engine
fed the temporal delta layer's output would not compute, the chapter's Section 3.3), and
their compute energy: MACs × ``energy.mac_pj``. Weight reads a skipped MAC would also
spare, and the cost of finding the non-zero operands, are not counted.
"""

from __future__ import annotations

from typing import Any

from hwmap import KPIs
from hwmap.sparsity import SkipSavings, record_skip_savings

__all__ = ["add_skipping"]


def add_skipping(kpis: KPIs, activity: dict[str, Any] | None) -> None:
    """Add what skipping would save to ``kpis`` (:func:`hwmap.sparsity.record_skip_savings`:
    ``resources.zero_operand_macs``/``unchanged_operand_macs`` and their compute energy,
    ``zero_operand_energy_j``/``unchanged_operand_energy_j``), or say that it was not measured."""
    record_skip_savings(kpis, activity, describe=_describe, energy_kinds=("compute",),
                        unmeasured="the engines compute every MAC", source=(
                            "measured on the legalized graph (hwmap.sparsity); zero skipping: Cnvlutin (Albericio "
                            "et al., ISCA 2016); change-driven: the chapter, Section 3.3 (temporal delta layer)"))


def _describe(s: SkipSavings) -> str:
    return f"not applied (the engines compute every MAC): {s.text()}; energy = skipped MACs × energy.mac_pj"
