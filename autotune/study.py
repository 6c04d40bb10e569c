"""The tuner: an Optuna study of isolated, measured trials. The only module that imports optuna.

``tune`` creates or resumes the study (the same command again continues it up to ``--trials``),
measures ONNX Runtime's default configuration first as the baseline, then runs the ask / measure /
tell loop within the budget. Every metric and failure reason is stored as trial user attributes
and the model and machine as study user attributes, so optuna-dashboard shows them.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autotune.config import (
    FeedPlan,
    Measurement,
    MeasureSettings,
    TrialConfig,
    TrialFailure,
    TrialOutcome,
    WorkerJob,
)
from autotune.errors import AutotuneError, UsageError
from autotune.model import ModelInfo
from autotune.objectives import Objective
from autotune.runner import run_trial
from autotune.space import SearchSpace

BASELINE_TIMEOUT_S = 600.0
MIN_TRIAL_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class TuneRequest:
    model: ModelInfo
    feeds: FeedPlan
    space: SearchSpace  # resolved (machine bounds and batch sizes bound)
    objective: Objective
    storage: str
    study_name: str
    trials: int  # total for the study, baseline included
    timeout_s: float | None = None  # wall clock for this invocation
    seed: int | None = None
    measure: MeasureSettings = field(default_factory=MeasureSettings)
    trial_timeout_s: float | None = None  # default: derived from the baseline
    environment: Mapping[str, Any] = field(default_factory=dict)
    worker_command: Sequence[str] | None = None


@dataclass(frozen=True)
class TrialRecord:
    number: int
    config: TrialConfig
    outcome: TrialOutcome
    baseline: bool = False

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, Measurement)


@dataclass(frozen=True)
class Progress:
    done: int  # finished trials in the study, this one included
    total: int
    elapsed_s: float
    best: TrialRecord | None


@dataclass(frozen=True)
class TuneResult:
    study_name: str
    storage: str
    baseline: TrialRecord
    best: TrialRecord
    records: tuple[TrialRecord, ...]  # every finished trial of the study, in order
    ran: int  # trials run by this invocation
    stop_reason: str


def _optuna() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def study_attrs(request: TuneRequest) -> dict[str, Any]:
    return {
        "model_path": request.model.path,
        "model_sha256": request.model.sha256,
        "model_size_bytes": request.model.size_bytes,
        "opsets": dict(request.model.opsets),
        "inputs": request.feeds.to_dict(),
        "objective": request.objective.name,
        "space": request.space.name,
        "space_source": request.space.source,
        "batch_sizes": list(request.space.batch_sizes),
        "environment": dict(request.environment),
    }


def check_storage(url: str) -> None:
    """Fail early on a malformed URL or a missing database driver, before anything is written."""
    import sqlalchemy
    import sqlalchemy.exc

    try:
        sqlalchemy.create_engine(url).dispose()
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        raise UsageError(f"--storage {url!r} is not a usable database URL: {exc}") from None
    except ImportError as exc:
        raise UsageError(
            f"--storage {url!r} needs a database driver that is not installed ({exc.name}); "
            "pip install it"
        ) from None


def open_study(request: TuneRequest) -> Any:
    """Create the study or load it; refuse one that was made for another model or objective."""
    optuna = _optuna()
    import sqlalchemy.exc

    try:
        study = optuna.create_study(
            storage=request.storage,
            study_name=request.study_name,
            direction=request.objective.direction,
            load_if_exists=True,
        )
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise UsageError(
            f"--storage {request.storage!r} is not a usable database URL: {exc}"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise AutotuneError(
            f"cannot open the study storage {request.storage!r}: {' '.join(str(exc).split())[:300]}"
        ) from None
    existing = study.user_attrs
    if not existing:
        for key, value in study_attrs(request).items():
            study.set_user_attr(key, value)
        return study
    for key, what in (("model_sha256", "model"), ("objective", "objective"), ("space", "space")):
        theirs, ours = existing.get(key), study_attrs(request)[key]
        if theirs != ours:
            raise UsageError(
                f"study {request.study_name!r} was made for another {what} ({theirs!r}, this run "
                f"has {ours!r}); pick a new --study name instead of mixing results"
            )
    return study


def _metric_attrs(m: Measurement) -> dict[str, Any]:
    """Flat figures for the dashboard's user-attribute view, plus the full measurement."""
    return {
        "throughput": round(m.throughput, 3),
        "latency_p50_ms": round(m.latency_ms.p50, 4),
        "latency_p99_ms": round(m.latency_ms.p99, 4),
        "peak_rss_mb": round(m.peak_rss_mb or 0.0, 1),
        "startup_s": round(m.startup_s, 4),
        "measurement": m.to_dict(),
    }


def record_of(trial: Any) -> TrialRecord | None:
    """Rebuild a finished trial's record from its user attributes (independent of the space)."""
    attrs = trial.user_attrs
    if "config" not in attrs or trial.state.name not in ("COMPLETE", "FAIL"):
        return None
    config = TrialConfig.from_dict(attrs["config"])
    outcome: TrialOutcome
    if trial.state.name == "COMPLETE" and "measurement" in attrs:
        outcome = Measurement.from_dict(attrs["measurement"])
    else:
        outcome = TrialFailure(attrs.get("failure_kind", "error"), attrs.get("failure_message", ""))
    return TrialRecord(trial.number, config, outcome, baseline=bool(attrs.get("baseline")))


def records_of(study: Any) -> list[TrialRecord]:
    return [r for r in (record_of(t) for t in study.get_trials(deepcopy=False)) if r is not None]


def _best(records: Sequence[TrialRecord], objective: Objective) -> TrialRecord | None:
    best = None
    for record in records:
        if isinstance(record.outcome, Measurement):
            value = objective.value(record.outcome)
            if best is None or objective.better(value, objective.value(best.outcome)):  # type: ignore[arg-type]
                best = record
    return best


def _measure_trial(
    study: Any,
    trial: Any,
    config: TrialConfig,
    request: TuneRequest,
    *,
    timeout_s: float,
    baseline: bool,
) -> TrialRecord:
    optuna = _optuna()
    trial.set_user_attr("config", config.to_dict())
    trial.set_user_attr("baseline", baseline)
    trial.set_user_attr("summary", config.describe())
    job = WorkerJob(request.model.path, config, request.feeds, request.measure)
    try:
        outcome = run_trial(job, timeout_s=timeout_s, command=request.worker_command)
    except KeyboardInterrupt:
        trial.set_user_attr("failure_kind", "interrupted")
        trial.set_user_attr("failure_message", "interrupted by the user")
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise
    if isinstance(outcome, Measurement):
        for key, value in _metric_attrs(outcome).items():
            trial.set_user_attr(key, value)
        study.tell(trial, request.objective.value(outcome))
    else:
        trial.set_user_attr("failure_kind", outcome.kind)
        trial.set_user_attr("failure_message", outcome.message[:2000])
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    return TrialRecord(trial.number, config, outcome, baseline=baseline)


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
) -> TuneResult:
    """Run the study up to ``request.trials`` finished trials (or the timeout); return the best.

    Raises:
        AutotuneError: the baseline failed (nothing can be compared), or no trial ever finished.
    """
    optuna = _optuna()
    started = time.perf_counter()
    study = open_study(request)
    records = records_of(study)
    # Offset the seed on resume so the sampler does not replay the first session's proposals.
    seed = None if request.seed is None else request.seed + len(study.trials)
    study.sampler = optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        n_startup_trials=max(4, min(10, request.trials // 3)),
    )
    ran = 0

    def notify(record: TrialRecord) -> None:
        records.append(record)
        if on_trial is not None:
            best = _best(records, request.objective)
            on_trial(
                record, Progress(len(records), request.trials, time.perf_counter() - started, best)
            )

    baseline = next((r for r in records if r.baseline and r.ok), None)
    if baseline is None and len(records) < request.trials:
        trial = study.ask()
        baseline = _measure_trial(
            study,
            trial,
            request.space.baseline(),
            request,
            timeout_s=BASELINE_TIMEOUT_S,
            baseline=True,
        )
        ran += 1
        notify(baseline)
        if not baseline.ok:
            failure = baseline.outcome
            raise AutotuneError(
                f"the baseline (ONNX Runtime defaults) failed, so nothing can be compared: "
                f"{failure.kind}: {failure.message[:500]}"  # type: ignore[union-attr]
            )
    if baseline is None:
        raise AutotuneError(
            f"study {request.study_name!r} has no successful baseline and no trials left; "
            "raise --trials or start a new --study"
        )
    trial_timeout = _trial_timeout(request, baseline)
    stop_reason = "trial budget reached"
    while len(records) < request.trials:
        if request.timeout_s is not None and time.perf_counter() - started >= request.timeout_s:
            stop_reason = f"time budget of {request.timeout_s:.0f} s reached"
            break
        trial = study.ask()
        config = request.space.suggest(trial)
        record = _measure_trial(
            study, trial, config, request, timeout_s=trial_timeout, baseline=False
        )
        ran += 1
        notify(record)
    best = _best(records, request.objective)
    assert best is not None  # the baseline succeeded
    return TuneResult(
        study_name=request.study_name,
        storage=request.storage,
        baseline=baseline,
        best=best,
        records=tuple(records),
        ran=ran,
        stop_reason=stop_reason,
    )
