"""Confirming the winner: the top configs and the baseline re-measured in interleaved rounds.

One timing on a shared machine can be far off, so the best trial of a search is partly the
luckiest (winner's curse). The top K distinct configs and the baseline are measured again,
A B C D, A B C D, ..., each run in a fresh worker, so slow phases of the machine hit all of them
alike. A finalist wins only if the median of its rounds beats the baseline's by at least
``MIN_GAIN`` and it beat the baseline measured beside it in enough rounds for a one-sided sign
test at ``ALPHA`` (5 of 5, 7 of 8, ...); rounds are added while a finalist is still undecided.
Otherwise the baseline is exported and the report says so.

With several objectives the finalists are points spread along the search's Pareto front; the
rounds give each objective's median, and the front is drawn again from those medians.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from autotune.config import Confirmation, Measurement, RoundFigures, TrialConfig, TrialOutcome
from autotune.measure.stats import relative_spread
from autotune.objectives import Objective, pareto_front

MIN_GAIN = 0.02  # below a 2 % gain, a "win" is not worth changing a deployment for
ALPHA = 0.05  # a finalist must beat the baseline in enough paired rounds: sign test p <= this

Record = tuple[int, TrialConfig, TrialOutcome]  # trial number, config, search outcome


def _key(config: TrialConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True)


def pick_finalists(
    candidates: Sequence[Record], baseline: TrialConfig, objective: Objective, k: int
) -> list[Record]:
    """The ``k`` best distinct successful configs of the search, the baseline's own excluded."""
    ok = [r for r in candidates if isinstance(r[2], Measurement)]
    ok.sort(
        key=lambda r: objective.value(r[2]),  # type: ignore[arg-type]
        reverse=objective.direction == "maximize",
    )
    seen = {_key(baseline)}
    picked: list[Record] = []
    for record in ok:
        key = _key(record[1])
        if key not in seen:
            seen.add(key)
            picked.append(record)
        if len(picked) == k:
            break
    return picked


def spread_along_front(front: Sequence[Record], objective: Objective, k: int) -> list[Record]:
    """``k`` points of a Pareto front, evenly spaced along ``objective`` and both ends included
    (the best ``k`` by one objective would all sit at one end of the trade-off)."""
    ok = [r for r in front if isinstance(r[2], Measurement)]
    ok.sort(key=lambda r: objective.value(r[2]), reverse=objective.direction == "maximize")  # type: ignore[arg-type]
    if k <= 0:
        return []
    if len(ok) <= k:
        return ok
    if k == 1:
        return ok[:1]
    step = (len(ok) - 1) / (k - 1)
    return [ok[round(i * step)] for i in range(k)]


def _figures(
    number: int,
    outcomes: Sequence[TrialOutcome],
    base_values: Sequence[float | None],
    base_median: float | None,
    objective: Objective,
    also: Sequence[Objective] = (),
) -> RoundFigures:
    values = [objective.value(o) if isinstance(o, Measurement) else None for o in outcomes]
    good = [v for v in values if v is not None]
    if not good:
        return RoundFigures(number, (), len(values), math.nan, 0.0, 0, 0, 0.0, None)
    median = float(np.median(good))
    measured = [o for o in outcomes if isinstance(o, Measurement)]
    medians = (
        {o.name: float(np.median([o.value(m) for m in measured])) for o in (objective, *also)}
        if also
        else {}
    )
    paired = [
        (v, b) for v, b in zip(values, base_values, strict=True) if v is not None and b is not None
    ]
    wins = sum(1 for v, b in paired if objective.better(v, b))
    closest = min(
        (o for o in outcomes if isinstance(o, Measurement)),
        key=lambda m: abs(objective.value(m) - median),
    )
    gain = 1.0 if base_median is None else objective.ratio(median, base_median)
    return RoundFigures(
        trial_number=number,
        values=tuple(good),
        failures=len(values) - len(good),
        median=median,
        spread=relative_spread(good),
        wins=wins,
        pairs=len(paired),
        gain=gain,
        measurement=closest,
        medians=medians,
    )


def sign_test_p(wins: int, pairs: int) -> float:
    """One-sided sign test: the chance of at least ``wins`` wins in ``pairs`` fair coin flips."""
    if pairs <= 0:
        return 1.0
    return sum(math.comb(pairs, k) for k in range(wins, pairs + 1)) / 2**pairs


def _beats(f: RoundFigures) -> bool:
    return bool(f.values) and f.gain >= 1 + MIN_GAIN and sign_test_p(f.wins, f.pairs) <= ALPHA


def _undecided(f: RoundFigures, done: int, max_rounds: int) -> bool:
    """A finalist that looks better but has not won often enough yet, and still could."""
    if not f.values or f.gain < 1 + MIN_GAIN or _beats(f):
        return False
    left = max_rounds - done
    return sign_test_p(f.wins + left, f.pairs + left) <= ALPHA


def confirm(
    baseline: Record,
    finalists: Sequence[Record],
    *,
    objective: Objective,
    rounds: int,
    measure: Callable[[TrialConfig], TrialOutcome],
    on_run: Callable[[int, int, TrialOutcome], None] | None = None,
    max_rounds: int | None = None,
    also: Sequence[Objective] = (),
) -> Confirmation:
    """Measure the baseline and the finalists in interleaved rounds and pick the winner.

    At least ``rounds`` rounds; then one more at a time, up to ``max_rounds`` (default 3x),
    while a finalist looks better but has not yet won enough paired rounds to be sure. The
    winner is judged on ``objective``; with ``also`` (the other objectives of the study) each
    config's medians are kept for all of them and the confirmed Pareto front is recorded.
    """
    limit = max(rounds, max_rounds or 3 * rounds)
    contenders = [baseline, *finalists]
    outcomes: list[list[TrialOutcome]] = [[] for _ in contenders]
    done = 0
    while True:
        for slot, (number, config, _) in enumerate(contenders):
            outcome = measure(config)
            outcomes[slot].append(outcome)
            if on_run is not None:
                on_run(done, number, outcome)
        done += 1
        base, figures = _all_figures(baseline, finalists, outcomes, objective, also)
        if done >= limit:
            break
        if done >= rounds and not any(_undecided(f, done, limit) for f in figures):
            break
    confirmation = decide(base, figures, rounds=done, objective=objective)
    if also:
        confirmation = replace(
            confirmation, front=confirmed_front(confirmation, [objective, *also])
        )
    return confirmation


def confirmed_front(confirmation: Confirmation, objectives: Sequence[Objective]) -> tuple[int, ...]:
    """The re-measured configs (baseline included) that no other one beats on every median."""
    points = [
        (f.trial_number, [f.medians[o.name] for o in objectives])
        for f in (confirmation.baseline, *confirmation.finalists)
        if f.values and all(o.name in f.medians for o in objectives)
    ]
    return tuple(pareto_front(points, list(objectives)))


def _all_figures(
    baseline: Record,
    finalists: Sequence[Record],
    outcomes: Sequence[Sequence[TrialOutcome]],
    objective: Objective,
    also: Sequence[Objective] = (),
) -> tuple[RoundFigures, list[RoundFigures]]:
    base_values = [objective.value(o) if isinstance(o, Measurement) else None for o in outcomes[0]]
    base = _figures(baseline[0], outcomes[0], [None] * len(base_values), None, objective, also)
    base_median = base.median if base.values else None
    figures = [
        _figures(number, outs, base_values, base_median, objective, also)
        for (number, _, _), outs in zip(finalists, outcomes[1:], strict=True)
    ]
    return base, figures


def decide(
    base: RoundFigures, figures: Sequence[RoundFigures], *, rounds: int, objective: Objective
) -> Confirmation:
    """The winner: the largest median gain among finalists that gain at least ``MIN_GAIN`` and
    beat the baseline measured beside them in enough rounds (sign test, ``ALPHA``); else the
    baseline."""
    threshold = 1 + MIN_GAIN
    if not base.values:
        verdict = "the baseline failed in every confirmation round; nothing could be confirmed"
        return Confirmation(rounds, base, tuple(figures), base.trial_number, threshold, verdict)
    passing = [f for f in figures if _beats(f)]
    if passing:
        win = max(passing, key=lambda f: f.gain)
        verdict = (
            f"trial #{win.trial_number} is {win.gain:.2f}x better than ONNX Runtime's defaults on "
            f"{objective.name} (medians of {rounds} interleaved rounds, spread {win.spread:.1%} "
            f"vs {base.spread:.1%}; it won {win.wins}/{win.pairs} paired rounds, sign test "
            f"p={sign_test_p(win.wins, win.pairs):.3f})"
        )
        return Confirmation(rounds, base, tuple(figures), win.trial_number, threshold, verdict)
    ranked = sorted((f for f in figures if f.values), key=lambda f: f.gain, reverse=True)
    if ranked:
        top = ranked[0]
        detail = (
            f"the best finalist, #{top.trial_number}, measured {top.gain:.2f}x and won "
            f"{top.wins}/{top.pairs} paired rounds (sign test p={sign_test_p(top.wins, top.pairs):.2f}); "
            f"a win needs >= {threshold:.2f}x and p <= {ALPHA}"
        )
    else:
        detail = "every finalist failed in the confirmation rounds"
    verdict = (
        f"no finalist beat ONNX Runtime's defaults on {objective.name} beyond the noise "
        f"({detail}); keeping the defaults"
    )
    return Confirmation(rounds, base, tuple(figures), base.trial_number, threshold, verdict)
