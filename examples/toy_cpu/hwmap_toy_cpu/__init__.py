"""``toy_cpu``: the smallest working hwmap target, the example of docs/writing-a-target.md.

A plain digital CPU that executes the graph layer by layer from one on-chip SRAM: weights
are stored as int8 (one float32 scale per tensor), biases and other constants as float32;
a MAC unit does ``macs_per_cycle`` 8-bit multiply-accumulates per clock. Small on purpose,
but real: it legalizes with a design-rule check, maps, emits files, simulates them read
back from disk and estimates KPIs from cited constants, so the flow, the CLI and the
conformance suite (:mod:`hwmap.testing`) can be tested against a genuine plugin; hwmap's
own tests import it from this folder without installing it.

``hardware`` holds the config schema, ``plugin`` the hook implementations (the module the
entry point names), ``presets/`` the shipped configs.
"""

from .hardware import ToyConfig

__all__ = ["ToyConfig"]
