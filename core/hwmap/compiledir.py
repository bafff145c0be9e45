"""Reading a compile directory back, every file checked before anything in it is trusted.

``hwmap compile MODEL --target CONFIG -o DIR`` writes a compile directory; ``hwmap simulate
DIR`` reads it back. Users download and share these directories, so they are input like any
model file: :func:`open_compile_dir` reads one only as follows, and refuses anything else with
an hwmap error of exit code 2 whose one-line message names the file and never quotes its
bytes: a :class:`~hwmap.errors.DataError` for the directory's own files, a
:class:`~hwmap.errors.GraphError` for the graph, a :class:`~hwmap.errors.PluginError` for a
target kind that is not installed, a :class:`~hwmap.errors.TargetError` for an artifact.

* **Layout.** ``kpis.json`` (what marks an hwmap output directory), ``target.json``,
  ``graph/graph.json`` with ``graph/params.npz``, and ``artifacts/artifacts.json`` must be
  there. Every file hwmap opens inside the directory is a regular file reached without a
  symbolic link (neither the file nor a folder on the way may be one): no device, FIFO or
  directory is opened, and nothing outside the directory is.
* **Artifacts.** ``artifacts.json`` lists the files ``emit`` wrote; a plugin opens them only
  through :class:`~hwmap.artifacts.Artifacts` (``open``, ``read_bytes``, ``read_json``,
  ``load_npz``), which opens a listed name only, and only as a relative path of plain
  components below ``artifacts/`` (no absolute path, no ``..``); what it refuses is a
  :class:`~hwmap.errors.TargetError` (exit code 2 too) naming the artifact.
* **Sizes.** Every file's size is checked before it is read: a JSON file may take
  :data:`~hwmap.safeio.JSON_EXPANSION` times its size in memory once parsed, and that must be
  within :func:`hwmap.limits.max_memory`; JSON may nest at most
  :data:`~hwmap.safeio.MAX_JSON_DEPTH` levels (:func:`hwmap.safeio.read_json`);
  ``params.npz`` is read by :func:`hwmap.safeio.load_npz` (array sizes checked from their
  headers); an artifact is read whole only within the bound (or the smaller one its plugin
  asks for).
* **Schemas.** ``artifacts.json`` and ``target.json`` are checked against their schemas
  here, the graph by :meth:`hwmap.graph.Graph.load`, the config by the target's own config
  model.
* **Provenance.** ``artifacts.json`` records the SHA-256 of the graph the artifacts were
  compiled from (:meth:`~hwmap.graph.Graph.digest` of the parsed graph, ``graph/``) and of
  the effective hardware config (:func:`~hwmap.artifacts.config_digest`, as ``kpis.json``
  records it); both must match what the directory holds, so artifacts swapped in from
  another model or another config are refused instead of simulated as if they belonged.

The generic readers (a member of a directory, JSON bounded in size and depth, a document
against its schema) are :mod:`hwmap.safeio`'s; the artifacts and their manifest are
:mod:`hwmap.artifacts`'; this module checks a compile directory as a whole. What ``compile -o`` may
replace is :mod:`hwmap.output_record`'s to say.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .artifacts import MANIFEST, Artifacts, config_digest, name_problem, read_manifest
from .errors import DataError, PluginError
from .graph import Graph
from .safeio import (JSON_EXPANSION, MAX_JSON_DEPTH, member, member_problem, read_doc, read_json,
                     schema_problem)
from .target import Target

__all__ = [
    "CompileDir", "open_compile_dir", "load_target", "read_manifest", "read_json", "member", "name_problem",
    "config_digest", "stamp", "MANIFEST", "REQUIRED", "JSON_EXPANSION", "MAX_JSON_DEPTH", "MAX_CONFIG_STRING",
]

#: The files every compile directory holds (relative paths), in the order they are checked.
REQUIRED = ("kpis.json", "target.json", "graph/graph.json", "graph/params.npz", f"artifacts/{MANIFEST}")
#: The longest string a ``target.json`` value may be (config values are names, enums and
#: paths); a longer one is refused rather than quoted back in a config error.
MAX_CONFIG_STRING = 4096


def _longest_string(doc: Any) -> int:
    """The length of the longest string in ``doc`` (keys included)."""
    longest = 0
    todo = [doc]
    while todo:
        obj = todo.pop()
        if isinstance(obj, str):
            longest = max(longest, len(obj))
        elif isinstance(obj, dict):
            todo.extend(obj.keys())
            todo.extend(obj.values())
        elif isinstance(obj, list):
            todo.extend(obj)
    return longest


# -- target.json ----------------------------------------------------------------------------------------
class _TargetDoc(BaseModel):
    """``target.json``: the target kind, its config's name, where the config came from and
    the effective config (validated by the kind's own config model)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    kind: str = Field(min_length=1, max_length=200)
    name: str = Field(max_length=MAX_CONFIG_STRING)
    source: Optional[str] = Field(default=None, max_length=MAX_CONFIG_STRING)
    config: dict[str, Any]


def load_target(outdir: Path) -> Target:
    """The target a compile directory was built for, from its ``target.json``: the schema,
    the kind (an installed plugin) and the config (the kind's config model) checked."""
    from .registry import get_registry

    outdir = Path(outdir)
    _check_directory(outdir)
    path = _required(outdir, "target.json")
    where = str(path)
    t = read_doc(path, _TargetDoc, "target file")
    longest = _longest_string(t.config)
    if longest > MAX_CONFIG_STRING:
        raise DataError(f"target file holds a config string of {longest:,} characters, more than the "
                        f"{MAX_CONFIG_STRING:,} a config value may have", where=where)
    try:
        spec = get_registry().spec(t.kind)
    except PluginError as e:
        raise PluginError(str(e), where=where) from None
    try:
        config = spec.config_model.model_validate(t.config)
    except ValidationError as e:
        raise DataError(f"config does not match the {t.kind} config schema: {schema_problem(e)}", where=where) from None
    return Target(spec=spec, config=config, name=t.name, source=t.source if t.source is not None else str(outdir))


# -- the directory ----------------------------------------------------------------------------------------
@dataclass
class CompileDir:
    """A compile directory read back and checked: its target, its parsed graph (``graph/``)
    and its artifacts, which belong to both."""

    path: Path
    target: Target
    graph: Graph
    artifacts: Artifacts


def _check_directory(outdir: Path) -> None:
    if not outdir.exists():
        raise DataError("no such compile directory", where=str(outdir))
    if not outdir.is_dir():
        raise DataError("not an hwmap compile directory (not a directory)", where=str(outdir))


def _required(outdir: Path, rel: str) -> Path:
    """``outdir / rel``, a file every compile directory holds: there, and a regular file
    reached without a symbolic link."""
    at, problem = member_problem(outdir, rel)
    if problem == "missing":
        raise DataError(f"not an hwmap compile directory (no {rel})", where=str(outdir))
    if problem == "link":
        raise DataError(f"{at.relative_to(outdir)} is a symbolic link; refused (hwmap reads regular files and folders "
                        "only)", where=str(outdir))
    if problem:
        raise DataError(f"cannot read {rel}: {problem}", where=str(outdir))
    mode = os.lstat(at).st_mode
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise DataError(f"not an hwmap compile directory ({rel} is {kind})", where=str(outdir))
    return at


def _check_layout(outdir: Path) -> None:
    """Every file of :data:`REQUIRED` is there (see :func:`_required`)."""
    _check_directory(outdir)
    for rel in REQUIRED:
        _required(outdir, rel)


def check_provenance(artifacts: Artifacts, graph: Graph, target: Target, outdir: Path) -> None:
    """The artifacts record the digests of ``graph`` and of ``target``'s config; refuse them
    otherwise (a :class:`DataError` naming the mismatch)."""
    where = str(Path(artifacts.directory) / MANIFEST)
    if artifacts.graph_sha256 is None or artifacts.config_sha256 is None:
        raise DataError("records no digest of the graph and config the artifacts were compiled from (written by an "
                        "older hwmap, or edited); compile the model again", where=where)
    got = graph.digest()
    if artifacts.graph_sha256 != got:
        raise DataError(f"the artifacts were compiled from another graph (sha256 {artifacts.graph_sha256[:12]}) "
                        f"than the one in {outdir / 'graph'} (sha256 {got[:12]}); refused", where=where)
    got = config_digest(target)
    if artifacts.config_sha256 != got:
        raise DataError(f"the artifacts were compiled for another hardware config (sha256 "
                        f"{artifacts.config_sha256[:12]}) than the one in {outdir / 'target.json'} "
                        f"(sha256 {got[:12]}); refused", where=where)


def open_compile_dir(outdir: Path) -> CompileDir:
    """A compile directory read and checked (see the module docstring): its layout, its
    ``target.json``, ``artifacts.json`` and graph against their schemas, and the artifacts'
    digests against the graph and config beside them."""
    outdir = Path(outdir)
    _check_layout(outdir)
    artifacts = read_manifest(outdir / "artifacts")
    target = load_target(outdir)
    graph = Graph.load(outdir / "graph")
    check_provenance(artifacts, graph, target, outdir)
    return CompileDir(outdir, target, graph, artifacts)


def stamp(outdir: Path) -> Artifacts:
    """Record in ``outdir``'s ``artifacts.json`` the digests of the graph and config the
    directory holds (as compile does), whatever the artifacts are: for tests that swap or
    edit artifacts and want the simulator, not this check, to judge them."""
    outdir = Path(outdir)
    artifacts = read_manifest(outdir / "artifacts")
    artifacts.write_manifest(graph=Graph.load(outdir / "graph"), target=load_target(outdir))
    return artifacts
