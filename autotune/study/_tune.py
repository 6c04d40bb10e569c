"""Running a study, as phases: open, baseline, screen, search, confirm, sweep.

``tune`` creates or resumes the study (the same command again continues it up to ``--trials``),
measures ONNX Runtime's default configuration first as the baseline (its outputs become the
accuracy guard's reference), judges the model variants once, runs the search
(:mod:`autotune.study._search`: the sampler proposes, a fresh worker measures) within the budget,
then confirms the finalists against the baseline and sweeps the concurrency
(:mod:`autotune.study._confirm`). Each phase takes the frozen :class:`State` and returns a new
one. Every metric and failure reason is stored as trial user attributes, the model, machine and
confirmation as study user attributes, so optuna-dashboard shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from autotune.config import (
    ConcurrencySweep,
    Confirmation,
    Measurement,
    TrialFailure,
)
from autotune.errors import AutotuneError
from autotune.interrupt import check_stop
from autotune.measure.lock import machine_lock
from autotune.study._confirm import confirm_finalists, sweep_concurrency
from autotune.study._liveness import await_baseline, claim, fail_orphaned_trials
from autotune.study._open import open_study
from autotune.study._records import (
    TrialRecord,
    best_of,
    counts_toward_budget,
    optuna_module,
    pareto_of,
    records_of,
)
from autotune.study._request import TuneRequest
from autotune.study._screen import SCREEN, promising, screen_batching, screen_variants
from autotune.study._search import Proposer, finished, search_trials
from autotune.study._spool import replay_spool
from autotune.study._state import Run, State
from autotune.study._trial import Measurer, measure_trial

BASELINE_TIMEOUT_S = 600.0
MIN_TRIAL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Progress:
    done: int  # finished trials in the study, this one included
    total: int
    elapsed_s: float  # since this invocation started
    best: TrialRecord | None
    failed: int = 0  # failed trials in the study
    ran: int = 0  # trials run by this invocation
    timeout_s: float | None = None

    @property
    def remaining_s(self) -> float | None:
        """Estimated time left: the trials to go at this run's pace, capped by --timeout."""
        if self.ran == 0:
            return None
        estimate = self.elapsed_s / self.ran * max(0, self.total - self.done)
        if self.timeout_s is not None:
            estimate = min(estimate, max(0.0, self.timeout_s - self.elapsed_s))
        return estimate


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str
    baseline: TrialRecord
    search_best: TrialRecord  # the best single measurement of the search
    best: TrialRecord  # the config to deploy: the confirmed winner (maybe the baseline)
    records: tuple[TrialRecord, ...]  # every finished trial of the study, in order
    ran: int  # trials run by this invocation
    stop_reason: str
    confirmation: Confirmation | None = None
    pareto: tuple[TrialRecord, ...] = ()  # several objectives: the non-dominated trials
    sweep: ConcurrencySweep | None = None  # chosen and defaults at several concurrencies
    interrupted: bool = False  # Ctrl-C or SIGTERM: results are what completed before it
    failed_out: bool = False  # stopped by --max-failures consecutive failures
    reused: bool = False  # the stored confirmation of a finished study; nothing was measured
    timing: Mapping[str, float] = field(default_factory=dict)  # search_s, confirmation_s, ...
    variant_paths: Mapping[str, str] = field(default_factory=dict)  # the variants searched


def _trial_timeout(request: TuneRequest, baseline: TrialRecord) -> float:
    if request.trial_timeout_s is not None:
        return request.trial_timeout_s
    wall = baseline.outcome.wall_s if isinstance(baseline.outcome, Measurement) else None
    # A trial may be slower than the baseline (bigger batch, one thread): allow plenty.
    return max(MIN_TRIAL_TIMEOUT_S, 10 * (wall or MIN_TRIAL_TIMEOUT_S))


def tune(
    request: TuneRequest,
    *,
    on_trial: Callable[[TrialRecord, Progress], None] | None = None,
    on_message: Callable[[str], None] | None = None,
) -> TuneResult:
    """Run the study up to ``request.trials`` finished trials (or the timeout), confirm the
    finalists, and return the config to deploy.

    Raises:
        AutotuneError: the baseline failed (nothing can be compared), or no trial ever finished.
    """
    check_stop()  # a stop that came while the run was preparing: the study is not opened
    if not request.wait_for_lock:  # --no-wait: fail before the study is made, not after
        with machine_lock(wait=False):
            pass
    say = on_message or (lambda line: None)
    started = time.perf_counter()

    def on_record(records: tuple[TrialRecord, ...], record: TrialRecord, ran: int) -> None:
        if on_trial is not None:
            on_trial(record, _progress(request, records, ran, time.perf_counter() - started))

    run = Run(open_study(request), say, on_record, started)
    state = open_run(request, run)
    state = measure_baseline(state, run)
    state = screen(state, run)
    for phase in (search, confirm_finalists, sweep_concurrency):
        if state.interrupted:
            break
        state = phase(state, run)
    return result_of(state, say)


def open_run(request: TuneRequest, run: Run) -> State:
    """Take over what died or waited (orphaned trials, spooled results) and set the sampler."""
    study = run.study
    orphans = fail_orphaned_trials(study)
    if orphans:
        run.say(f"{orphans} trial(s) left running by a tuner that died: marked failed, run again")
    replay_spool(study, request.spool_dir, run.say)
    # Offset the seed on resume so the sampler does not replay the first session's proposals.
    seed = None if request.seed is None else request.seed + len(study.trials)
    study.sampler = optuna_module().samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        n_startup_trials=max(4, min(10, request.trials // 3)),
        constant_liar=True,  # other tuners' running trials steer this one's proposals away
    )
    return State(
        request, Measurer(request, BASELINE_TIMEOUT_S, on_wait=run.say), tuple(records_of(study))
    )


def _successful_baseline(records: Sequence[TrialRecord]) -> TrialRecord | None:
    return next((r for r in records if r.baseline and r.ok), None)


def measure_baseline(state: State, run: Run) -> State:
    """The baseline phase: the study's baseline, measured now if no tuner has, and the trial
    timeout derived from it."""
    request, records = state.request, state.records
    baseline = _successful_baseline(records)
    if baseline is None:  # another tuner may be measuring it, or may just have finished it
        await_baseline(run.study, run.say)
        records = tuple(records_of(run.study))
        baseline = _successful_baseline(records)
    ran = 0
    if baseline is None and finished(records) < request.trials:
        baseline = _first_baseline(state, run)
        ran = 1
        records = (*records, baseline)
        run.on_record(records, baseline, ran)
    if baseline is None:
        raise AutotuneError(
            f"study {request.study_name!r} has no successful baseline and no trials left; "
            "raise --trials or start a new --study"
        )
    measurer = replace(state.measurer, timeout_s=_trial_timeout(request, baseline))
    if request.reference_path and not Path(request.reference_path).is_file():
        run.say("the accuracy guard's reference outputs are missing: measuring the baseline again")
        again = measurer(baseline.config, write_reference=True)
        if isinstance(again, TrialFailure):
            raise AutotuneError(f"re-running the baseline failed: {again.kind}: {again.message}")
    return replace(state, records=records, baseline=baseline, ran=ran, measurer=measurer)


def _first_baseline(state: State, run: Run) -> TrialRecord:
    """Measure ONNX Runtime's defaults as the study's first trial, then queue the known
    serving layouts so the search starts from them."""
    request, study = state.request, run.study
    trial = claim(study.ask())
    baseline = measure_trial(
        study, trial, request.space.baseline(), request, state.measurer, baseline=True
    )
    if isinstance(baseline.outcome, TrialFailure) and baseline.outcome.kind == "interrupted":
        raise KeyboardInterrupt  # nothing completed: nothing to write
    if isinstance(baseline.outcome, TrialFailure):
        raise AutotuneError(
            f"the baseline (ONNX Runtime defaults) failed, so nothing can be compared: "
            f"{baseline.outcome.kind}: {baseline.outcome.message[:500]}"
        )
    presets = request.space.serving_presets(request.workload.concurrency)
    batched = request.space.batch_preset()
    if batched and any(o.name == "throughput" for o in request.all_objectives):
        presets.append(batched)
    for params in presets:  # the known serving layouts first; the sampler fills the rest
        study.enqueue_trial(params, skip_if_exists=True)
    if presets:
        run.say(
            f"{len(presets)} known layout(s) queued first: "
            + "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in presets)
        )
    return baseline


def screen(state: State, run: Run) -> State:
    """The screen phase: server-side batching and each model variant judged once against the
    reference, before any trial is spent; the space keeps what passes."""
    request = state.request
    batching = screen_batching(
        run.study,
        request,
        lambda config, workload: state.measurer(config, measure=SCREEN, workload=workload),
        run.say,
    )
    if not batching:
        request = replace(request, space=request.space.without_batching())
        state = replace(state, request=request, measurer=replace(state.measurer, request=request))
    return _screen_variants(state, run)


def _screen_variants(state: State, run: Run) -> State:
    """Each model variant judged once; the space keeps those that pass."""
    request, baseline = state.request, state.the_baseline
    if not request.variant_paths:
        return state
    base_ms = baseline.outcome.latency_ms.p50 if isinstance(baseline.outcome, Measurement) else 0.0
    passed, paths, verdicts = screen_variants(
        run.study,
        request,
        lambda config, paths: state.measurer(config, measure=SCREEN, variant_paths=paths),
        run.say,
        base_ms,
    )
    request = replace(request, space=request.space.with_variants(passed), variant_paths=paths)
    # Each passing variant measured early at ONNX Runtime's defaults: a sampler's few
    # start-up trials can miss the fastest recipe among a dozen choices, or try it only
    # with session options that hide it.
    first = promising(verdicts, passed, base_ms)[: max(1, request.trials // 3)]
    for name in first:
        run.study.enqueue_trial(request.space.default_params(variant=name), skip_if_exists=True)
    if first and finished(state.records) < request.trials:
        run.say(f"{len(first)} passing variant(s) queued first at the defaults: {', '.join(first)}")
    return replace(state, request=request, measurer=replace(state.measurer, request=request))


def search(state: State, run: Run) -> State:
    """The search phase: ask / measure / tell until the budget, the patience or the time is
    spent, or failures stop it."""
    proposer = Proposer(run.study, state.request, started=run.started, say=run.say)
    ran = state.ran

    def on_record(records: tuple[TrialRecord, ...], record: TrialRecord) -> None:
        nonlocal ran
        ran += 1
        run.on_record(records, record, ran)

    searched = search_trials(run.study, state.request, state.measurer, proposer, on_record)
    return replace(
        state,
        records=searched.records or state.records,
        ran=state.ran + searched.ran,
        stop_reason=searched.stop_reason,
        failed_out=searched.failed_out,
        interrupted=searched.interrupted,
        search_s=run.elapsed_s(),
    )


def _progress(
    request: TuneRequest, records: Sequence[TrialRecord], ran: int, elapsed_s: float
) -> Progress:
    failed = sum(1 for r in records if not r.ok and counts_toward_budget(r))
    return Progress(
        finished(records),
        request.trials,
        elapsed_s,
        best_of(records, request.objective, request.limits),
        failed,
        ran,
        request.timeout_s,
    )


def result_of(state: State, say: Callable[[str], None]) -> TuneResult:
    """What the run found, for best.json and the summary table."""
    request, baseline = state.request, state.the_baseline
    records = state.records
    search_best = best_of(records, request.objective, request.limits)
    if search_best is None:
        say(
            f"no configuration met the constraints ({request.limits.describe()}); "
            "keeping the defaults"
        )
        search_best = baseline
    several = len(request.all_objectives) > 1
    best = search_best
    if state.confirmation is not None:
        best = next(r for r in records if r.number == state.confirmation.winner)
    return TuneResult(
        study_name=request.study_name,
        storage=request.storage,
        baseline=baseline,
        search_best=search_best,
        best=best,
        records=records,
        ran=state.ran,
        stop_reason=state.stop_reason,
        confirmation=state.confirmation,
        pareto=pareto_of(records, request.all_objectives) if several else (),
        sweep=state.sweep,
        interrupted=state.interrupted,
        failed_out=state.failed_out,
        reused=state.reused,
        timing=_timing(records, state.search_s, state.confirmation_s),
        variant_paths=request.variant_paths,
    )


def _timing(
    records: Sequence[TrialRecord], search_s: float, confirmation_s: float
) -> dict[str, float]:
    """Where this invocation's time went: the search, the confirmation, per-trial overhead."""
    overheads = sorted(
        r.outcome.overhead_s
        for r in records
        if isinstance(r.outcome, Measurement) and r.outcome.overhead_s is not None
    )
    median = overheads[len(overheads) // 2] if overheads else 0.0
    return {
        "search_s": round(search_s, 2),
        "confirmation_s": round(confirmation_s, 2),
        "overhead_s_median": round(median, 3),
    }
