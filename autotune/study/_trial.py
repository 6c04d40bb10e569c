"""One trial: the measuring side of the search (a config in, a stored outcome out).

``Measurer`` runs a config in a fresh worker under the machine's measuring lock;
``measure_trial`` labels an Optuna trial, measures its config (or refuses a known-bad one),
stores every figure or failure reason as user attributes and tells the study, so
optuna-dashboard shows them. A measured trial the database cannot take waits in the spool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.config import (
    AccuracyCheck,
    Measurement,
    MeasureSettings,
    TrialConfig,
    TrialFailure,
    TrialOutcome,
    WorkerJob,
    Workload,
)
from autotune.interrupt import STOP
from autotune.measure.lock import machine_lock
from autotune.measure.runner import run_trial
from autotune.rules import RuleContext, broken_rules
from autotune.study._liveness import Heartbeat
from autotune.study._records import TrialRecord, optuna_module
from autotune.study._request import TuneRequest
from autotune.study._retry import StorageUnavailable
from autotune.study._spool import spool_trial
from autotune.variants.build import accuracy_for

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial


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


@dataclass(frozen=True)
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

    def __call__(self, config: TrialConfig, **job_options: Any) -> TrialOutcome:
        """Measure ``config`` (``job_options`` as :meth:`job` takes them) in a fresh worker."""
        r = self.request
        job = self.job(config, **job_options)
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


def _labels(config: TrialConfig, baseline: bool) -> dict[str, Any]:
    """What a trial is: its config, whether it is the baseline, its one-line summary."""
    return {"config": config.to_dict(), "baseline": baseline, "summary": config.describe()}


def _label(trial: Trial, config: TrialConfig, baseline: bool) -> None:
    for key, value in _labels(config, baseline).items():
        trial.set_user_attr(key, value)


def measure_trial(
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


def tell_repeat(study: Study, trial: Trial, config: TrialConfig, earlier: TrialRecord) -> None:
    """A proposal of a config the study measured already: recorded, not measured, not counted."""
    optuna = optuna_module()
    _label(trial, config, False)
    trial.set_user_attr("failure_kind", "repeat")
    trial.set_user_attr(
        "failure_message", f"the same config as trial #{earlier.number}: its result stands"
    )
    trial.set_user_attr("repeat_of", earlier.number)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
