"""Stored studies read back: listing them, one study's trials, knob importance."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.config import Confirmation
from autotune.errors import AutotuneError, UsageError
from autotune.fmt import fmt_number
from autotune.objectives import Limits, Objective, parse_objective
from autotune.storage import shown
from autotune.study._open import rdb_storage
from autotune.study._records import (
    TrialRecord,
    best_of,
    counts_toward_budget,
    optuna_module,
    pareto_of,
    records_of,
)
from autotune.study._retry import RetryPolicy, retrying_storage


@dataclass(frozen=True)
class StudyView:
    """A stored study as autotune reads it back: its attributes and its finished trials."""

    name: str
    storage: str
    attrs: Mapping[str, Any]
    records: tuple[TrialRecord, ...]
    confirmation: Confirmation | None

    @property
    def objectives(self) -> list[Objective]:
        from autotune.objectives import parse_objectives

        return parse_objectives(str(self.attrs.get("objective", "throughput")))

    @property
    def objective(self) -> Objective:
        return self.objectives[0]

    @property
    def pareto(self) -> tuple[TrialRecord, ...]:
        return pareto_of(self.records, self.objectives) if len(self.objectives) > 1 else ()

    @property
    def baseline(self) -> TrialRecord | None:
        return next((r for r in self.records if r.baseline and r.ok), None)

    @property
    def chosen(self) -> TrialRecord | None:
        """The confirmed winner when the study was confirmed, else the search's best."""
        if self.confirmation is not None:
            return self.record(self.confirmation.winner)
        return best_of(self.records, self.objective, Limits(self.attrs.get("limits") or {}))

    def record(self, number: int) -> TrialRecord:
        for r in self.records:
            if r.number == number:
                return r
        raise UsageError(f"study {self.name!r} has no finished trial #{number}")


def _storage_for_reading(url: str) -> Any:
    import sqlalchemy.exc

    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        raise UsageError(
            f"no study database at {url.removeprefix('sqlite:///')}; pass --storage or --out"
        )
    policy = RetryPolicy(url)
    try:
        return retrying_storage(policy.call(lambda: rdb_storage(url)), policy)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise AutotuneError(
            f"cannot open the study storage {shown(url)!r}: {' '.join(str(exc).split())[:300]}"
        ) from None


def list_studies(storage: str) -> list[dict[str, Any]]:
    """Every study in the storage: name, objective, model, trial counts, start time."""
    optuna = optuna_module()
    rows = []
    reading = _storage_for_reading(storage)
    for summary in optuna.get_all_study_summaries(reading):
        attrs = summary.user_attrs
        rows.append(
            {
                "name": summary.study_name,
                "objective": attrs.get("objective", "?"),
                "model": attrs.get("model_path", "?"),
                "space": attrs.get("space", "?"),
                "trials": _counted(optuna, reading, summary.study_name),
                "started": summary.datetime_start.isoformat(timespec="seconds")
                if summary.datetime_start
                else None,
                **_best_of(summary),
            }
        )
    return rows


def studies_progress(storage: str, names: list[str]) -> dict[str, int]:
    """The finished trials that count toward each named study's budget (absent: no study yet)."""
    optuna = optuna_module()
    reading = _storage_for_reading(storage)
    existing = set(optuna.get_all_study_names(reading))
    return {name: _counted(optuna, reading, name) for name in names if name in existing}


def the_study(storage: str, name: str | None) -> str:
    """``name``, or the storage's only study when none is given."""
    if name is not None:
        return name
    names = optuna_module().get_all_study_names(_storage_for_reading(storage))
    if len(names) == 1:
        return str(names[0])
    if not names:
        raise UsageError(f"the storage {shown(storage)!r} holds no study; run `autotune run` first")
    listed = ", ".join(sorted(names)[:8]) + (", ..." if len(names) > 8 else "")
    raise UsageError(
        f"the storage holds {len(names)} studies: pick one with --study ({listed}); "
        "`autotune show` lists them"
    )


def _counted(optuna: Any, storage: Any, name: str) -> int:
    """The finished trials that count toward the budget, as the tuner counts them."""
    study = optuna.load_study(study_name=name, storage=storage)
    return sum(counts_toward_budget(r) for r in records_of(study))


def _best_of(summary: Any) -> dict[str, Any]:
    """A study's result at a glance: the confirmed verdict and the chosen config's gain over
    ONNX Runtime's defaults, or the search's best figure while unconfirmed."""
    data = summary.user_attrs.get("confirmation")
    if data:
        confirmation = Confirmation.from_dict(data)
        gain = next(
            (f.gain for f in confirmation.finalists if f.trial_number == confirmation.winner), 1.0
        )
        return {
            "best": f"{gain:.2f}x, trial #{confirmation.winner}"
            if confirmation.kind == "winner"
            else f"defaults kept ({confirmation.kind})",
            "speedup": gain,
            "verdict": confirmation.kind,
            "confirmed": confirmation.confirmed_at or "yes",
        }
    best = None
    try:
        best = summary.best_trial if len(summary.directions) == 1 else None
    except (ValueError, RuntimeError):  # no completed trial yet
        best = None
    try:
        unit = parse_objective(str(summary.user_attrs.get("objective", ""))).unit
    except (AutotuneError, ValueError):
        unit = ""
    figure = (
        f"search: {fmt_number(best.value)}{' ' + unit if unit else ''}, trial #{best.number}"
        if best is not None and best.value is not None
        else "none yet"
    )
    return {"best": figure, "speedup": None, "verdict": None, "confirmed": "no"}


def load_study_view(storage: str, name: str) -> StudyView:
    optuna = optuna_module()
    try:
        study = optuna.load_study(study_name=name, storage=_storage_for_reading(storage))
    except KeyError:
        known = ", ".join(row["name"] for row in list_studies(storage)) or "none"
        raise UsageError(f"no study {name!r} in {storage} (studies: {known})") from None
    confirmation = study.user_attrs.get("confirmation")
    return StudyView(
        name=name,
        storage=storage,
        attrs=study.user_attrs,
        records=tuple(records_of(study)),
        confirmation=Confirmation.from_dict(confirmation) if confirmation else None,
    )


def param_importances(storage: str, name: str) -> dict[str, float]:
    """PED-ANOVA importance of each knob for the objective over the completed trials.

    Conditional knobs appear only in some trials; the importance is computed over the knobs
    every completed non-baseline trial has. Empty when there are too few trials.
    """
    optuna = optuna_module()
    study = optuna.load_study(study_name=name, storage=_storage_for_reading(storage))
    complete = [t for t in study.trials if t.state.name == "COMPLETE" and t.params]
    if len(complete) < 4:
        return {}
    common = set(complete[0].params)
    for trial in complete[1:]:
        common &= set(trial.params)
    varied = [p for p in common if len({str(t.params[p]) for t in complete}) > 1]
    if not varied:
        return {}
    subset = optuna.create_study(direction=study.directions[0])  # the primary objective
    for trial in complete:
        subset.add_trial(
            optuna.trial.create_trial(
                params={p: trial.params[p] for p in varied},
                distributions={p: trial.distributions[p] for p in varied},
                value=trial.values[0],
            )
        )
    evaluator = optuna.importance.PedAnovaImportanceEvaluator()  # numpy only, no sklearn
    return dict(optuna.importance.get_param_importances(subset, evaluator=evaluator))
