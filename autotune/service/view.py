"""Jobs as a person reads them: the queue by class, and one job's classes side by side."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from autotune.config import TunedConfig
from autotune.objectives import parse_objective
from autotune.options import RunOptions
from autotune.results.tables import format_value, text_table


def objective_of(job: Mapping[str, Any]) -> str:
    objectives = job["options"].get("objective") or ["throughput"]
    return ", ".join(objectives)


def budget_of(job: Mapping[str, Any]) -> int:
    return int(job["options"].get("trials", RunOptions.trials))


def state_of(job: Mapping[str, Any], task: Mapping[str, Any], progress: Mapping[str, int]) -> str:
    """``queued``, ``running 12/30 trials (2 agents)``, ``done``, ``failed: why``, ..."""
    state = str(task["state"])
    if state == "running":
        done = progress.get(task["study"])
        trials = f" {done}/{budget_of(job)} trials" if done is not None else ""
        live = len(task["agents"])
        who = f"{live} agent{'s' if live != 1 else ''}" if live else "no live agent: waits for one"
        return f"running{trials} ({who})"
    if state == "failed":
        return f"failed: {task['error']}"
    return state


def tuned_of(task: Mapping[str, Any]) -> TunedConfig | None:
    return TunedConfig.from_dict(task["best"]) if task.get("best") else None


def _speedup(task: Mapping[str, Any]) -> str:
    return f"{task['speedup']:.2f}x" if task.get("speedup") is not None else "-"


def jobs_table(rows: Sequence[Mapping[str, Any]], progress: Mapping[str, int]) -> str:
    """One line per job and class: the state, the verdict and the speedup."""
    if not rows:
        return "no jobs yet: `autotune submit MODEL --storage URL` adds one"
    table: list[tuple[str, ...]] = [
        ("job", "model", "objective", "class", "state", "verdict", "speedup")
    ]
    for job in rows:
        head = (str(job["id"]), str(job["model_name"]), objective_of(job))
        tasks = job["tasks"]
        if job["cancelled"] and not tasks:
            table.append((*head, "-", "cancelled", "-", "-"))
        if not tasks and not job["cancelled"]:
            table.append((*head, "(any)", "queued: no agent has taken it yet", "-", "-"))
        for task in tasks:
            table.append(
                (*head, str(task["class"]), state_of(job, task, progress),
                 str(task["verdict"] or "-"), _speedup(task))
            )  # fmt: skip
            head = ("", "", "")
    return "\n".join(text_table(table))


def _facts(
    job: Mapping[str, Any], task: Mapping[str, Any], progress: Mapping[str, int]
) -> dict[str, str]:
    """One class's column of the side-by-side table."""
    tuned = tuned_of(task)
    prints = task.get("fingerprint") or {}
    facts = {
        "state": state_of(job, task, progress),
        "CPU": f"{prints.get('cpu_model', '?')}, {prints.get('usable_cpus', '?')} CPUs",
        "GPU": str(prints.get("gpu") or "-"),
        "onnxruntime": f"{prints.get('onnxruntime_package', '?')} {prints.get('onnxruntime_version', '?')}",
        "verdict": str(task["verdict"] or "-"),
        "speedup": _speedup(task),
    }
    if tuned is not None:
        objective = parse_objective(tuned.objective)
        facts["tuned"] = format_value(objective, tuned.metrics)
        facts["defaults"] = format_value(objective, tuned.baseline)
        facts["config"] = tuned.config.describe()
    return facts


def job_detail(job: Mapping[str, Any], progress: Mapping[str, int]) -> str:
    """One job: what was submitted, then its classes side by side."""
    lines = [
        f"job {job['id']}: {job['model_name']} (sha256 {job['model_sha256'][:12]}), "
        f"submitted {job['created']:%Y-%m-%d %H:%M} by {job['submitted_by']}"
        + (" - CANCELLED" if job["cancelled"] else ""),
        f"objective: {objective_of(job)}, {budget_of(job)} trials per class",
        "options:   " + (" ".join(_flags(job["options"])) or "(the defaults)"),
        "classes:   "
        + (", ".join(job["classes"]) if job["classes"] else "every class that has an agent"),
        "model:     " + (job["model"].get("url") or "stored in the database"),
    ]
    if not job["tasks"]:
        lines.append("\nno agent has taken it yet")
        return "\n".join(lines)
    columns = {task["class"]: _facts(job, task, progress) for task in job["tasks"]}
    keys = list(dict.fromkeys(k for facts in columns.values() for k in facts))
    table = [("", *columns)] + [(k, *(c.get(k, "-") for c in columns.values())) for k in keys]
    lines += ["", *_side_by_side(table)]
    return "\n".join(lines)


def _side_by_side(rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns (configs and states are text, not figures)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip() for row in rows]


def _flags(options: Mapping[str, Any]) -> list[str]:
    from autotune.options import flag_name, public_options

    said = []
    for name, value in options.items():
        flag = flag_name(name) if name in public_options() else "--" + name.replace("_", "-")
        values = value if isinstance(value, list) else [value]
        said += [
            f"{flag} {v}" if not isinstance(v, bool) else (flag if v else f"--no-{flag[2:]}")
            for v in values
        ]
    return said


def job_json(job: Mapping[str, Any], progress: Mapping[str, int]) -> dict[str, Any]:
    """One job as JSON for scripts (times as ISO text, best.json whole)."""
    out = {
        k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in job.items() if k != "tasks"
    }
    out["tasks"] = [
        {
            **{k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in task.items()},
            "progress": progress.get(task["study"]),
            "summary": state_of(job, task, progress),
        }
        for task in job["tasks"]
    ]
    return out


def job_page(
    job: Mapping[str, Any], progress: Mapping[str, int], reports: Mapping[str, str]
) -> str:
    """The job's classes side by side as an HTML page, linking each class's study report."""
    columns = {task["class"]: _facts(job, task, progress) for task in job["tasks"]}
    keys = list(dict.fromkeys(k for facts in columns.values() for k in facts))
    head = "".join(f"<th>{html.escape(name)}</th>" for name in columns)
    body = "".join(
        f"<tr><th>{html.escape(k)}</th>"
        + "".join(f"<td>{html.escape(c.get(k, '-'))}</td>" for c in columns.values())
        + "</tr>"
        for k in keys
    )
    links = "".join(
        f'<li><a href="{html.escape(link)}">{html.escape(name)}</a>: its study\'s report</li>'
        for name, link in reports.items()
    )
    title = f"job {job['id']}: {job['model_name']}"
    return (
        f"<!doctype html><meta charset=utf-8><title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:left;vertical-align:top}table{border-collapse:collapse}</style>"
        f"<h1>{html.escape(title)}</h1><p>objective: {html.escape(objective_of(job))}; "
        f"one config per kind of machine, each measured there against ONNX Runtime's "
        f"defaults.</p><table><tr><th></th>{head}</tr>{body}</table><ul>{links}</ul>\n"
    )
