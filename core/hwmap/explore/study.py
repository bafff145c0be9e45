"""The optuna study behind an exploration: its storage, its sampler, asking for configs and
recording what the trials gave.

The study lives in an RDB storage (SQLite in ``-o DIR`` by default, any SQLAlchemy URL
otherwise) under a name derived from the model, the data and the space, so a rerun of the
same exploration resumes it and two explorations can share it. Every trial is tagged with
the process that runs it (host and pid) and a heartbeat; a trial left running by a process
that no longer runs (on this host), or whose heartbeat stopped (elsewhere), is marked failed
as ``interrupted`` and its config queued again, so nothing is lost when a run is killed.

Samplers (:data:`hwmap.explore.space.SAMPLERS`): ``nsga2`` (the default: NSGA-II with a
small population, so that a budget of tens of trials still evolves several generations),
``tpe`` (multivariate TPE, MOTPE for several objectives), ``random``, and ``grid``: every
config of the space queued in order. A config the study already holds is never evaluated
twice: a proposal that repeats one is set aside (pruned, as a ``duplicate``) and the sampler
asked again.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import socket
import time
from dataclasses import dataclass
from typing import Any, Iterable

from ..errors import DataError
from ..files import pid_alive
from ..jsonio import dumps
from . import rdb
from .objectives import kpi_value
from .space import Space

__all__ = ["StudyHandle", "open_study", "study_name", "DEFAULT_POPULATION", "STALE_AFTER_S", "MAX_RESAMPLE",
           "param_name", "trial_key", "safe_url", "counted", "OWNER_ATTR", "INFO_ATTR", "info"]

#: NSGA-II's population when the space file sets none: small, so 50 trials are five
#: generations (optuna's default of 50 would make them one random generation).
DEFAULT_POPULATION = 10
#: A running trial of another host whose heartbeat is older than this is taken as lost.
STALE_AFTER_S = 300.0
#: How many duplicate proposals in a row are set aside before the study stops asking.
MAX_RESAMPLE = 50
#: How optuna names a constraint's system attribute (``Trial.set_constraint(KEY, ...)`` writes
#: ``constraints:KEY``; its samplers read every attribute of that prefix).
CONSTRAINTS_PREFIX = "constraints:"
#: System attribute holding who runs a trial: host, pid and last heartbeat.
OWNER_ATTR = "hwmap:owner"
#: User attribute holding a trial's config (``REF@KEY=VALUE...``), target label and kind,
#: config values by key, its KPI record (``kpis``) and, for a failed trial, why: one attribute,
#: so recording a trial is one write.
INFO_ATTR = "hwmap"


def safe_url(url: str) -> str:
    """A storage URL for messages, its password hidden."""
    try:
        from sqlalchemy.engine import make_url

        return str(make_url(url).render_as_string(hide_password=True))
    except Exception:
        return url.split("@")[-1] if "@" in url else url


def study_name(space: Space, model_digest: str, data_digest: str | None, calibrate: int | None) -> str:
    """The study's name: what the exploration is (model, data and split, space), hashed."""
    key = dumps({"model": model_digest, "data": data_digest, "calibrate": calibrate, "space": space.to_json()})
    return "hwmap-explore-" + hashlib.sha256(key.encode()).hexdigest()[:16]


def param_name(space: Space, index: int, key: str) -> str:
    """The optuna parameter of ``key`` on target ``index`` (prefixed by the target's label
    when several targets compete)."""
    return key if len(space.targets) == 1 else f"{space.targets[index].label} {key}"


def trial_key(params: dict[str, Any]) -> str:
    """A config as a canonical string (what makes two trials duplicates)."""
    return json.dumps(params, sort_keys=True, default=str)


def counted(t: Any) -> bool:
    """Whether a finished trial counts towards ``--trials``: complete or failed, and neither
    interrupted (re-run under another number) nor a set-aside duplicate."""
    from optuna.trial import TrialState

    return t.state in (TrialState.COMPLETE, TrialState.FAIL) and not info(t).get("interrupted")


def info(t: Any) -> dict[str, Any]:
    """A trial's :data:`INFO_ATTR` (empty if it has none)."""
    v = t.user_attrs.get(INFO_ATTR)
    return v if isinstance(v, dict) else {}


@dataclass
class Proposal:
    """An asked trial: the optuna trial, its target and its config values (by config key)."""

    trial: Any
    target: int
    values: dict[str, Any]


class StudyHandle:
    """The study of one exploration (see the module's docstring)."""

    def __init__(self, study: Any, space: Space) -> None:
        self.study = study
        self.space = space
        self.storage = study._storage
        self.host = socket.gethostname()
        self.pid = os.getpid()
        #: The configs the study holds (complete, failed, running or queued), kept here as
        #: trials are asked and told instead of reading every trial back per proposal.
        self._keys = self.known_keys()
        self._dists: dict[str, Any] | None = None
        #: The queued trials (grid configs, re-runs) by id, oldest first, with their configs:
        #: those the study held when opened and those this process queues. ``study.ask`` takes
        #: the next one from here: optuna's own queue reads every waiting trial back per ask,
        #: which costs the coordinator more per trial than the rest of the ask and tell.
        from optuna.trial import TrialState

        self._waiting: dict[int, tuple[str, Any]] = {
            t._trial_id: (trial_key(t.system_attrs.get("fixed_params", {})), t)
            for t in sorted(self.trials((TrialState.WAITING,)), key=lambda t: t.number)}
        #: The config each popped queued trial was queued with (what makes it no duplicate).
        self._popped: dict[int, str] = {}
        #: Each popped trial as it now is in the storage (the queued one, running, tagged), for
        #: ``optuna.Trial`` to start from instead of reading it back (see :meth:`_get_trial`).
        self._started: dict[int, Any] = {}
        study._pop_waiting_trial_id = self._pop_waiting  # replaces optuna's scan of the queue
        self._read_trial = self.storage.get_trial
        self.storage.get_trial = self._get_trial

    # -- bookkeeping -------------------------------------------------------------------------------------
    def trials(self, states: Iterable[Any] | None = None) -> list[Any]:
        return list(self.study.get_trials(deepcopy=False, states=tuple(states) if states is not None else None))

    def done(self) -> int:
        return sum(1 for t in self.trials() if counted(t))

    def known_keys(self, exclude: int | None = None) -> set[str]:
        """Configs already complete, failed (not interrupted), running or queued (but trial
        number ``exclude``)."""
        from optuna.trial import TrialState

        keys = set()
        for t in self.trials():
            if t.number == exclude:
                continue
            if t.state == TrialState.WAITING:
                params = t.system_attrs.get("fixed_params", {})
            elif t.state == TrialState.RUNNING or counted(t):
                params = t.params
            else:
                continue
            keys.add(trial_key(params))
        return keys

    def recover_interrupted(self) -> list[int]:
        """Fail the trials a killed run left running and queue their configs again; the
        numbers of the trials recovered."""
        from optuna.trial import TrialState

        now = time.time()
        out = []
        for t in self.trials((TrialState.RUNNING,)):
            owner = t.system_attrs.get(OWNER_ATTR)
            if isinstance(owner, dict):
                if owner.get("host") == self.host:
                    if pid_alive(int(owner.get("pid", -1))) and owner.get("pid") != self.pid:
                        continue
                elif now - float(owner.get("heartbeat", 0)) < STALE_AFTER_S:
                    continue
            elif now - t.datetime_start.timestamp() < STALE_AFTER_S if t.datetime_start else False:
                continue
            if self._requeue(t._trial_id, t.number, t.system_attrs.get("fixed_params") or t.params):
                out.append(t.number)
        return out

    def interrupt(self, proposal: Proposal) -> None:
        """Fail a trial of this run that was stopped mid-way (Ctrl-C, SIGTERM) and queue its
        config again."""
        trial = proposal.trial
        self._requeue(trial._trial_id, trial.number, dict(trial.params))

    def _requeue(self, trial_id: int, number: int, params: dict[str, Any]) -> bool:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        try:
            rdb.finish(self.storage, trial_id, TrialState.FAIL, None, {INFO_ATTR: {
                "interrupted": True, "error": "interrupted: the run was stopped while this trial ran; its config "
                                              "is run again"}}, {})
        except UpdateFinishedTrialError:  # it finished, or another process recovered it first
            return False
        self._enqueue(params, {"retry_of": number})
        return True

    def _enqueue(self, params: dict[str, Any], user_attrs: dict[str, Any] | None = None) -> None:
        """Queue ``params`` (what ``study.enqueue_trial`` does), keeping its id in our queue. The
        queued trial holds the params with their distributions too, so the trial that runs them
        does not write them again one by one."""
        from optuna.trial import TrialState, create_trial

        kwargs: dict[str, Any] = dict(state=TrialState.WAITING, system_attrs={"fixed_params": params},
                                      user_attrs=user_attrs or {})
        dists = self._distributions()
        if all(n in dists for n in params):
            try:
                template = create_trial(**kwargs, params=params, distributions={n: dists[n] for n in params})
            except ValueError:  # a value outside its distribution: optuna's own check when it runs
                template = create_trial(**kwargs)
        else:
            template = create_trial(**kwargs)
        trial_id = self.storage.create_new_trial(self.study._study_id, template_trial=template)
        key = trial_key(params)
        self._waiting[trial_id] = (key, template)
        self._keys.add(key)

    def _distributions(self) -> dict[str, Any]:
        """Every parameter's optuna distribution, as :meth:`_suggest` asks for it."""
        if self._dists is None:
            from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

            labels = [t.label for t in self.space.targets]
            dists: dict[str, Any] = {"target": CategoricalDistribution(labels)} if len(labels) > 1 else {}
            for index, target in enumerate(self.space.targets):
                for p in target.params:
                    name = param_name(self.space, index, p.key)
                    if p.choices is not None:
                        dists[name] = CategoricalDistribution(list(p.choices))
                    elif p.integer:
                        dists[name] = IntDistribution(int(p.low or 0), int(p.high or 0), log=p.log,
                                                      step=int(p.step or 1))
                    else:
                        dists[name] = FloatDistribution(float(p.low or 0), float(p.high or 0), log=p.log, step=p.step)
            self._dists = dists
        return self._dists

    def _pop_waiting(self) -> int | None:
        """The next queued trial, now running and tagged as this process's, in one transaction
        (as ``Study._pop_waiting_trial_id``); one another process took first is passed over."""
        from optuna.trial import TrialState

        while self._waiting:
            trial_id = next(iter(self._waiting))
            key, queued = self._waiting.pop(trial_id)
            owner = self._owner()
            started = rdb.start_waiting(self.storage, trial_id, {OWNER_ATTR: owner})
            if started is not None:
                self._popped[trial_id] = key
                trial = copy.deepcopy(queued)
                trial.number, trial._trial_id = started[0], trial_id
                trial.state, trial.datetime_start = TrialState.RUNNING, started[1]
                trial.system_attrs = {**trial.system_attrs, OWNER_ATTR: owner}
                self._started[trial_id] = trial
                return trial_id
        return None

    def _get_trial(self, trial_id: int) -> Any:
        """The storage's ``get_trial``, but a trial just popped is the one :meth:`_pop_waiting`
        built from what it queued and wrote (``study.ask`` reads the trial it pops back through
        the ORM, a query per relation, the costliest step of an ask)."""
        started = self._started.pop(trial_id, None)
        return started if started is not None else self._read_trial(trial_id)

    def _owner(self) -> dict[str, Any]:
        return {"host": self.host, "pid": self.pid, "heartbeat": time.time()}

    def heartbeat(self, trials: Iterable[Any]) -> None:
        """Tag the running ``trials`` as this process's, now (one transaction for them all)."""
        rdb.set_system_attr(self.storage, [t._trial_id for t in trials], OWNER_ATTR, self._owner())

    def enqueue_grid(self, total: int) -> None:
        """Queue every config of the space, in order, that the study does not hold yet, until
        it holds ``total`` (what ``sampler = "grid"`` runs)."""
        known = self.known_keys()
        held = len(known)
        for index, values in self.space.points():
            if held >= total:
                break
            params = self._params(index, values)
            key = trial_key(params)
            if key in known:
                continue
            self._enqueue(params)
            known.add(key)
            held += 1

    # -- asking and telling ------------------------------------------------------------------------------
    def _params(self, index: int, values: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {} if len(self.space.targets) == 1 else {"target": self.space.targets[index].label}
        params.update({param_name(self.space, index, k): v for k, v in values.items()})
        return params

    def _suggest(self, trial: Any) -> tuple[int, dict[str, Any]]:
        """The trial's target and config values, suggested through optuna; the parameters it
        writes are written together, in one transaction, once all are suggested."""
        pending: list[tuple[str, float, Any]] = []

        def collect(trial_id: int, name: str, value: float, distribution: Any) -> None:
            pending.append((name, value, distribution))

        self.storage.set_trial_param = collect
        try:
            index, values = self._suggest_each(trial)
        finally:
            del self.storage.set_trial_param  # the storage's own again
        rdb.set_params(self.storage, trial._trial_id, pending)
        return index, values

    def _suggest_each(self, trial: Any) -> tuple[int, dict[str, Any]]:
        labels = [t.label for t in self.space.targets]
        index = labels.index(trial.suggest_categorical("target", labels)) if len(labels) > 1 else 0
        values: dict[str, Any] = {}
        for p in self.space.targets[index].params:
            name = param_name(self.space, index, p.key)
            if p.choices is not None:
                values[p.key] = trial.suggest_categorical(name, list(p.choices))
            elif p.integer:
                values[p.key] = trial.suggest_int(name, int(p.low or 0), int(p.high or 0), step=int(p.step or 1),
                                                  log=p.log)
            else:
                values[p.key] = trial.suggest_float(name, float(p.low or 0), float(p.high or 0), step=p.step,
                                                    log=p.log)
        return index, values

    def ask(self, in_flight: set[str]) -> Proposal | None:
        """A trial with a config the study does not hold yet, tagged as this process's; ``None``
        when the sampler keeps proposing held configs."""
        from optuna.trial import TrialState

        for _ in range(MAX_RESAMPLE):
            trial = self.study.ask()
            popped = self._popped.pop(trial._trial_id, None)
            if popped is None:  # a new trial (a queued one was tagged as it was taken)
                self.heartbeat([trial])
            index, values = self._suggest(trial)
            key = trial_key(trial.params)
            queued = popped == key  # queued with this config: no duplicate
            if key not in in_flight and (key not in self._keys or queued):
                self._keys.add(key)
                return Proposal(trial, index, values)
            self._finish(trial, TrialState.PRUNED)  # a set-aside duplicate
        return None

    def _finish(self, trial: Any, state: Any, values: list[float] | None = None,
                user_attrs: dict[str, Any] | None = None, system_attrs: dict[str, Any] | None = None) -> None:
        """What ``Trial.set_user_attr``, ``Trial.set_constraint`` and ``Study.tell`` do for a
        running trial of ours: the sampler told (with the trial as it will be stored, built
        here rather than read back), then its attributes, values and state written in one
        transaction. ``study.ask`` drops the study's per-thread cache of trials that
        ``study.tell`` would."""
        user_attrs, system_attrs = user_attrs or {}, system_attrs or {}
        frozen = copy.copy(trial._cached_frozen_trial)
        frozen.user_attrs = {**frozen.user_attrs, **user_attrs}
        frozen.system_attrs = {**frozen.system_attrs, **system_attrs}
        try:
            self.study.sampler.after_trial(self.study, frozen, state, values)
        finally:
            rdb.finish(self.storage, trial._trial_id, state, values, user_attrs, system_attrs)

    def tell(self, proposal: Proposal, state: str, record: dict[str, Any], error: str,
             config: str, extra: dict[str, Any]) -> tuple[str, list[float] | None]:
        """Record a finished trial: its KPI record and config as user attributes, its
        objective values (or the failure). The state recorded, and the objective values if
        the trial is complete and meets every constraint (else ``None``)."""
        from optuna.trial import TrialState

        trial = proposal.trial
        target = self.space.targets[proposal.target]
        values = [kpi_value(record, o.column) for o in self.space.objectives]
        if state == "complete":
            missing = [o.column for o, v in zip(self.space.objectives, values) if v is None]
            missing += [c.column for c in self.space.constraints if kpi_value(record, c.column) is None]
            if missing:
                state, error = "fail", f"the record has no value for {', '.join(dict.fromkeys(missing))}"
            elif not all(math.isfinite(float(v or 0.0)) for v in values):
                state, error = "fail", "an objective is not a finite number: " + ", ".join(
                    f"{o.column} = {v}" for o, v in zip(self.space.objectives, values))
            elif any(math.isnan(float(kpi_value(record, c.column) or 0.0)) for c in self.space.constraints):
                state, error = "fail", "a constraint's column is not a number: " + ", ".join(
                    f"{c.column} = {kpi_value(record, c.column)}" for c in self.space.constraints)
        user = {INFO_ATTR: {"config": config, "target": target.label, "kind": target.kind, "error": error, **extra,
                            "kpis": record}}
        self._keys.add(trial_key(trial.params))
        feasible = True
        if state == "complete":
            constraints = {}
            for c in self.space.constraints:  # optuna's constraints: feasible when every value is <= 0
                violation = float(c.violation(kpi_value(record, c.column) or 0.0))
                constraints[f"{CONSTRAINTS_PREFIX}{c}"] = violation
                feasible = feasible and violation <= 0
            floats = [float(v) for v in values if v is not None]
            self._finish(trial, TrialState.COMPLETE, floats, user, constraints)
            return state, (floats if feasible else None)
        self._finish(trial, TrialState.FAIL, None, user)
        return "fail", None


def make_sampler(space: Space, seed: int) -> Any:
    import optuna

    if space.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(population_size=space.population or DEFAULT_POPULATION, seed=seed)
    if space.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    return optuna.samplers.RandomSampler(seed=seed)  # random, and grid (whose trials are all queued)


def open_storage(url: str) -> Any:
    """optuna's RDB storage at ``url``; a URL that cannot be opened is one error line."""
    import optuna

    try:
        storage = optuna.storages.RDBStorage(url)
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(f"cannot open the study storage: {type(e).__name__}: {msg}", where=safe_url(url)) from None
    if storage.engine.dialect.name == "sqlite":
        _fast_sqlite(storage.engine)
    return storage


def _fast_sqlite(engine: Any) -> None:
    """Write-ahead logging with ``synchronous = NORMAL`` on every connection: a commit no
    longer waits for the disk (SQLite's default waits twice per commit, and a trial makes
    about ten), and a killed process still loses nothing committed; only a power cut may lose
    the last commits (https://www.sqlite.org/wal.html)."""
    from sqlalchemy import event

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    event.listen(engine, "connect", pragmas)
    engine.dispose()  # connections opened before the listener are closed; new ones get the pragmas


def open_study(storage: Any, name: str, space: Space) -> StudyHandle:
    """Create the study, or load it to resume; the sampler's seed moves on by the number of
    trials the study holds, so a resumed random search does not repeat its proposals."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions: list[Any] = [o.direction for o in space.objectives]
    try:
        existing = optuna.load_study(study_name=name, storage=storage)
        held = len(existing.get_trials(deepcopy=False))
    except KeyError:
        held = 0
    sampler = make_sampler(space, space.seed + held)
    study = optuna.create_study(storage=storage, study_name=name, directions=directions, sampler=sampler,
                                load_if_exists=True)
    if held == 0:
        study.set_user_attr("space", space.to_json())
    return StudyHandle(study, space)
