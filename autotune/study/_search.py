"""The search: the sampler proposes configs, the measuring side hands back outcomes.

The seam runs between the two. :class:`Proposer` is the sampler side: iterated, it yields the
next Optuna trial and its config until the budget, ``--patience``, ``--timeout`` or the space
runs out, and says why it stopped. It never measures, and it never spends a trial on a config
the study measured already. :func:`search_trials` is the measuring side: it measures each
proposal in a fresh worker (:func:`autotune.study._trial.measure_trial`), reports progress, and
stops the study when trials keep failing, or all fail the same way.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from autotune.config import TrialConfig, TrialFailure
from autotune.interrupt import STOP
from autotune.study._liveness import claim, fail_orphaned_trials, running_trials
from autotune.study._records import TrialRecord, best_of, counts_toward_budget, measured_before
from autotune.study._records import records_of as read_records
from autotune.study._request import TuneRequest
from autotune.study._trial import Measurer, measure_trial, tell_repeat

if TYPE_CHECKING:
    from optuna import Study
    from optuna.trial import Trial

#: Proposals in a row of configs already measured that end the search (a small space is
#: exhausted; the sampler is asked again until then).
MAX_REPEATS = 20
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
BUDGET_REACHED = "trial budget reached"
INTERRUPTED = "interrupted; the running trial was stopped and is not counted"


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


def finished(records: Sequence[TrialRecord]) -> int:
    """Trials that used the budget."""
    return sum(1 for r in records if counts_toward_budget(r))


def since_best(records: Sequence[TrialRecord], request: TuneRequest) -> int:
    """Trials that used the budget since the study's best so far (failed ones included)."""
    best = best_of(records, request.objective, request.limits)
    if best is None:
        return 0
    return sum(1 for r in records if r.number > best.number and counts_toward_budget(r))


class Proposer:
    """The sampler side: iterate for ``(trial, config)`` pairs to measure.

    Before each proposal it re-reads the whole study (other tuners add trials too) into
    ``records`` and checks the budget, patience and time; ``stop_reason`` says why it stopped.
    """

    def __init__(
        self, study: Study, request: TuneRequest, *, started: float, say: Callable[[str], None]
    ) -> None:
        self.study, self.request, self.started, self.say = study, request, started, say
        self.records: tuple[TrialRecord, ...] = ()
        self.stop_reason = BUDGET_REACHED

    def _spent(self) -> str | None:
        """Why no trial may start now, if none may."""
        request = self.request
        others = len(running_trials(self.study))
        if finished(self.records) + others >= request.trials:
            counting = f" (counting {others} trial(s) other tuners are measuring)" if others else ""
            return BUDGET_REACHED + counting
        stale = since_best(self.records, request)
        if request.patience is not None and stale >= request.patience:
            return f"no new best in the last {stale} trials (--patience)"
        if (
            request.timeout_s is not None
            and time.perf_counter() - self.started >= request.timeout_s
        ):
            return f"time budget of {request.timeout_s:.0f} s reached"
        return None

    def __iter__(self) -> Iterator[tuple[Trial, TrialConfig]]:
        repeats = 0
        while True:
            fail_orphaned_trials(self.study)
            self.records = tuple(read_records(self.study))
            spent = self._spent()
            if spent is not None:
                self.stop_reason = spent
                return
            trial = claim(self.study.ask())  # before the sampler's suggestions, which take a while
            config = self.request.space.suggest(trial)
            earlier = measured_before(self.records, config)
            if earlier is None:
                repeats = 0
                yield trial, config
                continue
            # never spend a trial measuring a config again: ask again
            tell_repeat(self.study, trial, config, earlier)
            self.say(f"trial #{trial.number}: the config of #{earlier.number} again; not measured")
            repeats += 1
            if repeats >= MAX_REPEATS:
                self.stop_reason = (
                    f"the sampler proposed {repeats} configs the study had measured already in "
                    "a row: the space is exhausted"
                )
                return


@dataclass(frozen=True)
class Searched:
    """How the search ended."""

    records: tuple[TrialRecord, ...]  # the study's trials, the last one measured included
    ran: int  # trials this invocation measured in the search
    stop_reason: str
    failed_out: bool = False  # stopped by failures: --max-failures in a row, or all alike
    interrupted: bool = False


def search_trials(
    study: Study,
    request: TuneRequest,
    measurer: Measurer,
    proposer: Proposer,
    on_record: Callable[[tuple[TrialRecord, ...], TrialRecord], None],
) -> Searched:
    """Measure what ``proposer`` proposes; ``on_record`` hears of each trial as it finishes."""
    records: tuple[TrialRecord, ...] = ()
    ran = streak = 0
    try:
        for trial, config in proposer:
            records = proposer.records
            record = measure_trial(study, trial, config, request, measurer, baseline=False)
            ran += 1
            records = (*records, record)
            on_record(records, record)
            if STOP.is_set():
                raise KeyboardInterrupt
            streak = 0 if record.ok else streak + 1
            if streak >= request.max_failures and isinstance(record.outcome, TrialFailure):
                reason = (
                    f"{streak} trials failed in a row (last: {record.outcome.kind}: "
                    f"{record.outcome.message[:200]}); fix the cause or raise --max-failures"
                )
                return Searched(records, ran, reason, failed_out=True)
            same = one_failure(read_records(study), at_least=SAME_FAILURE_STOPS)
            if same is not None:
                return Searched(records, ran, same, failed_out=True)
    except KeyboardInterrupt:
        return Searched(records or proposer.records, ran, INTERRUPTED, interrupted=True)
    records = proposer.records
    same = one_failure(read_records(study), at_least=1)
    if same is not None:  # every trial after the baseline failed alike: an error, not "no gain"
        return Searched(records, ran, same, failed_out=True)
    return Searched(records, ran, proposer.stop_reason)
