"""Reading files users hand hwmap, with every declared size checked first.

:func:`read_file` reads a regular file only (never a device, a FIFO or a directory), and only
if it is no larger than the bound. :func:`load_npz` reads an ``.npz`` member by member: each
must be an ``.npy`` array of a plain numeric or boolean dtype (no pickles, no objects), and
the arrays' sizes, read from their headers, must fit the bound together before any is
loaded; a zip bomb is refused from its headers, a ``.npy`` renamed ``.npz`` is named as such.

Inside a directory hwmap wrote (a saved graph, a compile directory) :func:`member` and
:func:`open_member` reach a file only without a symbolic link on the way. JSON is read by
:func:`read_json` / :func:`parse_json`: UTF-8, its size bounded (:data:`JSON_EXPANSION`) and
its nesting too (:data:`MAX_JSON_DEPTH`); :func:`read_doc` checks it against a pydantic
schema, and :func:`schema_problem` says what does not match without quoting the input.
"""

from __future__ import annotations

import io
import json
import math
import os
import stat
import zipfile
from pathlib import Path
from typing import IO, Any, Callable, TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from .errors import DataError, HwmapError
from .limits import check_size, max_memory

__all__ = ["read_file", "load_npz", "open_regular", "member", "member_problem", "open_member", "read_all",
           "read_json", "parse_json", "json_depth", "read_doc", "schema_problem", "JSON_EXPANSION",
           "MAX_JSON_DEPTH", "MAX_NPZ_MEMBERS"]

#: Bytes of memory one byte of JSON may take once parsed (``[{},{},...]``: a 64-byte dict and
#: an 8-byte list slot per 3 bytes of text): a JSON file may be at most the memory bound
#: divided by this.
JSON_EXPANSION = 32
#: How deep JSON may nest (objects and arrays): hwmap's own files nest a dozen levels.
MAX_JSON_DEPTH = 64
#: How many entries an ``.npz`` may list. Python's zipfile keeps a ``ZipInfo`` of about 700
#: bytes per entry (measured: a million empty entries, an 86 MB file, took 690 MB), so the
#: count is read from the archive's end record and bounded before it is parsed; hwmap's own
#: archives hold one array per parameter (a few hundred for the largest zoo model).
MAX_NPZ_MEMBERS = 1 << 14

_Doc = TypeVar("_Doc", bound=BaseModel)

_NPY_MAGIC = b"\x93NUMPY"


def open_regular(path: Path, *, what: str = "file", error: Callable[..., HwmapError] = DataError,
                 follow_symlinks: bool = True, limit: int | None = None) -> IO[bytes]:
    """``path`` opened for reading after checking it is a regular file within the bound.
    ``follow_symlinks=False`` refuses a symbolic link (for files inside directories hwmap
    wrote, where none belongs)."""
    where = str(path)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if follow_symlinks else getattr(os, "O_NOFOLLOW", 0))
    try:
        if not follow_symlinks and os.path.islink(path):
            raise error(f"{what} is a symbolic link; refused", where=where)
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise error(f"no such {what}", where=where) from None
    except IsADirectoryError:
        raise error(f"{what} is a directory", where=where) from None
    except OSError as e:
        raise error(f"cannot open {what}: {e.strerror or e}", where=where) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a regular file (a device, FIFO or socket)"
            raise error(f"{what} is {kind}; refused", where=where)
        check_size(st.st_size, f"{what} ({st.st_size:,} bytes)", where=where, error=error, limit=limit)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_file(path: Path, *, what: str = "file", error: Callable[..., HwmapError] = DataError,
              follow_symlinks: bool = True, limit: int | None = None) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`)."""
    with open_regular(path, what=what, error=error, follow_symlinks=follow_symlinks, limit=limit) as f:
        size = os.fstat(f.fileno()).st_size  # checked against the bound; read() preallocates what it is asked
        data = f.read(size + 1)
    if len(data) > size:
        raise error(f"{what} grew while it was read", where=str(path))
    return data


def _npy_header(f: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """The shape, order and dtype an ``.npy`` stream declares (read before its data)."""
    fmt = np.lib.format
    version = fmt.read_magic(f)
    if version == (1, 0):
        return fmt.read_array_header_1_0(f)  # type: ignore[no-any-return]
    if version == (2, 0):
        return fmt.read_array_header_2_0(f)  # type: ignore[no-any-return]
    return fmt._read_array_header(f, version)  # type: ignore[attr-defined,no-any-return]  # 3.0: UTF-8 header


def _check_entries(blob: IO[bytes], where: str, error: Callable[..., HwmapError]) -> None:
    """Refuse a zip archive whose end record lists more than :data:`MAX_NPZ_MEMBERS` entries
    (before :class:`zipfile.ZipFile` builds an object per entry)."""
    try:
        end = zipfile._EndRecData(blob)  # type: ignore[attr-defined]  # (signature, ..., entries, ...)
    except (OSError, ValueError, AttributeError):
        end = None  # not a zip, or a Python without it: ZipFile says which
    finally:
        blob.seek(0)
    entries = 0 if end is None else int(end[zipfile._ECD_ENTRIES_TOTAL])  # type: ignore[attr-defined]
    if entries > MAX_NPZ_MEMBERS:
        raise error(f"the archive lists {entries:,} entries, more than the {MAX_NPZ_MEMBERS:,} an .npz may hold",
                    where=where)


def load_npz(source: Path | bytes | IO[bytes], *, where: str | None = None,
             error: Callable[..., HwmapError] = DataError, limit: int | None = None) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` by key (a path, its bytes, or a binary file object)."""
    where = where or (str(source) if isinstance(source, (str, Path)) else "the .npz")
    bound = max_memory() if limit is None else limit
    if isinstance(source, (str, Path)):
        blob: IO[bytes] = io.BytesIO(read_file(Path(source), what=".npz file", error=error, limit=limit))
    elif isinstance(source, (bytes, bytearray)):
        blob = io.BytesIO(bytes(source))
    else:
        blob = source
    head = blob.read(len(_NPY_MAGIC))
    blob.seek(0)
    if head == _NPY_MAGIC:
        raise error("is a single .npy array, not an .npz archive (save with numpy.savez)", where=where)
    _check_entries(blob, where, error)
    try:
        archive = zipfile.ZipFile(blob)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise error(f"not an .npz (zip) archive: {e}", where=where) from None
    with archive:
        members = archive.infolist()
        headers: list[tuple[str, zipfile.ZipInfo, np.dtype[Any], tuple[int, ...], bool]] = []
        total = 0
        for m in members:
            if m.is_dir():
                continue
            if not m.filename.endswith(".npy"):
                raise error(f"member {m.filename!r} is not an .npy array", where=where)
            check_size(total + m.file_size, f"the arrays of the archive (declared {total + m.file_size:,} bytes)",
                       where=where, error=error, limit=bound)
            try:
                with archive.open(m) as f:
                    shape, fortran, dtype = _npy_header(f)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
                raise error(f"member {m.filename!r}: not a readable .npy header: {e}", where=where) from None
            if dtype.hasobject or dtype.kind not in "biufc":
                raise error(f"array {m.filename[:-4]!r} has dtype {dtype}: only numbers and booleans are read",
                            where=where)
            nbytes = math.prod(shape) * dtype.itemsize
            total += nbytes
            check_size(total, f"array {m.filename[:-4]!r} {list(shape)} {dtype}", where=where, error=error,
                       limit=bound)
            headers.append((m.filename[:-4], m, dtype, shape, fortran))
        out: dict[str, np.ndarray] = {}
        for key, m, dtype, shape, fortran in headers:
            try:
                with archive.open(m) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
            except (ValueError, OSError, zipfile.BadZipFile, EOFError, RuntimeError) as e:
                raise error(f"array {key!r}: cannot read: {e}", where=where) from None
            if out[key].shape != shape or out[key].dtype != dtype:
                raise error(f"array {key!r} does not match its header", where=where)
    return out


# -- files inside a directory hwmap wrote --------------------------------------------------------
def member_problem(root: Path, name: str) -> tuple[Path, str | None]:
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
    at, problem = member_problem(root, name)
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


def read_all(f: IO[bytes], *, what: str, where: str, error: Callable[..., HwmapError] = DataError) -> bytes:
    """The rest of the regular file ``f``, no more than its size (already checked) said."""
    size = os.fstat(f.fileno()).st_size
    raw = f.read(size + 1)
    if len(raw) > size:
        raise error(f"{what} grew while it was read", where=where)
    return raw


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
        raw = read_all(f, what=what, where=where, error=error)
    return parse_json(raw, what=what, where=where, error=error)


def parse_json(raw: bytes, *, what: str, where: str, error: Callable[..., HwmapError] = DataError) -> Any:
    """``raw`` parsed as UTF-8 JSON nesting at most :data:`MAX_JSON_DEPTH` levels and taking
    at most the memory bound once parsed (:data:`JSON_EXPANSION`); errors say where in the
    text, never what the text holds."""
    check_size(len(raw) * JSON_EXPANSION, f"{what} ({len(raw):,} bytes of JSON, parsed)", where=where, error=error)
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


def schema_problem(e: ValidationError) -> str:
    """The first problem of a pydantic validation error as ``key.path: message`` (key
    names shortened, values never quoted)."""
    err = e.errors(include_url=False, include_input=False)[0]
    loc = ".".join(repr(p)[:40] if isinstance(p, str) and not p.isidentifier() else str(p)[:40]
                   for p in err.get("loc", ()))
    extra = f" ({len(e.errors())} problems)" if len(e.errors()) > 1 else ""
    return f"{loc or '(top level)'}: {err.get('msg', 'invalid')}{extra}"


def read_doc(path: Path, schema: type[_Doc], what: str) -> _Doc:
    """The JSON file ``path`` (:func:`read_json`) validated by ``schema``; a
    :class:`~hwmap.errors.DataError` naming the first problem (:func:`schema_problem`)."""
    doc = read_json(path, what=what)
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        raise DataError(f"{what} does not match its schema: {schema_problem(e)}", where=str(path)) from None
