"""Where analog_imc's numbers come from: every config field declares its unit and the source
of its default, every preset value carries its source, and the plugin cites no file the
repository does not hold."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from hwmap.config import load_target, schema_for
from hwmap.constants import NO_SOURCE, field_source, field_unit, leaf_fields
from hwmap_analog_imc.hardware import AnalogIMCConfig
from hwmap_analog_imc.plugin import presets

REPO = Path(__file__).resolve().parents[2]
PLUGIN = REPO / "plugins" / "analog_imc"

#: Values nothing published backs: their sources must say "assumed".
ASSUMED = ("energy.program_pj_per_cell", "energy.noc_pj_per_bit_hop", "hardware.program_row_s",
           "hardware.dac_settle_s", "noc.hop_latency_cycles")
#: Physical quantities and the unit their field declares.
UNITS = {"hardware.read_pulse_s": "s", "hardware.adc_conversion_s": "s", "hardware.program_row_s": "s",
         "hardware.clock_hz": "Hz", "hardware.input_buffer_bytes": "B", "energy.adc_pj_per_conversion": "pJ",
         "energy.cell_read_fj": "fJ", "energy.static_w_per_core": "W", "noise.g_max_us": "µS",
         "noc.link_width_bits": "bit", "hardware.adc_reference_bits": "bit", "hardware.dac_reference_bits": "bit",
         "hardware.dac_settle_s": "s", "energy.adc_fom_s_db": "dB", "energy.buffer_leakage_w_per_mbit": "W"}


def test_every_field_declares_the_source_of_its_default() -> None:
    fields = leaf_fields(AnalogIMCConfig)
    assert len(fields) == 43
    for path, (name, info) in fields.items():
        assert field_source(info).strip(), path
        assert f"[default: {field_source(info)}]" in (info.description or ""), path
    for path, unit in UNITS.items():
        name, info = fields[path]
        assert field_unit(name, info) == unit, path
    for path in ASSUMED:
        assert field_source(fields[path][1]).startswith("assumed: "), path
    src = {p: field_source(info) for p, (_, info) in fields.items()}
    assert "ISAAC" in src["energy.adc_pj_per_conversion"] and "Table II" in src["energy.adc_pj_per_conversion"]
    assert "Horowitz" in src["energy.buffer_pj_per_bit"] and "Horowitz" in src["energy.digital_pj_per_op"]
    assert "Fig. 3.13" in src["hardware.element_rows"] and "Le Gallo" in src["hardware.crossbar_rows"]
    assert "NeuroSim" in src["hardware.read_pulse_s"] and "aihwkit" in src["noise.g_max_us"]
    assert "Murmann" in src["energy.adc_fom_s_db"] and "Wang et al." in src["energy.buffer_leakage_w_per_mbit"]
    assert "Kull" in src["energy.static_w_per_core"]  # why 0 W besides the buffers' leakage
    # the schema an editor reads carries them too
    hardware = schema_for("analog_imc")["$defs"]["HardwareConfig"]["properties"]
    assert hardware["read_pulse_s"]["source"] == src["hardware.read_pulse_s"]
    assert hardware["read_pulse_s"]["unit"] == "s"


def _leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and set(v) != {"value", "source"}:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


@pytest.mark.parametrize("preset", sorted(presets()))
def test_every_preset_value_carries_its_source(preset: str) -> None:
    raw = tomllib.loads(presets()[preset].read_text())
    description = raw.pop("description")
    assert isinstance(description, str) and description.strip() and "\n" not in description
    assert raw.pop("kind") == "analog_imc" and raw.pop("name")
    leaves = _leaves(raw)
    assert leaves
    for key, v in leaves.items():
        assert isinstance(v, dict) and set(v) == {"value", "source"}, f"{preset}: {key} = {v!r} has no source"
        assert v["source"].strip(), key
    target = load_target(f"analog_imc:{preset}")
    assert target.description == description
    for key, a in target.constants().items():
        assert "without a source" not in a.source and not a.source.startswith(NO_SOURCE), (key, a.source)
        if key in leaves:
            assert a.source == leaves[key]["source"]
    for key in ASSUMED:
        if key in leaves:
            assert leaves[key]["source"].startswith("assumed: "), (preset, key)


def test_the_plugin_cites_only_files_it_holds() -> None:
    """A document name (``*.md``) or a path climbing out of a file's folder, in the plugin's
    sources, README and tests, names a file that exists: nothing points at what the
    repository does not hold."""
    files = [p for p in (*PLUGIN.rglob("*"), *(REPO / "tests" / "analog_imc").rglob("*"))
             if p.is_file() and p.suffix in (".py", ".md", ".toml") and "__pycache__" not in p.parts]
    assert len(files) > 30
    for path in files:
        text = path.read_text()
        for doc in re.findall(r"[\w./-]*\b[A-Za-z_][\w-]*\.md\b", text):
            assert any((base / doc).exists() for base in (path.parent, PLUGIN, REPO)), f"{path}: cites {doc}"
        for rel in re.findall(r"(?<![\w.])\.\./[\w./-]+", text):
            assert (path.parent / rel).exists(), f"{path}: cites {rel}"
