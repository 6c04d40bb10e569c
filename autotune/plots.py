"""``autotune report``: a folder with PNG plots and a page (HTML and Markdown) a person can open.

Optimization history, knob importance, throughput and latency against batch size (the classic
trade-off), and the baseline against the chosen config. matplotlib is an optional extra
(``pip install 'ort-autotune[report]'``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from autotune.config import ConcurrencySweep, Measurement, TrialFailure
from autotune.errors import UsageError
from autotune.export import tuned_for_trial
from autotune.report import ROWS, fmt_number, trade
from autotune.show import confirmed_line
from autotune.study import StudyView
from autotune.sweep import sweep_rows, sweep_verdict


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "autotune report needs matplotlib: pip install 'ort-autotune[report]'"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def history_plot(view: StudyView, path: Path) -> None:
    plt = _pyplot()
    objective = view.objective
    fig, ax = plt.subplots(figsize=(8, 4.5))
    xs, ys, best_x, best_y = [], [], [], []
    best: float | None = None
    for record in view.records:
        if isinstance(record.outcome, Measurement):
            value = objective.value(record.outcome)
            xs.append(record.number)
            ys.append(value)
            if best is None or objective.better(value, best):
                best = value
        if best is not None:
            best_x.append(record.number)
            best_y.append(best)
    failed = [r.number for r in view.records if isinstance(r.outcome, TrialFailure)]
    ax.scatter(xs, ys, s=18, label="trial", color="tab:blue")
    ax.step(best_x, best_y, where="post", color="tab:green", label="best so far")
    baseline = view.baseline
    if baseline is not None and isinstance(baseline.outcome, Measurement):
        ax.axhline(
            objective.value(baseline.outcome), color="gray", ls="--", label="ONNX Runtime defaults"
        )
    confirmation = view.confirmation
    if confirmation is not None and confirmation.baseline.values:
        ax.axhline(confirmation.baseline.median, color="black", ls=":", label="defaults, confirmed")
        chosen = confirmation.figures(confirmation.winner)
        if chosen.trial_number != confirmation.baseline.trial_number and chosen.values:
            ax.scatter(
                [chosen.trial_number], [chosen.median], marker="*", s=160, color="tab:orange",
                label=f"chosen #{chosen.trial_number}, confirmed", zorder=3,
            )  # fmt: skip
    if failed and ys:
        ax.scatter(failed, [min(ys)] * len(failed), marker="x", color="tab:red", label="failed")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective.name} ({objective.unit})")
    ax.set_title(f"Optimization history ({objective.direction})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def importance_plot(importances: dict[str, float], path: Path) -> None:
    plt = _pyplot()
    names = list(importances)[::-1]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(names) + 1.5))
    ax.barh(names, [importances[n] for n in names], color="tab:purple")
    ax.set_xlabel("importance (PED-ANOVA)")
    ax.set_title("Which knobs mattered")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_table(view: StudyView) -> list[tuple[int, float, float, float]]:
    """Per batch size: the best throughput seen, with its p50 and p99 latency."""
    best: dict[int, Measurement] = {}
    for record in view.records:
        m = record.outcome
        if isinstance(m, Measurement) and (
            m.batch_size not in best or m.throughput > best[m.batch_size].throughput
        ):
            best[m.batch_size] = m
    return [(b, m.throughput, m.latency_ms.p50, m.latency_ms.p99) for b, m in sorted(best.items())]


def batch_plot(rows: list[tuple[int, float, float, float]], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.5))
    batches = [r[0] for r in rows]
    ax.plot(batches, [r[1] for r in rows], "o-", color="tab:blue", label="throughput")
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s", color="tab:blue")
    other = ax.twinx()
    other.plot(batches, [r[2] for r in rows], "s--", color="tab:orange", label="latency p50")
    other.plot(batches, [r[3] for r in rows], "^:", color="tab:red", label="latency p99")
    other.set_ylabel("ms per run", color="tab:orange")
    ax.set_title("Throughput and latency against batch size (best trial per size)")
    fig.legend(loc="upper left", bbox_to_anchor=(0.1, 0.9))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def pareto_plot(view: StudyView, path: Path) -> None:
    """Every successful trial on the first two objectives, the Pareto front joined up."""
    plt = _pyplot()
    first, second = view.objectives[:2]
    ok = [r for r in view.records if isinstance(r.outcome, Measurement)]
    front = sorted(view.pareto, key=lambda r: first.value(r.outcome))  # type: ignore[arg-type]
    fig, ax = plt.subplots(figsize=(7, 5))
    ax.scatter(
        [first.value(r.outcome) for r in ok],  # type: ignore[arg-type]
        [second.value(r.outcome) for r in ok],  # type: ignore[arg-type]
        s=18, color="tab:gray", label="trial",
    )  # fmt: skip
    ax.plot(
        [first.value(r.outcome) for r in front],  # type: ignore[arg-type]
        [second.value(r.outcome) for r in front],  # type: ignore[arg-type]
        "o-", color="tab:red", label="Pareto front",
    )  # fmt: skip
    for r in front:
        ax.annotate(f"#{r.number}", (first.value(r.outcome), second.value(r.outcome)))  # type: ignore[arg-type]
    ax.set_xlabel(f"{first.name} ({first.unit}, {first.direction})")
    ax.set_ylabel(f"{second.name} ({second.unit}, {second.direction})")
    ax.set_title("Pareto front")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sweep_plot(sweep: ConcurrencySweep, path: Path) -> None:
    """Throughput against p99 latency at each concurrency, for the defaults and the chosen
    config (Model Analyzer's view of a config under load)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = {
        "baseline": ("s--", "tab:gray", "ORT defaults"),
        "chosen": ("o-", "tab:blue", "chosen"),
    }
    for role, (marker, color, label) in styles.items():
        points = [p for p in sweep.points if p.role == role and p.measurement]
        if not points:
            continue
        p99 = [p.measurement.latency_ms.p99 for p in points]  # type: ignore[union-attr]
        rate = [p.measurement.throughput for p in points]  # type: ignore[union-attr]
        ax.plot(p99, rate, marker, color=color, label=label)
        for p, x, y in zip(points, p99, rate, strict=True):
            ax.annotate(f"c={p.concurrency}", (x, y), textcoords="offset points", xytext=(4, 4))
    if sweep.max_latency_ms is not None:
        ax.axvline(sweep.max_latency_ms, color="tab:red", linestyle=":", label="p99 limit")
    ax.set_xlabel("latency p99 (ms)")
    ax.set_ylabel("throughput (samples/s)")
    ax.margins(0.12)  # room for the labels
    ax.set_title("Throughput against p99 latency by concurrency")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(view: StudyView, importances: dict[str, float], folder: Path) -> Path:
    """Write the plots, report.md and index.html into ``folder``; return the HTML page."""
    folder.mkdir(parents=True, exist_ok=True)
    sections: list[tuple[str, str | None, list[str]]] = []
    history_plot(view, folder / "history.png")
    sections.append(("Optimization history", "history.png", []))
    if importances:
        importance_plot(importances, folder / "importance.png")
        sections.append(("Knob importance", "importance.png", []))
    if view.pareto:
        pareto_plot(view, folder / "pareto.png")
        names = [o.name for o in view.objectives]
        table = [f"| trial | {' | '.join(names)} | settings |", "|" + " --- |" * (len(names) + 2)]
        for r in view.pareto:
            values = " | ".join(fmt_number(o.value(r.outcome)) for o in view.objectives)  # type: ignore[arg-type]
            table.append(f"| #{r.number} | {values} | {r.config.describe()} |")
        sections.append(("Pareto front", "pareto.png", table))
    batches = batch_table(view)
    if len(batches) > 1:
        batch_plot(batches, folder / "batch.png")
        table = [
            "| batch | throughput (samples/s) | p50 ms | p99 ms |",
            "| --- | --- | --- | --- |",
        ]
        table += [
            f"| {b} | {fmt_number(t)} | {fmt_number(p50)} | {fmt_number(p99)} |"
            for b, t, p50, p99 in batches
        ]
        sections.append(("Throughput and latency against batch size", "batch.png", table))
    tuned = tuned_for_trial(view)
    if tuned.sweep is not None:
        sweep_plot(tuned.sweep, folder / "sweep.png")
        grid = sweep_rows(tuned.sweep)
        table = ["| " + " | ".join(grid[0]) + " |", "|" + " --- |" * len(grid[0])]
        table += ["| " + " | ".join(row) + " |" for row in grid[1:]]
        verdict = sweep_verdict(tuned.sweep)
        if verdict:
            table += ["", verdict]
        sections.append(("Concurrency sweep", "sweep.png", table))
    rows = ["| | baseline | chosen | chosen vs base |", "| --- | --- | --- | --- |"]
    for label, get, better in ROWS:
        a, b = get(tuned.baseline), get(tuned.metrics)
        rows.append(f"| {label} | {fmt_number(a)} | {fmt_number(b)} | {trade(a, b, better)} |")
    verdict = confirmed_line(view.confirmation) + (
        "\n\n" + view.confirmation.verdict if view.confirmation else ""
    )
    rows += [
        "",
        f"Chosen config (trial #{tuned.trial_number}): `{tuned.config.describe()}`",
        "",
        verdict,
    ]
    sections.insert(0, ("Baseline against the chosen config", None, rows))
    title = f"autotune report: {view.name}"
    head = [f"# {title}", "", f"Model `{view.attrs.get('model_path')}`, objective `{view.objective.name}`, "
            f"{len(view.records)} trials, space `{view.attrs.get('space')}`.", ""]  # fmt: skip
    markdown = list(head)
    for name, image, lines in sections:
        markdown += (
            [f"## {name}", ""] + ([f"![{name}]({image})", ""] if image else []) + lines + [""]
        )
    (folder / "report.md").write_text("\n".join(markdown))
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}</style></head><body>",
            f"<h1>{html.escape(title)}</h1><p>{html.escape(' '.join(head[2:]))}</p>"]  # fmt: skip
    for name, image, lines in sections:
        page.append(f"<h2>{html.escape(name)}</h2>")
        if image:
            page.append(f"<img src='{image}' alt='{html.escape(name)}' style='max-width:100%'>")
        page.append(_markdown_to_html(lines))
    page.append("</body></html>")
    index = folder / "index.html"
    index.write_text("\n".join(page))
    return index


def _markdown_to_html(lines: list[str]) -> str:
    """The small subset these sections use: pipe tables and paragraphs."""
    out: list[str] = []
    rows: list[list[str]] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if not all(set(c) <= {"-"} for c in cells):
                rows.append(cells)
            continue
        if rows:
            header, *body = rows
            out.append(
                "<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in header) + "</tr>"
            )
            out += [
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body
            ]
            out.append("</table>")
            rows = []
        if line:
            out.append(f"<p>{html.escape(line)}</p>")
    return "\n".join(out)
