"""Device noise of phase-change-memory cells: programming noise and conductance drift.

The statistical PCM model of IBM's aihwkit (``PCMLikeNoiseModel``, fitted on PCM measurements by
Nandakumar et al., ICECS 2019):

* a cell programmed to target conductance ``g_T`` (µS) lands at ``g_T + σ(ĝ)·ξ``, ``ξ`` standard
  normal, with ``σ(ĝ) = (0.26348 + 1.9650·ĝ − 1.1731·ĝ²)·g_max/25 µS`` and ``ĝ = g_T/g_max``,
  clipped at 0 (a conductance is never negative);
* it then drifts as ``g(t) = g_prog·(t/t0)^(−ν)`` with ``t0 = 20 s`` after programming.

A cell of ``bits_per_cell`` bits stores level ``L ∈ 0..L_max`` (``L_max = 2^bits − 1``) as
``g_T = L/L_max·g_max``; the simulator works in level units, so the noisy cell is returned as
``g(t)/g_max·L_max``. Noise is drawn from a generator seeded with ``(seed, block id)``: the
same program and seed give the same noisy chip on every run.
"""

from __future__ import annotations

import numpy as np

from .hardware import NoiseConfig

__all__ = ["PROG_COEFFS", "T0_S", "programming_sigma_us", "drift_factor", "noisy_levels"]

#: σ(ĝ) polynomial coefficients (µS at g_max = 25 µS), constant term first (aihwkit).
PROG_COEFFS = (0.26348, 1.9650, -1.1731)
#: Reference time of the drift law, seconds after programming (aihwkit ``t0``).
T0_S = 20.0


def programming_sigma_us(g_norm: np.ndarray, g_max_us: float) -> np.ndarray:
    """Standard deviation (µS) of the programmed conductance for targets ``g_norm = g_T/g_max``."""
    c0, c1, c2 = PROG_COEFFS
    sigma = c0 + c1 * g_norm + c2 * g_norm**2
    return np.maximum(sigma, 0.0) * (g_max_us / 25.0)


def drift_factor(t_s: float, nu: float) -> float:
    """``(t/t0)^(−ν)``: what remains of a programmed conductance ``t_s`` seconds later."""
    return float((t_s / T0_S) ** (-nu))


def noisy_levels(levels: np.ndarray, max_level: int, cfg: NoiseConfig, block: int) -> np.ndarray:
    """The cells of one block as read at ``cfg.t_inference_s``: programming noise, then drift,
    in level units (float32). ``block`` seeds the block's own stream with ``cfg.seed``."""
    rng = np.random.default_rng([cfg.seed, block])
    g_norm = levels.astype(np.float64) / max_level
    g_us = g_norm * cfg.g_max_us
    g_us = g_us + programming_sigma_us(g_norm, cfg.g_max_us) * rng.standard_normal(levels.shape)
    g_us = np.maximum(g_us, 0.0) * drift_factor(cfg.t_inference_s, cfg.drift_nu)
    return (g_us / cfg.g_max_us * max_level).astype(np.float32)
