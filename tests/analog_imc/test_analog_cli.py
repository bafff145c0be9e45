"""``hwmap compile`` on the analog_imc target, as a user runs it (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def hwmap(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hwmap.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_compile_chapter_example_with_plot(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:chapter_cnn", "--target", "analog_imc:chapter-fig3.13", "-o", "out", "--plot", "x.png",
              "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"
    kpis = json.loads((tmp_path / "out" / "kpis.json").read_text())
    r = kpis["resources"]
    assert (r["cores_used"], r["elements_used"], r["computation_cycles"], r["element_utilization"]) == (1, 22, 1, 1.0)
    assert kpis["target"] == "analog_imc" and kpis["fits"]
    assert (tmp_path / "out" / "artifacts" / "artifacts.json").exists()


def test_set_strategy(tmp_path: Path) -> None:
    p = hwmap("compile", "zoo:chapter_cnn", "--target", "analog_imc:chapter-fig3.13", "-o", "out",
              "--set", "mapper.strategy=packed", "-q", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    mapping = json.loads((tmp_path / "out" / "mapping.json").read_text())
    assert mapping["mapping"]["strategy"] == "packed"
    assert json.loads((tmp_path / "out" / "kpis.json").read_text())["resources"]["strategy"] == "packed"


@pytest.mark.parametrize(("override", "key"), [
    ("hardware.element_rows=5", "hardware.element_rows"),
    ("hardware.cores=0", "hardware.cores"),
])
def test_bad_config_exits_2_naming_the_key(tmp_path: Path, override: str, key: str) -> None:
    p = hwmap("compile", "zoo:chapter_cnn", "--target", "analog_imc:chapter-fig3.13", "-o", "out", "--set", override,
              cwd=tmp_path)
    assert p.returncode == 2
    assert key in p.stderr and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_model_that_does_not_fit_exits_1(tmp_path: Path) -> None:
    # 16-bit weights in 1-bit differential cells: 30 columns per filter on a 16-column crossbar
    p = hwmap("compile", "zoo:chapter_cnn", "--target", "analog_imc:chapter-fig3.13", "-o", "out",
              "--set", "hardware.crossbar_cols=16", "--set", "hardware.columns_per_adc=4",
              "--set", "hardware.weight_bits=16", "--set", "hardware.bits_per_cell=1",
              "--set", "hardware.weight_encoding=differential", cwd=tmp_path)
    assert p.returncode == 1, p.stderr
    assert "filter_wider_than_crossbar" in p.stderr and "conv2" in p.stderr
