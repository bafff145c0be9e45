"""Target configurations: TOML files (or ``KIND:PRESET``) validated by the plugin's schema.

A config names its ``kind`` and optionally a ``name``; every other table belongs to the
plugin's pydantic model. Every error names the file, the key path, the offending value and
what is allowed. ``--set a.b=VALUE`` overrides one key; VALUE is read as a TOML value
(``8``, ``2.5``, ``true``, ``"text"``, ``[1, 2]``) and as a bare string otherwise.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from .errors import ConfigError
from .target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_target", "parse_overrides", "validate_config", "read_toml", "schema_for"]


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise ConfigError("no such file", where=str(path)) from None
    except (OSError, UnicodeDecodeError, ValueError) as e:  # ValueError: a NUL byte in the path
        raise ConfigError(f"cannot read: {e}", where=repr(str(path)) if "\x00" in str(path) else str(path)) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", where=str(path)) from None


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["hardware.cores=8"]`` -> ``[(["hardware", "cores"], 8)]``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY, e.g. hardware.cores=8")
        key, raw = item.split("=", 1)
        path = [p for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in path):
            raise ConfigError(f"--set {item!r}: empty key or key part")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out.append((path, value))
    return out


def _apply_override(data: dict[str, Any], path: list[str], value: Any, where: str) -> None:
    node = data
    for i, part in enumerate(path[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        elif not isinstance(nxt, dict):
            raise ConfigError(f"--set {'.'.join(path)}: {'.'.join(path[:i + 1])} is a value, not a table", where=where)
        node = nxt
    node[path[-1]] = value


def _describe_allowed(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """What the schema allows at ``loc``: the field's type, bounds and description."""
    fields = model.model_fields
    current: Any = model
    info = None
    for part in loc:
        if isinstance(part, int) or current is None or not hasattr(current, "model_fields"):
            break
        fields = current.model_fields
        if part not in fields:
            return f"known keys: {', '.join(sorted(fields))}"
        info = fields[part]
        ann = info.annotation
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
    if info is None:
        return ""
    bits = []
    ann = info.annotation
    bits.append(getattr(ann, "__name__", str(ann)).replace("typing.", ""))
    for m in info.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            v = getattr(m, attr, None)
            if v is not None:
                bits.append(f"{sym} {v}")
    if info.description:
        bits.append(f"({info.description})")
    return "allowed: " + " ".join(bits)


def validate_config(model: type[BaseModel], body: dict[str, Any], where: str) -> BaseModel:
    try:
        return model.model_validate(body)
    except ValidationError as e:
        err = e.errors()[0]
        loc = tuple(err.get("loc", ()))
        key = ".".join(str(p) for p in loc) or "(top level)"
        value = err.get("input")
        if err.get("type") == "extra_forbidden":
            parent = loc[:-1]
            allowed = _describe_allowed(model, parent + ("__none__",)) if parent else \
                f"known keys: kind, name, {', '.join(sorted(model.model_fields))}"
            shown = repr(value) if not isinstance(value, dict) else "a table"
            msg = f"unknown key {key!r} = {shown}; {allowed}"
        else:
            text = str(err.get("msg", "invalid"))
            if err.get("type") == "value_error" and isinstance(value, dict):
                # a check across a table's keys (e.g. an element that does not divide its
                # crossbar): the plugin's message names the keys and what is allowed
                msg = f"table {key!r}: {text.removeprefix('Value error, ')}"
            else:
                allowed = _describe_allowed(model, loc)
                shown = repr(value) if not isinstance(value, dict) else "a table"
                msg = f"key {key!r} = {shown}: {text}" + (f"; {allowed}" if allowed else "")
        more = len(e.errors()) - 1
        if more:
            msg += f" (and {more} more problem{'s' if more > 1 else ''})"
        raise ConfigError(msg, where=where) from None


def load_target(ref: str, overrides: Iterable[str] = ()) -> Target:
    """Load a target config from a TOML path or ``KIND:PRESET`` and apply ``--set`` items."""
    from .registry import get_registry

    reg = get_registry()
    path = Path(ref)
    if not path.exists() and ":" in ref and not ref.endswith(".toml"):
        kind, preset = ref.split(":", 1)
        spec = reg.spec(kind)
        if preset not in spec.presets:
            raise ConfigError(f"target kind {kind!r} has no preset {preset!r} "
                              f"(presets: {', '.join(sorted(spec.presets)) or 'none'})", where=ref)
        path = spec.presets[preset]
        where = f"{ref} ({path})"
    else:
        where = str(path)
    data = read_toml(path)
    data = copy.deepcopy(data)
    for keypath, value in parse_overrides(overrides):
        _apply_override(data, keypath, value, where)
    kind = data.pop("kind", None)
    if kind is None:
        raise ConfigError("missing required key 'kind' (the target kind, e.g. kind = \"analog_imc\")", where=where)
    if not isinstance(kind, str):
        raise ConfigError(f"key 'kind' = {kind!r}: must be a string", where=where)
    try:
        spec = reg.spec(kind)
    except Exception as e:
        raise ConfigError(str(e), where=where) from None
    name = data.pop("name", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"key 'name' = {name!r}: must be a string", where=where)
    config = validate_config(spec.config_model, data, where)
    label = name or (ref if ":" in ref and not Path(ref).exists() else path.stem)
    return Target(spec=spec, config=config, name=label, source=where)


def schema_for(kind: str) -> dict[str, Any]:
    """JSON Schema of a kind's config file (``kind`` and ``name`` included) for editors."""
    from .registry import get_registry

    spec = get_registry().spec(kind)
    schema = spec.config_model.model_json_schema()
    props = {"kind": {"const": kind, "type": "string"}, "name": {"type": "string"}}
    props.update(schema.get("properties", {}))
    schema["properties"] = props
    schema["required"] = ["kind"] + [r for r in schema.get("required", []) if r != "kind"]
    schema["additionalProperties"] = False
    schema.setdefault("title", f"hwmap target config: {kind}")
    return schema
