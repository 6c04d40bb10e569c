"""Terminal output: one progress line per trial, and the baseline-vs-best table."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence

from autotune.config import Confirmation, Measurement, TrialFailure, TunedConfig
from autotune.objectives import Limits, Objective
from autotune.study import Progress, TrialRecord, TuneResult
from autotune.sweep import sweep_rows, sweep_verdict

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


def fmt_number(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


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
            "trial",
            f"median {objective.unit}",
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
    note = (
        "(single search measurements; pick a point with `autotune export --study STUDY --trial N`)"
    )
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
        f"({searched} points on the search's front; {measured} re-measured with the baseline, "
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
) -> str:
    """Baseline against the chosen config (confirmed figures when confirmed), then the story."""
    base, best = tuned.baseline, tuned.metrics
    confirmation = tuned.confirmation
    source = (
        "search measurement"
        if confirmation is None
        else f"{confirmation.rounds} paired blocks"
        if confirmation.method == "paired blocks"
        else f"median round of {confirmation.rounds}"
    )
    rows: list[tuple[str, ...]] = [
        (
            f"({source})",
            f"baseline (#{result.baseline.number})",
            f"chosen (#{tuned.trial_number})",
            "chosen vs base",
        )
    ]
    for label, get, better in ROWS:
        a, b = get(base), get(best)
        rows.append((label, fmt_number(a), fmt_number(b), trade(a, b, better)))
    if base.peak_gpu_mb is not None and best.peak_gpu_mb is not None:
        a, b = base.peak_gpu_mb, best.peak_gpu_mb
        rows.append(("peak GPU memory (MB)", fmt_number(a), fmt_number(b), trade(a, b, "lower")))
    lines = text_table(rows)
    p99_worse = best.latency_ms.p99 / base.latency_ms.p99 if base.latency_ms.p99 else 1.0
    if p99_worse > 2 and best.batch_size != base.batch_size:
        lines.append(
            f"note: batch size {best.batch_size} makes p99 latency {p99_worse:.1f}x worse "
            f"({fmt_number(best.latency_ms.p99)} ms); if requests must answer faster, bound it "
            "with --max-latency-ms"
        )
    lines += ["", f"chosen config: {tuned.config.describe()}"]
    search = tuned.search
    lines.append(
        f"search: best trial #{search.trial_number} measured {format_value(objective, search.metrics)}"
        f" against the baseline's {format_value(objective, search.baseline)} "
        f"({search.speedup:.2f}x, one measurement each)"
    )
    if result.pareto:
        lines += ["", *pareto_table(result.pareto, objectives or [objective])]
    if confirmation is not None and confirmation.front and objectives:
        lines += [
            "",
            *confirmed_front_table(
                confirmation, objectives, result.records, searched=len(result.pareto)
            ),
        ]
    if best.per_shape:
        lines += ["", *shape_table(base, best)]
    if confirmation is not None:
        lines += ["", *confirmation_table(confirmation, objective), confirmation.verdict]
    elif result.best.number == result.baseline.number:
        lines.append(
            f"{objective.name}: no trial beat ONNX Runtime's defaults; keeping the defaults"
        )
    failed = [r for r in result.records if not r.ok]
    kinds = sorted({r.outcome.kind for r in failed if isinstance(r.outcome, TrialFailure)})
    measured = [r.outcome for r in result.records if isinstance(r.outcome, Measurement)]
    unstable = sum(1 for m in measured if m.unstable)
    overheads = [m.overhead_s for m in measured if m.overhead_s is not None]
    lines.append(
        f"trials: {len(result.records)} in study ({result.ran} this run, {len(failed)} failed"
        f"{': ' + ', '.join(kinds) if kinds else ''}; {unstable} flagged unstable); "
        f"stopped: {result.stop_reason}"
    )
    if limits is not None and limits.bounds:
        infeasible = sum(1 for m in measured if not limits.feasible(m))
        lines.append(f"constraints: {limits.describe()}; {infeasible} measured trials broke them")
    if overheads:
        lines.append(
            f"per-trial overhead (process start, imports): median {statistics.median(overheads):.2f} s"
        )
    if tuned.sweep is not None:
        lines += ["", "concurrency sweep (one measurement per point, interleaved):"]
        lines += text_table(sweep_rows(tuned.sweep))
        verdict = sweep_verdict(tuned.sweep)
        if verdict:
            lines.append(verdict)
    for m, who in ((base, "baseline"), (best, "chosen")):
        lines += [f"note: {who}: {note}" for note in m.notes]
        lines += [f"warning: {who} measurement unstable: {reason}" for reason in m.unstable]
    return "\n".join(lines)


def shape_table(base: Measurement, best: Measurement) -> list[str]:
    """A shape mix: each shape's throughput and p99, baseline against chosen."""
    rows: list[tuple[str, ...]] = [
        ("shape", "weight", "base samples/s", "chosen samples/s", "base p99 ms", "chosen p99 ms")
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
