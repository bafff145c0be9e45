"""Model sources from the user's own files: ``FILE.py:factory`` and a bare ``module:factory``
found in the working directory after the installed packages (never shadowing them)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pytest

from hwmap import ModelError, ParseOptions, load_model

torch = pytest.importorskip("torch")
from hwmap.execute import run  # noqa: E402

SHAPE = (1, 1, 8, 8)

NET = """\
import torch
from torch import nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 3))


def raising():
    raise ValueError("checkpoint not found")


def not_a_module():
    return 42


SEVEN = 7
"""

#: A module that must never be imported: it says so loudly if it is.
TRAP = "raise RuntimeError('this file in the working directory must not be imported')\n"


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working directory; ``sys.path`` is restored and the modules loaded from the
    folder are forgotten after the test (libraries imported meanwhile stay: torch cannot be
    imported twice)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    yield tmp_path
    root = str(tmp_path.resolve())
    for name, module in list(sys.modules.items()):
        if str(Path(getattr(module, "__file__", None) or "/").resolve()).startswith(root):
            del sys.modules[name]


def _torch_output(model: Any, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


def _expected() -> np.ndarray:
    """The reference output of NET's ``make`` on a fixed input."""
    namespace: dict[str, object] = {}
    exec(compile(NET, "<net>", "exec"), namespace)
    return _torch_output(namespace["make"](), _x())  # type: ignore[operator]


def _x() -> np.ndarray:
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


@pytest.mark.parametrize("spec", ["./mynet_a.py:make", "mynet_a.py:make", "ABS", "sub/dir/mynet_a.py:make"])
def test_a_file_and_its_factory(cwd: Path, spec: str) -> None:
    if spec == "ABS":
        spec = f"{cwd / 'mynet_a.py'}:make"
    file = cwd / spec.rpartition(":")[0]
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(NET)
    g = load_model(spec, ParseOptions(input_shape=SHAPE))
    assert g.name == spec and [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    np.testing.assert_allclose(run(g, {"input": _x()})["output"], _expected(), atol=1e-5)


def test_a_bare_module_is_found_in_the_working_directory(cwd: Path) -> None:
    (cwd / "mynet_b.py").write_text(NET)
    g = load_model("mynet_b:make", ParseOptions(input_shape=SHAPE))
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    assert Path(str(sys.modules["mynet_b"].__file__)).resolve() == (cwd / "mynet_b.py").resolve()
    assert str(cwd) not in sys.path  # only while the module loaded


def test_a_package_in_the_working_directory_with_relative_imports(cwd: Path) -> None:
    (cwd / "netpkg_c").mkdir()
    (cwd / "netpkg_c" / "__init__.py").write_text("")
    (cwd / "netpkg_c" / "layers.py").write_text(NET)
    (cwd / "netpkg_c" / "models.py").write_text("from .layers import make as build\n")
    g = load_model("netpkg_c.models:build", ParseOptions(input_shape=SHAPE))
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]


def test_a_file_imports_its_own_siblings_and_nothing_else_is_imported(cwd: Path) -> None:
    (cwd / "nets").mkdir()
    (cwd / "nets" / "helper_d.py").write_text(NET)
    (cwd / "nets" / "main_d.py").write_text("def make():\n    from helper_d import make as m\n    return m()\n")
    (cwd / "nets" / "unrelated_d.py").write_text(TRAP)
    (cwd / "unrelated_d2.py").write_text(TRAP)
    path_before = list(sys.path)
    g = load_model("nets/main_d.py:make", ParseOptions(input_shape=SHAPE))
    assert [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    assert "helper_d" in sys.modules  # imported by the user's own code, from its folder
    assert "unrelated_d" not in sys.modules and "unrelated_d2" not in sys.modules
    assert sys.path == path_before


def test_a_file_is_executed_afresh_on_every_load(cwd: Path) -> None:
    f = cwd / "mynet_e.py"
    f.write_text(NET)
    one = load_model("mynet_e.py:make", ParseOptions(input_shape=SHAPE))
    f.write_text(NET.replace("nn.Linear(4 * 6 * 6, 3)", "nn.Linear(4 * 6 * 6, 5)"))
    two = load_model("mynet_e.py:make", ParseOptions(input_shape=SHAPE))
    assert one.tensor("output").shape == (1, 3) and two.tensor("output").shape == (1, 5)


def test_files_in_the_working_directory_never_shadow_installed_modules(cwd: Path) -> None:
    for name in ("numpy", "onnx", "torch", "rich", "pluggy", "tabnanny"):
        (cwd / f"{name}.py").write_text(TRAP + "def make():\n    return None\n")
    (cwd / "mynet_f.py").write_text(NET)
    (cwd / "mynet_f2.py").write_text("import tabnanny\n" + NET)
    for spec in ("./mynet_f.py:make", "mynet_f2:make", "./mynet_f2.py:make"):
        sys.modules.pop("tabnanny", None)  # a stdlib module nothing has imported: resolved now
        g = load_model(spec, ParseOptions(input_shape=SHAPE))
        assert [n.op for n in g.nodes] == ["Conv", "Relu", "Flatten", "Gemm"]
    for name in ("onnx", "tabnanny"):
        with pytest.raises(ModelError) as info:
            load_model(f"{name}:make", ParseOptions(input_shape=SHAPE))
        text = str(info.value)
        assert text.startswith(f"{name}:make: module {name!r} (") and "has no attribute 'make'" in text
        assert str(cwd) not in text.split("has no attribute")[0]  # the installed module was used
        assert f"use ./{name}.py:make" in text
    assert Path(str(sys.modules["tabnanny"].__file__)).parent != cwd


@pytest.mark.parametrize("spec,message", [
    ("./missing_g.py:make", r"^\./missing_g\.py:make: no such file '\./missing_g\.py'$"),
    ("./net_g.py:nope", r"^\./net_g\.py:nope: file '\./net_g\.py' has no attribute 'nope'$"),
    ("./net_g.py:raising", r"^\./net_g\.py:raising: factory 'raising' in file '\./net_g\.py' raised "
                           r"ValueError: checkpoint not found$"),
    ("./net_g.py:not_a_module", r"factory 'not_a_module' in file '\./net_g\.py' returned an object of type int, "
                                r"not a torch\.nn\.Module$"),
    ("./net_g.py:SEVEN", r"'SEVEN' in file '\./net_g\.py' is an object of type int, not a callable"),
    ("./syntax_g.py:make", r"^\./syntax_g\.py:make: cannot execute '\./syntax_g\.py': SyntaxError: .*line 2"),
    ("syntax_g:make", r"^syntax_g:make: cannot import module 'syntax_g' from the working directory .*SyntaxError"),
    ("./exits_g.py:make", r"cannot execute '\./exits_g\.py': SystemExit: 3$"),
    ("net_g:nope", r"^net_g:nope: module 'net_g' \(.*net_g\.py\) has no attribute 'nope'$"),
    ("net_g:raising", r"^net_g:raising: factory 'raising' in module 'net_g' \(.*net_g\.py\) raised ValueError"),
    ("missing_g:make", r"^missing_g:make: cannot import module 'missing_g': no installed module 'missing_g', "
                       r"and no missing_g\.py or missing_g/__init__\.py in the working directory"),
    ("usesdep_g:make", r"^usesdep_g:make: cannot import module 'usesdep_g' from the working directory .*"
                       r"No module named 'no_such_dependency_g'$"),
    ("./net_g.py", r"^\./net_g\.py: a Python file needs the name of its factory: FILE\.py:FUNCTION"),
    ("./folder_g.py:make", r"'\./folder_g\.py' is not a file$"),
])
def test_bad_files_and_factories_are_one_line_model_errors(cwd: Path, spec: str, message: str) -> None:
    (cwd / "net_g.py").write_text(NET)
    (cwd / "syntax_g.py").write_text("import torch\ndef make(:\n    pass\n")
    (cwd / "exits_g.py").write_text("import sys\nsys.exit(3)\n")
    (cwd / "usesdep_g.py").write_text("import no_such_dependency_g\n")
    (cwd / "folder_g.py").mkdir()
    with pytest.raises(ModelError, match=message) as info:
        load_model(spec, ParseOptions(input_shape=SHAPE))
    assert "\n" not in str(info.value)
    assert "no_such_dependency_g" not in sys.modules and str(cwd) not in sys.path


def test_a_missing_dependency_of_an_installed_module_is_not_looked_up_in_the_working_directory(
        cwd: Path) -> None:
    site = cwd / "site"
    site.mkdir()
    (site / "installed_h.py").write_text("import dep_h\n")
    sys.path.insert(0, str(site))
    (cwd / "dep_h.py").write_text(TRAP)
    with pytest.raises(ModelError, match=r"^installed_h:make: cannot import module 'installed_h': "
                                         r"ModuleNotFoundError: No module named 'dep_h'$"):
        load_model("installed_h:make", ParseOptions(input_shape=SHAPE))
    assert "dep_h" not in sys.modules
