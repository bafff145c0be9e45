"""Reading a ``.nir`` file safely: the HDF5 file is read once from its bytes, and nothing
that would read outside it (external storage, external and soft links, virtual datasets,
plugin filters) or declare more than the memory limit is followed."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

from ..errors import ModelError, error_line
from ..limits import check_size
from ..safeio import read_file

__all__ = ["read_nir", "check_hdf5", "import_nir"]


def read_nir(path: str | Path) -> Any:
    """Read a ``.nir`` (HDF5) file into a ``nir.NIRGraph``; a corrupt file is a ModelError.

    The file is read once, through :func:`hwmap.safeio.read_file` (a regular file within the
    memory limit), and everything else comes from those bytes: before any dataset is read,
    :func:`check_hdf5` refuses what would read outside them (external storage, external and
    soft links, virtual datasets, filters HDF5 would load as plugins) and datasets whose
    declared sizes exceed the limit. NIR's own reader then builds the graph from the same
    open file. Graphs whose NIR types do not check (older exporters, scalar neuron
    parameters) are built again without NIR's type check: hwmap infers every shape itself."""
    nir = import_nir()
    import h5py

    where = str(path)
    data = read_file(Path(path), what="file", error=ModelError)
    try:
        f = h5py.File(io.BytesIO(data), "r")
    except Exception as e:
        raise ModelError(f"not a readable NIR file (HDF5): {error_line(e)}", where=where) from None
    with f:
        check_hdf5(f, where)
        if not isinstance(f.get("node"), h5py.Group):
            raise ModelError("not a NIR file: no group 'node' at its root", where=where)
        problem = "no graph"
        for type_check in (True, False):  # as nir.read(path) then nir.read(path, type_check=False)
            try:
                tree = nir.serialization.hdf2dict(f["node"])  # read afresh: building the graph edits it
                if "type_check" in tree:
                    raise ValueError("its graph has a key 'type_check'")
                return nir.dict2NIRNode({**tree, "type_check": type_check})
            except Exception as e:
                problem = error_line(e)
    raise ModelError(f"not a readable NIR file: {problem}", where=where)


#: HDF5 filters built into HDF5 and h5py; any other is refused (HDF5 would look for a plugin).
_FILTERS = {"deflate": 1, "shuffle": 2, "fletcher32": 3, "szip": 4, "nbit": 5, "scaleoffset": 6, "lzf": 32000}
# What one element of a variable-length string costs once read (a Python str), at least.
_VLEN_STRING_BYTES = 64


def check_hdf5(f: Any, where: str) -> None:
    """Refuse an HDF5 file that reads outside itself or declares more than the memory limit.

    Walks every link from the root without following any but hard links: an external link,
    a soft link, a dataset with external storage or a virtual dataset, a filter that is not
    built in, a dataset of a type that is not numbers or strings (references, compounds,
    opaque data), and datasets whose shape × item size (or chunk) exceeds the limit, each
    alone or all together, are refused, naming the object. Nothing is read but metadata."""
    import h5py

    total = 0
    seen: set[Any] = set()
    stack: list[tuple[str, Any]] = [("", f)]
    while stack:
        prefix, group = stack.pop()
        for name in list(group):
            path = f"{prefix}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise ModelError(f"HDF5 object {path!r} is an external link to another file; refused", where=where)
            if not isinstance(link, h5py.HardLink):
                raise ModelError(f"HDF5 object {path!r} is a {type(link).__name__} (only plain objects are read); "
                                 "refused", where=where)
            obj = group[name]
            if isinstance(obj, h5py.Group):
                if obj.id in seen:
                    raise ModelError(f"HDF5 group {path!r} is linked more than once (a cycle?); refused", where=where)
                seen.add(obj.id)
                stack.append((path, obj))
            elif isinstance(obj, h5py.Dataset):
                total += _check_dataset(obj, path, total, where)


def _check_dataset(ds: Any, path: str, total: int, where: str) -> int:
    """The bytes reading dataset ``ds`` takes, after refusing what reads outside the file."""
    import h5py

    what = f"HDF5 dataset {path!r}"
    if ds.is_virtual:
        raise ModelError(f"{what} is a virtual dataset (its data lives in other files); refused", where=where)
    if ds.external:
        raise ModelError(f"{what} keeps its data in external file(s), outside the NIR file; refused", where=where)
    plist = ds.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        code = plist.get_filter(i)[0]
        if code not in _FILTERS.values():
            raise ModelError(f"{what} uses HDF5 filter {code}, not one built in ({', '.join(_FILTERS)}); refused",
                             where=where)
    dtype = ds.dtype
    if h5py.check_string_dtype(dtype) is not None:
        itemsize = _VLEN_STRING_BYTES if dtype.kind == "O" else max(dtype.itemsize, 1)
    elif dtype.kind in "biuf":
        itemsize = dtype.itemsize
    else:
        raise ModelError(f"{what} has HDF5 type {dtype} (not numbers or strings); refused", where=where)
    shape = ds.shape or ()
    nbytes = math.prod(shape) * itemsize
    chunk = math.prod(ds.chunks) * itemsize if ds.chunks else 0
    check_size(max(nbytes, chunk), f"{what} of shape {list(shape)} ({dtype})", where=where, error=ModelError)
    check_size(total + nbytes, f"{what}: the datasets of the file (together {total + nbytes:,} bytes)",
               where=where, error=ModelError)
    return nbytes


def import_nir() -> Any:
    try:
        import nir
    except ImportError:
        raise ModelError("the NIR frontend needs the nir package: install hwmap[nir]") from None
    return nir
