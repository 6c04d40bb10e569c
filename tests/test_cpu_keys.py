"""The CPU space's session config keys, and what ``session.set_denormal_as_zero`` really does.

Flush-to-zero / denormals-are-zero is a per-thread CPU mode. ONNX Runtime sets it on a session's
thread-pool threads from that session's options, and on the thread creating a session only for
the first session of the process (``std::call_once``; the config-keys header says "a main thread
doesn't override changes from succeeding session options"). So each check runs in a fresh
Python process, where the session built is the process's first, exactly as in an autotune
trial (one fresh worker per trial, forked from a zygote that never creates a session).

Also the ``free_dim_overrides`` knob: real sessions built with
``add_free_dimension_override_by_name`` for the dims a trial serves at one size.
"""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from autotune.config import TrialConfig, WorkerJob, Workload
from autotune.measure.session import create_session, free_dimension_overrides, model_input_dims
from autotune.model import make_feeds, read_model, resolve_inputs
from autotune.space import load_space

NEW_KEYS = (
    "session.force_spinning_stop",
    "session.set_denormal_as_zero",
    "session.dynamic_block_base",
    "session.disable_prepacking",
)
N = 512  # large enough that a 2-thread pool splits the Mul between its threads

# Builds each session with autotune's own code, runs it once, reports its output.
CHILD = """
import json, sys
import numpy as np
from autotune.config import TrialConfig
from autotune.measure.session import create_session

model, n, specs = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
x = np.full((n, n), 1e-20, np.float32)
tiny = np.finfo(np.float32).tiny
report = []
for spec in specs:
    flag, threads, runs = spec.split(":")
    config = TrialConfig(
        session_options={"intra_op_num_threads": int(threads)},
        config_entries={"session.set_denormal_as_zero": flag},
    )
    session = create_session(model, config)
    zeros, denormals = [], []
    for _ in range(int(runs)):
        y = session.run(None, {"x": x})[0]
        zeros.append(int((y == 0).sum()))
        denormals.append(int(((y != 0) & (np.abs(y) < tiny)).sum()))
    report.append({"zeros": zeros, "denormals": denormals})
print(json.dumps(report))
"""

x86_only = pytest.mark.skipif(
    platform.machine().lower() not in ("x86_64", "amd64"),
    reason="ONNX Runtime sets FTZ/DAZ through the SSE control register",
)


@pytest.fixture(scope="module")
def denormal_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = x * w with x and w at 1e-20: every true output is 1e-40, a float32 denormal."""
    weight = numpy_helper.from_array(np.full((N, N), 1e-20, np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["y"])],
        "denormals",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [N, N])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [N, N])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("denormals") / "mul.onnx"
    onnx.save(model, path)
    return path


def run_fresh(model: Path, *specs: str) -> list[dict[str, list[int]]]:
    """Sessions ``flag:threads:runs`` built one after another in one fresh process, each run
    ``runs`` times; per run, how many outputs are exactly 0 and how many are denormal."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(N), *specs],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_model_output_is_denormal() -> None:
    """In a fresh process: this one's main thread flushes denormals for good once any test here
    made a session with ``session.set_denormal_as_zero`` its process's first."""
    code = "import numpy as np; v = np.float32(1e-20) * np.float32(1e-20); print(0 < v < np.finfo(np.float32).tiny)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "True", done.stderr


@x86_only
@pytest.mark.parametrize("threads", [1, 2])
def test_default_keeps_denormals(denormal_model: Path, threads: int) -> None:
    (report,) = run_fresh(denormal_model, f"0:{threads}:5")
    assert report["zeros"] == [0] * 5
    assert report["denormals"] == [N * N] * 5


@x86_only
@pytest.mark.parametrize("threads", [1, 2])
def test_set_denormal_as_zero_flushes_every_output(denormal_model: Path, threads: int) -> None:
    """The process's first session: the calling thread and the pool threads all flush."""
    (report,) = run_fresh(denormal_model, f"1:{threads}:5")
    assert report["zeros"] == [N * N] * 5
    assert report["denormals"] == [0] * 5


@x86_only
def test_later_session_flushes_only_on_its_pool_threads(denormal_model: Path) -> None:
    """After a session without the flag, the calling thread keeps denormals: a 1-thread session
    (no pool) flushes nothing; a 2-thread session flushes what its pool thread computes, which
    depends on how the load shares the work out, so only the sum is asserted."""
    first, single, pooled = run_fresh(denormal_model, "0:1:5", "1:1:5", "1:2:50")
    assert first["denormals"] == [N * N] * 5
    assert single["zeros"] == [0] * 5 and single["denormals"] == [N * N] * 5
    assert all(z + d == N * N for z, d in zip(pooled["zeros"], pooled["denormals"], strict=True))


def test_cpu_space_has_the_new_keys_with_help() -> None:
    space = load_space("cpu")
    knobs = {p.name: p for p in space.params}
    for key in NEW_KEYS:
        knob = knobs[key]
        assert knob.target == "config_entry" and knob.type == "categorical"
        assert knob.choices[0] == "0", f"{key}: ORT's default must be the first choice"
        assert all(isinstance(c, str) for c in knob.choices)
        assert knob.help.strip(), f"{key} has no help"
    assert "#7448" in knobs["session.set_denormal_as_zero"].help
    assert "memory" in knobs["session.disable_prepacking"].help
    assert knobs["session.dynamic_block_base"].choices == ("0", "4")
    assert dict(knobs["session.force_spinning_stop"].when) == {
        "session.intra_op.allow_spinning": "1"
    }


def test_force_spinning_stop_is_sampled_only_with_spinning() -> None:
    space = load_space("cpu").resolve(batch_sizes=(1,), cpus=2)
    grid = space.grid()
    assert all(
        ("session.force_spinning_stop" in p) == (p["session.intra_op.allow_spinning"] == "1")
        for p in grid
    )
    config = space.config_from_params(
        {"session.intra_op.allow_spinning": "1", "session.force_spinning_stop": "1"}
    )
    assert config.config_entries["session.force_spinning_stop"] == "1"


def test_baseline_sets_none_of_the_new_keys() -> None:
    baseline = load_space("cpu").resolve(batch_sizes=(1,), cpus=2).baseline()
    assert not set(NEW_KEYS) & set(baseline.config_entries)
    assert baseline.config_entries == {} and baseline.session_options == {}


# Free-dimension overrides ------------------------------------------------------------------


def _save_add(path: Path, dims: list[int | str | None]) -> Path:
    """y = x + w, x of shape ``dims`` (the last one 8), w a constant [8]."""
    weight = numpy_helper.from_array(np.arange(8, dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "free_dims",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def ns_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Input x [N, S, 8]: a named batch dim N and a named dim S."""
    return _save_add(tmp_path_factory.mktemp("free_dims") / "ns.onnx", ["N", "S", 8])


ON = TrialConfig(batch_size=4, free_dim_overrides=True)
OFF = TrialConfig(batch_size=4)


def test_overrides_fix_a_pinned_dim_and_leave_the_batch_free(ns_model: Path) -> None:
    plan = resolve_inputs(read_model(ns_model), dims={"S": 16}).plan  # --dim S=16
    assert free_dimension_overrides(ns_model, ON, plan) == {"S": 16}
    session = create_session(ns_model, ON, feeds=plan)
    assert session.get_inputs()[0].shape == ["N", 16, 8]
    feeds = make_feeds(plan, 4)
    (y,) = session.run(None, feeds)
    assert y.shape == (4, 16, 8)
    assert session.run(None, make_feeds(plan, 1))[0].shape == (1, 16, 8)  # a smaller batch
    plain = create_session(ns_model, OFF, feeds=plan)
    assert plain.get_inputs()[0].shape == ["N", "S", 8]
    np.testing.assert_array_equal(y, plain.run(None, feeds)[0])


def test_an_overridden_session_refuses_other_sizes(ns_model: Path) -> None:
    """Why a deployment must serve the tuned shape with this knob on."""
    from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument

    plan = resolve_inputs(read_model(ns_model), dims={"S": 16}).plan
    session = create_session(ns_model, ON, feeds=plan)
    other = resolve_inputs(read_model(ns_model), dims={"S": 32}).plan
    with pytest.raises(InvalidArgument, match="invalid dimensions"):
        session.run(None, make_feeds(other, 4))


def test_a_shape_mix_leaves_its_dim_free(ns_model: Path) -> None:
    resolved = resolve_inputs(read_model(ns_model), dims={"S": (16, 32)})  # --dim S=16,32
    plan, shapes = resolved.plan, resolved.shapes
    assert free_dimension_overrides(ns_model, ON, plan, shapes) == {}
    session = create_session(ns_model, ON, feeds=plan, shapes=shapes)
    assert session.get_inputs()[0].shape == ["N", "S", 8]
    for point, size in zip(shapes, (16, 32), strict=True):
        (y,) = session.run(None, make_feeds(plan, 4, dims=point.dims))
        assert y.shape == (4, size, 8)


def test_without_feeds_nothing_is_fixed(ns_model: Path) -> None:
    session = create_session(ns_model, ON)
    assert session.get_inputs()[0].shape == ["N", "S", 8]
    assert create_session(ns_model, OFF).get_inputs()[0].shape == ["N", "S", 8]


def test_unnamed_dims_stay_dynamic(tmp_path: Path) -> None:
    model = _save_add(tmp_path / "unnamed.onnx", ["N", None, 8])
    plan = resolve_inputs(read_model(model), shapes={"x": (1, 5, 8)}).plan  # --shape x=1x5x8
    assert free_dimension_overrides(model, ON, plan) == {}
    session = create_session(model, ON, feeds=plan)
    assert session.get_inputs()[0].shape == ["N", None, 8]
    assert session.run(None, make_feeds(plan, 4))[0].shape == (4, 5, 8)


def test_the_worker_builds_its_sessions_with_the_overrides(ns_model: Path) -> None:
    from autotune.measure.worker import prepare

    fixed = resolve_inputs(read_model(ns_model), dims={"S": 16})
    job = WorkerJob(model_path=str(ns_model), config=ON, feeds=fixed.plan)
    assert prepare(job).sessions[0].get_inputs()[0].shape == ["N", 16, 8]
    mixed = resolve_inputs(read_model(ns_model), dims={"S": (16, 32)})
    job = WorkerJob(
        model_path=str(ns_model),
        config=ON,
        feeds=mixed.plan,
        workload=Workload(shapes=mixed.shapes),
    )
    prepared = prepare(job)
    assert prepared.sessions[0].get_inputs()[0].shape == ["N", "S", 8]
    assert len(prepared.stages) == 2  # both shapes of the mix ran their first inference
    off = WorkerJob(model_path=str(ns_model), config=OFF, feeds=fixed.plan)
    assert prepare(off).sessions[0].get_inputs()[0].shape == ["N", "S", 8]


def test_input_dims_are_read_as_onnx_reads_them(tmp_path: Path) -> None:
    """The wire-format reader agrees with onnx, initializers listed as inputs left out."""
    weight = numpy_helper.from_array(np.ones((3,), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "w"], ["c"]), helper.make_node("Mul", ["c", "b"], ["y"])],
        "ir3",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", -1, 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [None, "len", 3]),
            helper.make_tensor_value_info("w", TensorProto.FLOAT, [3]),  # an initializer
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "ir3.onnx"
    onnx.save(model, path)
    dims = model_input_dims(path)
    assert dims == {"a": ("batch", None, 3), "b": (None, "len", 3)}
    assert dims == {i.name: i.dims for i in read_model(path).inputs}


def test_a_config_without_the_key_loads_with_the_overrides_off() -> None:
    stored = TrialConfig().to_dict()
    assert "free_dim_overrides" not in stored  # configs from before it keep their form
    assert TrialConfig.from_dict(stored).free_dim_overrides is False
    on = TrialConfig(free_dim_overrides=True)
    assert on.to_dict()["free_dim_overrides"] is True
    assert TrialConfig.from_dict(on.to_dict()) == on
    assert "freedims" in on.describe().split()
    assert "freedims" not in TrialConfig().describe()


def test_cpu_space_searches_free_dim_overrides() -> None:
    space = load_space("cpu").resolve(batch_sizes=(1,), cpus=2)
    knob = next(p for p in space.params if p.name == "free_dim_overrides")
    assert knob.target == "free_dim_overrides" and knob.type == "bool"
    assert "memory planning" in knob.help and "S=32,128" in knob.help
    assert space.config_from_params({"free_dim_overrides": True}).free_dim_overrides
    assert not space.config_from_params({"free_dim_overrides": False}).free_dim_overrides
    assert not space.baseline().free_dim_overrides


def test_exports_fix_the_served_shape_as_the_trial_did(minilm: Path, tmp_path: Path) -> None:
    """A tuned config with free-dimension overrides: the python export sets them for the
    pinned sequence length (not the batch dim), and its one real inference runs."""
    from dataclasses import replace

    from typer.testing import CliRunner

    from autotune.cli import app
    from autotune.measure.session import read_tuned
    from autotune.results.export import python_snippet

    result = CliRunner().invoke(
        app,
        ["run", str(minilm), "--dim", "sequence_length=16", "-o", "latency", "--trials", "1",
         "--out", str(tmp_path), "--min-time", "0.05", "--min-runs", "3", "--finalists", "0",
         "--quiet"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [best] = tmp_path.glob("*/best.json")
    tuned = read_tuned(best)
    fixed = replace(tuned, config=replace(tuned.config, free_dim_overrides=True))
    code = python_snippet(fixed)
    assert "options.add_free_dimension_override_by_name('sequence_length', 16)" in code
    assert "add_free_dimension_override_by_name('batch_size'" not in code
    script = tmp_path / "session.py"
    script.write_text(code)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
