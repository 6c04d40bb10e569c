"""The job queue: submit, claim, heartbeat, finish, cancel, list.

A job is one model with one set of run options. It is served once per class of machine: one
*task* per (job, class), one study per task, named ``job<ID>-<CLASS>``. An agent claims a task
of its own class in one transaction that locks the task row with ``FOR UPDATE SKIP LOCKED``:
two agents claiming at once never block each other, and never both start one queued task. An
idle agent takes a queued task first; with none queued, the running task with the fewest live
agents (one whose agents died, first), which it joins. Agents that join one task share its
study, as tuners do (one budget, one baseline).

A live agent is one whose heartbeat (written every ``HEARTBEAT_S`` by the database's clock) is
younger than ``STALE_S``. The trials a dead agent left running are failed by the study's own
liveness check when the next agent opens the study.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert

from autotune.errors import UsageError
from autotune.model import ModelInfo
from autotune.options import FILE_OPTIONS, RunOptions, job_options
from autotune.service import blobs
from autotune.service.classes import fingerprint
from autotune.service.db import Database, agents, classes, jobs, tasks

#: Seconds between an agent's heartbeats (``AUTOTUNE_AGENT_HEARTBEAT_S`` overrides it).
HEARTBEAT_S = float(os.environ.get("AUTOTUNE_AGENT_HEARTBEAT_S", "10"))
#: An agent whose heartbeat is older than this is taken for dead.
STALE_S = 6 * HEARTBEAT_S


def _live() -> sa.ColumnElement[bool]:
    return sa.and_(
        agents.c.state == "working",
        agents.c.heartbeat > sa.func.now() - sa.text(f"interval '{STALE_S:g} seconds'"),
    )


# --- submit ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submission:
    """A checked job, ready to store: the options (checked as ``autotune run`` checks them)."""

    options: RunOptions
    model: ModelInfo  # as check_options read it: its identity and external weights files
    classes: tuple[str, ...] | None
    model_url: str | None


def checked_submission(
    model: Path, values: Mapping[str, Any], classes: str | None, model_url: str | None
) -> Submission:
    """The job as ``autotune submit`` takes it, checked as ``autotune run`` checks its options
    (those that hold on any machine: the machine's CPUs and providers are the agent's to
    check), with the same one-line errors."""
    from autotune.tuning import check_options

    options = RunOptions(model=model, **values)
    checked = check_options(options, space_name="cpu" if options.space == "auto" else None)
    names = tuple(dict.fromkeys(n.strip() for n in (classes or "").split(",") if n.strip()))
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z0-9_.:-]+", n)]
    if bad:
        raise UsageError(
            f"--classes {','.join(bad)}: a class name holds only letters, digits and _ . : - "
            "(`autotune agent` prints its machine's)"
        )
    url = blobs.check_url(model_url) if model_url else None
    return Submission(options, checked.model, names or None, url)


def submit(db: Database, submission: Submission) -> int:
    """Store the job, its model's files (unless they stay at a URL) and the files its options
    name, in one transaction; the job's id."""
    options, model = submission.options, submission.model
    named = blobs.model_files(model)
    attached = _attachments(options)
    values = job_options(options)
    for name, (file_name, _) in attached.items():
        values[name] = _attached_value(name, values[name], file_name)
    who = f"{getpass.getuser()}@{socket.gethostname()}"

    def store(connection: sa.Connection) -> int:
        stored = blobs.describe(named) if submission.model_url else blobs.store(connection, named)
        files = blobs.store(connection, list(attached.values()))
        row = {
            "submitted_by": who,
            "model_name": options.model.name,
            "model_sha256": model.sha256,
            "model": {"files": [f.to_dict() for f in stored], "url": submission.model_url},
            "options": values,
            "attachments": {
                name: entry.to_dict() for name, entry in zip(attached, files, strict=True)
            },
            "classes": list(submission.classes) if submission.classes else None,
        }
        job_id = int(
            connection.execute(sa.insert(jobs).values(**row).returning(jobs.c.id)).scalar_one()
        )
        for name in submission.classes or ():
            connection.execute(
                sa.insert(tasks).values(job_id=job_id, **{"class": name}, state="queued",
                                        study=study_name(job_id, name))
            )  # fmt: skip
        return job_id

    return db.run(store)


def _attachments(options: RunOptions) -> dict[str, tuple[str, Path]]:
    """The local files the options name (input data, calibration, a trace, a space file, an
    accuracy check), which the job must carry to machines that do not have them."""
    found: dict[str, tuple[str, Path]] = {}
    for name in FILE_OPTIONS:
        value = getattr(options, name)
        if value is None:
            continue
        text = str(value)
        if name == "accuracy_fn":
            text = text.rpartition(":")[0]
            if not text.endswith(".py"):
                continue  # an importable module: the agents' environment provides it
        elif name == "space" and not text.endswith((".yaml", ".yml")):
            continue  # a built-in space, by name
        path = Path(text).expanduser()
        if not path.is_file():
            raise UsageError(f"--{name.replace('_', '-')} file not found: {path}")
        found[name] = (path.name, path)
    return found


def _attached_value(option: str, value: str, file_name: str) -> str:
    """The option's value with its path replaced by the file's name (an agent puts its copy's
    path in its place): ``checks.py:fn`` keeps its function."""
    return f"{file_name}:{value.rpartition(':')[2]}" if option == "accuracy_fn" else file_name


def local_value(option: str, recorded: str, path: Path) -> str:
    """An attached option's value on an agent: its fetched copy at ``path``."""
    return f"{path}:{recorded.rpartition(':')[2]}" if option == "accuracy_fn" else str(path)


def study_name(job_id: int, machine_class: str) -> str:
    return f"job{job_id}-{machine_class}"


# --- agents ----------------------------------------------------------------------------------


def register_agent(db: Database, name: str, env: Mapping[str, Any]) -> tuple[str, str]:
    """Record this agent and its class; (agent id, class name). A class name already taken by
    another fingerprint (a CPU whose name hides other features) gets the fingerprint's hash."""
    facts = fingerprint(env)
    agent_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def register(connection: sa.Connection) -> str:
        connection.execute(
            pg_insert(classes).values(name=name, fingerprint=facts).on_conflict_do_nothing()
        )
        stored = connection.execute(
            sa.select(classes.c.fingerprint).where(classes.c.name == name)
        ).scalar_one()
        chosen = name
        if stored != facts and not os.environ.get("AUTOTUNE_CLASS_FOR_TESTS"):
            digest = hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:6]
            chosen = f"{name}-{digest}"
            connection.execute(
                pg_insert(classes).values(name=chosen, fingerprint=facts).on_conflict_do_nothing()
            )
        connection.execute(
            sa.insert(agents).values(
                id=agent_id, **{"class": chosen}, host=socket.gethostname(), pid=os.getpid(),
                state="idle",
            )
        )  # fmt: skip
        return chosen

    return agent_id, db.run(register)


@dataclass(frozen=True)
class Claimed:
    """A task an agent works on: the job as submitted and the task's study."""

    job_id: int
    machine_class: str
    study: str
    model_name: str
    model_sha256: str
    model: Mapping[str, Any]
    options: Mapping[str, Any]
    attachments: Mapping[str, Any]


def claim(db: Database, agent_id: str, machine_class: str) -> Claimed | None:
    """The next task of ``machine_class`` for this agent, marked running; None: no work."""

    def take(connection: sa.Connection) -> Claimed | None:
        _open_tasks_for(connection, machine_class)
        live = (
            sa.select(sa.func.count())
            .where(
                agents.c.job_id == tasks.c.job_id, agents.c["class"] == tasks.c["class"], _live()
            )
            .scalar_subquery()
        )

        def first(state: str, *order: Any) -> Any:
            # The state is in the WHERE clause, which PostgreSQL checks again on the row it
            # locks: a queued row another agent claimed a moment ago is passed over, not taken.
            return connection.execute(
                sa.select(tasks.c.job_id, tasks.c.study)
                .join(jobs, jobs.c.id == tasks.c.job_id)
                .where(
                    tasks.c["class"] == machine_class,
                    tasks.c.state == state,
                    jobs.c.cancelled.is_(False),
                )
                .order_by(*order, tasks.c.job_id)
                .limit(1)
                .with_for_update(of=tasks, skip_locked=True)
            ).first()

        # A queued task first; else a running one with the fewest live agents (none: its
        # agents died; it is picked up), which this agent joins.
        row = first("queued") or first("running", live)
        if row is None:
            return None
        here = sa.and_(tasks.c.job_id == row.job_id, tasks.c["class"] == machine_class)
        connection.execute(
            sa.update(tasks)
            .where(here)
            .values(state="running", started=sa.func.coalesce(tasks.c.started, sa.func.now()))
        )
        connection.execute(
            sa.update(agents)
            .where(agents.c.id == agent_id)
            .values(state="working", job_id=row.job_id, heartbeat=sa.func.now())
        )
        job = connection.execute(sa.select(jobs).where(jobs.c.id == row.job_id)).one()
        return Claimed(
            job.id, machine_class, row.study, job.model_name, job.model_sha256, job.model,
            job.options, job.attachments,
        )  # fmt: skip

    return db.run(take)


def _open_tasks_for(connection: sa.Connection, machine_class: str) -> None:
    """A queued task of this class for every job that any class may serve and that has none."""
    pending = connection.execute(
        sa.select(jobs.c.id).where(
            jobs.c.classes.is_(None),
            jobs.c.cancelled.is_(False),
            ~sa.exists().where(tasks.c.job_id == jobs.c.id, tasks.c["class"] == machine_class),
        )
    ).scalars()
    for job_id in pending:
        connection.execute(
            pg_insert(tasks).values(
                job_id=job_id, **{"class": machine_class}, state="queued",
                study=study_name(job_id, machine_class),
            ).on_conflict_do_nothing()
        )  # fmt: skip


def heartbeat(db: Database, agent_id: str) -> str | None:
    """Say this agent is alive; why its task is no longer wanted, if it is not (None: carry
    on). Only a cancel stops a run: a task another agent of the class finished may still be
    measuring a trial that counts toward the study's budget, and its result is simply kept
    back (:func:`finish` says the first one stands)."""

    def beat(connection: sa.Connection) -> str | None:
        row = connection.execute(
            sa.update(agents)
            .where(agents.c.id == agent_id)
            .values(heartbeat=sa.func.now())
            .returning(agents.c.job_id, agents.c["class"])
        ).first()
        if row is None or row.job_id is None:
            return None
        state = connection.execute(
            sa.select(tasks.c.state).where(tasks.c.job_id == row.job_id, tasks.c["class"] == row[1])
        ).scalar_one_or_none()
        return "the job was cancelled" if state == "cancelled" else None

    return db.run(beat)


def release(db: Database, agent_id: str, *, stopped: bool = False) -> None:
    """The agent is done with its task (or stops): a running task no live agent works on any
    more goes back to the queue for the next agent of its class."""

    def let_go(connection: sa.Connection) -> None:
        row = connection.execute(
            sa.select(agents.c.job_id, agents.c["class"]).where(agents.c.id == agent_id)
        ).first()
        connection.execute(
            sa.update(agents)
            .where(agents.c.id == agent_id)
            .values(job_id=None, state="stopped" if stopped else "idle")
        )
        if row is None or row.job_id is None:
            return
        others = connection.execute(
            sa.select(sa.func.count()).where(
                agents.c.job_id == row.job_id, agents.c["class"] == row[1], _live()
            )
        ).scalar_one()
        if not others:
            connection.execute(
                sa.update(tasks).where(
                    tasks.c.job_id == row.job_id, tasks.c["class"] == row[1],
                    tasks.c.state == "running",
                ).values(state="queued")
            )  # fmt: skip

    db.run(let_go)


def finish(
    db: Database,
    task: Claimed,
    agent_id: str,
    *,
    state: str,
    best: Mapping[str, Any] | None = None,
    variant_files: Sequence[tuple[str, Path]] = (),
    error: str | None = None,
) -> bool:
    """Record the task's end (done with its best.json, failed with the reason, cancelled);
    False when another agent of the class had already finished it (its result stands)."""

    def record(connection: sa.Connection) -> bool:
        here = sa.and_(tasks.c.job_id == task.job_id, tasks.c["class"] == task.machine_class)
        current = connection.execute(
            sa.select(tasks.c.state).where(here).with_for_update()
        ).scalar_one()
        if current in ("done", "failed", "cancelled"):
            return False
        stored = blobs.store(connection, variant_files) if variant_files else None
        confirmation = (best or {}).get("confirmation") or {}
        connection.execute(
            sa.update(tasks).where(here).values(
                state=state,
                finished=sa.func.now(),
                best=best,
                variant=[f.to_dict() for f in stored] if stored else None,
                speedup=(best or {}).get("speedup"),
                verdict=(confirmation.get("kind") or "unconfirmed") if best else None,
                error=error,
                finished_by=agent_id,
            )
        )  # fmt: skip
        return True

    return db.run(record)


# --- reading ---------------------------------------------------------------------------------


def cancel(db: Database, job_id: int) -> int:
    """Withdraw a job: its queued tasks end as cancelled, agents on running ones stop at their
    next heartbeat. The number of tasks that were still to do."""

    def withdraw(connection: sa.Connection) -> int:
        found = connection.execute(
            sa.update(jobs).where(jobs.c.id == job_id).values(cancelled=True).returning(jobs.c.id)
        ).first()
        if found is None:
            raise UsageError(f"no job {job_id} in {db.shown}: `autotune jobs` lists them")
        return connection.execute(
            sa.update(tasks)
            .where(tasks.c.job_id == job_id, tasks.c.state.in_(("queued", "running")))
            .values(state="cancelled", finished=sa.func.now())
        ).rowcount

    return db.run(withdraw)


def job_rows(db: Database, job_id: int | None = None) -> list[dict[str, Any]]:
    """Jobs (all, or one), each with its tasks and their live agents, as plain data."""

    def read(connection: sa.Connection) -> list[dict[str, Any]]:
        query = sa.select(jobs).order_by(jobs.c.id)
        if job_id is not None:
            query = query.where(jobs.c.id == job_id)
        found = [dict(row._mapping) for row in connection.execute(query)]
        if job_id is not None and not found:
            raise UsageError(f"no job {job_id} in {db.shown}: `autotune jobs` lists them")
        ids = [j["id"] for j in found]
        all_tasks = [
            dict(row._mapping)
            for row in connection.execute(
                sa.select(tasks).where(tasks.c.job_id.in_(ids)).order_by(tasks.c["class"])
            )
        ]
        live = connection.execute(
            sa.select(agents.c.id, agents.c.job_id, agents.c["class"]).where(
                agents.c.job_id.in_(ids), _live()
            )
        ).all()
        prints = dict(connection.execute(sa.select(classes.c.name, classes.c.fingerprint)).all())
        for job in found:
            job["tasks"] = [t for t in all_tasks if t["job_id"] == job["id"]]
            for task in job["tasks"]:
                task["agents"] = [
                    a.id for a in live if a.job_id == job["id"] and a[2] == task["class"]
                ]
                task["fingerprint"] = prints.get(task["class"])
        return found

    return db.run(read)


def class_fingerprints(db: Database) -> dict[str, Any]:
    return dict(db.run(lambda c: c.execute(sa.select(classes.c.name, classes.c.fingerprint)).all()))


def task_result(db: Database, job_id: int, machine_class: str) -> dict[str, Any] | None:
    """A task's row when it ended with a config (done), else None."""

    def read(connection: sa.Connection) -> dict[str, Any] | None:
        if connection.execute(sa.select(jobs.c.id).where(jobs.c.id == job_id)).first() is None:
            raise UsageError(f"no job {job_id} in {db.shown}: `autotune jobs` lists them")
        row = connection.execute(
            sa.select(tasks, jobs.c.model, jobs.c.model_sha256)
            .join(jobs, jobs.c.id == tasks.c.job_id)
            .where(
                tasks.c.job_id == job_id, tasks.c["class"] == machine_class, tasks.c.state == "done"
            )
        ).first()
        return dict(row._mapping) if row is not None else None

    return db.run(read)


def done_classes(db: Database, job_id: int) -> list[str]:
    return list(
        db.run(
            lambda c: (
                c.execute(
                    sa.select(tasks.c["class"]).where(
                        tasks.c.job_id == job_id, tasks.c.state == "done"
                    )
                )
                .scalars()
                .all()
            )
        )
    )


def progress_of(db: Database, studies: Sequence[str]) -> dict[str, int]:
    """The finished trials of each running task's study (as the tuner counts them)."""
    from autotune.study import studies_progress

    return studies_progress(db.url, list(studies)) if studies else {}
