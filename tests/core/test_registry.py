"""The target registry: routing by kind, plugins that fail to load, duplicate kinds, autoload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from hwmap import Graph, Legalized, Mapping, Node, PluginError, TargetConfig, TargetError, Tensor, hookimpl
from hwmap import registry as reg_mod
from hwmap.config import load_target
from fake_dist import TOY_ENTRY_POINT


class CountingConfig(TargetConfig):
    lanes: int = Field(1, ge=1)


class CountingPlugin:
    """A throw-away target that counts every hook call it receives."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[str] = []

    @hookimpl
    def hwmap_register_targets(self, register: Any) -> None:
        register(kind=self.kind, config=CountingConfig, description=f"counting target {self.kind}")

    @hookimpl
    def hwmap_legalize(self, graph: Graph, target: Any) -> Legalized:
        self.calls.append("legalize")
        return Legalized(graph.copy())

    @hookimpl
    def hwmap_map(self, graph: Graph, target: Any) -> Mapping:
        self.calls.append("map")
        m = Mapping(graph)
        m.owner = self.kind  # type: ignore[attr-defined]
        return m


def _graph() -> Graph:
    return Graph("g", ["x"], ["y"], [Node("relu", "Relu", ["x"], ["y"])],
                 {"x": Tensor("x", (1, 4)), "y": Tensor("y", (1, 4))})


def _target(registry: reg_mod.Registry, kind: str) -> Any:
    from hwmap import Target

    spec = registry.spec(kind)
    return Target(spec=spec, config=spec.config_model(), name=kind, source="test")


def test_a_call_for_one_kind_never_reaches_another_plugin(registry: reg_mod.Registry) -> None:
    a, b = CountingPlugin("kind_a"), CountingPlugin("kind_b")
    assert registry.add_plugin(a, name="plugin_a") == "plugin_a"
    assert registry.add_plugin(b, name="plugin_b") == "plugin_b"
    g = _graph()
    for _ in range(3):
        m = registry.call("hwmap_map", "kind_a", graph=g, target=_target(registry, "kind_a"))
        assert m.owner == "kind_a"
    registry.call("hwmap_legalize", "kind_b", graph=g, target=_target(registry, "kind_b"))
    assert a.calls == ["map", "map", "map"]
    assert b.calls == ["legalize"]
    assert registry.kinds() == ["kind_a", "kind_b"]
    assert registry.spec("kind_b").plugin_name == "plugin_b"
    assert registry.hooks_of("plugin_a") == ["hwmap_legalize", "hwmap_map", "hwmap_register_targets"]


def test_a_hook_the_owner_does_not_implement_is_a_target_error(registry: reg_mod.Registry) -> None:
    # plugin_b implements hwmap_emit; the owner of kind_a does not: kind_a must not borrow it
    class EmitOnly(CountingPlugin):
        @hookimpl
        def hwmap_emit(self, mapping: Any, target: Any, outdir: Path) -> Any:
            self.calls.append("emit")
            return "emitted by b"

    a, b = CountingPlugin("kind_a"), EmitOnly("kind_b")
    registry.add_plugin(a, name="plugin_a")
    registry.add_plugin(b, name="plugin_b")
    with pytest.raises(TargetError, match=r"'kind_a' \(plugin_a\) does not implement hwmap_emit"):
        registry.call("hwmap_emit", "kind_a", mapping=None, target=None, outdir=Path("."))
    assert b.calls == []
    assert registry.call("hwmap_emit", "kind_b", mapping=None, target=None, outdir=Path(".")) == "emitted by b"


def test_unknown_kind_names_the_installed_kinds(toy_registry: reg_mod.Registry) -> None:
    with pytest.raises(PluginError, match=r"unknown target kind 'nope' \(installed: toy_cpu\)"):
        toy_registry.spec("nope")
    with pytest.raises(PluginError, match="installed: toy_cpu"):
        toy_registry.call("hwmap_map", "nope", graph=_graph(), target=None)
    with pytest.raises(PluginError, match="unknown target kind 'nope'"):
        load_target("nope:default")


def test_unknown_kind_with_nothing_installed(registry: reg_mod.Registry) -> None:
    with pytest.raises(PluginError, match="none installed"):
        registry.spec("toy_cpu")


def test_register_targets_raising_is_a_load_error_and_harms_no_one(toy_registry: reg_mod.Registry) -> None:
    class Exploding:
        @hookimpl
        def hwmap_register_targets(self, register: Any) -> None:
            register(kind="half_done", config=CountingConfig, description="registered before the crash")
            raise RuntimeError("cannot find my presets")

        @hookimpl
        def hwmap_map(self, graph: Graph, target: Any) -> Mapping:
            raise AssertionError("an unloaded plugin must never be called")

    assert toy_registry.add_plugin(Exploding(), name="exploding") is None
    err = [e for e in toy_registry.errors if e.plugin == "exploding"]
    assert len(err) == 1
    assert "hwmap_register_targets failed: RuntimeError: cannot find my presets" in err[0].error
    assert "half_done" not in toy_registry.kinds()  # nothing of it stays registered
    assert toy_registry.pm.get_plugin("exploding") is None
    target = load_target("toy_cpu:default")
    mapping = toy_registry.call("hwmap_map", "toy_cpu", graph=_graph(), target=target)
    assert [x.name for x in mapping.layers] == ["relu"]


def test_same_plugin_twice_is_refused(toy_registry: reg_mod.Registry) -> None:
    from hwmap_toy_cpu import plugin

    assert toy_registry.add_plugin(plugin, name="toy_again") is None
    assert any(e.plugin == "toy_again" and "registration refused" in e.error for e in toy_registry.errors)
    assert toy_registry.spec("toy_cpu").plugin_name == "toy_target"


def test_duplicate_kind_in_process_names_both_plugins(toy_registry: reg_mod.Registry) -> None:
    twin = CountingPlugin("toy_cpu")
    assert toy_registry.add_plugin(twin, name="twin") == "twin"
    err = [e for e in toy_registry.errors if e.plugin == "twin"]
    assert err and "'toy_cpu'" in err[0].error and "'toy_target'" in err[0].error
    # the first registration keeps the kind, and calls go to it only
    toy_registry.call("hwmap_map", "toy_cpu", graph=_graph(), target=load_target("toy_cpu:default"))
    assert twin.calls == []


def test_remove_plugin_forgets_its_kinds(registry: reg_mod.Registry) -> None:
    registry.add_plugin(CountingPlugin("kind_a"), name="plugin_a")
    registry.remove_plugin("plugin_a")
    assert registry.kinds() == []
    assert registry.pm.get_plugin("plugin_a") is None


# -- autoloading through entry points (fake installed distributions) -----------------------------
def _autoload(monkeypatch: pytest.MonkeyPatch, root: Path) -> reg_mod.Registry:
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.delenv(reg_mod.AUTOLOAD_ENV, raising=False)
    reg_mod.reset_registry()
    return reg_mod.get_registry()


def test_entry_point_autoload_finds_an_installed_target(registry: reg_mod.Registry, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, make_dist: Any) -> None:
    make_dist(tmp_path, "toy-target", TOY_ENTRY_POINT, version="0.1")
    reg = _autoload(monkeypatch, tmp_path)
    spec = reg.spec("toy_cpu")
    assert (spec.plugin_name, spec.package, spec.version) == ("toy_cpu", "toy-target", "0.1")
    assert sorted(spec.presets) == ["default", "small"]
    assert load_target("toy_cpu:small").config.hardware.sram_bytes == 1024


def test_autoload_can_be_disabled(registry: reg_mod.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  make_dist: Any) -> None:
    make_dist(tmp_path, "toy-target", TOY_ENTRY_POINT)
    monkeypatch.syspath_prepend(str(tmp_path))
    for value in ("1", "true", "yes"):
        monkeypatch.setenv(reg_mod.AUTOLOAD_ENV, value)
        reg_mod.reset_registry()
        assert "toy_cpu" not in reg_mod.get_registry().kinds()
    monkeypatch.setenv(reg_mod.AUTOLOAD_ENV, "0")
    reg_mod.reset_registry()
    assert "toy_cpu" in reg_mod.get_registry().kinds()


def test_a_broken_import_is_reported_and_the_healthy_plugin_works(
        registry: reg_mod.Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_dist: Any) -> None:
    (tmp_path / "hwmap_broken_target.py").write_text(
        "raise ImportError('needs the vendor SDK libfoo.so, which is not installed')\n")
    make_dist(tmp_path, "broken-target", {"broken": "hwmap_broken_target"})
    make_dist(tmp_path, "toy-target", TOY_ENTRY_POINT)
    reg = _autoload(monkeypatch, tmp_path)
    errs = [e for e in reg.errors if e.plugin.startswith("broken")]
    assert len(errs) == 1
    assert errs[0].plugin == "broken (hwmap_broken_target)"
    assert errs[0].error == "import failed: ImportError: needs the vendor SDK libfoo.so, which is not installed"
    assert "toy_cpu" in reg.kinds()  # beside whatever real targets are installed
    # asking for the broken plugin's kind points at the load error
    with pytest.raises(PluginError, match="a plugin failed to load: broken"):
        reg.spec("broken")
    target = load_target("toy_cpu:default")
    assert reg.call("hwmap_map", "toy_cpu", graph=_graph(), target=target).total_macs == 0


def test_two_distributions_registering_one_kind(registry: reg_mod.Registry, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch, make_dist: Any) -> None:
    (tmp_path / "hwmap_toy_twin.py").write_text(
        "from hwmap import hookimpl\n"
        "from hwmap_toy_cpu.hardware import ToyConfig\n\n"
        "@hookimpl\n"
        "def hwmap_register_targets(register):\n"
        "    register(kind='toy_cpu', config=ToyConfig, description='an impostor')\n")
    make_dist(tmp_path, "toy-target", TOY_ENTRY_POINT)
    make_dist(tmp_path, "toy-twin", {"toy_twin": "hwmap_toy_twin"}, version="9.9")
    reg = _autoload(monkeypatch, tmp_path)
    errs = [e for e in reg.errors if e.plugin == "toy_twin"]
    assert len(errs) == 1
    assert errs[0].error == "kind 'toy_cpu' is already registered by plugin 'toy_cpu'; refused"
    assert reg.spec("toy_cpu").package == "toy-target"
    assert reg.spec("toy_cpu").description.startswith("throw-away test CPU")


def test_a_plugin_that_is_not_a_plugin_is_reported(registry: reg_mod.Registry, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch, make_dist: Any) -> None:
    # an entry point naming an attribute that does not exist
    make_dist(tmp_path, "typo-target", {"typo": "hwmap_toy_cpu.plugin:no_such_attribute"})
    make_dist(tmp_path, "toy-target", TOY_ENTRY_POINT)
    reg = _autoload(monkeypatch, tmp_path)
    errs = [e for e in reg.errors if e.plugin.startswith("typo")]
    assert len(errs) == 1 and errs[0].error.startswith("import failed: AttributeError")
    assert "toy_cpu" in reg.kinds()  # beside whatever real targets are installed


def test_builtin_frontends_are_registered_without_autoload(registry: reg_mod.Registry) -> None:
    names = {registry.pm.get_name(p) for p in registry.pm.get_plugins()}
    assert registry.errors == []
    assert set(reg_mod.BUILTIN_PLUGINS) <= names
    assert registry.kinds() == []


def test_config_as_and_presets_in(toy_registry: Any) -> None:
    from hwmap import TargetError, presets_in
    from hwmap_toy_cpu.hardware import ToyConfig

    presets = presets_in("hwmap_toy_cpu")
    assert sorted(presets) == ["default", "small"] and all(p.suffix == ".toml" for p in presets.values())
    target = load_target("toy_cpu:default")
    assert target.config_as(ToyConfig) is target.config
    with pytest.raises(TargetError, match="holds a ToyConfig config, not a Hardware"):
        from hwmap_toy_cpu.hardware import Hardware

        target.config_as(Hardware)
    from hwmap import ConfigError

    with pytest.raises(ConfigError, match="no preset folder 'presets' in package 'json'"):
        presets_in("json")
