"""The search space of ``hwmap explore``: a TOML file, read and checked against each target
kind's config schema before anything runs.

::

    sampler = "nsga2"                 # nsga2 (default), tpe, random or grid
    seed = 0
    constraints = ["accuracy >= 0.95"]

    [objectives]                       # KPI columns, each minimized or maximized
    energy_per_inference_j = "minimize"
    latency_s = "minimize"

    [[targets]]                        # one table per target; kinds compete
    target = "analog_imc:default"      # KIND:PRESET, a variant, or a config file (relative to this file)
    [targets.space]                    # quoted dotted config keys: a list of choices or a range
    "hardware.cores" = [4, 8, 16]
    "hardware.adc_bits" = { low = 4, high = 10 }
    "energy.adc_pj_per_conversion" = { low = 0.5, high = 4.0, log = true }

A single target may also be written at the top level (``target = ...`` and ``[space]``).
Every choice and both ends of every range are validated by loading the target with that
value set, so a key the schema does not know, a value it refuses, or an empty range is one
error naming the file and the key, before any trial.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from ..config import load_target, parse_overrides, read_toml
from ..constants import leaf_fields
from ..errors import ConfigError
from ..tomlwrite import toml_value
from .objectives import Constraint, Objective, parse_constraints, parse_objectives

__all__ = ["Param", "TargetSpace", "Space", "read_space", "SAMPLERS", "MAX_TARGETS", "MAX_PARAMS"]

#: The samplers a space may ask for (``nsga2`` is the default).
SAMPLERS = ("nsga2", "tpe", "random", "grid")
#: Bounds that keep a space file small (it is input like any other file).
MAX_TARGETS = 64
MAX_PARAMS = 64
MAX_CHOICES = 4096
#: the most configs the grid sampler enumerates (each is queued in the study before it runs)
MAX_GRID = 65536
_TOP_KEYS = {"sampler", "seed", "population", "objectives", "constraints", "targets", "target", "space"}
_RANGE_KEYS = {"low", "high", "log", "step"}

Value = bool | int | float | str


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


@dataclass(frozen=True)
class Param:
    """One config key searched over: ``choices`` (a list), or a range ``low``..``high``
    (inclusive; integers when both ends and the step are integers) on a linear or ``log``
    scale with an optional ``step``."""

    key: str
    choices: tuple[Value, ...] | None = None
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None

    @property
    def integer(self) -> bool:
        return self.choices is None and isinstance(self.low, int) and isinstance(self.high, int) \
            and (self.step is None or isinstance(self.step, int))

    def size(self) -> int | None:
        """How many values the parameter takes (``None``: a continuous range)."""
        if self.choices is not None:
            return len(self.choices)
        assert self.low is not None and self.high is not None
        if self.integer:
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.step is None:
            return None
        return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1

    def values(self) -> list[Value]:
        """Every value, in order (what the grid enumerates)."""
        if self.choices is not None:
            return list(self.choices)
        n = self.size()
        if n is None:
            raise ConfigError(f"{self.key!r}: a continuous range has no grid; give it a step or a list of choices")
        assert self.low is not None
        if self.integer:
            return [int(self.low) + i * int(self.step or 1) for i in range(n)]
        assert self.step is not None
        return [float(self.low + i * self.step) for i in range(n)]

    def to_json(self) -> dict[str, Any]:
        if self.choices is not None:
            return {"key": self.key, "choices": list(self.choices)}
        return {"key": self.key, "low": self.low, "high": self.high, "log": self.log, "step": self.step}


@dataclass(frozen=True)
class TargetSpace:
    """One target config (``ref``, shown as ``label``) and the keys searched on it."""

    ref: str
    label: str
    kind: str
    params: tuple[Param, ...]

    def size(self) -> int | None:
        sizes = [p.size() for p in self.params]
        return None if any(s is None for s in sizes) else math.prod(s for s in sizes if s is not None)

    def points(self) -> Iterator[dict[str, Value]]:
        """Every config of the space (the exhaustive grid), the last key varying fastest."""
        keys = [p.key for p in self.params]
        for combo in itertools.product(*(p.values() for p in self.params)):
            yield dict(zip(keys, combo))

    def overrides(self, values: dict[str, Any]) -> list[str]:
        """``values`` as ``--set`` items (``KEY=TOML``) in the space's key order."""
        return [f"{p.key}={toml_value(values[p.key])}" for p in self.params if p.key in values]

    def variant(self, values: dict[str, Any]) -> str:
        """The config as ``REF@KEY=VALUE@...``: what ``compile --target`` and ``compare`` take."""
        return "@".join([self.ref, *self.overrides(values)])


@dataclass(frozen=True)
class Space:
    """A whole exploration: targets with their spaces, objectives, constraints, sampler, seed."""

    targets: tuple[TargetSpace, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    sampler: str = "nsga2"
    seed: int = 0
    population: int | None = None
    where: str = ""

    def size(self) -> int | None:
        sizes = [t.size() for t in self.targets]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s is not None)

    def points(self) -> Iterator[tuple[int, dict[str, Value]]]:
        """Every (target index, config values) of the space, target by target."""
        for i, t in enumerate(self.targets):
            for values in t.points():
                yield i, values

    def columns(self) -> list[str]:
        """The KPI columns the objectives and constraints read."""
        return list(dict.fromkeys([o.column for o in self.objectives] + [c.column for c in self.constraints]))

    def to_json(self) -> dict[str, Any]:
        return {"targets": [{"target": t.ref, "kind": t.kind, "space": [p.to_json() for p in t.params]}
                            for t in self.targets],
                "objectives": [[o.column, o.direction] for o in self.objectives],
                "constraints": [str(c) for c in self.constraints], "sampler": self.sampler, "seed": self.seed,
                "population": self.population}


# -- reading -------------------------------------------------------------------------------------------
def read_space(path: str | Path, overrides: Iterable[str] = ()) -> Space:
    """Read and check a space file (see the module's docstring). ``overrides``: ``--set``
    items (``KEY=VALUE``) applied to every target's config before its space (a key may not
    be both set and searched)."""
    where = str(path)
    fixed = [f"{'.'.join(keys)}={toml_value(value)}" for keys, value in parse_overrides(overrides)]
    if any("@" in item for item in fixed):
        raise ConfigError("--set: a value holding '@' cannot be part of a config variant", where=where)
    doc = read_toml(Path(path))
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r}; a space file holds {', '.join(sorted(_TOP_KEYS))}",
                          where=where)
    sampler = doc.get("sampler", "nsga2")
    if sampler not in SAMPLERS:
        raise ConfigError(f"sampler {sampler!r}: must be one of {', '.join(SAMPLERS)}", where=where)
    seed = doc.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**32:
        raise ConfigError(f"seed {seed!r}: must be an integer from 0 to 2**32 - 1", where=where)
    population = doc.get("population")
    if population is not None and (not isinstance(population, int) or isinstance(population, bool)
                                   or not 2 <= population <= 10_000):
        raise ConfigError(f"population {population!r}: must be an integer from 2 to 10000", where=where)
    if population is not None and sampler != "nsga2":
        raise ConfigError(f"population is NSGA-II's; sampler {sampler!r} has none", where=where)
    if "objectives" not in doc:
        raise ConfigError("missing [objectives]: the KPI columns to minimize or maximize, e.g. "
                          "energy_per_inference_j = \"minimize\"", where=where)
    objectives = parse_objectives(doc["objectives"], where)
    constraints = parse_constraints(doc.get("constraints"), where)
    tables = _target_tables(doc, where)
    base = Path(path).parent
    targets: list[TargetSpace] = []
    labels: set[str] = set()
    for i, table in enumerate(tables):
        t = _target_space(table, i, base, where, fixed)
        label = t.label
        n = 2
        while label in labels:
            label, n = f"{t.label} #{n}", n + 1
        labels.add(label)
        targets.append(TargetSpace(t.ref, label, t.kind, t.params))
    space = Space(tuple(targets), tuple(objectives), tuple(constraints), sampler, seed, population, where)
    if sampler == "grid" and space.size() is None:
        cont = next(f"{t.label} {p.key}" for t in targets for p in t.params if p.size() is None)
        raise ConfigError(f"sampler \"grid\" needs a finite space: {cont!r} is a continuous range (give it a step "
                          "or a list of choices)", where=where)
    if sampler == "grid" and (space.size() or 0) > MAX_GRID:
        raise ConfigError(f"sampler \"grid\": the space has {space.size():,} points; at most {MAX_GRID:,} are "
                          "enumerated (coarsen a step, or use a sampler that does not enumerate: nsga2, motpe, "
                          "random)", where=where)
    return space


def _target_tables(doc: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if "targets" in doc:
        if "target" in doc or "space" in doc:
            raise ConfigError("give either [[targets]] tables or one top-level target with [space], not both",
                              where=where)
        tables = doc["targets"]
        if not isinstance(tables, list) or not tables or not all(isinstance(t, dict) for t in tables):
            raise ConfigError("targets must be one or more [[targets]] tables", where=where)
        if len(tables) > MAX_TARGETS:
            raise ConfigError(f"{len(tables)} [[targets]]: at most {MAX_TARGETS}", where=where)
        return tables
    if "target" not in doc:
        raise ConfigError("no target: give target = \"KIND:PRESET\" with a [space] table, or [[targets]] tables",
                          where=where)
    return [{"target": doc["target"], "space": doc.get("space", {})}]


def _target_space(table: dict[str, Any], index: int, base: Path, where: str, fixed: list[str]) -> TargetSpace:
    what = f"targets[{index}]"
    unknown = sorted(set(table) - {"target", "space"})
    if unknown:
        raise ConfigError(f"{what}: unknown key {unknown[0]!r} (a target table holds target and space)", where=where)
    ref = table.get("target")
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{what}: target must be \"KIND:PRESET\", a variant or the path of a config file",
                          where=where)
    label = ref
    file = ref.split("@", 1)[0]
    if file.endswith(".toml"):
        folder = base.resolve()
        if Path(file).is_absolute() or not (folder / file).resolve().is_relative_to(folder):
            raise ConfigError(f"{what}: target {label!r} is outside the folder of the space file ({str(base)!r}); "
                              "refused: name a preset (KIND:PRESET) or a config file in that folder or below it",
                              where=where)
        ref = str(base / ref)
    ref = "@".join([ref, *fixed])
    try:
        target = load_target(ref)
    except ConfigError as e:
        raise ConfigError(f"{what}: target {label!r}{' with --set' if fixed else ''}: {e}", where=where) from None
    set_keys = {item.split("=", 1)[0] for item in fixed}
    space = table.get("space", {})
    if not isinstance(space, dict):
        raise ConfigError(f"{what}: space must be a table of quoted dotted config keys", where=where)
    if len(space) > MAX_PARAMS:
        raise ConfigError(f"{what}: {len(space)} keys in the space; at most {MAX_PARAMS}", where=where)
    fields = leaf_fields(target.spec.config_model)
    params = []
    for key, raw in space.items():
        if isinstance(raw, dict) and not (set(raw) & _RANGE_KEYS):
            raise ConfigError(f"{what}: space key {key!r} is a table: write the dotted key quoted, "
                              f"e.g. \"{key}.{next(iter(raw), 'name')}\" = [...]", where=where)
        if key not in fields:
            import difflib

            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{what}: space key {key!r} is not a key of a {target.kind} config{hint}", where=where)
        if key in set_keys:
            raise ConfigError(f"{what}: space key {key!r} is also given by --set: search it or set it", where=where)
        param = _param(key, raw, f"{what}: space key {key!r}", where)
        for v in (param.choices if param.choices is not None else (param.low, param.high)):
            try:
                load_target(ref, [f"{key}={toml_value(v)}"])
            except ConfigError as e:
                problem = "; ".join(e.problems)
                raise ConfigError(f"{what}: space key {key!r} = {v!r} is refused by the {target.kind} schema: "
                                  f"{problem}", where=where) from None
        params.append(param)
    return TargetSpace(ref, label, target.kind, tuple(params))


def _param(key: str, raw: Any, what: str, where: str) -> Param:
    if isinstance(raw, list):
        if not raw:
            raise ConfigError(f"{what}: an empty list of choices", where=where)
        if len(raw) > MAX_CHOICES:
            raise ConfigError(f"{what}: {len(raw)} choices; at most {MAX_CHOICES}", where=where)
        bad = next((v for v in raw if not isinstance(v, (bool, int, float, str))), None)
        if bad is not None:
            raise ConfigError(f"{what}: choice {bad!r} is not a number, a boolean or a string", where=where)
        if len({(type(v), v) for v in raw}) != len(raw):
            raise ConfigError(f"{what}: a choice is listed twice", where=where)
        if any(isinstance(v, float) and not math.isfinite(v) for v in raw):
            raise ConfigError(f"{what}: choices must be finite", where=where)
        return Param(key, choices=tuple(raw))
    if not isinstance(raw, dict):
        raise ConfigError(f"{what}: give a list of choices or a range {{low = A, high = B[, log = true][, step = S]}}",
                          where=where)
    unknown = sorted(set(raw) - _RANGE_KEYS)
    if unknown:
        raise ConfigError(f"{what}: unknown range key {unknown[0]!r} (a range has low, high, log and step)",
                          where=where)
    low: Any = raw.get("low")
    high: Any = raw.get("high")
    log, step = raw.get("log", False), raw.get("step")
    if not _number(low) or not _number(high) or not math.isfinite(low) or not math.isfinite(high):
        raise ConfigError(f"{what}: a range needs finite numbers low and high", where=where)
    if not isinstance(log, bool):
        raise ConfigError(f"{what}: log must be true or false", where=where)
    if low > high:
        raise ConfigError(f"{what}: an empty range (low {low!r} > high {high!r})", where=where)
    if step is not None and (not _number(step) or not math.isfinite(step) or step <= 0):
        raise ConfigError(f"{what}: step must be a positive number", where=where)
    if log and low <= 0:
        raise ConfigError(f"{what}: a log range needs low > 0", where=where)
    if log and step is not None and step != 1:
        raise ConfigError(f"{what}: a log range takes no step (other than 1 for integers)", where=where)
    if isinstance(low, int) != isinstance(high, int):
        low, high = float(low), float(high)
    if isinstance(low, int) and isinstance(step, float):
        low, high = float(low), float(high)
    if isinstance(low, float) and isinstance(step, int):
        step = float(step)
    return Param(key, low=low, high=high, log=log, step=step)
