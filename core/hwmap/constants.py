"""Config values as sourced constants: their units, their sources, and the schema helper.

A plugin declares a physical constant of its config with :func:`constant`, which puts the
unit and the source of the default into the field's JSON Schema (``hwmap schema`` shows
them) and into its description::

    adc_pj_per_conversion: float = constant(1.56, "pJ", "Shafiee et al., ISCA 2016 (ISAAC), "
                                            "Table II: 2 mW at 1.28 GS/s", ge=0,
                                            description="energy of one ADC conversion")

A field declared with plain ``Field`` gets its unit from its name (``read_pulse_s`` → s,
``adc_pj_per_conversion`` → pJ/conversion, ``input_buffer_bytes`` → B).

:func:`config_constants` lists every value of a target's effective config as an
:class:`~hwmap.kpi.Assumption` (value, unit, source): the source a config file gave the
value, ``--set``, or the field's default source.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from pydantic.fields import FieldInfo

from .kpi import Assumption

if TYPE_CHECKING:
    from .target import Target

__all__ = ["constant", "field_unit", "field_source", "config_constants", "leaf_fields", "SET_SOURCE",
           "NO_SOURCE", "UNSOURCED", "leaves"]

#: The source of a value given with ``--set`` (or a ``KIND:PRESET@key=value`` variant).
SET_SOURCE = "--set on the command line"
#: The source a config value gets when its file gives it without one (``{}``: the file's label).
UNSOURCED = "set in {} without a source"
#: The source of a schema default the plugin did not document.
NO_SOURCE = "schema default (no source given)"

#: Unit words in field names (``_pj_`` → pJ); the first one found names the unit, the words
#: after a following ``per`` its denominator.
_UNIT_WORDS = {
    "j": "J", "mj": "mJ", "uj": "µJ", "nj": "nJ", "pj": "pJ", "fj": "fJ",
    "w": "W", "mw": "mW", "uw": "µW",
    "s": "s", "ms": "ms", "ns": "ns",
    "hz": "Hz", "mhz": "MHz", "ghz": "GHz",
    "bytes": "B", "bits": "bit", "bit": "bit", "cycles": "cycles",
}


def constant(default: Any, unit: str = "", source: str = "", *, description: str = "", **kwargs: Any) -> Any:
    """A pydantic ``Field`` for a config constant: its default, unit and the source of the
    default (a citation, or ``"assumed: <reason>"``); ``kwargs`` are ``Field``'s (``ge``,
    ``le``, ...). The source is appended to the description, so editors show it too."""
    extra: dict[str, Any] = {"unit": unit, "source": source}
    text = description
    if source:
        text = f"{description} [default: {source}]" if description else f"[default: {source}]"
    return Field(default, description=text or None, json_schema_extra=extra, **kwargs)


def _extra(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    return extra if isinstance(extra, dict) else {}


def field_unit(name: str, info: FieldInfo | None) -> str:
    """The unit of a config field: declared with :func:`constant`, else read from its name."""
    if info is not None and isinstance(_extra(info).get("unit"), str) and _extra(info)["unit"]:
        return str(_extra(info)["unit"])
    words = name.lower().split("_")
    for i, w in enumerate(words):
        if w in _UNIT_WORDS and i > 0:
            unit = _UNIT_WORDS[w]
            rest = words[i + 1:]
            if rest[:1] == ["per"] and len(rest) > 1:
                unit += "/" + "/".join(rest[1:])
            return unit
    return ""


def field_source(info: FieldInfo | None) -> str:
    """The documented source of a field's default (:func:`constant`), or ``""``."""
    if info is None:
        return ""
    src = _extra(info).get("source")
    return src if isinstance(src, str) else ""


def leaf_fields(model: type[BaseModel], prefix: str = "") -> dict[str, tuple[str, FieldInfo]]:
    """Every leaf field of a config model by dotted path: ``(field name, FieldInfo)``;
    nested models (the config's tables) are walked."""
    out: dict[str, tuple[str, FieldInfo]] = {}
    for name, info in model.model_fields.items():
        ann = info.annotation
        path = f"{prefix}{name}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out.update(leaf_fields(ann, path + "."))
        else:
            out[path] = (name, info)
    return out


def leaves(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{dotted path: leaf value}``."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_constants(target: "Target") -> dict[str, Assumption]:
    """Every value of ``target``'s effective config, by dotted path, with unit and source.

    A value inside a free-form table (a ``dict`` field) is listed under its full path, with
    the source of the nearest path the config files named.
    """
    fields = leaf_fields(type(target.config))
    values = leaves(target.config.model_dump(mode="json"))
    out: dict[str, Assumption] = {}
    for path in sorted(values):
        owner = path
        while owner not in fields and "." in owner:
            owner = owner.rsplit(".", 1)[0]
        name, info = fields.get(owner, (path.rsplit(".", 1)[-1], None))
        source = _given_source(target.sources, path)
        if source is None:
            source = field_source(info) or f"{NO_SOURCE}: {target.kind} {owner}"
        out[path] = Assumption(values[path], field_unit(path.rsplit(".", 1)[-1] if owner != path else name, info),
                               source)
    return out


def _given_source(sources: dict[str, str], path: str) -> str | None:
    """The source a config file or ``--set`` gave ``path`` or a table holding it."""
    probe = path
    while True:
        if probe in sources:
            return sources[probe]
        if "." not in probe:
            return None
        probe = probe.rsplit(".", 1)[0]
