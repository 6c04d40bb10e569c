"""``autotune show``: the studies of a storage, or one study's trials, as tables or JSON."""

from __future__ import annotations

from typing import Any

from autotune.config import Confirmation, Measurement, TrialFailure
from autotune.objectives import Objective
from autotune.results.tables import SEARCH, confirmation_table, fmt_number, text_table
from autotune.study import StudyView, TrialRecord

#: The figure columns of the trials table: (the objective they are, header, key in trial_row).
FIGURES = (
    ("throughput", "samples/s", "throughput"),
    ("latency:p50", "p50 ms", "latency_p50_ms"),
    ("latency:p99", "p99 ms", "latency_p99_ms"),
    ("memory", "peak MB", "peak_rss_mb"),
    ("startup", "startup s", "startup_s"),
)


def studies_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no studies"
    header = ("study", "objective", "trials", "best", "confirmed", "model")
    cells = [header] + [
        (
            r["name"],
            str(r["objective"]),
            str(r["trials"]),
            str(r.get("best", "?")),
            str(r.get("confirmed", "no")),
            str(r["model"]),
        )
        for r in rows
    ]
    return "\n".join(text_table(cells))


def trial_row(view: StudyView, record: TrialRecord) -> dict[str, Any]:
    """One trial as plain data: what ``--json`` prints and the table shows."""
    objective = view.objective
    chosen = view.chosen
    row: dict[str, Any] = {
        "trial": record.number,
        "baseline": record.baseline,
        "chosen": chosen is not None and chosen.number == record.number,
        "config": record.config.describe(),
        "state": "ok",
    }
    outcome = record.outcome
    if isinstance(outcome, Measurement):
        row.update(
            {
                objective.name: objective.value(outcome),
                "throughput": outcome.throughput,
                "latency_p50_ms": outcome.latency_ms.p50,
                "latency_p99_ms": outcome.latency_ms.p99,
                "peak_rss_mb": outcome.peak_rss_mb,
                "startup_s": outcome.startup_s,
                "unstable": list(outcome.unstable),
            }
        )
    elif isinstance(outcome, TrialFailure):
        row.update({"state": outcome.kind, "reason": outcome.message})
    return row


def _objective_header(objective: Objective) -> str:
    """The objective's column: one of the figure columns, or its own (``p90 ms``)."""
    for name, header, _ in FIGURES:
        if name == objective.name:
            return header
    kind, _, stat = objective.name.partition(":")
    return f"{stat} ms" if kind == "latency" else f"{objective.name} {objective.unit}"


def trials_table(view: StudyView) -> str:
    """Every trial's search measurement, the objective's column first; then the confirmation's
    own figures, in a table of their own."""
    objective = view.objective
    pareto = {r.number for r in view.pareto}
    others = [(header, key) for name, header, key in FIGURES if name != objective.name]
    header = (
        "trial",
        _objective_header(objective),
        *(h for h, _ in others),
        "settings (vs ORT defaults) / failure",
    )
    cells: list[tuple[str, ...]] = [header]
    for record in view.records:
        row = trial_row(view, record)
        mark = " B" if row["baseline"] else ""
        mark += " *" if row["chosen"] else ""
        mark += " P" if record.number in pareto else ""
        name = f"#{record.number}{mark}"
        if row["state"] == "ok":
            cells.append(
                (
                    name,
                    fmt_number(row[objective.name]) + ("~" if row["unstable"] else ""),
                    *("-" if row[key] is None else fmt_number(row[key]) for _, key in others),
                    row["config"],
                )
            )
        else:
            reason = " ".join(str(row["reason"]).split())[:90]
            dashes = ("-",) * len(others)
            cells.append((name, row["state"].upper(), *dashes, f"{row['config']}: {reason}"))
    lines = [
        f"study {view.name}: {objective.name} ({objective.direction}), model {view.attrs.get('model_path')}",
        f"figures per trial: {SEARCH} each"
        + ("; the confirmation's own are in the table below" if view.confirmation else ""),
        *text_table(cells),
        "B = baseline (ONNX Runtime defaults), * = chosen"
        + (" (confirmed)" if view.confirmation else " (best search measurement)")
        + ", ~ = unstable measurement"
        + (
            ", P = Pareto front of " + " and ".join(o.name for o in view.objectives)
            if pareto
            else ""
        ),
    ]
    workload = view.attrs.get("workload") or {}
    if workload.get("concurrency", 1) > 1 or workload.get("shapes"):
        shapes = " | ".join(
            ",".join(f"{k}={v}" for k, v in p["dims"].items()) for p in workload.get("shapes", [])
        )
        lines.append(
            f"workload: {workload.get('concurrency', 1)} concurrent caller(s)"
            + (f", shapes {shapes}" if shapes else "")
        )
    lines.append(confirmed_line(view.confirmation))
    if view.confirmation is not None:
        lines += ["", *confirmation_table(view.confirmation, objective)]
        lines += [view.confirmation.verdict, *(f"note: {n}" for n in view.confirmation.notes)]
    return "\n".join(lines)


def confirmed_line(confirmation: Confirmation | None) -> str:
    """Whether and when a study was confirmed, how, and over how many trials."""
    if confirmation is None:
        return "not confirmed: the chosen config is the search's best single measurement"
    when = confirmation.confirmed_at or "at an unrecorded time"
    over = f" over {confirmation.trials} trials" if confirmation.trials else ""
    return (
        f"confirmed {when}{over} ({confirmation.method}, verdict: {confirmation.kind}); "
        "`autotune run ... --reconfirm` measures it again"
    )
