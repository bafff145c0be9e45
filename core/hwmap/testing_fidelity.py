"""Checks 4 and 5 of the conformance suite (:mod:`hwmap.testing`): each simulated output has
the reference's shape, is finite and repeatable, and agrees with the reference model at least
as well as the suite's floor (:data:`TOP1_FLOOR`, :data:`REL_RMS_FLOOR`) and as the target
claims at registration (:class:`hwmap.FidelityClaim`).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import describe_error
from .target import FidelityClaim, Simulation

__all__ = ["check_output", "check_fidelity", "TOP1_FLOOR", "REL_RMS_FLOOR"]

# The floor every target's simulation must reach, whatever it claims. Measured on every
# sample the suite simulates (zoo:digits: 360; random: 64), top-1 agreement / relative RMS
# error against the float reference model:
#
#   target (preset)             digits_cnn, digits   digits_mlp, digits   chapter_cnn, random
#   toy_cpu (int8 weights)      1.000 / 0.0053       1.000 / 0.0063       0.0132
#   analog_imc:default          0.997 / 0.0056       1.000 / 0.0059       0.0119
#   analog_imc:chapter-fig3.13  0.994 / 0.045        1.000 / 0.028        0.048
#   analog_imc:isaac-like       1.000 / 0.00002      1.000 / 0.00002      0.00004
#
# and zoo:digits_cnn on random images: 0.984 (toy_cpu), 1.000 (analog_imc:default; 0.875 on
# 8 images), 0.969 (chapter-fig3.13). Wrong outputs measure: zeros 1.0; the reference rolled
# by one sample 0.69 on chapter_cnn (a roll along any one axis: 0.68-1.63) and 1.2-1.35 on
# the digits models, whose top-1 agreement then falls to chance (0.10; classes permuted:
# 0.00); every sample given the mean output 0.48. For scale, chapter_cnn's weights rounded
# per tensor to 6 bits give 0.040, to 4 bits 0.26.
#: Top-1 agreement with the reference model, on classifier-shaped outputs (2-D, classes > 1).
TOP1_FLOOR = 0.9
#: ``||sim - ref|| / ||ref||`` on any other output: 7.5x above what an honest 8-bit target
#: measures (0.0132), 2x above the coarsest shipped preset (0.048), and 4.8x below the
#: closest wrong output measured (the mean output, 0.48; a permutation, 0.68; zeros, 1.0):
#: about the geometric middle between the honest 8-bit targets and the wrong outputs.
REL_RMS_FLOOR = 0.1


def check_output(name: str, sim: Simulation, reference: np.ndarray, runs: list[Simulation],
                 after_compile: bool) -> list[str]:
    """Shape, finiteness and repeatability of one simulated output; empty when all hold."""
    if name not in sim.outputs:
        return [f"simulate: output {name!r} missing (got: {', '.join(sorted(sim.outputs)) or 'none'})"]
    got = np.asarray(sim.outputs[name])
    if got.shape != reference.shape:
        return [f"simulate: output {name!r} has shape {list(got.shape)}, the reference model's {list(reference.shape)}"]
    out = []
    if not np.all(np.isfinite(got.astype(np.float64))):
        out.append(f"simulate: output {name!r} holds NaN or infinite values")
    others = [np.asarray(r.outputs[name]) for r in runs if name in r.outputs]
    if any(not np.array_equal(o, others[0]) for o in others[1:]):
        out.append(f"simulate: output {name!r} differs between two runs on the same data (not deterministic)")
    elif others and not np.array_equal(others[0], got):
        out.append(f"simulate: output {name!r} read back from disk differs from the simulation run right after "
                   "compile" if after_compile else
                   f"simulate: output {name!r} differs between two runs on the same data (not deterministic)")
    return out


# -- 5. fidelity ------------------------------------------------------------------------------------
def check_fidelity(reference: dict[str, np.ndarray], simulated: dict[str, np.ndarray],
                   claim: FidelityClaim | None, quantized_reference: Callable[[], dict[str, np.ndarray]]) -> list[str]:
    """The suite's floor and the target's claim on every output in ``reference`` (outputs
    of the reference's shape, finite); ``quantized_reference`` is computed only when the
    target claims ``bit_exact``."""
    claim = claim or FidelityClaim()
    out = []
    for name, ref in reference.items():
        r, s = np.asarray(ref, dtype=np.float64), np.asarray(simulated[name], dtype=np.float64)
        if r.ndim == 2 and r.shape[1] > 1:
            agree = float(np.mean(np.argmax(s, axis=1) == np.argmax(r, axis=1))) if len(r) else 1.0
            for bound, whose in ((TOP1_FLOOR, "the suite's floor"), (claim.top1_agreement, "claimed at registration")):
                if bound is not None and agree < bound:
                    out.append(f"fidelity: output {name!r} top-1 agreement with the reference model {agree:.4f} "
                               f"({len(r)} samples) is below {bound:g} ({whose})")
        else:
            rel = _ratio(float(np.linalg.norm(s - r)), float(np.linalg.norm(r)))
            if rel > REL_RMS_FLOOR:
                out.append(f"fidelity: output {name!r} relative RMS error ||sim - ref|| / ||ref|| = {rel:.4g} "
                           f"({len(r)} samples) is above {REL_RMS_FLOOR:g} (the suite's floor)")
        if claim.max_rel_error is not None and r.size:
            rel_max = _ratio(float(np.max(np.abs(s - r))), float(np.max(np.abs(r))))
            if rel_max > claim.max_rel_error:
                out.append(f"fidelity: output {name!r} max|sim - ref| / max|ref| = {rel_max:.4g} is above "
                           f"{claim.max_rel_error:g} (claimed at registration)")
    if claim.bit_exact and reference:
        try:
            quantized = quantized_reference()
        except Exception as e:  # a plugin's annotation that does not fit its tensor, an unreadable legalized/
            return out + [f"fidelity: claims bit_exact, but the quantized reference cannot run the legalized graph: "
                          f"{describe_error(e)}"]
        for name in reference:
            q, s = quantized[name], np.asarray(simulated[name])
            if q.shape != s.shape or not np.array_equal(q, s):
                differ = int(np.sum(q != s)) if q.shape == s.shape else q.size
                worst = float(np.max(np.abs(q.astype(np.float64) - s))) if q.shape == s.shape else float("nan")
                out.append(f"fidelity: output {name!r} differs from the quantized reference (the legalized graph, "
                           f"annotations applied) in {differ} of {q.size} values, max |difference| {worst:.4g}; "
                           "bound 0 (bit_exact claimed at registration)")
    return out


def _ratio(num: float, den: float) -> float:
    """``num / den``, 0 when both are 0 and infinite when only ``den`` is."""
    if den == 0:
        return 0.0 if num == 0 else float("inf")
    return num / den
