"""The commands that describe what is installed and what a config says: ``hwmap targets``,
``zoo``, ``check`` and ``schema`` (run by :func:`hwmap.cli.main`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .cli_io import stdout_console, warn
from .text import markup_escape, one_line, printable

__all__ = ["cmd_targets", "cmd_zoo", "cmd_check", "cmd_schema", "show_config"]


def _preset_descriptions(spec: Any, errors: list[dict[str, str]]) -> dict[str, str | None]:
    """Each preset's own one-line ``description`` (``None`` if it has none); a preset that
    cannot be read is recorded in ``errors``."""
    from .config import read_config
    from .errors import ConfigError

    out: dict[str, str | None] = {}
    for name in sorted(spec.presets):
        try:
            out[name] = read_config(f"{spec.kind}:{name}").description
        except ConfigError as e:
            out[name] = None
            errors.append({"plugin": spec.plugin_name, "error": f"preset {spec.kind}:{name}: {e}"})
    return out


def cmd_targets(args: argparse.Namespace) -> int:
    from .registry import get_registry

    reg = get_registry()
    errors = [{"plugin": e.plugin, "error": e.error} for e in reg.errors]
    rows: list[dict[str, Any]] = [
        {"kind": s.kind, "description": s.description, "plugin": s.plugin_name, "package": s.package,
         "version": s.version, "presets": sorted(s.presets), "preset_descriptions": _preset_descriptions(s, errors),
         "hooks": reg.hooks_of(s.plugin_name)}
        for s in (reg.specs[k] for k in reg.kinds())]
    if args.json:
        print(json.dumps({"targets": rows, "errors": errors}, indent=1))
        return 0
    from rich.table import Table

    table = Table(title="installed hwmap targets")
    for col in ("kind", "package", "version", "presets", "description"):
        table.add_column(col)

    for r in rows:
        table.add_row(*(markup_escape(x) for x in (r["kind"], r["package"], r["version"], ", ".join(r["presets"]),
                                            r["description"])))
    presets = Table(title="presets (use as KIND:PRESET)")
    for col in ("preset", "description"):
        presets.add_column(col)
    for r in rows:
        for name, description in r["preset_descriptions"].items():
            presets.add_row(markup_escape(f"{r['kind']}:{name}"), markup_escape(description or ""))
    con = stdout_console()
    if rows:
        con.print(table)
        if presets.rows:
            con.print(presets)
    else:
        con.print("no target plugins installed (pip install a package that provides the 'hwmap.targets' entry point)")
    for e in errors:
        con.print(f"[red]load error[/red] {markup_escape(e['plugin'])}: {markup_escape(e['error'])}")
    return 0


def cmd_zoo(args: argparse.Namespace) -> int:
    from . import zoo

    models = [{"name": f"zoo:{m.name}", "input_shape": list(m.input_shape), "description": m.description,
               "data": f"zoo:{m.data}" if m.data else None} for m in zoo.list_models()]
    data = [{"name": f"zoo:{d.name}", "samples": d.samples, "sample_shape": list(d.sample_shape),
             "classes": d.classes, "description": d.description} for d in zoo.list_data_sets()]
    if args.json:
        print(json.dumps({"models": models, "data": data}, indent=1))
        return 0
    lines = [("models:", "", "")]
    lines += [(f"zoo:{m.name}", "×".join(map(str, m.input_shape)), m.description) for m in zoo.list_models()]
    lines += [("data sets:", "", "")]
    lines += [(f"zoo:{d.name}", f"{d.samples} × " + "×".join(map(str, d.sample_shape)),
               f"{d.description} ({d.samples} samples)") for d in zoo.list_data_sets()]
    name_w = max(len(n) for n, shape, _ in lines if shape)
    shape_w = max(len(shape) for _, shape, _ in lines)
    for name, shape, what in lines:
        print(f"  {name:<{name_w}}  {shape:<{shape_w}}  {what}" if shape else name)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .config import default_fallbacks, load_target

    target = load_target(args.config, args.set or [])
    if not args.set:
        for line in default_fallbacks(args.config):
            warn(f"{args.config}: {line}")
    if args.show:
        sys.stdout.write(printable(show_config(target)))
    else:
        print(one_line(f"{args.config}: valid {target.kind} config {target.name!r}"))
    return 0


def show_config(target: Any) -> str:
    """The effective config as TOML, each value followed by its unit and source."""
    from .tomlwrite import dumps_toml

    constants = target.constants()
    comments = {path: "; ".join(x for x in (a.unit, a.source) if x) for path, a in constants.items()}
    head = {"kind": target.kind, "name": target.name}
    if target.description:
        head["description"] = target.description
    text = f"# effective config of {target.source}: every value with its unit and source\n"
    return text + dumps_toml({**head, **target.config.model_dump(mode="json")}, comments)


def cmd_schema(args: argparse.Namespace) -> int:
    from .config import schema_for

    print(json.dumps(schema_for(args.kind), indent=1, sort_keys=True))
    return 0
