"""Terminal output: one progress line per trial, and the baseline-vs-best table."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence

from autotune.config import (
    ConcurrencySweep,
    Confirmation,
    FeedPlan,
    Measurement,
    OpenLoopFigures,
    TrialFailure,
    TunedConfig,
)
from autotune.confirm.sweep import sweep_verdict
from autotune.fmt import fmt_number
from autotune.objectives import Limits, Objective
from autotune.study import Progress, TrialRecord, TuneResult

#: The search measures each trial once, in one fresh process; the confirmation measures the
#: finalists again beside the baseline, in warm workers taking turns (docs/architecture.md,
#: "Choosing and confirming"). Under load the two differed 2-2.6x: every figure shown says
#: which of them it is, and no table compares one with the other.
SEARCH = "search, one fresh process"
#: The sweep's points: each one process, the two configs taking turns level by level.
SWEEP = "one fresh process per point, interleaved"

# (label, getter, which way is better: "higher", "lower" or "" for neither)
ROWS: list[tuple[str, Callable[[Measurement], float], str]] = [
    ("batch size", lambda m: m.batch_size, ""),
    ("throughput (samples/s)", lambda m: m.throughput, "higher"),
    ("latency p50 (ms)", lambda m: m.latency_ms.p50, "lower"),
    ("latency p90 (ms)", lambda m: m.latency_ms.p90, "lower"),
    ("latency p99 (ms)", lambda m: m.latency_ms.p99, "lower"),
    ("peak memory (MB)", lambda m: m.peak_rss_mb or 0.0, "lower"),
    ("CPU busy (cores)", lambda m: m.cpu_cores or 0.0, "lower"),
    ("session creation (s)", lambda m: m.create_s, "lower"),
    ("first inference (s)", lambda m: m.first_run_s, "lower"),
]


def trade(base: float, chosen: float, better: str) -> str:
    """The chosen config against the baseline in words: "1.46x better", "1.46x worse", "same"."""
    if not base or not chosen:
        return "-"
    if not better:
        return f"{chosen / base:.2f}x"
    factor = chosen / base if better == "higher" else base / chosen
    if abs(factor - 1) < 0.005:
        return "same"
    return f"{factor:.2f}x better" if factor > 1 else f"{1 / factor:.2f}x worse"


def source(confirmation: Confirmation | None) -> str:
    """Where a figure comes from: the confirmation (and how it measured), or the search."""
    return SEARCH if confirmation is None else f"confirmed, {confirmation.method}"


def confirmed_measurement(confirmation: Confirmation | None, number: int) -> Measurement | None:
    """Trial ``number``'s figures as the confirmation measured them; None if it did not."""
    if confirmation is None:
        return None
    for f in (confirmation.baseline, *confirmation.finalists):
        if f.trial_number == number and f.values:
            return f.measurement
    return None


def tuned_sources(tuned: TunedConfig) -> tuple[str, str]:
    """The sources of ``tuned.baseline`` and ``tuned.metrics``, as ``export`` chose them: the
    confirmation's when it measured the trial, else the search's."""
    c = tuned.confirmation
    if confirmed_measurement(c, tuned.trial_number) is None:
        return SEARCH, SEARCH
    assert c is not None
    # The headline merges every block of a config (what best.json stores); the confirmation's
    # own table shows the median block and the median paired ratio, so say which is which.
    merged = f"{source(c)}, all merged" if c.method == "paired blocks" else source(c)
    base = merged if confirmed_measurement(c, c.baseline.trial_number) is not None else SEARCH
    return base, merged


def sweep_table(sweep: ConcurrencySweep) -> list[tuple[str, ...]]:
    """The sweep as a table: per concurrency, each config's throughput and p99, and the ratio."""
    chosen = any(p.role == "chosen" for p in sweep.points)
    header = ["concurrency", "defaults samples/s", "defaults p99 ms"]
    if chosen:
        header += ["chosen samples/s", "chosen p99 ms", "chosen/defaults"]
    rows: list[tuple[str, ...]] = [tuple(header)]
    for level in sweep.levels:
        row = [str(level)]
        figures = []
        for role in ("baseline", "chosen") if chosen else ("baseline",):
            point = sweep.at(role, level)
            m = point.measurement if point else None
            figures.append(m)
            row += (
                [fmt_number(m.throughput), fmt_number(m.latency_ms.p99)] if m else ["failed", "-"]
            )
        if chosen:
            base, own = figures
            row.append(f"{own.throughput / base.throughput:.2f}x" if base and own else "-")
        rows.append(tuple(row))
    return rows


def format_value(objective: Objective, m: Measurement) -> str:
    return f"{fmt_number(objective.value(m))} {objective.unit}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    return (
        f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"
        if minutes >= 60
        else f"{minutes}:{secs:02d}"
    )


def progress_line(
    record: TrialRecord, progress: Progress, objective: Objective, limits: Limits | None = None
) -> str:
    """``[ 3/20 0:12, ~0:45 left] #2 throughput 812 samples/s [config] | best ... | 1 failed``."""
    width = len(str(progress.total))
    left = progress.remaining_s
    eta = f", ~{_clock(left)} left" if left is not None and progress.done < progress.total else ""
    head = f"[{progress.done:>{width}}/{progress.total} {_clock(progress.elapsed_s)}{eta}]"
    tag = "baseline " if record.baseline else ""
    if isinstance(record.outcome, TrialFailure):
        reason = record.outcome.message.splitlines()[0][:120] if record.outcome.message else ""
        body = f"FAILED {record.outcome.kind}: {reason}"
    else:
        body = f"{objective.name} {format_value(objective, record.outcome)}"
        if record.outcome.unstable:
            body += " (unstable)"
        if limits is not None and not limits.feasible(record.outcome):
            body += f" (infeasible: {'; '.join(limits.broken(record.outcome))})"
    best = ""
    if progress.best is not None and isinstance(progress.best.outcome, Measurement):
        best = (
            f" | best {format_value(objective, progress.best.outcome)} "
            f"(#{progress.best.number}: {progress.best.config.describe()})"
        )
    failed = f" | {progress.failed} failed" if progress.failed else ""
    return f"{head} #{record.number} {tag}{body}  [{record.config.describe()}]{best}{failed}"


def text_table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        ).rstrip()
        for row in rows
    ]


def confirmation_table(confirmation: Confirmation, objective: Objective) -> list[str]:
    paired = confirmation.method == "paired blocks"
    rows: list[tuple[str, ...]] = [
        (
            f"trial ({source(confirmation)})",
            f"median {'block' if paired else 'round'} {objective.unit}",
            "spread",
            "blocks won" if paired else "rounds won",
            "paired gain" if paired else "vs baseline",
        )
    ]
    for f in (confirmation.baseline, *confirmation.finalists):
        is_base = f.trial_number == confirmation.baseline.trial_number
        mark = " <- chosen" if f.trial_number == confirmation.winner else ""
        rows.append(
            (
                f"#{f.trial_number}{' (baseline)' if is_base else ''}{mark}",
                fmt_number(f.median) if f.values else "failed",
                f"{f.spread:.1%}",
                "-" if is_base else f"{f.wins}/{f.pairs}",
                "-" if is_base else f"{f.gain:.2f}x",
            )
        )
    return text_table(rows)


def pareto_table(front: Sequence[TrialRecord], objectives: Sequence[Objective]) -> list[str]:
    """The non-dominated trials of a multi-objective study, best on the first objective first."""
    first = objectives[0]
    ordered = sorted(
        front,
        key=lambda r: first.value(r.outcome),  # type: ignore[arg-type]
        reverse=first.direction == "maximize",
    )
    rows: list[tuple[str, ...]] = [
        ("Pareto front", *(f"{o.name} ({o.unit})" for o in objectives), "settings")
    ]
    for r in ordered:
        m = r.outcome
        assert isinstance(m, Measurement)
        rows.append(
            (f"#{r.number}", *(fmt_number(o.value(m)) for o in objectives), r.config.describe())
        )
    note = f"({SEARCH} per trial; pick a point with `autotune export --study STUDY --trial N`)"
    return [*text_table(rows), note]


def confirmed_front_table(
    confirmation: Confirmation,
    objectives: Sequence[Objective],
    records: Sequence[TrialRecord],
    searched: int,
) -> list[str]:
    """The Pareto front drawn again from the re-measured medians, best on the first objective
    first, each point against the baseline measured beside it."""
    first = objectives[0]
    base = confirmation.baseline
    by_number = {r.number: r for r in records}
    members = [f for f in (base, *confirmation.finalists) if f.trial_number in confirmation.front]
    members.sort(key=lambda f: f.medians[first.name], reverse=first.direction == "maximize")
    rows: list[tuple[str, ...]] = [
        (
            f"Pareto front (medians of {confirmation.rounds} rounds)",
            *(f"{o.name} ({o.unit})" for o in objectives),
            "settings",
        )
    ]
    for f in members:
        cells = []
        for o in objectives:
            value = f.medians[o.name]
            ratio = o.ratio(value, base.medians[o.name]) if base.medians.get(o.name) else None
            is_base = f is base
            cells.append(
                fmt_number(value) + ("" if is_base or ratio is None else f" ({ratio:.2f}x)")
            )
        record = by_number.get(f.trial_number)
        label = f"#{f.trial_number}{' (baseline)' if f is base else ''}"
        rows.append((label, *cells, record.config.describe() if record else "?"))
    measured = 1 + len(confirmation.finalists)
    note = (
        f"({source(confirmation)}: {searched} points on the search's front; {measured} "
        "re-measured with the baseline, "
        f"{len(members)} still on the front; (N.NNx) = better than the baseline by that factor; "
        "pick a point with `autotune export --study STUDY --trial N`)"
    )
    return [*text_table(rows), note]


def summary_table(
    tuned: TunedConfig,
    result: TuneResult,
    objective: Objective,
    objectives: Sequence[Objective] | None = None,
    limits: Limits | None = None,
    target_rate: float | None = None,
) -> str:
    """Baseline against the chosen config (confirmed figures when confirmed), then the story."""
    lines = _headline(tuned, result) + capacity_lines(tuned, target_rate)
    lines += ["", f"chosen config: {tuned.config.describe()}"]
    search = tuned.search
    lines.append(
        f"{SEARCH} per trial: best trial #{search.trial_number} measured "
        f"{format_value(objective, search.metrics)} against the baseline's "
        f"{format_value(objective, search.baseline)} ({search.speedup:.2f}x)"
    )
    lines += _fronts_and_shapes(tuned, result, objective, objectives)
    confirmation = tuned.confirmation
    if confirmation is not None:
        lines += ["", *confirmation_table(confirmation, objective), confirmation.verdict]
        lines += [f"note: {note}" for note in confirmation.notes]
    elif result.best.number == result.baseline.number:
        lines.append(
            f"{objective.name}: no trial beat ONNX Runtime's defaults; keeping the defaults"
        )
    lines += _trial_counts(result, limits)
    if tuned.sweep is not None:
        lines += ["", f"concurrency sweep ({SWEEP}):"]
        lines += text_table(sweep_table(tuned.sweep))
        verdict = sweep_verdict(tuned.sweep)
        if verdict:
            lines.append(verdict)
    for m, who in ((tuned.baseline, "baseline"), (tuned.metrics, "chosen")):
        lines += [f"note: {who}: {note}" for note in m.notes]
        lines += [f"warning: {who} measurement unstable: {reason}" for reason in m.unstable]
    return "\n".join(lines)


OPEN_LOOP_ROWS: list[tuple[str, Callable[[OpenLoopFigures], float], str]] = [
    ("server threads", lambda f: f.server_threads, ""),
    ("offered rate (req/s)", lambda f: f.offered_rate, ""),
    ("achieved rate (req/s)", lambda f: f.achieved_rate, "higher"),
    ("unfinished requests", lambda f: f.unfinished, "lower"),
    ("queue depth (max)", lambda f: f.queue_depth_max, "lower"),
    ("requests per run (mean)", lambda f: f.mean_batch, ""),
]


def open_loop_rows(base: Measurement, best: Measurement, same: bool) -> list[tuple[str, ...]]:
    """What open-loop traffic showed for both: achieved against offered rate, the queue."""
    a, b = base.open_loop, best.open_loop
    if a is None or b is None:
        return []
    rows: list[tuple[str, ...]] = []
    for label, get, better in OPEN_LOOP_ROWS:
        x, y = get(a), get(b)
        rows.append((label, fmt_number(x), fmt_number(y), trade(x, y, better) if same else "-"))
    return rows


def capacity_lines(tuned: TunedConfig, target_rate: float | None = None) -> list[str]:
    """The capacity headline: requests/s at the SLO for the defaults and the chosen config,
    and how many machines like this one each needs for ``target_rate``."""
    traffic = tuned.workload.traffic
    a, b = tuned.baseline.open_loop, tuned.metrics.open_loop
    if traffic is None or traffic.max_latency_ms is None or a is None or b is None:
        return []
    base, best = a.capacity or 0.0, b.capacity or 0.0
    ratio = f" ({best / base:.2f}x)" if base > 0 else ""
    lines = [
        "",
        f"capacity at {traffic.quantile} <= {traffic.max_latency_ms:g} ms: defaults "
        f"{fmt_number(base)} req/s, tuned {fmt_number(best)} req/s{ratio}",
        f"(defaults: one session at ONNX Runtime's defaults called by {a.server_threads} server "
        "threads, one per usable CPU: what a server does when nobody tunes it)",
    ]
    if target_rate:
        need = [f"{math.ceil(target_rate / c)}" if c > 0 else "no number of" for c in (base, best)]
        lines.append(
            f"for {fmt_number(target_rate)} req/s: {need[0]} machine(s) like this one at the "
            f"defaults, {need[1]} tuned"
        )
    if b.unfinished:
        lines.append(f"note: chosen left {b.unfinished} request(s) unanswered at its capacity")
    return lines


def _headline(tuned: TunedConfig, result: TuneResult) -> list[str]:
    """The baseline against the chosen config, row by row (a ratio only where one source
    measured both), and a note when the chosen batch size costs p99 latency."""
    base, best = tuned.baseline, tuned.metrics
    base_from, best_from = tuned_sources(tuned)
    same = base_from == best_from  # else no ratio: two kinds of measurement do not compare
    rows: list[tuple[str, ...]] = [
        (
            f"({base_from})" if same else "(two sources)",
            f"baseline (#{result.baseline.number}{'' if same else ', ' + base_from})",
            f"chosen (#{tuned.trial_number}{'' if same else ', ' + best_from})",
            "chosen vs base",
        )
    ]
    for label, get, better in ROWS:
        a, b = get(base), get(best)
        rows.append((label, fmt_number(a), fmt_number(b), trade(a, b, better) if same else "-"))
    rows = batch_wording(rows, tuned.inputs) + open_loop_rows(base, best, same)
    if base.peak_gpu_mb is not None and best.peak_gpu_mb is not None:
        a, b = base.peak_gpu_mb, best.peak_gpu_mb
        ratio = trade(a, b, "lower") if same else "-"
        rows.append(("peak GPU memory (MB)", fmt_number(a), fmt_number(b), ratio))
    lines = text_table(rows)
    p99_worse = best.latency_ms.p99 / base.latency_ms.p99 if base.latency_ms.p99 else 1.0
    if p99_worse > 2 and best.batch_size != base.batch_size:
        lines.append(
            f"note: batch size {best.batch_size} makes p99 latency {p99_worse:.1f}x worse "
            f"({fmt_number(best.latency_ms.p99)} ms); if requests must answer faster, bound it "
            "with --max-latency-ms"
        )
    return lines


def _fronts_and_shapes(
    tuned: TunedConfig,
    result: TuneResult,
    objective: Objective,
    objectives: Sequence[Objective] | None,
) -> list[str]:
    """The search's Pareto front, the confirmed one, and the figures per shape of a mix."""
    lines: list[str] = []
    confirmation = tuned.confirmation
    if result.pareto:
        lines += ["", *pareto_table(result.pareto, objectives or [objective])]
    if confirmation is not None and confirmation.front and objectives:
        lines += [
            "",
            *confirmed_front_table(
                confirmation, objectives, result.records, searched=len(result.pareto)
            ),
        ]
    if tuned.metrics.per_shape:
        base_from, best_from = tuned_sources(tuned)
        same = base_from == best_from
        both = best_from if same else f"baseline {base_from}; chosen {best_from}"
        lines += ["", *shape_table(tuned.baseline, tuned.metrics, both)]
    return lines


def _trial_counts(result: TuneResult, limits: Limits | None) -> list[str]:
    """The trials in the study (failed, unstable), why the search stopped, the constraints
    broken and the per-trial overhead."""
    failed = [r for r in result.records if not r.ok]
    kinds = sorted({r.outcome.kind for r in failed if isinstance(r.outcome, TrialFailure)})
    measured = [r.outcome for r in result.records if isinstance(r.outcome, Measurement)]
    unstable = sum(1 for m in measured if m.unstable)
    overheads = [m.overhead_s for m in measured if m.overhead_s is not None]
    lines = [
        f"trials: {len(result.records)} in study ({result.ran} this run, {len(failed)} failed"
        f"{': ' + ', '.join(kinds) if kinds else ''}; {unstable} flagged unstable); "
        f"stopped: {result.stop_reason}"
    ]
    if limits is not None and limits.bounds:
        infeasible = sum(1 for m in measured if not limits.feasible(m))
        lines.append(f"constraints: {limits.describe()}; {infeasible} measured trials broke them")
    if overheads:
        lines.append(
            f"per-trial overhead (process start, imports): median {statistics.median(overheads):.2f} s"
        )
    return lines


def batch_wording(rows: list[tuple[str, ...]], inputs: FeedPlan | None) -> list[tuple[str, ...]]:
    """The batch and throughput rows as the model decides them: a batch it fixes at N is no
    choice of the tuning, not "batch size 1"; when its inputs disagree on axis 0 a run's samples
    are unknown, so the throughput counts runs."""
    if inputs is None or not (inputs.fixed_batch or inputs.counts_runs):
        return rows
    if inputs.fixed_batch:
        batch = f"{inputs.fixed_batch} (fixed by the model)"
    else:
        batch = "unknown (inputs differ on axis 0)"
    worded = []
    for row in rows:
        if row[0] == "batch size":
            row = (row[0], batch, batch, "-")
        elif row[0] == "throughput (samples/s)" and inputs.counts_runs:
            row = ("throughput (runs/s)", *row[1:])
        worded.append(row)
    return worded


def shape_table(base: Measurement, best: Measurement, label: str = "") -> list[str]:
    """A shape mix: each shape's throughput and p99, baseline against chosen."""
    rows: list[tuple[str, ...]] = [
        (
            f"shape ({label})" if label else "shape",
            "weight",
            "base samples/s",
            "chosen samples/s",
            "base p99 ms",
            "chosen p99 ms",
        )
    ]
    base_by = {f.label: f for f in base.per_shape}
    for f in best.per_shape:
        b = base_by.get(f.label)
        rows.append(
            (
                f.label,
                f"{f.weight:.2f}",
                fmt_number(b.throughput) if b else "-",
                fmt_number(f.throughput),
                fmt_number(b.latency_ms.p99) if b else "-",
                fmt_number(f.latency_ms.p99),
            )
        )
    return text_table(rows)
