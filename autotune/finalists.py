"""Confirming the winner: the top configs and the baseline re-measured in interleaved rounds.

One timing on a shared machine can be far off, so the best trial of a search is partly the
luckiest (winner's curse). The top K distinct configs and the baseline are measured again,
A B C D, A B C D, ..., each run in a fresh worker, so slow phases of the machine hit all of them
alike. A finalist wins only if the median of its rounds beats the baseline's by more than the
noise (``threshold``) and it beat the baseline measured beside it in most rounds; otherwise the
baseline is exported and the report says so.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence

import numpy as np

from autotune.config import Confirmation, Measurement, RoundFigures, TrialConfig, TrialOutcome
from autotune.objectives import Objective
from autotune.stats import relative_spread

MIN_GAIN = 0.02  # below a 2 % gain, a "win" is not worth changing a deployment for

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


def _figures(
    number: int,
    outcomes: Sequence[TrialOutcome],
    base_values: Sequence[float | None],
    base_median: float | None,
    objective: Objective,
) -> RoundFigures:
    values = [objective.value(o) if isinstance(o, Measurement) else None for o in outcomes]
    good = [v for v in values if v is not None]
    if not good:
        return RoundFigures(number, (), len(values), math.nan, 0.0, 0, 0.0, None)
    median = float(np.median(good))
    wins = sum(
        1
        for v, b in zip(values, base_values, strict=True)
        if v is not None and b is not None and objective.better(v, b)
    )
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
        gain=gain,
        measurement=closest,
    )


def confirm(
    baseline: Record,
    finalists: Sequence[Record],
    *,
    objective: Objective,
    rounds: int,
    measure: Callable[[TrialConfig], TrialOutcome],
    on_run: Callable[[int, int, TrialOutcome], None] | None = None,
) -> Confirmation:
    """Measure the baseline and the finalists in ``rounds`` interleaved rounds; pick the winner."""
    contenders = [baseline, *finalists]
    outcomes: list[list[TrialOutcome]] = [[] for _ in contenders]
    for round_index in range(rounds):
        for slot, (number, config, _) in enumerate(contenders):
            outcome = measure(config)
            outcomes[slot].append(outcome)
            if on_run is not None:
                on_run(round_index, number, outcome)
    base_values = [objective.value(o) if isinstance(o, Measurement) else None for o in outcomes[0]]
    base = _figures(baseline[0], outcomes[0], [None] * rounds, None, objective)
    figures = [
        _figures(number, outs, base_values, base.median if base.values else None, objective)
        for (number, _, _), outs in zip(finalists, outcomes[1:], strict=True)
    ]
    return decide(base, figures, rounds=rounds, objective=objective)


def decide(
    base: RoundFigures, figures: Sequence[RoundFigures], *, rounds: int, objective: Objective
) -> Confirmation:
    """The winner: the largest median gain among finalists that clear the noise and win most
    of their rounds against the baseline; the baseline when none does."""
    if not base.values:
        verdict = "the baseline failed in every confirmation round; nothing could be confirmed"
        return Confirmation(rounds, base, tuple(figures), base.trial_number, math.inf, verdict)
    thresholds = {f.trial_number: 1 + max(MIN_GAIN, (f.spread + base.spread) / 2) for f in figures}
    passing = [
        f
        for f in figures
        if f.values and f.gain >= thresholds[f.trial_number] and f.wins > len(f.values) / 2
    ]
    if passing:
        win = max(passing, key=lambda f: f.gain)
        verdict = (
            f"trial #{win.trial_number} is {win.gain:.2f}x better than ONNX Runtime's defaults on "
            f"{objective.name} (medians of {rounds} interleaved rounds, spread "
            f"{win.spread:.1%} vs {base.spread:.1%}; it won {win.wins}/{len(win.values)} rounds; "
            f"needed {thresholds[win.trial_number]:.2f}x)"
        )
        return Confirmation(
            rounds, base, tuple(figures), win.trial_number, thresholds[win.trial_number], verdict
        )
    ranked = sorted((f for f in figures if f.values), key=lambda f: f.gain, reverse=True)
    if ranked:
        top = ranked[0]
        detail = (
            f"the best finalist, #{top.trial_number}, measured {top.gain:.2f}x and won "
            f"{top.wins}/{len(top.values)} rounds; it needed {thresholds[top.trial_number]:.2f}x "
            "and most rounds"
        )
    else:
        detail = "every finalist failed in the confirmation rounds"
    verdict = (
        f"no finalist beat ONNX Runtime's defaults on {objective.name} beyond the noise "
        f"({detail}); keeping the defaults"
    )
    threshold = min(thresholds.values(), default=1 + MIN_GAIN)
    return Confirmation(rounds, base, tuple(figures), base.trial_number, threshold, verdict)
