"""The service's tables, beside Optuna's in the same PostgreSQL database.

- ``autotune_files`` and ``autotune_chunks``: content-addressed files (models, their external
  weights, a job's input data), stored once by sha256 in chunks.
- ``autotune_jobs``: what was submitted: the model's files and identity, the run options, the
  classes of machine that must serve it (none: every class that has an agent).
- ``autotune_tasks``: one job on one class of machine: its state, study and result (best.json).
- ``autotune_agents``: the agents, their class, heartbeat and the job they work on.
- ``autotune_classes``: each class name with the fingerprint it stands for.

Every call goes through :class:`Database`, which retries transient failures (a restart, a
network blip) with the tuner's own policy. Times are the database server's, so machines whose
clocks disagree still agree on whose heartbeat is stale.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import sqlalchemy as sa

from autotune.errors import UsageError
from autotune.storage import shown, storage_url
from autotune.study import RetryPolicy

T = TypeVar("T")

metadata = sa.MetaData()

files = sa.Table(
    "autotune_files",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),  # sha256 of the content
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("created", sa.DateTime, server_default=sa.func.now(), nullable=False),
)
chunks = sa.Table(
    "autotune_chunks",
    metadata,
    sa.Column("digest", sa.String(64), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
jobs = sa.Table(
    "autotune_jobs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("created", sa.DateTime, server_default=sa.func.now(), nullable=False),
    sa.Column("submitted_by", sa.Text, nullable=False),
    sa.Column("model_name", sa.Text, nullable=False),
    sa.Column("model_sha256", sa.String(64), nullable=False),
    # {"files": [{"name", "digest", "size"}], "url": str | None}: in the database, or at a URL
    sa.Column("model", sa.JSON, nullable=False),
    sa.Column("options", sa.JSON, nullable=False),  # options.job_options
    sa.Column("attachments", sa.JSON, nullable=False),  # option -> {"name", "digest", "size"}
    sa.Column(
        "classes", sa.JSON(none_as_null=True), nullable=True
    ),  # None: every class with an agent
    sa.Column("cancelled", sa.Boolean, nullable=False, server_default=sa.false()),
)
tasks = sa.Table(
    "autotune_tasks",
    metadata,
    sa.Column("job_id", sa.Integer, sa.ForeignKey("autotune_jobs.id"), primary_key=True),
    sa.Column("class", sa.Text, primary_key=True),
    sa.Column("state", sa.Text, nullable=False),  # queued | running | done | failed | cancelled
    sa.Column("study", sa.Text, nullable=False),
    sa.Column("created", sa.DateTime, server_default=sa.func.now(), nullable=False),
    sa.Column("started", sa.DateTime, nullable=True),
    sa.Column("finished", sa.DateTime, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("best", sa.JSON(none_as_null=True), nullable=True),  # best.json as the agent wrote it
    # the variant's files when the config runs a variant the agent made (else None)
    sa.Column("variant", sa.JSON(none_as_null=True), nullable=True),
    sa.Column("speedup", sa.Float, nullable=True),
    sa.Column("verdict", sa.Text, nullable=True),  # winner | no gain | too noisy | unconfirmed
    sa.Column("finished_by", sa.Text, nullable=True),
)
agents = sa.Table(
    "autotune_agents",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),  # host:pid:random
    sa.Column("class", sa.Text, nullable=False),
    sa.Column("host", sa.Text, nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("started", sa.DateTime, server_default=sa.func.now(), nullable=False),
    sa.Column("heartbeat", sa.DateTime, server_default=sa.func.now(), nullable=False),
    sa.Column("state", sa.Text, nullable=False),  # idle | working | stopped
    sa.Column("job_id", sa.Integer, nullable=True),
)
classes = sa.Table(
    "autotune_classes",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("fingerprint", sa.JSON, nullable=False),
    sa.Column("first_seen", sa.DateTime, server_default=sa.func.now(), nullable=False),
)

#: How long a connection attempt may take before it counts as a failure to retry.
CONNECT_TIMEOUT_S = 10
#: What a schema created by two agents at once says on the loser's side.
_SCHEMA_RACE = ("already exists", "duplicate key", "pg_type_typname_nsp_index")


class Database:
    """The service's database: an engine and the retry policy every call runs under."""

    def __init__(self, url: str, *, retry_s: float, say: Callable[[str], None]) -> None:
        self.url = require_postgres(url)
        self.shown = shown(self.url)
        self.engine = sa.create_engine(
            self.url,
            connect_args={"connect_timeout": CONNECT_TIMEOUT_S},
            pool_pre_ping=True,
        )
        self.policy = RetryPolicy(self.url, retry_s, say)
        self._schema = False

    def run(self, action: Callable[[sa.Connection], T]) -> T:
        """``action(connection)`` in one transaction, retried whole on a transient failure."""
        if not self._schema:
            self.policy.call(self._create_schema)
            self._schema = True

        def transaction() -> T:
            with self.engine.begin() as connection:
                return action(connection)

        return self.policy.call(transaction)

    def _create_schema(self) -> None:
        try:
            metadata.create_all(self.engine)
        except sa.exc.DBAPIError as exc:
            if not any(marker in str(exc) for marker in _SCHEMA_RACE):
                raise
            metadata.create_all(self.engine)  # the other creator finished: nothing left to do

    def close(self) -> None:
        self.engine.dispose()


def require_postgres(url: str | None) -> str:
    """The SQLAlchemy URL of ``--storage``, which must be PostgreSQL: every machine of the
    fleet reaches it, and its row locks keep the queue safe."""
    if not url:
        raise UsageError(
            "the service keeps its jobs in a database every machine reaches: give "
            "--storage postgresql://USER:PASSWORD@HOST/DB"
        )
    resolved = storage_url(url, Path())  # the folder is for SQLite's default only
    if not resolved.startswith("postgresql"):
        raise UsageError(
            f"--storage {shown(url)!r}: the service needs PostgreSQL (its row locks keep the "
            "queue safe across machines); give --storage postgresql://USER:PASSWORD@HOST/DB"
        )
    try:
        sa.engine.make_url(resolved)
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise UsageError(f"--storage {shown(url)!r} is not a usable database URL: {exc}") from None
    return resolved
