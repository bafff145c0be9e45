"""The chapter's Fig. 3.2 ("Spiking neuron models"): tuning curves of the spiking versions of
Tanh, Sigmoid, RectifiedLinear and LIFRate made by nengo's ``RegularSpiking`` wrapper.

Each panel plots the firing rate (Hz) of one neuron against the value ``x`` it represents
(-1 to 1; the neuron's encoder is +1, so its current is ``J = gain·x + bias``). The line is
the base type's rate curve (``rates``); the dots are the measured rate of
``RegularSpiking(base)``: one neuron per ``x``, the input held constant, run for ``t`` seconds
at ``dt`` from a blank state (voltage 0, as in the chapter), its spikes counted (signed:
Tanh's spikes are negative for negative input) and divided by ``t``. ``tau_ref = 2.5 ms``,
so Tanh, Sigmoid and LIFRate saturate at ``1/tau_ref = 400 Hz``; as in the chapter, the
gains are chosen per type (LIFRate's large, so that it reaches its saturation within the
range). The neuron models are those of :mod:`hwmap_nengo_like.neurons`, which step like
nengo 4.1's (``nengo/neurons.py``). No random draws: the same call writes the same file.

    from hwmap_nengo_like.pictures import tuning_curves
    curves = tuning_curves("fig3_2.png")   # {"Tanh": {"x", "J", "rate", "spiking"}, ...}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .neurons import LIFRate, NeuronType, RectifiedLinear, RegularSpiking, Sigmoid, Tanh

__all__ = ["TAU_REF", "panels", "measure", "tuning_curves"]

#: The refractory period of the figure: saturation at 1/TAU_REF = 400 Hz.
TAU_REF = 0.0025


def panels() -> list[tuple[str, NeuronType, float, float]]:
    """The four panels of Fig. 3.2 in the chapter's order (a)-(d): name, base (rate) type,
    gain and bias of the one neuron."""
    tanh, sigmoid, lif = Tanh(tau_ref=TAU_REF), Sigmoid(tau_ref=TAU_REF), LIFRate(tau_ref=TAU_REF)
    relu = RectifiedLinear()
    out: list[tuple[str, NeuronType, float, float]] = []
    # Tanh and Sigmoid: 390 Hz at x = 1, the intercept (zero crossing / inflection) at 0
    for name, t in (("Tanh", tanh), ("Sigmoid", sigmoid)):
        g, b = t.gain_bias(390.0, 0.0)
        out.append((name, t, float(g[0]), float(b[0])))
    g, b = relu.gain_bias(400.0, 0.0)  # ReLU: 400 Hz at x = 1, not saturating
    out.append(("RectifiedLinear", relu, float(g[0]), float(b[0])))
    # LIFRate: threshold J = 1 at x = 0, J = 2001 at x = 1 (398 Hz), within 1 % of 400 Hz from x = 0.4
    out.append(("LIFRate", lif, 2000.0, 1.0))
    return out


def measure(base: NeuronType, gain: float, bias: float, x: np.ndarray, t: float = 1.0,
            dt: float = 0.001) -> dict[str, np.ndarray]:
    """The rate curve of ``base`` and the measured rate of ``RegularSpiking(base)`` at the
    values ``x`` (held for ``t`` seconds from a blank state)."""
    x = np.asarray(x, dtype=float)
    J = gain * x + bias
    rate = base.rates(x, np.array([gain]), np.array([bias]))[:, 0]
    spiking = RegularSpiking(base)
    voltage = np.zeros_like(J)
    out = np.zeros_like(J)
    count = np.zeros_like(J)
    steps = int(round(t / dt))
    for _ in range(steps):
        spiking.step(dt, J, out, voltage=voltage)
        count += out
    return {"x": x, "J": J, "rate": rate, "spiking": count * dt / (steps * dt)}


def tuning_curves(path: str | Path | None = None, n_points: int = 101, t: float = 1.0,
                  dt: float = 0.001) -> dict[str, dict[str, np.ndarray]]:
    """Fig. 3.2: the four tuning curves as arrays (per panel name: ``x``, ``J``, ``rate`` the
    rate curve, ``spiking`` the measured rate of the RegularSpiking version, all in Hz), and,
    if ``path`` is given, the figure written there as PNG (Agg backend, no metadata, so the
    same arguments give the same file)."""
    x = np.linspace(-1.0, 1.0, n_points)
    curves = {name: measure(base, gain, bias, x, t=t, dt=dt) for name, base, gain, bias in panels()}
    if path is not None:
        _draw(curves, Path(path), t)
    return curves


def _draw(curves: dict[str, dict[str, np.ndarray]], path: Path, t: float) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(9, 7))
    try:
        for ax, (letter, (name, c)) in zip(axes.ravel(), zip("abcd", curves.items())):
            ax.plot(c["x"], c["rate"], color="0.6", lw=2, label=f"{name} (rate)")
            ax.plot(c["x"], c["spiking"], ".", ms=4, color="C0", label=f"RegularSpiking({name}), {t:g} s")
            ax.axhline(1.0 / TAU_REF, color="C3", lw=0.8, ls=":")
            ax.set_title(f"({letter}) spiking {name}")
            ax.set_xlabel("input x")
            ax.set_ylabel("firing rate (Hz)")
            ax.legend(loc="upper left", fontsize=7)
        fig.suptitle(f"Spiking neuron models (RegularSpiking, tau_ref = {TAU_REF * 1e3:g} ms: 400 Hz dotted)")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100, format="png", metadata={"Software": None})
    finally:
        plt.close(fig)


def main(argv: Any = None) -> None:
    """``python -m hwmap_nengo_like.pictures [PATH]`` writes Fig. 3.2 (default ``fig3_2.png``)."""
    import sys

    args = sys.argv[1:] if argv is None else list(argv)
    path = Path(args[0]) if args else Path("fig3_2.png")
    curves = tuning_curves(path)
    for name, c in curves.items():
        print(f"{name:16s} measured {c['spiking'].min():8.1f} .. {c['spiking'].max():6.1f} Hz")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
