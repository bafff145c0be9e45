"""Step (c) of chapter Fig. 3.20: tune each layer's parallelism, a return-on-investment search.

A pipeline of one engine per layer delivers one frame every ``II = max over layers of
cycles`` clock cycles (the initiation interval: a dataflow pipeline runs at the pace of its
slowest stage, as FINN's folding balances it — Umuroglu et al., FPGA 2017; Blott et al.,
TRETS 2018). The tuner chooses, per layer, one :class:`~.templates.Option`
(a template and its parallelism) so that:

* **one resource** (multiply units only, ``hardware.memory_blocks = 0``): II is minimal
  subject to Σ multipliers ≤ R. Exact: II is one of the options' cycle counts, and for a
  candidate T the cheapest configuration meeting it gives each layer its cheapest option
  with cycles ≤ T (the choices are independent), so T is feasible iff that sum fits R —
  monotone in T, hence a bisection over the sorted candidates finds the optimum;
* **several resources** (memory blocks budgeted too): greedy, from each layer's cheapest
  option. Each layer holding the current II has a next step, its cheapest faster option the
  budgets still allow (cost = Σ_k Δcost_k / budget_k); the step taken is the one that buys
  the most throughput per resource spent, ``(1/c_new − 1/c_old) / cost``; stop when a
  layer holding the II has no step left;
* **a target frame rate** (``tuner.target_fps``): the cheapest configuration meeting
  ``T = floor(f / fps)``, every layer at its cheapest option with cycles ≤ T.

Beside the result, the balanced bound ``f·R/ΣW`` (W the MACs of a frame) says what a
perfectly balanced pipeline of R multipliers, each busy every cycle, would reach.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from .layers import LayerSpec
from .templates import TEMPLATES, Option

__all__ = ["TuneResult", "Infeasible", "tune", "balanced_bound_fps", "cheapest_meeting", "RESOURCES"]

RESOURCES = ("multipliers", "memory_blocks")
_RANK = {t.name: i for i, t in enumerate(TEMPLATES)}


class Infeasible(Exception):
    """No configuration fits: ``rule`` names the violation, the message says what and where."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


@dataclass
class TuneResult:
    choice: list[Option]
    ii: int
    method: str
    used: dict[str, int]
    budgets: dict[str, int]
    steps: int
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"method": self.method, "initiation_interval_cycles": self.ii, "used": self.used,
                "budgets": self.budgets, "steps": self.steps, "notes": self.notes}


def balanced_bound_fps(clock_hz: float, multipliers: int, macs: int) -> float:
    """f·R/ΣW: frames per second of R multiply units busy every cycle on W MACs a frame."""
    return float(clock_hz) * multipliers / macs if macs else math.inf


def _cost(o: Option) -> dict[str, int]:
    return {"multipliers": o.multipliers, "memory_blocks": o.blocks}


def _key(o: Option) -> tuple[Any, ...]:
    return (o.multipliers, o.blocks, o.lanes, _RANK.get(o.template, 99), o.par)


class _Layer:
    """One layer's options sorted by cycles, with the cheapest option among the first i."""

    def __init__(self, opts: Sequence[Option], key: Any) -> None:
        self.opts = sorted(opts, key=lambda o: (o.cycles, key(o)))
        self.cycles = [o.cycles for o in self.opts]
        self.best: list[Option] = []
        for o in self.opts:
            self.best.append(o if not self.best or key(o) < key(self.best[-1]) else self.best[-1])

    def cheapest(self, t: int) -> Option | None:
        i = bisect.bisect_right(self.cycles, t) - 1
        return self.best[i] if i >= 0 else None


def cheapest_meeting(opts: Sequence[Option], t: int) -> Option | None:
    """The cheapest option (fewest multipliers, then blocks, lanes, template rank) with cycles ≤ t."""
    return _Layer(opts, _key).cheapest(t)


def tune(layers: Sequence[LayerSpec], opts: Sequence[Sequence[Option]], budgets: dict[str, int], *,
         clock_hz: float, target_fps: float = 0.0, min_ii: int = 0, target_ii: int = 0) -> TuneResult:
    """Choose one option per layer (see the module docstring). ``budgets``: ``multipliers``
    and ``memory_blocks`` (0 = not budgeted); ``min_ii``: an initiation interval the
    pipeline cannot beat anyway (the external memory's), below which nothing is bought.
    ``target_ii``: meet this initiation interval as cheaply as possible (what a target frame
    rate sets). Raises :class:`Infeasible` when not even the cheapest configuration fits."""
    for spec, o in zip(layers, opts):
        if not o:
            raise Infeasible("no_template", f"layer {spec.name!r} ({spec.kind}) has no legal option")
    active = {k: v for k, v in budgets.items() if v > 0}
    if "multipliers" not in active:
        raise Infeasible("multiplier_budget", "hardware.multipliers must be at least 1")
    multi = len(active) > 1
    key = _key if not multi else (lambda o: (_norm(_cost(o), active), _key(o)))
    tables = [_Layer(o, key) for o in opts]
    floor = max([min_ii] + [t.cycles[0] for t in tables])
    slowest = [t.cheapest(10**30) for t in tables]
    _check_fits(layers, [o for o in slowest if o is not None], active, "the cheapest configuration")
    if target_fps > 0 or target_ii > 0:
        t = target_ii if target_ii > 0 else int(math.floor(clock_hz / target_fps))
        what = f"tuner.target_fps = {target_fps:g}" if target_fps > 0 else "the external memory's bandwidth"
        if t < floor:
            raise Infeasible("target_fps", f"{what} needs an initiation interval of {t} cycles; the fastest legal "
                                           f"configuration takes {floor} cycles ({clock_hz / floor:.6g} FPS)")
        choice = [tb.cheapest(t) for tb in tables]
        picked = [c for c in choice if c is not None]
        _check_fits(layers, picked, active, f"the cheapest configuration meeting {t} cycles per frame")
        return _result(picked, "target", active, budgets, 1)
    if not multi:
        return _bisect(layers, tables, active, budgets, floor)
    return _greedy(layers, tables, active, budgets, floor)


def _norm(cost: dict[str, int], budgets: dict[str, int]) -> float:
    return sum(cost[k] / budgets[k] for k in budgets)


def _check_fits(layers: Sequence[LayerSpec], choice: Sequence[Option], budgets: dict[str, int], what: str) -> None:
    for k, budget in budgets.items():
        need = sum(_cost(o)[k] for o in choice)
        if need > budget:
            worst = max(range(len(choice)), key=lambda i: _cost(choice[i])[k])
            rule = "multiplier_budget" if k == "multipliers" else "memory_block_budget"
            key = "hardware.multipliers" if k == "multipliers" else "hardware.memory_blocks"
            raise Infeasible(rule, f"{what} needs {need:,} {k.replace('_', ' ')} but {key} = {budget:,} (the most, "
                                   f"{_cost(choice[worst])[k]:,}, in layer {layers[worst].name!r})")


def _result(choice: list[Option], method: str, active: dict[str, int], budgets: dict[str, int],
            steps: int) -> TuneResult:
    used = {k: sum(_cost(o)[k] for o in choice) for k in ("multipliers", "memory_blocks")}
    return TuneResult(choice, max(o.cycles for o in choice), method, used, dict(budgets), steps)


def _bisect(layers: Sequence[LayerSpec], tables: list[_Layer], active: dict[str, int], budgets: dict[str, int],
            floor: int) -> TuneResult:
    budget = active["multipliers"]
    cands = sorted({c for t in tables for c in t.cycles if c >= floor} | {floor})

    def cost(t: int) -> int | None:
        total = 0
        for tb in tables:
            o = tb.cheapest(t)
            if o is None:
                return None
            total += o.multipliers
        return total

    lo, hi, steps = 0, len(cands) - 1, 0
    while lo < hi:  # smallest index whose T fits; the last always fits (checked by the caller)
        mid = (lo + hi) // 2
        steps += 1
        c = cost(cands[mid])
        if c is not None and c <= budget:
            hi = mid
        else:
            lo = mid + 1
    t = cands[lo]
    choice = [tb.cheapest(t) for tb in tables]
    return _result([c for c in choice if c is not None], "bisection", active, budgets, steps)


def _greedy(layers: Sequence[LayerSpec], tables: list[_Layer], active: dict[str, int], budgets: dict[str, int],
            floor: int) -> TuneResult:
    kinds = list(active)
    cap = np.array([active[k] for k in kinds], dtype=np.float64)
    arr = [(np.array(t.cycles, dtype=np.float64), np.array([[_cost(o)[k] for k in kinds] for o in t.opts],
                                                           dtype=np.float64)) for t in tables]
    pos = []
    for t in tables:
        best = t.cheapest(10**30)
        pos.append(next(j for j, o in enumerate(t.opts) if o is best))
    used = sum(arr[i][1][j] for i, j in enumerate(pos))
    steps = 0
    while True:
        ii = max(arr[i][0][j] for i, j in enumerate(pos))
        if ii <= floor:
            break
        best_step: tuple[float, int, int] | None = None
        blocked = False
        for i in (i for i, j in enumerate(pos) if arr[i][0][j] == ii):  # the layers holding the II
            cyc, cost = arr[i]
            delta = cost - cost[pos[i]]
            ok = (cyc < cyc[pos[i]]) & np.all(used + delta <= cap, axis=1)
            if not ok.any():
                blocked = True
                break
            spent = (delta / cap).sum(axis=1)
            idx = np.flatnonzero(ok)
            j = int(idx[np.lexsort((-cyc[idx], spent[idx]))[0]])  # its next step: the cheapest, then the fastest
            roi = (1.0 / cyc[j] - 1.0 / cyc[pos[i]]) / max(float(spent[j]), 1e-12)
            if best_step is None or roi > best_step[0]:
                best_step = (roi, i, j)
        if blocked or best_step is None:
            break
        _, i, j = best_step
        used = used + arr[i][1][j] - arr[i][1][pos[i]]
        pos[i] = j
        steps += 1
    return _result([t.opts[j] for t, j in zip(tables, pos)], "greedy", active, budgets, steps)
