"""The architecture as a checked contract (README.md, "Architecture").

Three checkers, each also shown catching what it must in a throw-away package tree:

* :func:`lint_imports` runs import-linter's ``lint-imports`` on ``.importlinter``: the graph
  and ops import no frontend, source, registry, target, flow or CLI; the core imports no
  plugin; plugins never import each other, nor a private (``_name``) module of hwmap; no
  import cycle among the modules and subpackages of any package; each layer of the core
  imports only its own layer and those below it.
* :func:`import_cycles` finds every import cycle among single modules with grimp (a package
  and its own modules included, which import-linter's sibling check leaves out).
* :func:`uncovered` says what ``.importlinter`` misses for a plugin package, and
  :func:`repository_plugins` finds every plugin package of the repository from its entry
  points (group ``hwmap.targets``), so a new plugin is under contract from its first commit.

Imports inside functions count; imports under ``if TYPE_CHECKING:`` (annotations only) do not.
"""

from __future__ import annotations

import configparser
import importlib.metadata as md
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch
from pathlib import Path
from typing import Iterable

import grimp
import pytest

from fake_dist import TOY_CPU_EXAMPLE
from hwmap.registry import ENTRY_POINT_GROUP

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / ".importlinter"
CORE = "hwmap"

#: ``lint-imports`` itself (the console script's body), run by the interpreter of the tests.
_LINT_IMPORTS = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"
#: What each plugin package must be listed in: (section of .importlinter, key).
PLUGIN_LISTS = (("importlinter", "root_packages"),
                ("importlinter:contract:core-without-plugins", "forbidden_modules"),
                ("importlinter:contract:plugins-independent", "modules"),
                ("importlinter:contract:acyclic", "ancestors"))


# -- the checkers ------------------------------------------------------------------------------------
def lint_imports(config: Path, *path: Path) -> tuple[bool, str]:
    """Run ``lint-imports`` on ``config`` (no cache) in a fresh interpreter, in the config's
    folder, with ``path`` first on PYTHONPATH: whether every contract was kept, and the report
    (which names each broken contract and the imports that break it)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(p) for p in path] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["COLUMNS"] = "400"  # one line per contract in the report
    p = subprocess.run([sys.executable, "-c", _LINT_IMPORTS, "--no-cache", "--no-logo", str(config)],
                       cwd=config.parent, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode == 0, p.stdout + p.stderr


def contract_results(report: str) -> dict[str, bool]:
    """Each contract's name in a ``lint-imports`` report -> whether it was kept."""
    found = re.findall(r"^(.+) (KEPT|BROKEN)$", report, re.MULTILINE)
    return {name: state == "KEPT" for name, state in found}


def import_cycles(*packages: str) -> list[str]:
    """Every import cycle among the modules of ``packages``, one per set of modules that all
    reach each other, written ``a -> b (l.12) -> ... -> a``; empty when there is none."""
    graph = grimp.build_graph(*packages, exclude_type_checking_imports=True, cache_dir=None)
    found = []
    for scc in _strongly_connected(graph):
        first = min(scc)
        step = min(m for m in graph.find_modules_directly_imported_by(first) if m in scc)
        back = graph.find_shortest_chain(importer=step, imported=first, as_packages=False) or (step, first)
        cycle = (first, *back)
        found.append(" -> ".join([cycle[0]] + [f"{b} (l.{_line(graph, a, b)})" for a, b in zip(cycle, cycle[1:])]))
    return sorted(found)


def _line(graph: grimp.ImportGraph, importer: str, imported: str) -> str:
    details = graph.get_import_details(importer=importer, imported=imported)
    return ",".join(str(d["line_number"]) for d in details) or "?"


def _strongly_connected(graph: grimp.ImportGraph) -> list[set[str]]:
    """The sets of two or more modules that all import each other, directly or not (Tarjan,
    iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.find_modules_directly_imported_by(w)))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                scc = set()
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.add(w)
                    if w == v:
                        break
                if len(scc) > 1:
                    out.append(scc)
    return out


def _top(entry_point_value: str) -> str:
    """``pkg.mod:attr`` -> ``pkg``."""
    return entry_point_value.split(":")[0].split(".")[0].strip()


def repository_plugins() -> dict[str, str]:
    """The top-level package of every target plugin of the repository -> what declares it:
    each entry point of group ``hwmap.targets`` in a ``pyproject.toml`` under ``plugins/`` or
    ``examples/``, and each installed one whose package lives in the repository."""
    found: dict[str, str] = {}
    for pyproject in sorted([*REPO.glob("plugins/*/pyproject.toml"), *REPO.glob("examples/*/pyproject.toml")]):
        project = tomllib.loads(pyproject.read_text()).get("project", {})
        for value in project.get("entry-points", {}).get(ENTRY_POINT_GROUP, {}).values():
            found.setdefault(_top(value), str(pyproject.relative_to(REPO)))
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        spec = importlib.util.find_spec(_top(ep.value))
        if spec is not None and spec.origin and Path(spec.origin).resolve().is_relative_to(REPO):
            found.setdefault(_top(ep.value), f"the installed entry point {ep.name} = {ep.value}")
    found.pop(CORE, None)
    return found


def uncovered(plugins: Iterable[str], config: Path) -> list[str]:
    """What ``config`` misses for each plugin package: it must be a root package, forbidden
    to the core, one of the independent plugins and an ancestor checked for cycles."""
    ini = configparser.ConfigParser()
    ini.read(config)
    missing = []
    for plugin in sorted(plugins):
        for section, key in PLUGIN_LISTS:
            listed = ini[section][key].split() if ini.has_option(section, key) else []
            if plugin not in listed:
                missing.append(f"{plugin} is not in {key} of [{section}]")
    return missing


# -- the project keeps them --------------------------------------------------------------------------
def test_every_contract_is_kept() -> None:
    ini = configparser.ConfigParser()
    ini.read(CONFIG)
    names = [ini[s]["name"] for s in ini.sections() if s.startswith("importlinter:contract:")]
    kept, report = lint_imports(CONFIG, TOY_CPU_EXAMPLE)
    assert kept, report
    assert contract_results(report) == {name: True for name in names}, report


def test_no_module_imports_itself_back() -> None:
    cycles = import_cycles(CORE, *sorted(repository_plugins()))
    assert not cycles, "import cycles (break them by moving code to where it belongs):\n" + "\n".join(cycles)


def test_every_plugin_of_the_repository_is_under_contract() -> None:
    plugins = repository_plugins()
    assert {"hwmap_analog_imc", "hwmap_toy_cpu"} <= plugins.keys()
    assert uncovered(plugins, CONFIG) == [], f"add each plugin package to {CONFIG.name}: {plugins}"


def test_the_readme_shows_the_layers_the_contract_checks() -> None:
    section = (REPO / "README.md").read_text().split("\n## Architecture\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.split("|")[2] for line in section.splitlines() if line.startswith("| ") and "`core/hwmap`" not in line]
    shown = [re.findall(r"`([\w*]+)`", row) for row in rows]
    ini = configparser.ConfigParser()
    ini.read(CONFIG)
    layers = [re.findall(r"\w+", line) for line in ini["importlinter:contract:layers"]["layers"].strip().splitlines()]
    assert len(shown) == len(layers)
    for names, tails in zip(shown, layers):
        assert {n for n in names for t in tails if fnmatch(t, n)} == set(names), (names, tails)
        assert {t for t in tails for n in names if fnmatch(t, n)} == set(tails), (names, tails)


def test_the_command_line_parser_names_only_commands_the_cli_runs() -> None:
    """cli_parser describes the syntax and never imports cli; cli runs COMMANDS[name]."""
    import argparse

    from hwmap.cli import COMMANDS
    from hwmap.cli_parser import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == set(COMMANDS)


# -- the checkers catch what they must ----------------------------------------------------------------
def _mirror(tmp: Path) -> tuple[Path, dict[str, str]]:
    """``.importlinter`` with its root packages renamed (``fakecore``, ``fakeplugin0``, ...)
    into ``tmp``, beside a package tree holding every module it names (each a package with
    an empty ``__init__.py``): the real contracts over a tree that keeps them."""
    ini = configparser.ConfigParser()
    ini.read(CONFIG)
    roots = ini["importlinter"]["root_packages"].split()
    names = {CORE: "fakecore", **{r: f"fakeplugin{i}" for i, r in enumerate(r for r in roots if r != CORE)}}
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b")
    text = pattern.sub(lambda m: names[m.group(1)], CONFIG.read_text())
    modules = set(re.findall(r"^\s+(fake\w+(?:\.\w+)*)\s*$", text, re.MULTILINE)) | set(names.values())
    mirrored = configparser.ConfigParser()
    mirrored.read_string(text)
    for section in mirrored.sections():
        if mirrored[section].get("type") == "layers":  # layers name modules by their tail in each container
            tails = re.findall(r"[\w.]+", mirrored[section]["layers"])
            modules |= {f"{c}.{t}" for c in mirrored[section]["containers"].split() for t in tails}
    for module in modules:
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            init = tmp.joinpath(*parts[:i], "__init__.py")
            init.parent.mkdir(parents=True, exist_ok=True)
            init.touch()
    config = tmp / ".importlinter"
    config.write_text(text)
    return config, names


def test_the_checkers_catch_broken_contracts_and_cycles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config, names = _mirror(tmp_path)
    core, plugin, other = names[CORE], names["hwmap_analog_imc"], names["hwmap_toy_cpu"]
    kept, report = lint_imports(config, tmp_path)
    assert kept, report  # the tree as written keeps every contract
    monkeypatch.syspath_prepend(str(tmp_path))
    assert import_cycles(core, plugin, other) == []

    def write(module: str, code: str, *, package: bool = True) -> None:
        path = tmp_path.joinpath(*module.split("."), "__init__.py") if package else \
            tmp_path.joinpath(*module.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(code)

    write(f"{core}.graph", f"import {core}.cli\n")  # the graph layer reaches the CLI
    write(f"{core}.registry", f"import {plugin}\n")  # the core imports a plugin
    write(f"{core}.ops._window", "", package=False)
    write(plugin, f"import {other}\nfrom {core}.ops._window import *\n")  # a sibling plugin, a private module
    write(f"{core}.source", f"def load():\n    from {core}.frontends import parse\n")  # a lazy import ...
    write(f"{core}.frontends", f"from {core}.source import load\nparse = None\n")  # ... closing a cycle
    write(other, "from . import codec\nRECORD = 1\n")  # a package and its own module import each other
    write(f"{other}.codec", f"from {other} import RECORD\n", package=False)

    kept, report = lint_imports(config, tmp_path)
    assert not kept
    results = contract_results(report)
    assert len(results) == 6 and not any(results.values()), report  # each contract is broken
    assert f"{core}.graph -> {core}.cli" in report
    assert f"{plugin} -> {core}.ops._window" in report

    cycles = import_cycles(core, plugin, other)
    assert len(cycles) == 2, cycles
    assert f"{core}.frontends -> {core}.source (l.1) -> {core}.frontends (l.2)" in cycles
    assert f"{other} -> {other}.codec (l.1) -> {other} (l.1)" in cycles


def test_uncovered_names_what_a_new_plugin_lacks() -> None:
    assert uncovered(["hwmap_new_target"], CONFIG) == [f"hwmap_new_target is not in {key} of [{section}]"
                                                       for section, key in PLUGIN_LISTS]
