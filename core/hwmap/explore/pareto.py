"""Pareto dominance and hypervolume, on objective vectors where less is better (a maximized
objective enters negated: :attr:`hwmap.explore.objectives.Objective.sign`).

``q`` dominates ``p`` when ``q`` is no worse in every objective and better in one. The
hypervolume of a set of points is the measure of the region they dominate up to a reference
point ``r`` (Zitzler & Thiele, "Multiobjective optimization using evolutionary algorithms —
a comparative case study", PPSN 1998); it is computed exactly by slicing along the last
objective (the HSO scheme of While et al., IEEE TEVC 10(1), 2006), which is fast enough for
the fronts of an exploration (tens of points, a few objectives).
"""

from __future__ import annotations

from typing import Sequence, Union

import numpy as np

#: Points: one row per point, one column per objective (a numpy array or nested sequences).
Points = Union[np.ndarray, Sequence[Sequence[float]]]

__all__ = ["dominates", "pareto_indices", "hypervolume", "reference_point"]


def dominates(q: Sequence[float], p: Sequence[float]) -> bool:
    """Whether ``q`` dominates ``p`` (both minimized)."""
    a, b = np.asarray(q, dtype=np.float64), np.asarray(p, dtype=np.float64)
    return bool(np.all(a <= b) and np.any(a < b))


def pareto_indices(points: Points) -> list[int]:
    """The indices of the points no other point dominates, in input order. Equal points are
    all kept (none dominates another).

    In lexicographic order a point can only be dominated by one before it (a dominating point
    is lexicographically smaller), so one pass over the sorted points, each checked against
    the front kept so far, finds them.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.size == 0:
        return []
    if pts.ndim != 2:
        raise ValueError("points must be a 2-D array: one row per point, one column per objective")
    order = np.lexsort(pts.T[::-1])
    front: list[int] = []
    for i in order:
        p = pts[i]
        if front:
            kept = pts[front]
            if np.any(np.all(kept <= p, axis=1) & np.any(kept < p, axis=1)):
                continue
        front.append(int(i))
    return sorted(front)


def reference_point(points: Points, margin: float = 1.1) -> np.ndarray:
    """Each objective's worst value times ``margin`` (a worst value below zero is moved
    towards zero instead, so the reference point stays beyond every point)."""
    worst = np.max(np.asarray(points, dtype=np.float64), axis=0)
    return np.where(worst >= 0, worst * margin, worst / margin)


def hypervolume(points: Points, reference: Sequence[float]) -> float:
    """The hypervolume the points dominate up to ``reference`` (points not strictly better
    than it in every objective add nothing)."""
    ref = np.asarray(reference, dtype=np.float64)
    pts = np.asarray(points, dtype=np.float64).reshape(-1, ref.size)
    pts = pts[np.all(pts < ref, axis=1)]
    if len(pts) == 0:
        return 0.0
    pts = pts[pareto_indices(pts)]
    return float(_hso(pts, ref))


def _hso(pts: np.ndarray, ref: np.ndarray) -> float:
    d = pts.shape[1]
    if d == 1:
        return float(ref[0] - np.min(pts[:, 0]))
    if d == 2:
        # the staircase: sweep x from left to right, the lowest y seen so far is the height
        order = np.argsort(pts[:, 0], kind="stable")
        xs, ys = pts[order, 0], pts[order, 1]
        area, best_y = 0.0, float(ref[1])
        for k in range(len(xs)):
            x_next = xs[k + 1] if k + 1 < len(xs) else ref[0]
            best_y = min(best_y, ys[k])
            area += (x_next - xs[k]) * (ref[1] - best_y)
        return float(area)
    # slice along the last objective: between consecutive values only the points at or below
    # the slice's lower end dominate it
    order = np.argsort(pts[:, -1], kind="stable")
    pts = pts[order]
    volume = 0.0
    for k in range(len(pts)):
        top = pts[k + 1, -1] if k + 1 < len(pts) else ref[-1]
        depth = top - pts[k, -1]
        if depth > 0:
            lower = pts[: k + 1, :-1]
            volume += depth * _hso(lower[pareto_indices(lower)], ref[:-1])
    return volume
