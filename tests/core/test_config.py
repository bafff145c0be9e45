"""Target configs: TOML errors name file, key path, value and what is allowed; --set; presets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hwmap import Assumption, ConfigError, PluginError
from hwmap import registry as reg_mod
from hwmap.config import default_fallbacks, load_target, parse_overrides, schema_for
from hwmap.tomlwrite import dumps_toml

pytestmark = pytest.mark.usefixtures("toy_registry")

GOOD = """kind = "toy_cpu"
name = "mine"

[hardware]
clock_hz = 50e6
macs_per_cycle = 8
sram_bytes = 4096

[energy]
mac_pj = 0.23
"""


def _write(tmp_path: Path, text: str, name: str = "cfg.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def _error(tmp_path: Path, text: str, overrides: tuple[str, ...] = ()) -> tuple[str, Path]:
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_target(str(p), overrides)
    msg = str(info.value)
    assert "\n" not in msg
    return msg, p


def test_a_valid_file_loads(tmp_path: Path) -> None:
    t = load_target(str(_write(tmp_path, GOOD)))
    assert (t.kind, t.name) == ("toy_cpu", "mine")
    hw = t.config.hardware
    assert (hw.clock_hz, hw.macs_per_cycle, hw.sram_bytes) == (50e6, 8, 4096)
    assert t.config.energy.sram_read_pj_per_64bit == 10.0  # the default
    assert t.config_dict()["hardware"]["macs_per_cycle"] == 8


def test_without_a_name_the_label_is_the_file_stem(tmp_path: Path) -> None:
    t = load_target(str(_write(tmp_path, 'kind = "toy_cpu"\n', "edge-box.toml")))
    assert t.name == "edge-box"


def test_invalid_toml(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, 'kind = "toy_cpu"\n[hardware\nclock_hz = 1\n')
    assert msg.startswith(f"{p}: invalid TOML")
    assert "line 2" in msg


def test_missing_file_and_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_target(str(tmp_path / "absent.toml"))
    p = tmp_path / "latin1.toml"
    p.write_bytes(b'kind = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=f"{p}: not UTF-8 text"):
        load_target(str(p))


def test_missing_kind(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, "[hardware]\nclock_hz = 1e6\n")
    assert msg.startswith(str(p)) and "missing required key 'kind'" in msg


def test_kind_of_the_wrong_type(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, "kind = 3\n")
    assert msg == f"{p}: key 'kind' = 3: must be a string"


def test_unknown_kind_names_what_is_installed(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, 'kind = "quantum_annealer"\n')
    assert msg.startswith(str(p))
    assert "'quantum_annealer'" in msg and "installed: toy_cpu" in msg


def test_unknown_key_at_the_top(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, "cores = 4\n" + GOOD)
    assert msg == f"{p}: unknown key 'cores' = 4; known keys: description, energy, extends, hardware, kind, name"


def test_unknown_key_nested(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, GOOD.replace("sram_bytes = 4096", "sram_bytes = 4096\ncores = 4"))
    assert msg.startswith(str(p))
    assert msg == f"{p}: unknown key 'hardware.cores' = 4; known keys: clock_hz, macs_per_cycle, sram_bytes"


def test_wrong_type(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, GOOD.replace("macs_per_cycle = 8", 'macs_per_cycle = "eight"'))
    assert msg.startswith(str(p))
    assert "key 'hardware.macs_per_cycle' = 'eight'" in msg
    assert "allowed: int >= 1 <= 4096" in msg


def test_a_value_where_a_table_belongs(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, 'kind = "toy_cpu"\nhardware = 5\n')
    assert msg.startswith(str(p)) and "key 'hardware' = 5" in msg and "Hardware" in msg


def test_out_of_range(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, GOOD.replace("macs_per_cycle = 8", "macs_per_cycle = 0"))
    assert msg.startswith(str(p))
    assert "key 'hardware.macs_per_cycle' = 0" in msg
    assert ">= 1" in msg and "8-bit MACs the MAC unit completes per clock" in msg
    msg, _ = _error(tmp_path, GOOD.replace("clock_hz = 50e6", "clock_hz = -1.5"))
    assert "key 'hardware.clock_hz' = -1.5" in msg and "allowed: float > 0" in msg


def test_several_problems_are_counted(tmp_path: Path) -> None:
    msg, _ = _error(tmp_path, GOOD.replace("macs_per_cycle = 8", "macs_per_cycle = 0\nbogus = 1"))
    assert "(and 1 more problem)" in msg


def test_name_must_be_a_string(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, GOOD.replace('name = "mine"', "name = 7"))
    assert msg == f"{p}: key 'name' = 7: must be a string"


# -- --set ------------------------------------------------------------------------------------------
def test_overrides_parse_as_toml_values() -> None:
    got = parse_overrides(["hardware.macs_per_cycle=16", "energy.mac_pj=0.5", "name=big box",
                           'name="quoted"', "a.b.c=true", "hardware.list=[1, 2]", "x=1e3"])
    assert got == [(["hardware", "macs_per_cycle"], 16), (["energy", "mac_pj"], 0.5), (["name"], "big box"),
                   (["name"], "quoted"), (["a", "b", "c"], True), (["hardware", "list"], [1, 2]), (["x"], 1000.0)]
    assert isinstance(got[0][1], int) and isinstance(got[1][1], float)


def test_overrides_apply_to_files_and_presets(tmp_path: Path) -> None:
    t = load_target(str(_write(tmp_path, GOOD)), ["hardware.macs_per_cycle=16", "energy.sram_read_pj_per_64bit=20",
                                                  "name=override"])
    assert t.config.hardware.macs_per_cycle == 16
    assert t.config.energy.sram_read_pj_per_64bit == 20.0
    assert t.name == "override"
    t = load_target("toy_cpu:small", ["hardware.sram_bytes=65536"])
    assert t.config.hardware.sram_bytes == 65536
    # a table missing from the file is created
    t = load_target(str(_write(tmp_path, 'kind = "toy_cpu"\n')), ["energy.mac_pj=1.5"])
    assert t.config.energy.mac_pj == 1.5
    # the file itself is not touched
    assert "16" not in (tmp_path / "cfg.toml").read_text()


def test_overridden_values_are_validated(tmp_path: Path) -> None:
    p = _write(tmp_path, GOOD)
    with pytest.raises(ConfigError, match=r"key 'hardware.macs_per_cycle' = 0: .*>= 1"):
        load_target(str(p), ["hardware.macs_per_cycle=0"])
    with pytest.raises(ConfigError, match=r"key 'hardware.macs_per_cycle' = 'many'"):
        load_target(str(p), ["hardware.macs_per_cycle=many"])
    with pytest.raises(ConfigError, match=r"unknown key 'hardware.cores'"):
        load_target(str(p), ["hardware.cores=4"])
    with pytest.raises(ConfigError, match=r"unknown target kind 'other'"):
        load_target(str(p), ["kind=other"])


@pytest.mark.parametrize("item, message", [
    ("hardware.macs_per_cycle", "expected KEY=VALUE"),
    ("=4", "empty key"),
    ("hardware..cores=4", "empty key"),
    (".cores=4", "empty key"),
])
def test_override_syntax_errors(item: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_overrides([item])


def test_override_through_a_value_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"hardware.clock_hz is a value, not a table"):
        load_target(str(_write(tmp_path, GOOD)), ["hardware.clock_hz.low=1"])


# -- presets ---------------------------------------------------------------------------------------
def test_kind_colon_preset() -> None:
    t = load_target("toy_cpu:small")
    assert (t.kind, t.name) == ("toy_cpu", "toy-small")
    assert t.config.hardware.sram_bytes == 1024
    assert "small.toml" in t.source and t.source.startswith("toy_cpu:small")
    assert load_target("toy_cpu:default").config.hardware.macs_per_cycle == 4


def test_unknown_preset_lists_the_presets() -> None:
    with pytest.raises(ConfigError, match=r"toy_cpu:huge: target kind 'toy_cpu' has no preset 'huge' "
                                          r"\(presets: default, small\)"):
        load_target("toy_cpu:huge")


def test_a_path_wins_over_kind_colon_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("toy_cpu:small").write_text(GOOD)  # a file literally named like a preset
    assert load_target("toy_cpu:small").name == "mine"


# -- schema -------------------------------------------------------------------------------------------
def test_schema_for_a_kind() -> None:
    s = schema_for("toy_cpu")
    json.dumps(s)  # JSON-able
    assert s["properties"]["kind"] == {"const": "toy_cpu", "type": "string"}
    assert s["anyOf"] == [{"required": ["kind"]}, {"required": ["extends"]}] and s["additionalProperties"] is False
    assert {"name", "hardware", "energy"} <= set(s["properties"])
    hw = s["$defs"]["Hardware"]
    assert hw["additionalProperties"] is False
    assert hw["properties"]["clock_hz"]["exclusiveMinimum"] == 0
    assert hw["properties"]["macs_per_cycle"]["minimum"] == 1


def test_schema_for_an_unknown_kind() -> None:
    with pytest.raises(PluginError, match="unknown target kind 'nope'"):
        schema_for("nope")


# -- fuzz: nothing but the project's own errors escapes --------------------------------------------
ALLOWED = (ConfigError, PluginError)
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


scalars = st.one_of(st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True), st.text(max_size=8))
sourced = st.fixed_dictionaries({"value": scalars, "source": st.text(max_size=6) | scalars})
values = st.recursive(scalars | sourced, lambda inner: st.lists(inner, max_size=3) |
                      st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)
known_keys = st.sampled_from(["clock_hz", "macs_per_cycle", "sram_bytes", "mac_pj", "sram_read_pj_per_64bit"])
tables = st.dictionaries(known_keys | st.text(max_size=6), values, max_size=4)
documents = st.fixed_dictionaries(
    {},
    optional={
        "kind": st.sampled_from(["toy_cpu", "nope", ""]) | scalars,
        "name": st.text(max_size=6) | scalars,
        "description": st.text(max_size=6) | scalars,
        "extends": st.sampled_from(["toy_cpu:default", "toy_cpu:nope", "fuzz.toml", "other.toml", "/etc/passwd"])
        | scalars,
        "hardware": tables | scalars,
        "energy": tables | scalars,
        "extra": values,
    },
)


@FUZZ
@given(doc=documents, overrides=st.lists(st.text(max_size=20), max_size=2))
def test_fuzz_structured_documents(tmp_path: Path, doc: dict[str, Any], overrides: list[str]) -> None:
    p = tmp_path / "fuzz.toml"
    p.write_text(dumps_toml(doc), encoding="utf-8")
    try:
        t = load_target(str(p), overrides)
    except ALLOWED as e:
        assert "\n" not in str(e)
    else:
        assert t.kind == "toy_cpu"


toml_words = st.sampled_from(['kind = "toy_cpu"', "[hardware]", "[energy]", "clock_hz = ", "macs_per_cycle = ",
                              "sram_bytes = ", "=", "[", "]", '"', "\n", "1e9", "-3", "nan", "[[hardware]]",
                              "hardware.clock_hz = 1", "{", "}", ",", "'", "\\", "x"])


@FUZZ
@given(parts=st.lists(toml_words | st.text(max_size=5), max_size=20))
def test_fuzz_toml_ish_text(tmp_path: Path, parts: list[str]) -> None:
    p = tmp_path / "fuzz.toml"
    p.write_text("".join(parts), encoding="utf-8", errors="surrogatepass")
    _loads_or_refuses(str(p))


@FUZZ
@given(data=st.binary(max_size=64))
def test_fuzz_random_bytes(tmp_path: Path, data: bytes) -> None:
    p = tmp_path / "fuzz.toml"
    p.write_bytes(data)
    _loads_or_refuses(str(p))


@FUZZ
@given(ref=st.text(max_size=24))
def test_fuzz_references(ref: str) -> None:
    _loads_or_refuses(ref)


def _loads_or_refuses(ref: str) -> None:
    """Load ``ref``: a config, or one of the errors in ALLOWED (any other exception fails the test)."""
    try:
        load_target(ref)
    except ALLOWED:
        pass


def test_registry_fixture_is_isolated() -> None:
    assert reg_mod.get_registry().kinds() == ["toy_cpu"]


# -- sources, extends, variants, every problem at once -------------------------------------------------
def test_sourced_values_and_where_every_value_comes_from(tmp_path: Path) -> None:
    p = _write(tmp_path, 'kind = "toy_cpu"\n[hardware]\nclock_hz = { value = 5e7, source = "datasheet X, p. 3" }\n'
                         "macs_per_cycle = 8\n")
    t = load_target(str(p), ["energy.mac_pj=0.5"])
    assert t.config.hardware.clock_hz == 5e7
    c = t.constants()
    assert c["hardware.clock_hz"] == Assumption(5e7, "Hz", "datasheet X, p. 3")
    assert c["hardware.macs_per_cycle"].source == "set in cfg.toml without a source"
    assert c["energy.mac_pj"] == Assumption(0.5, "pJ", "--set on the command line")
    # not set anywhere: the field's documented default source
    assert c["energy.sram_read_pj_per_64bit"].source.startswith("Horowitz, ISSCC 2014")
    assert c["hardware.sram_bytes"].unit == "B" and c["hardware.sram_bytes"].source.startswith("schema default")


def test_a_source_must_be_text(tmp_path: Path) -> None:
    msg, p = _error(tmp_path, 'kind = "toy_cpu"\n[energy]\nmac_pj = { value = 0.2, source = 3 }\n')
    assert msg == f"{p}: key 'energy.mac_pj': 'source' must be a non-empty string, got 3"


def test_extends_a_preset_and_overrides_only_what_it_names(tmp_path: Path) -> None:
    p = _write(tmp_path, 'extends = "toy_cpu:default"\nname = "faster"\n[hardware]\nclock_hz = 2e8\n')
    t = load_target(str(p))
    base = load_target("toy_cpu:default")
    assert (t.kind, t.name, t.description) == ("toy_cpu", "faster", "")
    assert t.config.hardware.clock_hz == 2e8
    assert t.config.hardware.sram_bytes == base.config.hardware.sram_bytes == 262144
    c = t.constants()
    assert c["hardware.clock_hz"].source == "set in cfg.toml without a source"
    assert c["hardware.sram_bytes"].source == base.constants()["hardware.sram_bytes"].source
    assert c["hardware.sram_bytes"].source.startswith("assumed:")


def test_extends_a_file_relative_to_the_extending_one_in_a_chain(tmp_path: Path) -> None:
    (tmp_path / "base").mkdir()
    _write(tmp_path / "base", 'extends = "toy_cpu:small"\n[energy]\nmac_pj = 0.5\n', "mid.toml")
    p = _write(tmp_path, 'extends = "base/mid.toml"\n[hardware]\nmacs_per_cycle = 2\n', "top.toml")
    t = load_target(str(p))
    assert (t.config.hardware.macs_per_cycle, t.config.energy.mac_pj, t.config.hardware.sram_bytes) == (2, 0.5, 1024)
    assert t.name == "top"  # names are not inherited


@pytest.mark.parametrize("text, needle", [
    ('extends = "me.toml"\n', "forms a cycle"),
    ('extends = "/etc/passwd"\n', "a file to extend must end in .toml"),
    ('extends = 3\n', "key 'extends' = 3: must be"),
    ('extends = "toy_cpu:nope"\n', "has no preset 'nope'"),
    ('extends = "missing.toml"\n', "missing.toml: no such file"),
    ('extends = "toy_cpu:default"\nkind = "other"\n', "key 'kind' = 'other' but it extends 'toy_cpu:default'"),
])
def test_bad_extends(tmp_path: Path, text: str, needle: str) -> None:
    p = _write(tmp_path, text, "me.toml")
    with pytest.raises(ConfigError) as info:
        load_target(str(p))
    assert str(info.value).startswith(str(p)) and needle in str(info.value), str(info.value)


def test_every_problem_at_once_with_did_you_mean(tmp_path: Path) -> None:
    p = _write(tmp_path, 'kind = "toy_cpu"\n[hardware]\nclock_hx = 1e6\nmacs_per_cycle = 0\n'
                         "[energy]\nmac_pj = -1\n")
    with pytest.raises(ConfigError) as info:
        load_target(str(p))
    lines = info.value.lines()
    assert len(lines) == 3 and all(line.startswith(f"{p}: ") for line in lines)
    assert "key 'energy.mac_pj' = -1" in lines[0]
    assert "unknown key 'hardware.clock_hx' = 1000000.0; did you mean 'hardware.clock_hz'?" in lines[1]
    assert "key 'hardware.macs_per_cycle' = 0: Input should be greater than or equal to 1" in lines[2]
    assert str(info.value).endswith("(and 2 more problems)")


def test_variants_of_a_preset(tmp_path: Path) -> None:
    t = load_target("toy_cpu:default@hardware.macs_per_cycle=16@energy.mac_pj=0.1", ["hardware.macs_per_cycle=2"])
    assert t.name == "toy_cpu:default@hardware.macs_per_cycle=16@energy.mac_pj=0.1"
    assert (t.config.hardware.macs_per_cycle, t.config.energy.mac_pj) == (16, 0.1)  # the variant's own key wins
    assert t.constants()["hardware.macs_per_cycle"].source == "--set on the command line"
    with pytest.raises(ConfigError, match="a config variant is CONFIG@KEY=VALUE"):
        load_target("toy_cpu:default@nonsense")
    # a path that exists is never split
    p = _write(tmp_path, GOOD, "at@home.toml")
    assert load_target(str(p)).name == "mine"


def test_fallbacks_to_schema_defaults_are_named(tmp_path: Path, toy_registry: Any,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    default = _write(tmp_path, 'kind = "toy_cpu"\n[hardware]\nclock_hz = { value = 2e8, source = "datasheet" }\n'
                               "macs_per_cycle = 4\n", "default.toml")
    monkeypatch.setitem(toy_registry.spec("toy_cpu").presets, "default", default)
    mine = _write(tmp_path, 'kind = "toy_cpu"\n[hardware]\nmacs_per_cycle = 8\n', "mine.toml")
    lines = default_fallbacks(str(mine))
    assert lines == ["hardware.clock_hz is not set: the schema default 100000000.0 is used (schema default (no "
                     "source given)), while toy_cpu:default sets 200000000.0; set it, or start the file with "
                     "extends = \"toy_cpu:default\""]
    assert default_fallbacks(str(_write(tmp_path, 'extends = "toy_cpu:default"\n', "e.toml"))) == []
    assert default_fallbacks("toy_cpu:default") == []


def test_show_prints_toml_that_reads_back_with_units_and_sources(tmp_path: Path) -> None:
    import tomllib

    from hwmap.cli import show_config

    t = load_target("toy_cpu:default")
    text = show_config(t)
    assert "mac_pj = 0.23" in text and "# pJ; Horowitz, ISSCC 2014, 45 nm" in text
    assert "clock_hz = 100000000.0" in text and "# Hz; assumed: a microcontroller-class clock" in text
    back = tomllib.loads(text)
    p = _write(tmp_path, text, "shown.toml")
    again = load_target(str(p))
    assert back["kind"] == "toy_cpu" and again.config == t.config


# -- configs accepted by check build: strict types, finite numbers, bounded nesting -------------------
@pytest.mark.parametrize("line, needle", [
    ("macs_per_cycle = true", "key 'hardware.macs_per_cycle' = True: Input should be a valid integer"),
    ("macs_per_cycle = 8.0", "key 'hardware.macs_per_cycle' = 8.0: Input should be a valid integer"),
    ("clock_hz = nan", "key 'hardware.clock_hz' = nan: Input should be a finite number"),
    ("clock_hz = inf", "key 'hardware.clock_hz' = inf"),
    ("sram_bytes = 1e30", "key 'hardware.sram_bytes' = 1e+30"),
])
def test_types_are_strict_and_numbers_finite(tmp_path: Path, line: str, needle: str) -> None:
    msg, _ = _error(tmp_path, f'kind = "toy_cpu"\n[hardware]\n{line}\n')
    assert needle in msg
    assert load_target(str(_write(tmp_path, 'kind = "toy_cpu"\n[hardware]\nclock_hz = 100\n', "int.toml"))) \
        .config.hardware.clock_hz == 100.0  # an integer is a fine float


def test_nesting_is_bounded(tmp_path: Path) -> None:
    msg, _ = _error(tmp_path, 'kind = "toy_cpu"\nx = ' + "[" * 3000 + "]" * 3000 + "\n")
    assert "nested deeper than a config can be (at most 32 levels)" in msg
    msg, _ = _error(tmp_path, 'kind = "toy_cpu"\nx = ' + "[" * 40 + "]" * 40 + "\n")
    assert "nested deeper" in msg
    with pytest.raises(ConfigError, match="key path of 3000 parts; a config nests at most 32 levels"):
        load_target("toy_cpu:default", [".".join(["a"] * 3000) + "=1"])
    with pytest.raises(ConfigError, match="value nested deeper than a config can be"):
        load_target("toy_cpu:default", ["hardware.x=" + "[" * 3000 + "]" * 3000])


def test_a_config_is_read_only_from_a_regular_file() -> None:
    with pytest.raises(ConfigError, match="/dev/zero: file is not a regular file"):
        load_target("/dev/zero")
