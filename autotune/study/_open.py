"""Opening a study: the storage checked before any work, the study created or resumed, and a
study made for another model, objective, space or kind of machine refused."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from autotune.errors import AutotuneError, UsageError
from autotune.storage import shown
from autotune.study._liveness import GRACE_S, HEARTBEAT_S
from autotune.study._records import optuna_module
from autotune.study._request import TuneRequest
from autotune.study._retry import RetryPolicy, StorageUnavailable, retrying_storage

if TYPE_CHECKING:
    from optuna import Study

CONNECT_TIMEOUT_S = 10  # reaching a database server
SCHEMA_TRIES = 6  # opening a storage while another process creates its tables
# What a process sees when another one creates the same database's tables at the same moment
# (SQLAlchemy's create_all and Optuna's alembic stamp are not safe against that).
_SCHEMA_RACE = ("already exists", "alembic_version", "duplicate key", "database is locked")


def rdb_storage(url: str, **kwargs: Any) -> Any:
    """Optuna's RDB storage for ``url``, retried while another tuner (or ``show``, or the
    dashboard) creates the same new database's tables."""
    optuna = optuna_module()
    import sqlalchemy.exc

    for attempt in range(SCHEMA_TRIES):
        try:
            return optuna.storages.RDBStorage(url, **kwargs)
        except (
            sqlalchemy.exc.DBAPIError
        ) as exc:  # PostgreSQL's DuplicateTable is a ProgrammingError
            raced = any(text in str(exc) for text in _SCHEMA_RACE)
            if not raced or attempt == SCHEMA_TRIES - 1:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def study_attrs(request: TuneRequest) -> dict[str, Any]:
    return {
        "model_path": request.model.path,
        "model_sha256": request.model.sha256,
        "model_size_bytes": request.model.size_bytes,
        "opsets": dict(request.model.opsets),
        "inputs": request.feeds.to_dict(),
        "objective": ",".join(o.name for o in request.all_objectives),
        "space": request.space.name,
        "space_source": request.space.source,
        "batch_sizes": list(request.space.batch_sizes),
        "variants": dict(request.variant_paths),
        "limits": dict(request.limits.bounds),
        "workload": request.workload.to_dict(),
        "environment": dict(request.environment),
    }


def check_storage(url: str, retry_s: float | None = None) -> None:
    """Fail early on a malformed URL or a missing database driver, before anything is written;
    a server that does not answer is waited for up to ``retry_s`` (the retry policy's bound)."""
    import sqlalchemy
    import sqlalchemy.exc

    try:
        postgres = url.startswith("postgresql")
        engine = sqlalchemy.create_engine(
            url, connect_args={"connect_timeout": CONNECT_TIMEOUT_S} if postgres else {}
        )
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        raise UsageError(f"--storage {shown(url)!r} is not a usable database URL: {exc}") from None
    except ImportError as exc:
        raise UsageError(
            f"--storage {shown(url)!r} needs a database driver that is not installed ({exc.name}); "
            "pip install it"
        ) from None
    if engine.dialect.name == "sqlite":
        _check_sqlite_file(url)
    try:
        if engine.dialect.name != "sqlite":  # a server: reach it now, not after the model work

            def connect() -> None:
                with engine.connect():
                    pass

            RetryPolicy(url, retry_s).call(connect)
    except StorageUnavailable:
        raise
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = " ".join(str(getattr(exc, "orig", None) or exc).split())[:300]
        raise AutotuneError(
            f"cannot reach the study storage {shown(url)!r}: {cause}; "
            "check that the database server is up and the URL's host, port, user and database"
        ) from None
    finally:
        engine.dispose()


def sqlite_path(url: str) -> Path | None:
    """The database file of an SQLite URL (None for memory or a URI filename)."""
    from sqlalchemy.engine import make_url

    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database).expanduser().resolve()


def _check_sqlite_file(url: str) -> None:
    """SQLite creates the file but not its folder, and fails late with raw text where it cannot
    write: the folder must exist or be creatable (it is made when the study opens), and be
    writable; say so now, before anything runs."""
    path = sqlite_path(url)
    if path is None:
        return
    if path.is_dir():
        raise UsageError(f"--storage {shown(url)!r}: {path} is a folder, not a database file")
    existing = next(p for p in path.parents if p.exists())
    if not existing.is_dir():
        raise UsageError(
            f"--storage {shown(url)!r}: {existing} is a file, not a folder; give a path in a folder"
        )
    writable = os.access(path, os.R_OK | os.W_OK) if path.exists() else os.access(existing, os.W_OK)
    if not writable:
        what = path if path.exists() else existing
        raise UsageError(
            f"--storage {shown(url)!r}: {what} is not writable by this user; give a path you "
            "can write"
        )


def open_study(request: TuneRequest) -> Study:
    """Create the study or load it; refuse one that was made for another model or objective."""
    optuna = optuna_module()
    import sqlalchemy.exc

    database = sqlite_path(request.storage) if request.storage.startswith("sqlite") else None
    if database is not None:  # SQLite makes the file, not its folder (checked by check_storage)
        database.parent.mkdir(parents=True, exist_ok=True)
    try:
        policy = RetryPolicy(request.storage, request.storage_retry_s)
        storage = retrying_storage(
            policy.call(
                lambda: rdb_storage(
                    request.storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S
                )
            ),
            policy,
        )
        study = optuna.create_study(
            storage=storage,
            study_name=request.study_name,
            directions=[o.direction for o in request.all_objectives],
            load_if_exists=True,
        )
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:
        raise UsageError(
            f"--storage {shown(request.storage)!r} is not a usable database URL: {exc}"
        ) from None
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as exc:
        raise AutotuneError(
            f"cannot open the study storage {shown(request.storage)!r}: {' '.join(str(exc).split())[:300]}"
        ) from None
    existing = study.user_attrs
    if not existing:
        for key, value in study_attrs(request).items():
            study.set_user_attr(key, value)
        return study
    checked = (
        ("model_sha256", "model"),
        ("objective", "objective"),
        ("space", "space"),
        ("batch_sizes", "set of batch sizes"),  # a model's fixed batch, or --batch-sizes
    )
    for key, what in checked:
        theirs, ours = existing.get(key), study_attrs(request)[key]
        if theirs != ours and (key in existing or key != "batch_sizes"):
            raise UsageError(
                f"study {request.study_name!r} was made for another {what} ({theirs!r}, this run "
                f"has {ours!r}); pick a new --study name instead of mixing results"
            )
    theirs = existing.get("workload") or {"concurrency": 1, "shapes": []}
    ours = request.workload.to_dict()
    if theirs != ours:
        raise UsageError(
            f"study {request.study_name!r} was measured under another workload ({_load(theirs)} "
            f"there, {_load(ours)} here); its timings would not be comparable: pick a new --study "
            "name or repeat the study's --concurrency and --dim flags"
        )
    check_fingerprint(existing.get("environment") or {}, request.environment, request.study_name)
    return study


def _load(workload: Mapping[str, Any]) -> str:
    text = f"concurrency {workload.get('concurrency', 1)}"
    shapes = workload.get("shapes") or []
    if shapes:
        text += ", shapes " + " | ".join(
            ",".join(f"{k}={v}" for k, v in p["dims"].items()) for p in shapes
        )
    return text


#: The facts two machines must share for their timings to be comparable in one study.
FINGERPRINT = ("cpu_model", "usable_cpus", "onnxruntime_version", "onnxruntime_package", "gpu")


def check_fingerprint(theirs: Mapping[str, Any], ours: Mapping[str, Any], study: str) -> None:
    """Refuse to add this machine's timings to a study measured on a different machine."""
    differ = [
        f"{key} {theirs.get(key)!r} there, {ours.get(key)!r} here"
        for key in FINGERPRINT
        if key in theirs and key in ours and theirs[key] != ours[key]
    ]
    if differ:
        raise UsageError(
            f"study {study!r} was measured on another kind of machine ({'; '.join(differ)}); "
            "its timings would not be comparable: pick a new --study name"
        )
