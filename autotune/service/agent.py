"""``autotune agent``: serve the job queue on one machine, one task at a time.

The agent registers its class (the machine's fingerprint, named), then loops: claim a task of
its class, fetch and verify the job's model and files, run the tuning as ``autotune run`` would
(into the task's study, under the machine's measuring lock for every trial), store best.json in
the database, and take the next one. A heartbeat thread keeps its row alive and notices a
cancelled job.

Stopping: SIGTERM or Ctrl-C kills the running trial (the study repeats it for whoever resumes),
hands the task back to the queue when no other agent of the class works on it, and exits 0. A
database that goes away is waited for: within a tuning, by the study's retry policy (past its
bound the task is handed back); between tasks, for as long as it takes.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autotune.errors import AutotuneError
from autotune.interrupt import STOP, stop_on_signals
from autotune.machine import environment
from autotune.model import model_sha256, read_model
from autotune.options import options_of_job
from autotune.service import blobs, jobs
from autotune.service.classes import class_name
from autotune.service.db import Database
from autotune.study import StorageUnavailable
from autotune.tuning import run_tuning


@dataclass(frozen=True)
class AgentSettings:
    storage: str
    out: Path
    poll_s: float = 5.0
    storage_retry_s: float = 120.0
    exit_when_idle: bool = False


class Heartbeat(threading.Thread):
    """Writes the agent's heartbeat every ``jobs.HEARTBEAT_S``; a cancelled job stops the run."""

    def __init__(self, db: Database, agent_id: str, say: Callable[[str], None]) -> None:
        super().__init__(name="autotune-agent-heartbeat", daemon=True)
        self.db, self.agent_id, self.say = db, agent_id, say
        self.unwanted = threading.Event()  # the task's run is stopped: it is not wanted
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(jobs.HEARTBEAT_S):
            try:
                why = jobs.heartbeat(self.db, self.agent_id)
            except Exception as exc:  # the database is away: the next beat tries again
                self.say(f"heartbeat not written ({' '.join(str(exc).split())[:120]})")
                continue
            if why and not self.unwanted.is_set():
                self.say(f"{why}: stopping its tuning")
                self.unwanted.set()
                STOP.set()


def fetch_model(db: Database, model: dict[str, Any], sha256: str) -> Path:
    """The job's model in this machine's cache, fetched once and checked against the identity
    it was submitted with (graph and weights); a mismatch refuses the job."""
    entries = [blobs.StoredFile.from_dict(f) for f in model["files"]]
    folder = blobs.cache_dir() / "models" / sha256[:16]
    for _ in range(2):
        blobs.fetch(db, entries, folder, model.get("url"))
        path = folder / entries[0].name
        found = model_sha256(path)
        if found == sha256:
            return path
        shutil.rmtree(folder, ignore_errors=True)  # a stale or damaged cached copy: once more
    raise AutotuneError(
        f"the model fetched is not the one submitted (sha256 {found[:12]}, submitted "
        f"{sha256[:12]}): it was swapped or corrupted; submit the job again"
    )


def fetch_attachments(db: Database, task: jobs.Claimed) -> dict[str, str]:
    """The options that name files, pointing at this machine's fetched copies."""
    values: dict[str, str] = {}
    for option, entry in task.attachments.items():
        stored = blobs.StoredFile.from_dict(entry)
        folder = blobs.cache_dir() / "files" / stored.digest[:16]
        blobs.fetch(db, [stored], folder)
        values[option] = jobs.local_value(option, task.options[option], folder / stored.name)
    return values


class Agent:
    def __init__(self, settings: AgentSettings, say: Callable[[str], None]) -> None:
        self.settings, self.say = settings, say
        self.db = Database(settings.storage, retry_s=settings.storage_retry_s, say=say)
        self.stopping = threading.Event()  # SIGTERM or Ctrl-C: the agent ends

    def serve(self) -> int:
        """Claim and run tasks until stopped (or idle, with ``exit_when_idle``). Exit status."""

        def on_signal(line: str) -> None:
            self.stopping.set()
            self.say("stopping: the running trial is handed back, completed trials are kept")

        with stop_on_signals(on_signal):
            env = environment()
            agent_id, machine_class = jobs.register_agent(self.db, class_name(env), env)
            self.say(
                f"agent {agent_id} of class {machine_class} serving {self.db.shown} "
                f"(results in {self.settings.out})"
            )
            beat = Heartbeat(self.db, agent_id, self.say)
            beat.start()
            try:
                self._loop(agent_id, machine_class, beat)
            finally:
                beat.done.set()
                try:
                    jobs.release(self.db, agent_id, stopped=True)
                except AutotuneError as exc:
                    self.say(f"could not record the stop ({exc}); the heartbeat will tell")
        self.say("agent stopped")
        return 0

    def _loop(self, agent_id: str, machine_class: str, beat: Heartbeat) -> None:
        away = False
        while not self.stopping.is_set():
            try:
                task = jobs.claim(self.db, agent_id, machine_class)
            except StorageUnavailable as exc:
                if not away:
                    self.say(f"{exc}; waiting for it")
                away = True
                self.stopping.wait(self.settings.poll_s)
                continue
            if away:
                self.say("the database is back")
                away = False
            if task is None:
                if self.settings.exit_when_idle:
                    self.say(f"no job waits for class {machine_class}: exiting (--exit-when-idle)")
                    return
                self.stopping.wait(self.settings.poll_s)
                continue
            self._serve_task(task, agent_id)
            if beat.unwanted.is_set() and not self.stopping.is_set():
                beat.unwanted.clear()
                STOP.clear()  # that task's run only was stopped

    def _serve_task(self, task: jobs.Claimed, agent_id: str) -> None:
        """Run one task, then let it go (back to the queue when nobody else works on it)."""
        try:
            self._run_task(task, agent_id)
        finally:
            self._release(agent_id)

    def _run_task(self, task: jobs.Claimed, agent_id: str) -> None:
        label = f"job {task.job_id}"
        self.say(f"{label}: {task.model_name} for class {task.machine_class}, study {task.study}")

        def end(state: str, **result: Any) -> None:
            """Record the end, waiting out the database while holding a result."""
            while True:
                try:
                    stored = jobs.finish(self.db, task, agent_id, state=state, **result)
                    break
                except StorageUnavailable as exc:
                    if self.stopping.is_set():
                        self.say(f"{label}: not recorded ({exc}); the next agent repeats it")
                        return
                    self.say(f"{label}: {exc}; holding its result until the database is back")
                    self.stopping.wait(self.settings.poll_s)
            if not stored:
                self.say(f"{label}: already ended by another agent; its result stands")

        try:
            model = fetch_model(self.db, dict(task.model), task.model_sha256)
            values = {**task.options, **fetch_attachments(self.db, task)}
            options = options_of_job(
                model,
                values,
                storage=self.settings.storage,
                study=task.study,
                out=self.settings.out,
                storage_retry_s=self.settings.storage_retry_s,
            )
        except StorageUnavailable as exc:
            self.say(f"{label}: {exc}; handing it back")
            return
        except AutotuneError as exc:
            self.say(f"{label} refused: {exc}")
            end("failed", error=f"refused by {agent_id}: {exc}")
            return
        try:
            outcome = run_tuning(options, echo=lambda line: self.say(f"[{label}] {line}"))
        except KeyboardInterrupt:
            return
        except StorageUnavailable as exc:
            self.say(f"{label}: {exc}; handing it back")
            return
        except AutotuneError as exc:
            self.say(f"{label} failed: {exc}")
            end("failed", error=str(exc))
            return
        result = outcome.result
        if result.interrupted:
            self.say(f"{label}: {'handed back' if self.stopping.is_set() else 'stopped'}")
        elif result.failed_out:
            end("failed", error=result.stop_reason)
        else:
            tuned = outcome.tuned
            self.say(outcome.table)
            variant = Path(tuned.model_path)
            variant_files = blobs.model_files(read_model(variant)) if variant != model else []
            end("done", best=tuned.to_dict(), variant_files=variant_files)
            self.say(
                f"{label}: done for class {task.machine_class}: {tuned.speedup:.2f}x "
                f"({'confirmed' if tuned.confirmed else 'unconfirmed'}); best.json stored"
            )

    def _release(self, agent_id: str) -> None:
        try:
            jobs.release(self.db, agent_id)
        except AutotuneError as exc:
            self.say(f"could not release the task ({exc}); it is picked up once the heartbeat ages")
