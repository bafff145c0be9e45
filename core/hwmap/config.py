"""Target configurations: TOML files (or ``KIND:PRESET``) validated by the plugin's schema.

A config names its ``kind`` and optionally a ``name`` and a one-line ``description``; every
other table belongs to the plugin's pydantic model. A file may start with ``extends =
"KIND:PRESET"`` (or the path of another TOML file, relative to this one and in its folder
or below it: never an absolute path, a ``..`` climb or a link leading out) and then sets only
what it changes: tables merge key by key, ``kind`` is inherited, ``name`` and
``description`` are not. A value may carry its source::

    adc_pj_per_conversion = { value = 1.56, source = "Shafiee et al., ISCA 2016, Table II" }

(a table whose keys are ``value`` and ``source`` is a sourced value, not a table).
``--set a.b=VALUE`` overrides one key; VALUE is read as a TOML value (``8``, ``2.5``,
``true``, ``"text"``, ``[1, 2]``) and as a bare string otherwise. ``KIND:PRESET@a.b=1@c=2``
is a variant of a preset with those overrides.

Every problem of a config is reported, one line each, naming the file, the key path, the
value and what is allowed, with "did you mean" for a misspelt key.
"""

from __future__ import annotations

import copy
import difflib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from pydantic import BaseModel, ValidationError

from .constants import NO_SOURCE, SET_SOURCE, UNSOURCED, field_source, leaf_fields, leaves
from .errors import ConfigError
from .safeio import read_file
from .target import Target

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

__all__ = ["load_target", "parse_overrides", "validate_config", "read_toml", "schema_for", "read_config",
           "split_variant", "presets_in", "ConfigDoc", "default_fallbacks", "MAX_CONFIG_BYTES", "MAX_EXTENDS_DEPTH",
           "MAX_DEPTH"]

#: A config file larger than this is refused (configs are a few kB; memory stays bounded).
MAX_CONFIG_BYTES = 1 << 20
#: How many files an ``extends`` chain may hold.
MAX_EXTENDS_DEPTH = 16
#: How deep tables and arrays may nest in a config (and a ``--set`` key path may reach).
MAX_DEPTH = 32
#: Top-level keys the core reads itself; everything else is the plugin's schema.
_CORE_KEYS = ("kind", "name", "description", "extends")
_SOURCED_KEYS = {"value", "source"}


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict (sourced values still in their ``{value, source}`` form)."""
    if "\x00" in str(path):
        raise ConfigError("a path cannot hold a NUL byte", where=repr(str(path)))
    raw = read_file(Path(path), what="file", error=ConfigError, limit=MAX_CONFIG_BYTES)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"not UTF-8 text (byte {e.start})", where=str(path)) from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"invalid TOML: {e}", where=str(path)) from None
    except RecursionError:
        raise ConfigError(f"nested deeper than a config can be (at most {MAX_DEPTH} levels)", where=str(path)) from None
    _check_depth(doc, str(path))
    return doc


def _check_depth(value: Any, where: str, depth: int = 0) -> None:
    """Refuse tables or arrays nested deeper than :data:`MAX_DEPTH` (validation recurses)."""
    if depth > MAX_DEPTH:
        raise ConfigError(f"nested deeper than a config can be (at most {MAX_DEPTH} levels)", where=where)
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    for v in children:
        _check_depth(v, where, depth + 1)


def parse_overrides(items: Iterable[str]) -> list[tuple[list[str], Any]]:
    """``["hardware.cores=8"]`` -> ``[(["hardware", "cores"], 8)]``."""
    out = []
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE with a dotted KEY, e.g. hardware.cores=8")
        key, raw = item.split("=", 1)
        path = [p.strip() for p in key.strip().split(".")]
        if not key.strip() or any(not p for p in path):
            raise ConfigError(f"--set {item[:80]!r}: empty key or key part")
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"--set: key path of {len(path)} parts; a config nests at most {MAX_DEPTH} levels")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        except RecursionError:
            raise ConfigError(f"--set {key[:80]}: value nested deeper than a config can be") from None
        _check_depth(value, f"--set {key[:80]}", len(path))
        out.append((path, value))
    return out


# -- files, extends and sources ------------------------------------------------------------------------
@dataclass
class ConfigDoc:
    """A config as read: ``data`` (plain values, ``kind`` included), ``sources`` (dotted
    path -> source of each value the files gave), the files read (the ``extends`` chain,
    the named file first), and the named file's own ``name`` and ``description``."""

    data: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    name: str | None = None
    description: str | None = None
    where: str = ""


def _is_sourced(v: Any) -> bool:
    return isinstance(v, dict) and set(v) == _SOURCED_KEYS


def _strip_sources(d: dict[str, Any], where: str, label: str, prefix: str = "") -> tuple[dict[str, Any],
                                                                                             dict[str, str]]:
    """``d`` with sourced values replaced by their value, and the source of every leaf."""
    out: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for k, v in d.items():
        path = f"{prefix}{k}"
        if _is_sourced(v):
            src = v["source"]
            if not isinstance(src, str) or not src.strip():
                raise ConfigError(f"key {path!r}: 'source' must be a non-empty string, got {src!r}", where=where)
            out[k] = v["value"]
            sources[path] = src.strip()
        elif isinstance(v, dict):
            out[k], inner = _strip_sources(v, where, label, path + ".")
            sources.update(inner)
        else:
            out[k] = v
            sources[path] = UNSOURCED.format(label)
    return out, sources


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _resolve(ref: str) -> tuple[Path, str, str]:
    """A config reference -> (file, where for messages, label for sources)."""
    from .registry import get_registry

    path = Path(ref)
    if not path.exists() and ":" in ref and not ref.endswith(".toml"):
        kind, preset = ref.split(":", 1)
        spec = get_registry().spec(kind)
        if preset not in spec.presets:
            raise ConfigError(f"target kind {kind!r} has no preset {preset!r} "
                              f"(presets: {', '.join(sorted(spec.presets)) or 'none'})", where=ref)
        file = spec.presets[preset]
        return file, f"{ref} ({file})", f"preset {ref}"
    return path, str(path), path.name


def read_config(ref: str, _chain: tuple[Path, ...] = ()) -> ConfigDoc:
    """Read a config (a TOML path or ``KIND:PRESET``) with its ``extends`` chain merged."""
    path, where, label = _resolve(ref)
    raw = read_toml(path)
    key = path.resolve()
    extends = raw.pop("extends", None)
    name = raw.pop("name", None)
    description = raw.pop("description", None)
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"key 'name' = {name!r}: must be a string", where=where)
    if description is not None and not isinstance(description, str):
        raise ConfigError(f"key 'description' = {description!r}: must be a string", where=where)
    data, sources = _strip_sources(raw, where, label)
    files = [where]
    if extends is not None:
        if not isinstance(extends, str) or not extends.strip():
            raise ConfigError(f"key 'extends' = {extends!r}: must be \"KIND:PRESET\" or the path of a .toml file",
                              where=where)
        if len(_chain) + 1 >= MAX_EXTENDS_DEPTH:
            raise ConfigError(f"extends chain longer than {MAX_EXTENDS_DEPTH} files", where=where)
        parent_ref = extends
        local = Path(extends)
        if not (":" in extends and not extends.endswith(".toml")):
            if local.suffix != ".toml":
                raise ConfigError(f"key 'extends' = {extends!r}: a file to extend must end in .toml "
                                  "(or name a preset as KIND:PRESET)", where=where)
            folder = path.parent.resolve()
            if local.is_absolute() or not (folder / local).resolve().is_relative_to(folder):
                raise ConfigError(f"key 'extends' = {extends!r}: the file is outside the folder of the file extending "
                                  f"it ({str(path.parent)!r}); refused: extend a preset (KIND:PRESET) or a file in "
                                  "that folder or below it", where=where)
            parent_ref = str(path.parent / local)
        try:
            parent_path = _resolve(parent_ref)[0]
            if parent_path.exists() and parent_path.resolve() in (*_chain, key):
                raise ConfigError("forms a cycle")
            parent = read_config(parent_ref, (*_chain, key))
        except ConfigError as e:
            raise ConfigError(f"extends {extends!r}: {e}", where=where) from None
        pkind, kind = parent.data.get("kind"), data.get("kind")
        if kind is not None and pkind is not None and kind != pkind:
            raise ConfigError(f"key 'kind' = {kind!r} but it extends {extends!r} of kind {pkind!r}", where=where)
        data = _merge(parent.data, data)
        sources = {**{k: v for k, v in parent.sources.items() if k not in _CORE_KEYS}, **sources}
        files += parent.files
    sources.pop("kind", None)
    return ConfigDoc(data, sources, files, name, description, where)


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


def split_variant(ref: str) -> tuple[str, list[str]]:
    """``"analog_imc:default@hardware.cores=16@noc.link_width_bits=32"`` -> the config and
    its overrides. A path that exists is never split (it may contain ``@``)."""
    if Path(ref).exists() or "@" not in ref:
        return ref, []
    base, *items = ref.split("@")
    if not base or any("=" not in i for i in items):
        raise ConfigError("a config variant is CONFIG@KEY=VALUE[@KEY=VALUE...], e.g. "
                          "analog_imc:default@hardware.cores=16", where=ref)
    return base, items


def load_target(ref: str, overrides: Iterable[str] = ()) -> Target:
    """Load a target config from a TOML path, ``KIND:PRESET`` or ``CONFIG@KEY=VALUE...``
    and apply ``--set`` items (``overrides`` first, then the variant's own, which win)."""
    from .registry import get_registry

    base, variant = split_variant(ref)
    doc = read_config(base)
    where = doc.where
    data = doc.data
    sources = dict(doc.sources)
    for keypath, value in parse_overrides([*overrides, *variant]):  # a variant's own keys win
        _apply_override(data, keypath, value, where)
        dotted = ".".join(keypath)
        sources = {k: v for k, v in sources.items() if not k.startswith(dotted + ".")}
        sources[dotted] = SET_SOURCE
    kind = data.pop("kind", None)
    name, description = data.pop("name", doc.name), data.pop("description", doc.description)
    for key, v in (("name", name), ("description", description)):
        sources.pop(key, None)
        if v is not None and not isinstance(v, str):
            raise ConfigError(f"key {key!r} = {v!r}: must be a string", where=where)
    sources.pop("kind", None)
    if kind is None:
        raise ConfigError("missing required key 'kind' (the target kind, e.g. kind = \"analog_imc\", or "
                          "extends = \"analog_imc:default\")", where=where)
    if not isinstance(kind, str):
        raise ConfigError(f"key 'kind' = {kind!r}: must be a string", where=where)
    try:
        spec = get_registry().spec(kind)
    except Exception as e:
        raise ConfigError(str(e), where=where) from None
    config = validate_config(spec.config_model, data, where)
    if variant:
        label = ref
    else:
        label = name or (ref if ":" in ref and not Path(ref).exists() else Path(base).stem)
    return Target(spec=spec, config=config, name=label, source=where, sources=sources,
                  description=description or "")


# -- validation -----------------------------------------------------------------------------------------
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


def _known_keys(model: type[BaseModel], parent: tuple[Any, ...]) -> list[str]:
    current: Any = model
    for part in parent:
        fields = getattr(current, "model_fields", {})
        info = fields.get(part) if isinstance(part, str) else None
        ann = info.annotation if info is not None else None
        current = ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None
        if current is None:
            return []
    keys = sorted(getattr(current, "model_fields", {}))
    return keys if parent else sorted({"kind", "name", "description", "extends", *keys})


def _problem(model: type[BaseModel], err: Any) -> str:
    loc = tuple(err.get("loc", ()))
    key = ".".join(str(p) for p in loc) or "(top level)"
    value = err.get("input")
    shown = repr(value) if not isinstance(value, dict) else "a table"
    if err.get("type") == "extra_forbidden":
        known = _known_keys(model, loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), [k for k in known if k != loc[-1]], n=1,
                                          cutoff=0.6) if loc else []
        hint = f"did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}? " if close else ""
        return f"unknown key {key!r} = {shown}; {hint}known keys: {', '.join(known)}"
    text = str(err.get("msg", "invalid"))
    if err.get("type") == "value_error" and isinstance(value, dict):
        # a check across a table's keys (e.g. an element that does not divide its crossbar):
        # the plugin's message names the keys and what is allowed
        return f"table {key!r}: {text.removeprefix('Value error, ')}"
    allowed = _describe_allowed(model, loc)
    return f"key {key!r} = {shown}: {text}" + (f"; {allowed}" if allowed else "")


def validate_config(model: type[BaseModel], body: dict[str, Any], where: str) -> BaseModel:
    """``body`` validated by ``model``; every problem in one :class:`ConfigError`."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        errors = sorted(e.errors(), key=lambda err: [str(p) for p in err.get("loc", ())])  # by key path
        problems = [_problem(model, err) for err in errors]
        raise ConfigError(problems[0], where=where, problems=problems) from None


# -- what a config leaves to the schema -------------------------------------------------------------
def default_fallbacks(ref: str) -> list[str]:
    """Values a config without ``extends`` takes from the schema's defaults although its
    kind's ``default`` preset sets them differently: one line each (``hwmap check`` warns)."""
    base, variant = split_variant(ref)
    doc = read_config(base)
    if len(doc.files) > 1:
        return []
    target = load_target(ref)
    spec = target.spec
    if "default" not in spec.presets:
        return []
    preset = load_target(f"{spec.kind}:default")
    mine = leaves(target.config.model_dump(mode="json"))
    theirs = leaves(preset.config.model_dump(mode="json"))
    fields = leaf_fields(spec.config_model)
    out = []
    for path in sorted(mine):
        if path in target.sources or any(path.startswith(k + ".") for k in target.sources):
            continue
        if path in theirs and theirs[path] != mine[path]:
            src = field_source(fields[path][1]) if path in fields else ""
            out.append(f"{path} is not set: the schema default {mine[path]!r} is used "
                       f"({src or NO_SOURCE}), while {spec.kind}:default sets {theirs[path]!r}; "
                       f"set it, or start the file with extends = \"{spec.kind}:default\"")
    return out


def presets_in(package: str, folder: str = "presets") -> dict[str, Path]:
    """The ``*.toml`` files shipped in ``package``'s ``folder``, by stem, sorted: what a
    plugin passes to ``register(presets=...)``."""
    from importlib import resources

    try:
        root = resources.files(package) / folder
        files = sorted((p for p in root.iterdir() if p.name.endswith(".toml")), key=lambda p: p.name)
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError) as e:
        raise ConfigError(f"no preset folder {folder!r} in package {package!r}: {e}") from None
    return {p.name[: -len(".toml")]: Path(str(p)) for p in files}


def schema_for(kind: str) -> dict[str, Any]:
    """JSON Schema of a kind's config file (``kind``, ``name``, ``description`` and
    ``extends`` included) for editors."""
    from .registry import get_registry

    spec = get_registry().spec(kind)
    schema = spec.config_model.model_json_schema()
    props = {"kind": {"const": kind, "type": "string"}, "name": {"type": "string"},
             "description": {"type": "string"},
             "extends": {"type": "string", "description": "KIND:PRESET or the path of a .toml file this one "
                                                          "extends: tables merge, this file's keys win"}}
    props.update(schema.get("properties", {}))
    schema["properties"] = props
    schema["required"] = [r for r in schema.get("required", []) if r != "kind"]
    schema["anyOf"] = [{"required": ["kind"]}, {"required": ["extends"]}]  # a file extending another inherits kind
    schema["additionalProperties"] = False
    schema.setdefault("title", f"hwmap target config: {kind}")
    return schema
