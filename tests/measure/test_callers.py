"""Serving workloads: concurrent callers, input pools, shape mixes, the sweep and the pool API.

Real models, real caller threads, real worker processes and a real SQLite study; nothing that
runs here is mocked. Faulty callers are made by wrapper worker programs (``run_trial``'s
``command=``) that patch ``autotune.measure.session.Runner`` and then run the real worker.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import optuna
import psutil
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.config import (
    AccuracyCheck,
    FeedPlan,
    InputSpec,
    Measurement,
    MeasureSettings,
    ShapePoint,
    TrialConfig,
    TrialFailure,
    WorkerJob,
    Workload,
)
from autotune.errors import UsageError
from autotune.machine import usable_cpus
from autotune.measure.accuracy import load_reference
from autotune.measure.runner import run_trial
from autotune.measure.session import read_tuned
from autotune.model import make_feeds, read_model, resolve_inputs
from autotune.space import SPACES_DIR, load_space

runner = CliRunner()
QUICK = MeasureSettings(warmup_runs=2, warmup_s=0.01, min_runs=5, min_time_s=0.05)
CLI_FAST = ["--min-time", "0.05", "--min-runs", "5", "--finalists", "0"]


@pytest.fixture(scope="module", autouse=True)
def own_measuring_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This module's studies take their own machine lock, so they never queue behind another
    autotune (a benchmark, another test run) measuring on this shared machine. The lock itself
    is tested in test_lock.py; nothing here asserts a tight timing."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOTUNE_LOCK_FILE", str(tmp_path_factory.mktemp("lock") / "measure.lock"))
        yield


@pytest.fixture(scope="module")
def seq_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """x float32 [batch, seq, 16] -> y = mean over seq [batch, 16], s = Shape(x): the output
    ``s`` tells which shape was really fed."""
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0),
            helper.make_node("Shape", ["x"], ["s"]),
        ],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 16])],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 16]),
            helper.make_tensor_value_info("s", TensorProto.INT64, [3]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "seq.onnx"
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def magika_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight distinct magika samples: row k is a byte pattern of its own."""
    rng = np.random.default_rng(7)
    rows = rng.integers(0, 256, size=(8, 2048), dtype=np.int32)
    rows[:, 0] = np.arange(8)  # distinct even if the generator repeated itself
    path = tmp_path_factory.mktemp("pool") / "pool.npz"
    np.savez(path, bytes=rows)
    return path


def _job(
    model: Path,
    config: TrialConfig | None = None,
    *,
    plan: FeedPlan | None = None,
    measure: MeasureSettings = QUICK,
    accuracy: AccuracyCheck | None = None,
    workload: Workload | None = None,
) -> WorkerJob:
    return WorkerJob(
        str(model),
        config or TrialConfig(),
        plan or resolve_inputs(read_model(model)).plan,
        measure,
        accuracy or AccuracyCheck(),
        workload or Workload(),
    )


# --- 1. figures under load ---------------------------------------------------------------------


def test_two_callers_on_one_session_count_both_and_no_more(magika: Path) -> None:
    """What the window's counting guarantees, whatever the machine's speed. How fast the same
    load runs in a plain onnxruntime process is no test's to say: on a shared VM the two differ
    by the host's speed mode (up to ~1.8x here)."""
    config = TrialConfig(session_options={"intra_op_num_threads": 1})
    measure = MeasureSettings(warmup_runs=2, warmup_s=0.05, min_runs=10, min_time_s=0.5)
    job = _job(magika, config, measure=measure, workload=Workload(concurrency=2))
    outcome = run_trial(job, timeout_s=120)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.concurrency == 2 and outcome.per_shape == ()
    lat = outcome.latency_ms
    assert lat.count >= measure.min_runs and outcome.timed_s >= measure.min_time_s
    assert outcome.throughput == pytest.approx(lat.count / outcome.timed_s)
    # Little's law: requests in flight = arrival rate x time in the system. Two callers never
    # keep more than 2 in flight (the 10 % allow a request that started a moment before the
    # window's clock was read): a window counting a caller twice, or a latency that counts the
    # wait for the other caller, reads far above. One caller counted alone reads at most 1.
    in_flight = outcome.throughput * lat.mean / 1e3 / outcome.batch_size
    assert 1.0 < in_flight <= 2.2, in_flight


def test_sessions_and_the_global_thread_pool_in_a_worker(tiny_model: Path) -> None:
    shared = TrialConfig(
        sessions=2, global_thread_pool=True, session_options={"intra_op_num_threads": 1}
    )
    outcome = run_trial(_job(tiny_model, shared, workload=Workload(concurrency=2)), timeout_s=60)
    assert isinstance(outcome, Measurement), outcome
    assert outcome.concurrency == 2 and outcome.latency_ms.count >= QUICK.min_runs

    too_many = run_trial(
        _job(tiny_model, TrialConfig(sessions=3), workload=Workload(concurrency=2)), timeout_s=60
    )
    assert isinstance(too_many, TrialFailure) and too_many.kind == "error", too_many
    assert "3 sessions" in too_many.message and "only 2 concurrent callers" in too_many.message


# --- 2, 3. a caller that raises, a caller that hangs ------------------------------------------

FAULTY_CALLER = """
import os, sys, time
from pathlib import Path
from autotune.measure import session
from autotune.measure.worker import main

Path({pid_file!r}).write_text(str(os.getpid()))
runners = []
plain_init, plain_call = session.Runner.__init__, session.Runner.__call__

def init(self, *args, **kwargs):
    plain_init(self, *args, **kwargs)
    self.caller, self.calls = len(runners), 0
    runners.append(self)

def call(self):
    self.calls += 1
    if self.caller == 1 and self.calls > 20:  # the second caller, well into the timed window
        {fault}
    return plain_call(self)

session.Runner.__init__ = init
session.Runner.__call__ = call
sys.exit(main(sys.argv[1:]))
"""
# Two warm-up runs exactly, then a timed window long enough that the fault lands inside it.
FAULT_WINDOW = MeasureSettings(warmup_runs=2, warmup_s=0.0, min_runs=5, min_time_s=3.0)


def _faulty_caller(fault: str, pid_file: Path) -> list[str]:
    return [sys.executable, "-c", FAULTY_CALLER.format(fault=fault, pid_file=str(pid_file))]


def test_a_caller_that_raises_fails_the_trial_with_its_message(
    tiny_model: Path, tmp_path: Path
) -> None:
    job = _job(tiny_model, measure=FAULT_WINDOW, workload=Workload(concurrency=2))
    command = _faulty_caller('raise RuntimeError("caller 1 broke")', tmp_path / "pid")
    outcome = run_trial(job, timeout_s=60, command=command)
    assert isinstance(outcome, TrialFailure), outcome
    assert outcome.kind == "error" and "caller 1 broke" in outcome.message, outcome
    assert outcome.message.startswith("RuntimeError")


def _group_members(pgid: int) -> list[int]:
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error, ProcessLookupError):
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                members.append(process.pid)
    return members


def test_a_hung_caller_is_killed_by_the_trial_timeout(tiny_model: Path, tmp_path: Path) -> None:
    hung = tmp_path / "hung"
    fault = f"Path({str(hung)!r}).touch(); time.sleep(3600)"
    job = _job(tiny_model, measure=FAULT_WINDOW, workload=Workload(concurrency=2))
    outcome = run_trial(job, timeout_s=8, command=_faulty_caller(fault, tmp_path / "pid"))
    assert isinstance(outcome, TrialFailure) and outcome.kind == "timeout", outcome
    assert "no result within 8 s" in outcome.message
    assert hung.exists(), "the worker timed out before its caller hung"
    pid = int((tmp_path / "pid").read_text())
    assert not psutil.pid_exists(pid), "the worker outlived its trial"
    assert not _group_members(pid), "a process of the worker's group outlived the trial"


# --- 4, 5. the input pool ------------------------------------------------------------------------


def test_make_feeds_walks_the_pool_and_wraps(magika: Path, magika_pool: Path) -> None:
    resolved = resolve_inputs(read_model(magika), data_path=str(magika_pool))
    plan = resolved.plan
    assert plan.pool_rows == 8 and resolved.pinned_batch is None
    [spec] = plan.inputs
    assert spec.shape == (1, 2048) and spec.batched
    rows = np.load(magika_pool)["bytes"]
    for index, expected in ((0, [0, 1]), (1, [2, 3]), (3, [6, 7]), (4, [0, 1]), (5, [2, 3])):
        batch = make_feeds(plan, 2, index=index)["bytes"]
        assert batch.shape == (2, 2048) and batch.dtype == np.int32
        np.testing.assert_array_equal(batch, rows[expected], err_msg=f"index {index}")
    # a batch larger than the pool wraps around within one request
    big = make_feeds(plan, 10, index=0)["bytes"]
    np.testing.assert_array_equal(big, rows[[0, 1, 2, 3, 4, 5, 6, 7, 0, 1]])


def test_a_pool_is_not_a_pinned_batch(magika: Path, magika_pool: Path, tmp_path: Path) -> None:
    tuned = autotune.tune(
        magika, objective="latency", inputs=magika_pool, trials=3, finalists=0,
        min_time_s=0.05, min_runs=5, out=tmp_path, seed=1,
    )  # fmt: skip
    assert tuned.config.batch_size == 1 and tuned.baseline.batch_size == 1
    assert tuned.metrics.batch_size == 1
    assert tuned.inputs is not None and tuned.inputs.pool_rows == 8
    assert tuned.inputs.data_path == str(magika_pool.resolve())
    assert tuned.workload == Workload() and tuned.sweep is None  # one caller: no sweep
    best = json.loads((tmp_path / tuned.study_name / "best.json").read_text())
    assert best["inputs"]["pool_rows"] == 8 and best["config"]["batch_size"] == 1
    study = optuna.load_study(
        study_name=tuned.study_name, storage=f"sqlite:///{tmp_path / 'autotune.db'}"
    )
    assert study.user_attrs["inputs"]["pool_rows"] == 8
    assert study.user_attrs["batch_sizes"] == [1]
    assert all(t.user_attrs["config"]["batch_size"] == 1 for t in study.trials)
    # the baseline's reference covers every sample of the pool, one request each
    with np.load(tmp_path / tuned.study_name / "reference.npz") as reference:
        keys = {k.split(":")[0] for k in reference.files}
    assert keys == {"batch1", *(f"batch1#{slot}" for slot in range(1, 8))}


def test_the_accuracy_guard_covers_every_batch_of_the_pool(
    magika: Path, magika_pool: Path, tmp_path: Path
) -> None:
    plan = resolve_inputs(read_model(magika), data_path=str(magika_pool)).plan
    reference = tmp_path / "reference.npz"
    write = run_trial(
        _job(magika, plan=plan, accuracy=AccuracyCheck(str(reference), write_batches=(1,))),
        timeout_s=120,
    )
    assert isinstance(write, Measurement), write
    with np.load(reference) as data:
        arrays = {k: data[k] for k in data.files}
    assert len(arrays) == 8  # one output, eight pool batches of one sample
    outputs = [arrays["batch1:target_label"]] + [
        arrays[f"batch1#{slot}:target_label"] for slot in range(1, 8)
    ]
    assert len({o.tobytes() for o in outputs}) > 1, "the eight samples all gave one answer"

    clean = run_trial(
        _job(magika, plan=plan, accuracy=AccuracyCheck(str(reference))), timeout_s=120
    )
    assert isinstance(clean, Measurement), clean
    assert clean.max_abs_err is not None and clean.max_abs_err <= 1e-4

    arrays["batch1#3:target_label"] = arrays["batch1#3:target_label"] + 0.5
    corrupted = tmp_path / "corrupted.npz"
    np.savez(corrupted, **arrays)
    outcome = run_trial(
        _job(magika, plan=plan, accuracy=AccuracyCheck(str(corrupted))), timeout_s=120
    )
    assert isinstance(outcome, TrialFailure) and outcome.kind == "mismatch", outcome
    assert "pool batch 4 of 8" in outcome.message and "target_label" in outcome.message
    assert outcome.details["pool_batch"] == 3


# --- 6. a shape mix --------------------------------------------------------------------------


def test_a_shape_mix_is_measured_shape_by_shape(seq_model: Path, tmp_path: Path) -> None:
    resolved = resolve_inputs(read_model(seq_model), dims={"seq": (8, 64)})
    assert resolved.shapes == (ShapePoint({"seq": 8}, 0.5), ShapePoint({"seq": 64}, 0.5))
    reference = tmp_path / "reference.npz"
    workload = Workload(shapes=(ShapePoint({"seq": 8}, 0.5), ShapePoint({"seq": 64}, 0.5)))
    outcome = run_trial(
        _job(
            seq_model,
            plan=resolved.plan,
            workload=workload,
            accuracy=AccuracyCheck(str(reference), write_batches=(1,)),
        ),
        timeout_s=60,
    )
    assert isinstance(outcome, Measurement), outcome
    assert [f.label for f in outcome.per_shape] == ["seq=8", "seq=64"]
    assert [f.weight for f in outcome.per_shape] == [0.5, 0.5]
    assert all(f.latency_ms.count >= QUICK.min_runs for f in outcome.per_shape)
    assert outcome.first_run_s == pytest.approx(sum(f.first_run_s for f in outcome.per_shape))
    low, high = sorted(f.throughput for f in outcome.per_shape)
    assert low <= outcome.throughput <= high
    assert outcome.latency_ms.count == sum(f.latency_ms.count for f in outcome.per_shape)
    # each shape was really fed: the model's Shape output, as the baseline recorded it
    for seq in (8, 64):
        recorded = load_reference(reference, f"batch1@seq={seq}")
        assert recorded is not None and list(recorded["s"]) == [1, seq, 16]


@pytest.mark.parametrize(
    ("dims", "weights", "message"),
    [
        ({"seq": (8, 64)}, "1,2,3", "--dim-weights needs 2 finite, non-negative weights"),
        ({"seq": (8, 64)}, "1", "--dim-weights needs 2 finite, non-negative weights"),
        ({"seq": (8, 64)}, "-1,2", "--dim-weights needs 2 finite, non-negative weights"),
        ({"seq": (8, 64)}, "0,0", "--dim-weights needs 2 finite, non-negative weights"),
        ({"seq": (8, 64)}, "a,b", "--dim-weights 'a,b' is malformed"),
        ({"seq": 8}, "1,2", "--dim-weights needs a mix of shapes"),
        ({"seq": (8, 64)}, "nan,1", "--dim-weights needs 2 finite, non-negative weights"),
        ({"seq": (8, 64)}, "inf,1", "--dim-weights needs 2 finite, non-negative weights"),
    ],
)  # fmt: skip
def test_dim_weights_are_validated(seq_model: Path, dims: dict, weights: str, message: str) -> None:
    with pytest.raises(UsageError) as caught:
        resolve_inputs(read_model(seq_model), dims=dims, dim_weights=weights)
    assert message in str(caught.value)


def test_dim_weights_are_normalised(seq_model: Path) -> None:
    resolved = resolve_inputs(read_model(seq_model), dims={"seq": (8, 64)}, dim_weights="3,1")
    assert [p.weight for p in resolved.shapes] == [0.75, 0.25]


def test_a_shape_mix_with_a_pinned_batch_still_changes_the_shape(seq_model: Path) -> None:
    resolved = resolve_inputs(read_model(seq_model), dims={"batch": 4, "seq": (8, 64)})
    assert resolved.pinned_batch == 4 and len(resolved.shapes) == 2
    assert make_feeds(resolved.plan, 4, dims={"seq": 64})["x"].shape == (4, 64, 16)


# --- 7. bad input through the CLI ----------------------------------------------------------------


@pytest.fixture(scope="module")
def big_sessions_space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    text = (SPACES_DIR / "cpu.yaml").read_text()
    assert text.count("high: max_sessions") == 1
    path = tmp_path_factory.mktemp("space") / "sessions4.yaml"
    path.write_text(text.replace("high: max_sessions", "high: 4"))
    return path


@pytest.fixture(scope="module")
def seq_inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feeds") / "x.npz"
    np.savez(path, x=np.zeros((4, 8, 16), np.float32))
    return path


def test_magika_batch_symbol_is_what_the_cli_cases_name(magika: Path) -> None:
    assert read_model(magika).batch_symbol == "unk__214"


@pytest.mark.parametrize(
    ("args", "messages"),
    [
        (["{tiny}", "--concurrency", "0"], ["--concurrency 0 is below 1"]),
        (["{tiny}", "--concurrency", "-3"], ["--concurrency -3 is below 1"]),
        (["{tiny}", "--concurrency", "100000"],
         ["measure queueing, not the model", "(8 per CPU)"]),
        (["{tiny}", "--concurrency", "2", "--space", "{space}"],
         ["up to 4 sessions for 2 concurrent callers", "sessions4.yaml"]),
        (["{magika}", "--dim", "unk__214=1,2"],
         ["'unk__214' is the batch dim", "--batch-sizes 1,2"]),
        (["{rapid}", "--dim", "foo=1,2"],
         ["'foo', which is not a dim of any input", "model inputs: x float32"]),
        (["{seq}", "--dim", "seq=8,64", "--inputs", "{seq_inputs}"],
         ["input 'x' has its shape fixed by --inputs"]),
        (["{seq}", "--dim", "seq=8,64", "--shape", "x=1x8x16"],
         ["input 'x' has its shape fixed by --shape"]),
        (["{seq}", "--dim", "seq=8,64", "--dim-weights", "1,2,3"],
         ["--dim-weights needs 2 finite, non-negative weights"]),
        (["{seq}", "--dim", "seq=8", "--dim-weights", "1,2"],
         ["--dim-weights needs a mix of shapes"]),
        (["{seq}", "--dim", "seq=8,x"], ["--dim 'seq=8,x' is malformed"]),
    ],
)  # fmt: skip
def test_bad_workload_input_is_one_line_exit_2_and_nothing_written(
    args: list[str],
    messages: list[str],
    tiny_model: Path,
    magika: Path,
    rapid: Path,
    seq_model: Path,
    seq_inputs: Path,
    big_sessions_space: Path,
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    paths = {
        "tiny": tiny_model, "magika": magika, "rapid": rapid, "seq": seq_model,
        "seq_inputs": seq_inputs, "space": big_sessions_space,
    }  # fmt: skip
    argv = [a.format(**paths) for a in args]
    result = runner.invoke(app, ["run", *argv, "--out", str(out), "--trials", "2", *CLI_FAST])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.output
    for message in messages:
        assert message in result.stderr, result.stderr
    assert not out.exists()


# --- 8, 9. a concurrent study: best.json, load_pool, export, the sweep, resuming -----------------


@pytest.fixture(scope="module")
def c2_study(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A quick throughput study of tiny_model for 2 concurrent callers, with the sweep."""
    out = tmp_path_factory.mktemp("c2")
    result = runner.invoke(
        app,
        ["run", str(tiny_model), "--concurrency", "2", "--trials", "4", "--batch-sizes", "1,4",
         "--sweep", "--max-latency-ms", "1000", "--seed", "3", "--out", str(out), *CLI_FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [best] = out.glob("*/best.json")
    return out, best.parent.name, result.stdout


@pytest.fixture(scope="module")
def shared_pool_best(
    c2_study: tuple[Path, str, str], tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """The study's best.json with two sessions sharing ONNX Runtime's global thread pool (one
    intra-op thread), whatever the search chose: a config the cpu space can produce."""
    out, name, _ = c2_study
    data = json.loads((out / name / "best.json").read_text())
    data["config"].update(sessions=2, global_thread_pool=True)
    data["config"]["session_options"] = {"intra_op_num_threads": 1}
    path = tmp_path_factory.mktemp("shared") / "best.json"
    path.write_text(json.dumps(data))
    return path


LOAD_POOL = """
import json, sys, threading
import numpy as np
import onnxruntime as ort
import autotune

best, model = sys.argv[1], sys.argv[2]
# The plain session first: once ONNX Runtime's global thread pool exists, a session with its
# own threads can no longer be created in the process.
plain = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
pool = autotune.load_pool(best)
rng = np.random.default_rng(0)
requests = [rng.standard_normal((pool.batch_size, 64)).astype(np.float32) for _ in range(4)]
expected = [plain.run(None, {"x": x})[0] for x in requests]
got = [None] * 4

def caller(i):
    for _ in range(5):
        got[i] = pool.run(None, {"x": requests[i]})[0]

threads = [threading.Thread(target=caller, args=(i,)) for i in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
report = {
    "sessions": len(pool.sessions),
    "concurrency": pool.concurrency,
    "batch_size": pool.batch_size,
    "distinct": len({id(pool.session_for(i)) for i in range(4)}),
    "per_session_threads": [
        s.get_session_options().use_per_session_threads for s in pool.sessions
    ],
    "max_err": max(float(np.abs(g - e).max()) for g, e in zip(got, expected)),
    "shapes": [list(g.shape) for g in got],
}
if len(sys.argv) > 3:  # a different global pool size in the same process
    from autotune.config import TrialConfig
    from autotune.errors import AutotuneError
    from autotune.measure.session import create_session

    same = TrialConfig(global_thread_pool=True, session_options={"intra_op_num_threads": 1})
    create_session(model, same)  # the same sizes: the existing pool is shared
    other = TrialConfig(global_thread_pool=True, session_options={"intra_op_num_threads": 2})
    try:
        create_session(model, other)
        report["other_size"] = "accepted"
    except AutotuneError as exc:
        report["other_size"] = str(exc)
print(json.dumps(report))
"""


def _load_pool_in_a_fresh_process(best: Path, model: Path, *extra: str) -> dict:
    """A fresh process: ONNX Runtime's global thread pool can be created once per process."""
    done = subprocess.run(
        [sys.executable, "-c", LOAD_POOL, str(best), str(model), *extra],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_best_json_of_a_concurrent_study_serves_through_load_pool(
    c2_study: tuple[Path, str, str], tiny_model: Path, shared_pool_best: Path
) -> None:
    out, name, _ = c2_study
    assert name.endswith("-c2")
    best_path = out / name / "best.json"
    best = json.loads(best_path.read_text())
    tuned = read_tuned(best_path)
    assert best["workload"] == {
        "concurrency": 2,
        "shapes": [],
        "sessions": tuned.config.sessions,
        "intra_op_num_threads": tuned.config.session_options.get("intra_op_num_threads", 0),
        "global_thread_pool": tuned.config.global_thread_pool,
    }
    assert tuned.workload == Workload(concurrency=2) and 1 <= tuned.config.sessions <= 2
    assert tuned.metrics.concurrency == 2 and tuned.baseline.concurrency == 2

    served = _load_pool_in_a_fresh_process(best_path, tiny_model)
    assert served["sessions"] == tuned.config.sessions == served["distinct"]
    assert served["concurrency"] == 2 and served["batch_size"] == tuned.config.batch_size
    assert served["shapes"] == [[tuned.config.batch_size, 32]] * 4
    assert served["max_err"] <= 1e-4

    # The same best.json with two sessions sharing a global pool, whatever the search chose.
    served = _load_pool_in_a_fresh_process(shared_pool_best, tiny_model, "then-another-size")
    assert served["sessions"] == 2 == served["distinct"]
    assert served["per_session_threads"] == [False, False]
    assert served["max_err"] <= 1e-4
    assert "already has ONNX Runtime's global thread pools" in served["other_size"]
    assert "fresh process" in served["other_size"]


def test_export_python_serves_the_concurrent_callers(
    c2_study: tuple[Path, str, str], tmp_path: Path
) -> None:
    out, name, _ = c2_study
    tuned = read_tuned(out / name / "best.json")
    dest = tmp_path / "serve.py"
    result = runner.invoke(
        app, ["export", "--out", str(out), "--study", name, "-f", "python", "--dest", str(dest)]
    )
    assert result.exit_code == 0, result.output
    code = dest.read_text()
    assert "CONCURRENCY = 2" in code and f"SESSIONS = {tuned.config.sessions}" in code
    assert "import autotune" not in code
    done = subprocess.run([sys.executable, str(dest)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [f"y {tuned.config.batch_size}x32"]


def test_the_sweep_measures_every_level_and_finds_the_limit(
    c2_study: tuple[Path, str, str],
) -> None:
    out, name, table = c2_study
    assert "concurrency sweep" in table and "p99 limit 1000 ms: met up to" in table
    tuned = read_tuned(out / name / "best.json")
    sweep = tuned.sweep
    assert sweep is not None and sweep.max_latency_ms == 1000
    assert {1, 2} <= set(sweep.levels) and sweep.levels == tuple(sorted(sweep.levels))
    chosen_differs = tuned.trial_number != 0
    roles = ("baseline", "chosen") if chosen_differs else ("baseline",)
    for level in sweep.levels:
        for role in roles:
            point = sweep.at(role, level)
            assert point is not None, (role, level)
            assert point.measurement is not None, point.failure
            assert point.measurement.concurrency == level
            assert 1 <= point.sessions <= level
    assert len(sweep.points) == len(sweep.levels) * len(roles)
    role = roles[-1]
    within = [
        p.concurrency
        for p in sweep.points
        if p.role == role and p.measurement and p.measurement.latency_ms.p99 <= 1000
    ]
    assert sweep.highest_ok is not None and sweep.highest_ok == max(within)
    best = json.loads((out / name / "best.json").read_text())
    assert best["sweep"]["highest_ok"] == sweep.highest_ok


def test_a_fast_models_tables_print_plain_numbers(
    c2_study: tuple[Path, str, str], tmp_path: Path
) -> None:
    """Issue 20: tiny_model serves tens of thousands of samples/s; the run's table, the sweep,
    ``show`` and the report print them plainly, never as ``1.206e+04``."""
    out, name, table = c2_study
    exponent = re.compile(r"\de[+-]\d")  # as Python prints one; a hex hash has no sign
    assert "concurrency sweep (one fresh process per point, interleaved):" in table
    assert "(search, one fresh process)" in table  # --finalists 0: the search's figures
    shown = runner.invoke(app, ["show", "--out", str(out), "--study", name])
    report = runner.invoke(
        app, ["report", "--out", str(out), "--study", name, "--dest", str(tmp_path)]
    )
    assert shown.exit_code == 0 and report.exit_code == 0, shown.output + report.output
    page = (tmp_path / "index.html").read_text()
    assert "<th>concurrency</th>" in page and "`" not in page
    for text in (table, shown.stdout, page, (tmp_path / "report.md").read_text()):
        assert not exponent.search(text), text


def test_resuming_under_another_workload_is_refused(
    c2_study: tuple[Path, str, str], tiny_model: Path
) -> None:
    out, name, _ = c2_study
    storage = f"sqlite:///{out / 'autotune.db'}"
    before = len(optuna.load_study(study_name=name, storage=storage).trials)
    result = runner.invoke(
        app,
        ["run", str(tiny_model), "--concurrency", "3", "--study", name, "--trials", "6",
         "--batch-sizes", "1,4", "--out", str(out), *CLI_FAST],
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    # The header lines come first (the study is opened after them), then one error line.
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: ") and result.stderr.count("Error") == 1, result.stderr
    assert "another workload (concurrency 2 there, concurrency 3 here)" in error
    assert "--concurrency" in error and "Traceback" not in result.output
    assert len(optuna.load_study(study_name=name, storage=storage).trials) == before


def test_no_sweep_with_concurrency(tiny_model: Path, tmp_path: Path) -> None:
    result = runner.invoke(
        app,
        ["run", str(tiny_model), "--concurrency", "2", "--trials", "1", "--no-sweep",
         "--out", str(tmp_path), *CLI_FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "concurrency sweep" not in result.stdout + result.stderr
    assert "autotune.load_pool(" in result.stdout
    [best] = tmp_path.glob("*-c2/best.json")
    data = json.loads(best.read_text())
    assert data["sweep"] is None and data["workload"]["concurrency"] == 2


def test_inputspec_shape_for_applies_mix_dims_only_on_their_axes() -> None:
    spec = InputSpec("x", "float32", (1, 8, 16), True, (None, "seq", None))
    assert spec.shape_for(3, {"seq": 64}) == (3, 64, 16)
    assert spec.shape_for(3, {"other": 5}) == (3, 8, 16)
    assert spec.shape_for(2) == (2, 8, 16)


def test_profile_a_config_that_shares_the_global_thread_pool(shared_pool_best: Path) -> None:
    result = runner.invoke(app, ["profile", str(shared_pool_best), "--runs", "3"])
    assert result.exit_code == 0, result.output
    assert "MatMul" in result.stdout or "FusedGemm" in result.stdout  # fused at ORT_ENABLE_ALL


OPTIMIZE = """
import sys
from pathlib import Path
from autotune.results.export import optimized_model
from autotune.measure.session import read_tuned

optimized_model(read_tuned(sys.argv[1]), Path(sys.argv[2]))
"""


def test_optimized_model_of_a_config_that_shares_the_global_thread_pool(
    shared_pool_best: Path, tmp_path: Path
) -> None:
    # A fresh process (the tuner's, as `autotune export` runs it): a global pool made here
    # would stay in pytest's process for good.
    dest = tmp_path / "tiny.optimized.onnx"
    done = subprocess.run(
        [sys.executable, "-c", OPTIMIZE, str(shared_pool_best), str(dest)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert dest.is_file()


def test_the_serving_layouts_are_measured_first(c2_study: tuple[Path, str, str]) -> None:
    """After the baseline: one session per caller (CPUs split between them), then one shared
    session with one thread per call, both without spinning; the sampler proposes the rest."""
    out, name, stdout = c2_study
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / 'autotune.db'}")
    first = {t.number: t.params for t in study.trials if t.number in (1, 2)}
    cpus = usable_cpus()
    streams = min(2, cpus)
    assert first[1]["sessions"] == streams
    assert first[1]["intra_op_num_threads"] == max(1, cpus // streams)
    assert first[2]["sessions"] == 1 and first[2]["intra_op_num_threads"] == 1
    for params in first.values():
        assert params["global_thread_pool"] is False
        assert params["session.intra_op.allow_spinning"] == "0"


# --- 8. what a trial may create under load ---------------------------------------------------------


def test_sessions_and_their_threads_stay_within_the_usable_cpus() -> None:
    """Sessions go up to the CPUs, not up to the callers, and a pool each shares them out."""
    space = load_space("cpu").resolve(batch_sizes=(1,), cpus=4, concurrency=16)
    sessions = next(p for p in space.params if p.target == "sessions")
    assert sessions.bounds() == (1, 4)
    for count in (1, 2, 3, 4):
        for threads in (1, 2, 4):
            params = {"sessions": count, "global_thread_pool": False,
                      "intra_op_num_threads": threads, "execution_mode": "ORT_PARALLEL",
                      "inter_op_num_threads": threads}  # fmt: skip
            config = space.config_from_params(params)
            for key in ("intra_op_num_threads", "inter_op_num_threads"):
                assert count * config.session_options[key] <= 4, (count, threads, config)
    shared = space.config_from_params(
        {"sessions": 4, "global_thread_pool": True, "intra_op_num_threads": 4}
    )
    assert shared.session_options["intra_op_num_threads"] == 4  # one pool for all: not divided


def test_free_dim_overrides_is_searched_only_where_it_fixes_a_dim(
    magika: Path, seq_model: Path, tmp_path: Path
) -> None:
    """magika's only dynamic dim is the batch, which the overrides leave free: the knob would
    change nothing, so it is not searched; a pinned sequence dim brings it back."""
    from autotune.tuning import RunOptions, prepare

    def knobs(model: Path, *dims: str) -> set[str]:
        request = prepare(RunOptions(model=model, out=tmp_path, dims=dims))
        return {p.name for p in request.space.params}

    assert "free_dim_overrides" not in knobs(magika)
    assert "free_dim_overrides" in knobs(seq_model, "seq=8")
    assert "free_dim_overrides" not in knobs(seq_model, "seq=8,64")  # a mix keeps it free
