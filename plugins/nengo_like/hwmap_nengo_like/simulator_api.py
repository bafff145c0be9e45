"""``Simulator``: nengo's simulator interface over the target's own stages.

``Simulator(network, dt=0.001, seed=None, progress_bar=False)`` builds the network
(:mod:`.builder`), maps it onto the substrate of the ``nengo_like`` preset it is given
(``target``, default ``nengo_like:default``; :mod:`.mapper`), emits the network description
into a private folder (:mod:`.emit`), reads it back through :class:`hwmap.Artifacts` and runs
it (:mod:`.simulator`): a NEF script runs the same artifacts ``hwmap compile`` would load.
Node callables run on the host each step (as nengo-loihi runs them); ``backend`` chooses
the step (``"numba"``, compiled, or ``"numpy"``, the reference; see :mod:`.simulator`). ``sim.data[obj]`` gives
nengo's built parameters (``gain``, ``bias``, ``encoders``, ``max_rates``, ``intercepts``,
``eval_points``, ``scaled_encoders``; ``sim.data[conn].weights``) and each probe's record,
``sim.trange()`` the times of the steps.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .builder import Built, build
from .objects import Network, Probe

__all__ = ["Simulator"]


class _Data(dict):  # type: ignore[type-arg]
    def __init__(self, sim: "Simulator") -> None:
        super().__init__()
        self.sim = sim

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, Probe):
            return self.sim._probe_data(key)
        return self.sim.built.params[key]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, Probe) or key in self.sim.built.params


class Simulator:
    def __init__(self, network: Network, dt: float = 0.001, seed: int | None = None, model: Any = None,
                 progress_bar: Any = False, optimize: bool = True, target: str = "nengo_like:default",
                 backend: str = "numba") -> None:
        import time

        from hwmap import Artifacts
        from hwmap.config import load_target

        from .description import read
        from .emit import emit_description
        from .mapper import map_description
        from .simulator import Runner

        if not dt > 0:
            raise ValueError(f"Simulator: dt = {dt!r} must be positive")
        self.dt = float(dt)
        self.seed = seed
        self.network = network
        self.built: Built = build(network, self.dt)
        t0 = time.perf_counter()
        self.target = load_target(target)
        self.mapping = map_description(self.built.description, self.target)
        if not self.mapping.fits:
            raise ValueError("the network does not fit " + target + ": " +
                             "; ".join(str(v) for v in self.mapping.violations))
        self._dir = Path(tempfile.mkdtemp(prefix="hwmap-nengo-like-"))
        arts = emit_description(self.mapping.description, self._dir)
        self.artifacts = Artifacts(self._dir, arts, {"format": "hwmap-nengo-like-network"})
        self.description = read(self.artifacts)
        self.map_emit_time_s = time.perf_counter() - t0
        self._runner = Runner(self.description, nodes=self.built.nodes, measure=False, backend=backend)
        self._records: dict[str, list[np.ndarray]] = {h.name: [] for h in self.description.hosts if h.kind == "probe"}
        self.data = _Data(self)
        self.closed = False

    @property
    def n_steps(self) -> int:
        return self._runner.k

    @property
    def time(self) -> float:
        return self._runner.k * self.dt

    def trange(self, sample_every: float | None = None) -> np.ndarray:
        return self.dt * np.arange(1, self.n_steps + 1)

    def run_steps(self, steps: int, progress_bar: Any = None) -> None:
        if self.closed:
            raise RuntimeError("Simulator closed")
        _, probes = self._runner.advance(int(steps))
        for name, rec in probes.items():
            self._records[name].append(rec[:, 0, :])

    def run(self, time_in_seconds: float, progress_bar: Any = None) -> None:
        steps = int(np.round(float(time_in_seconds) / self.dt))
        if steps < 0:
            raise ValueError(f"Simulator.run: time {time_in_seconds!r} must not be negative")
        self.run_steps(steps)

    def step(self) -> None:
        self.run_steps(1)

    def _probe_data(self, probe: Probe) -> np.ndarray:
        name = self.built.probes[probe]
        parts = self._records[name]
        size = next(h.size_in for h in self.description.hosts if h.name == name)
        return np.concatenate(parts) if parts else np.zeros((0, size))

    def close(self) -> None:
        if not self.closed:
            shutil.rmtree(self._dir, ignore_errors=True)
            self.closed = True

    def __enter__(self) -> "Simulator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass
