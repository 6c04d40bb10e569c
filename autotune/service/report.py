"""``autotune report --job ID``: one model's configs per kind of machine, on one page."""

from __future__ import annotations

from pathlib import Path

from autotune.results.export import write_text_atomic
from autotune.results.page import write_report
from autotune.service import jobs, view
from autotune.service.db import Database
from autotune.study import load_study_view, param_importances


def write_job_report(db: Database, job_id: int, folder: Path) -> Path:
    """FOLDER/index.html with the classes side by side, and FOLDER/CLASS/ with each finished
    class's study report (history, knob importance, batch trade-off)."""
    [job] = jobs.job_rows(db, job_id)
    running = [t["study"] for t in job["tasks"] if t["state"] == "running"]
    progress = jobs.progress_of(db, running)
    links: dict[str, str] = {}
    for task in job["tasks"]:
        if task["state"] != "done":
            continue
        study = task["study"]
        page = write_report(
            load_study_view(db.url, study), param_importances(db.url, study), folder / task["class"]
        )
        links[task["class"]] = str(page.relative_to(folder))
    index = folder / "index.html"
    write_text_atomic(index, view.job_page(job, progress, links))
    return index
