"""The right config at deploy time: the one measured on this machine's class.

``fetch_config`` reads a job's stored best.json for a class (``auto``: this machine's), fetches
the model it runs (the job's model, or the variant the agent made) into the local cache,
checks its identity, and writes a best.json that points at the local copy. ``load_session``
and ``load_pool`` take ``job=`` and ``storage=`` for it, and a best.json path as before.
"""

from __future__ import annotations

import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from autotune.config import TunedConfig
from autotune.errors import AutotuneError, UsageError
from autotune.measure import session as sessions
from autotune.results.export import write_json_atomic
from autotune.service import blobs, jobs
from autotune.service.agent import fetch_model
from autotune.service.classes import class_name, closest, differences, fingerprint
from autotune.service.db import Database

if TYPE_CHECKING:
    import onnxruntime as ort


def resolve_class(machine_class: str | None) -> str:
    return class_name() if machine_class in (None, "", "auto") else str(machine_class)


def fetch_config(
    db: Database, job_id: int, machine_class: str | None = "auto"
) -> tuple[TunedConfig, Path]:
    """The job's tuned config for the class and the local best.json that names the fetched
    model; raises with the closest measured class when this one has none."""
    wanted = resolve_class(machine_class)
    row = jobs.task_result(db, job_id, wanted)
    if row is None:
        raise AutotuneError(no_config_message(db, job_id, wanted, machine_class))
    tuned = TunedConfig.from_dict(row["best"])
    if row["variant"]:
        model = fetch_model(db, {"files": row["variant"]}, tuned.model_sha256)
    else:
        model = fetch_model(db, row["model"], row["model_sha256"])
    local = replace(tuned, model_path=str(model))
    path = blobs.cache_dir() / "jobs" / jobs.study_name(job_id, wanted) / "best.json"
    write_json_atomic(path, local.to_dict())
    return local, path


def no_config_message(db: Database, job_id: int, wanted: str, asked: str | None) -> str:
    """Why there is no config, and the nearest one there is."""
    whose = "this machine's class" if asked in (None, "", "auto") else "class"
    measured = jobs.done_classes(db, job_id)
    said = f"job {job_id} has no config measured for {whose} {wanted}"
    if not measured:
        return f"{said}, nor for any other yet: `autotune jobs {job_id}` shows where it stands"
    prints = jobs.class_fingerprints(db)
    here = prints.get(wanted) or fingerprint()
    best = closest(here, {name: prints.get(name) or {} for name in measured})
    assert best is not None
    unlike = "; ".join(differences(here, prints.get(best) or {})[:3]) or "same facts"
    return (
        f"{said}; measured for {', '.join(measured)}; the closest is {best} ({unlike}): "
        f"pass --class {best} (machine_class={best!r}) to take it anyway, or run `autotune "
        "agent` on a machine of this class"
    )


def _open(storage: str | None, retry_s: float = 120.0) -> Database:
    return Database(
        storage or "", retry_s=retry_s, say=lambda line: print(line, file=sys.stderr, flush=True)
    )


def _source(
    path: str | os.PathLike[str] | None,
    job: int | None,
    storage: str | None,
    machine_class: str | None,
    verify: bool,
    model_path: str | os.PathLike[str] | None,
) -> tuple[Path, bool]:
    """The best.json to load, and whether to check the model's identity on loading: a job's
    own model was checked by its fetch just now, a ``model_path`` given instead was not."""
    if (path is None) == (job is None):
        raise UsageError("give a best.json path, or job= and storage= (not both)")
    if job is None:
        assert path is not None
        return Path(path), verify
    db = _open(storage)
    try:
        return fetch_config(db, job, machine_class)[1], verify and model_path is not None
    finally:
        db.close()


def load_session(
    path: str | os.PathLike[str] | None = None,
    *,
    job: int | None = None,
    storage: str | None = None,
    machine_class: str | None = "auto",
    model_path: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> ort.InferenceSession:
    """A ready ``InferenceSession`` from a best.json, or from a submitted job's config for this
    machine's class (``job=ID, storage=URL``; ``machine_class`` names another class).
    ``model_path`` and ``verify`` are as for a best.json (``autotune.measure.session``).

    Example:
        >>> session = autotune.load_session(job=12, storage="postgresql://tuner@db/autotune")
    """
    source, check = _source(path, job, storage, machine_class, verify, model_path)
    return sessions.load_session(source, model_path=model_path, verify=check)


def load_pool(
    path: str | os.PathLike[str] | None = None,
    *,
    job: int | None = None,
    storage: str | None = None,
    machine_class: str | None = "auto",
    model_path: str | os.PathLike[str] | None = None,
    verify: bool = True,
) -> sessions.SessionPool:
    """:func:`load_session`'s pool: the sessions, server threads and batcher of the config."""
    source, check = _source(path, job, storage, machine_class, verify, model_path)
    return sessions.load_pool(source, model_path=model_path, verify=check)
