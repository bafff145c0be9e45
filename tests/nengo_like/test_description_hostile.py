"""A network description read back from a compile directory is a file the user hands over:
every value the simulator reads is checked before it runs, and a tampered one is refused in
one line naming the key (exit 2), not a MemoryError or a numpy message (exit 3)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from hwmap.cli import main
from hwmap_nengo_like import description

DATA = "zoo:digits"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nengo") / "digits_mlp"
    assert main(["compile", "zoo:digits_mlp", "--target", "nengo_like:default", "--data", DATA, "-o", str(out),
                 "-q"]) == 0
    return out


def _doc(compiled: Path) -> dict[str, Any]:
    return json.loads((compiled / "artifacts" / description.JSON_FILE).read_text())


def _host(doc: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(h for h in doc["hosts"] if h["kind"] == kind)


def _set_output_shape(doc: dict[str, Any], shape: Any) -> None:
    name = _host(doc, "output")["name"]
    doc["meta"]["output_shapes"][name] = shape


TAMPER: list[tuple[Callable[[dict[str, Any]], None], str]] = [
    (lambda d: d.update(steps=10**9), "steps = 1000000000 must be an integer from 1 to 1,000,000"),
    (lambda d: _set_output_shape(d, [10**9]), "does not hold the output's 10 values"),
    (lambda d: _set_output_shape(d, [-2, -5]), "does not hold the output's 10 values"),
    (lambda d: d["meta"].update(output_shapes={"elsewhere": [10]}), "names 'elsewhere', which is not an output"),
    (lambda d: _host(d, "input")["attrs"].update(encoding="morse"), "attrs.encoding = 'morse' is not one of"),
    (lambda d: _host(d, "input")["attrs"].update(scale="big"), "attrs.scale = 'big' is not a finite number"),
    (lambda d: _host(d, "output")["attrs"].update(bias=[0.0] * 3), "attrs.bias must be a finite number or a list "
                                                                   "of 10 (size_in) finite numbers"),
    (lambda d: _host(d, "output")["attrs"].update(mode="vote"), "attrs.mode = 'vote' is not one of"),
]


@pytest.mark.parametrize("tamper, message", TAMPER)
def test_a_tampered_description_is_refused_naming_the_key(compiled: Path, tamper: Callable[[dict[str, Any]], None],
                                                          message: str) -> None:
    doc = _doc(compiled)
    arrays = dict(np.load(compiled / "artifacts" / description.ARRAYS_FILE))
    description.from_parts(doc, arrays, "network.json")  # as emitted: accepted
    tamper(doc)
    with pytest.raises(description.DescriptionError) as e:
        description.from_parts(doc, arrays, "network.json")
    assert message in str(e.value)


def test_simulate_of_a_tampered_directory_is_exit_2_in_one_line(compiled: Path, tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    cdir = tmp_path / "c"
    shutil.copytree(compiled, cdir)
    path = cdir / "artifacts" / description.JSON_FILE
    doc = _doc(compiled)
    doc["steps"] = 10**9
    path.write_text(json.dumps(doc))
    capsys.readouterr()
    code = main(["simulate", str(cdir), "--data", DATA, "-q"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "must be an integer from 1 to 1,000,000" in err[0], (code, err)
