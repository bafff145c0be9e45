"""The target registry: loads plugins, records who provides which kind, routes hook calls.

Plugins are found through the entry-point group ``hwmap.targets``. A plugin that fails to
import, or that registers a kind another plugin already registered, is recorded as a load
error (shown by ``hwmap targets``) and never breaks the others. Setting the environment
variable ``HWMAP_DISABLE_PLUGIN_AUTOLOAD=1`` skips entry points (tests register throw-away
plugins by hand); the core's built-in frontends are always registered.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import pluggy

from . import hookspecs
from .errors import PluginError, TargetError
from .target import FidelityClaim, TargetSpec

__all__ = ["Registry", "LoadError", "get_registry", "reset_registry", "ENTRY_POINT_GROUP", "AUTOLOAD_ENV"]

ENTRY_POINT_GROUP = "hwmap.targets"
AUTOLOAD_ENV = "HWMAP_DISABLE_PLUGIN_AUTOLOAD"
BUILTIN_PLUGINS = ("hwmap.frontends.onnx", "hwmap.frontends.torch", "hwmap.frontends.nir", "hwmap.frontends.saved")


@dataclass(frozen=True)
class LoadError:
    """A plugin that could not be loaded or whose registration was refused."""

    plugin: str
    error: str


@dataclass
class Registry:
    """A pluggy manager plus the kinds registered through ``hwmap_register_targets``."""

    pm: pluggy.PluginManager = field(default_factory=lambda: _new_manager())
    specs: dict[str, TargetSpec] = field(default_factory=dict)
    owners: dict[str, Any] = field(default_factory=dict)  # kind -> plugin object
    errors: list[LoadError] = field(default_factory=list)

    # -- loading -------------------------------------------------------------------------
    def load_builtins(self) -> None:
        import importlib

        for modname in BUILTIN_PLUGINS:
            try:
                self.add_plugin(importlib.import_module(modname), name=modname)
            except Exception as e:  # a broken built-in frontend must not hide the others
                self.errors.append(LoadError(modname, _one_line(e)))

    def load_entry_points(self) -> None:
        for ep in sorted(md.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            dist = getattr(ep, "dist", None)
            package = dist.name if dist is not None else ep.value.split(":")[0]
            version = dist.version if dist is not None else ""
            try:
                plugin = ep.load()
            except Exception as e:
                self.errors.append(LoadError(f"{ep.name} ({ep.value})", f"import failed: {_one_line(e)}"))
                continue
            self.add_plugin(plugin, name=ep.name, package=package, version=version)

    def add_plugin(self, plugin: Any, name: str | None = None, package: str = "", version: str = "") -> str | None:
        """Register ``plugin`` (a module or object with hook implementations) and collect the
        kinds it declares. Returns the name it was registered under, or ``None`` if refused."""
        name = name or getattr(plugin, "__name__", None) or repr(plugin)
        try:
            self.pm.register(plugin, name=name)
        except Exception as e:
            self.errors.append(LoadError(name, f"registration refused: {_one_line(e)}"))
            return None
        impl = getattr(plugin, "hwmap_register_targets", None)
        if impl is None:
            return name
        declared: list[TargetSpec] = []

        def register(kind: str, config: type, description: str, presets: dict[str, Any] | None = None,
                     fidelity: FidelityClaim | None = None, encodings: Sequence[str] | None = None) -> None:
            presets_paths = {k: Path(str(v)) for k, v in (presets or {}).items()}
            if fidelity is not None and not isinstance(fidelity, FidelityClaim):
                raise TypeError(f"fidelity for kind {kind!r} must be a hwmap.FidelityClaim, not {type(fidelity).__name__}")
            takes = TargetSpec.encodings if encodings is None else tuple(encodings)
            unknown = sorted(set(takes) - set(TargetSpec.encodings))
            if unknown or isinstance(encodings, str):
                raise TypeError(f"encodings for kind {kind!r} must be a sequence of {', '.join(TargetSpec.encodings)}")
            declared.append(TargetSpec(kind, config, description, presets_paths, name, package, version, fidelity,
                                       takes))

        try:
            impl(register=register)
        except Exception as e:
            self.errors.append(LoadError(name, f"hwmap_register_targets failed: {_one_line(e)}"))
            self.pm.unregister(plugin)
            return None
        for spec in declared:
            if spec.kind in self.specs:
                other = self.specs[spec.kind].plugin_name
                self.errors.append(LoadError(
                    name, f"kind {spec.kind!r} is already registered by plugin {other!r}; refused"))
                continue
            self.specs[spec.kind] = spec
            self.owners[spec.kind] = plugin
        return name

    def remove_plugin(self, name: str) -> None:
        plugin = self.pm.get_plugin(name)
        if plugin is not None:
            self.pm.unregister(plugin)
        for kind in [k for k, s in self.specs.items() if s.plugin_name == name]:
            del self.specs[kind]
            del self.owners[kind]

    # -- queries -------------------------------------------------------------------------
    def spec(self, kind: str) -> TargetSpec:
        if kind in self.specs:
            return self.specs[kind]
        broken = [e for e in self.errors if kind in e.plugin or f"'{kind}'" in e.error]
        hint = f"; a plugin failed to load: {broken[0].plugin}: {broken[0].error}" if broken else ""
        known = ", ".join(sorted(self.specs)) or "none installed"
        raise PluginError(f"unknown target kind {kind!r} (installed: {known}){hint}")

    def hooks_of(self, plugin_name: str) -> list[str]:
        """Names of the hooks a registered plugin implements."""
        plugin = self.pm.get_plugin(plugin_name)
        if plugin is None:
            return []
        return sorted(h.name for h in (self.pm.get_hookcallers(plugin) or []))

    def kinds(self) -> list[str]:
        return sorted(self.specs)

    # -- calls -----------------------------------------------------------------------------
    def parse(self, source: str, options: Any) -> Any:
        return self.pm.hook.hwmap_parse(source=source, options=options)

    def call(self, hook: str, kind: str, **kwargs: Any) -> Any:
        """Call target hook ``hook`` on the plugin that registered ``kind`` only."""
        owner = self.owners.get(kind)
        if owner is None:
            self.spec(kind)  # raises the informative error
        others = [p for p in self.pm.get_plugins() if p is not owner]
        caller = self.pm.subset_hook_caller(hook, remove_plugins=others)
        result = caller(**kwargs)
        if result is None:
            raise TargetError(f"target kind {kind!r} ({self.specs[kind].plugin_name}) does not implement {hook}")
        return result


def _new_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def _one_line(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip().replace("\n", " ")
    if not str(e):
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            text += f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
    return text


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry, loaded on first use."""
    global _REGISTRY
    if _REGISTRY is None:
        reg = Registry()
        reg.load_builtins()
        if os.environ.get(AUTOLOAD_ENV, "") not in ("1", "true", "yes"):
            reg.load_entry_points()
        _REGISTRY = reg
    return _REGISTRY


def reset_registry() -> None:
    """Forget the loaded registry (tests use this around throw-away plugins)."""
    global _REGISTRY
    _REGISTRY = None
