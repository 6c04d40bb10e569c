"""After the search: confirm the finalists against the baseline, then sweep the concurrency.

``confirm_finalists`` picks the finalists (points spread along the Pareto front with several
objectives) and re-measures them with the baseline: paired blocks in warm workers where every
objective allows it, else interleaved rounds in fresh workers. A finished study whose stored
confirmation covers every trial is reported, not measured again. ``sweep_concurrency`` measures
the chosen config and the defaults at several caller counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from autotune.config import (
    ConcurrencySweep,
    Confirmation,
    Measurement,
    SweepPoint,
    TrialConfig,
    TrialOutcome,
)
from autotune.confirm.paired import confirm_paired
from autotune.confirm.rounds import confirm, confirmed_front, pick_finalists, spread_along_front
from autotune.confirm.sweep import run_sweep
from autotune.fmt import fmt_number
from autotune.interrupt import STOP
from autotune.measure.lock import machine_lock
from autotune.measure.serving import shared_rates
from autotune.study._records import TrialRecord, best_of, pareto_of
from autotune.study._request import TuneRequest
from autotune.study._search import INTERRUPTED, finished
from autotune.study._state import Run, State
from autotune.study._trial import Measurer

if TYPE_CHECKING:
    from optuna import Study

PROGRESS_EVERY_S = 15.0  # the confirmation says where it is at least this often


def confirm_finalists(state: State, run: Run) -> State:
    """The confirmation phase: the stored verdict of a finished study, or a new one."""
    started = time.perf_counter()
    done = finished(state.records)
    try:
        stored = _stored_confirmation(run.study, state.request, done, state.ran)
        if stored is not None:  # a finished study is finished: report, measure nothing
            data = run.study.user_attrs.get("sweep")
            run.say(
                f"study already confirmed ({stored.confirmed_at or 'earlier'}, "
                f"{stored.method}) over these {done} trials: its stored verdict follows; "
                "nothing was measured (--reconfirm measures again)"
            )
            return replace(
                state,
                confirmation=stored,
                reused=True,
                sweep=ConcurrencySweep.from_dict(data) if data else None,
            )
        confirmation = _confirm(state, run)
        if STOP.is_set():  # a confirmation cut short decides nothing
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        return replace(state, interrupted=True, stop_reason=INTERRUPTED)
    return replace(state, confirmation=confirmation, confirmation_s=time.perf_counter() - started)


def sweep_concurrency(state: State, run: Run) -> State:
    """The sweep phase, when the workload asks for it and the study has something to sweep."""
    request = state.request
    if not request.sweep_levels or state.failed_out or state.reused:
        return state
    chosen = chosen_record(state)
    try:
        sweep = _sweep(run.study, request, state.the_baseline, chosen, state.measurer, run.say)
        if STOP.is_set():
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        return replace(state, interrupted=True, stop_reason=INTERRUPTED)
    return replace(state, sweep=sweep)


Finalist = tuple[int, TrialConfig, TrialOutcome]


def _finalists(state: State) -> list[Finalist]:
    """The search's feasible configs worth re-measuring: the best distinct ones, or points
    spread along the Pareto front with several objectives."""
    request, baseline = state.request, state.the_baseline
    feasible = [
        (r.number, r.config, r.outcome)
        for r in state.records
        if not r.baseline
        and isinstance(r.outcome, Measurement)
        and request.limits.feasible(r.outcome)
    ]
    if len(request.all_objectives) == 1:
        return pick_finalists(feasible, baseline.config, request.objective, request.finalists)
    numbers = {n for n, _, _ in feasible}
    front = [
        (r.number, r.config, r.outcome)
        for r in pareto_of(
            [r for r in state.records if r.number in numbers], request.all_objectives
        )
    ]
    distinct = pick_finalists(front, baseline.config, request.objective, len(front))
    return spread_along_front(distinct, request.objective, request.finalists)


def _confirm(state: State, run: Run) -> Confirmation | None:
    """Re-measure the finalists with the baseline and store the verdict in the study."""
    request = state.request
    finalists = _finalists(state)
    if request.finalists <= 0 or request.rounds <= 0 or not finalists:
        return None
    pairable = all(o.pairable for o in request.all_objectives)
    # open loop: paired at shared offered rates; a trace (or no capacity found) in rounds
    rates = _rates(state, finalists)
    if request.paired and pairable and (request.workload.traffic is None or rates):
        confirmation = _confirm_paired(state, run, finalists, rates)
    else:
        confirmation = _confirm_in_rounds(state, run, finalists)
    confirmation = replace(confirmation, confirmed_at=_now(), trials=finished(state.records))
    run.study.set_user_attr("confirmation", confirmation.to_dict())
    return confirmation


def _who(state: State, finalists: Sequence[Finalist]) -> str:
    what = "Pareto points" if len(state.request.all_objectives) > 1 else "finalists"
    return f"{what} {', '.join(f'#{n}' for n, _, _ in finalists)}"


def _confirm_paired(
    state: State, run: Run, finalists: Sequence[Finalist], rates: Sequence[float]
) -> Confirmation:
    """Paired blocks in warm workers: baseline, its twin and the finalists take turns."""
    request, baseline, measurer = state.request, state.the_baseline, state.measurer
    at = f", each block one window at each of {len(rates)} offered rates" if rates else ""
    run.say(
        f"confirming: baseline #{baseline.number}, its twin and {_who(state, finalists)} in "
        f"warm workers taking turns in short blocks{at} (paired under the same host state)"
    )
    assert isinstance(baseline.outcome, Measurement)
    began = last = time.monotonic()

    def on_cycle(done: int, cap: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done % 10 == 0 or now - last >= PROGRESS_EVERY_S:  # slow cycles are not silent
            last = now
            run.say(f"  cycle {done}, up to {cap} ({now - began:.0f} s in)")

    also = [o for o in request.all_objectives if o.name != request.objective.name]
    with machine_lock(wait=request.wait_for_lock, on_wait=run.say, stop=STOP):
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
            budget_s=_measuring_s(state.records),
            rates=rates,
        )
    if len(request.all_objectives) > 1:
        front = confirmed_front(confirmation, [request.objective, *also])
        confirmation = replace(confirmation, front=front)
    return confirmation


def _rates(state: State, finalists: Sequence[Finalist]) -> tuple[float, ...]:
    """Open-loop traffic: the offered rates every contender's block is measured at, the same
    for all (the capacity's ladder around what the search found, or the one --rate)."""
    found = [state.the_baseline.outcome, *(o for _, _, o in finalists)]
    return shared_rates(state.request.workload.traffic, found)


def _confirm_in_rounds(state: State, run: Run, finalists: Sequence[Finalist]) -> Confirmation:
    """Interleaved rounds in fresh workers (objectives that warm workers cannot pair)."""
    request, baseline = state.request, state.the_baseline
    run.say(
        f"confirming: baseline #{baseline.number} and {_who(state, finalists)}, "
        f"{request.rounds} interleaved rounds in fresh workers"
    )

    def on_run(round_index: int, number: int, outcome: TrialOutcome) -> None:
        if isinstance(outcome, Measurement):
            text = f"{fmt_number(request.objective.value(outcome))} {request.objective.unit}"
        else:
            text = f"FAILED {outcome.kind}"
        cap = 3 * request.rounds  # confirm()'s adaptive cap
        run.say(f"  round {round_index + 1}, up to {cap}, #{number}: {text}")

    return confirm(
        (baseline.number, baseline.config, baseline.outcome),
        list(finalists),
        objective=request.objective,
        rounds=request.rounds,
        measure=state.measurer,
        on_run=on_run,
        also=[o for o in request.all_objectives if o.name != request.objective.name],
    )


def _measuring_s(records: Sequence[TrialRecord]) -> float:
    """The search's own time: its measured trials' wall time, this run's and earlier ones'."""
    return sum(
        r.outcome.wall_s
        for r in records
        if isinstance(r.outcome, Measurement) and r.outcome.wall_s is not None
    )


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def chosen_record(state: State) -> TrialRecord:
    """The config best.json will hold: the confirmed winner, else the search's best."""
    if state.confirmation is not None:
        return next(r for r in state.records if r.number == state.confirmation.winner)
    request = state.request
    return best_of(state.records, request.objective, request.limits) or state.the_baseline


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


def _stored_confirmation(
    study: Study, request: TuneRequest, finished: int, ran: int
) -> Confirmation | None:
    """The study's stored confirmation when it covers every finished trial and nothing new ran."""
    data = study.user_attrs.get("confirmation")
    if request.reconfirm or ran or not data:
        return None
    stored = Confirmation.from_dict(data)
    return stored if stored.trials == finished else None
