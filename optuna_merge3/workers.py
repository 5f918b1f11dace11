"""Many workers on one study: genotype claims, a global budget, and stale trials of dead workers.

Everything here goes through the study's storage only (RDB, SQLite, journal file or Redis), so
workers on several machines need nothing else in common:

- :func:`claim_genotype`: a genotype is claimed before it is evaluated. A trial first records
  the genotype's key on itself, then reads the claims of the other live (RUNNING / COMPLETE)
  trials. Every storage applies writes in one order and a read sees all earlier writes, so of two
  trials that claim the same genotype at the same time at least one sees the other: at most one
  evaluates it. A trial that sees another claim is pruned (the sampler is asked again) and links
  the owner in ``duplicate_of``; it never waits, so a dead owner cannot block it.
- :func:`claim_budget_slot`: exactly ``budget`` complete trials across all workers; a waiting
  worker says what it waits for.
- :func:`record_worker` / :func:`stale_trials` / :func:`fail_and_requeue`: each trial records its
  host, pid and the process start time, so a RUNNING trial whose process is gone is recognised
  on that host even without a heartbeat (journal storages have none), and ``optuna-merge3
  repair`` can fail and re-queue it.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ALIVE_KEY",
    "CLAIM_KEY",
    "CrowdWarning",
    "TrialBeat",
    "WORKER_KEY",
    "claim_budget_slot",
    "claim_genotype",
    "describe_worker",
    "fail_and_requeue",
    "failed_under_us",
    "genotype_key",
    "optimize",
    "record_worker",
    "requeue_interrupted",
    "run_claimed",
    "stale_trials",
]

_logger = logging.getLogger(__name__)

CLAIM_KEY = "merge3:genotype"
WORKER_KEY = "merge3:worker"
ALIVE_KEY = "merge3:alive"
_DUPLICATE_KEY = "duplicate_of"
# A waiting worker repeats what it waits for this often (seconds), so a long wait is never silent.
_SAY_EVERY_S = 30.0
# A RUNNING trial without a worker record this old (seconds) was killed right after it started.
_UNRECORDED_GRACE_S = 60.0


# -- genotype claims ---------------------------------------------------------------------------
def genotype_key(params: Mapping[str, Any]) -> str:
    """A short digest of a genotype; floats equal to 12 significant digits share a key."""
    canonical = {k: float(f"{float(v):.12g}") for k, v in sorted(params.items())}
    return hashlib.sha256(json.dumps(canonical).encode()).hexdigest()[:20]


def claim_genotype(trial: optuna.Trial, params: Mapping[str, Any]) -> None:
    """Claim ``params`` for ``trial`` in the storage, or prune the trial if it is taken.

    A genotype is taken when another RUNNING or COMPLETE trial claimed it (or, for trials made
    before claims existed, completed with the same parameters). The pruned trial links that trial
    in its ``duplicate_of`` user attribute.

    Raises:
        optuna.TrialPruned: the genotype is (being) evaluated by another trial.
    """
    key = genotype_key(params)
    trial.storage.set_trial_system_attr(trial._trial_id, CLAIM_KEY, key)
    for other in trial.study.get_trials(
        deepcopy=False, states=(TrialState.RUNNING, TrialState.COMPLETE)
    ):
        if other.number == trial.number:
            continue
        claimed = other.system_attrs.get(CLAIM_KEY)
        if claimed == key or (
            claimed is None and other.state == TrialState.COMPLETE
            and genotype_key(other.params) == key
        ):
            trial.set_user_attr(_DUPLICATE_KEY, other.number)
            if other.state == TrialState.RUNNING:
                _logger.info("trial %d: genotype is being evaluated by trial %d (%s); asking "
                             "the sampler again", trial.number, other.number, describe_worker(other))
                raise optuna.TrialPruned(f"same parameters as running trial {other.number}")
            raise optuna.TrialPruned(f"same parameters as trial {other.number}")


# -- who runs a trial ----------------------------------------------------------------------------
def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux ``/proc``), telling a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _this_worker() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "proc_start": _process_start(pid)}


def record_worker(trial: optuna.Trial, beat_s: float | None = None) -> None:
    """Store host, pid, process start time and the trial's wall-clock start on the trial.

    Args:
        beat_s: the interval of this worker's :class:`TrialBeat` (journal storages), so that any
            reader can tell a trial whose beat stopped.
    """
    record = {**_this_worker(), "trial": trial.number, "started": round(time.time(), 1)}
    if beat_s:
        record["beat_s"] = beat_s
    trial.storage.set_trial_system_attr(trial._trial_id, WORKER_KEY, record)


class TrialBeat:
    """A heartbeat for storages without one (journals): ``merge3:alive`` every ``interval`` s.

    Used as a context manager around a trial. A RUNNING trial whose last beat is older than
    three intervals is stale (:func:`stale_trials`), on whatever host its worker ran.
    """

    def __init__(self, trial: optuna.Trial, interval: float) -> None:
        import threading

        self.trial, self.interval = trial, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="merge3-beat")

    def _beat(self) -> None:
        self.trial.storage.set_trial_system_attr(
            self.trial._trial_id, ALIVE_KEY, round(time.time(), 1))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._beat()
            except Exception as exc:  # a finished trial or a storage hiccup: stop beating
                _logger.debug("trial beat stopped: %s", exc)
                return

    def __enter__(self) -> TrialBeat:
        self._beat()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def describe_worker(trial: FrozenTrial) -> str:
    """``host pid N, started 12 s ago`` for a trial's recorded worker."""
    worker = _own_record(trial)
    if worker is None:
        return "worker not recorded yet"
    age = time.time() - float(worker.get("started", time.time()))
    return f"host {worker.get('host')} pid {worker.get('pid')}, started {age:.0f} s ago"


def _is_dead_here(trial: FrozenTrial) -> bool:
    """Whether the trial's worker ran on this host and its process is gone (or the pid reused)."""
    worker = _own_record(trial)
    if worker is None or worker.get("host") != socket.gethostname():
        return False
    pid = int(worker.get("pid", -1))
    if pid == os.getpid():
        return False
    start = _process_start(pid)
    if start is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return worker.get("proc_start") is not None and start != worker["proc_start"]


def _own_record(trial: FrozenTrial) -> dict[str, Any] | None:
    """The trial's worker record, unless it was copied from the failed trial it retries (the
    retry then has not recorded its own worker yet)."""
    worker = trial.system_attrs.get(WORKER_KEY)
    ok = isinstance(worker, dict) and worker.get("trial") == trial.number
    return worker if ok else None


def _beat_stopped(trial: FrozenTrial) -> bool:
    worker = _own_record(trial)
    beat_s = worker.get("beat_s") if worker else None
    if not beat_s:
        return False
    # a retry carries its failed original's last beat: its own start counts as a beat too
    alive = max(float(trial.system_attrs.get(ALIVE_KEY, 0)), float(worker["started"]))
    return time.time() - alive > 3 * float(beat_s)


def _never_recorded(trial: FrozenTrial) -> bool:
    """A worker records itself within milliseconds of starting a trial; one killed before that
    leaves a RUNNING trial nothing else would ever reveal."""
    if _own_record(trial) is not None or trial.datetime_start is None:
        return False
    age = (datetime.datetime.now() - trial.datetime_start).total_seconds()
    return age > _UNRECORDED_GRACE_S


def stale_trials(study: optuna.Study, *, all_running: bool = False) -> list[FrozenTrial]:
    """RUNNING trials whose worker is known to be dead: its process on this host is gone, its
    :class:`TrialBeat` stopped (journal storages; RDB storages use Optuna's heartbeat), or it
    died before it could record itself.

    Args:
        all_running: every RUNNING trial instead (``repair`` after the user confirms that no
            worker runs).
    """
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    return running if all_running else [
        t for t in running if _is_dead_here(t) or _beat_stopped(t) or _never_recorded(t)]


def fail_and_requeue(study: optuna.Study, trials: list[FrozenTrial], max_retry: int = 3) -> int:
    """Fail each trial and enqueue a copy (``RetryHeartbeatStaleTrialCallback``'s retry).

    Returns:
        How many trials this call failed (another worker may have failed some first).
    """
    storage = study._storage
    failed = 0
    for trial in trials:
        try:
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:  # another worker was first
            continue
        failed += 1
        _requeue(study, storage.get_trial(trial._trial_id), max_retry)
    return failed


def requeue_interrupted(study: optuna.Study, max_retry: int = 3) -> list[int]:
    """Re-queue the trials this process was running when it was interrupted (SIGTERM, Ctrl-C):
    Optuna marked them FAIL; a copy waits for the next worker, first in line for a budget slot.

    Returns:
        The numbers of the re-queued trials.
    """
    trials = study.get_trials(deepcopy=False)
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    mine = [t for t in _failed_here(trials) if t.number not in retried]
    for trial in mine:
        _requeue(study, trial, max_retry)
    return [t.number for t in mine]


def failed_under_us(study: optuna.Study, exc: BaseException) -> int | None:
    """The trial of this process that another worker failed while it ran, when ``exc`` is
    Optuna's refusal to tell it; None for any other error.

    On a stalled machine or database a live trial's heartbeat can look stale: another worker then
    fails it and queues its copy, and ``optimize`` raises at the tell, ending this worker
    (Optuna 5.1 raises an ``AssertionError`` from its log step with the refusal as its context).
    """
    chain: BaseException | None = exc
    while chain is not None and not (isinstance(chain, ValueError)
                                     and "Cannot tell a FAIL trial" in str(chain)):
        chain = chain.__context__
    if chain is None:
        return None
    mine = _failed_here(study.get_trials(deepcopy=False, states=(TrialState.FAIL,)))
    return mine[-1].number if mine else None


def _failed_here(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    """The FAIL trials among ``trials`` that this process (host and pid) ran."""
    me = _this_worker()
    return [t for t in trials if t.state == TrialState.FAIL and (r := _own_record(t))
            and (r.get("host"), r.get("pid")) == (me["host"], me["pid"])]


def optimize(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], Any],
    *,
    callbacks: list[Callable[[optuna.Study, FrozenTrial], None]] | None = None,
    timeout: float | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """``study.optimize(objective)`` as a worker runs it: when another worker failed the trial
    this one was running (:func:`failed_under_us`), say so and go on; its copy is queued."""
    say = say or _logger.warning
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        try:
            study.optimize(objective, n_trials=None, timeout=left, callbacks=callbacks,
                           gc_after_trial=False)
            return
        except (ValueError, AssertionError) as exc:
            number = failed_under_us(study, exc)
            if number is None:
                raise
            say(f"[workers] trial {number} was failed by another worker while it ran (its "
                "heartbeat looked stale); its copy is queued, going on")


def _requeue(study: optuna.Study, trial: FrozenTrial, max_retry: int) -> None:
    with warnings.catch_warnings():  # the retry callback is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)(study, trial)


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():  # fail_stale_trials is "experimental" in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)  # heartbeat storages
    dead = stale_trials(study)
    if dead and fail_and_requeue(study, dead):
        _logger.warning("failed and re-queued trial(s) %s of dead worker(s)",
                        [t.number for t in dead])


def run_claimed(
    trial: optuna.Trial,
    suggest: Callable[[optuna.Trial], dict[str, float]],
    evaluate: Callable[[optuna.Trial, dict[str, float]], Any],
    *,
    budget: int | None = None,
    dedupe: bool = True,
    beat_s: float | None = None,
    say: Callable[[str], None] | None = None,
) -> Any:
    """One trial as every worker runs it: record the worker, sample, claim the genotype, claim a
    budget slot, evaluate (with a :class:`TrialBeat` on storages without a heartbeat).

    Returns:
        Whatever ``evaluate(trial, params)`` returns (the objective values).
    """
    import contextlib

    record_worker(trial, beat_s)
    _fail_stale(trial.study)  # a dead worker's trial is re-queued before this one takes a slot
    params = suggest(trial)
    with TrialBeat(trial, beat_s) if beat_s else contextlib.nullcontext():
        if dedupe:
            claim_genotype(trial, params)
        if budget is not None:
            claim_budget_slot(trial, budget, say=say)
        return evaluate(trial, params)


class CrowdWarning:
    """An Optuna callback that warns once when a GA population is crowded by workers.

    Optuna assigns a trial to a generation by counting COMPLETE trials, so W workers pile up to
    W-1 extra trials into a full generation, and trials that finish after the next generation
    chose its parents never become parent candidates: measured 0-9% of the budget with 2
    workers on a population of 8, 31-38% with 8 (``benchmarks/results/workers_waste.md``).
    """

    def __init__(self, population_size: int, say: Callable[[str], None] | None = None,
                 max_share: float = 0.25) -> None:
        self.population_size, self.max_share = population_size, max_share
        self.say = say or _logger.warning
        self.warned = False

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        if self.warned:
            return
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        live = {(w["host"], w["pid"]) for t in running if (w := _own_record(t))}
        if len(live) > self.max_share * self.population_size:
            self.warned = True
            self.say(f"[workers] {len(live)} workers share a population of "
                     f"{self.population_size}: many trials will finish after the next "
                     "generation chose its parents and never become parents (see "
                     "benchmarks/results/workers_waste.md); use at most "
                     f"{max(1, int(self.max_share * self.population_size))} workers or a larger "
                     "population")


# -- the global budget ---------------------------------------------------------------------------
def claim_budget_slot(
    trial: optuna.Trial,
    budget: int,
    *,
    poll_s: float = 0.5,
    timeout_s: float = 3600.0,
    say: Callable[[str], None] | None = None,
) -> None:
    """Let a trial run only if it can be one of the first ``budget`` complete trials.

    Several workers each running ``optimize`` with ``MaxTrialsCallback`` overshoot the budget
    (every running trial completes). Here a trial counts the complete trials plus the running
    ones created before it; while that reaches the budget it waits (those may still fail and free
    a slot), and once the budget is met it is pruned and the study stopped, leaving nothing of
    dead workers RUNNING or WAITING (:func:`_close_after_budget`).

    Queued trials (enqueued seeds, and the copies made of a killed worker's trial) go first: a
    freshly sampled trial that would take the last free slot while such a trial waits is pruned,
    so the queued one runs instead. While waiting, stale trials are failed and re-queued (by the
    storage heartbeat, and for dead processes on this host by their recorded pid), and every
    ``_SAY_EVERY_S`` seconds ``say`` (default: a log warning) hears which trials it waits for.

    Raises:
        optuna.TrialPruned: the budget is already met, or the slot goes to a queued trial.
        RuntimeError: no slot came free within ``timeout_s``; the message names the trials.
    """
    say = say or _logger.warning
    study = trial.study
    started = time.monotonic()
    said = started - _SAY_EVERY_S + 2 * poll_s  # the first message after a short wait
    states = (TrialState.COMPLETE, TrialState.RUNNING, TrialState.WAITING)
    while True:
        trials = study.get_trials(deepcopy=False, states=states)
        complete = sum(t.state == TrialState.COMPLETE for t in trials)
        earlier_running = [
            t for t in trials if t.state == TrialState.RUNNING and t.number < trial.number
        ]
        waiting = [t.number for t in trials if t.state == TrialState.WAITING]
        mine = next((t for t in trials if t.number == trial.number), None)
        queued = mine is not None and _is_queued(mine)
        if complete >= budget:
            trial.set_user_attr("budget", "exhausted")
            _close_after_budget(study, trial.number, poll_s)
            study.stop()
            raise optuna.TrialPruned(f"trial budget of {budget} complete trials is met")
        taken = complete + len(earlier_running)
        if taken + (0 if queued else len(waiting)) < budget:
            return
        if taken < budget and waiting and not queued:
            trial.set_user_attr("budget", f"slot left to queued trial {waiting[0]}")
            raise optuna.TrialPruned(f"the free budget slot goes to queued trial {waiting[0]}")
        waited = time.monotonic() - started
        if waited > timeout_s or time.monotonic() - said >= _SAY_EVERY_S:
            others = "; ".join(f"trial {t.number} ({describe_worker(t)})"
                               for t in earlier_running[:4])
            message = (f"trial {trial.number} waits for a budget slot ({complete}/{budget} "
                       f"complete): running {others}. If those workers are dead, run "
                       "`optuna-merge3 repair CONFIG`")
            if waited > timeout_s:
                raise RuntimeError(f"waited {timeout_s:.0f} s; {message}")
            say(message)
            said = time.monotonic()
        _fail_stale(study)
        time.sleep(poll_s)


def _close_after_budget(study: optuna.Study, me: int, poll_s: float) -> None:
    """The budget is met, so nothing more runs: fail dead workers' trials and retire the retries
    queued for them (PRUNED, user attr ``budget: exhausted``) instead of leaving them WAITING.

    A worker killed between ``ask`` and its record leaves a RUNNING trial that is only recognised
    after ``_UNRECORDED_GRACE_S``; wait for it, so that the study ends with nothing RUNNING
    (a live worker records itself within milliseconds). Seeds the user enqueued stay WAITING
    for a later run with a larger budget.
    """
    storage = study._storage
    while True:
        _fail_stale(study)
        for copy in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            # WAITING -> RUNNING is atomic in every storage: False when another worker took it
            if "failed_trial" in copy.system_attrs and storage.set_trial_state_values(
                    copy._trial_id, state=TrialState.RUNNING):
                storage.set_trial_user_attr(copy._trial_id, "budget", "exhausted")
                storage.set_trial_state_values(copy._trial_id, state=TrialState.PRUNED)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if all(t.number == me or _own_record(t) is not None for t in running):
            return
        time.sleep(poll_s)


def _is_queued(trial: FrozenTrial) -> bool:
    """Whether a trial came from the queue (``enqueue_trial`` or a retry of a failed one)."""
    return "fixed_params" in trial.system_attrs or "failed_trial" in trial.system_attrs
