"""`autotune run` under open-loop traffic: capacity at a latency limit, a fixed rate, a trace,
and the bad input that is refused before anything is measured or written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import optuna
import pytest
from onnx import TensorProto, helper
from typer.testing import CliRunner

import autotune
from autotune.cli import app
from autotune.config import TunedConfig

runner = CliRunner()
FAST = ["--min-time", "0.1", "--min-runs", "5", "--seed", "1"]


@pytest.fixture(scope="module")
def fixed_batch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """y = relu(x) with the batch dim fixed at 1: requests cannot be joined."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "fixed",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path_factory.mktemp("models") / "fixed.onnx"
    onnx.save(model, path)
    return path


def _refused(args: list[str], out: Path) -> str:
    result = runner.invoke(app, ["run", *args, "--out", str(out)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    assert not out.exists() or not any(out.iterdir()), "nothing is written"
    return lines[0]


def test_bad_traffic_is_refused_in_one_line_with_nothing_written(
    tiny_model: Path, fixed_batch_model: Path, tmp_path: Path
) -> None:
    out = tmp_path / "results"
    model = str(tiny_model)
    assert "throughput cannot differ" in _refused([model, "--rate", "50"], out)
    assert "give the requests per second, above 0" in _refused(
        [model, "--rate", "0", "-o", "latency:p99"], out
    )
    assert "above 0" in _refused([model, "--rate", "-5", "-o", "latency"], out)
    assert "needs --max-latency-ms" in _refused([model, "-o", "capacity"], out)
    latency = ["-o", "latency:p99"]
    assert "drop --concurrency" in _refused(
        [model, "--rate", "50", "--concurrency", "2", *latency], out
    )
    assert "give one" in _refused(
        [model, "--rate", "5", "--trace", str(tmp_path / "t.csv"), *latency], out
    )
    assert "searches the rate itself" in _refused(
        [model, "-o", "capacity", "--max-latency-ms", "50", "--rate", "20"], out
    )
    assert "--slo" in _refused(
        [model, "-o", "capacity", "--max-latency-ms", "50", "--slo", "p99"], out
    )
    assert "batch dim is fixed" in _refused(
        [str(fixed_batch_model), "--rate", "50", "--batching", *latency], out
    )
    assert "--batching batches requests" in _refused([model, "--batching"], out)
    assert "drop --batch-sizes" in _refused(
        [model, "--rate", "50", "--batch-sizes", "1,4", *latency], out
    )
    traces = tmp_path / "traces"
    traces.mkdir()
    (traces / "empty.csv").write_text("")
    (traces / "unsorted.csv").write_text("0.0\n0.5\n0.2\n")
    (traces / "garbage.npy").write_bytes(b"not an array")
    for name in ("empty.csv", "unsorted.csv", "garbage.npy", "missing.csv"):
        line = _refused([model, "--trace", str(traces / name), *latency], out)
        assert line.startswith("Error: --trace: ") and name in line, line


def test_capacity_is_tuned_confirmed_and_served(tiny_model: Path, tmp_path: Path) -> None:
    """A capacity study end to end: every trial a rate search, the confirmation paired at
    shared rates, best.json with the traffic and the figures, the pool serving futures."""
    out = tmp_path / "results"
    args = ["run", str(tiny_model), "-o", "capacity", "--max-latency-ms", "50", "--trials", "4",
            "--rounds", "2", "--finalists", "1", "--target-rate", "100000", "--out", str(out),
            *FAST]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "load:    open loop, capacity" in result.stderr
    assert "capacity at p99 <= 50 ms: defaults " in result.stdout
    assert "machine(s) like this one at the defaults" in result.stdout
    [path] = out.glob("*/best.json")
    assert path.parent.name.endswith("-capacity-p99-50ms")
    tuned = TunedConfig.from_dict(json.loads(path.read_text()))
    traffic = tuned.workload.traffic
    assert traffic is not None and traffic.max_latency_ms == 50 and traffic.quantile == "p99"
    base, best = tuned.baseline.open_loop, tuned.metrics.open_loop
    assert base is not None and best is not None
    assert tuned.config.server_threads >= 1 or tuned.config == tuned.config.__class__()
    assert base.server_threads == tuned.environment["usable_cpus"]  # the untuned server
    for figures in (base, best):
        assert figures.sent == figures.completed + figures.unfinished
        assert figures.probes and all(p.offered_rate > 0 for p in figures.probes)

    with autotune.load_pool(path) as pool:
        feeds = [{"x": np.full((1, 64), float(i), np.float32)} for i in range(12)]
        answers = [f.result(timeout=60) for f in [pool.submit(f) for f in feeds]]
        for request, answer in zip(feeds, answers, strict=True):
            expected = pool.sessions[0].run(None, request)
            np.testing.assert_allclose(answer[0], expected[0], rtol=1e-5, atol=1e-6)

    report = runner.invoke(app, ["report", "--out", str(out)])
    assert report.exit_code == 0, report.output
    page = (path.parent / "report" / "report.md").read_text()
    assert (path.parent / "report" / "capacity.png").is_file()
    assert "## Capacity at the latency limit" in page and "capacity at p99 <= 50 ms" in page

    again = runner.invoke(app, args)  # a finished study: its stored verdict, nothing measured
    assert again.exit_code == 0, again.output
    assert "study already confirmed" in again.stderr


def test_latency_at_a_fixed_rate_and_a_replayed_trace(tiny_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    common = ["--trials", "3", "--finalists", "0", "--out", str(out), *FAST]
    at_rate = runner.invoke(app, ["run", str(tiny_model), "--rate", "200", "-o", "latency:p99",
                                  *common])  # fmt: skip
    assert at_rate.exit_code == 0, at_rate.output
    assert "200 requests/s, poisson arrivals" in at_rate.stderr
    trace = tmp_path / "arrivals.npy"
    np.save(trace, np.cumsum(np.full(100, 0.005)))
    replayed = runner.invoke(app, ["run", str(tiny_model), "--trace", str(trace), "-o",
                                   "latency:p99", *common])  # fmt: skip
    assert replayed.exit_code == 0, replayed.output
    assert "100 arrivals replayed from --trace" in replayed.stderr
    names = sorted(p.parent.name for p in out.glob("*/best.json"))
    assert [n.rsplit("-", 1)[-1] for n in names] == ["r200", "trace100"]
    for name in names:
        tuned = TunedConfig.from_dict(json.loads((out / name / "best.json").read_text()))
        assert tuned.metrics.open_loop is not None and tuned.metrics.open_loop.capacity is None


def test_batching_that_changes_the_answers_is_screened_out_once(
    batch_mixing_model: tuple[Path, Path], tmp_path: Path
) -> None:
    """One worker judges the batcher before the search; no trial is spent rediscovering it."""
    model, pool = batch_mixing_model
    out = tmp_path / "results"
    result = runner.invoke(
        app,
        ["run", str(model), "--inputs", str(pool), "-o", "capacity", "--max-latency-ms", "50",
         "--trials", "3", "--finalists", "0", "--out", str(out), *FAST],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "batching: not searched: request 0 served in a batch of 4" in result.stderr
    assert "FAILED mismatch" not in result.stderr
    [path] = out.glob("*/best.json")
    study = optuna.load_study(
        study_name=path.parent.name, storage=f"sqlite:///{out / 'autotune.db'}"
    )
    assert study.user_attrs["batching_screen"]["ok"] is False
    configs = [t.user_attrs["config"] for t in study.trials if "config" in t.user_attrs]
    assert configs and all(c.get("max_batch", 1) == 1 for c in configs)
