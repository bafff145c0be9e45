"""Shared fixtures: a clean target registry, throw-away plugins, fake installed distributions.

``registry`` gives a fresh process-wide registry with entry-point autoloading switched off
(``HWMAP_DISABLE_PLUGIN_AUTOLOAD=1``), so a test sees only the core's frontends and the
plugins it adds itself with ``registry.add_plugin(module_or_object, name=...)``; the
registry is forgotten again afterwards. ``toy_registry`` is the same with the tests' own
``toy_cpu`` target (tests/core/toy_target) added. ``make_dist`` writes a fake installed
distribution (``NAME-VERSION.dist-info`` with ``METADATA`` and ``entry_points.txt``) so
autoloading can be tested exactly as ``pip install`` would set it up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from hwmap import registry as _registry

#: tests/core holds the throw-away ``toy_target`` package; make it importable everywhere
#: (pytest's rootdir-relative import puts it on sys.path only for tests/core's own modules).
TESTS_CORE = Path(__file__).resolve().parent / "core"
if str(TESTS_CORE) not in sys.path:
    sys.path.insert(0, str(TESTS_CORE))


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> Iterator[_registry.Registry]:
    """A fresh registry without autoloaded plugins; add throw-away plugins to it in-process."""
    monkeypatch.setenv(_registry.AUTOLOAD_ENV, "1")
    _registry.reset_registry()
    try:
        yield _registry.get_registry()
    finally:
        _registry.reset_registry()


@pytest.fixture
def toy_registry(registry: _registry.Registry) -> _registry.Registry:
    """The fresh registry with the ``toy_cpu`` test target registered in-process."""
    from toy_target import plugin

    name = registry.add_plugin(plugin, name="toy_target", package="toy-target", version="0.1")
    assert name == "toy_target", registry.errors
    return registry


@pytest.fixture
def make_dist() -> Callable[..., Path]:
    """``make_dist(root, name, {entry_point: "module[:attr]"}, version="0.1")``."""
    from toy_target.install import write_dist

    return write_dist
