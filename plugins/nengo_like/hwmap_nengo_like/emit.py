"""Emitting the mapped network: the network description as ``network.json`` (the structure,
neuron types, synapses, the cores of every population) and ``arrays.npz`` (gains, biases,
scaled encoders, initial states, weights), byte-identical from one run to the next."""

from __future__ import annotations

from pathlib import Path

from .description import Description, write

__all__ = ["emit_description"]


def emit_description(d: Description, outdir: Path) -> list[str]:
    return write(d, outdir)
