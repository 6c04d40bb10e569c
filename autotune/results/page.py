"""``autotune report``: a folder with PNG plots and a page (HTML and Markdown) a person can open.

Optimization history, knob importance, throughput and latency against batch size (the classic
trade-off), and the baseline against the chosen config. matplotlib is an optional extra
(``pip install 'ort-autotune[report]'``).

Every figure says where it comes from: the search (one fresh process per trial) or the
confirmation (the finalists measured again beside the baseline). The two are different
measurements, 2-2.6x apart under load, and are never drawn or tabled as if comparable.
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any, NamedTuple

from autotune.config import ConcurrencySweep, Measurement, TrialFailure, TunedConfig
from autotune.confirm.sweep import sweep_verdict
from autotune.errors import UsageError
from autotune.fmt import fmt_number
from autotune.results.export import tuned_for_trial
from autotune.results.show import confirmed_line
from autotune.results.tables import (
    ROWS,
    SEARCH,
    SWEEP,
    capacity_lines,
    source,
    sweep_table,
    trade,
    tuned_sources,
)
from autotune.study import StudyView


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
    """The search's figures only: the confirmation measured otherwise, and its figures drawn
    on this axis would read as comparable with the trials' (they were 2-2.6x apart)."""
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
    chosen = view.chosen
    if chosen is not None and isinstance(chosen.outcome, Measurement):
        ax.scatter(
            [chosen.number], [objective.value(chosen.outcome)], marker="*", s=160,
            color="tab:orange", label=f"chosen #{chosen.number}", zorder=3,
        )  # fmt: skip
    if failed and ys:
        ax.scatter(failed, [min(ys)] * len(failed), marker="x", color="tab:red", label="failed")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("trial")
    ax.set_ylabel(f"{objective.name} ({objective.unit}), search")
    ax.set_title(f"Optimization history ({objective.direction}; {SEARCH} per trial)")
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


class BatchRow(NamedTuple):
    batch: int
    source: str  # SEARCH, or the confirmation's label
    trial: int
    throughput: float
    p50: float
    p99: float


def batch_table(view: StudyView) -> list[BatchRow]:
    """Per batch size: the best throughput the confirmation measured at that size, else the
    best the search saw (its source says which), with its p50 and p99 latency."""

    def best_per_batch(found: list[tuple[str, int, Measurement]]) -> dict[int, tuple]:
        best: dict[int, tuple[str, int, Measurement]] = {}
        for label, number, m in found:
            if m.batch_size not in best or m.throughput > best[m.batch_size][2].throughput:
                best[m.batch_size] = (label, number, m)
        return best

    searched = [
        (SEARCH, r.number, r.outcome) for r in view.records if isinstance(r.outcome, Measurement)
    ]
    c = view.confirmation
    confirmed = [
        (source(c), f.trial_number, f.measurement)
        for f in ((c.baseline, *c.finalists) if c is not None else ())
        if f.values and f.measurement is not None
    ]
    best = {**best_per_batch(searched), **best_per_batch(confirmed)}
    return [
        BatchRow(b, label, n, m.throughput, m.latency_ms.p50, m.latency_ms.p99)
        for b, (label, n, m) in sorted(best.items())
    ]


def batch_plot(rows: list[BatchRow], path: Path) -> None:
    """Filled markers for confirmed figures, hollow ones for the search's; a line joins only
    neighbours of one source."""
    plt = _pyplot()
    from matplotlib.lines import Line2D

    fig, ax = plt.subplots(figsize=(8, 4.5))
    other = ax.twinx()
    series = (
        (ax, "throughput", "o", "-", "tab:blue", [r.throughput for r in rows]),
        (other, "latency p50", "s", "--", "tab:orange", [r.p50 for r in rows]),
        (other, "latency p99", "^", ":", "tab:red", [r.p99 for r in rows]),
    )
    for axis, _, marker, style, color, values in series:
        start = 0
        for end in range(1, len(rows) + 1):
            if end == len(rows) or rows[end].source != rows[start].source:
                filled = rows[start].source != SEARCH
                axis.plot(
                    [r.batch for r in rows[start:end]], values[start:end], marker=marker,
                    ls=style, color=color, mfc=color if filled else "white",
                )  # fmt: skip
                start = end
    batches = [r.batch for r in rows]
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("samples/s", color="tab:blue")
    other.set_ylabel("ms per run", color="tab:orange")
    handles = [
        Line2D([], [], marker=marker, ls=style, color=color, label=label)
        for _, label, marker, style, color, _ in series
    ]
    for label in dict.fromkeys(r.source for r in rows):
        face = "white" if label == SEARCH else "black"
        handles.append(Line2D([], [], marker="o", ls="", color="black", mfc=face, label=label))
    ax.set_title("Throughput and latency against batch size (best trial per size)")
    fig.legend(handles=handles, loc="upper left", bbox_to_anchor=(0.1, 0.9))
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
    ax.set_title(f"Pareto front ({SEARCH} per trial)")
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
    ax.set_title(f"Throughput against p99 latency by concurrency ({SWEEP})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def capacity_plot(tuned: TunedConfig, path: Path) -> bool:
    """The latency quantile against the offered rate for the defaults and the chosen config,
    both measured in the same run, with the SLO line and each one's capacity marked. False when
    there is nothing to draw (closed-loop figures)."""
    traffic = tuned.workload.traffic
    figures = {"ORT defaults": tuned.baseline.open_loop, "chosen": tuned.metrics.open_loop}
    if traffic is None or any(f is None or not f.probes for f in figures.values()):
        return False
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for (label, f), (marker, color) in zip(
        figures.items(), (("s--", "tab:gray"), ("o-", "tab:blue")), strict=True
    ):
        assert f is not None
        probes = sorted(f.probes, key=lambda p: p.offered_rate)
        ax.plot([p.offered_rate for p in probes], [p.latency_ms for p in probes], marker,
                color=color, label=label)  # fmt: skip
        if f.capacity:
            ax.axvline(f.capacity, color=color, linestyle=":", alpha=0.8)
            ax.annotate(f"{fmt_number(f.capacity)} req/s", (f.capacity, 0), color=color,
                        textcoords="offset points", xytext=(3, 6), xycoords=("data", "axes fraction"))  # fmt: skip
    if traffic.max_latency_ms is not None:
        ax.axhline(traffic.max_latency_ms, color="tab:red", linestyle="--",
                   label=f"{traffic.quantile} limit")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("offered rate (requests/s, open loop)")
    ax.set_ylabel(f"latency {traffic.quantile} (ms, from arrival)")
    ax.set_title("Latency against offered rate; dotted: each config's capacity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _capacity_section(tuned: TunedConfig, folder: Path) -> _Section | None:
    """Capacity at the SLO: the plot and the headline lines."""
    if not capacity_plot(tuned, folder / "capacity.png"):
        return None
    lines = [line for line in capacity_lines(tuned) if line]
    lines += ["", "Each point is one open-loop window at that offered rate: latency counted from "
              "each request's scheduled arrival, unfinished requests at what they had waited."]  # fmt: skip
    return ("Capacity at the latency limit", "capacity.png", lines)


#: One section of the report: its heading, its plot's file (None: no plot) and its Markdown lines.
_Section = tuple[str, str | None, list[str]]


def write_report(view: StudyView, importances: dict[str, float], folder: Path) -> Path:
    """Write the plots, report.md and index.html into ``folder``; return the HTML page."""
    folder.mkdir(parents=True, exist_ok=True)
    sections: list[_Section] = [_history_section(view, folder)]
    if importances:
        importance_plot(importances, folder / "importance.png")
        sections.append(("Knob importance", "importance.png", []))
    if view.pareto:
        sections.append(_pareto_section(view, folder))
    batches = batch_table(view)
    if len(batches) > 1:
        sections.append(_batch_section(batches, folder))
    tuned = tuned_for_trial(view)
    if tuned.sweep is not None:
        sections.append(_sweep_section(tuned.sweep, folder))
    capacity = _capacity_section(tuned, folder)
    if capacity is not None:
        sections.insert(0, capacity)
    sections.insert(0, ("Baseline against the chosen config", None, _baseline_rows(view, tuned)))
    title = f"autotune report: {view.name}"
    head = [f"# {title}", "", f"Model `{view.attrs.get('model_path')}`, objective `{view.objective.name}`, "
            f"{len(view.records)} trials, space `{view.attrs.get('space')}`.", ""]  # fmt: skip
    (folder / "report.md").write_text(_markdown(head, sections))
    index = folder / "index.html"
    index.write_text(_html_page(title, head, sections))
    return index


def _history_section(view: StudyView, folder: Path) -> _Section:
    """The optimization history's plot, and where its figures come from."""
    confirmed = source(view.confirmation) if view.confirmation else None
    history_plot(view, folder / "history.png")
    history = [
        f"Each point is one trial as the search measured it ({SEARCH} per trial)."
        + (
            f" The first table's figures ({confirmed}) are another measurement, not drawn here."
            if confirmed
            else ""
        )
    ]
    return ("Optimization history", "history.png", history)


def _pareto_section(view: StudyView, folder: Path) -> _Section:
    """The Pareto front's plot and table: each trial's figure on every objective."""
    pareto_plot(view, folder / "pareto.png")
    names = [o.name for o in view.objectives]
    table = [f"| trial | {' | '.join(names)} | settings |", "|" + " --- |" * (len(names) + 2)]
    for r in view.pareto:
        values = " | ".join(fmt_number(o.value(r.outcome)) for o in view.objectives)  # type: ignore[arg-type]
        table.append(f"| #{r.number} | {values} | {r.config.describe()} |")
    table += ["", f"Figures: {SEARCH} per trial."]
    return ("Pareto front", "pareto.png", table)


def _batch_section(batches: list[BatchRow], folder: Path) -> _Section:
    """Throughput and latency against batch size: the plot, the table and their sources."""
    batch_plot(batches, folder / "batch.png")
    table = [
        "| batch | source | trial | throughput (samples/s) | p50 ms | p99 ms |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    table += [
        f"| {r.batch} | {r.source} | #{r.trial} | {fmt_number(r.throughput)} "
        f"| {fmt_number(r.p50)} | {fmt_number(r.p99)} |"
        for r in batches
    ]
    note = (
        "Each batch size's best trial, as the confirmation measured it where it measured a"
        " trial of that size, else as the search did."
    )
    if len({r.source for r in batches}) > 1:
        note += " Rows of different sources are different measurements: do not compare them."
    table += ["", note]
    return ("Throughput and latency against batch size", "batch.png", table)


def _sweep_section(sweep: ConcurrencySweep, folder: Path) -> _Section:
    """The concurrency sweep's plot, its table and its verdict."""
    sweep_plot(sweep, folder / "sweep.png")
    grid = sweep_table(sweep)
    table = ["| " + " | ".join(grid[0]) + " |", "|" + " --- |" * len(grid[0])]
    table += ["| " + " | ".join(row) + " |" for row in grid[1:]]
    table += ["", f"Figures: {SWEEP}."]
    verdict = sweep_verdict(sweep)
    if verdict:
        table += ["", verdict]
    return ("Concurrency sweep", "sweep.png", table)


def _baseline_rows(view: StudyView, tuned: TunedConfig) -> list[str]:
    """The baseline against the chosen config (a ratio only where one source measured both),
    the chosen config and the confirmation's verdict."""
    base_from, best_from = tuned_sources(tuned)
    same = base_from == best_from  # else no ratio: two kinds of measurement do not compare
    number = view.baseline.number if view.baseline else "?"
    rows = [
        f"| ({base_from}) | baseline #{number} | chosen #{tuned.trial_number} | chosen vs base |"
        if same
        else f"| (two sources) | baseline #{number} ({base_from}) "
        f"| chosen #{tuned.trial_number} ({best_from}) | chosen vs base |",
        "| --- | --- | --- | --- |",
    ]
    for label, get, better in ROWS:
        a, b = get(tuned.baseline), get(tuned.metrics)
        ratio = trade(a, b, better) if same else "-"
        rows.append(f"| {label} | {fmt_number(a)} | {fmt_number(b)} | {ratio} |")
    verdict = confirmed_line(view.confirmation) + (
        "\n\n" + "\n\n".join([view.confirmation.verdict, *view.confirmation.notes])
        if view.confirmation
        else ""
    )
    rows += [
        "",
        f"Chosen config (trial #{tuned.trial_number}): `{tuned.config.describe()}`",
        "",
        verdict,
    ]
    return rows


def _markdown(head: list[str], sections: list[_Section]) -> str:
    """report.md: the head, then each section's heading, plot and lines."""
    markdown = list(head)
    for name, image, lines in sections:
        markdown += (
            [f"## {name}", ""] + ([f"![{name}]({image})", ""] if image else []) + lines + [""]
        )
    return "\n".join(markdown)


def _html_page(title: str, head: list[str], sections: list[_Section]) -> str:
    """index.html: the same sections as report.md, as one self-contained page."""
    page = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:.2em .6em;text-align:right}</style></head><body>",
            f"<h1>{html.escape(title)}</h1><p>{_inline(' '.join(head[2:]))}</p>"]  # fmt: skip
    for name, image, lines in sections:
        page.append(f"<h2>{html.escape(name)}</h2>")
        if image:
            page.append(f"<img src='{image}' alt='{html.escape(name)}' style='max-width:100%'>")
        page.append(_markdown_to_html(lines))
    page.append("</body></html>")
    return "\n".join(page)


def _inline(text: str) -> str:
    """Markdown's inline code (`...`) as ``<code>``, the rest escaped."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", html.escape(text))


def _markdown_to_html(lines: list[str]) -> str:
    """The small subset these sections use: pipe tables, paragraphs and inline code."""
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
            out.append("<table><tr>" + "".join(f"<th>{_inline(c)}</th>" for c in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in body]
            out.append("</table>")
            rows = []
        if line:
            out += [f"<p>{_inline(part)}</p>" for part in line.split("\n\n")]
    return "\n".join(out)
