"""Finished trials as autotune reads them back, and choosing among them."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from autotune.config import Measurement, TrialConfig, TrialFailure, TrialOutcome
from autotune.objectives import Limits, Objective, pareto_front

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import FrozenTrial


def optuna_module() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # autotune records heartbeats itself (ask/tell, not Study.optimize).
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
    return optuna


@dataclass(frozen=True)
class TrialRecord:
    number: int
    config: TrialConfig
    outcome: TrialOutcome
    baseline: bool = False

    @property
    def ok(self) -> bool:
        return isinstance(self.outcome, Measurement)


def record_of(trial: FrozenTrial) -> TrialRecord | None:
    """Rebuild a finished trial's record from its user attributes (independent of the space)."""
    attrs = trial.user_attrs
    if "config" not in attrs or trial.state.name not in ("COMPLETE", "FAIL"):
        return None
    config = TrialConfig.from_dict(attrs["config"])
    outcome: TrialOutcome
    if trial.state.name == "COMPLETE" and "measurement" in attrs:
        outcome = Measurement.from_dict(attrs["measurement"])
    else:
        outcome = TrialFailure(
            attrs.get("failure_kind", "interrupted"),
            attrs.get("failure_message", "the tuner running it stopped before it finished"),
            attrs.get("failure_details", {}),
        )
    return TrialRecord(trial.number, config, outcome, baseline=bool(attrs.get("baseline")))


def records_of(study: Study) -> list[TrialRecord]:
    return [r for r in (record_of(t) for t in study.get_trials(deepcopy=False)) if r is not None]


#: Failure kinds that measured nothing and use no budget: a trial stopped before it finished
#: (run again), and a proposal of a config the study had measured already (asked again).
NOT_COUNTED = ("interrupted", "repeat")


def counts_toward_budget(record: TrialRecord) -> bool:
    """Whether a finished trial uses up the budget: interrupted ones are run again, repeated
    proposals were never measured."""
    return not (isinstance(record.outcome, TrialFailure) and record.outcome.kind in NOT_COUNTED)


def measured_before(records: Sequence[TrialRecord], config: TrialConfig) -> TrialRecord | None:
    """The finished trial (measured or failed, not interrupted) that ran exactly ``config``."""
    key = config.to_dict()
    for record in records:
        if counts_toward_budget(record) and not record.baseline and record.config.to_dict() == key:
            return record
    return None


def pareto_of(
    records: Sequence[TrialRecord], objectives: Sequence[Objective]
) -> tuple[TrialRecord, ...]:
    """The successful trials no other successful trial beats on every objective."""
    ok = [r for r in records if isinstance(r.outcome, Measurement)]
    points = [(r.number, [o.value(r.outcome) for o in objectives]) for r in ok]  # type: ignore[arg-type]
    front = set(pareto_front(points, list(objectives)))
    return tuple(r for r in ok if r.number in front)


def best_of(
    records: Sequence[TrialRecord], objective: Objective, limits: Limits | None = None
) -> TrialRecord | None:
    """The best successful trial that meets ``limits`` (None when none does)."""
    best = None
    for record in records:
        if isinstance(record.outcome, Measurement) and (
            limits is None or limits.feasible(record.outcome)
        ):
            value = objective.value(record.outcome)
            if best is None or objective.better(value, objective.value(best.outcome)):  # type: ignore[arg-type]
                best = record
    return best
