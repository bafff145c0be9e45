"""What zero-skipping or change-driven engines would save on this pipeline.

The pipeline's engines (:mod:`.templates`) compute every MAC of every frame, zero or not: its
headline figures stay as modelled. With a sparsity measurement (``hwmap compile --data``:
the flow runs the legalized, quantized graph on the scored samples, :mod:`hwmap.sparsity`),
the estimate also states per layer (``resources``) and in total (``assumptions``) the MACs
whose activation operand is zero (what a zero-skipping engine would not compute, as in
Cnvlutin, Albericio et al., ISCA 2016, which skips zero activations) or unchanged
from the previous frame (what a change-driven engine fed the temporal delta layer's
output would not compute, the chapter's Section 3.3), and their compute energy:
MACs × ``energy.mac_pj``. Weight reads a skipped MAC would also spare, and the cost of
finding the non-zero operands, are not counted.
"""

from __future__ import annotations

from typing import Any

from hwmap import Assumption, KPIs
from hwmap.sparsity import skip_savings

__all__ = ["add_skipping"]


def add_skipping(kpis: KPIs, activity: dict[str, Any] | None) -> None:
    """Add what skipping would save to ``kpis`` (nothing without a measurement)."""
    s = skip_savings(kpis, activity, energy_kinds=("compute",))
    if s is None:
        kpis.assumptions["sparsity.skipping"] = Assumption(
            "not measured (no --data): the engines compute every MAC", "", "hwmap.sparsity")
        return
    kpis.resources["zero_skipping_saved_macs"] = s.zero_operand_macs
    kpis.resources["zero_skipping_saved_energy_j"] = s.zero_energy_j
    kpis.resources["change_driven_saved_macs"] = s.unchanged_operand_macs
    kpis.resources["change_driven_saved_energy_j"] = s.unchanged_energy_j
    kpis.assumptions["sparsity.skipping"] = Assumption(
        f"not applied (the engines compute every MAC): {s.text()}; energy = skipped MACs × energy.mac_pj",
        "", "measured on the legalized graph (hwmap.sparsity); zero skipping: Cnvlutin (Albericio et al., "
            "ISCA 2016); change-driven: the chapter, Section 3.3 (temporal delta layer)")
