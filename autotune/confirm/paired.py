"""The verdict from a duel: paired ratios per block, the host's noise, and a Holm-corrected test.

Every finalist's block is paired with the baseline's block of the same cycle. Its gain is the
median of those paired ratios (> 1 is better, whatever the objective's direction). A finalist
wins only if

- it beat the baseline in enough paired blocks for a one-sided sign test at ``ALPHA``, corrected
  for the number of finalists (Holm), and
- its gain exceeds the measured noise: how far the baseline's twin (the same config in a second
  worker) strayed from 1, plus the uncertainty of the finalist's own median, and at least
  ``MIN_GAIN``, and
- the search did not measure it slower than the baseline: two independent measurements must
  agree on the direction. (Seen here: a config 9 % slower in the VM's fast speed mode and 5 %
  faster in its slow one won a confirmation held entirely in the slow mode.) A search figure
  more than ``SEARCH_FLIP`` below the paired gain is one bad window, not a direction: it is
  set aside, and named in the notes.

With no winner the verdict is "no gain", or "too noisy to decide" when identical configs
disagreed by more than ``NOISY`` on this host, or a finalist looked better but not beyond that
noise: then the report says how noisy the host was and what to do about it. A finalist that
lost clearly (:func:`lost_clearly`) could not be a win however noisy the host: when every
finalist lost clearly or failed, the verdict is "no gain", naming each one's figures.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np

from autotune.config import (
    Confirmation,
    HostNoise,
    Measurement,
    RoundFigures,
    TrialConfig,
    WorkerJob,
)
from autotune.confirm.duel import Contender, DuelPlan, run_duel
from autotune.confirm.rounds import ALPHA, MIN_GAIN, sign_test_p
from autotune.fmt import fmt_number
from autotune.interrupt import STOP
from autotune.machine import cpu_times, steal_share
from autotune.measure.stats import relative_spread
from autotune.objectives import Objective

NOISY = 0.08  # identical configs disagreeing by more than this: too noisy to call a small gain
SWITCH = 0.25  # a baseline block this far from its median: the host changed speed
#: The search's one measurement of the defaults and the confirmation's median of them this far
#: apart (either way) says the search's figure was an outlier, and every search ratio with it.
#: Below it they differ without that: a VM's two speed modes 1.38x apart, warm blocks reading
#: faster than fresh-process windows. Under --concurrency 2 on a 2-CPU VM (results/
#: BENCHMARKS.md) 19 of 20 tunings read 0.82x-1.85x, the finalists' search ratios not inflated
#: alike (0.83x and 1.14x their paired gains at 1.85x); the 20th read 2.96x, and its search
#: ratios were 1.9x and 2.7x the paired gains.
SEARCH_OUTLIER = 2.0
#: A search figure below 1 refuses a paired win only within this factor of its paired gain.
#: The one false win the rule was made for was 1.15x apart (1.05x in paired blocks held in the
#: VM's slow mode, 0.91x in the search, in its fast one). Further apart, the search's one window
#: was off, not the ranking: under --concurrency 2 (results/BENCHMARKS.md) the search read 28
#: finalists at 0.71x-1.56x of an independent A/B (the paired blocks 0.78x-1.11x), and every
#: finalist the two disagreed on was a real win: 1.29x, 1.36x and 1.50x apart (A/B 1.27x-1.51x;
#: the last refused by the rule), and 1.16x apart (A/B 1.31x; still refused at this limit); an
#: audio model's, 2.3x apart (1.33x, 0.58x), read 1.09x and 1.22x in independent checks.
SEARCH_FLIP = 1.25


def _ratios(
    objective: Objective, own: Sequence[Measurement | None], base: Sequence[Measurement | None]
) -> list[float]:
    return [
        objective.ratio(objective.value(a), objective.value(b))
        for a, b in zip(own, base, strict=True)
        if a is not None and b is not None
    ]


def median_band(ratios: Sequence[float]) -> float:
    """Half-width of a rough 95 % band around the median of the ratios (a boxplot's notch)."""
    if len(ratios) < 2:
        return math.inf
    with np.errstate(invalid="ignore"):  # a block whose baseline held no rate: an inf ratio
        q1, q3 = np.percentile(ratios, [25, 75])
    width = float(1.57 * (q3 - q1) / math.sqrt(len(ratios)))
    return width if math.isfinite(width) else math.inf


def holm(p_values: Sequence[float], alpha: float = ALPHA) -> list[bool]:
    """Which hypotheses Holm's step-down procedure rejects at family-wise level ``alpha``."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def leg_gains(
    objective: Objective,
    own: Sequence[Measurement | None],
    base: Sequence[Measurement | None],
    legs: Sequence[range],
) -> list[float]:
    """The median paired ratio within each set of workers (legs with a pair at least)."""
    gains = []
    for leg in legs:
        ratios = _ratios(objective, own[leg.start : leg.stop], base[leg.start : leg.stop])
        if ratios:
            gains.append(float(np.median(ratios)))
    return gains


def host_noise(
    objective: Objective,
    base: Sequence[Measurement | None],
    twin: Sequence[Measurement | None],
    steal: float | None,
    search: Measurement | None = None,
    legs: Sequence[range] = (),
) -> HostNoise:
    """The host's noise from the twin; with several sets of workers (``legs``), the set whose
    twin strayed furthest from 1 sets the margin: a process's own luck is part of the noise."""
    ratios = _ratios(objective, twin, base)
    values = [objective.value(m) for m in base if m is not None]
    median = float(np.median(values)) if values else math.nan
    switches = sum(1 for v in values if median and abs(v - median) / median > SWITCH)
    twin_ratio = float(np.median(ratios)) if ratios else math.nan
    per_leg = leg_gains(objective, twin, base, legs) if len(legs) > 1 else []
    strayed = max(abs(g - 1) for g in (twin_ratio, *per_leg))
    return HostNoise(
        twin_ratio=twin_ratio,
        twin_spread=relative_spread(ratios) if ratios else math.nan,
        # Without the twin the host's noise is unknown: assume the limit of "noisy".
        margin=strayed + median_band(ratios) if len(ratios) > 1 else NOISY,
        steal=steal,
        mode_switches=switches,
        blocks=len(values),
        search_shift=median / objective.value(search) if search and values else None,
        twin_legs=tuple(per_leg),
    )


def _figures(
    number: int,
    blocks: Sequence[Measurement | None],
    base: Sequence[Measurement | None],
    objective: Objective,
    overall: Measurement | None,
    also: Sequence[Objective],
    baseline: bool = False,
) -> RoundFigures:
    values = [objective.value(m) for m in blocks if m is not None]
    if not values:
        return RoundFigures(number, (), len(blocks), math.nan, 0.0, 0, 0, 0.0, None)
    ratios = _ratios(objective, blocks, base)
    wins = 0 if baseline else sum(1 for r in ratios if r > 1)
    measured = [m for m in blocks if m is not None]
    medians = (
        {o.name: float(np.median([o.value(m) for m in measured])) for o in (objective, *also)}
        if also
        else {}
    )
    return RoundFigures(
        trial_number=number,
        values=tuple(values),
        failures=len(blocks) - len(values),
        median=float(np.median(values)),
        spread=relative_spread(values),
        wins=wins,
        pairs=0 if baseline else len(ratios),
        gain=1.0 if baseline else (float(np.median(ratios)) if ratios else 0.0),
        measurement=overall,
        medians=medians,
    )


def _passes(f: RoundFigures, noise: HostNoise, ratios: Sequence[float]) -> bool:
    needed = max(MIN_GAIN, noise.margin + median_band(ratios))
    return bool(f.values) and f.gain - 1 >= needed


def lost_significantly(f: RoundFigures) -> bool:
    """Worse than the baseline in significantly more paired blocks than better (a one-sided
    sign test at ``ALPHA``; a tie counts as a loss) and a median below 1."""
    return bool(f.values) and f.gain < 1 and sign_test_p(f.pairs - f.wins, f.pairs) <= ALPHA


def lost_clearly(f: RoundFigures, noise: HostNoise, ratios: Sequence[float]) -> bool:
    """A finalist no further cycle would make a win: it lost significantly, or its median is
    below 1 by as much as a win's must be above it (the noise plus its own band, ``MIN_GAIN``
    at least). However noisy the host, it is no gain rather than "too noisy"."""
    needed = max(MIN_GAIN, noise.margin + median_band(ratios))
    return bool(f.values) and (lost_significantly(f) or 1 - f.gain >= needed)


def search_outlier(base: RoundFigures, noise: HostNoise, objective: Objective) -> str:
    """One line when the search's measurement of the defaults was an outlier against the
    confirmation's (``SEARCH_OUTLIER`` apart), so that the search's ratios, inflated or
    deflated by it, are not left standing unexplained; empty otherwise."""
    shift = noise.search_shift
    if not shift or not math.isfinite(shift) or shift <= 0 or not base.values:
        return ""
    apart = max(shift, 1 / shift)
    if apart <= SEARCH_OUTLIER:
        return ""
    searched = base.median / shift
    slow = objective.ratio(base.median, searched) > 1  # the search's figure was the worse one
    return (
        f"the search measured the defaults at {fmt_number(searched)} {objective.unit}, the "
        f"confirmation at {fmt_number(base.median)} ({apart:.1f}x apart): the search's ratios were "
        + (
            "inflated by that one slow measurement"
            if slow
            else "deflated by that one fast measurement"
        )
    )


def _p_text(p: float) -> str:
    """A p-value as the verdict prints it: three decimals, never in exponent notation."""
    return f"={p:.3f}" if p >= 0.001 else "<0.001"


@dataclass(frozen=True)
class _Triage:
    """The finalists sorted by the paired test and by what the other evidence says of them."""

    p_values: list[float]  # each finalist's one-sided sign test
    gains: list[float | None]  # each finalist's own search figure, None where unknown
    contradicted: list[RoundFigures]  # paired wins the search measured the other way
    set_aside: dict[int, float]  # trial number -> a search figure too far off to count
    split: list[tuple[RoundFigures, Sequence[float]]]  # paired wins not held in every leg
    unsure: list[RoundFigures]  # contradicted or split
    passing: list[RoundFigures]  # paired wins nothing doubts


def _triage(
    figures: Sequence[RoundFigures],
    ratios: Sequence[Sequence[float]],
    noise: HostNoise,
    search_gains: Sequence[float | None],
    legs: Sequence[Sequence[float]],
) -> _Triage:
    """Test each finalist (sign test, Holm-corrected, beyond the noise), then set apart the
    paired wins that the search contradicts or that do not hold in every set of workers."""
    p_values = [sign_test_p(f.wins, f.pairs) for f in figures]
    significant = holm(p_values) if figures else []
    gains = list(search_gains) or [None] * len(figures)
    per_leg = list(legs) or [()] * len(figures)
    paired_ok = [
        sig and _passes(f, noise, r) for f, sig, r in zip(figures, significant, ratios, strict=True)
    ]
    contradicted = [
        f
        for f, ok, g in zip(figures, paired_ok, gains, strict=True)
        if ok and g is not None and g < 1 and f.gain <= g * SEARCH_FLIP
    ]
    set_aside = {  # a search figure too far below the paired gain to be a ranking's flip
        f.trial_number: g
        for f, ok, g in zip(figures, paired_ok, gains, strict=True)
        if ok and g is not None and g < 1 and f.gain > g * SEARCH_FLIP
    }
    split = [
        (f, leg)
        for f, ok, leg in zip(figures, paired_ok, per_leg, strict=True)
        if ok and f not in contradicted and len(leg) > 1 and min(leg) < 1 + MIN_GAIN
    ]
    unsure = contradicted + [f for f, _ in split]
    passing = [f for f, ok in zip(figures, paired_ok, strict=True) if ok and f not in unsure]
    return _Triage(p_values, gains, contradicted, set_aside, split, unsure, passing)


def _where(noise: HostNoise, cycles: int) -> str:
    """How the verdict was measured: the cycles, the sets of workers, and the twin's agreement."""
    sets = f" in {len(noise.twin_legs)} sets of workers" if len(noise.twin_legs) > 1 else ""
    return f"{cycles} cycles of paired blocks{sets}; " + (
        f"identical configs agreed within {abs(noise.twin_ratio - 1):.1%}"
        if math.isfinite(noise.twin_ratio)
        else f"the baseline's twin failed, so the host's noise was taken as {NOISY:.0%}"
    )


def _notes(
    base: RoundFigures, noise: HostNoise, objective: Objective, triage: _Triage
) -> list[str]:
    """The verdict's notes: an outlying search baseline, and each search figure set aside."""
    outlier = search_outlier(base, noise, objective)
    notes = [outlier] if outlier else []
    set_aside = triage.set_aside
    notes += [
        f"#{f.trial_number} measured {set_aside[f.trial_number]:.2f}x in the search, "
        f"{f.gain / set_aside[f.trial_number]:.1f}x below its paired {f.gain:.2f}x: further "
        f"apart than the host's speed modes move a ranking ({SEARCH_FLIP:g}x), so that one "
        "search window was set aside, not taken as the direction"
        for f in triage.passing
        if f.trial_number in set_aside
    ]
    return notes


def decide_paired(
    base: RoundFigures,
    figures: Sequence[RoundFigures],
    ratios: Sequence[Sequence[float]],
    noise: HostNoise,
    *,
    cycles: int,
    objective: Objective,
    search_gains: Sequence[float | None] = (),
    legs: Sequence[Sequence[float]] = (),
) -> Confirmation:
    """The verdict; ``search_gains`` are the finalists' own search figures against the
    baseline's (> 1 better): a paired win that the search contradicts (below 1, within
    ``SEARCH_FLIP`` of the paired gain) is not a win.
    ``legs`` are each finalist's gains within each set of worker processes: a win must hold
    in every one (a lucky process is not a better config)."""
    triage = _triage(figures, ratios, noise, search_gains, legs)
    threshold = 1 + max(MIN_GAIN, noise.margin)
    where = _where(noise, cycles)
    notes = _notes(base, noise, objective, triage)

    def verdict_of(winner: int, kind: str, verdict: str) -> Confirmation:
        return Confirmation(
            cycles, base, tuple(figures), winner, threshold, verdict,
            method="paired blocks", noise=noise, kind=kind, notes=tuple(notes),
        )  # fmt: skip

    if not base.values:
        verdict = "the baseline failed in the confirmation; nothing could be confirmed"
        return verdict_of(base.trial_number, "no gain", verdict)
    if triage.passing:
        win = max(triage.passing, key=lambda f: f.gain)
        p = triage.p_values[list(figures).index(win)]
        verdict = _winner_text(win, p, len(figures), objective, where)
        return verdict_of(win.trial_number, "winner", verdict)
    lost = [lost_clearly(f, noise, r) for f, r in zip(figures, ratios, strict=True)]
    if any(lost) and all(gone or not f.values for f, gone in zip(figures, lost, strict=True)):
        return verdict_of(base.trial_number, "no gain", _all_lost_text(figures, objective, where))
    hopeful = [
        f
        for f, p in zip(figures, triage.p_values, strict=True)
        if f.values and f.gain >= 1 + MIN_GAIN and p <= ALPHA
    ]
    if _too_noisy(figures, ratios, lost, noise, triage, hopeful):
        verdict = _noisy_text(base, figures, hopeful, triage, noise, objective)
        return verdict_of(base.trial_number, "too noisy", verdict)
    return verdict_of(base.trial_number, "no gain", _no_gain_text(figures, objective, where))


def _winner_text(
    win: RoundFigures, p: float, finalists: int, objective: Objective, where: str
) -> str:
    """The verdict for a finalist that won: its gain, its blocks won and its sign test."""
    return (
        f"trial #{win.trial_number} is {win.gain:.2f}x better than ONNX Runtime's defaults "
        f"on {objective.name} (median of paired blocks; {where}; it won {win.wins}/"
        f"{win.pairs} paired blocks, sign test p{_p_text(p)}, Holm-corrected over "
        f"{finalists} finalist(s))"
    )


def _all_lost_text(figures: Sequence[RoundFigures], objective: Objective, where: str) -> str:
    """The verdict when every finalist lost clearly or failed, naming each one's figures."""
    each = ", ".join(
        f"#{f.trial_number} {f.gain:.2f}x (won {f.wins} of {f.pairs} blocks)"
        if f.values
        else f"#{f.trial_number} failed"
        for f in figures
    )
    return (
        f"no gain on {objective.name}: every finalist was slower than ONNX Runtime's "
        f"defaults in paired blocks: {each} ({where}); keeping the defaults"
    )


def _too_noisy(
    figures: Sequence[RoundFigures],
    ratios: Sequence[Sequence[float]],
    lost: Sequence[bool],
    noise: HostNoise,
    triage: _Triage,
    hopeful: Sequence[RoundFigures],
) -> bool:
    """Whether the host's noise, or evidence that disagrees, keeps a possible win undecided."""
    # A noisy host matters only when a finalist could still be a win within its own band
    # (one that lost clearly cannot, however wide its band on a few blocks).
    plausible = any(
        f.values and not gone and f.gain + median_band(r) >= 1 + MIN_GAIN
        for f, r, gone in zip(figures, ratios, lost, strict=True)
    )
    twin_known = math.isfinite(noise.twin_ratio)
    unsteady = not twin_known or abs(noise.twin_ratio - 1) + _half(noise) > NOISY
    return bool(triage.unsure) or bool(hopeful) or (unsteady and plausible)


def _noisy_text(
    base: RoundFigures,
    figures: Sequence[RoundFigures],
    hopeful: Sequence[RoundFigures],
    triage: _Triage,
    noise: HostNoise,
    objective: Objective,
) -> str:
    """The "too noisy" verdict: how noisy the host was, which wins the evidence doubts, the
    best finalist's figure, and what to do about it."""
    best = max(hopeful or [f for f in figures if f.values] or [base], key=lambda f: f.gain)
    return (
        f"too noisy to decide on {objective.name}: {_disagreement(noise)}"
        + _host_trouble(noise)
        + "".join(
            _flip_text(f, triage.gains[list(figures).index(f)], noise, objective)
            for f in triage.contradicted
        )
        + "".join(_split_text(f, leg) for f, leg in triage.split)
        + (
            f"; the best finalist, #{best.trial_number}, measured {best.gain:.2f}x"
            if best is not base
            else ""
        )
        + "; keeping the defaults. Re-run with --reconfirm on a quieter machine (no other "
        "work, a dedicated or larger VM) or with more --rounds"
    )


def _disagreement(noise: HostNoise) -> str:
    """How far two workers running the same config disagreed, or that the twin failed."""
    if math.isfinite(noise.twin_ratio):
        return (
            f"two workers running the same config disagreed by "
            f"{abs(noise.twin_ratio - 1):.1%} (spread {noise.twin_spread:.0%})"
        )
    return "the baseline's twin failed, so the host's noise is unknown"


def _host_trouble(noise: HostNoise) -> str:
    """The stolen CPU time and the host's speed changes, where there were any."""
    return (
        f", the hypervisor stole {noise.steal:.0%} of the CPU time"
        if noise.steal is not None and noise.steal >= 0.005
        else ""
    ) + (
        f", the host changed speed in {noise.mode_switches} of {noise.blocks} blocks"
        if noise.mode_switches
        else ""
    )


def _flip_text(
    f: RoundFigures, searched: float | None, noise: HostNoise, objective: Objective
) -> str:
    """A paired win that its search figure (``searched``) contradicts."""
    return (
        f", #{f.trial_number} won the paired blocks ({f.gain:.2f}x) but measured "
        f"{searched:.2f}x in the search: the two disagree on the "
        "direction (a ranking can flip with the host's speed mode"
        + (
            f"; the defaults ran {_times(noise.search_shift, objective)} here than in the search"
            if noise.search_shift
            else ""
        )
        + ")"
    )


def _split_text(f: RoundFigures, leg: Sequence[float]) -> str:
    """A paired win that did not hold in each of its successive worker processes."""
    return (
        f", #{f.trial_number} won the paired blocks ({f.gain:.2f}x) but measured "
        + " and ".join(f"{g:.2f}x" for g in leg)
        + " in its successive worker processes: one process's luck (where its threads "
        "and memory landed) moved it by more than the gain"
    )


def _no_gain_text(figures: Sequence[RoundFigures], objective: Objective, where: str) -> str:
    """The verdict when no finalist beat the defaults beyond the noise."""
    ranked = sorted((f for f in figures if f.values), key=lambda f: f.gain, reverse=True)
    detail = (
        f"the best finalist, #{ranked[0].trial_number}, measured {ranked[0].gain:.2f}x and won "
        f"{ranked[0].wins}/{ranked[0].pairs} paired blocks"
        if ranked
        else "every finalist failed in the confirmation"
    )
    return (
        f"no finalist beat ONNX Runtime's defaults on {objective.name} beyond the noise "
        f"({detail}; {where}); keeping the defaults"
    )


def _times(shift: float, objective: Objective) -> str:
    """``1.38x slower`` for the baseline's confirmation figure over its search figure."""
    better = objective.ratio(shift, 1.0)
    return f"{better:.2f}x faster" if better > 1 else f"{1 / better:.2f}x slower"


def _half(noise: HostNoise) -> float:
    return noise.margin - abs(noise.twin_ratio - 1)


def plan_for(baseline: Measurement, rounds: int, rates: Sequence[float] = ()) -> DuelPlan:
    """Blocks of about 20 requests (0.1 s to 0.5 s); 12 cycles at least (2 per round beyond
    6 rounds), up to 3x that while a finalist is undecided.

    Measured here (magika, identical configs): 50 ms blocks paired within an IQR of 15-17 %,
    150 ms blocks within 4-10 %; a block's first requests run on caches the previous worker
    used, so short blocks read slow. 12 cycles agreed with a 40-cycle A/B within 10 % in 30 of
    30 tunings (results/BENCHMARKS.md); 20 (the old 4 per round at ``--rounds 5``) cost 1.7x
    the time for the same verdicts (benchmarks/tuning_time.py).
    """
    if rates:  # open loop: a block is a window per rate, seconds each (capacity's ladder)
        cycles = max(6, rounds + 1)
        return DuelPlan(
            cycles=cycles,
            max_cycles=2 * cycles,
            block_s=2.0 * len(rates),
            min_runs=1,
            restarts=(cycles // 2,),
            rates=tuple(rates),
        )
    per_request = baseline.latency_ms.p50 / 1e3
    block_s = min(0.5, max(0.1, 20 * per_request))
    callers = max(1, baseline.concurrency)
    cycles = max(12, 2 * rounds)
    return DuelPlan(
        cycles=cycles,
        max_cycles=3 * cycles,
        block_s=block_s,
        min_runs=3 * callers,
        restarts=(cycles // 2,),
    )


#: Cycles before a clear loser may be retired: 6 straight losses are a one-sided sign test's
#: p = 0.016.
RETIRE_AFTER = 6


def clear_loser(f: RoundFigures) -> bool:
    """A finalist that lost to the baseline in significantly more paired blocks than it won,
    and whose median is worse: no further cycle can make it the winner worth the time. The
    verdict counts it as lost clearly (:func:`lost_clearly`)."""
    return f.pairs >= RETIRE_AFTER and lost_significantly(f)


@dataclass
class _Duel:
    """The contenders of one paired confirmation, and what its verdict needs besides their blocks.

    ``last`` is the verdict of the latest cycle :meth:`decided` judged; ``settled`` whether no
    finalist still running could then have become a winner."""

    number: int  # the baseline's trial number
    base: Contender
    twin: Contender
    others: list[Contender]
    numbers: list[int]  # the finalists' trial numbers, in the order of ``others``
    base_search: Measurement
    objective: Objective
    also: Sequence[Objective]
    plan: DuelPlan
    steal0: tuple[int, int] | None
    gains: list[float | None]  # each finalist's own search figure against the baseline's
    last: Confirmation | None = None
    settled: bool = True

    def verdict(self, cycles: int) -> Confirmation:
        """The verdict on the blocks of the first ``cycles`` cycles."""
        objective, base = self.objective, self.base
        legs = self.plan.legs(cycles)
        noise = host_noise(
            objective,
            base.blocks,
            self.twin.blocks,
            steal_share(since=self.steal0),
            self.base_search,
            legs,
        )
        base_figures = _figures(
            self.number, base.blocks, base.blocks, objective, None, self.also, True
        )
        figures = [
            _figures(n, c.blocks, base.blocks, objective, None, self.also)
            for n, c in zip(self.numbers, self.others, strict=True)
        ]
        ratios = [_ratios(objective, c.blocks, base.blocks) for c in self.others]
        return decide_paired(
            base_figures,
            figures,
            ratios,
            noise,
            cycles=cycles,
            objective=objective,
            search_gains=self.gains,
            legs=[leg_gains(objective, c.blocks, base.blocks, legs) for c in self.others],
        )

    def decided(self, cycles: int) -> bool:
        """Retire clear losers; settled once no finalist still running could become a winner."""
        last = self.last = self.verdict(cycles)
        left = self.plan.max_cycles - cycles
        settled = True
        leader = [
            c
            for f, c in zip(last.finalists, self.others, strict=True)
            if f.trial_number == last.winner
        ]
        for f, contender in zip(last.finalists, self.others, strict=True):
            if contender.retired or f.trial_number == last.winner:
                continue
            if clear_loser(f):
                contender.retired = True
            elif f.values and f.gain >= 1 + MIN_GAIN:
                if leader and not could_beat(self.objective, contender, leader[0]):
                    continue  # the winner stands: this one cannot beat it by a gain worth having
                if sign_test_p(f.wins + left, f.pairs + left) <= ALPHA / len(self.numbers):
                    settled = False  # could still win with the cycles left
        self.settled = settled
        return settled

    def over(self) -> bool:
        """Every finalist retired as a clear loser or failed: the baseline and its twin would
        only be measuring each other."""
        return all(c.retired or c.failure is not None for c in self.others)


def _search_gains(
    objective: Objective,
    finalists: Sequence[tuple[int, TrialConfig]],
    searched: Mapping[int, Measurement] | None,
    base_search: Measurement,
) -> list[float | None]:
    """Each finalist's own search figure against the baseline's; None where it has none."""
    return [
        objective.gain(searched[n], base_search) if searched and n in searched else None
        for n, _ in finalists
    ]


def confirm_paired(
    baseline: tuple[int, TrialConfig, Measurement],
    finalists: Sequence[tuple[int, TrialConfig]],
    *,
    job_for: Callable[[TrialConfig], WorkerJob],
    searched: Mapping[int, Measurement] | None = None,
    objective: Objective,
    rounds: int,
    timeout_s: float,
    command: Sequence[str] | None = None,
    also: Sequence[Objective] = (),
    on_cycle: Callable[[int, int], None] | None = None,
    budget_s: float | None = None,
    rates: Sequence[float] = (),
) -> Confirmation:
    """Duel the baseline, its twin and the finalists; the verdict with the host's noise.

    ``budget_s`` (the search's own measuring time) bounds the cycles added beyond the plan's
    minimum while a finalist is undecided: the confirmation should not outlast the search.
    ``rates``: open-loop traffic, every block one window per offered rate, the same for all."""
    number, base_config, base_search = baseline
    plan = plan_for(base_search, rounds, rates)
    duel = _Duel(
        number=number,
        base=Contender("baseline", job_for(base_config)),
        twin=Contender("twin", job_for(base_config)),
        others=[Contender(f"#{n}", job_for(c)) for n, c in finalists],
        numbers=[n for n, _ in finalists],
        base_search=base_search,
        objective=objective,
        also=also,
        plan=plan,
        steal0=cpu_times(),
        gains=_search_gains(objective, finalists, searched, base_search),
    )
    cycles = run_duel(
        [duel.base, duel.twin, *duel.others],
        plan,
        timeout_s=timeout_s,
        command=command,
        decided=duel.decided,
        over=duel.over,
        on_cycle=(lambda done: on_cycle(done, plan.max_cycles)) if on_cycle else None,
        budget_s=budget_s,
    )
    return _final_verdict(duel, cycles, budget_s)


def _final_verdict(duel: _Duel, cycles: int, budget_s: float | None) -> Confirmation:
    """The verdict on every cycle run, with each contender's overall measurement, its failures,
    the finalists retired early, and a note when the duel stopped while still undecided."""
    last = duel.last
    result = last if last is not None and last.rounds == cycles else duel.verdict(cycles)
    overall = {c.name: _overall(c) for c in (duel.base, *duel.others)}
    base_figures = replace(result.baseline, measurement=overall["baseline"])
    figures = tuple(
        replace(f, measurement=overall[c.name], failures=f.failures + (1 if c.failure else 0))
        for f, c in zip(result.finalists, duel.others, strict=True)
    )
    failures = [
        f"{c.name}: {c.failure.kind}: {c.failure.message[:200]}"
        for c in (duel.base, duel.twin, *duel.others)
        if c.failure
    ]
    retired = [
        f"{c.name} after {f.pairs} cycles ({f.wins}/{f.pairs} won)"
        for f, c in zip(figures, duel.others, strict=True)
        if c.retired
    ]
    verdict_text = result.verdict + (f" (failed: {'; '.join(failures)})" if failures else "")
    if retired:
        verdict_text += f"; stopped early as clear losers: {', '.join(retired)}"
    if not duel.settled and cycles < duel.plan.max_cycles and not STOP.is_set():
        verdict_text += (
            f"; a finalist was still undecided when the confirmation reached the search's own "
            f"time ({budget_s:.0f} s): more --rounds (a longer minimum) or --reconfirm can settle it"
        )
    return replace(result, baseline=base_figures, finalists=figures, verdict=verdict_text)


def could_beat(objective: Objective, challenger: Contender, leader: Contender) -> bool:
    """Whether the challenger may still be better than the leader by ``MIN_GAIN``: the upper
    edge of the band around the median of their head-to-head ratios (the two blocks of one
    cycle) reaches ``1 + MIN_GAIN``.

    Two winners within 2 % of each other are one choice to a deployment: the duel need not run
    to its last cycle to rank them. (Seen here: two batch-4 configs, 1.12x and 1.14x, kept a
    confirmation at its 36-cycle cap.)
    """
    ratios = _ratios(objective, challenger.blocks, leader.blocks)
    if len(ratios) < RETIRE_AFTER:
        return True
    return float(np.median(ratios)) + median_band(ratios) >= 1 + MIN_GAIN


def _overall(contender: Contender) -> Measurement | None:
    """All of a contender's blocks as one measurement, with its startup and peak memory."""
    data = contender.final.get("measurement")
    if data is None:
        return None
    return Measurement.from_dict(data)
