"""The queue's guarantees on a real PostgreSQL server, without tuning anything: claims from
many agents at once, content-addressed files, class names and the options a job carries."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import onnx
import pytest
import sqlalchemy as sa

from autotune.errors import AutotuneError, UsageError
from autotune.machine import environment
from autotune.model import read_model
from autotune.options import RunOptions, job_options, options_of_job
from autotune.service import blobs, jobs
from autotune.service.agent import fetch_model
from autotune.service.classes import class_name, closest
from autotune.service.db import Database, chunks, require_postgres, tasks


def database(pg_url: str) -> Database:
    return Database(pg_url, retry_s=10, say=lambda line: None)


def test_agents_claiming_at_once_take_distinct_jobs_then_join(pg_url: str, magika: Path) -> None:
    """Four agents of one class claim at the same moment, each over its own connection: four
    queued jobs go to four agents (a row locked by one is skipped by the others, and a claimed
    one has a live agent); a fifth agent then joins the running job with the fewest agents."""
    db = database(pg_url)
    submission = jobs.checked_submission(magika, {"trials": 2}, None, None)
    ids = [jobs.submit(db, submission) for _ in range(4)]
    env = environment()
    agents = [jobs.register_agent(database(pg_url), "same", env)[0] for _ in range(5)]
    start, got = threading.Barrier(4), {}

    def take(agent_id: str) -> None:
        start.wait()
        claimed = jobs.claim(database(pg_url), agent_id, "same")
        got[agent_id] = claimed.job_id if claimed else None

    threads = [threading.Thread(target=take, args=(a,)) for a in agents[:4]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(got.values()) == ids, got
    fifth = jobs.claim(db, agents[4], "same")
    assert fifth is not None and fifth.job_id == ids[0]
    assert fifth.study == f"job{ids[0]}-same"
    states = db.run(lambda c: c.execute(sa.select(tasks.c.state)).scalars().all())
    assert states == ["running"] * 4


def test_a_released_task_with_no_live_agent_goes_back_to_the_queue(
    pg_url: str, magika: Path
) -> None:
    db = database(pg_url)
    job = jobs.submit(db, jobs.checked_submission(magika, {}, "k1,k2", None))
    first, _ = jobs.register_agent(db, "k1", environment())
    second, _ = jobs.register_agent(db, "k1", environment())
    assert jobs.claim(db, first, "k1") is not None
    assert jobs.claim(db, second, "k1") is not None  # joins it
    jobs.release(db, first)
    [row] = [t for t in jobs.job_rows(db, job)[0]["tasks"] if t["class"] == "k1"]
    assert row["state"] == "running", "the second agent still works on it"
    jobs.release(db, second, stopped=True)
    by_class = {t["class"]: t["state"] for t in jobs.job_rows(db, job)[0]["tasks"]}
    assert by_class == {"k1": "queued", "k2": "queued"}
    assert jobs.claim(db, first, "other") is None, "a job for named classes waits for them"


def test_files_are_stored_once_and_a_corrupted_chunk_is_refused(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "CHUNK_BYTES", 1000)
    data = tmp_path / "data.bin"
    data.write_bytes(np.random.default_rng(0).bytes(4500))
    db = database(pg_url)
    [first] = db.run(lambda c: blobs.store(c, [("data.bin", data)]))
    [again] = db.run(lambda c: blobs.store(c, [("data.bin", data)]))
    assert first == again and first.size == 4500
    count = db.run(lambda c: c.execute(sa.select(sa.func.count()).select_from(chunks)).scalar())
    assert count == 5, "five chunks, stored once"

    fetched = blobs.fetch(db, [first], tmp_path / "fetched")
    assert (fetched / "data.bin").read_bytes() == data.read_bytes()

    db.run(lambda c: c.execute(sa.update(chunks).where(chunks.c.seq == 2).values(data=b"x" * 1000)))
    with pytest.raises(AutotuneError, match="swapped or corrupted"):
        blobs.fetch(db, [first], tmp_path / "again")
    assert not (tmp_path / "again").exists(), "nothing half-fetched is left in place"


def test_a_job_carries_its_options_and_files(tmp_path: Path, magika: Path) -> None:
    """What submit records is what the agent runs: the options set away from their defaults,
    without the machine's own, and the files they name replaced by the fetched copies."""
    checks = tmp_path / "checks.py"
    checks.write_text("def same(reference, candidate):\n    return True\n")
    options = RunOptions(
        model=magika, objective=("latency:p99",), trials=7, dims=("a=1",), out=tmp_path,
        storage="postgresql://x@y/z", accuracy_fn=f"{checks}:same",
    )  # fmt: skip
    recorded = job_options(options)
    assert recorded == {"objective": ["latency:p99"], "trials": 7, "dims": ["a=1"],
                        "accuracy_fn": f"{checks}:same"}  # fmt: skip
    again = options_of_job(magika, recorded, out=tmp_path / "agent", study="job1-x")
    assert again.objective == ("latency:p99",) and again.dims == ("a=1",) and again.trials == 7
    assert again.out == tmp_path / "agent" and again.storage is None

    attached = jobs._attachments(options)
    assert attached == {"accuracy_fn": ("checks.py", checks)}
    local = jobs.local_value("accuracy_fn", "checks.py:same", tmp_path / "cache" / "checks.py")
    assert local == f"{tmp_path / 'cache' / 'checks.py'}:same"
    with pytest.raises(UsageError, match="upgrade autotune"):
        options_of_job(magika, {"turbo": True})


def test_class_names_and_the_closest_class() -> None:
    epyc = {"cpu_model": "AMD EPYC 9R14 96-Core Processor", "usable_cpus": 2,
            "onnxruntime_version": "1.31.1", "gpu": None, "isa_flags": ["avx2", "avx512f"]}  # fmt: skip
    assert class_name(epyc) == "amd-epyc-9r14-2cpu-ort1.31.1"
    gpu = {**epyc, "gpu": "NVIDIA H200", "usable_cpus": 16}
    assert class_name(gpu) == "amd-epyc-9r14-16cpu-nvidiah200-ort1.31.1"
    xeon = {
        **epyc,
        "cpu_model": "Intel(R) Xeon(R) Platinum 8488C",
        "isa_flags": ["avx2", "amx_int8"],
    }
    bigger = {**epyc, "usable_cpus": 8}
    measured = {"xeon": xeon, "epyc-8": bigger, "gpu": gpu}
    assert closest(epyc, measured) == "epyc-8", "same CPU and build, nearest core count"
    assert closest({**gpu, "usable_cpus": 8}, measured) == "gpu", "the same GPU first"
    assert closest(epyc, {}) is None


def test_the_service_needs_postgresql() -> None:
    with pytest.raises(UsageError, match="needs PostgreSQL"):
        require_postgres("sqlite:///x.db")
    with pytest.raises(UsageError, match="give --storage postgresql"):
        require_postgres(None)


def test_a_model_with_external_weights_travels_whole(
    pg_url: str, magika: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose weights sit in a file beside it: both go into the database (or stay at a
    file:// URL), and the agent's copy has the same identity, graph and weights."""
    path = tmp_path / "shared" / "model.onnx"
    path.parent.mkdir()
    onnx.save_model(onnx.load(magika), path, save_as_external_data=True,
                    location="model.weights", size_threshold=0)  # fmt: skip
    info = read_model(path)
    identity = info.sha256
    named = blobs.model_files(info)
    assert [name for name, _ in named] == ["model.onnx", "model.weights"]
    db = database(pg_url)
    stored = [f.to_dict() for f in db.run(lambda c: blobs.store(c, named))]
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(path.parent))
    with ThreadingHTTPServer(("127.0.0.1", 0), handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        web = f"http://127.0.0.1:{server.server_address[1]}/model.onnx"
        for source, url in (("database", None), ("file", path.as_uri()), ("http", web)):
            monkeypatch.setenv("AUTOTUNE_CACHE_DIR", str(tmp_path / source))
            fetched = fetch_model(db, {"files": stored, "url": url}, identity)
            assert (fetched.parent / "model.weights").is_file()
            assert read_model(fetched).sha256 == identity
        server.shutdown()
