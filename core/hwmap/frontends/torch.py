"""PyTorch frontend: a Python factory returning an ``nn.Module``, plus an input shape.

Sources, resolved by :func:`load_factory`:

* ``package.module:factory``: the module is imported as Python imports it, from the
  installed packages (``sys.path``). When no installed module has that (top-level) name, a
  ``module.py`` (or a ``module/`` package) in the working directory is imported instead, as
  ``python -m`` would, but searched *after* the installed packages: a folder's ``onnx.py``
  or ``numpy.py`` never shadows a library hwmap imports.
* ``path/to/file.py:factory`` (any source ending in ``.py:NAME``, ``mynet.py:make`` too):
  that file is executed as a module of its own, a fresh one on every call (its
  ``__name__`` is not ``"__main__"``, so a ``if __name__ == "__main__":`` block does not run).

Only the module named is imported; while it loads and while the factory runs, its folder is
appended to ``sys.path`` (after every installed package) so that it can import its own
sibling files, and is removed again afterwards. A ``.py`` file is read as any model file is
(:func:`hwmap.safeio.read_file`: a regular file within the memory limit). Whatever the
user's code raises while it loads, builds or runs the model, ``SystemExit`` included (a
script calling ``sys.exit()`` or ``exit()``), becomes a :class:`~hwmap.errors.ModelError`;
only ``KeyboardInterrupt`` (the user's own Ctrl-C) passes through.

Memory: the input shape is checked first (:func:`hwmap.parsing.check_input_shape`); the forward
pass that precedes the export runs under a guard that works out every op's output shape on
torch's ``meta`` device (from shapes alone, nothing allocated) and refuses the model before
an op whose inputs and new outputs together exceed the memory limit runs.

The module is exported to ONNX in memory with TorchScript-based ``torch.onnx.export``
(``dynamo=False``, opset 17, constant folding on) and read by the ONNX frontend, so a torch
model and its ONNX export give the same graph. torch is imported only when a source of this
form is parsed: the core installs without it (``pip install hwmap[torch]``).
"""

from __future__ import annotations

import importlib
import importlib.util
import io
import re
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

from ..errors import HwmapError, ModelError, error_line
from ..graph import Graph
from ..hookspecs import hookimpl
from ..limits import check_size, max_memory
from ..safeio import read_file
from ..parsing import ParseOptions, check_input_shape

__all__ = ["hwmap_parse", "graph_from_factory", "graph_from_module", "load_factory", "Factory", "SPEC_PATTERN",
           "FILE_SPEC_PATTERN", "OPSET"]

# A dotted module path, a colon, a Python identifier: ``pkg.models:make_net``.
SPEC_PATTERN = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$")
# The path of a Python file, a colon, a Python identifier: ``./nets/mynet.py:make``.
FILE_SPEC_PATTERN = re.compile(r"^(?P<file>.+\.py):(?P<factory>[A-Za-z_]\w*)$")
OPSET = 17
# What the user's code may raise that becomes a ModelError: everything but KeyboardInterrupt.
_USER_ERRORS = (Exception, SystemExit, GeneratorExit)


@hookimpl
def hwmap_parse(source: str, options: ParseOptions) -> Graph | None:
    """Parse ``package.module:factory`` and ``FILE.py:factory`` sources; ``None`` for anything else."""
    if source.startswith("zoo:") or Path(source).exists():
        return None
    if not (SPEC_PATTERN.match(source) or FILE_SPEC_PATTERN.match(source)):
        return None
    return graph_from_factory(source, options)


@dataclass(frozen=True)
class Factory:
    """A resolved factory spec: the ``module`` it names and the ``name`` of the factory in
    it; ``label`` says which module in messages; ``folder`` is the user's folder the module
    was loaded from (``None`` for an installed module)."""

    module: ModuleType
    name: str
    label: str
    folder: Path | None


def load_factory(spec: str) -> Factory:
    """Import (or execute) the module ``spec`` names; see the module docstring for the search.

    Raises :class:`ModelError` naming ``spec`` when the file or module is missing or fails
    to load (a syntax error, an exception at import).
    """
    m = FILE_SPEC_PATTERN.match(spec)
    if m is not None:  # ``mynet.py:make`` is a file, never a submodule named ``py``
        return _load_file(m["file"], m["factory"], spec)
    modname, _, attr = spec.partition(":")
    return _import_module(modname, attr, spec)


def graph_from_factory(spec: str, options: ParseOptions) -> Graph:
    """Load the factory ``spec`` names (:func:`load_factory`), call it and parse the module it returns."""
    torch = _import_torch()
    f = load_factory(spec)
    factory = getattr(f.module, f.name, None)
    if factory is None:
        raise ModelError(f"{f.label} has no attribute {f.name!r}{_shadow_hint(f)}", where=spec)
    if not callable(factory):
        raise ModelError(f"{f.name!r} in {f.label} is an object of type {type(factory).__name__}, "
                         "not a callable returning a torch.nn.Module", where=spec)
    try:
        with _searched_last(f.folder):
            model = factory()
    except _USER_ERRORS as e:
        raise ModelError(f"factory {f.name!r} in {f.label} raised {_one_line(e)}", where=spec) from None
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"factory {f.name!r} in {f.label} returned an object of type {type(model).__name__}, "
                         "not a torch.nn.Module", where=spec)
    return graph_from_module(model, name=spec, options=options)


def _load_file(file: str, attr: str, spec: str) -> Factory:
    """Execute the Python file ``file`` as a fresh module."""
    path = Path(file)
    if not path.is_file():  # a directory, device or FIFO too: never opened
        raise ModelError(f"no such file {file!r}" if not path.exists() else f"{file!r} is not a file", where=spec)
    source = read_file(path, what=f"Python file {file!r}", error=ModelError)
    name = "_hwmap_model_" + re.sub(r"\W", "_", path.stem)
    mod_spec = importlib.util.spec_from_file_location(name, path)
    if mod_spec is None or mod_spec.loader is None:
        raise ModelError(f"cannot load {file!r} as a Python module", where=spec)
    module = importlib.util.module_from_spec(mod_spec)
    folder = path.resolve().parent
    sys.modules[name] = module  # dataclasses and typing look classes' modules up there
    try:
        code = compile(source, str(path), "exec", dont_inherit=True)  # the bytes read, not the file again
        with _searched_last(folder):
            exec(code, module.__dict__)
    except _USER_ERRORS as e:
        sys.modules.pop(name, None)
        raise ModelError(f"cannot execute {file!r}: {_one_line(e)}", where=spec) from None
    return Factory(module, attr, f"file {file!r}", folder)


def _import_module(modname: str, attr: str, spec: str) -> Factory:
    """Import ``modname`` from the installed packages, else from the working directory."""
    top = modname.partition(".")[0]
    try:
        module = importlib.import_module(modname)
        return Factory(module, attr, _module_label(module), None)
    except ModuleNotFoundError as e:
        if e.name != top:  # the module exists but imports something missing: its own error
            raise ModelError(f"cannot import module {modname!r}: {_one_line(e)}", where=spec) from None
    except _USER_ERRORS as e:  # ImportError, or anything the module raises while importing
        raise ModelError(f"cannot import module {modname!r}: {_one_line(e)}", where=spec) from None
    cwd = Path.cwd()
    if not ((cwd / f"{top}.py").is_file() or (cwd / top / "__init__.py").is_file()):
        raise ModelError(f"cannot import module {modname!r}: no installed module {top!r}, and no {top}.py "
                         f"or {top}/__init__.py in the working directory {str(cwd)!r}", where=spec)
    try:
        with _searched_last(cwd):
            module = importlib.import_module(modname)
    except _USER_ERRORS as e:
        raise ModelError(f"cannot import module {modname!r} from the working directory {str(cwd)!r}: "
                         f"{_one_line(e)}", where=spec) from None
    return Factory(module, attr, _module_label(module), cwd)


def _module_label(module: ModuleType) -> str:
    origin = getattr(module, "__file__", None)
    return f"module {module.__name__!r}" + (f" ({origin})" if origin else "")


def _shadow_hint(f: Factory) -> str:
    """A hint when an installed module won over a same-named file in the working directory."""
    top = f.module.__name__.partition(".")[0]
    local = Path.cwd() / f"{top}.py"
    origin = getattr(sys.modules.get(top), "__file__", None)
    if f.folder is None and local.is_file() and (origin is None or Path(origin).resolve() != local.resolve()):
        return f"; installed modules come first: for the file in the working directory, use ./{top}.py:{f.name}"
    return ""


@contextmanager
def _searched_last(folder: Path | None) -> Iterator[None]:
    """``folder`` at the end of ``sys.path`` while the user's code runs (so it can import its
    own sibling files, after every installed package), removed again afterwards."""
    entry = str(folder) if folder is not None else None
    added = entry is not None and entry not in sys.path
    if added:
        sys.path.append(str(entry))
        importlib.invalidate_caches()  # the folder's files may be newer than a cached listing
    try:
        yield
    finally:
        if added:
            for i in range(len(sys.path) - 1, -1, -1):
                if sys.path[i] == entry:
                    del sys.path[i]
                    break


def graph_from_module(model: Any, *, name: str, options: ParseOptions) -> Graph:
    """Export ``model`` (a ``torch.nn.Module``) at ``options.input_shape`` and parse it.

    The model is put in eval mode (batch norm statistics, no dropout), as inference on a
    target would run it. The graph input is named ``input``; outputs ``output`` (one) or
    ``output_0``, ``output_1``... (several).
    """
    torch = _import_torch()
    shape = _input_shape(options, name)
    try:
        model.eval()
        x = torch.zeros(shape)
        with torch.no_grad(), _memory_guard(torch, name):
            y = model(x)
    except HwmapError:
        raise
    except _USER_ERRORS as e:
        raise ModelError(f"forward pass on input shape {list(shape)} failed: {_one_line(e)}", where=name) from None
    n_out = len(y) if isinstance(y, (tuple, list)) else 1
    output_names = ["output"] if n_out == 1 else [f"output_{i}" for i in range(n_out)]
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # exporter chatter (tracer, constant folding) is not the user's
            torch.onnx.export(model, (x,), buf, dynamo=False, opset_version=OPSET, do_constant_folding=True,
                              input_names=["input"], output_names=output_names)
    except _USER_ERRORS as e:
        raise ModelError(f"torch.onnx.export failed: {_one_line(e)}", where=name) from None
    from .onnx import graph_from_onnx

    return graph_from_onnx(buf.getvalue(), name=options.name or name, options=options)


def _input_shape(options: ParseOptions, where: str) -> tuple[int, ...]:
    shape = options.input_shape
    if shape is None:
        raise ModelError("a PyTorch model needs an input shape: pass --input-shape, e.g. --input-shape 1,3,32,32",
                         where=where)
    return check_input_shape(shape, where, what="--input-shape")


_GUARD: Any = None


def _memory_guard(torch: Any, where: str) -> Any:
    """A torch dispatch mode refusing (ModelError naming ``where``) an op before it runs when
    its tensor inputs and the new tensors it would return exceed the memory limit. The
    output shapes come from running the op on ``meta`` tensors (shapes only; factory ops
    are sent to the meta device too); an op whose outputs alias its inputs (views, in-place
    ops) allocates nothing new; an op without a meta implementation is not checked."""
    global _GUARD
    if _GUARD is None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten, tree_map

        meta = torch.device("meta")

        def nbytes(tree: Any) -> int:
            return sum(t.numel() * t.element_size() for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor))

        def to_meta(t: Any) -> Any:
            if isinstance(t, torch.Tensor):
                return torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=meta)
            return t

        class Guard(TorchDispatchMode):  # type: ignore[misc]
            def __init__(self, where: str) -> None:
                super().__init__()
                self.where = where
                self.limit = max_memory()

            def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
                kwargs = kwargs or {}
                returns = func._schema.returns
                if returns and not all(r.alias_info is not None for r in returns):
                    margs, mkwargs = tree_map(to_meta, (args, kwargs))
                    if any(a.name == "device" for a in func._schema.arguments):
                        mkwargs["device"] = meta
                    try:
                        new = nbytes(func(*margs, **mkwargs))
                    except Exception:  # no meta kernel (data-dependent output): not checked
                        new = 0
                    need = nbytes((args, kwargs)) + new
                    if need > self.limit:
                        check_size(need, f"the forward pass: op {func} with its inputs and outputs",
                                   where=self.where, error=ModelError, limit=self.limit)
                return func(*args, **kwargs)

        _GUARD = Guard
    return _GUARD(where)


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError("the PyTorch frontend needs torch: install hwmap[torch]") from None
    return torch


def _one_line(e: BaseException) -> str:
    """An hwmap error's own message (it names what and where), any other as :func:`error_line`."""
    return str(e).replace("\n", " ") if isinstance(e, HwmapError) else error_line(e)
