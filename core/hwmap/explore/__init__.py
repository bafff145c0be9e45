"""``hwmap explore``: design-space exploration across targets.

A search space over config keys of one or more targets (:mod:`.space`), objectives and
constraints on KPI columns (:mod:`.objectives`), an optuna study in an RDB storage
(:mod:`.study`), trials on Dask distributed workers (:mod:`.runner`, :mod:`.evaluate`),
Pareto fronts and hypervolumes (:mod:`.pareto`), and the results as tables, CSV, JSON
(:mod:`.results`) and a picture (:mod:`.plot`); :mod:`.run` puts them together.
"""

from __future__ import annotations

from .pareto import hypervolume, pareto_indices
from .run import Exploration, explore
from .space import Space, read_space

__all__ = ["explore", "Exploration", "read_space", "Space", "pareto_indices", "hypervolume"]
