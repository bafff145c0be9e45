"""Variants of the toy target for the conformance suite's own tests: :class:`Variant` is the
toy target registered under another kind (``toy_bad``), delegating every hook; a test
subclasses it and breaks one thing, then checks that :func:`hwmap.testing.check_target`
catches it (or, for a right variant, that it still conforms)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel

from hwmap import Artifacts, FidelityClaim, KPIs, Simulation, hookimpl, presets_in
from hwmap.registry import Registry
from hwmap.testing import check_target
from hwmap_toy_cpu import plugin
from hwmap_toy_cpu.hardware import ToyConfig

__all__ = ["KIND", "Variant", "write_presets", "failures_of"]

KIND = "toy_bad"


class Variant:
    """The toy target under another kind, delegating every hook; subclasses break one."""

    kind = KIND
    config: type[BaseModel] = ToyConfig
    description = "a deliberately broken toy target"
    fidelity: FidelityClaim | None = None

    def __init__(self, presets: dict[str, Path]) -> None:
        self.presets = presets

    @hookimpl
    def hwmap_register_targets(self, register: Any) -> None:
        register(kind=self.kind, config=self.config, description=self.description, presets=self.presets,
                 fidelity=self.fidelity)

    @hookimpl
    def hwmap_legalize(self, graph: Any, target: Any) -> Any:
        return plugin.hwmap_legalize(graph, target)

    @hookimpl
    def hwmap_map(self, graph: Any, target: Any) -> Any:
        return plugin.hwmap_map(graph, target)

    @hookimpl
    def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Artifacts:
        return plugin.hwmap_emit(mapping, target, outdir)

    @hookimpl
    def hwmap_simulate(self, artifacts: Artifacts, target: Any, inputs: dict[str, np.ndarray]) -> Simulation:
        return plugin.hwmap_simulate(artifacts, target, inputs)

    @hookimpl
    def hwmap_estimate(self, mapping: Any, target: Any, activity: Any) -> KPIs:
        return plugin.hwmap_estimate(mapping, target, activity)


def write_presets(folder: Path) -> dict[str, Path]:
    """The toy target's default preset, declaring kind ``toy_bad``, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    text = presets_in("hwmap_toy_cpu")["default"].read_text().replace('kind = "toy_cpu"', f'kind = "{KIND}"')
    (folder / "default.toml").write_text(text)
    return {"default": folder / "default.toml"}


def failures_of(registry: Registry, variant: type[Variant], presets: dict[str, Path], tmp_path: Path,
                **kw: Any) -> list[str]:
    """Register ``variant`` with ``presets`` and run the conformance suite on it (``kw``:
    :func:`~hwmap.testing.check_target`'s model, data, preset)."""
    assert registry.add_plugin(variant(presets), name=variant.__name__) == variant.__name__, registry.errors
    return check_target(KIND, tmp_path=tmp_path / "check", **kw)
