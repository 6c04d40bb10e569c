"""Files a job needs on every machine: stored once by their sha256, fetched and verified.

A model is its graph file plus the external weights files beside it. Each file is stored in
``autotune_files``/``autotune_chunks`` under its sha256, in chunks of ``CHUNK_BYTES`` (a
PostgreSQL value holds at most 1 GB, and a chunk at a time keeps memory flat), once however
many jobs use it. An agent writes what it fetches into a folder of its own cache, checks every
file's sha256 as it arrives, and only then moves the folder into place: a half-fetched model is
never used. Models too large for the database stay at a URL (``file://`` on a shared mount, or
``http(s)://``) and are fetched the same way, checked against the model's identity.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from autotune.errors import AutotuneError, UsageError
from autotune.model import ModelInfo
from autotune.service.db import Database, chunks, files

CHUNK_BYTES = 8 * 2**20
#: How long one download from a model URL may take.
URL_TIMEOUT_S = 600


@dataclass(frozen=True)
class StoredFile:
    """One file of a job: its name (relative to the model's folder) and content."""

    name: str
    digest: str
    size: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "digest": self.digest, "size": self.size}

    @staticmethod
    def from_dict(data: dict[str, Any]) -> StoredFile:
        return StoredFile(str(data["name"]), str(data["digest"]), int(data["size"]))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while block := source.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def model_files(model: ModelInfo) -> list[tuple[str, Path]]:
    """The model's graph and its external weights files, each with its name as the graph
    refers to it (relative to the graph's folder)."""
    path = Path(model.path)
    return [(path.name, path)] + [
        (os.path.relpath(external, path.parent), Path(external)) for external in model.external
    ]


def describe(named: Sequence[tuple[str, Path]]) -> list[StoredFile]:
    return [StoredFile(name, sha256_of(path), path.stat().st_size) for name, path in named]


def store(connection: sa.Connection, named: Sequence[tuple[str, Path]]) -> list[StoredFile]:
    """Put each file in the database (inside the caller's transaction: a job and its files land
    together or not at all); a file already stored is not sent again."""
    stored = describe(named)
    for entry, (_, path) in zip(stored, named, strict=True):
        present = connection.execute(
            sa.select(files.c.digest).where(files.c.digest == entry.digest)
        ).first()
        if present is not None:
            continue
        count = 0
        with path.open("rb") as source:
            while block := source.read(CHUNK_BYTES):
                connection.execute(
                    sa.insert(chunks).values(digest=entry.digest, seq=count, data=block)
                )
                count += 1
        connection.execute(
            sa.insert(files).values(digest=entry.digest, size=entry.size, chunks=count)
        )
    return stored


def cache_dir() -> Path:
    """Where fetched models and files live on this machine (``AUTOTUNE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/autotune/service`` or ``~/.cache/autotune/service``)."""
    explicit = os.environ.get("AUTOTUNE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autotune" / "service"


def fetch(
    db: Database, entries: Sequence[StoredFile], folder: Path, url: str | None = None
) -> Path:
    """The files in ``folder`` (made whole before it appears), each checked against its
    sha256; fetched from ``url``'s folder instead of the database when the job names one.
    A folder already fetched is used as it is. Returns ``folder``."""
    if folder.is_dir():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        for entry in entries:
            target = partial / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if url is None:
                _from_database(db, entry, target)
            else:
                _from_url(_sibling(url, entry.name), target)
            got = sha256_of(target)
            if got != entry.digest:
                raise AutotuneError(
                    f"{entry.name} arrived with sha256 {got[:12]}, not the {entry.digest[:12]} it "
                    "was submitted with: the stored copy was swapped or corrupted; submit the "
                    "job again"
                )
        partial.chmod(0o755 & ~_umask())  # mkdtemp made it 0700
        try:
            partial.rename(folder)
        except OSError:  # another process of this machine fetched it first
            if not folder.is_dir():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _from_database(db: Database, entry: StoredFile, target: Path) -> None:
    count = db.run(
        lambda c: c.execute(
            sa.select(files.c.chunks).where(files.c.digest == entry.digest)
        ).scalar_one_or_none()
    )
    if count is None:
        raise AutotuneError(f"{entry.name} ({entry.digest[:12]}) is missing from the database")

    def chunk(seq: int) -> bytes:
        query = sa.select(chunks.c.data).where(chunks.c.digest == entry.digest, chunks.c.seq == seq)
        return bytes(db.run(lambda c: c.execute(query).scalar_one()))

    with target.open("wb") as sink:
        for seq in range(count):
            sink.write(chunk(seq))


def _sibling(url: str, name: str) -> str:
    """The URL of ``name`` beside the model ``url`` names (its external weights)."""
    base = url.rsplit("/", 1)[0]
    return f"{base}/{urllib.parse.quote(name)}"


def _from_url(url: str, target: Path) -> None:
    try:
        with (
            urllib.request.urlopen(url, timeout=URL_TIMEOUT_S) as response,
            target.open("wb") as sink,
        ):
            shutil.copyfileobj(response, sink, CHUNK_BYTES)
    except (OSError, ValueError) as exc:
        raise AutotuneError(f"cannot fetch {url}: {exc}") from None


def check_url(url: str) -> str:
    """A model URL every agent can fetch: ``file://`` (a shared mount) or ``http(s)://``."""
    scheme = urllib.parse.urlparse(url).scheme
    if scheme not in ("file", "http", "https"):
        raise UsageError(
            f"--model-url {url!r}: give file:///shared/path/model.onnx or http(s)://.../model.onnx"
        )
    return url
