"""Terminal output: one progress line per trial, and the baseline-vs-best table."""

from __future__ import annotations

from collections.abc import Callable

from autotune.config import Measurement, TrialFailure
from autotune.objectives import Objective
from autotune.study import Progress, TrialRecord, TuneResult

# (label, getter, higher is better)
ROWS: list[tuple[str, Callable[[Measurement], float], bool]] = [
    ("batch size", lambda m: m.batch_size, True),
    ("throughput (samples/s)", lambda m: m.throughput, True),
    ("latency p50 (ms)", lambda m: m.latency_ms.p50, False),
    ("latency p90 (ms)", lambda m: m.latency_ms.p90, False),
    ("latency p99 (ms)", lambda m: m.latency_ms.p99, False),
    ("peak memory (MB)", lambda m: m.peak_rss_mb or 0.0, False),
    ("session creation (s)", lambda m: m.create_s, False),
    ("first inference (s)", lambda m: m.first_run_s, False),
]


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e6:
        return str(int(value))
    if abs(value) >= 100:
        return f"{value:.1f}"
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}"


def format_value(objective: Objective, m: Measurement) -> str:
    return f"{_fmt(objective.value(m))} {objective.unit}"


def progress_line(record: TrialRecord, progress: Progress, objective: Objective) -> str:
    width = len(str(progress.total))
    head = f"[{progress.done:>{width}}/{progress.total}]"
    tag = "baseline " if record.baseline else ""
    if isinstance(record.outcome, TrialFailure):
        reason = record.outcome.message.splitlines()[0][:120] if record.outcome.message else ""
        body = f"FAILED {record.outcome.kind}: {reason}"
    else:
        body = f"{objective.name} {format_value(objective, record.outcome)}"
    best = ""
    if progress.best is not None and isinstance(progress.best.outcome, Measurement):
        best = f" | best {format_value(objective, progress.best.outcome)} (#{progress.best.number})"
    return f"{head} #{record.number} {tag}{body}  [{record.config.describe()}]{best}"


def summary_table(result: TuneResult, objective: Objective) -> str:
    base, best = result.baseline.outcome, result.best.outcome
    assert isinstance(base, Measurement) and isinstance(best, Measurement)
    header = (
        "",
        f"baseline (#{result.baseline.number})",
        f"best (#{result.best.number})",
        "best/base",
    )
    rows = [header]
    for label, get, _higher in ROWS:
        a, b = get(base), get(best)
        ratio = f"{b / a:.2f}x" if a else "-"
        rows.append((label, _fmt(a), _fmt(b), ratio))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(
            cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
        )
        for row in rows
    ]
    failed = sum(1 for r in result.records if not r.ok)
    gain = objective.gain(best, base)
    verdict = (
        f"{objective.name}: {gain:.2f}x {'better' if gain >= 1 else 'worse'} than ONNX Runtime's "
        f"defaults ({format_value(objective, base)} -> {format_value(objective, best)})"
    )
    if result.best.number == result.baseline.number:
        verdict = (
            f"{objective.name}: no trial beat ONNX Runtime's defaults; the baseline is the best"
        )
    return "\n".join(
        [
            *lines,
            "",
            f"best config: {result.best.config.describe()}",
            verdict,
            f"trials: {len(result.records)} in study ({result.ran} this run, {failed} failed); "
            f"stopped: {result.stop_reason}",
        ]
    )
