"""Running a study: baseline first, then ask / measure / tell, then the confirmation.

``tune`` creates or resumes the study (the same command again continues it up to ``--trials``),
measures ONNX Runtime's default configuration first as the baseline (its outputs become the
accuracy guard's reference), runs the ask / measure / tell loop within the budget, then confirms
the finalists against the baseline in interleaved rounds. Every metric and failure reason is
stored as trial user attributes, the model, machine and confirmation as study user attributes, so
optuna-dashboard shows them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.config import (
    AccuracyCheck,
    ConcurrencySweep,
    Confirmation,
    Measurement,
    MeasureSettings,
    SweepPoint,
    TrialConfig,
    TrialFailure,
    TrialOutcome,
    WorkerJob,
    Workload,
)
from autotune.confirm.paired import confirm_paired
from autotune.confirm.rounds import confirm, confirmed_front, pick_finalists, spread_along_front
from autotune.confirm.sweep import run_sweep
from autotune.errors import AutotuneError
from autotune.fmt import fmt_number
from autotune.interrupt import STOP, check_stop
from autotune.measure.lock import machine_lock
from autotune.measure.runner import run_trial
from autotune.rules import RuleContext, broken_rules
from autotune.study._liveness import (
    Heartbeat,
    await_baseline,
    claim,
    fail_orphaned_trials,
    running_trials,
)
from autotune.study._open import open_study
from autotune.study._records import (
    TrialRecord,
    best_of,
    counts_toward_budget,
    measured_before,
    optuna_module,
    pareto_of,
    records_of,
)
from autotune.study._request import TuneRequest
from autotune.study._retry import StorageUnavailable
from autotune.study._screen import SCREEN, promising, screen_variants
from autotune.study._spool import replay_spool, spool_trial
from autotune.variants.build import accuracy_for

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial

BASELINE_TIMEOUT_S = 600.0
PROGRESS_EVERY_S = 15.0  # the confirmation says where it is at least this often
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


def _metric_attrs(m: Measurement) -> dict[str, Any]:
    """Flat figures for the dashboard's user-attribute view, plus the full measurement."""
    attrs: dict[str, Any] = {
        "throughput": round(m.throughput, 3),
        "latency_p50_ms": round(m.latency_ms.p50, 4),
        "latency_p99_ms": round(m.latency_ms.p99, 4),
        "peak_rss_mb": round(m.peak_rss_mb or 0.0, 1),
        "startup_s": round(m.startup_s, 4),
        "cpu_cores": m.cpu_cores,
        "unstable": " | ".join(m.unstable),
        "measurement": m.to_dict(),
    }
    if m.max_abs_err is not None:
        attrs["max_abs_err"] = m.max_abs_err
    if m.cosine is not None:
        attrs["cosine"] = m.cosine
    if m.top1_agreement is not None:
        attrs["top1_agreement"] = m.top1_agreement
    return attrs


@dataclass
class Measurer:
    """Runs one config in a fresh worker under the machine's measuring lock."""

    request: TuneRequest
    timeout_s: float
    on_wait: Callable[[str], None] | None = None

    def job(
        self,
        config: TrialConfig,
        *,
        write_reference: bool = False,
        workload: Workload | None = None,
        measure: MeasureSettings | None = None,
        variant_paths: Mapping[str, str] | None = None,
    ) -> WorkerJob:
        """The worker job for ``config`` under the study's inputs, guard and workload."""
        r = self.request
        metric = r.accuracy if r.judge else None  # the user's check judges every trial
        if config.variant != "original" and not r.judge:
            metric = r.accuracy or accuracy_for(config.variant)
        accuracy = AccuracyCheck(
            reference_path=r.reference_path,
            write_batches=tuple(r.space.batch_sizes) if write_reference else (),
            rtol=r.rtol,
            atol=r.atol,
            metric=metric[0] if metric else None,
            threshold=metric[1] if metric else None,
            outputs=r.judged_outputs,
            mask_input=r.mask_input,
            judge=r.judge,
        )
        model_path = (variant_paths or r.variant_paths).get(config.variant, r.model.path)
        return WorkerJob(
            model_path, config, r.feeds, measure or r.measure, accuracy, workload or r.workload
        )

    def __call__(
        self,
        config: TrialConfig,
        *,
        write_reference: bool = False,
        workload: Workload | None = None,
        measure: MeasureSettings | None = None,
        variant_paths: Mapping[str, str] | None = None,
    ) -> TrialOutcome:
        r = self.request
        job = self.job(
            config,
            write_reference=write_reference,
            workload=workload,
            measure=measure,
            variant_paths=variant_paths,
        )
        if STOP.is_set():
            return TrialFailure("interrupted", "stopped by the user before it started")
        with machine_lock(wait=r.wait_for_lock, on_wait=self.on_wait, stop=STOP):
            return run_trial(
                job,
                timeout_s=self.timeout_s,
                max_memory_mb=r.max_memory_mb,
                max_gpu_memory_mb=r.max_gpu_memory_mb,
                command=r.worker_command,
            )


#: Trials after the baseline that all failed the same way (and none succeeded) that stop a
#: study: the cause is the tool's setup or the model, not the configs.
SAME_FAILURE_STOPS = 3
FAILURE_FIXES = {
    "mismatch": "the outputs differ from the defaults' beyond the guard: check the tolerances "
    "(--rtol/--atol, --accuracy) or the variants",
    "oom": "raise --max-memory-mb if the host has room",
    "timeout": "raise --trial-timeout",
    "fallback": "the provider cannot run this model here: see `autotune doctor`",
}


def one_failure(records: Sequence[TrialRecord], *, at_least: int) -> str | None:
    """Why the study failed as a whole, if it did: ``at_least`` trials after the baseline,
    none of them measured, all failed for the same reason (kind and message, numbers aside)."""
    trials = [r for r in records if not r.baseline and counts_toward_budget(r)]
    failures = [r.outcome for r in trials if isinstance(r.outcome, TrialFailure)]
    if len(trials) < at_least or len(failures) != len(trials):
        return None
    variants = {r.config.variant for r in trials}
    if variants != {"original"} and len(variants) == 1:
        return None  # one model variant failing is that variant's loss; the search goes on
    reasons = {(f.kind, re.sub(r"[0-9.]+", "N", f.message)[:160]) for f in failures}
    if len(reasons) != 1 or failures[0].kind == "interrupted":
        return None
    first = failures[0]
    fix = FAILURE_FIXES.get(first.kind, "this is not a config that lost; fix the cause and re-run")
    return (
        f"every trial after the baseline failed the same way ({len(failures)} of "
        f"{len(trials)}): {first.kind}: {first.message[:300]}; {fix}"
    )


def _labels(config: TrialConfig, baseline: bool) -> dict[str, Any]:
    """What a trial is: its config, whether it is the baseline, its one-line summary."""
    return {"config": config.to_dict(), "baseline": baseline, "summary": config.describe()}


def _label(trial: Trial, config: TrialConfig, baseline: bool) -> None:
    for key, value in _labels(config, baseline).items():
        trial.set_user_attr(key, value)


def _measure_trial(
    study: Study,
    trial: Trial,
    config: TrialConfig,
    request: TuneRequest,
    measurer: Measurer,
    *,
    baseline: bool,
) -> TrialRecord:
    optuna = optuna_module()
    _label(trial, config, baseline)
    broken = broken_rules(config, RuleContext(static_shapes=request.static_shapes))
    try:
        if broken:  # never started: a known-bad combination
            reasons = "; ".join(f"{rule.name} ({rule.why})" for rule in broken)
            outcome: TrialOutcome = TrialFailure("invalid", reasons)
        else:
            with Heartbeat(study, trial):
                outcome = measurer(config, write_reference=baseline)
    except BaseException:  # Ctrl-C, or the lock refused: the trial did not run
        trial.set_user_attr("failure_kind", "interrupted")
        trial.set_user_attr("failure_message", "interrupted before it finished")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    attrs, constraints, values = _outcome_attrs(outcome, request)
    try:
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        for name, violation in constraints.items():
            trial.set_constraint(name, violation)  # the sampler learns feasibility
        if values is None:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            study.tell(trial, values if len(values) > 1 else values[0])
    except StorageUnavailable as exc:  # measured, but the database is away: keep it
        path = spool_trial(
            request.spool_dir,
            trial,
            {**_labels(config, baseline), **attrs},
            constraints,
            values,
        )
        raise StorageUnavailable(
            f"{exc}; the trial just measured is kept in {path} and joins the study when it "
            "resumes: re-run the same command once the database is back"
        ) from None
    return TrialRecord(trial.number, config, outcome, baseline=baseline)


def _outcome_attrs(
    outcome: TrialOutcome, request: TuneRequest
) -> tuple[dict[str, Any], dict[str, float], list[float] | None]:
    """What a finished trial stores: its user attributes, its constraint values and its
    objective values (None for a failed trial)."""
    attrs: dict[str, Any] = {}
    constraints: dict[str, float] = {}
    if isinstance(outcome, Measurement):
        attrs.update(_metric_attrs(outcome))
        if request.limits.bounds:
            violations = request.limits.violations(outcome)
            constraints = dict(zip(request.limits.bounds, violations, strict=True))
            attrs["constraints"] = violations
            broken_limits = request.limits.broken(outcome)
            if broken_limits:
                attrs["infeasible"] = "; ".join(broken_limits)
        return attrs, constraints, [o.value(outcome) for o in request.all_objectives]
    attrs["failure_kind"] = outcome.kind
    attrs["failure_message"] = outcome.message[:2000]
    if outcome.details:
        attrs["failure_details"] = dict(outcome.details)
    if outcome.kind == "oom" and "max_gpu_memory_mb" in outcome.details:
        attrs["constraint_violation"] = "max_gpu_memory_mb"
    elif outcome.kind == "oom" and request.memory_constraint:
        attrs["constraint_violation"] = "max_memory_mb"
    return attrs, constraints, None


#: Proposals in a row of configs already measured that end the search (a small space is
#: exhausted; the sampler is asked again until then).
MAX_REPEATS = 20


def _tell_repeat(study: Study, trial: Trial, config: TrialConfig, earlier: TrialRecord) -> None:
    """A proposal of a config the study measured already: recorded, not measured, not counted."""
    optuna = optuna_module()
    _label(trial, config, False)
    trial.set_user_attr("failure_kind", "repeat")
    trial.set_user_attr(
        "failure_message", f"the same config as trial #{earlier.number}: its result stands"
    )
    trial.set_user_attr("repeat_of", earlier.number)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)


def _since_best(records: Sequence[TrialRecord], request: TuneRequest) -> int:
    """Trials that used the budget since the study's best so far (failed ones included)."""
    best = best_of(records, request.objective, request.limits)
    if best is None:
        return 0
    return sum(1 for r in records if r.number > best.number and counts_toward_budget(r))


def _trial_timeout(request: TuneRequest, baseline: TrialRecord) -> float:
    if request.trial_timeout_s is not None:
        return request.trial_timeout_s
    wall = baseline.outcome.wall_s if isinstance(baseline.outcome, Measurement) else None
    # A trial may be slower than the baseline (bigger batch, one thread): allow plenty.
    return max(MIN_TRIAL_TIMEOUT_S, 10 * (wall or MIN_TRIAL_TIMEOUT_S))


def _confirm(
    study: Study,
    request: TuneRequest,
    records: Sequence[TrialRecord],
    baseline: TrialRecord,
    measurer: Measurer,
    say: Callable[[str], None],
) -> Confirmation | None:
    feasible = [
        r for r in records
        if not r.baseline and isinstance(r.outcome, Measurement) and request.limits.feasible(r.outcome)
    ]  # fmt: skip
    several = len(request.all_objectives) > 1
    if several:  # points spread along the search's Pareto front, not one end of it
        front = pareto_of(feasible, request.all_objectives)
        distinct = pick_finalists(
            [(r.number, r.config, r.outcome) for r in front],
            baseline.config,
            request.objective,
            len(front),
        )
        finalists = spread_along_front(distinct, request.objective, request.finalists)
    else:
        finalists = pick_finalists(
            [(r.number, r.config, r.outcome) for r in feasible],
            baseline.config,
            request.objective,
            request.finalists,
        )
    if request.finalists <= 0 or request.rounds <= 0 or not finalists:
        return None
    numbers = ", ".join(f"#{n}" for n, _, _ in finalists)
    what = "Pareto points" if several else "finalists"
    also = [o for o in request.all_objectives if o.name != request.objective.name]
    if request.paired and all(o.pairable for o in request.all_objectives):
        say(
            f"confirming: baseline #{baseline.number}, its twin and {what} {numbers} in warm "
            "workers taking turns in short blocks (paired under the same host state)"
        )
        assert isinstance(baseline.outcome, Measurement)

        began = last = time.monotonic()

        def on_cycle(done: int, cap: int) -> None:
            nonlocal last
            now = time.monotonic()
            if done % 10 == 0 or now - last >= PROGRESS_EVERY_S:  # slow cycles are not silent
                last = now
                say(f"  cycle {done}, up to {cap} ({now - began:.0f} s in)")

        with machine_lock(wait=request.wait_for_lock, on_wait=say, stop=STOP):
            confirmation = confirm_paired(
                (baseline.number, baseline.config, baseline.outcome),
                [(n, c) for n, c, _ in finalists],
                job_for=measurer.job,
                searched={n: o for n, _, o in finalists if isinstance(o, Measurement)},
                objective=request.objective,
                rounds=request.rounds,
                timeout_s=measurer.timeout_s,
                command=request.worker_command,
                also=also,
                on_cycle=on_cycle,
                budget_s=_measuring_s(records),
            )
        if several:
            confirmation = replace(
                confirmation,
                front=confirmed_front(confirmation, [request.objective, *also]),
            )
        confirmation = replace(confirmation, confirmed_at=_now(), trials=_finished(records))
        study.set_user_attr("confirmation", confirmation.to_dict())
        return confirmation
    say(
        f"confirming: baseline #{baseline.number} and {what} {numbers}, "
        f"{request.rounds} interleaved rounds in fresh workers"
    )

    def on_run(round_index: int, number: int, outcome: TrialOutcome) -> None:
        if isinstance(outcome, Measurement):
            text = f"{fmt_number(request.objective.value(outcome))} {request.objective.unit}"
        else:
            text = f"FAILED {outcome.kind}"
        cap = max(request.rounds, 3 * request.rounds)  # confirm()'s adaptive cap
        say(f"  round {round_index + 1}, up to {cap}, #{number}: {text}")

    confirmation = confirm(
        (baseline.number, baseline.config, baseline.outcome),
        finalists,
        objective=request.objective,
        rounds=request.rounds,
        measure=measurer,
        on_run=on_run,
        also=also,
    )
    confirmation = replace(confirmation, confirmed_at=_now(), trials=_finished(records))
    study.set_user_attr("confirmation", confirmation.to_dict())
    return confirmation


def _measuring_s(records: Sequence[TrialRecord]) -> float:
    """The search's own time: its measured trials' wall time, this run's and earlier ones'."""
    return sum(
        r.outcome.wall_s
        for r in records
        if isinstance(r.outcome, Measurement) and r.outcome.wall_s is not None
    )


def _finished(records: Sequence[TrialRecord]) -> int:
    return sum(1 for r in records if counts_toward_budget(r))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _chosen(
    records: Sequence[TrialRecord],
    request: TuneRequest,
    baseline: TrialRecord,
    confirmation: Confirmation | None,
) -> TrialRecord:
    """The config best.json will hold: the confirmed winner, else the search's best."""
    if confirmation is not None:
        return next(r for r in records if r.number == confirmation.winner)
    return best_of(records, request.objective, request.limits) or baseline


def _sweep(
    study: Study,
    request: TuneRequest,
    baseline: TrialRecord,
    chosen: TrialRecord,
    measurer: Measurer,
    say: Callable[[str], None],
) -> ConcurrencySweep:
    levels = ", ".join(map(str, request.sweep_levels))
    who = "ONNX Runtime's defaults" + (
        "" if chosen.number == baseline.number else f" and #{chosen.number}"
    )
    say(f"concurrency sweep: {who} at {levels} concurrent callers, interleaved")

    def on_point(point: SweepPoint) -> None:
        m = point.measurement
        text = (
            f"{fmt_number(m.throughput)} samples/s, p99 {fmt_number(m.latency_ms.p99)} ms"
            if m
            else f"FAILED {point.failure}"
        )
        say(f"  concurrency {point.concurrency} #{point.trial_number}: {text}")

    sweep = run_sweep(
        (baseline.number, baseline.config),
        (chosen.number, chosen.config),
        levels=request.sweep_levels,
        shapes=request.workload.shapes,
        measure=lambda config, workload: measurer(config, workload=workload),
        max_latency_ms=request.limits.bounds.get("max_latency_ms"),
        on_point=on_point,
        stop=STOP,
    )
    study.set_user_attr("sweep", sweep.to_dict())
    return sweep


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
    optuna = optuna_module()
    say = on_message or (lambda line: None)
    started = time.perf_counter()
    check_stop()  # a stop that came while the run was preparing: the study is not opened
    if not request.wait_for_lock:  # --no-wait: fail before the study is made, not after
        with machine_lock(wait=False):
            pass
    study = open_study(request)
    orphans = fail_orphaned_trials(study)
    if orphans:
        say(f"{orphans} trial(s) left running by a tuner that died: marked failed, run again")
    replay_spool(study, request.spool_dir, say)
    records = records_of(study)
    # Offset the seed on resume so the sampler does not replay the first session's proposals.
    seed = None if request.seed is None else request.seed + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        n_startup_trials=max(4, min(10, request.trials // 3)),
        constant_liar=True,  # other tuners' running trials steer this one's proposals away
    )
    ran = 0

    def done() -> int:
        return sum(1 for r in records if counts_toward_budget(r))

    def notify(record: TrialRecord) -> None:
        records.append(record)
        if on_trial is not None:
            best = best_of(records, request.objective, request.limits)
            elapsed = time.perf_counter() - started
            failed = sum(1 for r in records if not r.ok and counts_toward_budget(r))
            progress = Progress(
                done(), request.trials, elapsed, best, failed, ran + 1, request.timeout_s
            )
            on_trial(record, progress)

    measurer = Measurer(request, BASELINE_TIMEOUT_S, on_wait=say)
    baseline = next((r for r in records if r.baseline and r.ok), None)
    if baseline is None:  # another tuner may be measuring it, or may just have finished it
        await_baseline(study, say)
        records[:] = records_of(study)
        baseline = next((r for r in records if r.baseline and r.ok), None)
    if baseline is None and done() < request.trials:
        trial = claim(study.ask())
        baseline = _measure_trial(
            study, trial, request.space.baseline(), request, measurer, baseline=True
        )
        ran += 1
        notify(baseline)
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
            say(
                f"{len(presets)} known layout(s) queued first: "
                + "; ".join(", ".join(f"{k}={v}" for k, v in p.items()) for p in presets)
            )
    if baseline is None:
        raise AutotuneError(
            f"study {request.study_name!r} has no successful baseline and no trials left; "
            "raise --trials or start a new --study"
        )
    measurer.timeout_s = _trial_timeout(request, baseline)
    if request.reference_path and not Path(request.reference_path).is_file():
        say("the accuracy guard's reference outputs are missing: measuring the baseline again")
        again = measurer(baseline.config, write_reference=True)
        if isinstance(again, TrialFailure):
            raise AutotuneError(f"re-running the baseline failed: {again.kind}: {again.message}")
    if request.variant_paths:  # judged once against the reference, before any trial is spent
        ok = isinstance(baseline.outcome, Measurement)
        base_ms = baseline.outcome.latency_ms.p50 if ok else 0.0  # type: ignore[union-attr]
        passed, paths, verdicts = screen_variants(
            study,
            request,
            lambda config, paths: measurer(config, measure=SCREEN, variant_paths=paths),
            say,
            base_ms,
        )
        request = replace(request, space=request.space.with_variants(passed), variant_paths=paths)
        measurer.request = request
        # Each passing variant measured early at ONNX Runtime's defaults: a sampler's few
        # start-up trials can miss the fastest recipe among a dozen choices, or try it only
        # with session options that hide it.
        first = promising(verdicts, passed, base_ms)[: max(1, request.trials // 3)]
        for name in first:
            study.enqueue_trial(request.space.default_params(variant=name), skip_if_exists=True)
        if first and done() < request.trials:
            say(f"{len(first)} passing variant(s) queued first at the defaults: {', '.join(first)}")
    stop_reason = "trial budget reached"
    interrupted = failed_out = False
    streak = repeats = 0
    confirmation = None
    sweep = None
    reused = False
    search_s = confirmation_s = 0.0
    try:
        while True:
            fail_orphaned_trials(study)
            records[:] = records_of(study)  # the whole study: other tuners may add trials too
            others = len(running_trials(study))
            if done() + others >= request.trials:
                if others:
                    stop_reason += f" (counting {others} trial(s) other tuners are measuring)"
                break
            stale = _since_best(records, request)
            if request.patience is not None and stale >= request.patience:
                stop_reason = f"no new best in the last {stale} trials (--patience)"
                break
            elapsed = time.perf_counter() - started
            if request.timeout_s is not None and elapsed >= request.timeout_s:
                stop_reason = f"time budget of {request.timeout_s:.0f} s reached"
                break
            trial = claim(study.ask())  # before the sampler's suggestions, which take a while
            config = request.space.suggest(trial)
            earlier = measured_before(records, config)
            if earlier is not None:  # never spend a trial measuring a config again: ask again
                _tell_repeat(study, trial, config, earlier)
                say(f"trial #{trial.number}: the config of #{earlier.number} again; not measured")
                repeats += 1
                if repeats >= MAX_REPEATS:
                    stop_reason = (
                        f"the sampler proposed {repeats} configs the study had measured already "
                        "in a row: the space is exhausted"
                    )
                    break
                continue
            repeats = 0
            record = _measure_trial(study, trial, config, request, measurer, baseline=False)
            ran += 1
            notify(record)
            if STOP.is_set():
                raise KeyboardInterrupt
            streak = 0 if record.ok else streak + 1
            if streak >= request.max_failures and isinstance(record.outcome, TrialFailure):
                failed_out = True
                stop_reason = (
                    f"{streak} trials failed in a row (last: {record.outcome.kind}: "
                    f"{record.outcome.message[:200]}); fix the cause or raise --max-failures"
                )
                break
            same = one_failure(records_of(study), at_least=SAME_FAILURE_STOPS)
            if same is not None:
                failed_out, stop_reason = True, same
                break
        same = None if failed_out else one_failure(records_of(study), at_least=1)
        if same is not None:  # every trial after the baseline failed alike: an error, not "no gain"
            failed_out, stop_reason = True, same
        search_s = time.perf_counter() - started
        stored = _stored_confirmation(study, request, done(), ran)
        if stored is not None:  # a finished study is finished: report, measure nothing
            confirmation, reused = stored, True
            sweep = (
                ConcurrencySweep.from_dict(study.user_attrs["sweep"])
                if study.user_attrs.get("sweep")
                else None
            )
            say(
                f"study already confirmed ({confirmation.confirmed_at or 'earlier'}, "
                f"{confirmation.method}) over these {done()} trials: its stored verdict follows; "
                "nothing was measured (--reconfirm measures again)"
            )
        else:
            t0 = time.perf_counter()
            confirmation = _confirm(study, request, records, baseline, measurer, say)
            confirmation_s = time.perf_counter() - t0
        if STOP.is_set():  # a confirmation cut short decides nothing
            confirmation = None
            raise KeyboardInterrupt
        if request.sweep_levels and not failed_out and not reused:
            chosen = _chosen(records, request, baseline, confirmation)
            sweep = _sweep(study, request, baseline, chosen, measurer, say)
            if STOP.is_set():
                sweep = None
                raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = True
        stop_reason = "interrupted; the running trial was stopped and is not counted"
    search_best = best_of(records, request.objective, request.limits)
    if search_best is None:
        say(
            f"no configuration met the constraints ({request.limits.describe()}); keeping the defaults"
        )
        search_best = baseline
    pareto = pareto_of(records, request.all_objectives) if len(request.all_objectives) > 1 else ()
    best = search_best
    if confirmation is not None:
        best = next(r for r in records if r.number == confirmation.winner)
    return TuneResult(
        study_name=request.study_name,
        storage=request.storage,
        baseline=baseline,
        search_best=search_best,
        best=best,
        records=tuple(records),
        ran=ran,
        stop_reason=stop_reason,
        confirmation=confirmation,
        pareto=pareto,
        sweep=sweep,
        interrupted=interrupted,
        failed_out=failed_out,
        reused=reused,
        timing=_timing(records, search_s, confirmation_s),
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


def _stored_confirmation(
    study: Study, request: TuneRequest, finished: int, ran: int
) -> Confirmation | None:
    """The study's stored confirmation when it covers every finished trial and nothing new ran."""
    data = study.user_attrs.get("confirmation")
    if request.reconfirm or ran or not data:
        return None
    stored = Confirmation.from_dict(data)
    return stored if stored.trials == finished else None
