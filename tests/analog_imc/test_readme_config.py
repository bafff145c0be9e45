"""The README's config example is a config hwmap accepts, with the sources it claims."""

from __future__ import annotations

import re
from pathlib import Path

from hwmap.config import load_target

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_config_example_loads(tmp_path: Path) -> None:
    block = re.search(r"```toml\n(.*?)```", README.read_text(), re.S)
    assert block is not None
    p = tmp_path / "imc-16core.toml"
    p.write_text(block.group(1))
    t = load_target(str(p))
    base = load_target("analog_imc:default")
    assert (t.kind, t.name, t.config.hardware.cores) == ("analog_imc", "imc-16core", 16)
    assert t.config.hardware.crossbar_rows == base.config.hardware.crossbar_rows  # inherited
    c = t.constants()
    assert c["hardware.cores"].source.startswith("Le Gallo et al.")
    assert c["energy.adc_pj_per_conversion"].source == "set in imc-16core.toml without a source"
    assert c["energy.dac_pj_per_input"].source == base.constants()["energy.dac_pj_per_input"].source
