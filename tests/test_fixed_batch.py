"""A model that fixes axis 0 above 1 (a detector exported for a static 10x3x8x8 batch).

The rule: axis 0 is the model's batch when it has no dynamic batch and every input of rank >= 2
has the same static axis 0, N > 1. Then one run is N samples: the batch size is N (pinned, never
searched), throughput counts N per run, and the header and tables say the model fixes it. When
those inputs disagree on axis 0, a run's samples are unknown: throughput counts runs and says so.
Real models built with onnx.helper, real workers; no timing is asserted, only the relation the
code guarantees between throughput, timed seconds and runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

from autotune.cli import app
from autotune.config import Measurement
from autotune.model import make_feeds, read_model, resolve_inputs
from autotune.results.tables import batch_wording
from autotune.variants.build import calibration_samples

runner = CliRunner()
FAST = ["--trials", "2", "--finalists", "0", "--min-time", "0.05", "--min-runs", "3"]


@pytest.fixture(scope="module", autouse=True)
def own_measuring_lock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """This module's studies take their own machine lock (see test_workload.py)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AUTOTUNE_LOCK_FILE", str(tmp_path_factory.mktemp("lock") / "measure.lock"))
        yield


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


@pytest.fixture(scope="module")
def fixed_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = Conv(x) with x float32 [10, 3, 8, 8]: a batch of 10 the model fixes."""
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "W"], ["y"], pads=[1, 1, 1, 1])],
        "fixed10",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [10, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10, 4, 8, 8])],
        initializer=[helper.make_tensor("W", TensorProto.FLOAT, [4, 3, 3, 3], weight.ravel())],
    )
    return _save(graph, tmp_path_factory.mktemp("fixed") / "fixed10.onnx")


@pytest.fixture(scope="module")
def disagreeing_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = a @ b with a float32 [10, 4] and b float32 [4, 4]: axis 0 is no common batch."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "disagree",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, [10, 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [4, 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [10, 4])],
    )
    return _save(graph, tmp_path_factory.mktemp("disagree") / "disagree.onnx")


def test_the_rule(fixed_model: Path, disagreeing_model: Path, tiny_model: Path) -> None:
    fixed = read_model(fixed_model)
    assert fixed.fixed_batch == 10 and not fixed.counts_runs and not fixed.has_dynamic_batch
    disagree = read_model(disagreeing_model)
    assert disagree.fixed_batch is None and disagree.counts_runs
    dynamic = read_model(tiny_model)
    assert dynamic.fixed_batch is None and not dynamic.counts_runs


def test_a_fixed_batch_is_pinned_and_described(fixed_model: Path, tmp_path: Path) -> None:
    resolved = resolve_inputs(read_model(fixed_model))
    plan = resolved.plan
    assert resolved.pinned_batch == 10 and plan.fixed_batch == 10 and not plan.counts_runs
    [spec] = plan.inputs
    assert spec.batched and spec.shape == (10, 3, 8, 8)
    assert make_feeds(plan, 10)["x"].shape == (10, 3, 8, 8)
    assert resolved.describe() == (
        "x float32 10x3x8x8 (synthetic); batch 10 (fixed by the model): one run is 10 samples"
    )
    # --inputs: a pool of samples cut into batches of 10, as for a dynamic batch
    pool = np.arange(25 * 3 * 8 * 8, dtype=np.float32).reshape(25, 3, 8, 8)
    np.savez(tmp_path / "pool.npz", x=pool)
    pooled = resolve_inputs(read_model(fixed_model), data_path=str(tmp_path / "pool.npz")).plan
    assert pooled.pool_rows == 25 and pooled.fixed_batch == 10
    np.testing.assert_array_equal(
        make_feeds(pooled, 10, index=2)["x"], pool[[*range(20, 25), *range(5)]]
    )
    # calibration samples are batches of 10 too (a single sample would not fit the model)
    samples, _ = calibration_samples(plan, None)
    assert {s["x"].shape for s in samples} == {(10, 3, 8, 8)}
    samples, note = calibration_samples(plan, str(tmp_path / "pool.npz"))
    assert [s["x"].shape[0] for s in samples] == [10, 10, 10] and "25 samples" in note


def test_a_disagreeing_axis_0_counts_runs(disagreeing_model: Path) -> None:
    resolved = resolve_inputs(read_model(disagreeing_model))
    assert resolved.pinned_batch is None and resolved.plan.counts_runs
    assert not any(s.batched for s in resolved.plan.inputs)
    assert resolved.describe().endswith(
        "; axis 0 is not one batch of every input (a 10, b 4): throughput counts runs, not samples"
    )
    rows = [("batch size", "1", "1", "1.00x"), ("throughput (samples/s)", "5", "6", "1.2x")]
    assert batch_wording(rows, resolved.plan) == [
        (
            "batch size",
            "unknown (inputs differ on axis 0)",
            "unknown (inputs differ on axis 0)",
            "-",
        ),
        ("throughput (runs/s)", "5", "6", "1.2x"),
    ]


def _figures(best: dict, key: str) -> tuple[Measurement, float]:
    m = Measurement.from_dict(best[key])
    return m, m.throughput * m.timed_s / m.latency_ms.count  # samples per timed run


def test_run_counts_ten_samples_per_run(fixed_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(fixed_model), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "batch 10 (fixed by the model): one run is 10 samples" in result.output
    assert "batch sizes 10)" in result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("batch size")]
    fixed = "10 (fixed by the model)"
    assert " ".join(row.split()) == f"batch size {fixed} {fixed} -"
    [path] = out.glob("*/best.json")
    best = json.loads(path.read_text())
    assert best["inputs"]["fixed_batch"] == 10 and best["config"]["batch_size"] == 10
    for key in ("metrics", "baseline"):
        m, per_run = _figures(best, key)
        assert m.batch_size == 10 and m.concurrency == 1
        assert per_run == pytest.approx(10, rel=1e-9), key  # throughput * wall == 10 * runs


def test_run_with_a_disagreeing_axis_0_counts_runs(disagreeing_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    result = runner.invoke(app, ["run", str(disagreeing_model), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    assert "throughput counts runs, not samples" in result.output
    assert "throughput (runs/s)" in result.output and "throughput (samples/s)" not in result.output
    [path] = out.glob("*/best.json")
    best = json.loads(path.read_text())
    assert best["inputs"]["counts_runs"] is True and best["config"]["batch_size"] == 1
    m, per_run = _figures(best, "metrics")
    assert per_run == pytest.approx(1, rel=1e-9)
