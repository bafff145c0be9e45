"""Shared fixtures: a clean target registry, throw-away plugins, fake installed distributions.

``registry`` gives a fresh process-wide registry with entry-point autoloading switched off
(``HWMAP_DISABLE_PLUGIN_AUTOLOAD=1``), so a test sees only the core's frontends and the
plugins it adds itself with ``registry.add_plugin(module_or_object, name=...)``; the
registry is forgotten again afterwards. ``toy_registry`` is the same with the ``toy_cpu``
target of the example package (examples/toy_cpu, imported from its source folder, never
installed) added. ``make_dist`` writes a fake installed
distribution (``NAME-VERSION.dist-info`` with ``METADATA`` and ``entry_points.txt``) so
autoloading can be tested exactly as ``pip install`` would set it up.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Iterator

import pytest

from hwmap import registry as _registry

#: tests/core holds the test helpers (``fake_dist``, ``toy_variants``); examples/toy_cpu the
#: example target package ``hwmap_toy_cpu``. Make both importable everywhere (pytest's
#: rootdir-relative import puts tests/core on sys.path only for tests/core's own modules).
TESTS_CORE = Path(__file__).resolve().parent / "core"
if str(TESTS_CORE) not in sys.path:
    sys.path.insert(0, str(TESTS_CORE))

from fake_dist import TOY_CPU_EXAMPLE, TOY_DISTRIBUTION, installed_example  # noqa: E402

if str(TOY_CPU_EXAMPLE) not in sys.path:
    sys.path.insert(0, str(TOY_CPU_EXAMPLE))


def pytest_configure(config: pytest.Config) -> None:
    """Refuse to run beside an installed copy of the example target: it would register
    ``toy_cpu`` a second time wherever the tests install their own."""
    where = installed_example()
    if where is not None:
        raise pytest.UsageError(
            f"{TOY_DISTRIBUTION} is installed ({where}); hwmap's tests register the example target "
            f"themselves. Run `pip uninstall {TOY_DISTRIBUTION}` and delete "
            f"{TOY_CPU_EXAMPLE / 'hwmap_toy_cpu.egg-info'} if it exists.")


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
    """The fresh registry with the example's ``toy_cpu`` target registered in-process."""
    from hwmap_toy_cpu import plugin

    name = registry.add_plugin(plugin, name="toy_target", package="toy-target", version="0.1")
    assert name == "toy_target", registry.errors
    return registry


@pytest.fixture
def make_dist() -> Callable[..., Path]:
    """``make_dist(root, name, {entry_point: "module[:attr]"}, version="0.1")``."""
    from fake_dist import write_dist

    return write_dist
