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
  through :class:`~hwmap.target.Artifacts` (``open``, ``read_bytes``, ``read_json``,
  ``load_npz``), which opens a listed name only, and only as a relative path of plain
  components below ``artifacts/`` (no absolute path, no ``..``); what it refuses is a
  :class:`~hwmap.errors.TargetError` (exit code 2 too) naming the artifact.
* **Sizes.** Every file's size is checked before it is read: a JSON file may take
  :data:`JSON_EXPANSION` times its size in memory once parsed, and that must be within
  :func:`hwmap.limits.max_memory`; JSON may nest at most :data:`MAX_JSON_DEPTH` levels;
  ``params.npz`` is read by :func:`hwmap.safeio.load_npz` (array sizes checked from their
  headers); an artifact is read whole only within the bound (or the smaller one its plugin
  asks for).
* **Schemas.** ``artifacts.json`` and ``target.json`` are checked against their schemas
  here, the graph by :meth:`hwmap.graph.Graph.load`, the config by the target's own config
  model.
* **Provenance.** ``artifacts.json`` records the SHA-256 of the graph the artifacts were
  compiled from (:meth:`~hwmap.graph.Graph.digest` of the parsed graph, ``graph/``) and of
  the effective hardware config (:func:`config_digest`, as ``kpis.json`` records it); both
  must match what the directory holds, so artifacts swapped in from another model or
  another config are refused instead of simulated as if they belonged.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Callable, Optional, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import DataError, HwmapError, PluginError, TargetError
from .graph import Graph
from .jsonio import dumps
from .limits import check_size
from .safeio import open_regular
from .target import Artifacts, Target

__all__ = [
    "CompileDir", "open_compile_dir", "load_target", "read_manifest", "read_json", "member", "name_problem",
    "config_digest", "stamp", "MANIFEST", "REQUIRED", "JSON_EXPANSION", "MAX_JSON_DEPTH", "MAX_CONFIG_STRING",
]

#: The artifacts manifest, inside ``artifacts/``.
MANIFEST = "artifacts.json"
#: The files every compile directory holds (relative paths), in the order they are checked.
REQUIRED = ("kpis.json", "target.json", "graph/graph.json", "graph/params.npz", f"artifacts/{MANIFEST}")
#: Bytes of memory one byte of JSON may take once parsed (``[{},{},...]``: a 64-byte dict and
#: an 8-byte list slot per 3 bytes of text): a JSON file may be at most the memory bound
#: divided by this.
JSON_EXPANSION = 32
#: How deep JSON may nest (objects and arrays): hwmap's own files nest a dozen levels.
MAX_JSON_DEPTH = 64
#: The longest string a ``target.json`` value may be (config values are names, enums and
#: paths); a longer one is refused rather than quoted back in a config error.
MAX_CONFIG_STRING = 4096

_SHA256 = r"^[0-9a-f]{64}$"
_Doc = TypeVar("_Doc", bound=BaseModel)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- names and paths ------------------------------------------------------------------------------
def name_problem(name: object) -> str | None:
    """Why ``name`` cannot name an artifact (``None``: it can): it must be a relative path
    of plain components separated by ``/`` (no absolute path, no ``.`` or ``..``, no
    backslash, no control character) and not the manifest itself."""
    if not isinstance(name, str) or not name:
        return "is not a file name"
    if _CONTROL.search(name) or "\\" in name:
        return "holds a control character or a backslash"
    if name.startswith("/") or re.match(r"^[A-Za-z]:", name):
        return "is an absolute path"
    if any(part in ("", ".", "..") for part in name.split("/")):
        return "is not a plain relative path (an empty, '.' or '..' component)"
    if name == MANIFEST:
        return "is the manifest itself"
    return None


def _walk(root: Path, name: str) -> tuple[Path, str | None]:
    """The first component of ``root / name`` that is missing (``"missing"``), a symbolic
    link (``"link"``) or unreadable (its error), with that problem; ``(root / name, None)``
    when every component is there and none is a link."""
    cur = Path(root)
    for part in name.split("/"):
        cur = cur / part
        try:
            st = os.lstat(cur)
        except FileNotFoundError:
            return cur, "missing"
        except OSError as e:
            return cur, str(e.strerror or e)
        if stat.S_ISLNK(st.st_mode):
            return cur, "link"
    return cur, None


def member(root: Path, name: str, *, what: str, error: Callable[..., HwmapError] = DataError,
           missing_ok: bool = False) -> Path:
    """``root / name`` after checking that no component of ``name`` is a symbolic link (the
    last one included), so the path stays inside ``root``. A missing component is an
    ``error`` naming it unless ``missing_ok``."""
    at, problem = _walk(root, name)
    if problem == "missing":
        if missing_ok:
            return Path(root) / name
        raise error(f"no such {what}", where=str(at))
    if problem == "link":
        raise error(f"{what} is a symbolic link; refused (hwmap reads regular files and folders only)", where=str(at))
    if problem:
        raise error(f"cannot read {what}: {problem}", where=str(at))
    return at


def open_member(root: Path, name: str, *, what: str, error: Callable[..., HwmapError] = DataError,
                limit: int | None = None) -> IO[bytes]:
    """The regular file ``root / name`` opened for reading (see :func:`member`), its size
    checked against ``limit`` (default: the memory bound)."""
    return open_regular(member(root, name, what=what, error=error), what=what, error=error, follow_symlinks=False,
                        limit=limit)


# -- JSON --------------------------------------------------------------------------------------------
def read_json(path: Path, *, what: str, error: Callable[..., HwmapError] = DataError,
              max_bytes: int | None = None) -> Any:
    """The JSON document in the regular file ``path`` (not a symbolic link). It must be
    UTF-8, at most ``max_bytes`` long when given, take at most the memory bound once parsed
    (:data:`JSON_EXPANSION` bytes per byte) and nest at most :data:`MAX_JSON_DEPTH` levels."""
    path = Path(path)
    where = str(path)
    with open_regular(path, what=what, error=error, follow_symlinks=False) as f:
        size = os.fstat(f.fileno()).st_size
        if max_bytes is not None and size > max_bytes:
            raise error(f"{what} is {size:,} bytes, more than the {max_bytes:,} it may have", where=where)
        check_size(size * JSON_EXPANSION, f"{what} ({size:,} bytes of JSON, parsed)", where=where, error=error)
        raw = _read_all(f, what=what, where=where, error=error)
    return parse_json(raw, what=what, where=where, error=error)


def _read_all(f: IO[bytes], *, what: str, where: str, error: Callable[..., HwmapError] = DataError) -> bytes:
    """The rest of the regular file ``f``, no more than its size (already checked) said."""
    size = os.fstat(f.fileno()).st_size
    raw = f.read(size + 1)
    if len(raw) > size:
        raise error(f"{what} grew while it was read", where=where)
    return raw


def parse_json(raw: bytes, *, what: str, where: str, error: Callable[..., HwmapError] = DataError) -> Any:
    """``raw`` parsed as UTF-8 JSON nesting at most :data:`MAX_JSON_DEPTH` levels; errors say
    where in the text, never what the text holds."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(f"{what} is not UTF-8 text (byte {e.start:,})", where=where) from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{what} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}", where=where) from None
    except RecursionError:
        raise error(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", where=where) from None
    depth = json_depth(doc, MAX_JSON_DEPTH + 1)
    if depth > MAX_JSON_DEPTH:
        raise error(f"{what} nests deeper than {MAX_JSON_DEPTH} levels", where=where)
    return doc


def json_depth(doc: Any, stop: int) -> int:
    """How deep ``doc`` nests (a scalar 0, ``[]`` 1), counted up to ``stop`` (iteratively:
    no recursion however deep it is)."""
    deepest = 0
    todo = [(doc, 1)] if isinstance(doc, (dict, list)) else []
    while todo:
        obj, depth = todo.pop()
        deepest = max(deepest, depth)
        if depth >= stop:
            return depth
        children = obj.values() if isinstance(obj, dict) else obj
        todo.extend((c, depth + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


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


def schema_problem(e: ValidationError) -> str:
    """The first problem of a pydantic validation error as ``key.path: message`` (key
    names shortened, values never quoted)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(repr(p)[:40] if isinstance(p, str) and not p.isidentifier() else str(p)[:40]
                   for p in err.get("loc", ()))
    extra = f" ({len(e.errors())} problems)" if len(e.errors()) > 1 else ""
    return f"{loc or '(top level)'}: {err.get('msg', 'invalid')}{extra}"


def _read_doc(path: Path, schema: type[_Doc], what: str) -> _Doc:
    """The JSON file ``path`` (:func:`read_json`) validated by ``schema``."""
    doc = read_json(path, what=what)
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        raise DataError(f"{what} does not match its schema: {schema_problem(e)}", where=str(path)) from None


# -- artifacts.json -----------------------------------------------------------------------------------
class _ManifestDoc(BaseModel):
    """``artifacts/artifacts.json``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    files: list[str]
    manifest: dict[str, Any] = Field(default_factory=dict)
    graph_sha256: Optional[str] = Field(default=None, pattern=_SHA256)
    config_sha256: Optional[str] = Field(default=None, pattern=_SHA256)


def read_manifest(directory: Path) -> Artifacts:
    """The :class:`~hwmap.target.Artifacts` an ``artifacts.json`` in ``directory`` lists,
    checked against its schema; every listed name must be a plain relative path
    (:func:`name_problem`), listed once."""
    directory = Path(directory)
    path = member(directory, MANIFEST, what="artifacts manifest")
    where = str(path)
    m = _read_doc(path, _ManifestDoc, "artifacts manifest")
    seen: set[str] = set()
    for i, name in enumerate(m.files):
        problem = name_problem(name)
        if problem:
            raise DataError(f"files[{i}] {name[:80]!r} {problem}; an artifact must be a file inside the artifacts "
                            "directory; refused", where=where)
        if name in seen:
            raise DataError(f"files[{i}] {name[:80]!r} is listed twice", where=where)
        seen.add(name)
    return Artifacts(directory, list(m.files), m.manifest, m.graph_sha256, m.config_sha256)


def artifact_path(artifacts: Artifacts, name: str) -> Path:
    """The path of artifact ``name``: a listed, plain relative name (see :func:`name_problem`)
    without a symbolic link below ``artifacts.directory`` (it need not exist yet). Errors
    about artifacts are :class:`~hwmap.errors.TargetError` s (the target's own files)."""
    manifest = str(Path(artifacts.directory) / MANIFEST)
    problem = name_problem(name)
    if problem:
        raise TargetError(f"artifact {str(name)[:80]!r} {problem}; refused", where=manifest)
    if name not in artifacts.files:
        raise TargetError(f"artifact {name[:80]!r} is not listed in {MANIFEST}; refused", where=manifest)
    return member(Path(artifacts.directory), name, what="artifact", error=TargetError, missing_ok=True)


def open_artifact(artifacts: Artifacts, name: str, max_bytes: int | None = None) -> IO[bytes]:
    """Artifact ``name`` opened for reading: listed, a regular file inside the directory
    (:func:`artifact_path`), at most ``max_bytes`` long when given and within the memory
    bound."""
    artifact_path(artifacts, name)
    f = open_member(Path(artifacts.directory), name, what="artifact", error=TargetError)
    size = os.fstat(f.fileno()).st_size
    if max_bytes is not None and size > max_bytes:
        f.close()
        raise TargetError(f"artifact is {size:,} bytes, more than the {max_bytes:,} its target reads",
                          where=str(Path(artifacts.directory) / name))
    return f


def read_artifact(artifacts: Artifacts, name: str, max_bytes: int | None = None) -> bytes:
    """The bytes of artifact ``name`` (see :func:`open_artifact`)."""
    with open_artifact(artifacts, name, max_bytes) as f:
        return _read_all(f, what="artifact", where=str(Path(artifacts.directory) / name), error=TargetError)


def config_digest(target: Target) -> str:
    """SHA-256 of a target's effective config (kind, name and every value, as
    ``kpis.json`` ``provenance.sha256.config`` records it)."""
    return hashlib.sha256(dumps(target.config_dict()).encode()).hexdigest()


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
    t = _read_doc(path, _TargetDoc, "target file")
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
    at, problem = _walk(outdir, rel)
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
