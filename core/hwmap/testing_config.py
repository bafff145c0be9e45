"""Checks 1 and 2 of the conformance suite (:mod:`hwmap.testing`): how a target kind is
registered (description, a config model that rejects unknown keys and non-finite numbers, a
``default`` preset), and its presets (each loads, every value it sets has a source, the
schema can be produced, a wrong key is a :class:`hwmap.ConfigError` naming it).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

from pydantic import BaseModel

from .config import load_target, read_toml, schema_for
from .constants import UNSOURCED
from .errors import ConfigError, describe_error
from .target import TargetConfig, TargetSpec
from .tomlwrite import dumps_toml

__all__ = ["check_registration", "check_configs", "BOGUS_KEY"]

#: The key the suite adds to a preset to see it rejected.
BOGUS_KEY = "hwmap_conformance_unknown_key"
#: How a config source reads when the file gave a value without one (hwmap.config).
_UNSOURCED = re.compile("^" + re.escape(UNSOURCED).replace(re.escape("{}"), "(?P<file>.+)") + "$")


# -- 1. registration -----------------------------------------------------------------------------
def check_registration(spec: TargetSpec) -> list[str]:
    out = []
    if not isinstance(spec.description, str) or not spec.description.strip():
        out.append("registration: the kind has no description")
    model = spec.config_model
    if not (isinstance(model, type) and issubclass(model, BaseModel)):
        out.append(f"registration: config model {model!r} is not a pydantic model")
        return out
    if not issubclass(model, TargetConfig) and model.model_config.get("extra") != "forbid":
        out.append(f"registration: config model {model.__name__} accepts unknown keys "
                   "(subclass hwmap.TargetConfig or set extra='forbid')")
    for name, info in model.model_fields.items():
        if name in ("kind", "name"):
            out.append(f"registration: config model field {name!r} clashes with the config file's own {name!r} key")
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            if ann.model_config.get("extra") != "forbid":
                out.append(f"registration: config table [{name}] ({ann.__name__}) accepts unknown keys "
                           "(derive it from hwmap.ConfigSection)")
            if ann.model_config.get("allow_inf_nan", True):
                out.append(f"registration: config table [{name}] ({ann.__name__}) accepts inf and nan "
                           "(derive it from hwmap.ConfigSection)")
    if "default" not in spec.presets:
        out.append(f"registration: no 'default' preset (presets: {', '.join(sorted(spec.presets)) or 'none'}); "
                   "compare and demo use it")
    return out


# -- 2. configs ---------------------------------------------------------------------------------------
def check_configs(spec: TargetSpec, tmp_path: Path) -> list[str]:
    out = []
    kind = spec.kind
    reported: set[str] = set()  # files whose unsourced values are reported (presets extend each other)
    for name in sorted(spec.presets):
        ref = f"{kind}:{name}"
        try:
            t = load_target(ref)
        except Exception as e:
            out.append(f"preset {ref}: does not load: {describe_error(e)}")
            continue
        if t.kind != kind:
            out.append(f"preset {ref}: declares kind {t.kind!r}")
        out += _check_sources(ref, t.sources, reported)
    try:
        json.dumps(schema_for(kind))
    except Exception as e:
        out.append(f"schema: hwmap schema {kind} fails: {describe_error(e)}")
    if "default" not in spec.presets:
        return out
    try:
        base = read_toml(spec.presets["default"])
    except Exception as e:
        return out + [f"preset {kind}:default: cannot be read: {describe_error(e)}"]
    bad = copy.deepcopy(base)
    bad[BOGUS_KEY] = 1
    cases = [(BOGUS_KEY, bad)]
    # every table the schema describes with its own model (a free-form dict table may take any key)
    fields = spec.config_model.model_fields
    for table in sorted(base):
        ann = fields[table].annotation if table in fields else None
        if isinstance(base[table], dict) and isinstance(ann, type) and issubclass(ann, BaseModel):
            bad = copy.deepcopy(base)
            bad[table][BOGUS_KEY] = 1
            cases.append((f"{table}.{BOGUS_KEY}", bad))
    for i, (key, doc) in enumerate(cases):
        p = tmp_path / f"wrong-key-{i}.toml"
        p.write_text(dumps_toml(doc))
        try:
            load_target(str(p))
        except ConfigError as e:
            if key not in str(e):
                out.append(f"config: the error for an unknown key {key!r} does not name it: {e}")
        except Exception as e:
            out.append(f"config: an unknown key {key!r} raises {type(e).__name__}, not ConfigError: "
                       f"{describe_error(e)}")
        else:
            out.append(f"config: an unknown key {key!r} in a copy of the default preset is accepted")
    return out


def _check_sources(ref: str, sources: dict[str, str], reported: set[str]) -> list[str]:
    """One line per file of preset ``ref`` (itself or one it extends) that sets values without
    a source, naming the keys; a file already in ``reported`` is not reported again."""
    by_file: dict[str, list[str]] = {}
    for path in sorted(sources):
        unsourced = _UNSOURCED.match(sources[path])
        if unsourced and unsourced["file"] not in reported:
            by_file.setdefault(unsourced["file"], []).append(path)
    reported.update(by_file)
    return [f"preset {ref}: {len(keys)} value{'s' if len(keys) > 1 else ''} set in {file} without a source: "
            f"{', '.join(keys)} (write key = {{ value = ..., source = \"...\" }})" for file, keys in by_file.items()]
